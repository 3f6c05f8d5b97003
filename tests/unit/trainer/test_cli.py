"""``model-trainer`` as a job runs it: a subprocess, settings from flags or TRAINER_* env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from model_registry import Registry
from tests.conftest import mixed_frame
from trainer.__main__ import EXIT_DATA, EXIT_REGISTERED, EXIT_REJECTED, EXIT_USAGE


def trainer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
        check=False,
    )


def test_help_lists_every_setting_and_exit_code() -> None:
    result = trainer("--help")
    assert result.returncode == 0
    for flag in (
        "--registry-uri",
        "--data-uri",
        "--sample",
        "--param",
        "--tolerance",
        "--force",
        "--promote",
        "--pushgateway-url",
        "--log-format",
        "--max-missing-fraction",
    ):
        assert flag in result.stdout, flag
    assert "exit codes:" in result.stdout
    assert "TRAINER_" in result.stdout


def test_registers_then_rejects_with_distinct_exit_codes(tmp_path: Path) -> None:
    uri = str(tmp_path / "registry")
    first = trainer("--sample", "breast-cancer", "--registry-uri", uri, "--promote")
    assert first.returncode == EXIT_REGISTERED, first.stderr
    assert "registered breast-cancer v1 (production)" in first.stdout
    worse = trainer(
        "--sample",
        "breast-cancer",
        "--registry-uri",
        uri,
        "--estimator",
        "random-forest",
        "--param",
        "n_estimators=2",
        "--param",
        "max_depth=1",
    )
    assert worse.returncode == EXIT_REJECTED
    assert "REJECTED breast-cancer: worse than production" in worse.stdout
    assert [m.version for m in Registry(uri).list_versions("breast-cancer")] == ["v1"]


def test_settings_come_from_the_environment_for_cronjobs(tmp_path: Path) -> None:
    uri = str(tmp_path / "registry")
    data = tmp_path / "churn.csv"
    mixed_frame(120).to_csv(data, index=False)
    env = {
        "TRAINER_REGISTRY_URI": uri,
        "TRAINER_DATA_URI": str(data),
        "TRAINER_TARGET": "label",
        "TRAINER_MODEL_NAME": "churn",
        "TRAINER_OUTPUT": "json",
        "TRAINER_LOG_FORMAT": "json",
    }
    result = trainer(env=env)
    assert result.returncode == EXIT_REGISTERED, result.stderr
    report = orjson.loads(result.stdout)
    assert report["outcome"] == "registered"
    assert report["version"] == "v1"
    assert report["uri"].endswith("churn/v1")
    logs = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(logs[0])
    assert all(entry["model_name"] == "churn" for entry in logs)
    assert any("fitting" in entry["message"] for entry in logs)


def test_flags_win_over_environment(tmp_path: Path) -> None:
    result = trainer(
        "--registry-uri",
        str(tmp_path / "flag"),
        "--log-level",
        "WARNING",
        env={"TRAINER_SAMPLE": "diabetes", "TRAINER_REGISTRY_URI": str(tmp_path / "env")},
    )
    assert result.returncode == EXIT_REGISTERED, result.stderr
    assert Registry(str(tmp_path / "flag")).list_models() == ["diabetes"]
    assert not (tmp_path / "env").exists()


def test_invalid_data_exits_with_the_data_code(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    frame = mixed_frame()
    frame["when"] = "2024-01-01"
    frame["when"] = frame["when"].astype("datetime64[ns]")
    frame.to_parquet(data.with_suffix(".parquet"))
    result = trainer(
        "--data-uri",
        str(data.with_suffix(".parquet")),
        "--target",
        "label",
        "--model-name",
        "m",
        "--registry-uri",
        str(tmp_path / "r"),
    )
    assert result.returncode == EXIT_DATA
    assert "feature 'when' is a date/time" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --data-uri or --sample"),
        (["--sample", "diabetes", "--data-uri", "x.csv"], "exactly one of"),
        (["--data-uri", "x.csv", "--model-name", "m"], "--target is required"),
        (["--sample", "iris"], "invalid --sample / TRAINER_SAMPLE"),
        (["--sample", "diabetes", "--tolerance", "-1"], "invalid --tolerance"),
        (["--sample", "diabetes", "--param", "alpha=1", "--param", "nope=2"], "unknown parameter"),
        (["--sample", "diabetes", "--model-name", "Bad_Name"], "invalid model name"),
    ],
)
def test_usage_errors_exit_2_with_a_message(args: list[str], message: str, tmp_path: Path) -> None:
    result = trainer(*args, "--registry-uri", str(tmp_path / "r"))
    assert result.returncode == EXIT_USAGE, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
