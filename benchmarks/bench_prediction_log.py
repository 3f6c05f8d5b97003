"""What the prediction log costs and how fast it answers, in one run: ``make bench-log``.

1. Cost. For the ONNX random forest (200 trees) and the logistic model that ``bench-serve``
   trains (its ``prepare``, V2 request format and wrk), two model servers run side by side,
   both pinned to CPU 0 with the same defaults, one logging every request
   (``--prediction-log-uri``) and one not (``--no-prediction-log``). wrk (CPU 1, 8
   connections) sends 1-row requests, 20,000 distinct ones in turn (the training rows, each
   value moved by ~2%: real inputs differ, and identical ones would compress to nothing), in
   interleaved rounds: "off" and "on" back to back, in turn off/on and on/off (both runs of a
   round see much the same machine). After each "on" run the bench waits until that server
   has written every record it holds, so none of its flushes lands in an "off" run; so that
   this wait is short the "on" server writes at least every 2 s
   (``--prediction-log-flush-seconds 2``, default 10): more and smaller files, which cost it
   more, not less. A round starts once other processes take under 15% of the CPU for a
   second (waiting at most 20 s, 30 s per model). Each server's CPU time per request (flushes
   included, its idle CPU over the wait taken out), the share of the CPU other processes took
   during each run, and the logging work itself measured in-process are reported too, with
   the median req/s on and off and the median of the rounds' on/off ratios (target >= 0.95).
   Then the "on" server is stopped (SIGTERM writes what is left) and its files must hold one
   record, with a distinct request id, per request its ``model_server_requests_total``
   counted (and none dropped).
2. Lookup. >= 10M records (7 days x 24 hours x 6 files x 10,000 records, the server's
   file layout, schema and Parquet encoding; UUIDv7 ids and 1% client ids) are written in a
   temporary folder, then one record is looked up with ``prediction_log.reader.find_prediction``:
   a server-made UUIDv7 id (its own hour; target < 2 s) and a client's own id in a 24-hour
   window, plus an id that is absent (24 h and 7 d: every file of the window read).
3. Size. Parquet bytes per record in files the real server wrote for distinct 1-row and
   32-row requests, with and without ``--prediction-log-payloads``: for each cell a server
   with the defaults, loaded for --size-duration, then stopped.

Only 127.0.0.1 is contacted; every run is bounded (--rounds x --duration); temporary files are
removed. Exits 1 (FAIL) when a target is missed or a record is missing.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_serve import (
    ROOT,
    free_port,
    pinned,
    prepare,
    process_tree,
    request_body,
    run_wrk,
    stop,
    wait_ready,
)
from prediction_log.ids import new_request_id, time_of
from prediction_log.schema import PREDICTIONS, TIME, partition
from prediction_log.writer import _parquet_bytes

MODELS = ("random-forest", "logistic")  # labels of bench_serve.MODELS
TARGET_RATIO = 0.95  # req/s with the log on / off, median of rounds, each model
TARGET_LOOKUP_SECONDS = 2.0  # a server-made UUIDv7 id among >= 10M records
CONNECTIONS = 8
FLUSH_SECONDS = 2.0  # the "on" server's --prediction-log-flush-seconds (default 10)
POLL_SECONDS = 0.5
IDLE_SECONDS = 6.0
QUIET_SHARE = 0.15  # a round starts once other processes take less of the CPU than this
QUIET_ROUND_SECONDS = 20.0  # longest wait for it before a round
QUIET_BUDGET_SECONDS = 30.0  # and in all, per model
POOL_BODIES = {1: 20_000, 32: 2_000}  # distinct requests per pool
HOURS = 7 * 24
FILES_PER_HOUR = 6
RECORDS_PER_FILE = 10_000  # the server's default --prediction-log-flush-rows
CLIENT_ID_SHARE = 0.01  # requests carrying their own x-request-id (UUIDv4 here)
LOG_MODEL = "bench-log"
ABSENT_ID = "5f0c6f2e-8d4b-4c1a-9e7d-3b2a1c0f9e8d"  # a client's UUIDv4 that no record has
HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


# -- pure helpers -------------------------------------------------------------------------


def uuid_texts(raw: np.ndarray[Any, np.dtype[np.uint8]]) -> pa.StringArray:
    """(n, 16) bytes -> n canonical UUID strings (36 characters, lower case), vectorised."""
    count = raw.shape[0]
    digits = np.empty((count, 32), np.uint8)
    digits[:, 0::2] = HEX[raw >> 4]
    digits[:, 1::2] = HEX[raw & 0x0F]
    text = np.full((count, 36), ord("-"), np.uint8)
    for start, end, offset in ((0, 8, 0), (9, 13, 8), (14, 18, 12), (19, 23, 16), (24, 36, 20)):
        text[:, start:end] = digits[:, offset : offset + end - start]
    return hex_strings(text)


def hex_strings(chars: np.ndarray[Any, np.dtype[np.uint8]]) -> pa.StringArray:
    """(n, width) ASCII bytes -> n strings of that width, without a Python loop."""
    count, width = chars.shape
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars).tobytes())
    )


def uuid_bytes(
    millis: np.ndarray[Any, np.dtype[np.int64]],
    client: np.ndarray[Any, np.dtype[np.bool_]],
    rng: np.random.Generator,
) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """UUIDv7 of ``millis`` (``prediction_log.ids.new_request_id``'s layout), and a random
    UUIDv4 where ``client`` (a client's own id)."""
    raw = rng.integers(0, 256, size=(len(millis), 16), dtype=np.uint8)
    stamp = millis.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 2:]
    server = ~client
    raw[server, :6] = stamp[server]
    raw[:, 6] = np.where(server, 0x70, 0x40) | (raw[:, 6] & 0x0F)
    raw[:, 8] = 0x80 | (raw[:, 8] & 0x3F)
    return raw


def median_ratio(on: list[float], off: list[float]) -> float:
    """The median of the rounds' on/off ratios (round i pairs on[i] with off[i])."""
    return statistics.median(a / b for a, b in zip(on, off, strict=True))


def metric_sums(text: str, model: str) -> dict[str, Any]:
    """From a /metrics page: requests answered (every code), prediction records written and
    dropped, and the engine, for ``model``."""
    found: dict[str, Any] = {"requests": 0.0, "written": 0.0, "dropped": 0.0, "engine": None}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model_name") != model:
                continue
            if sample.name == "model_server_requests_total":
                found["requests"] += sample.value
            elif sample.name == "model_server_prediction_log_records_total":
                found["written"] += sample.value if labels.get("kind") == "predictions" else 0
            elif sample.name == "model_server_prediction_log_dropped_total":
                found["dropped"] += sample.value if labels.get("kind") == "predictions" else 0
            elif sample.name == "model_server_model_info":
                found["engine"] = labels.get("engine")
    return found


# -- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    name: str
    log_uri: Path | None
    output: Path

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v2/models/{self.name}/infer"

    def metrics(self) -> dict[str, Any]:
        return metric_sums(httpx.get(f"{self.url}/metrics", timeout=10).text, self.name)

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.process.pid)


def launch(model: dict[str, Any], work: Path, tag: str, flags: list[str]) -> Server:
    """A model server on CPU 0 with its defaults and ``flags``; not waited for."""
    port = free_port()
    command = [
        sys.executable, "-m", "model_server", "--registry-uri", model["registry"],
        "--model-name", model["name"], "--host", "127.0.0.1", "--http-port", str(port), *flags,
    ]  # fmt: skip
    output = work / f"server-{tag}.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            pinned("0", command),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    log_uri = (
        Path(flags[flags.index("--prediction-log-uri") + 1])
        if "--prediction-log-uri" in (flags)
        else None
    )
    return Server(process, f"http://127.0.0.1:{port}", model["name"], log_uri, output)


def ready(server: Server, body: bytes) -> None:
    try:
        wait_ready(server.url, server.name, body, server.process)
    except RuntimeError:
        print(server.output.read_text()[-3000:], file=sys.stderr)
        raise


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants (live ones)."""
    ticks = 0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_written(server: Server, timeout: float) -> dict[str, Any]:
    """Until every request answered so far has its record written (or dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = server.metrics()
        if seen["written"] + seen["dropped"] >= seen["requests"] or time.monotonic() > deadline:
            return seen
        time.sleep(POLL_SECONDS)


def parquet_files(log_uri: Path, model: str) -> list[Path]:
    return sorted((log_uri / "predictions" / f"model={model}").rglob("*.parquet"))


@dataclass
class Written:
    files: int
    records: int
    bytes: int
    distinct_ids: int

    @property
    def bytes_per_record(self) -> float:
        return self.bytes / self.records if self.records else float("nan")


def written(log_uri: Path, model: str) -> Written:
    files = parquet_files(log_uri, model)
    ids = [pq.read_table(f, columns=["request_id"])["request_id"] for f in files]
    distinct = len(pc.unique(pa.chunked_array(ids, pa.string()))) if ids else 0
    return Written(
        files=len(files),
        records=sum(pq.read_metadata(f).num_rows for f in files),
        bytes=sum(f.stat().st_size for f in files),
        distinct_ids=distinct,
    )


# -- 1. the cost --------------------------------------------------------------------------


@dataclass
class Round:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: float
    cpu_us_per_request: float
    others: float
    """Share of the machine's CPU that other processes used during the wrk run."""


@dataclass
class Cost:
    model: str
    engine: str
    direct_us: float
    """CPU of the logging work itself per request, measured in-process (``direct_cost``)."""
    on: list[Round] = field(default_factory=list)
    off: list[Round] = field(default_factory=list)
    answered: float = 0.0
    dropped: float = 0.0
    files: Written | None = None

    @property
    def ratio(self) -> float:
        return median_ratio(
            [r.requests_per_second for r in self.on], [r.requests_per_second for r in self.off]
        )

    @property
    def cpu_ratio(self) -> float:
        return median_ratio(
            [r.cpu_us_per_request for r in self.on], [r.cpu_us_per_request for r in self.off]
        )

    @property
    def complete(self) -> bool:
        files = self.files
        return (
            files is not None
            and self.answered > 0
            and files.records == self.answered
            and files.distinct_ids == files.records
            and self.dropped == 0
        )


def idle_cpu_rates(servers: list[Server], seconds: float) -> list[float]:
    """CPU seconds per second of each idle server, polled as ``wait_written`` polls (its
    background threads and the /metrics scrapes): taken out of a round's settling time."""
    before = [server.cpu_seconds() for server in servers]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for server in servers:
            server.metrics()
        time.sleep(POLL_SECONDS)
    return [(server.cpu_seconds() - b) / seconds for server, b in zip(servers, before, strict=True)]


def one_round(server: Server, script: Path, duration: int, idle_rate: float) -> Round:
    """One wrk run. For the "on" server the round ends when every record it holds is written
    (its flush timer): the flushes are in its CPU time, none lands in the other server's
    round. The CPU of that settling wait, less what the server spends idle, counts."""
    before, cpu = server.metrics(), server.cpu_seconds()
    machine = Machine()
    rps, p50, p99, errors = run_wrk(server.endpoint, script, CONNECTIONS, duration)
    others = machine.others_share(server.cpu_seconds() - cpu)
    settle = time.monotonic()
    after = wait_written(server, FLUSH_SECONDS + 15) if server.log_uri else server.metrics()
    settled = time.monotonic() - settle if server.log_uri else 0.0
    requests = after["requests"] - before["requests"]
    spent = server.cpu_seconds() - cpu - idle_rate * settled
    return Round(rps, p50, p99, errors, requests, spent / max(requests, 1) * 1e6, others)


def quiet(servers: list[Server], limit: float) -> tuple[float, bool]:
    """Wait until other processes took less than QUIET_SHARE of the CPU over one second, at
    most ``limit`` seconds. Returns the seconds waited and whether the machine is still busy."""
    started = time.monotonic()
    while True:
        cpu = sum(server.cpu_seconds() for server in servers)
        machine = Machine()
        time.sleep(1.0)
        share = machine.others_share(sum(server.cpu_seconds() for server in servers) - cpu)
        waited = time.monotonic() - started
        if share < QUIET_SHARE or waited >= limit:
            return waited - 1.0, share >= QUIET_SHARE


class Machine:
    """How busy the machine was from now on, without this bench (server, wrk, itself)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy = self.busy_seconds()
        self.children = self.children_seconds()
        self.own = time.process_time()

    @staticmethod
    def busy_seconds() -> float:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def children_seconds() -> float:
        import resource

        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has exited
        return usage.ru_utime + usage.ru_stime

    def others_share(self, server_seconds: float) -> float:
        elapsed = time.monotonic() - self.started
        ours = (
            server_seconds
            + self.children_seconds()
            - self.children
            + time.process_time()
            - self.own
        )
        others = self.busy_seconds() - self.busy - ours
        return max(others, 0.0) / (elapsed * (os.cpu_count() or 1))


def cost(model: dict[str, Any], label: str, work: Path, args: argparse.Namespace) -> Cost:
    pool = body_pool(work, model, label, 1, POOL_BODIES[1])
    script = pool_script(pool)
    body = pool.read_bytes().split(b"\n", 1)[0]
    log_flags = ["--prediction-log-uri", str(work / f"log-{label}")]
    log_flags += ["--prediction-log-flush-seconds", str(FLUSH_SECONDS)]
    on = launch(model, work, f"{label}-on", log_flags)
    off = launch(model, work, f"{label}-off", ["--no-prediction-log"])
    try:
        for server in (on, off):
            ready(server, body)
        engines = {on.metrics()["engine"], off.metrics()["engine"]}
        result = Cost(
            label, "/".join(sorted(str(e) for e in engines)), direct_cost(work, model, label)
        )
        for server in (on, off):  # warm-up, and the "on" server's first file written
            run_wrk(server.endpoint, script, CONNECTIONS, 3)
        wait_written(on, FLUSH_SECONDS + 15)
        idle = dict(zip(("on", "off"), idle_cpu_rates([on, off], IDLE_SECONDS), strict=True))
        print(
            f"   idle CPU: on {idle['on'] * 1000:.1f} ms/s, off {idle['off'] * 1000:.1f} ms/s",
            flush=True,
        )
        budget = QUIET_BUDGET_SECONDS
        for index in range(args.rounds):
            # a quiet machine first (bounded); then off and on back to back, in turn on/off
            # and off/on (both runs of a round see much the same machine); the "on" server's
            # records are written before the next run
            waited, busy = quiet([on, off], min(budget, QUIET_ROUND_SECONDS))
            budget -= waited
            line = []
            pair = (("off", off), ("on", on))
            for side, server in pair if index % 2 == 0 else pair[::-1]:
                measured = one_round(server, script, args.duration, idle[side])
                getattr(result, side).append(measured)
                line.append(
                    f"{side} {measured.requests_per_second:6.0f} req/s "
                    f"{measured.cpu_us_per_request:4.0f} us CPU/req "
                    f"(others {measured.others:4.0%}, errors {measured.errors})"
                )
            ratio = result.on[-1].requests_per_second / result.off[-1].requests_per_second
            print(
                f"   round {index + 1:>2}: " + "  ".join(line) + f"  on/off {ratio:.3f} "
                f"(waited {waited:.0f} s{', still busy' if busy else ''})",
                flush=True,
            )
        seen = on.metrics()
        result.answered, result.dropped = seen["requests"], seen["dropped"]
    finally:
        stop(off.process)
        stop(on.process)  # SIGTERM: the writer writes what it still holds
    assert on.log_uri is not None
    result.files = written(on.log_uri, model["name"])
    return result


def direct_cost(work: Path, model: dict[str, Any], label: str, records: int = 50_000) -> float:
    """CPU microseconds per request of what logging adds to a request, in this process: the
    digest of the decoded row and the record handed to the writer (as ``ModelService._record``
    does), and the writer's Parquet encoding and writing (its thread, then ``close``). The
    request id is left out: the server makes one whether the log is on or off."""
    from model_server.schema import inputs_digest
    from prediction_log.writer import PredictionLogWriter

    frame = model["frame"][model["features"]].to_numpy(dtype=np.float64)
    rows = [frame[i % len(frame)][None, :] * (1 + i * 1e-9) for i in range(records)]
    ids = [new_request_id() for _ in range(records)]
    writer = PredictionLogWriter(str(work / f"direct-{label}"), model["name"])
    started = time.process_time()  # every thread of this process: the writer's too
    for request_id, row in zip(ids, rows, strict=True):
        writer.prediction(
            request_id=request_id,
            time_ns=time.time_ns() - 1_000_000,
            model_version="v1",
            revision=None,
            protocol="v2",
            status=200,
            latency_ms=1.0,
            rows=len(row),
            inputs_sha256=inputs_digest(row),
        )
    writer.close()
    return (time.process_time() - started) / records * 1e6


def body_pool(work: Path, model: dict[str, Any], label: str, rows: int, count: int) -> Path:
    """``count`` distinct V2 requests of ``rows`` rows, one per line: the model's rows drawn at
    random, each value moved by ~2% and rounded to 4 decimals (distinct inputs, as real
    traffic has: identical requests would make the digests and payloads compress to nothing).
    Built as ``bench_serve.request_body`` builds its request."""
    rng = np.random.default_rng(rows)
    frame = model["frame"]
    numeric = [name for name in model["features"] if name not in model["categorical"]]
    drawn = frame.iloc[rng.integers(0, len(frame), rows * count)].reset_index(drop=True)
    jitter = rng.normal(1.0, 0.02, size=(len(drawn), len(numeric)))
    drawn[numeric] = (drawn[numeric].to_numpy(dtype=float) * jitter).round(4)
    path = work / f"{label}-pool-{rows}.jsonl"
    with path.open("wb") as sink:
        for index in range(count):
            chunk = drawn.iloc[index * rows : (index + 1) * rows]
            sink.write(request_body({**model, "frame": chunk}, rows) + b"\n")
    return path


def pool_script(pool: Path) -> Path:
    """A wrk script sending the pool's requests in turn."""
    script = pool.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local bodies = {{}}\nfor line in io.lines("{pool}") do bodies[#bodies + 1] = line end\n'
        "local next_body = 0\n"
        "request = function()\n"
        "  next_body = next_body % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[next_body])\n"
        "end\n"
    )
    return script


# -- 3. bytes per record ------------------------------------------------------------------


@dataclass
class Size:
    model: str
    payloads: bool
    rows: int
    answered: float
    dropped: float
    files: Written


def sizes(model: dict[str, Any], label: str, work: Path, args: argparse.Namespace) -> list[Size]:
    """Bytes per record: for each cell a fresh server with the log's defaults, sent distinct
    requests by wrk for --size-duration, then stopped (SIGTERM writes the rest)."""
    found = []
    cells = [(False, 1), (True, 1), (False, 32), (True, 32)]
    servers = []
    for payloads, rows in cells:
        flags = ["--prediction-log-uri", str(work / f"size-{label}-{payloads}-{rows}")]
        flags += ["--prediction-log-payloads"] if payloads else []
        servers.append(launch(model, work, f"{label}-size-{payloads}-{rows}", flags))
    try:
        pools = {1: work / f"{label}-pool-1.jsonl"}  # the cost run's
        pools[32] = body_pool(work, model, label, 32, POOL_BODIES[32])
        for (payloads, rows), server in zip(cells, servers, strict=True):
            ready(server, pools[rows].read_bytes().split(b"\n", 1)[0])
            run_wrk(server.endpoint, pool_script(pools[rows]), CONNECTIONS, args.size_duration)
            seen = server.metrics()
            stop(server.process)
            assert server.log_uri is not None
            files = written(server.log_uri, model["name"])
            found.append(Size(label, payloads, rows, seen["requests"], seen["dropped"], files))
    finally:
        for server in servers:
            if server.process.poll() is None:
                stop(server.process)
    return found


# -- 2. lookups among >= 10M records ------------------------------------------------------


@dataclass(frozen=True)
class Plant:
    """A record whose id a lookup will ask for: (hour, file, row) and, for a client id, the id."""

    hour: int
    file: int
    row: int
    client_id: str | None = None


def write_hour(root: str, first_hour_us: int, hour: int, plants: list[Plant]) -> dict[str, Any]:
    """One hour of the log as one server would write it: FILES_PER_HOUR files of
    RECORDS_PER_FILE records, times in order, the writer's schema, encoding and file names.
    Returns the counts and the planted records' ids and times."""
    rng = np.random.default_rng(hour)
    start_us = first_hour_us + hour * 3_600_000_000
    hour_start = datetime.fromtimestamp(start_us / 1e6, tz=UTC)
    total = FILES_PER_HOUR * RECORDS_PER_FILE
    times = np.sort(rng.integers(0, 3_600_000_000, total, dtype=np.int64)) + start_us
    folder = Path(root) / partition("predictions", LOG_MODEL, hour_start)
    folder.mkdir(parents=True, exist_ok=True)
    size, planted = 0, []
    for index in range(FILES_PER_HOUR):
        count = RECORDS_PER_FILE
        when = times[index * count : (index + 1) * count]
        client = rng.random(count) < CLIENT_ID_SHARE
        raw = uuid_bytes(when // 1000, client, rng)
        ids = uuid_texts(raw)
        here = [plant for plant in plants if plant.file == index]
        if here:  # the planted ids: the server's own function makes the v7 ones
            texts = ids.to_pylist()
            for plant in here:
                made = int(when[plant.row]) * 1000
                texts[plant.row] = plant.client_id or new_request_id(now_ns=made)
                planted.append({"id": texts[plant.row], "time_us": made // 1000, **asdict(plant)})
            ids = pa.array(texts, pa.string())
        refused = rng.random(count) < 0.005  # 400s: undecodable, no rows or digest
        digests = rng.integers(0, 256, size=(count, 32), dtype=np.uint8)
        digits = np.empty((count, 64), np.uint8)
        digits[:, 0::2] = HEX[digests >> 4]
        digits[:, 1::2] = HEX[digests & 0x0F]
        null = pa.scalar(None, pa.string())
        table = pa.Table.from_arrays(
            [
                pa.array(np.ones(count, np.int16)),
                ids,
                pa.array(when, TIME),
                pa.array([LOG_MODEL] * count, pa.string()),
                pa.array(["v3"] * count, pa.string()),
                pa.array(["bench-log-predictor-00003"] * count, pa.string()),
                pa.array(np.where(rng.random(count) < 0.9, "v2", "v1").tolist(), pa.string()),
                pa.array(np.where(refused, 400, 200).astype(np.int16)),
                pa.array(rng.lognormal(np.log(1.5), 0.4, count)),
                pa.array(np.ones(count, np.int32), mask=refused),
                *(pa.nulls(count, pa.string()) for _ in range(3)),
                pc.if_else(pa.array(refused), null, hex_strings(digits)),
                *(pa.nulls(count, pa.string()) for _ in range(2)),
            ],
            schema=PREDICTIONS,
        )
        data = _parquet_bytes(table)
        stamp = hour_start + timedelta(minutes=(index + 1) * 60 // FILES_PER_HOUR)
        name = f"{stamp:%Y%m%dT%H%M%S%f}-{os.getpid()}-{hour * 10 + index:06d}-{rng.bytes(4).hex()}"
        (folder / f"{name}.parquet").write_bytes(data)
        size += len(data)
    return {"files": FILES_PER_HOUR, "records": total, "bytes": size, "planted": planted}


@dataclass
class Lookup:
    case: str
    window: str
    files_in_window: int
    seconds: list[float]
    found: bool

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def lookups(work: Path) -> tuple[dict[str, int], list[Lookup], str]:
    root = work / "big-log"
    now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = now_hour - timedelta(hours=HOURS - 1)
    now = now_hour + timedelta(hours=1)  # the end of the last hour written
    rng = np.random.default_rng(7)
    v7_hours = [10, 50, 90, 130, 160]
    client_hours = [HOURS - 20, HOURS - 12, HOURS - 3]  # within the last 24 hours
    plants: dict[int, list[Plant]] = {}
    for hour in v7_hours + client_hours:
        client = None if hour in v7_hours else f"order-{rng.integers(1 << 62):x}"
        plants.setdefault(hour, []).append(
            Plant(
                hour, int(rng.integers(FILES_PER_HOUR)), int(rng.integers(RECORDS_PER_FILE)), client
            )
        )
    print(f">> writing {HOURS * FILES_PER_HOUR * RECORDS_PER_FILE:,} records to {root}", flush=True)
    started = time.perf_counter()
    first_us = int(first.timestamp()) * 1_000_000
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        hours = list(
            pool.map(
                write_hour,
                [str(root)] * HOURS,
                [first_us] * HOURS,
                range(HOURS),
                [plants.get(h, []) for h in range(HOURS)],
            )
        )
    counts = {
        "files": sum(h["files"] for h in hours),
        "records": sum(h["records"] for h in hours),
        "bytes": sum(h["bytes"] for h in hours),
        "seconds": round(time.perf_counter() - started),
    }
    written_files = list(root.rglob("*.parquet"))
    if len(written_files) != counts["files"] or counts["records"] < 10_000_000:
        raise RuntimeError(f"the generated log is short: {counts}, {len(written_files)} files")
    sample = pq.read_table(written_files[0], columns=["request_id", "time"]).slice(0, 2000)
    for rid, when in zip(sample["request_id"].to_pylist(), sample["time"].to_pylist(), strict=True):
        made = time_of(rid)  # a server's id says its record's time, to the millisecond
        if made is not None and abs((made - when).total_seconds()) >= 0.001:
            raise RuntimeError(f"generated id {rid} does not match its time {when}")
    print(
        f"   {counts['records']:,} records, {counts['files']:,} files, "
        f"{counts['bytes'] / 2**20:,.0f} MiB in {counts['seconds']} s",
        flush=True,
    )
    planted = [p for h in hours for p in h["planted"]]
    server_ids = [p for p in planted if p["client_id"] is None]
    client_ids = [p for p in planted if p["client_id"] is not None]
    find, api = finder()
    results = []
    v7 = Lookup("server-made UUIDv7 id", "its time +-5 min", 0, [], True)
    for plant in server_ids:
        at = datetime.fromtimestamp(plant["time_us"] / 1e6, tz=UTC)
        span = {
            h.replace(minute=0, second=0, microsecond=0)
            for h in (at - timedelta(minutes=5), at + timedelta(minutes=5))
        }
        v7.files_in_window = max(v7.files_in_window, FILES_PER_HOUR * len(span))
        seconds, record = timed(functools.partial(find, plant["id"], root, now, timedelta(days=7)))
        v7.seconds.append(seconds)
        v7.found &= record is not None and record["request_id"] == plant["id"]
    results.append(v7)
    day = Lookup("client id (not v7)", "since 24h", 24 * FILES_PER_HOUR, [], True)
    for plant in client_ids:
        seconds, record = timed(
            functools.partial(find, plant["client_id"], root, now, timedelta(hours=24))
        )
        day.seconds.append(seconds)
        day.found &= record is not None and record["request_id"] == plant["client_id"]
    results.append(day)
    for window, since in (("since 24h", timedelta(hours=24)), ("since 7d", timedelta(days=7))):
        hours_in = min(HOURS, int(since.total_seconds() // 3600))
        absent = Lookup("absent id", window, hours_in * FILES_PER_HOUR, [], False)
        seconds, record = timed(functools.partial(find, ABSENT_ID, root, now, since))
        absent.seconds.append(seconds)
        absent.found = record is not None  # must stay False
        results.append(absent)
    return counts, results, api


Finder = Callable[[str, Path, datetime, timedelta], dict[str, Any] | None]


def finder() -> tuple[Finder, str]:
    """``prediction_log.reader.find_prediction``; a plain Arrow dataset lookup (the hour folders
    of the window, filtered by request_id) if the reader is not there."""
    try:
        from prediction_log.reader import find_prediction
    except ImportError:
        return _plain_lookup, "a plain pyarrow dataset lookup (prediction_log.reader absent)"

    def find(request_id: str, root: Path, now: datetime, since: timedelta) -> dict[str, Any] | None:
        return find_prediction(request_id, log_uri=str(root), model=LOG_MODEL, since=since, now=now)

    return find, "prediction_log.reader.find_prediction"


def _plain_lookup(
    request_id: str, root: Path, now: datetime, since: timedelta
) -> dict[str, Any] | None:
    import pyarrow.dataset as ds

    made = time_of(request_id)
    start, end = (
        (made - timedelta(minutes=5), made + timedelta(minutes=5)) if made else (now - since, now)
    )
    folders, hour = [], start.replace(minute=0, second=0, microsecond=0)
    while hour <= end:
        folder = root / partition("predictions", LOG_MODEL, hour)
        if folder.is_dir():
            folders.append(folder)
        hour += timedelta(hours=1)
    files = [str(f) for folder in folders for f in sorted(folder.glob("*.parquet"))]
    if not files:
        return None
    table = ds.dataset(files, schema=PREDICTIONS, format="parquet").to_table(
        filter=pc.field("request_id") == request_id
    )
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows[0] if rows else None


# -- the run ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_prediction_log",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=16, help="off/on rounds per model (16)")
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (3)")
    parser.add_argument(
        "--size-duration", type=int, default=4, help="seconds of load per size cell (4)"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--no-lookup", action="store_true", help="skip the 10M-record lookup")
    parser.add_argument("--output", type=Path, default=Path("bench-results/prediction-log.json"))
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: run `make bench-log`, which installs it", file=sys.stderr)
        return 2
    started = time.monotonic()
    costs: list[Cost] = []
    cells: list[Size] = []
    counts: dict[str, int] = {}
    found: list[Lookup] = []
    api = ""
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        work = Path(tmp)
        free = shutil.disk_usage(work).free
        if not args.no_lookup and free < 4 * 2**30:
            print(
                f"only {free / 2**30:.1f} GiB free under {work}: the lookup needs 4",
                file=sys.stderr,
            )
            return 2
        models = prepare(work, list(args.models))
        for label in args.models:
            print(
                f">> {label}: log on vs off, {args.rounds} interleaved rounds of {args.duration} s "
                f"(1 row, {CONNECTIONS} connections)",
                flush=True,
            )
            measured = cost(models[label], label, work, args)
            costs.append(measured)
            print(f">> {label}: bytes per record", flush=True)
            cells.extend(sizes(models[label], label, work, args))
        if not args.no_lookup:
            counts, found, api = lookups(work)
            shutil.rmtree(work / "big-log")
    failed = report(costs=costs, cells=cells, counts=counts, found=found, api=api, args=args)
    print(f"(whole run: {time.monotonic() - started:.0f} s)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "cost": [{**asdict(c), "ratio": c.ratio, "cpu_ratio": c.cpu_ratio} for c in costs],
                "sizes": [
                    {**asdict(s), "bytes_per_record": s.files.bytes_per_record} for s in cells
                ],
                "lookup": {"generated": counts, "api": api, "cases": [asdict(f) for f in found]},
                "failed": failed,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")
    if failed:
        print("FAIL: " + "; ".join(failed))
        return 1
    print("ok: every target met")
    return 0


def report(
    *,
    costs: list[Cost],
    cells: list[Size],
    counts: dict[str, int],
    found: list[Lookup],
    api: str,
    args: argparse.Namespace,
) -> list[str]:
    """Print the summary tables; return what failed."""
    failed = []
    print(
        f"\n== cost of logging every request: 1-row V2, {CONNECTIONS} connections, wrk on CPU 1, "
        f"servers on CPU 0; median of {args.rounds} interleaved rounds of {args.duration} s; "
        f"'on' writes at least every {FLUSH_SECONDS:g} s"
    )
    for c in costs:
        load = statistics.median(r.others for r in c.on + c.off)
        print(f"({c.model}: other processes took a median {load:.0%} of the machine's CPU)")
    print(
        f"{'model':<14} {'engine':<6} {'req/s on':>9} {'req/s off':>9} {'on/off':>7} "
        f"{'CPU us/req on':>13} {'off':>5} {'on/off':>7}  target"
    )
    for c in costs:
        ratio = c.ratio
        verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
        print(
            f"{c.model:<14} {c.engine:<6} "
            f"{statistics.median(r.requests_per_second for r in c.on):>9.0f} "
            f"{statistics.median(r.requests_per_second for r in c.off):>9.0f} {ratio:>7.3f} "
            f"{statistics.median(r.cpu_us_per_request for r in c.on):>13.0f} "
            f"{statistics.median(r.cpu_us_per_request for r in c.off):>5.0f} "
            f"{c.cpu_ratio:>7.3f}  >= {TARGET_RATIO} {verdict}"
        )
        if ratio < TARGET_RATIO:
            failed.append(f"{c.model}: req/s on/off {ratio:.3f} < {TARGET_RATIO}")
        if any(r.errors for r in c.on + c.off):
            failed.append(f"{c.model}: wrk saw errors")
    for c in costs:
        off_cpu = statistics.median(r.cpu_us_per_request for r in c.off)
        print(
            f"{c.model}: the logging work itself (row digest, record, Parquet encoding and "
            f"write; in-process, 50,000 records) is {c.direct_us:.1f} us CPU per request, "
            f"{c.direct_us / off_cpu:.1%} of the 'off' server's {off_cpu:.0f} us"
        )
    print("\nevery request recorded? (the 'on' server, after its graceful stop)")
    for c in costs:
        files = c.files
        assert files is not None
        print(
            f"  {c.model}: {c.answered:,.0f} requests answered (model_server_requests_total), "
            f"{files.records:,} records in {files.files} files, {files.distinct_ids:,} distinct "
            f"request ids, {c.dropped:,.0f} dropped -> {'ok' if c.complete else 'MISSING'}"
        )
        if not c.complete:
            failed.append(f"{c.model}: the log does not hold one record per request")
    report_sizes(cells)
    if found:
        failed += report_lookups(counts, found, api)
    return failed


def report_sizes(cells: list[Size]) -> None:
    print("\n== bytes per record (files the server wrote with its defaults; zstd Parquet)")
    print(
        f"{'model':<14} {'payloads':<8} {'rows/req':>8} {'records':>9} {'files':>5} "
        f"{'rec/file':>8} {'bytes/rec':>9} {'dropped':>8}"
    )
    for s in cells:
        print(
            f"{s.model:<14} {'on' if s.payloads else 'off':<8} {s.rows:>8} {s.files.records:>9,} "
            f"{s.files.files:>5} {s.files.records / max(s.files.files, 1):>8,.0f} "
            f"{s.files.bytes_per_record:>9,.1f} {s.dropped:>8,.0f}"
        )
    dropping = [s for s in cells if s.dropped]
    if dropping:
        print(
            "WARNING: records dropped (buffer_full) in "
            + ", ".join(
                f"{s.model} payloads {'on' if s.payloads else 'off'} x{s.rows}" for s in dropping
            )
            + ": with payloads a record weighs one per row against --prediction-log-max-buffered, "
            "but a flush is due only at --prediction-log-flush-rows records or after "
            "--prediction-log-flush-seconds"
        )


def report_lookups(counts: dict[str, int], found: list[Lookup], api: str) -> list[str]:
    failed = []
    print(
        f"\n== lookup of one request id: {counts['records']:,} records in {counts['files']:,} "
        f"files ({counts['bytes'] / 2**20:,.0f} MiB, {HOURS // 24} days x 24 hours x "
        f"{FILES_PER_HOUR} files x {RECORDS_PER_FILE:,} records, {CLIENT_ID_SHARE:.0%} client "
        f"ids; files in the page cache); {api}"
    )
    print(
        f"{'case':<22} {'window':<17} {'files':>5} {'tries':>5} {'median s':>8} "
        f"{'max s':>6} {'found':>5}  target"
    )
    for f in found:
        expected = f.case != "absent id"
        target = ""
        if f.case.startswith("server-made"):
            met = max(f.seconds) < TARGET_LOOKUP_SECONDS
            target = f"< {TARGET_LOOKUP_SECONDS:g} s {'met' if met else 'MISSED'}"
            if not met:
                failed.append(f"v7 lookup took {max(f.seconds):.2f} s")
        print(
            f"{f.case:<22} {f.window:<17} {f.files_in_window:>5} {len(f.seconds):>5} "
            f"{f.median:>8.3f} {max(f.seconds):>6.3f} {'yes' if f.found else 'no':>5}  {target}"
        )
        if f.found != expected:
            failed.append(f"{f.case} ({f.window}): found {f.found}, expected {expected}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
