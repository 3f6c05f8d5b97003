"""The k8s/ kustomize base and overlays, built by real ``kubectl kustomize`` and validated, and
the name-free patches of k8s/patches/.

The base is a template that cannot be applied unedited (an invalid namespace and image): the
tests build it as a user does, from their own kustomization that sets the namespace and image.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s_manifests import ROOT, Manifest, kubectl, kustomize, one, validate

K8S = ROOT / "k8s"
TARGETS = [K8S / "base", *sorted((K8S / "overlays").iterdir())]
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def built(path: Path, components: tuple[Path, ...] = ()) -> list[Manifest]:
    """``path`` built through a kustomization of the user's own, setting what the template
    leaves to them: the namespace and the image."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": "models",
                    "resources": [os.path.relpath(path, tmp)],
                    "components": [os.path.relpath(c, tmp) for c in components],
                    "images": [
                        {
                            "name": "REGISTRY/model-server",
                            "newName": "europe-docker.pkg.dev/my-project/models/model-server",
                        }
                    ],
                }
            )
        )
        return kustomize(Path(tmp))


def isvc(name: str) -> dict[str, Any]:
    path = K8S / name if name == "base" else K8S / "overlays" / name
    return one(built(path), "InferenceService")


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_the_template_cannot_be_applied_unedited(path: Path) -> None:
    """Straight from the repository, every build carries a namespace the API server refuses
    (not a DNS label), so `kubectl apply -k` cannot create a stray model in someone's namespace
    or replace a release's spec; and a placeholder image (REGISTRY/...) no registry serves."""
    for manifest in kustomize(path):
        assert not DNS_LABEL.fullmatch(manifest["metadata"]["namespace"]), manifest["kind"]
    image = one(kustomize(path), "InferenceService")["spec"]["predictor"]["containers"][0]
    assert image["image"].startswith("REGISTRY/"), image["image"]


def storage_uri(manifest: dict[str, Any]) -> str:
    env = manifest["spec"]["predictor"]["containers"][0]["env"]
    return str(next(e["value"] for e in env if e["name"] == "STORAGE_URI"))


def test_the_overlays_exist() -> None:
    assert {p.name for p in TARGETS} == {"base", "canary", "experiment"}


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_every_build_is_valid(path: Path) -> None:
    manifests = built(path)
    assert {m["kind"] for m in manifests} == {"InferenceService", "ServiceAccount"}
    assert {m["metadata"]["namespace"] for m in manifests} == {"models"}
    assert [p for m in manifests for p in validate(m)] == []


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_images_are_pinned(path: Path) -> None:
    image = one(built(path), "InferenceService")["spec"]["predictor"]["containers"][0]["image"]
    assert image == "europe-docker.pkg.dev/my-project/models/model-server:0.1.0"


def test_canary_differs_from_base_only_in_storage_uri_and_percent() -> None:
    base, canary = isvc("base"), isvc("canary")
    assert "canaryTrafficPercent" not in base["spec"]["predictor"]
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert storage_uri(base).endswith("/breast-cancer/v1")
    assert storage_uri(canary).endswith("/breast-cancer/v2")

    undone = copy.deepcopy(canary)
    del undone["spec"]["predictor"]["canaryTrafficPercent"]
    for env in undone["spec"]["predictor"]["containers"][0]["env"]:
        if env["name"] == "STORAGE_URI":
            env["value"] = storage_uri(base)
    assert undone == base


def merge_patch(target: dict[str, Any], name: str) -> dict[str, Any]:
    """``target`` after ``kubectl patch --type merge --patch-file k8s/patches/NAME.yaml``, by the
    real kubectl, offline (``--local``)."""
    with tempfile.TemporaryDirectory() as tmp:
        current = Path(tmp) / "isvc.yaml"
        current.write_text(yaml.safe_dump(target))
        done = subprocess.run(
            [kubectl(), "patch", "--local", "-f", str(current), "--type", "merge",
             "--patch-file", str(K8S / "patches" / f"{name}.yaml"), "-o", "yaml"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    patched = yaml.safe_load(done.stdout)
    assert isinstance(patched, dict)
    return patched


def patch_file(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((K8S / "patches" / f"{name}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_patches_touch_only_the_percent() -> None:
    """Name-free and spec-preserving: safe on a Helm release and on any model."""
    assert patch_file("promote") == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    assert patch_file("rollback") == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


def test_promote_drops_the_percent_and_keeps_the_new_version() -> None:
    canary = isvc("canary")
    promoted = merge_patch(canary, "promote")
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert storage_uri(promoted) == storage_uri(canary)
    assert list(validate(promoted)) == []


def test_rollback_sends_everything_to_the_previous_revision() -> None:
    canary = isvc("canary")
    rolled_back = merge_patch(canary, "rollback")
    assert rolled_back["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert storage_uri(rolled_back) == storage_uri(canary)
    undone = copy.deepcopy(rolled_back)
    undone["spec"]["predictor"]["canaryTrafficPercent"] = 10
    assert undone == canary  # nothing else moved


def test_the_grpc_component_turns_grpc_on_with_one_h2c_port() -> None:
    manifests = built(K8S / "base", components=(K8S / "components" / "grpc",))
    assert [p for m in manifests for p in validate(m)] == []
    container = one(manifests, "InferenceService")["spec"]["predictor"]["containers"][0]
    assert container["args"][-2:] == ["--enable-grpc", "--grpc-port=8081"]
    # Knative routes exactly one container port; h2c makes it HTTP/2 (gRPC).
    assert container["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["port"] == 8080  # REST, by number
    # Knative rewrites an httpGet/tcpSocket liveness port to h2c 8081 (rewriteUserLivenessProbe);
    # a grpc probe is left alone and asks the server's grpc.health.v1.Health for "liveness".
    assert container["livenessProbe"] == {
        "grpc": {"port": 8081, "service": "liveness"},
        "periodSeconds": 10,
    }
    plain = isvc("base")["spec"]["predictor"]["containers"][0]
    assert plain["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}


def test_experiment_adds_the_servers_settings_and_keeps_the_control() -> None:
    base, experiment = isvc("base"), isvc("experiment")
    assert storage_uri(experiment) == storage_uri(base)  # v1 stays the control
    assert "canaryTrafficPercent" not in experiment["spec"]["predictor"]
    env = {e["name"]: e["value"] for e in experiment["spec"]["predictor"]["containers"][0]["env"]}
    from model_server.settings import ModelServerSettings

    settings = ModelServerSettings(
        _env_file=None,
        model_dir="/mnt/models",
        experiment=env["MODEL_SERVER_EXPERIMENT"],
        experiment_treatment=env["MODEL_SERVER_EXPERIMENT_TREATMENT"],
        experiment_percent=env["MODEL_SERVER_EXPERIMENT_PERCENT"],
    )  # the values are what the server accepts
    assert settings.experiment_percent == 30
    assert settings.experiment_treatment is not None
    assert settings.experiment_treatment.endswith("/breast-cancer/v2")
