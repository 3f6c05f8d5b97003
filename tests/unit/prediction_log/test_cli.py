"""``model-trace``: output for people and scripts (JSON and YAML parse back), where a lookup
looked when it found nothing, and the exit codes."""

from __future__ import annotations

import io
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml

from model_registry import Registry
from prediction_log.__main__ import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    log_handler,
    main,
    parse_since,
    with_command,
)
from tests.conftest import metadata_body
from tests.unit.prediction_log.logs import Scenario

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    """The scenario's log at ``prediction-log`` beside a registry holding churn v1, both in
    the current folder (the defaults); no registry variable from the caller's environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("MODEL_REGISTRY_URI", "MODEL_TRACE_REGISTRY_URI", "MODEL_TRACE_LOG_URI"):
        monkeypatch.delenv(name, raising=False)
    Registry(str(tmp_path / "registry")).publish("churn", b"churn v1", metadata_body())
    return Scenario(str(tmp_path / "prediction-log"), datetime.now(UTC))


def test_trace_in_text(scenario: Scenario, capsys: Capture) -> None:
    assert main([scenario.p1]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"request:     {scenario.p1}  (UUIDv7 made " in out
    assert "model:       churn v1" in out
    assert "lineage:     churn v1 in ./registry" in out
    assert "outcomes:    2" in out
    assert "prediction 1, target 1  correct  (v1)" in out


def test_trace_as_json_and_yaml_parse_back(scenario: Scenario, capsys: Capture) -> None:
    assert main(["trace", scenario.p1, "-o", "json"]) == EXIT_OK
    document = orjson.loads(capsys.readouterr().out)
    assert document["request_id"] == scenario.p1
    assert document["prediction"]["model_version"] == "v1"
    assert document["lineage"]["found"] is True
    assert len(document["lineage"]["artifact_sha256"]) == 64
    assert sorted(o["outcome"] for o in document["outcomes"]) == ["conversion", "label"]
    assert document["log_uri"] == "./prediction-log"
    assert main(["-o", "yaml", scenario.p1]) == EXIT_OK  # a flag before the id
    assert yaml.safe_load(capsys.readouterr().out) == document


def test_a_version_the_registry_lacks_is_reported_not_failed(
    scenario: Scenario, capsys: Capture
) -> None:
    assert main([scenario.p3]) == EXIT_OK
    assert "lineage:     not available for churn v2 in ./registry" in capsys.readouterr().out


def test_not_found_says_where_it_looked(scenario: Scenario, capsys: Capture) -> None:
    assert main(["nobody-sent-this", "--since", "6h"]) == EXIT_NOT_FOUND
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "request 'nobody-sent-this' not found in the prediction log ./prediction-log" in (
        captured.err
    )
    assert "searched: models churn, price;" in captured.err
    assert "(since 6h)" in captured.err
    assert "--since 30d" in captured.err
    assert main([scenario.p4, "--since", "6h"]) == EXIT_NOT_FOUND  # a client id, 30 h old
    assert main([scenario.p4, "--since", "2d", "--model", "churn"]) == EXIT_OK


def test_a_client_id_with_a_wider_window(scenario: Scenario, capsys: Capture) -> None:
    assert main(["--since=2d", "client-7"]) == EXIT_OK
    assert "not a UUIDv7: a client's own id" in capsys.readouterr().out
    assert main(["--", "-an-id-like-a-flag"]) == EXIT_NOT_FOUND
    assert "request '-an-id-like-a-flag' not found" in capsys.readouterr().err


def test_accuracy_table_and_json(scenario: Scenario, capsys: Capture) -> None:
    assert main(["accuracy", "churn"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model churn: label outcomes received ")
    assert lines[1].split() == ["VERSION", "LABELS", "JOINED", "CORRECT", "ACCURACY", "MAE"]
    assert lines[2].split() == ["v1", "4", "3", "3", "0.7500", "-"]
    assert lines[3].split() == ["v2", "3", "2", "2", "0.6667", "-"]
    assert main(["accuracy", "price", "-o", "json"]) == EXIT_OK
    document = orjson.loads(capsys.readouterr().out)
    assert document["window"]["since"] == "7d"
    assert [(v["model_version"], v["count"], v["mae"]) for v in document["versions"]] == [
        ("v1", 2, 2.0)
    ]
    assert main(["accuracy", "churn", "-o", "yaml", "--since", "90m"]) == EXIT_OK
    versions = yaml.safe_load(capsys.readouterr().out)["versions"]
    assert [(v["model_version"], v["count"], v["joined"]) for v in versions] == [
        ("v1", 1, 0),
        ("v2", 1, 1),
    ]


def test_accuracy_with_no_labels_is_not_found(scenario: Scenario, capsys: Capture) -> None:
    assert main(["accuracy", "churn", "--until", "2020-01-01T00:00:00Z"]) == EXIT_NOT_FOUND
    assert "no label outcomes for model 'churn'" in capsys.readouterr().err


def test_log_and_registry_uris(scenario: Scenario, tmp_path: Path, capsys: Capture) -> None:
    log = str(tmp_path / "prediction-log")
    assert main([scenario.p1, "--log-uri", log]) == EXIT_OK
    assert "lineage:     not read (no --registry-uri)" in capsys.readouterr().out
    registry = str(tmp_path / "registry")
    assert main([scenario.p1, "--registry-uri", registry, "-o", "json"]) == EXIT_OK
    document = orjson.loads(capsys.readouterr().out)
    assert document["log_uri"] == str(tmp_path / "prediction-log")
    assert document["lineage"]["found"] is True


def test_the_environment_sets_what_flags_do_not(
    scenario: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_URI", str(tmp_path / "registry"))
    monkeypatch.setenv("MODEL_TRACE_OUTPUT", "json")
    monkeypatch.chdir(tmp_path.parent)  # the defaults no longer point at the scenario
    assert main([scenario.p1]) == EXIT_OK
    assert orjson.loads(capsys.readouterr().out)["lineage"]["found"] is True
    monkeypatch.setenv("MODEL_TRACE_SINCE", "a week")
    assert main([scenario.p1]) == EXIT_USAGE
    assert "invalid --since / MODEL_TRACE_SINCE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x", "--since", "7x"], "use a whole number and a unit"),
        (["x", "--since", "0d"], "use a whole number and a unit"),
        (["x", "--until", "yesterday"], "invalid --until"),
        (["x", "--model", "Not_A_Name"], "invalid model name"),
        (["x", "--registry-uri", "gs://bucket"], "bucket's root"),
        (["accuracy", "Bad Name"], "invalid model name"),
    ],
)
def test_bad_usage_exits_2(
    scenario: Scenario, args: list[str], message: str, capsys: Capture
) -> None:
    assert main(args) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_argparse_errors_exit_2(capsys: Capture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["-o", "xml", "x"])
    assert exit_.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == EXIT_USAGE


def test_a_storage_error_exits_1_with_a_message(
    scenario: Scenario, tmp_path: Path, capsys: Capture
) -> None:
    hour = next((tmp_path / "prediction-log" / "predictions").rglob("*.parquet")).parent
    (hour / "torn.parquet").write_bytes(b"this is not parquet")
    assert main(["client-that-is-not-there", "--since", "30d"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("model-trace: error: cannot read the prediction log")
    assert "torn.parquet" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [[], ["trace"], ["accuracy"]])
def test_help_has_examples_and_exit_codes(command: list[str], capsys: Capture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "exit codes:" in out
    assert "3  not found" in out
    assert "--since" in out


def test_a_bare_request_id_is_the_trace_command() -> None:
    assert with_command(["abc"]) == ["trace", "abc"]
    assert with_command(["-o", "json", "abc"]) == ["-o", "json", "trace", "abc"]
    assert with_command(["--since=1d", "abc"]) == ["--since=1d", "trace", "abc"]
    assert with_command(["accuracy", "churn"]) == ["accuracy", "churn"]
    assert with_command(["trace", "accuracy"]) == ["trace", "accuracy"]  # an id "accuracy"
    assert with_command(["--", "-odd-id"]) == ["trace", "--", "-odd-id"]
    assert with_command(["--help"]) == ["--help"]


def test_since_units() -> None:
    assert parse_since("30m").total_seconds() == 1800
    assert parse_since("6h").total_seconds() == 6 * 3600
    assert parse_since("7d").days == 7
    for bad in ("7", "d", "1.5h", "-1d", "7w"):
        with pytest.raises(ValueError, match="unit"):
            parse_since(bad)
    with pytest.raises(ValueError, match="more than 3660 days back"):
        parse_since("99999999d")
    assert main(["some-id", "--since", "99999999d"]) == 2  # usage, not a traceback


def test_storage_library_messages_are_one_line_each() -> None:
    """gcsfs logs its last retry with a traceback: below DEBUG only the line is shown."""
    try:
        raise ConnectionRefusedError("Connect call failed ('127.0.0.1', 9)")
    except ConnectionRefusedError:
        failure = sys.exc_info()
    for level, traceback in (("ERROR", False), ("DEBUG", True)):
        record = logging.LogRecord(
            "gcsfs", logging.ERROR, __file__, 1, "_request out of retries", None, failure
        )
        handler = log_handler(level)
        assert isinstance(handler, logging.StreamHandler)
        stream = io.StringIO()
        handler.setStream(stream)
        handler.handle(record)
        text = stream.getvalue()
        assert text.startswith("model-trace: ERROR gcsfs: _request out of retries")
        assert ("Traceback" in text) is traceback
