"""The whole analysis loop on real evidence: ``model-rollout rehearse``.

Two real model servers (control v1, treatment v2), a real Prometheus scraping them every
second and a real locust load split by the canary's percent; short intervals keep each run
under a minute. A healthy treatment is promoted through every step; one failing a third of its
requests (fault injection) is rolled back, as the rehearsal expects. Each run starts in a
directory outside the repository and names the registry relatively, as a user would
(``--registry-uri ./registry``): every child must read the same registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the repository with ``./registry``: v1 and v2 of breast-cancer."""
    where = tmp_path_factory.mktemp("rehearse")
    assert not where.resolve().is_relative_to(ROOT)
    uri = str(where / "registry")
    run(TrainerSettings(sample="breast-cancer", registry_uri=uri, promote=True))
    run(TrainerSettings(sample="breast-cancer", registry_uri=uri, param={"C": "0.5"}, force=True))
    return where


def rehearse(
    workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, object]], str]:
    command = [
        sys.executable, "-m", "rollout", "rehearse", "--registry-uri", "./registry",
        "--control", "v1", "--treatment", "v2", "--steps", "10,50",
        "--interval-seconds", "3", "--analysis-window", "30s", "--min-requests", "20",
        "--users", "4", "--output", "json", *extra,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=240, check=False, cwd=workdir, env=env
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, lines, done.stderr


def decisions(lines: list[dict[str, object]]) -> list[dict[str, object]]:
    return [line for line in lines if line["event"] == "decision"]


def test_healthy_treatment_is_promoted_through_every_step(workdir: Path) -> None:
    code, lines, err = rehearse(workdir)
    assert code == 0, (lines, err)
    made = [d["message"] for d in decisions(lines)]
    # A slow machine may hold a round for too little traffic; the steps themselves are fixed.
    assert [d for d in made if d != "hold"] == ["step", "promote"], made
    for decision in decisions(lines):  # each side's traffic, with every decision
        requests = decision["requests"]
        assert isinstance(requests, dict)
        assert requests["control"] > 0, decision
        assert requests["window"] == "30s"
    assert [(x["event"], x["message"]) for x in lines[-2:]] == [
        ("promoted", "breast-cancer serves v2 to all traffic"),
        ("outcome", "promoted, as intended: the treatment was given no faults"),
    ]
    servers = next(x for x in lines if x["event"] == "servers")
    assert str(workdir / "registry") in str(servers["message"])  # made absolute where typed


def test_failing_treatment_is_rolled_back_as_the_rehearsal_expects(workdir: Path) -> None:
    code, lines, err = rehearse(
        workdir, "--treatment-fault-error-ratio", "0.35", "--threshold", "1"
    )
    assert code == 0, (lines, err)  # the rollback a fault is given for: the demo succeeded
    made = [d["message"] for d in decisions(lines)]
    assert made[-1] == "rollback", made
    assert set(made[:-1]) <= {"hold"}, made  # never stepped forward
    rollback = decisions(lines)[-1]
    assert rollback["step_percent"] == 0
    assert any("error ratio failed" in str(r) for r in rollback["reasons"])  # type: ignore[attr-defined]
    assert lines[-1]["message"] == ("rolled back, as intended: the treatment was given 35% errors")


def test_a_promotion_where_a_rollback_was_expected_fails(workdir: Path) -> None:
    code, lines, err = rehearse(workdir, "--steps", "50", "--expect", "rollback")
    assert code == 1, (lines, err)
    assert lines[-1]["event"] == "outcome"
    assert lines[-1]["message"] == (
        "promoted, but a rollback was expected: the treatment was given no faults"
    )


def test_a_missing_version_fails_before_anything_starts(workdir: Path) -> None:
    code, lines, err = rehearse(workdir, "--treatment", "v9")
    assert code == 2
    assert lines == []
    registry = workdir.resolve() / "registry"
    assert err == (
        f"model-rollout: error: --treatment v9: model 'breast-cancer' has no version v9 in "
        f"{registry}; it has v1, v2\n"
    )


def test_a_failure_keeps_the_logs_and_names_them(workdir: Path, tmp_path: Path) -> None:
    """A Prometheus that cannot start: the error names every child's log, shows the end of
    Prometheus's, and leaves them where it says."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "prometheus"
    fake.write_text("#!/bin/sh\necho 'err: cannot bind 127.0.0.1: address in use'\nexit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(tmp_path)}  # fmt: skip
    code, _, err = rehearse(workdir, env=env)
    assert code == 1, err
    started = "model-rollout: error: the local Prometheus did not start: the prometheus process"
    assert started in err
    (work,) = tmp_path.glob("rehearse-*")
    assert f"last lines of {work / 'prometheus.log'}:\n  err: cannot bind" in err
    assert f"logs (kept in {work}):" in err
    for name in ("control", "treatment", "prometheus"):
        log = work / f"{name}.log"
        assert f"  {name}: {log}\n" in err
        assert log.is_file()
    assert (work / "control.log").stat().st_size > 0  # the servers had started
