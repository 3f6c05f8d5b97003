"""``model-server`` command line: help and usage errors (no server is started)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def server(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SERVER_")}
    return subprocess.run(
        [sys.executable, "-m", "model_server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_help_documents_settings_endpoints_and_exit_codes() -> None:
    result = server("--help")
    assert result.returncode == 0
    for text in (
        "--model-dir",
        "--registry-uri",
        "--workers",
        "--max-batch-rows",
        "--grace-period-seconds",
        "MODEL_SERVER_",
        "exit codes:",
        "/v2/models/NAME/infer",
    ):
        assert text in result.stdout, text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --model-dir or --registry-uri"),
        (["--model-dir", "/m", "--registry-uri", "./r"], "exactly one of"),
        (["--registry-uri", "./r"], "--model-name is required"),
        (["--model-dir", "/m", "--workers", "0"], "invalid --workers / MODEL_SERVER_WORKERS"),
        (["--model-dir", "/m", "--http-port", "70000"], "invalid --http-port"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = server(*args)
    assert result.returncode == 2
    assert message in result.stderr
