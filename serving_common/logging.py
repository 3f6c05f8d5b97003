"""Logging configured once per process with ``dictConfig``: readable text or JSON lines.

Context such as the model name and version is carried in ``contextvars`` and added
to every record, so a line can be traced without threading arguments through calls.
"""

from __future__ import annotations

import contextvars
import logging
import logging.config
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]

_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "log_context", default=None
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn duplicates its message with ANSI colours
}


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Add ``values`` to every log record emitted inside the block."""
    token = _context.set({**(_context.get() or {}), **values})
    try:
        yield
    finally:
        _context.reset(token)


def bind_context(**values: Any) -> None:
    """Add ``values`` to every later log record of this context (no block needed)."""
    _context.set({**(_context.get() or {}), **values})


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context and extras."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(_extras(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "text", levels: Mapping[str, str] | None = None
) -> None:
    """Configure the root logger once for the process (stderr, one handler).

    ``levels`` sets other libraries' loggers (e.g. ``{"uvicorn.access": "WARNING"}``); they lose
    their own handlers and propagate to the root, so every line has one format.
    """
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"context": {"()": ContextFilter}},
            "formatters": {
                "text": {"()": TextFormatter},
                "json": {"()": JsonFormatter},
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": fmt,
                    "filters": ["context"],
                }
            },
            "root": {"level": level.upper(), "handlers": ["stderr"]},
            "loggers": {
                name: {"level": value.upper(), "handlers": [], "propagate": True}
                for name, value in (levels or {}).items()
            },
        }
    )
