"""``model-rollout experiment start|stop|status`` against kmock's Kubernetes API emulator, and
the analysis report on counts worked out by hand. The whole path on real evidence (a real
server, Prometheus and locust) is tests/integration/test_experiment_rehearse.py."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio

from rollout.experiment import Config, Counts, VariantCounts, analyse, format_report
from rollout.experiment_stats import Values
from tests.apiserver import ApiServer, write_kubeconfig
from tests.unit.rollout.test_cli import events, patches, rollout
from tests.unit.rollout.test_kube import NAME, NS, RESOURCE, inference_service, predictor_status

pytestmark = pytest.mark.kmock(cls=ApiServer)
RUNNING = [
    {"name": "MODEL_SERVER_EXPERIMENT", "value": "checkout"},
    {"name": "MODEL_SERVER_EXPERIMENT_TREATMENT", "value": "gs://b/registry/breast-cancer/v2"},
    {"name": "MODEL_SERVER_EXPERIMENT_PERCENT", "value": "30"},
]


@pytest_asyncio.fixture
async def kubeconfig(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> Path:
    kmock.objects[RESOURCE, NS, NAME] = inference_service(
        predictor_status("bc-00001", "bc-00001", "bc-00001", None)
    )
    return write_kubeconfig(kmock, tmp_path)


def env_of(patch: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in patch["spec"]["predictor"]["containers"][0]["env"]}


def with_experiment(kmock: kmock.KubernetesEmulator) -> None:
    isvc = inference_service(predictor_status("bc-00001", "bc-00001", "bc-00001", None))
    isvc["spec"]["predictor"]["containers"][0]["env"] += RUNNING
    kmock.objects[RESOURCE, NS, NAME] = isvc


@pytest.mark.asyncio
async def test_start_dry_run_prints_the_patch_and_sends_nothing(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await rollout(
        kubeconfig, "experiment", "start", NAME, "--experiment", "checkout", "--treatment",
        "v2", "--percent", "30", "--dry-run",
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "kubectl patch inferenceservice breast-cancer -n models --type merge" in out
    assert (
        '"name":"MODEL_SERVER_EXPERIMENT_TREATMENT","value":"gs://b/registry/breast-cancer/v2"'
        in out
    )
    assert patches(kmock) == []
    assert events(kmock) == []


@pytest.mark.asyncio
async def test_start_sets_the_experiment_and_keeps_the_rest(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path
) -> None:
    code = await rollout(
        kubeconfig, "experiment", "start", NAME, "--experiment", "checkout", "--treatment",
        "v2", "--percent", "30", "--require-user",
    )  # fmt: skip
    assert code == 0
    (patch,) = patches(kmock)
    assert patch["metadata"] == {"resourceVersion": "7"}
    assert env_of(patch) == {
        "STORAGE_URI": "gs://b/registry/breast-cancer/v1",  # the control is unchanged
        "MODEL_SERVER_LOG_FORMAT": "json",
        "MODEL_SERVER_EXPERIMENT": "checkout",
        "MODEL_SERVER_EXPERIMENT_TREATMENT": "gs://b/registry/breast-cancer/v2",
        "MODEL_SERVER_EXPERIMENT_PERCENT": "30",
        "MODEL_SERVER_EXPERIMENT_REQUIRE_USER": "true",
    }
    assert "canaryTrafficPercent" not in patch["spec"]["predictor"]
    assert [e["reason"] for e in events(kmock)] == ["ExperimentStarted"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--experiment", "Checkout", "--treatment", "v2"], "must be a DNS label"),
        (["--experiment", "checkout", "--treatment", "v1"], "already serves v1"),
        (["--experiment", "checkout", "--treatment", "v2", "--percent", "100"], "below 100"),
        (["--experiment", "checkout", "--treatment", "2"], "must look like v3"),
    ],
)
@pytest.mark.asyncio
async def test_start_refuses_bad_input(
    kmock: kmock.KubernetesEmulator,
    kubeconfig: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert await rollout(kubeconfig, "experiment", "start", NAME, *extra) == 2
    assert message in capsys.readouterr().err
    assert patches(kmock) == []


@pytest.mark.asyncio
async def test_start_refuses_during_a_canary_or_another_experiment(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    isvc = inference_service(predictor_status("bc-00002", "bc-00002", "bc-00001", 10))
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = 10
    kmock.objects[RESOURCE, NS, NAME] = isvc
    args = ["experiment", "start", NAME, "--experiment", "checkout", "--treatment", "v2"]
    assert await rollout(kubeconfig, *args) == 2
    assert "canaryTrafficPercent 10" in capsys.readouterr().err
    with_experiment(kmock)
    assert await rollout(kubeconfig, *args) == 2
    assert "already runs experiment 'checkout'" in capsys.readouterr().err
    assert patches(kmock) == []


@pytest.mark.asyncio
async def test_stop_ship_serves_the_treatment_and_rollback_the_control(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path
) -> None:
    with_experiment(kmock)
    assert await rollout(kubeconfig, "experiment", "stop", NAME, "--ship") == 0
    assert env_of(patches(kmock)[0]) == {
        "STORAGE_URI": "gs://b/registry/breast-cancer/v2",
        "MODEL_SERVER_LOG_FORMAT": "json",
    }
    assert await rollout(kubeconfig, "experiment", "stop", NAME, "--rollback") == 2  # ended
    with_experiment(kmock)
    assert await rollout(kubeconfig, "experiment", "stop", NAME, "--rollback") == 0
    assert env_of(patches(kmock)[1]) == {
        "STORAGE_URI": "gs://b/registry/breast-cancer/v1",
        "MODEL_SERVER_LOG_FORMAT": "json",
    }
    assert [e["reason"] for e in events(kmock)] == ["ExperimentShipped", "ExperimentRolledBack"]


@pytest.mark.asyncio
async def test_stop_and_status_need_a_running_experiment(
    kmock: kmock.KubernetesEmulator, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await rollout(kubeconfig, "experiment", "stop", NAME, "--ship") == 2
    assert "runs no experiment" in capsys.readouterr().err
    assert await rollout(kubeconfig, "experiment", "status", NAME) == 1
    assert "runs no experiment" in capsys.readouterr().err
    with_experiment(kmock)  # running, but Prometheus is unreachable: an error, no decision
    assert await rollout(kubeconfig, "experiment", "status", NAME) == 1
    assert "unreachable" in capsys.readouterr().err


def counts(
    control: tuple[int, int, int],
    treatment: tuple[int, int, int],
    percent: float = 50,
    values: tuple[Values, Values] = (Values(0, 0, 0), Values(0, 0, 0)),
) -> Counts:
    """(exposures, successes, failures) per side."""
    config = Config("churn", "checkout", "v3", "v4", percent)
    return Counts(
        config,
        VariantCounts("v3", *control, values=values[0]),
        VariantCounts("v4", *treatment, values=values[1]),
    )


def test_report_of_a_clear_lift_ships_with_the_hand_computed_numbers() -> None:
    report = analyse(counts((2000, 200, 1800), (2000, 300, 1700)))
    assert report["control"]["rate"] == 0.1
    assert report["treatment"]["rate"] == 0.15
    assert math.isclose(report["lift"], 0.05)
    # Unpooled standard error sqrt(.1 x .9 / 2000 + .15 x .85 / 2000) = 0.010428.
    low, high = report["lift_ci"]
    assert math.isclose(low, 0.05 - 1.959964 * 0.0104283, rel_tol=1e-4)
    assert math.isclose(high, 0.05 + 1.959964 * 0.0104283, rel_tol=1e-4)
    assert math.isclose(report["relative_lift"], 0.5)
    assert report["p_value"] < 1e-5
    assert report["always_valid_p_value"] <= 0.05
    assert report["decision"] == "ship"
    assert not report["sample_ratio"]["mismatch"]
    text = "\n".join(format_report(report))
    assert "lift +5.00 percentage points, 95% CI [+2.96, +7.04]" in text
    assert "decision: SHIP" in text


def test_report_of_a_harm_rolls_back_and_of_too_little_keeps_running() -> None:
    assert analyse(counts((2000, 300, 1700), (2000, 200, 1800)))["decision"] == "rollback"
    small = analyse(counts((60, 6, 54), (60, 30, 30)), min_outcomes=100)
    assert small["decision"] == "keep-running"
    assert "fewer than --experiment-min-outcomes 100" in small["reasons"][0]


def test_a_sample_ratio_mismatch_blocks_any_decision() -> None:
    # 30% configured, 40% observed over 10,000 exposures: chi-square 476.
    report = analyse(counts((6000, 600, 5400), (4000, 800, 3200), percent=30))
    assert report["sample_ratio"]["mismatch"]
    assert math.isclose(report["sample_ratio"]["chi_square"], 476.19, rel_tol=1e-3)
    assert report["decision"] == "keep-running"
    assert "sample ratio mismatch" in report["reasons"][0]


def test_numeric_outcomes_are_compared_by_their_means() -> None:
    control = Values(400, 400 * 10.0, 400 * (10.0**2 + 4.0))  # mean 10, variance ~4
    treatment = Values(400, 400 * 11.0, 400 * (11.0**2 + 4.0))  # mean 11
    report = analyse(counts((400, 0, 0), (400, 0, 0), values=(control, treatment)))
    assert report["metric"] == "value"
    assert math.isclose(report["lift"], 1.0)
    assert report["control"]["mean"] == 10.0
    assert report["decision"] == "ship"
    assert "mean 11" in "\n".join(format_report(report))
