"""The e2e on kind, checked without a cluster: the workflow, kind-setup.sh and the tests agree.

- The suite asked for (``make e2e``, the workflow) fails without a cluster instead of skipping
  everything and reporting green; helm/kind-action (v1.12.0: ``main.sh`` passes ``--kubeconfig``
  only when given one, and nothing writes ``$GITHUB_ENV``) leaves ``kind create cluster``'s
  ``~/.kube/config`` unexported, so the workflow exports ``KUBECONFIG`` itself.
- KServe v0.20.0's release ``kserve.yaml`` has no Namespace object
  (``hack/release/generate-install.sh``): kind-setup.sh creates ``kserve`` before applying it.
- Knative gives routes the cluster-local domain unless ``config-domain`` names one
  (``pkg/reconciler/route/config/domain.go``), and net-kourier serves cluster-local hosts only
  on ``kourier-internal`` (``pkg/generator/ingress_translator.go``): kind-setup.sh sets the
  domain KServe's own Kourier setup uses, and the tests send a Host in it to ``svc/kourier``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from serving_common.net import free_port
from tests.e2e.test_canary_e2e import KIND_DOMAIN
from tests.k8s_manifests import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "e2e.yml"
SETUP = ROOT / "tests" / "e2e" / "kind-setup.sh"


def steps() -> list[dict[str, object]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return [s for job in workflow["jobs"].values() for s in job["steps"]]


def index_of(found: list[dict[str, object]], text: str) -> int:
    return next(i for i, s in enumerate(found) if text in str(s.get("uses", s.get("run", ""))))


def test_the_workflow_exports_kubeconfig_after_kind_and_before_the_setup_and_tests() -> None:
    found = steps()
    kind = index_of(found, "helm/kind-action@")
    kind_inputs = found[kind].get("with")
    assert isinstance(kind_inputs, dict)
    assert "kubeconfig" not in kind_inputs  # kind writes ~/.kube/config
    export = index_of(found, 'echo "KUBECONFIG=$HOME/.kube/config" >> "$GITHUB_ENV"')
    setup, tests = index_of(found, "tests/e2e/kind-setup.sh"), index_of(found, "make e2e")
    assert kind < export < setup < tests
    assert "$HOME/.kube/config" in str(found[export]["run"]).split("\n")[0]  # checked first
    env = found[tests].get("env")
    assert isinstance(env, dict)
    assert env["E2E_REQUIRED"] == "1"
    assert "KUBECONFIG" not in env  # from $GITHUB_ENV, not a second, different value


def test_make_e2e_asks_for_the_suite() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^e2e:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None
    assert re.search(r"^\tE2E_REQUIRED=1 \S+ -m pytest tests/e2e", recipe.group(1), re.MULTILINE)


def run_e2e(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """pytest on tests/e2e, as ``make e2e`` runs it, in a clean environment."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "KUBECONFIG"))}
    command = [sys.executable, "-m", "pytest", "tests/e2e", "-m", "e2e", "-rs",
               "-p", "no:cacheprovider"]  # fmt: skip
    return subprocess.run(
        command, cwd=ROOT, env={**keep, **env}, capture_output=True, text=True, timeout=240,
        check=False,
    )  # fmt: skip


def e2e_tests() -> int:
    """How many tests tests/e2e holds: every one must fail (or skip), however many there are."""
    text = (ROOT / "tests" / "e2e" / "test_canary_e2e.py").read_text()
    return len(re.findall(r"^(?:async )?def test_", text, re.MULTILINE))


def test_the_suite_asked_for_without_kubeconfig_fails_not_skips() -> None:
    done = run_e2e({"E2E_REQUIRED": "1"})
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "E2E_REQUIRED is set (make e2e, the e2e workflow) but KUBECONFIG is not" in out
    assert "skipped" not in out.splitlines()[-1]
    assert re.search(rf"\b{e2e_tests()} errors?\b", out.splitlines()[-1]), out


def test_the_suite_asked_for_with_a_cluster_that_does_not_answer_fails(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "kind",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
            "contexts": [{"name": "kind", "context": {"cluster": "c", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        })
    )  # fmt: skip
    done = run_e2e({"E2E_REQUIRED": "1", "KUBECONFIG": str(config)})
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert f"the cluster of KUBECONFIG={config} does not answer" in out
    assert "skipped" not in out.splitlines()[-1]
    missing = run_e2e({"E2E_REQUIRED": "1", "KUBECONFIG": str(tmp_path / "nothing")})
    assert missing.returncode == 1
    assert f"KUBECONFIG names no file at {tmp_path / 'nothing'}" in missing.stdout


def test_a_plain_run_without_kubeconfig_still_skips() -> None:
    done = run_e2e({})
    last = done.stdout.splitlines()[-1]
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"\b{e2e_tests()} skipped\b", last), last
    assert "failed" not in last
    assert "error" not in last
    assert "needs a cluster with KServe: set KUBECONFIG" in done.stdout


def test_kind_setup_creates_the_kserve_namespace_before_applying_kserve() -> None:
    lines = SETUP.read_text().splitlines()
    create = next(
        i for i, line in enumerate(lines) if re.match(r"kubectl create namespace kserve\b", line)
    )
    assert "--dry-run=client -o yaml | kubectl apply -f -" in lines[create]  # idempotent
    apply = next(
        i for i, line in enumerate(lines)
        if line.startswith("kubectl apply") and line.rstrip().endswith('/kserve.yaml"')
    )  # fmt: skip
    assert create < apply


def test_kind_setup_gives_knative_the_external_domain_the_tests_send() -> None:
    text = SETUP.read_text()
    patch = re.search(
        r"^kubectl patch configmap/config-domain -n knative-serving --type merge \\\n"
        r"\s+-p '([^']+)'$",
        text,
        re.MULTILINE,
    )
    assert patch is not None
    assert json.loads(patch.group(1)) == {"data": {KIND_DOMAIN: ""}}  # no selector: every route
    # Before the InferenceServices exist (KServe's install comes after Knative's).
    assert patch.start() < text.index("kserve.yaml")
    forwarded = steps()[index_of(steps(), "make e2e")]["run"]
    assert "kubectl -n kourier-system port-forward svc/kourier 8080:80" in str(forwarded)
    tests = (ROOT / "tests" / "e2e" / "test_canary_e2e.py").read_text()
    assert 'DOMAIN = os.environ.get("E2E_DOMAIN", KIND_DOMAIN)' in tests
    assert 'assert hostname.endswith(f".{DOMAIN}")' in tests
    assert tests.count('{"Host": host()}') == 2  # every request through the gateway


def test_knative_configmaps_are_patched_only_once_its_webhook_is_up() -> None:
    """Knative's config webhook (failurePolicy Fail) refuses every change to its config-*
    ConfigMaps until its Deployment is Available: the patches wait for it."""
    text = SETUP.read_text()
    ready = text.index("kubectl wait -n knative-serving --for=condition=Available")
    for configmap in ("config-network", "config-domain"):
        assert text.index(f"kubectl patch configmap/{configmap}") > ready, configmap
