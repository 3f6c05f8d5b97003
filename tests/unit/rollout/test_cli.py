"""``model-rollout`` commands against kmock's Kubernetes API emulator.

Prometheus is left unreachable here on purpose: the loop must halt (exit 4) rather than
promote without evidence. The whole loop with real evidence is in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio

from rollout.__main__ import main
from rollout.kube import STATE_ANNOTATION
from tests.unit.rollout.test_kube import NAME, NS, RESOURCE, inference_service, predictor_status


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture
async def kubeconfig(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> Path:
    kmock.objects[RESOURCE, NS, NAME] = inference_service(
        predictor_status("bc-00001", "bc-00001", "bc-00001", None)
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "mock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "me"}}],
        "current-context": "mock",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path


async def rollout(kubeconfig: Path, *args: str) -> int:
    argv = [
        *args,
        "--kubeconfig",
        str(kubeconfig),
        "-n",
        NS,
        "--prometheus-url",
        f"http://127.0.0.1:{free_port()}",
        "--interval-seconds",
        "0.1",
    ]
    return await asyncio.to_thread(main, argv)


def patches(emulator: kmock.KubernetesEmulator) -> list[Any]:
    return [r.data for r in list(emulator) if r.method.value == "PATCH"]


def events(emulator: kmock.KubernetesEmulator) -> list[Any]:
    return [r.data for r in list(emulator) if r.method.value == "POST"]


def saved_state(emulator: kmock.KubernetesEmulator) -> dict[str, Any]:
    isvc = emulator.objects[RESOURCE, NS, NAME]
    state: dict[str, Any] = json.loads(isvc["metadata"]["annotations"][STATE_ANNOTATION])
    return state


@pytest.mark.asyncio
async def test_dry_run_start_prints_the_patch_and_sends_nothing(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await rollout(kubeconfig, "start", NAME, "--version", "v2", "--dry-run")
    assert code == 0
    out = capsys.readouterr().out
    assert "kubectl patch inferenceservice breast-cancer -n models --type merge -p" in out
    assert "gs://b/registry/breast-cancer/v2" in out
    assert '"canaryTrafficPercent":10' in out
    assert patches(kmock) == []
    assert events(kmock) == []


@pytest.mark.asyncio
async def test_start_patches_records_and_halts_without_evidence(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await rollout(kubeconfig, "start", NAME, "--version", "v2", "--steps", "20,60")
    assert code == 4  # halted: Prometheus is unreachable, so nothing is promoted
    first = patches(kmock)[0]
    predictor = first["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["containers"][0]["env"][0] == {
        "name": "STORAGE_URI",
        "value": "gs://b/registry/breast-cancer/v2",
    }
    assert first["metadata"] == {"resourceVersion": "7"}
    # No percent was changed after the start: a halt leaves the split alone.
    assert not any(
        "canaryTrafficPercent" in p.get("spec", {}).get("predictor", {}) for p in patches(kmock)[1:]
    )
    state = saved_state(kmock)
    assert (state["control_version"], state["treatment_version"]) == ("v1", "v2")
    assert state["phase"] == "halted"
    assert state["control_revision"] == "bc-00001"
    assert [e["reason"] for e in events(kmock)] == ["CanaryStarted", "CanaryHalted"]
    assert "Prometheus is unreachable" in capsys.readouterr().out


@pytest.mark.asyncio
async def test_start_resumes_from_the_annotation(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {"model": NAME, "control_version": "v1", "treatment_version": "v2",
             "phase": "progressing", "step_index": 1, "percent": 25, "rounds": 3}  # fmt: skip
    isvc = inference_service(predictor_status("bc-00002", "bc-00002", "bc-00001", 25))
    isvc["metadata"]["annotations"] = {STATE_ANNOTATION: json.dumps(state)}
    kmock.objects[RESOURCE, NS, NAME] = isvc
    # Another version while one is in progress is refused.
    assert await rollout(kubeconfig, "start", NAME, "--version", "v3") == 2
    assert "already rolling out v2" in capsys.readouterr().err
    code = await rollout(kubeconfig, "start", NAME, "--version", "v2")
    assert code == 4
    assert "v2 at 25% (saved state)" in capsys.readouterr().out
    # It did not start over: no new storage patch, and the saved round count went on.
    assert all("containers" not in p.get("spec", {}).get("predictor", {}) for p in patches(kmock))
    assert saved_state(kmock)["rounds"] == 4


@pytest.mark.asyncio
async def test_promote_rollback_and_pause(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path
) -> None:
    assert await rollout(kubeconfig, "rollback", NAME) == 0
    assert await rollout(kubeconfig, "promote", NAME) == 0
    assert patches(kmock) == [
        {"spec": {"predictor": {"canaryTrafficPercent": 0}}},
        {"spec": {"predictor": {"canaryTrafficPercent": None}}},
    ]
    assert [(e["reason"], e["type"]) for e in events(kmock)] == [
        ("CanaryRolledBack", "Warning"),
        ("CanaryPromoted", "Normal"),
    ]
    assert await rollout(kubeconfig, "pause", NAME) == 2  # nothing to pause
    await rollout(kubeconfig, "start", NAME, "--version", "v2")
    assert await rollout(kubeconfig, "resume", NAME) == 2  # halted, not in progress


@pytest.mark.asyncio
async def test_status_prints_the_split_and_revisions(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kmock.objects[RESOURCE, NS, NAME] = inference_service(
        predictor_status("bc-00002", "bc-00002", "bc-00001", 10)
    )
    assert await rollout(kubeconfig, "status", NAME, "--output", "json") == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["revisions"]["latest_rolled_out"] == "bc-00001"
    assert [(t["revision"], t["percent"]) for t in report["traffic"]] == [
        ("bc-00002", 10),
        ("bc-00001", 90),
    ]
    assert report["rollout"] is None


@pytest.mark.asyncio
async def test_not_found_and_forbidden_exit_1_with_a_reason(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await rollout(kubeconfig, "promote", "nope") == 1
    assert "inferenceservice models/nope not found" in capsys.readouterr().err
    kmock["patch"] << 403
    assert await rollout(kubeconfig, "promote", NAME) == 1
    assert "rollout.rbac.create" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", NAME, "--steps", "50,10"]) == 2
    assert "steps must increase" in capsys.readouterr().err
    assert main(["analyze", NAME, "--threshold", "0"]) == 2
    assert "--threshold / ROLLOUT_THRESHOLD" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["start", NAME])  # neither --version nor --storage-uri
    assert exited.value.code == 2
