"""The k8s/ kustomize base and overlays, built by real ``kubectl kustomize`` and validated."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from tests.k8s_manifests import ROOT, Manifest, kustomize, one, validate

K8S = ROOT / "k8s"
TARGETS = [K8S / "base", *sorted((K8S / "overlays").iterdir())]


def built(path: Path) -> list[Manifest]:
    return kustomize(path)


def isvc(name: str) -> dict[str, Any]:
    path = K8S / name if name == "base" else K8S / "overlays" / name
    return one(built(path), "InferenceService")


def storage_uri(manifest: dict[str, Any]) -> str:
    env = manifest["spec"]["predictor"]["containers"][0]["env"]
    return str(next(e["value"] for e in env if e["name"] == "STORAGE_URI"))


def test_the_overlays_exist() -> None:
    assert {p.name for p in TARGETS} == {"base", "canary", "experiment", "promote", "rollback"}


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_every_build_is_valid(path: Path) -> None:
    manifests = built(path)
    assert {m["kind"] for m in manifests} == {"InferenceService", "ServiceAccount"}
    assert [p for m in manifests for p in validate(m)] == []


@pytest.mark.parametrize("path", TARGETS, ids=lambda p: p.name)
def test_images_are_pinned(path: Path) -> None:
    image = one(built(path), "InferenceService")["spec"]["predictor"]["containers"][0]["image"]
    assert image == "model-serving/model-server:0.1.0"


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


def test_promote_drops_the_percent_and_keeps_the_new_version() -> None:
    promote, canary = isvc("promote"), isvc("canary")
    assert "canaryTrafficPercent" not in promote["spec"]["predictor"]
    assert storage_uri(promote) == storage_uri(canary)


def test_rollback_sends_everything_to_the_previous_revision() -> None:
    rollback, canary = isvc("rollback"), isvc("canary")
    assert rollback["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert storage_uri(rollback) == storage_uri(canary)


def test_the_grpc_component_turns_grpc_on_with_one_h2c_port(tmp_path: Path) -> None:
    def relative(path: Path) -> str:
        return os.path.relpath(path, tmp_path)

    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{relative(K8S / 'base')}]\n"
        f"components: [{relative(K8S / 'components' / 'grpc')}]\n"
    )
    manifests = built(tmp_path)
    assert [p for m in manifests for p in validate(m)] == []
    container = one(manifests, "InferenceService")["spec"]["predictor"]["containers"][0]
    assert container["args"][-2:] == ["--enable-grpc", "--grpc-port=8081"]
    # Knative routes exactly one container port; h2c makes it HTTP/2 (gRPC).
    assert container["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["port"] == 8080  # REST, by number


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
