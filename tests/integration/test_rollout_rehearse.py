"""The whole analysis loop on real evidence: ``model-rollout rehearse``.

Two real model servers (control v1, treatment v2), a real Prometheus scraping them every
second and a real locust load split by the canary's percent; short intervals keep each run
under a minute. A healthy treatment is promoted through every step; one failing a third of its
requests (fault injection) is rolled back.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("rehearse") / "registry")
    run(TrainerSettings(sample="breast-cancer", registry_uri=uri, promote=True))
    run(TrainerSettings(sample="breast-cancer", registry_uri=uri, param={"C": "0.5"}, force=True))
    return uri


def rehearse(registry: str, *extra: str) -> tuple[int, list[dict[str, object]]]:
    command = [
        sys.executable, "-m", "rollout", "rehearse", "--registry-uri", registry,
        "--control", "v1", "--treatment", "v2", "--steps", "10,50",
        "--interval-seconds", "3", "--analysis-window", "30s", "--min-requests", "20",
        "--users", "4", "--output", "json", *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout + done.stderr
    return done.returncode, lines


def decisions(lines: list[dict[str, object]]) -> list[object]:
    return [line["message"] for line in lines if line["event"] == "decision"]


def test_healthy_treatment_is_promoted_through_every_step(registry: str) -> None:
    code, lines = rehearse(registry)
    assert code == 0, lines
    made = decisions(lines)
    # A slow machine may hold a round for too little traffic; the steps themselves are fixed.
    assert [d for d in made if d != "hold"] == ["step", "promote"], made
    assert lines[-1]["event"] == "promoted"


def test_failing_treatment_is_rolled_back(registry: str) -> None:
    code, lines = rehearse(registry, "--treatment-fault-error-ratio", "0.35", "--threshold", "1")
    assert code == 3, lines
    made = decisions(lines)
    assert made[-1] == "rollback", made
    assert set(made[:-1]) <= {"hold"}, made  # never stepped forward
    rollback = [line for line in lines if line["event"] == "decision"][-1]
    assert rollback["step_percent"] == 0
    assert any("error ratio failed" in str(r) for r in rollback["reasons"])  # type: ignore[attr-defined]
