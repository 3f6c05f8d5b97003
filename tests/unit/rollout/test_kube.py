"""The Kubernetes adapter against kmock's API server emulator (no real API server runs here).

The test plays the KServe controller: it writes ``status.components.predictor`` between steps.
The kubernetes client is synchronous, so its calls run in a thread while kmock serves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
import pytest_asyncio
from kubernetes import client

from rollout.isvc import (
    FIELD_MANAGER,
    KubeError,
    kubectl_line,
    parse_status,
    percent_patch,
    storage_patch,
)
from rollout.kube import InferenceServices
from tests.apiserver import ApiServer

NS, NAME = "models", "breast-cancer"
RESOURCE = kmock.resource("serving.kserve.io", "v1beta1", "inferenceservices")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
pytestmark = pytest.mark.kmock(cls=ApiServer)


def inference_service(status: dict[str, Any] | None = None) -> dict[str, Any]:
    isvc: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "7", "uid": "isvc-uid"},
        "spec": {
            "predictor": {
                "containers": [
                    {
                        "name": "kserve-container",
                        "image": "model-serving/model-server:0.1.0",
                        "env": [
                            {"name": "STORAGE_URI", "value": "gs://b/registry/breast-cancer/v1"},
                            {"name": "MODEL_SERVER_LOG_FORMAT", "value": "json"},
                        ],
                    }
                ]
            }
        },
    }
    if status is not None:
        isvc["status"] = status
    return isvc


def predictor_status(latest: str, ready: str, rolled_out: str, split: int | None) -> dict[str, Any]:
    """What KServe writes while a canary of ``latest`` against ``rolled_out`` runs."""
    traffic = [{"revisionName": latest, "percent": 100 if split is None else split,
                "latestRevision": True, "tag": "latest"}]  # fmt: skip
    if split is not None and latest != rolled_out:
        traffic.append({"revisionName": rolled_out, "percent": 100 - split,
                        "latestRevision": False, "tag": "prev"})  # fmt: skip
    return {
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {
            "predictor": {
                "latestCreatedRevision": latest,
                "latestReadyRevision": ready,
                "latestRolledoutRevision": rolled_out,
                "previousRolledoutRevision": "breast-cancer-predictor-00000",
                "traffic": traffic,
            }
        },
    }


@pytest_asyncio.fixture
async def isvcs(kmock: kmock.KubernetesEmulator) -> AsyncIterator[InferenceServices]:
    kmock.objects[RESOURCE, NS, NAME] = inference_service()
    api = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
    try:
        yield InferenceServices(api, NS)
    finally:
        api.close()  # type: ignore[no-untyped-call]


def sent(emulator: kmock.KubernetesEmulator, method: str) -> list[Any]:
    return [r for r in list(emulator) if r.method.value == method]


@pytest.mark.asyncio
async def test_percent_patches_are_exact_merge_patches(
    kmock: kmock.KubernetesEmulator, isvcs: InferenceServices
) -> None:
    await asyncio.to_thread(isvcs.patch, NAME, percent_patch(10))
    await asyncio.to_thread(isvcs.patch, NAME, percent_patch(None))
    await asyncio.to_thread(isvcs.patch, NAME, percent_patch(0))
    patches = sent(kmock, "PATCH")
    assert [p.data for p in patches] == [
        {"spec": {"predictor": {"canaryTrafficPercent": 10}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
    ]
    assert {p.headers["Content-Type"] for p in patches} == {"application/merge-patch+json"}
    assert {p.params["fieldManager"] for p in patches} == {FIELD_MANAGER}
    assert all(p.url.path.endswith(f"/namespaces/{NS}/inferenceservices/{NAME}") for p in patches)
    assert kubectl_line(NAME, NS, percent_patch(10)) == (
        "kubectl patch inferenceservice breast-cancer -n models --type merge "
        "--field-manager model-rollout "
        """-p '{"spec":{"predictor":{"canaryTrafficPercent":10}}}'"""
    )


@pytest.mark.asyncio
async def test_new_version_patch_keeps_the_container_and_guards_concurrency(
    kmock: kmock.KubernetesEmulator, isvcs: InferenceServices
) -> None:
    current = await asyncio.to_thread(isvcs.get, NAME)
    patch = storage_patch(current, "gs://b/registry/breast-cancer/v2", 10)
    await asyncio.to_thread(isvcs.patch, NAME, patch)
    (request,) = sent(kmock, "PATCH")
    assert request.data["metadata"] == {"resourceVersion": "7"}
    predictor = request.data["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    (container,) = predictor["containers"]
    assert container["image"] == "model-serving/model-server:0.1.0"
    assert container["env"] == [
        {"name": "STORAGE_URI", "value": "gs://b/registry/breast-cancer/v2"},
        {"name": "MODEL_SERVER_LOG_FORMAT", "value": "json"},
    ]
    status = await asyncio.to_thread(isvcs.status, NAME)
    assert status.storage_uri == "gs://b/registry/breast-cancer/v2"
    assert status.canary_percent == 10


@pytest.mark.asyncio
async def test_status_follows_the_controller(
    kmock: kmock.KubernetesEmulator, isvcs: InferenceServices
) -> None:
    # The new revision is created but not ready yet.
    kmock.objects[RESOURCE, NS, NAME] = inference_service(
        predictor_status("bc-00002", "bc-00001", "bc-00001", None)
    )
    status = await asyncio.to_thread(isvcs.status, NAME)
    assert (status.latest_created, status.latest_ready) == ("bc-00002", "bc-00001")
    assert not status.latest_is_ready
    # The controller made it ready and split the traffic 10/90.
    kmock.objects[RESOURCE, NS, NAME] = inference_service(
        predictor_status("bc-00002", "bc-00002", "bc-00001", 10)
    )
    status = await asyncio.to_thread(isvcs.status, NAME)
    assert status.latest_is_ready
    assert status.ready
    assert status.latest_rolled_out == "bc-00001"
    assert status.previous_rolled_out == "breast-cancer-predictor-00000"
    assert [(t.revision, t.percent, t.latest, t.tag) for t in status.traffic] == [
        ("bc-00002", 10, True, "latest"),
        ("bc-00001", 90, False, "prev"),
    ]


@pytest.mark.asyncio
async def test_events_are_recorded_on_the_inference_service(
    kmock: kmock.KubernetesEmulator, isvcs: InferenceServices
) -> None:
    await asyncio.to_thread(isvcs.record_event, NAME, "CanaryStep", "10% to v2: checks passed")
    await asyncio.to_thread(isvcs.record_event, NAME, "RolledBack", "error ratio", True)
    events = [r.data for r in sent(kmock, "POST")]
    assert [(e["reason"], e["type"]) for e in events] == [
        ("CanaryStep", "Normal"),
        ("RolledBack", "Warning"),
    ]
    assert events[0]["involvedObject"] == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "name": NAME,
        "namespace": NS,
    }
    assert events[0]["source"] == {"component": "model-rollout"}
    assert all(f"/api/v1/namespaces/{NS}/events" in str(r.url) for r in sent(kmock, "POST"))


@pytest.mark.asyncio
async def test_state_lives_in_a_configmap_owned_by_the_inference_service(
    kmock: ApiServer, isvcs: InferenceServices
) -> None:
    assert await asyncio.to_thread(isvcs.load_state, NAME) is None
    before = json.dumps(kmock.objects[RESOURCE, NS, NAME].raw, sort_keys=True)
    state = {"treatment": "v2", "control": "v1", "step_index": 1, "failed_rounds": 1}
    isvc = await asyncio.to_thread(isvcs.get, NAME)
    await asyncio.to_thread(isvcs.save_state, NAME, state, isvc)
    # A fresh client (another machine) reads the same state back.
    assert await asyncio.to_thread(isvcs.load_state, NAME) == state
    configmap = kmock.objects[CONFIGMAPS, NS, f"{NAME}-rollout"].raw
    assert json.loads(configmap["data"]["state"]) == state
    (owner,) = configmap["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("InferenceService", NAME, "isvc-uid")
    # The InferenceService itself was not touched (its annotations reach the revision).
    assert json.dumps(kmock.objects[RESOURCE, NS, NAME].raw, sort_keys=True) == before
    # A second write patches the same ConfigMap.
    await asyncio.to_thread(isvcs.save_state, NAME, {**state, "step_index": 2}, isvc)
    assert (await asyncio.to_thread(isvcs.load_state, NAME) or {})["step_index"] == 2


@pytest.mark.asyncio
async def test_a_stale_state_write_is_refused(kmock: ApiServer, isvcs: InferenceServices) -> None:
    isvc = await asyncio.to_thread(isvcs.get, NAME)
    written = await asyncio.to_thread(isvcs.save_state, NAME, {"phase": "progressing"}, isvc)
    version = written["metadata"]["resourceVersion"]
    await asyncio.to_thread(isvcs.save_state, NAME, {"phase": "paused"}, isvc, version)
    with pytest.raises(KubeError) as error:
        await asyncio.to_thread(isvcs.save_state, NAME, {"phase": "halted"}, isvc, version)
    assert error.value.status == 409
    assert await asyncio.to_thread(isvcs.load_state, NAME) == {"phase": "paused"}


@pytest.mark.asyncio
async def test_not_found_is_a_clear_error(isvcs: InferenceServices) -> None:
    with pytest.raises(KubeError, match=r"inferenceservice models/nope not found") as error:
        await asyncio.to_thread(isvcs.get, "nope")
    assert error.value.status == 404


@pytest.mark.asyncio
async def test_forbidden_is_a_clear_error(
    kmock: kmock.KubernetesEmulator, isvcs: InferenceServices
) -> None:
    kmock["patch"] << 403
    with pytest.raises(KubeError, match=r"forbidden to patch .*rollout\.rbac\.create") as error:
        await asyncio.to_thread(isvcs.patch, NAME, percent_patch(10))
    assert error.value.status == 403


def test_parse_status_of_a_fresh_service() -> None:
    status = parse_status(inference_service())
    assert status.latest_created is None
    assert not status.ready
    assert status.traffic == ()
    assert status.storage_uri == "gs://b/registry/breast-cancer/v1"
