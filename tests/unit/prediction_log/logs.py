"""Logs for the reader's tests, written by the real writer (``PredictionLogWriter``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from prediction_log.ids import new_request_id
from prediction_log.writer import PredictionLogWriter

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns(when: datetime) -> int:
    """``when`` as Unix nanoseconds (exact to the microsecond)."""
    return (when - EPOCH) // timedelta(microseconds=1) * 1000


@contextmanager
def log_writer(uri: str, model: str, **options: Any) -> Iterator[PredictionLogWriter]:
    """A writer that writes only when closed (or flushed), and must lose nothing."""
    settings: dict[str, Any] = {
        "flush_rows": 1_000_000,
        "flush_seconds": 3600.0,
        "max_buffered": 1_000_000,
        **options,
    }
    writer = PredictionLogWriter(uri, model, **settings)
    try:
        yield writer
    finally:
        assert writer.close() == 0


def predict(
    writer: PredictionLogWriter,
    when: datetime,
    *,
    request_id: str | None = None,
    version: str = "v1",
    **extra: Any,
) -> str:
    """Record one answered request at ``when``; its id is a UUIDv7 of ``when`` unless given."""
    rid = request_id or new_request_id(ns(when))
    writer.prediction(
        request_id=rid,
        time_ns=ns(when),
        model_version=version,
        revision="model-predictor-00001",
        protocol="v2",
        status=200,
        latency_ms=2.5,
        rows=1,
        inputs_sha256="ab" * 32,
        **extra,
    )
    return rid


def label(
    writer: PredictionLogWriter,
    when: datetime,
    request_id: str | None,
    *,
    version: str | None = "v1",
    correct: bool | None = None,
    abs_error: float | None = None,
) -> None:
    """Record one label outcome received at ``when``."""
    outcome(
        writer,
        when,
        request_id,
        version=version,
        outcome="label",
        prediction="1",
        target="1" if correct else "0",
        correct=correct,
        abs_error=abs_error,
    )


def outcome(
    writer: PredictionLogWriter,
    when: datetime,
    request_id: str | None,
    *,
    version: str | None = "v1",
    outcome: str = "conversion",
    **fields: Any,
) -> None:
    """Record one outcome of any kind received at ``when``."""
    record = {
        "report_id": new_request_id(ns(when)),
        "request_id": request_id,
        "model_version": version,
        "outcome": outcome,
        **fields,
    }
    writer.outcomes([record], time_ns=ns(when))


class Scenario:
    """A small log with hand counts, relative to ``now``: model ``churn`` (a classifier,
    versions v1 and v2) and ``price`` (a regressor).

    churn's labels received in the last 7 days, by the version they count for:

    - v1: P1 correct, P2 incorrect, a label for a v7 id the log has no prediction of
      (correct, outcome version v1: not joined), P6's label (correct; P6 itself is 10 days
      old) -> 4 labels, 3 joined, 3 correct.
    - v2: P3 correct (its outcome names v1, its prediction v2), P4 correct (a client's own
      id), a label without a request id (outcome version v2, incorrect) -> 3 labels, 2 joined,
      2 correct.
    - left out: P7's label, received 8 days ago; conversions.

    price: two labels for v1 with abs_error 1 and 3 -> MAE 2.
    """

    def __init__(self, root: str, now: datetime) -> None:
        self.now = now
        self.log_uri = root
        hours = timedelta(hours=1)
        with log_writer(root, "churn") as w:
            self.p1 = predict(w, now - 3 * hours, version="v1")
            label(w, now - 2 * hours, self.p1, version="v1", correct=True)
            outcome(w, now - 2 * hours, self.p1, version="v1", converted=True)
            self.p2 = predict(w, now - 5 * hours, version="v1")
            label(w, now - 4 * hours, self.p2, version="v1", correct=False)
            self.p3 = predict(w, now - 6 * hours, version="v2")
            label(w, now - 1 * hours, self.p3, version="v1", correct=True)
            self.p4 = predict(w, now - 30 * hours, version="v2", request_id="client-7")
            label(w, now - 20 * hours, self.p4, version="v2", correct=True)
            self.p5 = predict(w, now - 10 * hours, version="v2")
            outcome(w, now - 9 * hours, self.p5, version="v2", converted=False)
            label(w, now - 3 * hours, None, version="v2", correct=False)
            self.unlogged = new_request_id(ns(now - 2 * hours))
            label(w, now - 1 * hours, self.unlogged, version="v1", correct=True)
            self.p6 = predict(w, now - timedelta(days=10), version="v1")
            label(w, now - timedelta(days=2), self.p6, version="v1", correct=True)
            self.p7 = predict(w, now - timedelta(days=9), version="v1")
            label(w, now - timedelta(days=8), self.p7, version="v1", correct=False)
        with log_writer(root, "price") as w:
            self.q1 = predict(w, now - 2 * hours, version="v1")
            label(w, now - 1 * hours, self.q1, version="v1", abs_error=1.0)
            self.q2 = predict(w, now - 3 * hours, version="v1")
            label(w, now - 1 * hours, self.q2, version="v1", abs_error=3.0)

    ACCURACY: ClassVar[dict[str, list[tuple[str, int, int, int, float]]]] = {
        "churn": [("v1", 4, 3, 3, 0.75), ("v2", 3, 2, 2, 2 / 3)],
    }
    """model -> (version, labels, joined, correct, accuracy) per version."""
    JOINED_IN_WINDOW = 4
    """churn's predictions of the last 7 days with a label: P1 to P4."""
