"""End to end on a real cluster with KServe (Knative mode) and Prometheus.

    KUBECONFIG=... E2E_REGISTRY_URI=gs://bucket/registry E2E_SERVER_IMAGE=repo/model-server:tag \\
        make e2e

Asked for (``E2E_REQUIRED=1``, which ``make e2e`` and the e2e workflow set), a missing
``KUBECONFIG`` or a cluster that does not answer FAILS every test: a run that skips them all
must not report green. Without it (a plain ``make test``), they are skipped when ``KUBECONFIG``
is not set.

What it does, in a namespace of its own (``E2E_NAMESPACE``, default ``model-serving-e2e``):
installs the chart from this working tree serving ``breast-cancer`` v1, answers one request on
each protocol through the ingress (``E2E_INGRESS_URL``, default http://localhost:8080, e.g. a
port-forward of the external Kourier gateway ``svc/kourier``) with the Host of the
InferenceService's URL, which must be in the cluster's external domain (``E2E_DOMAIN``,
default ``example.com``, which kind-setup.sh configures), canaries v2 with ``model-rollout``
until it is promoted, then canaries a version that can never load (v99) and expects
``model-rollout`` to roll it back when it is not ready in time. The registry must hold
``breast-cancer`` v1 and v2 where the cluster can read it; Prometheus (``E2E_PROMETHEUS_URL``,
default http://localhost:9090) must scrape the predictor pods (``E2E_PROMETHEUS_RELEASE``
switches the chart's PodMonitor on for a kube-prometheus-stack release of that name).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.k8s_manifests import CHART, helm, kubectl

REQUIRED = os.environ.get("E2E_REQUIRED", "") not in {"", "0"}
"""The e2e suite was asked for (``make e2e``, the workflow): no cluster is a failure."""
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not REQUIRED and not os.environ.get("KUBECONFIG"),
        reason="needs a cluster with KServe: set KUBECONFIG (see `make e2e`)",
    ),
]

NAME = "breast-cancer"
NAMESPACE = os.environ.get("E2E_NAMESPACE", "model-serving-e2e")
INGRESS = os.environ.get("E2E_INGRESS_URL", "http://localhost:8080")
KIND_DOMAIN = "example.com"
"""The external domain tests/e2e/kind-setup.sh gives Knative (its ``config-domain``)."""
DOMAIN = os.environ.get("E2E_DOMAIN", KIND_DOMAIN)
PROMETHEUS = os.environ.get("E2E_PROMETHEUS_URL", "http://localhost:9090")
ROW = [14.0, 19.0, 91.0, 650.0, 0.096, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.9, 40.0, 0.007,
       0.025, 0.03, 0.011, 0.02, 0.0038, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29,
       0.084]  # fmt: skip


def required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is required for the e2e tests (see the module docstring)")
    return value


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    """A cluster that answers, or a failure saying what is missing (never a silent skip)."""
    config = os.environ.get("KUBECONFIG")
    if not config:
        pytest.fail(
            "E2E_REQUIRED is set (make e2e, the e2e workflow) but KUBECONFIG is not: point it at "
            "the cluster's kubeconfig (on kind: KUBECONFIG=$HOME/.kube/config)",
            pytrace=False,
        )
    missing = [path for path in config.split(os.pathsep) if path and not Path(path).is_file()]
    if missing:
        pytest.fail(f"KUBECONFIG names no file at {', '.join(missing)}", pytrace=False)
    try:
        binary = kubectl()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)
    done = subprocess.run(
        [binary, "get", "--raw", "/readyz", "--request-timeout=20s"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(
            f"the cluster of KUBECONFIG={config} does not answer (kubectl get --raw /readyz): "
            f"{done.stderr.strip() or done.stdout.strip()}",
            pytrace=False,
        )


def sh(*command: str, timeout: float = 600) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def rollout(*args: str, timeout: float = 1800) -> int:
    command = [sys.executable, "-m", "rollout", *args, "-n", NAMESPACE,
               "--prometheus-url", PROMETHEUS]  # fmt: skip
    return subprocess.run(command, timeout=timeout, check=False).returncode


@pytest.fixture(scope="module")
def release() -> Iterator[str]:
    registry, image = required("E2E_REGISTRY_URI"), required("E2E_SERVER_IMAGE")
    repository, _, tag = image.rpartition(":")
    values = [
        f"model.name={NAME}", "model.version=v1", f"registry.uri={registry}",
        f"image.repository={repository}", f"image.tag={tag}", "trainer.enabled=false",
        "inferenceService.tagRouting=true", "rollout.rbac.create=true",
    ]  # fmt: skip
    if not registry.startswith(("gs://", "s3://")):  # pvc:// on kind: nowhere beside it to write
        values.append("predictionLog.enabled=false")
    if prometheus_release := os.environ.get("E2E_PROMETHEUS_RELEASE"):
        values += [
            "monitoring.podMonitor.enabled=true",
            f"monitoring.prometheusRelease={prometheus_release}",
        ]
    subprocess.run([kubectl(), "create", "namespace", NAMESPACE], check=False, capture_output=True)
    set_args = [arg for value in values for arg in ("--set", value)]
    sh(
        helm("helm4"),
        "upgrade",
        "--install",
        "e2e",
        str(CHART),
        "-n",
        NAMESPACE,
        "--wait",
        *set_args,
    )
    sh(kubectl(), "wait", "-n", NAMESPACE, "--for=condition=Ready",
       f"inferenceservice/{NAME}", "--timeout=10m")  # fmt: skip
    try:
        yield "e2e"
    finally:
        subprocess.run([helm("helm4"), "uninstall", "e2e", "-n", NAMESPACE], check=False)


def isvc() -> dict[str, object]:
    out = sh(kubectl(), "get", "inferenceservice", NAME, "-n", NAMESPACE, "-o", "json")
    parsed: dict[str, object] = json.loads(out)
    return parsed


def host() -> str:
    """The Host the external gateway routes: the InferenceService URL's, in ``DOMAIN``.

    With no domain configured Knative gives routes the cluster-local ``svc.cluster.local``
    (``DefaultDomain`` in knative/serving's ``pkg/reconciler/route/config/domain.go``), and
    net-kourier publishes cluster-local hosts on ``kourier-internal`` only
    (``pkg/generator/ingress_translator.go``): through ``svc/kourier`` they are a 404.
    """
    status = isvc()["status"]
    assert isinstance(status, dict)
    hostname = str(urlparse(str(status["url"])).hostname)
    assert hostname.endswith(f".{DOMAIN}"), (
        f"{hostname} is not in the external domain {DOMAIN}: configure Knative's config-domain "
        "(tests/e2e/kind-setup.sh does) or set E2E_DOMAIN"
    )
    return hostname


def test_both_protocols_answer_with_the_version(release: str) -> None:
    headers = {"Host": host()}
    with httpx.Client(base_url=INGRESS, headers=headers, timeout=30) as client:
        v1 = client.post(f"/v1/models/{NAME}:predict", json={"instances": [ROW]})
        v2 = client.post(
            f"/v2/models/{NAME}/infer",
            json={
                "inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": ROW}]
            },
        )
    assert v1.status_code == 200, v1.text
    assert v2.status_code == 200, v2.text
    assert v1.headers["x-model-version"] == "v1"
    assert v2.json()["model_version"] == "v1"


def test_canary_promoted_then_a_broken_one_rolled_back(release: str) -> None:
    stop = time.monotonic() + 1200
    with httpx.Client(base_url=INGRESS, headers={"Host": host()}, timeout=30) as client:

        def load() -> None:
            while time.monotonic() < stop:
                client.post(f"/v1/models/{NAME}:predict", json={"instances": [ROW]})

        import threading

        traffic = threading.Thread(target=load, daemon=True)
        traffic.start()
        quick = ["--steps", "20,50", "--interval-seconds", "60", "--analysis-window", "1m",
                 "--min-requests", "30"]  # fmt: skip
        assert rollout("start", NAME, "--version", "v2", *quick) == 0
        spec = isvc()["spec"]
        assert isinstance(spec, dict)
        assert "canaryTrafficPercent" not in spec["predictor"]
        broken = ["--storage-uri", f"{required('E2E_REGISTRY_URI')}/{NAME}/v99",
                  "--ready-deadline-seconds", "180"]  # fmt: skip
        assert rollout("start", NAME, *broken, *quick) == 3
        spec = isvc()["spec"]
        assert isinstance(spec, dict)
        assert spec["predictor"]["canaryTrafficPercent"] == 0
        stop = time.monotonic()
