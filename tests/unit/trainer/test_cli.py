"""``model-trainer`` as a job runs it: a subprocess, settings from flags or TRAINER_* env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from model_registry import Registry
from serving_common.cli import parse_settings
from tests.conftest import mixed_frame
from trainer.__main__ import EXIT_DATA, EXIT_REGISTERED, EXIT_REJECTED, EXIT_USAGE
from trainer.settings import TrainerSettings


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
        "--drop",
        "--features",
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
    rejected = worse.stdout.splitlines()[0]
    assert rejected.startswith("REJECTED breast-cancer: roc_auc 0.")
    assert " is worse than production v1's 0." in rejected
    assert (
        ", past the tolerance 0 (higher is better; both scored on this run's held-out rows)"
        in rejected
    )
    assert rejected.endswith(" allows that much, --force registers anyway")
    assert "; nothing registered. --tolerance 0." in rejected
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


def id_table(rows: int = 2000) -> pd.DataFrame:
    frame = mixed_frame(rows)
    frame.insert(0, "customer_id", [f"C{i:05d}" for i in range(rows)])
    frame["order_no"] = np.arange(rows) * 3 + 100_000
    return frame


def test_drop_from_the_environment_and_an_id_warning_in_the_output(tmp_path: Path) -> None:
    data = tmp_path / "churn.parquet"
    id_table().to_parquet(data)
    env = {
        "TRAINER_REGISTRY_URI": str(tmp_path / "registry"),
        "TRAINER_DATA_URI": str(data),
        "TRAINER_TARGET": "label",
        "TRAINER_MODEL_NAME": "churn",
    }
    refused = trainer(env=env)
    assert refused.returncode == EXIT_DATA
    assert "leave it out with --drop customer_id" in refused.stderr
    result = trainer(env={**env, "TRAINER_DROP": "customer_id"})
    assert result.returncode == EXIT_REGISTERED, result.stderr
    assert "  dropped: customer_id\n" in result.stdout
    warning = (
        "feature 'order_no' looks like an id (a whole number unique to each of the 2000 rows): "
        "a model learns nothing from it that holds for new rows; leave it out with "
        "--drop order_no"
    )
    assert f"  warning: {warning}\n" in result.stdout
    assert warning in result.stderr  # and logged
    meta = Registry(str(tmp_path / "registry")).get("churn")
    assert [f.name for f in meta.features] == ["x1", "x2", "color", "order_no"]
    assert (meta.training.model_extra or {})["dropped_columns"] == ["customer_id"]


def test_a_column_the_data_lacks_exits_with_the_data_code(tmp_path: Path) -> None:
    data = tmp_path / "churn.csv"
    id_table(100).to_csv(data, index=False)
    result = trainer(
        *("--data-uri", str(data), "--target", "label", "--model-name", "churn"),
        *("--registry-uri", str(tmp_path / "r"), "--drop", "custmer_id", "--output", "json"),
    )
    assert result.returncode == EXIT_DATA, result.stderr
    assert (
        f"--drop names a column not in {data}: 'custmer_id' (did you mean 'customer_id'?); its "
        "columns: 'customer_id', 'x1', 'x2', 'color', 'label', 'order_no'"
    ) in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "env", "drop", "features"),
    [
        (["--drop", "a"], {}, ["a"], None),
        (["--drop", "a", "--drop", "b,c", "--drop", "a"], {}, ["a", "b", "c"], None),
        ([], {"TRAINER_DROP": "customer_id, signup_note"}, ["customer_id", "signup_note"], None),
        ([], {"TRAINER_DROP": '["id, legacy", "note"]'}, ["id, legacy", "note"], None),
        ([], {"TRAINER_DROP": ""}, [], None),
        (["--drop", "a"], {"TRAINER_DROP": "b"}, ["a"], None),  # the flag wins
        (["--features", "x1,color"], {}, [], ["x1", "color"]),
        (["--features", "x1", "--features", "color"], {}, [], ["x1", "color"]),
        ([], {"TRAINER_FEATURES": "x1,color"}, [], ["x1", "color"]),
        ([], {"TRAINER_FEATURES": ""}, [], None),
    ],
)
def test_column_lists_from_flags_and_environment(
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    drop: list[str],
    features: list[str] | None,
) -> None:
    for name in [n for n in os.environ if n.startswith("TRAINER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = parse_settings(
        TrainerSettings, ["--sample", "diabetes", *args], prog="model-trainer", description=""
    )
    assert settings.drop == drop
    assert settings.features == features


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drop", "a", "--features", "b"], "give --features or --drop, not both"),
        (
            ["--data-uri", "d.csv", "--target", "y", "--drop", "y"],
            "--drop names the target 'y', which is never a feature",
        ),
        (
            ["--data-uri", "d.csv", "--target", "y", "--features", "a,y"],
            "--features names the target 'y', which is never a feature",
        ),
    ],
)
def test_contradictory_column_flags_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--data-uri" not in args:
        args = ["--sample", "diabetes", *args]
    with pytest.raises(SystemExit) as exited:
        parse_settings(TrainerSettings, args, prog="model-trainer", description="")
    assert exited.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err
