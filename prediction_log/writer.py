"""The writer: records buffered in memory, written in the background as Parquet files.

A request hands its record to ``PredictionLogWriter.prediction`` (an append under a lock: no
I/O, no encoding) and goes on. A background thread writes what is buffered when
``flush_rows`` records (with payloads, rows) are waiting or ``flush_seconds`` have passed,
whichever comes first: one Parquet file per kind and hour, created whole
(``model_registry.storage.Storage.create``: a reader never sees half a file, and no file is
overwritten).

Memory is bounded by ``max_buffered``: records waiting plus records whose write failed and
waits for a retry (with payloads a record weighs one per row it carries). Past the bound a new
record is dropped and counted (``LogEvents.dropped``), never waited for: a slow or dead sink
never blocks or fails a request. A failed write is retried at each flush, oldest first, so
when the sink comes back what was held is written, in order.

``close`` (a graceful stop) writes everything still held, retrying a failing sink until its
deadline; what it still cannot write is counted and logged as lost. A hard kill (SIGKILL, the
node gone) loses what was held: at most ``flush_seconds`` of records (or ``flush_rows``), plus
any held for a sink that was failing.

The writer knows nothing of the server or of Prometheus: it reports through ``LogEvents``.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from model_registry.storage import Storage
from prediction_log.schema import (
    OUTCOMES,
    PREDICTIONS,
    SCHEMA_VERSION,
    SCHEMAS,
    TIME,
    Kind,
    partition,
)

log = logging.getLogger("prediction_log")

_PREDICTION_FIELDS = PREDICTIONS.names
_OUTCOME_FIELDS = OUTCOMES.names
_ORJSON = orjson.OPT_SERIALIZE_NUMPY
_CLOSE_RETRY_SECONDS = 0.5


class LogEvents(Protocol):
    """What the writer reports (the server counts them in Prometheus)."""

    def started(self) -> None:
        """The first record of this process arrived (its counters may start at 0 now)."""

    def written(self, kind: Kind, records: int) -> None: ...

    def dropped(self, kind: Kind, reason: str, records: int) -> None: ...

    def write_failed(self, kind: Kind) -> None: ...


class _NoEvents:
    def started(self) -> None:
        pass

    def written(self, kind: Kind, records: int) -> None:
        pass

    def dropped(self, kind: Kind, reason: str, records: int) -> None:
        pass

    def write_failed(self, kind: Kind) -> None:
        pass


Payload = Any
"""Inputs or outputs as the request had them (encoded to JSON text off the request path), or
a zero-argument callable that returns them."""


@dataclass
class _Batch:
    """A Parquet file encoded and waiting to be written."""

    kind: Kind
    rel: str
    data: bytes
    records: int
    weight: int


class PredictionLogWriter:
    """Buffers one process's records for one model and writes them in the background."""

    def __init__(
        self,
        uri: str,
        model_name: str,
        *,
        flush_rows: int = 10_000,
        flush_seconds: float = 10.0,
        max_buffered: int = 50_000,
        events: LogEvents | None = None,
        storage: Storage | None = None,
    ) -> None:
        if flush_rows < 1 or flush_seconds <= 0 or max_buffered < flush_rows:
            raise ValueError(
                "flush_rows must be at least 1, flush_seconds above 0, and max_buffered at "
                "least flush_rows"
            )
        self.uri = uri
        self.model_name = model_name
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.events: LogEvents = events or _NoEvents()
        self._storage = storage
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        """One flush at a time: the thread's, or ``flush``/``close`` in a caller's thread."""
        self._buffers: dict[Kind, list[tuple[Any, ...]]] = {"predictions": [], "outcomes": []}
        self._held = 0
        """Weight of records buffered or pending (the memory bound)."""
        self._waiting = 0
        """Weight of records buffered and not yet taken by a flush (a flush is due at
        ``flush_rows``: with payloads, rows)."""
        self._pending: collections.deque[_Batch] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._sequence = 0
        self._closed = False

    # -- the request path ------------------------------------------------------------------

    def prediction(
        self,
        *,
        request_id: str,
        time_ns: int,
        model_version: str,
        revision: str | None,
        protocol: str,
        status: int,
        latency_ms: float,
        rows: int | None,
        experiment: str | None = None,
        variant: str | None = None,
        user_hash: str | None = None,
        inputs_sha256: str | None = None,
        inputs: Payload = None,
        outputs: Payload = None,
    ) -> bool:
        """Buffer one request's record; False when it was dropped (the buffer is full).
        With payloads (``inputs`` or ``outputs`` given) it weighs one per row."""
        record = (
            request_id,
            time_ns,
            model_version,
            revision,
            protocol,
            status,
            latency_ms,
            rows,
            experiment,
            variant,
            user_hash,
            inputs_sha256,
            inputs,
            outputs,
            max(rows or 1, 1) if inputs is not None or outputs is not None else 1,
        )
        return self._append("predictions", record, record[-1])

    def outcomes(self, records: Sequence[dict[str, Any]], *, time_ns: int) -> bool:
        """Buffer the outcome records of one feedback report (dicts keyed by ``OUTCOMES``'s
        field names; ``schema_version``, ``time`` and ``model_name`` are filled in). All or
        none: False when they were dropped."""
        if not records:
            return True
        rows = [(time_ns, record, 1) for record in records]
        with self._lock:
            if self._held + len(rows) > self.max_buffered or self._closed:
                full = True
            else:
                full = False
                self._buffers["outcomes"].extend(rows)
                self._held += len(rows)
                self._waiting += len(rows)
                due = self._waiting >= self.flush_rows
        if full:
            reason = "write_failed" if self._closed else "buffer_full"
            self.events.dropped("outcomes", reason, len(rows))
            return False
        self._ensure_thread()
        if due:
            self._wake.set()
        return True

    def _append(self, kind: Kind, record: tuple[Any, ...], weight: int) -> bool:
        with self._lock:
            if self._held + weight > self.max_buffered or self._closed:
                full = True
            else:
                full = False
                self._buffers[kind].append(record)
                self._held += weight
                self._waiting += weight
                due = self._waiting >= self.flush_rows
        if full:
            self.events.dropped(kind, "write_failed" if self._closed else "buffer_full", 1)
            return False
        if self._thread is None or self._pid != os.getpid():
            self._ensure_thread()
        if due:
            self._wake.set()
        return True

    # -- the background thread -------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._pid = os.getpid()
                self._thread = None
            if self._thread is not None or self._closed:
                return
            self.events.started()
            self._thread = threading.Thread(
                target=self._run, name="prediction-log-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._flush_once()
            except Exception:  # never let the writer die: it would silently stop the log
                log.exception("prediction log: a flush failed; its records are kept for a retry")

    def _take(self) -> dict[Kind, list[tuple[Any, ...]]]:
        with self._lock:
            taken = {kind: self._buffers[kind] for kind in SCHEMAS if self._buffers[kind]}
            self._waiting = 0
            for kind in taken:
                self._buffers[kind] = []
        return taken

    def _flush_once(self) -> int:
        """Encode what is buffered and write everything pending, oldest first, until a write
        fails. Returns the records written."""
        with self._flushing:
            return self._write_pending()

    def _write_pending(self) -> int:
        for kind, records in self._take().items():
            try:
                self._pending.extend(self._encode(kind, records))
            except Exception:  # a record that cannot be encoded: lose these, loudly, not all
                log.exception(
                    "prediction log: %d %s record(s) could not be encoded", len(records), kind
                )
                with self._lock:
                    self._held -= sum(record[-1] for record in records)
                self.events.dropped(kind, "write_failed", len(records))
        written = 0
        while self._pending:
            batch = self._pending[0]
            try:
                self._sink().create(batch.rel, batch.data)
            except FileExistsError:  # written before, its answer lost: do not write it twice
                pass
            except Exception as error:
                self.events.write_failed(batch.kind)
                log.warning(
                    "prediction log: cannot write %s (%s); %d record(s) held for a retry",
                    batch.rel,
                    error,
                    sum(b.records for b in self._pending),
                )
                break
            self._pending.popleft()
            with self._lock:
                self._held -= batch.weight
            self.events.written(batch.kind, batch.records)
            written += batch.records
        return written

    def _sink(self) -> Storage:
        if self._storage is None:
            self._storage = Storage(self.uri)
        return self._storage

    # -- encoding (off the request path) ----------------------------------------------------

    def _encode(self, kind: Kind, records: list[tuple[Any, ...]]) -> list[_Batch]:
        """One file per hour the records fall in (a flush can straddle an hour)."""
        if kind == "predictions":
            records = self._with_payloads_encoded(records)
        when = 1 if kind == "predictions" else 0
        by_hour: dict[int, list[tuple[Any, ...]]] = {}
        for record in records:
            by_hour.setdefault(record[when] // 3_600_000_000_000, []).append(record)
        batches = []
        for hour, group in sorted(by_hour.items()):
            table = (
                self._predictions_table(group)
                if kind == "predictions"
                else self._outcomes_table(group)
            )
            data = _parquet_bytes(table)
            weight = sum(record[-1] for record in group)
            batches.append(_Batch(kind, self._file_name(kind, hour), data, len(group), weight))
        return batches

    def _file_name(self, kind: Kind, hour: int) -> str:
        when = datetime.fromtimestamp(hour * 3600, tz=UTC)
        self._sequence += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        unique = os.urandom(4).hex()
        name = f"{stamp}-{os.getpid()}-{self._sequence:06d}-{unique}.parquet"
        return f"{partition(kind, self.model_name, when)}/{name}"

    def _with_payloads_encoded(self, records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The records with their inputs and outputs as JSON text; one that cannot be encoded
        is dropped and counted alone (the rest of its flush is written)."""
        encoded = []
        for record in records:
            if record[12] is None and record[13] is None:
                encoded.append(record)
                continue
            try:
                payloads = (_json(record[12]), _json(record[13]))
            except Exception:
                log.exception("prediction log: request %s's payload cannot be encoded", record[0])
                with self._lock:
                    self._held -= record[-1]
                self.events.dropped("predictions", "write_failed", 1)
                continue
            encoded.append((*record[:12], *payloads, record[-1]))
        return encoded

    def _predictions_table(self, records: list[tuple[Any, ...]]) -> pa.Table:
        """Records whose payloads are already JSON text (``_with_payloads_encoded``)."""
        columns = list(zip(*records, strict=True))
        count = len(records)
        inputs, outputs = columns[12], columns[13]
        arrays = [
            pa.array([SCHEMA_VERSION] * count, pa.int16()),
            pa.array(columns[0], pa.string()),
            pa.array([t // 1000 for t in columns[1]], TIME),
            pa.array([self.model_name] * count, pa.string()),
            *(
                pa.array(columns[i], PREDICTIONS.field(name).type)
                for i, name in enumerate(_PREDICTION_FIELDS[4:14], start=2)
            ),
            pa.array(inputs, pa.string()),
            pa.array(outputs, pa.string()),
        ]
        return pa.Table.from_arrays(arrays, schema=PREDICTIONS)

    def _outcomes_table(self, records: list[tuple[Any, ...]]) -> pa.Table:
        count = len(records)
        times = pa.array([t // 1000 for t, _, _ in records], TIME)
        arrays: list[pa.Array] = []
        for name in _OUTCOME_FIELDS:
            if name == "schema_version":
                arrays.append(pa.array([SCHEMA_VERSION] * count, pa.int16()))
            elif name == "time":
                arrays.append(times)
            elif name == "model_name":
                arrays.append(pa.array([self.model_name] * count, pa.string()))
            else:
                kind = OUTCOMES.field(name).type
                arrays.append(pa.array([r.get(name) for _, r, _ in records], kind))
        return pa.Table.from_arrays(arrays, schema=OUTCOMES)

    # -- flushing and stopping ---------------------------------------------------------------

    @property
    def held(self) -> int:
        """Records (by weight) buffered or waiting for a retry."""
        return self._held

    def flush(self) -> int:
        """Write everything buffered now, in the caller's thread (tests, notebooks). Returns
        the records written; what a failing sink refused stays held."""
        return self._flush_once()

    def close(self, deadline_seconds: float = 10.0) -> int:
        """A graceful stop: stop the thread (waiting up to ``deadline_seconds`` for a write in
        progress), then write everything held, retrying a failing sink for up to
        ``deadline_seconds`` more: at most twice ``deadline_seconds`` in all, even when a write
        hangs. Returns the records lost (0 when everything was written); they are counted as
        dropped (``write_failed``) and logged."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(deadline_seconds)
        deadline = time.monotonic() + deadline_seconds
        while True:
            # A write still hanging in the thread holds the flush: wait for it only so long.
            if not self._flushing.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                break
            try:
                self._write_pending()
            except Exception:
                log.exception("prediction log: the last flush failed")
            finally:
                self._flushing.release()
            if not self._pending or time.monotonic() >= deadline:
                break
            time.sleep(_CLOSE_RETRY_SECONDS)
        # A write still hanging in the thread owns _pending: read it, change it only when ours.
        owned = self._flushing.acquire(timeout=0)
        lost: dict[Kind, int] = collections.Counter()
        for batch in list(self._pending):
            lost[batch.kind] += batch.records
        for kind, records in self._buffers.items():
            lost[kind] += len(records)
        for kind, count in lost.items():
            if count:
                self.events.dropped(kind, "write_failed", count)
                log.error(
                    "prediction log: %d %s record(s) could not be written to %s before the "
                    "stop and are lost",
                    count,
                    kind,
                    self.uri,
                )
        if owned:
            self._pending.clear()
            self._flushing.release()
        return sum(lost.values())


def _json(value: Payload) -> str | None:
    if value is None:
        return None
    if callable(value):
        value = value()
    return orjson.dumps(value, option=_ORJSON).decode()


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=128 * 1024)
    return sink.getvalue()
