"""``make loadtest``'s runner: a real server, real locust, pass and fail against the SLO."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("loadtest") / "registry")
    run(TrainerSettings(sample="breast-cancer", registry_uri=uri, promote=True))
    return uri


def loadtest(registry: str, results: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "loadtests.run", "--registry-uri", registry]
    command += ["--users", "4", "--duration", "6s", "--results", str(results), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


def test_healthy_server_meets_the_slo(registry: str, tmp_path: Path) -> None:
    done = loadtest(registry, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SLO met" in done.stdout
    with (tmp_path / "loadtest_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    assert int(rows["v2 infer"]["Request Count"]) > 0
    assert int(rows["v1 predict"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert (tmp_path / "report.html").stat().st_size > 0


def test_injected_latency_misses_the_slo(registry: str, tmp_path: Path) -> None:
    done = loadtest(registry, tmp_path, "--fault-latency-ms", "300")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "MISS p95" in done.stdout
    assert "SLO MISSED" in done.stdout
