"""Logging: JSON lines carrying context, text for terminals."""

from __future__ import annotations

import logging

import orjson
import pytest

from serving_common.logging import ContextFilter, JsonFormatter, TextFormatter, log_context


def record(message: str, **extra: object) -> logging.LogRecord:
    item = logging.LogRecord("trainer", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(item, key, value)
    return item


def test_json_line_has_context_and_extras() -> None:
    with log_context(model_name="churn", model_version="v3"):
        item = record("loaded %s", rows=10)
        item.args = ("data",)
        ContextFilter().filter(item)
    line = orjson.loads(JsonFormatter().format(item))
    assert line["message"] == "loaded data"
    assert line["level"] == "info"
    assert line["logger"] == "trainer"
    assert (line["model_name"], line["model_version"], line["rows"]) == ("churn", "v3", 10)
    assert line["time"].endswith("Z")


def test_context_ends_with_its_block() -> None:
    with log_context(request_id="abc"):
        pass
    item = record("x")
    ContextFilter().filter(item)
    assert not hasattr(item, "request_id")


def test_json_line_carries_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        item = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = orjson.loads(JsonFormatter().format(item))
    assert "ValueError: boom" in line["exception"]


@pytest.mark.parametrize("fmt", [TextFormatter(), JsonFormatter()])
def test_formatters_accept_any_extra(fmt: logging.Formatter) -> None:
    assert "weird" in fmt.format(record("m", weird=object()))
