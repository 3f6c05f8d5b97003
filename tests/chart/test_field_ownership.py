"""Helm 4 (server-side apply) and model-rollout on one InferenceService, against the API emulator.

Who owns what:
- Helm owns everything the chart renders, the served version (``model.version``) included.
- model-rollout writes, as field manager ``model-rollout``, only ``canaryTrafficPercent`` (each
  step) and the predictor's ``STORAGE_URI`` (once, at ``start``). KServe's CRD gives
  ``spec.predictor.containers`` no list type, so that list is one atomic field: changing
  ``STORAGE_URI`` makes model-rollout an owner of the whole container list.

So after a promotion the release must name the served version: ``helm upgrade --set
model.version=vN`` then renders the same container list, which server-side apply accepts without
a conflict (equal values are shared). An upgrade that still names the old version is refused
with a conflict naming model-rollout, instead of silently undoing the rollout; one that also
changes the container (a new image) needs ``--force-conflicts`` once, after which Helm owns the
list alone again. These are the API server's rules for apply (a conflict only where the value
differs and another manager owns the field), played by ``tests.apiserver.ApiServer``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest

from rollout.__main__ import main
from serving_common.net import free_port
from tests.apiserver import ApiServer, write_kubeconfig
from tests.k8s_manifests import CHART, helm_template, one

NS, NAME = "models", "breast-cancer"
RESOURCE = kmock.resource("serving.kserve.io", "v1beta1", "inferenceservices")
URL = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/{NAME}"
pytestmark = pytest.mark.kmock(cls=ApiServer)


def release(*values: str) -> dict[str, Any]:
    """The chart's InferenceService, as Helm 4 would apply it."""
    manifests = helm_template(
        "helm4", CHART / "ci" / "minimal-values.yaml", set_values=values, namespace=NS
    )
    isvc: dict[str, Any] = one(manifests, "InferenceService")
    isvc["metadata"]["namespace"] = NS
    return isvc


async def helm_apply(
    server: ApiServer, isvc: dict[str, Any], force: bool = False
) -> httpx.Response:
    """What ``helm upgrade`` sends with server-side apply (field manager helm)."""
    async with httpx.AsyncClient(base_url=str(server.url).rstrip("/")) as http:
        return await http.patch(
            URL,
            params={"fieldManager": "helm", "force": "true" if force else "false"},
            content=json.dumps(isvc),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )


def served(server: ApiServer) -> str:
    isvc = server.objects[RESOURCE, NS, NAME].raw
    env = isvc["spec"]["predictor"]["containers"][0]["env"]
    return str(next(e["value"] for e in env if e["name"] == "STORAGE_URI"))


@pytest.mark.asyncio
async def test_helm_upgrades_after_a_rollout(kmock: ApiServer, tmp_path: Path) -> None:
    assert (await helm_apply(kmock, release("model.version=v1"))).status_code == 200
    isvc = kmock.objects[RESOURCE, NS, NAME].raw
    revisions = {"latestCreatedRevision": "bc-00001", "latestReadyRevision": "bc-00001",
                 "latestRolledoutRevision": "bc-00001"}  # fmt: skip
    isvc["status"] = {
        "conditions": [{"type": "Ready", "status": "True"}],
        "components": {"predictor": revisions},
    }
    kmock.objects[RESOURCE, NS, NAME] = isvc
    flags = ["--kubeconfig", str(write_kubeconfig(kmock, tmp_path)), "-n", NS, "--prometheus-url",
             f"http://127.0.0.1:{free_port()}", "--interval-seconds", "0.1"]  # fmt: skip
    # Halted for want of evidence (no Prometheus), then promoted by hand.
    assert await asyncio.to_thread(main, ["start", NAME, "--version", "v2", *flags]) == 4
    assert await asyncio.to_thread(main, ["promote", NAME, *flags]) == 0
    assert served(kmock).endswith("/breast-cancer/v2")
    key = (RESOURCE, NS, NAME)
    containers = ("spec", "predictor", "containers")
    assert "model-rollout" in kmock.managers_of(key, containers)

    # A release that still names v1 would undo the rollout: refused, naming the other manager.
    stale = await helm_apply(kmock, release("model.version=v1"))
    assert stale.status_code == 409
    assert 'conflict with "model-rollout": .spec.predictor.containers' in stale.json()["message"]
    assert served(kmock).endswith("/breast-cancer/v2")

    # The release brought in line with what is served: no conflict, no force.
    assert (await helm_apply(kmock, release("model.version=v2"))).status_code == 200
    assert kmock.managers_of(key, containers) == {"helm", "model-rollout"}
    assert "canaryTrafficPercent" not in kmock.objects[key].raw["spec"]["predictor"]

    # A new image in the same list: --force-conflicts once, then Helm owns the list alone.
    bumped = release("model.version=v2", "image.tag=0.2.0")
    assert (await helm_apply(kmock, bumped)).status_code == 409
    assert (await helm_apply(kmock, bumped, force=True)).status_code == 200
    assert kmock.managers_of(key, containers) == {"helm"}
    again = release("model.version=v2", "image.tag=0.2.1")
    assert (await helm_apply(kmock, again)).status_code == 200
    image = kmock.objects[key].raw["spec"]["predictor"]["containers"][0]["image"]
    assert image == "europe-docker.pkg.dev/my-project/model-serving/model-server:0.2.1"
