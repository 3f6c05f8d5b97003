"""``model-rollout`` commands against kmock's Kubernetes API emulator.

Prometheus is left unreachable here on purpose: the loop must halt (exit 4) rather than
promote without evidence. The whole loop with real evidence is in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio

from rollout.__main__ import main
from serving_common.net import free_port
from tests.apiserver import ApiServer, revision_template, write_kubeconfig
from tests.unit.rollout.test_kube import (
    CONFIGMAPS,
    NAME,
    NS,
    RESOURCE,
    inference_service,
    predictor_status,
)

pytestmark = pytest.mark.kmock(cls=ApiServer)


@pytest_asyncio.fixture
async def kubeconfig(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> Path:
    kmock.objects[RESOURCE, NS, NAME] = inference_service(
        predictor_status("bc-00001", "bc-00001", "bc-00001", None)
    )
    return write_kubeconfig(kmock, tmp_path)


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
    """The patches sent to the InferenceService."""
    return [
        r.data
        for r in list(emulator)
        if r.method.value == "PATCH" and r.url.path.endswith(f"/inferenceservices/{NAME}")
    ]


def events(emulator: kmock.KubernetesEmulator) -> list[Any]:
    return [r.data for r in list(emulator) if r.method.value == "POST" and "/events" in r.url.path]


def saved_state(emulator: kmock.KubernetesEmulator) -> dict[str, Any]:
    configmap = emulator.objects[CONFIGMAPS, NS, f"{NAME}-rollout"]
    state: dict[str, Any] = json.loads(configmap["data"]["state"])
    return state


def rollout_configmap(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"{NAME}-rollout", "namespace": NS}, "data": data}  # fmt: skip


@pytest.mark.asyncio
async def test_dry_run_start_prints_the_patch_and_sends_nothing(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await rollout(kubeconfig, "start", NAME, "--version", "v2", "--dry-run")
    assert code == 0
    out = capsys.readouterr().out
    assert (
        "kubectl patch inferenceservice breast-cancer -n models --type merge "
        "--field-manager model-rollout -p" in out
    )
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
    kmock.objects[RESOURCE, NS, NAME] = isvc
    kmock.objects[CONFIGMAPS, NS, f"{NAME}-rollout"] = rollout_configmap(
        {"state": json.dumps(state)}
    )
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
    assert await rollout(kubeconfig, "start", NAME, "--version", "v2") == 4  # halted
    assert await rollout(kubeconfig, "resume", NAME) == 2  # halted is not in progress
    assert await rollout(kubeconfig, "pause", NAME, "--dry-run") == 0
    assert saved_state(kmock)["phase"] == "halted"  # a dry run changes nothing
    assert await rollout(kubeconfig, "pause", NAME) == 0
    assert saved_state(kmock)["phase"] == "paused"
    assert events(kmock)[-1]["reason"] == "CanaryPaused"
    assert await rollout(kubeconfig, "resume", NAME) == 4  # resumed; halted without Prometheus


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


def scripted_prometheus(request: Any) -> dict[str, Any]:
    """Prometheus's query API, scripted: a healthy treatment and control, 500 requests each."""
    query = request.params.get("query", "")
    if "feedback" in query:
        value = None
    elif 'code=~"5..|INTERNAL' in query:
        value = "0"
    elif "histogram_quantile" in query:
        value = "0.012"
    else:
        value = "500"
    result = [] if value is None else [{"metric": {}, "value": [0, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.asyncio
async def test_the_loop_waits_for_the_controller_then_steps_and_promotes(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path
) -> None:
    """The test plays KServe: the new revision becomes ready only after the first rounds."""
    kmock["get /api/v1/query"] << scripted_prometheus
    argv = ["start", NAME, "--version", "v2", "--kubeconfig", str(kubeconfig), "-n", NS,
            "--prometheus-url", str(kmock.url).rstrip("/"), "--interval-seconds", "0.3",
            "--steps", "10,50"]  # fmt: skip
    running = asyncio.create_task(asyncio.to_thread(main, argv))
    # Until the controller catches up, the loop must wait and change nothing.
    for _ in range(100):
        if any(e["reason"] == "CanaryHold" for e in events(kmock)):
            break
        await asyncio.sleep(0.1)
    ready = kmock.objects[RESOURCE, NS, NAME].raw  # v2 at 10%, as the start patch asked
    ready["status"] = predictor_status("bc-00002", "bc-00002", "bc-00001", 10)
    kmock.objects[RESOURCE, NS, NAME] = ready
    assert await asyncio.wait_for(running, timeout=60) == 0
    percents = [
        p["spec"]["predictor"]["canaryTrafficPercent"]
        for p in patches(kmock)
        if "canaryTrafficPercent" in p.get("spec", {}).get("predictor", {})
    ]
    assert percents == [10, 50, None]
    reasons = [e["reason"] for e in events(kmock)]
    assert reasons[0] == "CanaryStarted"
    assert "CanaryHold" in reasons
    assert reasons[-2:] == ["CanaryStep", "CanaryPromoted"]
    hold = next(e for e in events(kmock) if e["reason"] == "CanaryHold")
    assert "waiting for the treatment revision" in hold["message"]
    assert saved_state(kmock)["phase"] == "promoted"


def test_release_defaults_come_from_the_chart_configmap() -> None:
    from rollout.canary import release_defaults
    from rollout.settings import RolloutSettings

    data = {"steps": "5,20,50", "intervalSeconds": "120"}
    merged = release_defaults(RolloutSettings(), data)
    assert (merged.steps, merged.interval_seconds) == ([5, 20, 50], 120.0)
    flagged = release_defaults(RolloutSettings(steps=[30, 60]), data)
    assert (flagged.steps, flagged.interval_seconds) == ([30, 60], 120.0)  # the flag wins
    with pytest.raises(ValueError, match="bad rollout default"):
        release_defaults(RolloutSettings(), {"steps": "ten"})


def template_history(emulator: ApiServer) -> list[str]:
    """The predictor's revision template before and after every patch of the InferenceService,
    with repeats in a row folded: each entry is one Knative revision."""
    isvc_key = (RESOURCE, NS, NAME)
    first = [revision_template(inference_service())]
    templates = first + [revision_template(obj) for key, obj in emulator.written if key == isvc_key]
    return [t for i, t in enumerate(templates) if i == 0 or t != templates[i - 1]]


@pytest.mark.asyncio
async def test_nothing_model_rollout_writes_makes_a_revision_after_the_start(
    kmock: ApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """KServe copies the InferenceService's annotations and labels into the revision template:
    a whole rollout (start, held rounds, steps, pause, resume, promote, then a rollback and a
    second start) may change the template only when it points at a new version."""
    kmock["get /api/v1/query"] << scripted_prometheus
    common = ["--kubeconfig", str(kubeconfig), "-n", NS, "--prometheus-url",
              str(kmock.url).rstrip("/"), "--interval-seconds", "0.2"]  # fmt: skip
    start = asyncio.create_task(
        asyncio.to_thread(main, ["start", NAME, "--version", "v2", "--steps", "10,50", *common])
    )
    for _ in range(100):  # held while the revision is not ready
        if any(e["reason"] == "CanaryHold" for e in events(kmock)):
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(main, ["pause", NAME, *common]) == 0
    assert await asyncio.wait_for(start, timeout=60) == 5  # paused
    ready = kmock.objects[RESOURCE, NS, NAME].raw
    ready["status"] = predictor_status("bc-00002", "bc-00002", "bc-00001", 10)
    kmock.objects[RESOURCE, NS, NAME] = ready
    assert await asyncio.to_thread(main, ["resume", NAME, "--steps", "10,50", *common]) == 0
    assert saved_state(kmock)["phase"] == "promoted"
    assert "--set model.version=v2" in capsys.readouterr().out  # how to bring Helm in line
    assert await asyncio.to_thread(main, ["rollback", NAME, *common]) == 0
    # One template for v1 (before) and one for v2 (from the start): nothing else changed it.
    templates = template_history(kmock)
    assert len(templates) == 2, "a rollout write changed the revision template"
    assert "breast-cancer/v2" in templates[1]
    writes = [p for p in patches(kmock) if "containers" not in p["spec"]["predictor"]]
    assert len(writes) == 3  # 50%, promote and rollback: none of them a revision
    assert len(kmock.written) > len(patches(kmock))  # the state went to the ConfigMap


@pytest.mark.asyncio
async def test_start_after_a_rollback_compares_against_the_rolled_out_control(
    kmock: ApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After v2 was rolled back, the spec still names v2 but KServe serves v1 (the latest
    rolled-out revision): a new start of v3 is measured against v1, not the rejected v2."""
    isvc = inference_service(predictor_status("bc-00002", "bc-00002", "bc-00001", 0))
    isvc["spec"]["predictor"]["containers"][0]["env"][0]["value"] = (
        "gs://b/registry/breast-cancer/v2"
    )
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 0
    kmock.objects[RESOURCE, NS, NAME] = isvc
    state = {"model": NAME, "control_version": "v1", "treatment_version": "v2",
             "phase": "rolled_back", "percent": 0, "control_revision": "bc-00001",
             "control_uri": "gs://b/registry/breast-cancer/v1",
             "treatment_uri": "gs://b/registry/breast-cancer/v2"}  # fmt: skip
    kmock.objects[CONFIGMAPS, NS, f"{NAME}-rollout"] = rollout_configmap(
        {"state": json.dumps(state)}
    )
    assert await rollout(kubeconfig, "start", NAME, "--version", "v1") == 2
    assert "already serves v1 (the control)" in capsys.readouterr().err
    assert await rollout(kubeconfig, "start", NAME, "--version", "v3") == 4
    saved = saved_state(kmock)
    assert (saved["control_version"], saved["treatment_version"]) == ("v1", "v3")
    assert saved["control_revision"] == "bc-00001"  # the rolled-out one, not latest ready
    assert saved["control_uri"] == "gs://b/registry/breast-cancer/v1"
    env = kmock.objects[RESOURCE, NS, NAME]["spec"]["predictor"]["containers"][0]["env"]
    assert env[0] == {"name": "STORAGE_URI", "value": "gs://b/registry/breast-cancer/v3"}
    assert events(kmock)[0]["message"] == "v3 at 10% against v1"


def uri(version: str) -> str:
    return f"gs://b/registry/breast-cancer/{version}"


def serving(version: str, status: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService with ``version`` in its spec and KServe's ``status``."""
    isvc = inference_service(status)
    isvc["spec"]["predictor"]["containers"][0]["env"][0]["value"] = uri(version)
    return isvc


def promoted(control: str, treatment: str) -> dict[str, Any]:
    """A ConfigMap whose saved rollout promoted ``treatment`` over ``control``."""
    state = {"model": NAME, "control_version": control, "treatment_version": treatment,
             "phase": "promoted", "control_uri": uri(control), "treatment_uri": uri(treatment),
             "control_revision": "bc-00001"}  # fmt: skip
    return rollout_configmap({"state": json.dumps(state)})


@pytest.mark.asyncio
async def test_ship_then_start_compares_against_the_shipped_version(
    kmock: ApiServer, kubeconfig: Path
) -> None:
    """``experiment stop --ship`` serves the treatment: it records it where ``start`` looks for
    the control, and once its revision is rolled out the live spec says so anyway."""
    kmock.objects[CONFIGMAPS, NS, f"{NAME}-rollout"] = promoted("v0", "v1")  # an older canary
    isvc = serving("v1", predictor_status("bc-00001", "bc-00001", "bc-00001", None))
    isvc["spec"]["predictor"]["containers"][0]["env"] += [
        {"name": "MODEL_SERVER_EXPERIMENT", "value": "checkout"},
        {"name": "MODEL_SERVER_EXPERIMENT_TREATMENT", "value": uri("v2")},
    ]
    kmock.objects[RESOURCE, NS, NAME] = isvc
    assert await rollout(kubeconfig, "experiment", "stop", NAME, "--ship") == 0
    saved = saved_state(kmock)
    assert (saved["phase"], saved["treatment_version"], saved["control_version"]) == (
        "promoted", "v2", "v1",
    )  # fmt: skip
    assert saved["treatment_uri"] == uri("v2")
    # KServe rolls the shipped spec out as a new revision.
    shipped = kmock.objects[RESOURCE, NS, NAME].raw
    shipped["status"] = predictor_status("bc-00002", "bc-00002", "bc-00002", None)
    kmock.objects[RESOURCE, NS, NAME] = shipped
    assert await rollout(kubeconfig, "start", NAME, "--version", "v3") == 4
    saved = saved_state(kmock)
    assert (saved["control_version"], saved["treatment_version"]) == ("v2", "v3")
    assert (saved["control_uri"], saved["control_revision"]) == (uri("v2"), "bc-00002")
    assert events(kmock)[-2]["message"] == "v3 at 10% against v2"


@pytest.mark.asyncio
async def test_start_after_a_helm_upgrade_takes_the_control_from_the_live_spec(
    kmock: ApiServer, kubeconfig: Path
) -> None:
    """The saved rollout promoted v2, then ``helm upgrade --set model.version=v3`` rolled out:
    latestRolledoutRevision is latestCreatedRevision, so the spec (v3) is what serves."""
    kmock.objects[CONFIGMAPS, NS, f"{NAME}-rollout"] = promoted("v1", "v2")
    kmock.objects[RESOURCE, NS, NAME] = serving(
        "v3", predictor_status("bc-00003", "bc-00003", "bc-00003", None)
    )
    assert await rollout(kubeconfig, "start", NAME, "--version", "v3") == 2  # already served
    assert await rollout(kubeconfig, "start", NAME, "--version", "v4") == 4
    saved = saved_state(kmock)
    assert (saved["control_version"], saved["treatment_version"]) == ("v3", "v4")
    assert (saved["control_uri"], saved["control_revision"]) == (uri("v3"), "bc-00003")
    assert events(kmock)[0]["message"] == "v4 at 10% against v3"


@pytest.mark.asyncio
async def test_promote_records_the_version_the_spec_serves(
    kmock: ApiServer, kubeconfig: Path
) -> None:
    """A canary of v3 started with kubectl, over a saved rollout that promoted v2: promote
    records v3 as served (against v2), not the old rollout promoted again."""
    kmock.objects[CONFIGMAPS, NS, f"{NAME}-rollout"] = promoted("v1", "v2")
    isvc = serving("v3", predictor_status("bc-00003", "bc-00003", "bc-00002", 10))
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 10
    kmock.objects[RESOURCE, NS, NAME] = isvc
    assert await rollout(kubeconfig, "promote", NAME) == 0
    saved = saved_state(kmock)
    assert (saved["phase"], saved["control_version"], saved["treatment_version"]) == (
        "promoted", "v2", "v3",
    )  # fmt: skip
    assert (saved["control_uri"], saved["treatment_uri"]) == (uri("v2"), uri("v3"))
    assert saved["percent"] is None
    assert await rollout(kubeconfig, "pause", NAME) == 2  # nothing in progress to pause


@pytest.mark.asyncio
async def test_start_refuses_before_any_revision_has_rolled_out(
    kmock: ApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """KServe ignores canaryTrafficPercent while latestRolledoutRevision is empty and sends all
    the traffic to the latest revision (ksvc_reconciler.go): a canary then is a cutover."""
    status = predictor_status("bc-00001", "bc-00001", "bc-00001", None)
    del status["components"]["predictor"]["latestRolledoutRevision"]
    kmock.objects[RESOURCE, NS, NAME] = inference_service(status)
    for dry_run in ([], ["--dry-run"]):
        assert await rollout(kubeconfig, "start", NAME, "--version", "v2", *dry_run) == 1
        err = capsys.readouterr().err
        assert "has no rolled-out revision yet" in err
        assert "KServe ignores canaryTrafficPercent until one has rolled out" in err
        assert "kubectl wait --for=condition=Ready inferenceservice/breast-cancer -n models" in err
    assert patches(kmock) == []
    assert events(kmock) == []


@pytest.mark.asyncio
async def test_start_refuses_a_canary_it_did_not_start_and_a_non_knative_service(
    kmock: ApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    isvc = inference_service(predictor_status("bc-00002", "bc-00002", "bc-00001", 30))
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 30
    kmock.objects[RESOURCE, NS, NAME] = isvc
    assert await rollout(kubeconfig, "start", NAME, "--version", "v3") == 2
    assert "a canary not started by model-rollout is in progress" in capsys.readouterr().err
    standard = inference_service(predictor_status("bc-00001", "bc-00001", "bc-00001", None))
    standard["status"]["deploymentMode"] = "Standard"
    standard["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Knative"}
    kmock.objects[RESOURCE, NS, NAME] = standard
    assert await rollout(kubeconfig, "start", NAME, "--version", "v2") == 1
    err = capsys.readouterr().err
    assert "runs this InferenceService in Standard mode (annotation asks for Knative)" in err
    assert "KServe 0.16 or newer" in err
    assert patches(kmock) == []


@pytest.mark.asyncio
async def test_a_pause_during_a_round_is_not_overwritten(
    kmock: ApiServer, kubeconfig: Path
) -> None:
    from kubernetes import client

    from rollout.kube import InferenceServices, KubeTarget

    api = client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/")))
    try:
        isvcs = InferenceServices(api, NS)
        isvc = await asyncio.to_thread(isvcs.get, NAME)
        await asyncio.to_thread(isvcs.save_state, NAME, {"phase": "progressing"}, isvc)
        target = KubeTarget(isvcs, NAME)
        assert await asyncio.to_thread(target.load_state) == {"phase": "progressing"}
        # Someone pauses between the loop's read and its write.
        await asyncio.to_thread(isvcs.save_state, NAME, {"phase": "paused"}, isvc)
        await asyncio.to_thread(target.save_state, {"phase": "progressing", "rounds": 4})
        assert saved_state(kmock) == {"phase": "paused", "rounds": 4}
    finally:
        api.close()  # type: ignore[no-untyped-call]


def test_settings_go_before_or_after_the_command() -> None:
    """kubectl-style: ``model-rollout -n models status NAME`` and ``status NAME -n models``."""
    from rollout.__main__ import build_parser
    from rollout.settings import settings_from

    parser = build_parser()
    before = settings_from(parser.parse_args(["-n", "models", "--dry-run", "status", NAME]))
    after = settings_from(parser.parse_args(["status", NAME, "-n", "models", "--dry-run"]))
    assert (
        (before.namespace, before.dry_run) == (after.namespace, after.dry_run) == ("models", True)
    )
    both = settings_from(parser.parse_args(["-n", "a", "status", NAME, "-n", "b"]))
    assert both.namespace == "b"
    assert settings_from(parser.parse_args(["status", NAME])).namespace == "default"


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "own"),
    [
        (["start", "--help"], ["--version", "--storage-uri"]),
        (["rehearse", "--help"], ["--control", "--treatment-fault-error-ratio", "--expect"]),
        (["experiment", "rehearse", "--help"], ["--control", "--lift", "--max-outcomes"]),
        (["experiment", "start", "--help"], ["--experiment", "--treatment", "--percent"]),
        (["promote", "--help"], ["NAME"]),
    ],
)
def test_a_command_help_shows_its_own_flags_and_examples_then_a_few_settings(
    capsys: pytest.CaptureFixture[str], argv: list[str], own: list[str]
) -> None:
    text = help_of(capsys, *argv)
    settings_at = text.index("settings (each also ROLLOUT_<NAME>)")
    assert all(0 < text.index(flag) < settings_at for flag in own), text
    assert "--help-all lists every setting" in text
    assert "--max-p95-ms" not in text  # the long tail waits for --help-all
    examples = text.index("examples:\n  model-rollout ")
    assert settings_at < examples < text.index("exit codes:")
    assert len(text.splitlines()) < 90


def test_help_all_and_the_top_level_help_list_every_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rollout.settings import RolloutSettings

    flags = ["--" + name.replace("_", "-") for name in RolloutSettings.model_fields]
    for argv in (["start", "--help-all"], ["experiment", "status", "--help-all"], ["--help"]):
        text = help_of(capsys, *argv)
        assert all(flag in text for flag in flags), [f for f in flags if f not in text]
    rehearse = help_of(capsys, "rehearse", "--help")
    assert "rolled back when a\n    promotion was expected" in rehearse  # its own exit codes
    assert "--interval-seconds 10" in rehearse  # and its own quick defaults


def test_a_setting_left_out_of_a_command_help_is_still_taken_there() -> None:
    from rollout.__main__ import build_parser
    from rollout.settings import settings_from

    parser = build_parser()
    args = parser.parse_args(["start", NAME, "--version", "v2", "--max-p95-ms", "300",
                              "--custom-query", "q=up<=1", "-o", "json"])  # fmt: skip
    settings = settings_from(args)
    assert (settings.max_p95_ms, settings.custom_query, settings.output) == (
        300.0,
        ["q=up<=1"],
        "json",
    )
    rehearsal = settings_from(parser.parse_args(
        ["rehearse", "--control", "v1", "--treatment", "v2", "--max-error-ratio", "0.2"]
    ))  # fmt: skip
    assert rehearsal.max_error_ratio == 0.2


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No kubeconfig anywhere and not in a pod."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.mark.usefixtures("no_cluster")
def test_a_dry_run_promote_or_rollback_needs_no_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["promote", NAME, "-n", NS, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would promote breast-cancer" in out
    assert (
        "kubectl patch inferenceservice breast-cancer -n models --type merge --field-manager "
        """model-rollout -p '{"spec":{"predictor":{"canaryTrafficPercent":null}}}'"""
    ) in out
    assert main(["rollback", NAME, "-n", NS, "--dry-run", "-o", "json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0])["patch"] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    assert lines[1].endswith("""-p '{"spec":{"predictor":{"canaryTrafficPercent":0}}}'""")
    assert main(["promote", NAME, "-n", NS]) == 1  # for real, it does need one
    assert "no Kubernetes configuration" in capsys.readouterr().err


@pytest.mark.usefixtures("no_cluster")
def test_a_dry_run_that_must_read_the_cluster_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["start", NAME, "-n", NS, "--version", "v2", "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.startswith(
        "model-rollout: error: start --dry-run needs the cluster: it reads inferenceservice "
        "models/breast-cancer first, because the patch sends the predictor's container list whole"
    )
    assert "no Kubernetes configuration" in err
    assert "promote and rollback --dry-run print their patches" in err
    assert "Traceback" not in err
    assert main(["pause", NAME, "-n", NS, "--dry-run"]) == 1
    assert "saved rollout state" in capsys.readouterr().err
    argv = ["experiment", "start", NAME, "-n", NS, "--experiment", "e", "--treatment", "v2"]
    assert main([*argv, "--dry-run"]) == 1
    assert "experiment start --dry-run needs the cluster" in capsys.readouterr().err


def test_an_api_server_that_does_not_answer_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "x",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        })
    )  # fmt: skip
    assert main(["status", NAME, "-n", NS, "--kubeconfig", str(config)]) == 1
    assert (
        f"cannot reach the Kubernetes API at http://127.0.0.1:{port} to get inferenceservice "
        "models/breast-cancer:" in capsys.readouterr().err
    )


@pytest.mark.asyncio
async def test_a_start_over_an_unknown_control_is_refused_not_halted(
    kmock: ApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A canary of v3 by kubectl, promoted by hand with no saved rollout, then rolled back: the
    record cannot know what served before v3, so a new start says so instead of comparing
    against a version no revision serves (and halting after the whole analysis)."""
    isvc = serving("v3", predictor_status("bc-00003", "bc-00003", "bc-00002", 10))
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 10
    kmock.objects[RESOURCE, NS, NAME] = isvc
    assert await rollout(kubeconfig, "promote", NAME) == 0
    assert saved_state(kmock)["control_version"] == "unknown"
    assert await rollout(kubeconfig, "rollback", NAME) == 0
    assert saved_state(kmock)["phase"] == "rolled_back"
    assert await rollout(kubeconfig, "pause", NAME) == 2  # a rolled-back rollout is finished
    capsys.readouterr()
    assert await rollout(kubeconfig, "start", NAME, "--version", "v4") == 2
    assert "does not know which version serves outside the canary" in capsys.readouterr().err
    assert not any("containers" in p.get("spec", {}).get("predictor", {}) for p in patches(kmock))
