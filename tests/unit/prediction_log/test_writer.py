"""The writer: buffering, flushing on rows and on time, bounded memory, a failing sink, stops.

Waits for the background thread are conditions with a generous deadline, never assertions on
how long something took.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from model_registry.storage import Storage
from prediction_log.schema import OUTCOMES, PREDICTIONS, SCHEMA_VERSION, Kind
from prediction_log.writer import PredictionLogWriter
from tests.unit.prediction_log.logs import ns

MODEL = "churn"
WHEN = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)
HOUR = "model=churn/date=2025-06-01/hour=12"


class Events:
    """A fake ``LogEvents``: what the writer reported, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writes: list[tuple[Kind, int]] = []
        self.drops: list[tuple[Kind, str, int]] = []
        self.failures: list[Kind] = []

    def started(self) -> None:
        pass

    def written(self, kind: Kind, records: int) -> None:
        with self.lock:
            self.writes.append((kind, records))

    def dropped(self, kind: Kind, reason: str, records: int) -> None:
        with self.lock:
            self.drops.append((kind, reason, records))

    def write_failed(self, kind: Kind) -> None:
        with self.lock:
            self.failures.append(kind)

    def total_written(self, kind: Kind = "predictions") -> int:
        with self.lock:
            return sum(n for k, n in self.writes if k == kind)


class FlakyStorage(Storage):
    """A local log whose creates fail while ``down`` is set; it remembers what it wrote."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.down = False
        self.created: list[str] = []

    def create(self, rel: str, data: bytes) -> None:
        if self.down:
            raise OSError("the store is down")
        super().create(rel, data)
        self.created.append(rel)


def wait_until(condition: Callable[[], bool], deadline: float = 30.0) -> None:
    """Wait for the background thread to make ``condition`` true (the deadline is only a
    guard against a hang, not something the test measures)."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("the writer did not get there")
        time.sleep(0.01)


def record(writer: PredictionLogWriter, i: int, when: datetime = WHEN, **extra: Any) -> bool:
    return writer.prediction(
        request_id=f"req-{i}",
        time_ns=ns(when + timedelta(seconds=i)),
        model_version="v1",
        revision=None,
        protocol="v1",
        status=200,
        latency_ms=1.0,
        rows=1,
        **extra,
    )


def files(root: Path, kind: Kind = "predictions") -> list[Path]:
    return sorted((root / kind).rglob("*.parquet"))


def request_ids(root: Path, kind: Kind = "predictions") -> list[str]:
    ids: list[str] = []
    for path in sorted(files(root, kind), key=lambda p: p.name):
        ids.extend(pq.read_table(path, columns=["request_id"])["request_id"].to_pylist())
    return ids


def test_buffers_until_a_flush_then_writes_one_file_per_hour(tmp_path: Path) -> None:
    log = tmp_path / "log"
    writer = PredictionLogWriter(str(log), MODEL, flush_rows=100, flush_seconds=3600)
    for i in range(3):
        assert record(writer, i)
    record(writer, 3, WHEN + timedelta(hours=1))  # the next hour: a file of its own
    assert files(log) == []
    assert writer.held == 4
    assert writer.flush() == 4
    assert writer.held == 0
    assert [p.parent.relative_to(log / "predictions").as_posix() for p in files(log)] == [
        HOUR,
        "model=churn/date=2025-06-01/hour=13",
    ]
    table = pq.read_table(files(log)[0])
    assert table.schema.equals(PREDICTIONS, check_metadata=False)
    assert table["request_id"].to_pylist() == ["req-0", "req-1", "req-2"]
    assert set(table["schema_version"].to_pylist()) == {SCHEMA_VERSION}
    assert set(table["model_name"].to_pylist()) == {MODEL}
    assert table["time"][0].as_py() == WHEN
    assert writer.close() == 0


def test_outcomes_get_time_model_and_schema_version(tmp_path: Path) -> None:
    log = tmp_path / "log"
    writer = PredictionLogWriter(str(log), MODEL, flush_seconds=3600)
    report = [
        {"report_id": "r", "request_id": "req-0", "model_version": "v1", "outcome": "label",
         "prediction": "1", "target": "0", "correct": False},
        {"report_id": "r", "model_version": "v1", "outcome": "value", "value": 2.5},
    ]  # fmt: skip
    assert writer.outcomes(report, time_ns=ns(WHEN))
    assert writer.close() == 0
    (path,) = files(log, "outcomes")
    assert path.parent.relative_to(log / "outcomes").as_posix() == HOUR
    rows = pq.read_table(path).to_pylist()
    assert pq.read_table(path).schema.equals(OUTCOMES, check_metadata=False)
    assert [(r["outcome"], r["correct"], r["value"], r["request_id"]) for r in rows] == [
        ("label", False, None, "req-0"),
        ("value", None, 2.5, None),
    ]
    assert {(r["time"], r["model_name"], r["schema_version"]) for r in rows} == {
        (WHEN, MODEL, SCHEMA_VERSION)
    }


def test_flushes_once_flush_rows_are_waiting(tmp_path: Path) -> None:
    events = Events()
    log = tmp_path / "log"
    writer = PredictionLogWriter(str(log), MODEL, flush_rows=5, flush_seconds=3600, events=events)
    for i in range(4):
        record(writer, i)
    assert files(log) == []  # four waiting: the thread sleeps for an hour
    record(writer, 4)  # the fifth wakes it
    wait_until(lambda: events.total_written() == 5)
    assert request_ids(log) == [f"req-{i}" for i in range(5)]
    assert writer.close() == 0


def test_flushes_after_flush_seconds(tmp_path: Path) -> None:
    events = Events()
    log = tmp_path / "log"
    writer = PredictionLogWriter(
        str(log), MODEL, flush_rows=1000, flush_seconds=0.05, events=events
    )
    record(writer, 0)  # one record, far below flush_rows: only time writes it
    wait_until(lambda: events.total_written() == 1)
    assert request_ids(log) == ["req-0"]
    assert writer.close() == 0


def test_memory_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    events = Events()
    sink = FlakyStorage(str(tmp_path / "log"))
    sink.down = True  # nothing leaves memory
    writer = PredictionLogWriter(
        sink.uri, MODEL, flush_rows=2, flush_seconds=3600, max_buffered=4, events=events,
        storage=sink,
    )  # fmt: skip
    assert all(record(writer, i) for i in range(4))
    assert not record(writer, 4)  # the fifth is over the bound: dropped, never waited for
    assert not writer.outcomes(
        [{"report_id": "r", "outcome": "conversion", "converted": True}] * 3, time_ns=ns(WHEN)
    )  # a report's outcomes are kept or dropped together
    assert events.drops == [("predictions", "buffer_full", 1), ("outcomes", "buffer_full", 3)]
    assert writer.held == 4
    assert writer.close(deadline_seconds=0) == 4
    assert ("predictions", "write_failed", 4) in events.drops


def test_payloads_weigh_one_per_row(tmp_path: Path) -> None:
    events = Events()
    writer = PredictionLogWriter(
        str(tmp_path / "log"), MODEL, flush_rows=4, flush_seconds=3600, max_buffered=4,
        events=events,
    )  # fmt: skip
    rows = [[1.0, 2.0]] * 3

    def with_payload(i: int) -> bool:
        return writer.prediction(
            request_id=f"req-{i}", time_ns=ns(WHEN), model_version="v1", revision=None,
            protocol="v1", status=200, latency_ms=1.0, rows=3, inputs=rows, outputs=[0, 1, 0],
        )  # fmt: skip

    assert with_payload(0)  # weighs 3
    assert not with_payload(1)  # 3 more would be 6 > 4
    assert record(writer, 2)  # without payloads: 1
    assert events.drops == [("predictions", "buffer_full", 1)]
    assert writer.close() == 0


def test_a_failing_sink_holds_records_and_writes_them_in_order_when_it_recovers(
    tmp_path: Path,
) -> None:
    events = Events()
    sink = FlakyStorage(str(tmp_path / "log"))
    writer = PredictionLogWriter(
        sink.uri, MODEL, flush_rows=100, flush_seconds=3600, events=events, storage=sink
    )
    sink.down = True
    for i in range(3):
        record(writer, i)
    assert writer.flush() == 0  # refused: held for a retry
    assert writer.held == 3
    assert events.failures == ["predictions"]
    for i in range(3, 5):
        record(writer, i)
    assert writer.flush() == 0
    assert writer.held == 5
    sink.down = False  # the store is back
    assert writer.flush() == 5
    assert writer.held == 0
    assert len(sink.created) == 2  # the held file first, then the newer one
    assert request_ids(tmp_path / "log") == [f"req-{i}" for i in range(5)]
    assert events.total_written() == 5
    assert events.drops == []
    assert writer.close() == 0


def test_a_file_already_written_is_not_written_twice(tmp_path: Path) -> None:
    class Ambiguous(FlakyStorage):
        """The first create lands but its answer is lost; the retry finds the file there."""

        def create(self, rel: str, data: bytes) -> None:
            super().create(rel, data)
            if len(self.created) == 1:
                raise OSError("timeout after the write")

    events = Events()
    sink = Ambiguous(str(tmp_path / "log"))
    writer = PredictionLogWriter(sink.uri, MODEL, flush_seconds=3600, events=events, storage=sink)
    record(writer, 0)
    assert writer.flush() == 0
    assert writer.flush() == 1  # FileExistsError: it is there, counted as written once
    assert request_ids(tmp_path / "log") == ["req-0"]
    assert writer.close() == 0


def test_close_writes_everything_held(tmp_path: Path) -> None:
    events = Events()
    log = tmp_path / "log"
    writer = PredictionLogWriter(str(log), MODEL, flush_seconds=3600, events=events)
    for i in range(250):
        record(writer, i)
    writer.outcomes([{"report_id": "r", "outcome": "value", "value": 1.0}], time_ns=ns(WHEN))
    assert files(log) == []
    assert writer.close() == 0  # a graceful stop
    assert request_ids(log) == [f"req-{i}" for i in range(250)]
    assert len(files(log, "outcomes")) == 1
    assert events.drops == []
    assert not record(writer, 999)  # closed: refused and counted, never buffered
    assert not writer.outcomes([{"report_id": "r", "outcome": "value", "value": 2.0}], time_ns=1)
    assert events.drops == [("predictions", "write_failed", 1), ("outcomes", "write_failed", 1)]


def test_close_counts_what_a_dead_sink_loses(tmp_path: Path) -> None:
    events = Events()
    sink = FlakyStorage(str(tmp_path / "log"))
    sink.down = True
    writer = PredictionLogWriter(sink.uri, MODEL, flush_seconds=3600, events=events, storage=sink)
    for i in range(3):
        record(writer, i)
    writer.outcomes([{"report_id": "r", "outcome": "value", "value": 1.0}] * 2, time_ns=ns(WHEN))
    assert writer.close(deadline_seconds=0) == 5
    assert sorted(events.drops) == [
        ("outcomes", "write_failed", 2),
        ("predictions", "write_failed", 3),
    ]
    assert writer.close() == 0  # a second close has nothing left


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_buffered"):
        PredictionLogWriter(str(tmp_path), MODEL, flush_rows=10, max_buffered=5)
    with pytest.raises(ValueError, match="flush_seconds"):
        PredictionLogWriter(str(tmp_path), MODEL, flush_seconds=0)


def test_a_record_that_cannot_be_encoded_is_dropped_and_counted_and_frees_its_room(
    tmp_path: Path,
) -> None:
    events = Events()
    writer = PredictionLogWriter(
        str(tmp_path / "log"), MODEL, flush_rows=10, max_buffered=10, events=events
    )
    assert record(writer, 0, inputs=object)  # a callable whose value orjson cannot encode
    assert record(writer, 2, inputs=[[1.0]])  # flushed with it: written all the same
    assert writer.flush() == 1
    assert request_ids(tmp_path / "log") == ["req-2"]
    assert events.drops == [("predictions", "write_failed", 1)]
    assert writer.held == 0  # the room is free again: later records are not dropped for it
    assert record(writer, 1)
    assert writer.flush() == 1
    assert request_ids(tmp_path / "log") == ["req-2", "req-1"]
    writer.close()


class HangingStorage(Storage):
    """A store whose create never answers until ``release`` is set."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.release = threading.Event()
        self.entered = threading.Event()

    def create(self, rel: str, data: bytes) -> None:
        self.entered.set()
        self.release.wait()
        super().create(rel, data)


def test_close_gives_up_on_a_hanging_write_and_counts_what_it_loses(tmp_path: Path) -> None:
    events = Events()
    storage = HangingStorage(str(tmp_path / "log"))
    writer = PredictionLogWriter(
        str(tmp_path / "log"), MODEL, flush_rows=1, events=events, storage=storage
    )
    assert record(writer, 0)
    assert storage.entered.wait(30)  # the thread is stuck in the write
    lost: list[int] = []
    closing = threading.Thread(target=lambda: lost.append(writer.close(0.2)))
    closing.start()
    closing.join(30)
    try:
        assert not closing.is_alive()  # close returned although the write still hangs
        assert lost == [1]
        assert events.drops == [("predictions", "write_failed", 1)]
    finally:
        storage.release.set()


def test_with_payloads_a_flush_is_due_by_rows_before_the_buffer_fills(tmp_path: Path) -> None:
    """A 32-row record with payloads weighs 32 against the buffer: the flush is due by that
    weight too, or a buffer of 100 would fill after 3 records while waiting for 10."""
    events = Events()
    log = tmp_path / "log"
    writer = PredictionLogWriter(
        str(log), MODEL, flush_rows=64, flush_seconds=3600, max_buffered=100, events=events
    )
    for i in range(12):
        rows = [[float(i)]] * 32
        assert writer.prediction(
            request_id=f"req-{i}", time_ns=ns(WHEN), model_version="v1", revision=None,
            protocol="v1", status=200, latency_ms=1.0, rows=32, inputs=rows,
        )  # fmt: skip
        wait_until(lambda: writer.held < 64)  # the thread writes every second record
    writer.close()
    assert events.drops == []
    assert sorted(request_ids(log)) == sorted(f"req-{i}" for i in range(12))
