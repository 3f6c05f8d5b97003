"""The prediction log on real processes: ``model-server`` writing Parquet to a local path and to
the GCS and S3 emulators, read back with Arrow datasets as any reader would (Hive partitions).

Every request answered is recorded exactly once, with two workers and in experiment mode; a
SIGTERM in the middle of a load writes everything held; a dead sink costs records (counted)
but never a request, and what was held is written once the sink comes back; outcomes join
their predictions by request id and user hash, and ``model-trace`` finds a request, its
outcomes and the live accuracy of each version from them; payloads are recorded only when
opted in.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow.dataset as ds
import pytest

from model_registry import Registry
from model_registry.storage import Storage
from model_server.schema import inputs_digest
from prediction_log.ids import new_request_id, time_of
from prediction_log.schema import PARTITIONING, Kind, default_log_uri
from serving_common.experiment import assign, hashed_user
from serving_common.net import free_port
from tests.integration.conftest import BUCKET, S3_ENV, start, stop
from tests.integration.server_harness import ServerProcess, metric_samples
from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration

MODEL = "breast-cancer"
EXPERIMENT = "checkout"
REVISION = "breast-cancer-predictor-00007"
FAST = ["--prediction-log-flush-seconds", "0.5", "--no-drift"]
"""A record waits at most half a second in memory; no drift work competes for the CPU."""


# -- the registry, requests and the log as a reader sees it --------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two versions of the classifier (an experiment's control and treatment) and a
    regressor."""
    uri = str(tmp_path_factory.mktemp("prediction-log") / "registry")
    run(TrainerSettings(sample=MODEL, registry_uri=uri, promote=True))
    run(TrainerSettings(sample=MODEL, registry_uri=uri, param={"C": "0.5"}, force=True))
    run(TrainerSettings(sample="diabetes", registry_uri=uri, promote=True))
    return uri


def server_args(registry: str, *extra: str, model: str = MODEL) -> list[str]:
    return ["--registry-uri", registry, "--model-name", model, "--model-version", "v1", *extra]


def experiment_args(registry: str, *extra: str) -> list[str]:
    return server_args(
        registry, "--experiment", EXPERIMENT, "--experiment-treatment", "v2", *FAST, *extra
    )


def wait_ready(server: ServerProcess, timeout: float = 90.0) -> None:
    """Ready means every worker has loaded the model (the worker roster)."""
    deadline = time.monotonic() + timeout
    while server.client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, f"never ready:\n{server.log()[-3000:]}"
        time.sleep(0.1)


def rows_of(server: ServerProcess, model: str, count: int, seed: int) -> list[list[float]]:
    """``count`` rows inside the training ranges the model's metadata gives."""
    features = server.client.get(f"/v2/models/{model}").json()["parameters"]["features"]
    rng = np.random.default_rng(seed)
    return [
        [round(float(rng.uniform(f["min"], f["max"])), 6) for f in features] for _ in range(count)
    ]


@dataclass(frozen=True)
class Request:
    """One inference request to send, and what its record must say that the response does
    not: the protocol, the user key sent, the rows and their digest (when answered)."""

    path: str
    body: bytes
    protocol: str
    rows: list[list[float]] | None = None
    user: str | None = None
    request_id: str | None = None
    """The client's own x-request-id (None: the server makes one)."""

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.user is not None:
            headers["x-user-id"] = self.user
        if self.request_id is not None:
            headers["x-request-id"] = self.request_id
        return headers

    @property
    def digest(self) -> str | None:
        return inputs_digest(np.array(self.rows, dtype=np.float64)) if self.rows else None


def v1(model: str, rows: list[list[float]], **kwargs: Any) -> Request:
    body = orjson.dumps({"instances": rows})
    return Request(f"/v1/models/{model}:predict", body, "v1", rows, **kwargs)


def v2(model: str, rows: list[list[float]], version: str | None = None, **kwargs: Any) -> Request:
    tensor = {
        "name": "input-0",
        "shape": [len(rows), len(rows[0])],
        "datatype": "FP64",
        "data": [v for row in rows for v in row],
    }
    path = (
        f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
    )
    return Request(path, orjson.dumps({"inputs": [tensor]}), "v2", rows, **kwargs)


@dataclass(frozen=True)
class Sent:
    """A request and the response it got (times from the client's clock, as Unix seconds)."""

    request: Request
    status: int
    headers: httpx.Headers
    body: bytes
    started: float
    finished: float

    @property
    def request_id(self) -> str:
        return self.headers["x-request-id"]

    def json(self) -> Any:
        return orjson.loads(self.body)


def send(client: httpx.Client, request: Request) -> Sent:
    started = time.time()
    response = client.post(request.path, content=request.body, headers=request.headers())
    return Sent(
        request,
        response.status_code,
        response.headers,
        response.content,
        started,
        time.time(),
    )


def read_log(
    uri: str, kind: Kind, options: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every record of ``kind`` under the log URI (with its partition keys ``model``, ``date``
    and ``hour``), and the files they came from."""
    storage = Storage(uri, options)
    root = storage.path(kind)
    if not storage.fs.exists(root):
        return [], []
    dataset = ds.dataset(
        root,
        filesystem=storage.fs,
        format="parquet",
        partitioning=ds.partitioning(PARTITIONING, flavor="hive"),
    )
    return dataset.to_table().to_pylist(), list(dataset.files)


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = 30.0, pause: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(pause)


def wait_for_records(
    uri: str,
    kind: Kind,
    count: int,
    options: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """The log's ``kind`` records once there are at least ``count`` of them."""
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        found[:] = read_log(uri, kind, options)[0]
        return len(found) >= count

    wait_for(f"{count} {kind} records in {uri}", enough, timeout)
    return found


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``, from /metrics."""
    samples = metric_samples(server.client.get("/metrics").text, name)
    return sum(
        value
        for key, value in samples.items()
        if all(dict(key).get(k) == v for k, v in labels.items())
    )


RECORDS = "model_server_prediction_log_records_total"
DROPPED = "model_server_prediction_log_dropped_total"
WRITE_ERRORS = "model_server_prediction_log_write_errors_total"


def once_each(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Records by request id, after checking that no id is there twice."""
    counts = Counter(r["request_id"] for r in records)
    assert [i for i, n in counts.items() if n > 1] == [], "request ids recorded twice"
    return {r["request_id"]: r for r in records}


def check_prediction(record: dict[str, Any], sent: Sent, revision: str | None) -> None:
    """A prediction record says what the request and its response said."""
    request, headers = sent.request, sent.headers
    variant = headers.get("x-experiment-variant")
    answered = sent.status == 200
    expected = {
        "schema_version": 1,
        "model_name": MODEL,
        "model": MODEL,
        "model_version": headers["x-model-version"],
        "revision": revision,
        "protocol": request.protocol,
        "status": sent.status,
        "rows": len(request.rows) if answered and request.rows else None,
        "experiment": EXPERIMENT if variant is not None else None,
        "variant": variant,
        # Hashed when the user key assigned the request (not when the path named a version).
        "user_hash": hashed_user(request.user, EXPERIMENT)
        if request.user is not None and variant is not None and "/versions/" not in request.path
        else None,
        "inputs_sha256": request.digest if answered else None,
        "inputs": None,
        "outputs": None,
    }
    assert {k: record[k] for k in expected} == expected, sent.request_id
    when = record["time"].timestamp()
    assert sent.started - 0.05 <= when <= sent.finished + 0.05, sent.request_id
    assert 0 < record["latency_ms"] <= (sent.finished - sent.started) * 1000 + 50
    # Filed under the UTC date and hour of its time.
    assert (record["date"], record["hour"]) == (
        record["time"].strftime("%Y-%m-%d"),
        record["time"].hour,
    )
    made = time_of(sent.request_id)
    if request.request_id is None:  # the server's id: a UUIDv7 of when the request came
        assert uuid.UUID(sent.request_id).version == 7
        assert made is not None
        assert abs(made.timestamp() - when) < 1.0
    else:
        assert sent.request_id == request.request_id


# -- 1. every request exactly once: two workers, an experiment, three stores ----------------


@pytest.fixture(params=["local", "gs", "s3"])
def log_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh log URI: a local folder, or a folder on the GCS or S3 emulator's bucket."""
    if request.param == "local":
        return str(tmp_path / "prediction-log")
    request.getfixturevalue("gcs_endpoint" if request.param == "gs" else "s3_endpoint")
    return f"{request.param}://{BUCKET}/prediction-log-{uuid.uuid4().hex[:10]}"


def experiment_mix(rows: list[list[float]]) -> list[Request]:
    """Requests of every kind an experiment's log must tell apart: assigned users on V1 and V2
    (both variants), no user key (the control, unassigned), a client's own request id, a
    batch, versions named in the path, and refusals before and after the assignment."""
    requests = []
    for i in range(24):
        user = f"user-{i}"
        requests.append(v1(MODEL, [rows[i]], user=user))
        requests.append(v2(MODEL, [rows[i + 1]], user=user))
    requests += [v1(MODEL, [rows[30 + i]]) for i in range(6)]  # no user key
    requests += [
        v1(MODEL, [rows[40]], user="user-1", request_id="client-trace-0001"),
        v2(MODEL, [rows[41]], request_id="client-trace-0002"),
        v1(MODEL, rows[42:45], user="user-2"),  # a batch of three
        v2(MODEL, [rows[45]], version="v2", user="user-3"),  # the path names the version
        v2(MODEL, [rows[46]], version="v1"),
    ]
    bad = [
        # Refused after the assignment (recorded with the variant, and the user's hash) ...
        Request(f"/v1/models/{MODEL}:predict", b'{"instances": [[1.0, 2.0]]}', "v1", user="u-9"),
        Request(f"/v2/models/{MODEL}/infer", b'{"inputs": []}', "v2", user="user-4"),
        Request(f"/v1/models/{MODEL}:predict", b"[]", "v1", request_id="client-trace-0003"),
        # ... and before it (no variant): malformed JSON, a version not served.
        Request(f"/v1/models/{MODEL}:predict", b"{nope", "v1", user="user-5"),
        Request(f"/v2/models/{MODEL}/versions/v9/infer", b'{"inputs": []}', "v2"),
    ]
    return requests + bad


def test_every_request_is_recorded_once_with_two_workers_in_an_experiment(
    registry: str, log_uri: str, tmp_path: Path
) -> None:
    args = experiment_args(registry, "--workers", "2", "--prediction-log-uri", log_uri)
    env = {"K_REVISION": REVISION}
    server = ServerProcess(args, tmp_path, env=env, start_timeout=120).start()
    try:
        wait_ready(server)
        requests = experiment_mix(rows_of(server, MODEL, 50, seed=1))
        # A fresh connection per request, from four threads: both workers answer.
        fresh = httpx.Client(
            base_url=server.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        )
        with fresh, ThreadPoolExecutor(4) as pool:
            sent = list(pool.map(lambda r: send(fresh, r), requests))
        statuses = Counter(s.status for s in sent)
        assert statuses == {200: len(requests) - 5, 400: 4, 404: 1}, statuses
        assert {s.json()["model_version"] for s in sent if s.status == 200} == {"v1", "v2"}
        refused = [s.headers.get("x-experiment-variant") for s in sent if s.status != 200]
        assert sum(variant is None for variant in refused) == 2, refused

        # Written in the background while the server runs (flush every 0.5 s).
        records = wait_for_records(log_uri, "predictions", len(sent))
        by_id = once_each(records)
        assert set(by_id) == {s.request_id for s in sent}
        for each in sent:
            check_prediction(by_id[each.request_id], each, REVISION)
        _, files = read_log(log_uri, "predictions")
        writers = {Path(f).name.split("-")[1] for f in files}  # {stamp}-{pid}-{seq}-{rand}
        assert len(writers) == 2, f"both workers should have written: {files}"
        for kind in ("predictions", "outcomes"):  # across both workers' metric files
            assert metric(server, DROPPED, kind=kind) == 0
            assert metric(server, WRITE_ERRORS, kind=kind) == 0
        wait_for(
            "the records counted",
            lambda: metric(server, RECORDS, model_name=MODEL, kind="predictions") == len(sent),
        )
    finally:
        code = server.stop()
    assert code == 0, server.log()[-3000:]
    # The graceful stop wrote nothing twice.
    assert len(once_each(read_log(log_uri, "predictions")[0])) == len(sent)


# -- 2. SIGTERM in the middle of a load -----------------------------------------------------


@dataclass
class Load:
    """Client threads sending requests (each with its own request id) until told to stop."""

    url: str
    rows: list[list[float]]
    attempted: set[str] = field(default_factory=set)
    answered: dict[str, int] = field(default_factory=dict)
    late: int = 0
    """Requests answered after the SIGTERM (in flight when it came)."""
    terminated: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, thread: int) -> None:
        client = httpx.Client(
            base_url=self.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
        )
        with client:
            for i in range(1_000_000):
                if self.stop.is_set():
                    return
                request = v1(MODEL, [self.rows[i % len(self.rows)]], user=f"user-{i % 50}")
                request_id = f"load-{thread}-{i}"
                with self.lock:
                    self.attempted.add(request_id)
                try:
                    response = client.post(
                        request.path,
                        content=request.body,
                        headers={**request.headers(), "x-request-id": request_id},
                    )
                except httpx.TransportError:  # stopping: no more connections
                    time.sleep(0.01)
                    continue
                done = time.monotonic()
                with self.lock:
                    self.answered[request_id] = response.status_code
                    self.late += self.terminated is not None and done > self.terminated


@pytest.mark.parametrize(
    "workers",
    ["1", "2"],
)
def test_sigterm_in_the_middle_of_a_load_writes_every_answered_request(
    registry: str, workers: str, tmp_path: Path
) -> None:
    log_uri = str(tmp_path / "prediction-log")
    # Nothing is written before the stop: no flush is due (rows or seconds) during the load.
    args = experiment_args(
        registry,
        "--workers", workers, "--prediction-log-uri", log_uri,
        "--prediction-log-flush-seconds", "300", "--prediction-log-flush-rows", "20000",
        "--fault-latency-ms", "20",  # every request spends a while in flight
    )  # fmt: skip
    server = ServerProcess(args, tmp_path, start_timeout=120).start()
    assert server.process is not None
    load = Load(server.url, [])
    threads: list[threading.Thread] = []
    try:
        wait_ready(server)
        load.rows = rows_of(server, MODEL, 20, seed=2)
        threads = [threading.Thread(target=load.run, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        wait_for("200 answers", lambda: len(load.answered) >= 200, timeout=60, pause=0.05)
        assert read_log(log_uri, "predictions") == ([], []), "written before the stop"
        with load.lock:
            load.terminated = time.monotonic()
            server.terminate()  # the clients keep sending
        code = server.process.wait(timeout=60)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.stop()
    assert code == 0, server.log()[-3000:]
    assert set(load.answered.values()) == {200}
    assert load.late > 0, "no request was in flight when SIGTERM came"
    records = read_log(log_uri, "predictions")[0]
    by_id = once_each(records)
    missing = set(load.answered) - set(by_id)
    assert not missing, f"{len(missing)} answered requests not in the log: {sorted(missing)[:5]}"
    assert set(by_id) <= load.attempted
    assert {by_id[i]["status"] for i in load.answered} == {200}
    assert "could not be written" not in server.log()


# -- 3. a dead sink: requests go on, drops are counted, the log recovers --------------------


class Moto:
    """moto's S3 server on one port, stopped and started again on the same port."""

    bucket = "prediction-log-it"

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.process = start(
            [sys.executable, "-m", "tests.integration.serial_moto", str(self.port)],
            f"{self.endpoint}/moto-api/",
            self.log_dir / f"moto-{self.starts}.log",
        )

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def fs(self) -> Any:
        return Storage(f"s3://{self.bucket}", self.options()).fs

    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "skip_instance_cache": True}


@pytest.fixture
def moto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    """A moto S3 server of this test's own (the session's must not die), its endpoint in the
    environment the server under test inherits."""
    server = Moto(tmp_path)
    for key, value in {**S3_ENV, "AWS_ENDPOINT_URL_S3": server.endpoint}.items():
        monkeypatch.setenv(key, value)
    server.start()
    try:
        server.fs().mkdir(server.bucket)
        yield server
    finally:
        server.stop()


def test_a_dead_sink_drops_and_counts_but_keeps_serving_and_recovers(
    registry: str, moto: Moto, tmp_path: Path
) -> None:
    log_uri = f"s3://{moto.bucket}/prediction-log"
    max_buffered = 50
    args = server_args(
        registry, *FAST, "--prediction-log-uri", log_uri,
        "--prediction-log-flush-rows", "10",
        "--prediction-log-max-buffered", str(max_buffered),
    )  # fmt: skip
    options = moto.options()
    with ServerProcess(args, tmp_path) as server:
        wait_ready(server)
        rows = rows_of(server, MODEL, 20, seed=3)

        def burst(count: int, tag: str) -> list[Sent]:
            return [
                send(server.client, v1(MODEL, [rows[i % 20]], request_id=f"{tag}-{i:04d}"))
                for i in range(count)
            ]

        def written() -> float:
            return metric(server, RECORDS, kind="predictions")

        before = burst(20, "before")
        wait_for("the first records written", lambda: written() == 20)
        # Read now: moto keeps its objects in memory, and its restart below forgets them.
        assert set(once_each(read_log(log_uri, "predictions", options)[0])) == {
            s.request_id for s in before
        }

        moto.stop()
        during = burst(200, "during")
        assert {s.status for s in during} == {200}
        slowest = max(s.finished - s.started for s in during)
        # A request never waits for the sink (one failed write to it takes seconds).
        assert slowest < 2.0, f"a request took {slowest:.2f}s while the sink was down"
        wait_for("a failed write", lambda: metric(server, WRITE_ERRORS, kind="predictions") > 0)
        dropped = metric(server, DROPPED, kind="predictions", reason="buffer_full")
        # The memory bound: what is not held is dropped, at once.
        assert dropped == len(during) - max_buffered
        assert written() == 20

        moto.start()  # on the same port, empty: the bucket is made again
        if not moto.fs().exists(moto.bucket):
            moto.fs().mkdir(moto.bucket)
        # What was held is written once the sink is back ...
        wait_for("the held records", lambda: written() == 20 + max_buffered, timeout=60)
        after = burst(20, "after")
        # ... and new records after it.
        wait_for("new records", lambda: written() == 40 + max_buffered)
        assert metric(server, DROPPED, kind="predictions", reason="write_failed") == 0
        assert metric(server, DROPPED, kind="predictions", reason="buffer_full") == dropped
    assert server.process is not None
    assert server.process.returncode == 0, server.log()[-3000:]
    assert "cannot write" in server.log()  # the failed writes were logged

    # What the restarted emulator holds: the records held through the outage, then the new.
    by_id = once_each(read_log(log_uri, "predictions", options)[0])
    sent = before + during + after
    assert len(before) + len(by_id) + dropped == len(sent)
    assert set(by_id) <= {s.request_id for s in during + after}
    assert {s.request_id for s in after} <= set(by_id)
    # The oldest records were held (in order) and the newest dropped.
    held = [s.request_id for s in during if s.request_id in by_id]
    assert held == [s.request_id for s in during[:max_buffered]]
    for each in during + after:
        if each.request_id in by_id:
            check_prediction(by_id[each.request_id], each, None)


# -- 4. outcomes: labels and an experiment's outcomes, joined by request id -----------------


def post_json(server: ServerProcess, path: str, body: Any, **headers: str) -> httpx.Response:
    return server.client.post(path, content=orjson.dumps(body), headers=headers)


def model_trace(*args: str) -> tuple[int, Any, str]:
    """``model-trace ARGS`` as a user runs it: its exit code, its JSON output, its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "prediction_log", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, orjson.loads(done.stdout) if done.stdout.strip() else None, done.stderr


def test_outcomes_join_their_predictions_and_model_trace_finds_them(
    registry: str, tmp_path: Path
) -> None:
    # The log where the server puts it by default, and where model-trace looks by default.
    log_uri = default_log_uri(registry)
    assert log_uri is not None
    args = experiment_args(registry)
    with ServerProcess(args, tmp_path) as server:
        wait_ready(server)
        rows = rows_of(server, MODEL, 12, seed=4)
        users = [f"buyer-{i}" for i in range(12)]
        sent = {
            user: send(server.client, v1(MODEL, [row], user=user))
            for user, row in zip(users, rows, strict=True)
        }
        assert {s.status for s in sent.values()} == {200}
        by_variant: dict[str, list[str]] = {"control": [], "treatment": []}
        for user in users:
            by_variant[assign(user, EXPERIMENT, 50)].append(user)
        assert all(len(v) >= 2 for v in by_variant.values()), by_variant

        def label(user: str, flip: bool) -> tuple[str, str]:
            predicted = sent[user].json()["predictions"][0]
            other = "benign" if predicted == "malignant" else "malignant"
            return predicted, other if flip else predicted

        expected: list[dict[str, Any]] = []
        # True labels for the control's predictions: a list naming their request ids.
        control = by_variant["control"]
        pairs = [label(u, i % 2 == 1) for i, u in enumerate(control)]
        report = post_json(
            server,
            f"/v2/models/{MODEL}/feedback",
            {
                "model_version": "v1",
                "request_ids": [sent[u].request_id for u in control],
                "predictions": [p for p, _ in pairs],
                "targets": [t for _, t in pairs],
            },
            **{"x-request-id": "labels-report-1"},
        )
        assert report.status_code == 200, report.text
        assert report.json()["incorrect"] == len(control) // 2
        for user, (predicted, target) in zip(control, pairs, strict=True):
            expected.append({
                "report_id": "labels-report-1", "request_id": sent[user].request_id,
                "model_version": "v1", "outcome": "label", "prediction": f'"{predicted}"',
                "target": f'"{target}"', "correct": predicted == target, "abs_error": None,
                "experiment": None, "variant": None, "user_hash": None, "converted": None,
            })  # fmt: skip
        # One label for the treatment's prediction: one request id; the server makes the
        # report's id.
        user = by_variant["treatment"][0]
        predicted, target = label(user, flip=True)
        report = post_json(
            server,
            f"/v1/models/{MODEL}/feedback",
            {
                "model_version": "v2",
                "request_id": sent[user].request_id,
                "prediction": predicted,
                "target": target,
            },
        )
        assert report.status_code == 200, report.text
        assert uuid.UUID(report.headers["x-request-id"]).version == 7
        expected.append({
            "report_id": report.headers["x-request-id"], "request_id": sent[user].request_id,
            "model_version": "v2", "outcome": "label", "correct": False,
            "prediction": f'"{predicted}"', "target": f'"{target}"',
        })  # fmt: skip
        # The experiment's outcomes: conversions by user key, a label, and a value named by
        # variant (no user key: no user hash).
        outcomes: list[dict[str, Any]] = [
            {"user_id": u, "converted": i % 3 == 0, "request_id": sent[u].request_id}
            for i, u in enumerate(users)
        ]
        predicted, target = label(users[0], flip=False)
        outcomes.append({"user_id": users[0], "prediction": predicted, "target": target})
        outcomes.append({"variant": "treatment", "value": 2.5})
        report = post_json(
            server,
            f"/v2/models/{MODEL}/feedback",
            {"experiment": EXPERIMENT, "outcomes": outcomes},
            **{"x-request-id": "experiment-report-1"},
        )
        assert report.status_code == 200, report.text
        version = {"control": "v1", "treatment": "v2"}
        for i, user in enumerate(users):
            variant = assign(user, EXPERIMENT, 50)
            expected.append({
                "report_id": "experiment-report-1", "request_id": sent[user].request_id,
                "outcome": "conversion", "converted": i % 3 == 0, "experiment": EXPERIMENT,
                "variant": variant, "model_version": version[variant],
                "user_hash": hashed_user(user, EXPERIMENT), "correct": None, "value": None,
            })  # fmt: skip
        variant = assign(users[0], EXPERIMENT, 50)
        expected.append({
            "report_id": "experiment-report-1", "request_id": None, "outcome": "label",
            "experiment": EXPERIMENT, "variant": variant, "model_version": version[variant],
            "user_hash": hashed_user(users[0], EXPERIMENT), "correct": True,
            "prediction": f'"{predicted}"', "target": f'"{target}"',
        })  # fmt: skip
        expected.append({
            "report_id": "experiment-report-1", "request_id": None, "outcome": "value",
            "experiment": EXPERIMENT, "variant": "treatment", "model_version": "v2",
            "user_hash": None, "value": 2.5, "converted": None,
        })  # fmt: skip
        # Refused reports leave nothing in the log.
        for bad in (
            {"model_version": "v1", "prediction": "benign", "target": "cat"},
            {"model_version": "v7", "prediction": "benign", "target": "benign"},
            {"experiment": EXPERIMENT, "outcomes": [{"user_id": "x", "converted": "yes"}]},
        ):
            assert post_json(server, f"/v2/models/{MODEL}/feedback", bad).status_code == 400

        found = wait_for_records(log_uri, "outcomes", len(expected))
        predictions = once_each(wait_for_records(log_uri, "predictions", len(users)))
    assert server.process is not None
    assert server.process.returncode == 0, server.log()[-3000:]
    found = read_log(log_uri, "outcomes")[0]  # after the stop: nothing more, nothing twice
    assert len(found) == len(expected)

    def key(record: dict[str, Any]) -> tuple[Any, ...]:
        return (record["report_id"], record["request_id"], record["outcome"])

    by_key = {key(r): r for r in found}
    assert len(by_key) == len(found)
    for want in expected:
        record = by_key[key(want)]
        assert {k: record[k] for k in want} == want, want
        assert record["model_name"] == record["model"] == MODEL
        assert record["schema_version"] == 1
    # Every outcome that names a request joins its prediction: same version, and in the
    # experiment the same variant and user hash.
    for record in found:
        if record["request_id"] is None:
            continue
        prediction = predictions[record["request_id"]]
        assert prediction["model_version"] == record["model_version"]
        if record["experiment"] is not None:
            assert prediction["variant"] == record["variant"]
            assert prediction["user_hash"] == record["user_hash"] is not None

    # model-trace finds a request by the id its response carried, with its lineage and the
    # outcomes reported for it.
    traced = control[1]  # its label said the prediction was wrong
    request_id = sent[traced].request_id
    code, trace, err = model_trace(request_id, "--registry-uri", registry, "-o", "json")
    assert code == 0, err
    assert trace["log_uri"] == log_uri
    prediction = trace["prediction"]
    assert (prediction["request_id"], prediction["model_version"], prediction["variant"]) == (
        request_id,
        "v1",
        "control",
    )
    assert prediction["user_hash"] == hashed_user(traced, EXPERIMENT)
    assert trace["lineage"]["found"] is True, trace["lineage"]
    assert (
        trace["lineage"]["artifact_sha256"] == Registry(registry).get(MODEL, "v1").artifact.sha256
    )
    reported = sorted(
        (o["outcome"], o["report_id"], o["correct"], o["converted"]) for o in trace["outcomes"]
    )
    assert reported == [
        ("conversion", "experiment-report-1", None, users.index(traced) % 3 == 0),
        ("label", "labels-report-1", False, None),
    ]
    code, _, err = model_trace(new_request_id(), "--registry-uri", registry)
    assert code == 3
    assert "not found" in err
    # Live accuracy per version: the labels sent, counted by hand.
    labels: dict[str, list[dict[str, Any]]] = {}
    for want in expected:
        if want["outcome"] == "label":
            labels.setdefault(want["model_version"], []).append(want)
    assert sorted(labels) == ["v1", "v2"]
    hand = [
        {
            "model_version": version,
            "task": "classification",
            "count": len(rows),
            "joined": sum(r["request_id"] is not None for r in rows),
            "correct": sum(r["correct"] for r in rows),
            "accuracy": sum(r["correct"] for r in rows) / len(rows),
            "mae": None,
        }
        for version, rows in sorted(labels.items())
    ]
    code, report, err = model_trace("accuracy", MODEL, "--registry-uri", registry, "-o", "json")
    assert code == 0, err
    assert report["versions"] == hand


# -- 5. payloads only when opted in ---------------------------------------------------------


def test_payloads_hold_the_rows_and_the_response_body_when_opted_in(
    registry: str, tmp_path: Path
) -> None:
    log_uri = str(tmp_path / "prediction-log")
    args = server_args(
        registry, *FAST, "--prediction-log-uri", log_uri, "--prediction-log-payloads",
        model="diabetes",
    )  # fmt: skip
    with ServerProcess(args, tmp_path) as server:
        wait_ready(server)
        rows = rows_of(server, "diabetes", 6, seed=5)
        meta = server.client.get("/v2/models/diabetes").json()
        names = [f["name"] for f in meta["parameters"]["features"]]
        objects = orjson.dumps({"instances": [dict(zip(names, rows[3], strict=True))]})
        requests = [
            v1("diabetes", rows[:2]),
            v2("diabetes", rows[2:3]),
            Request("/v1/models/diabetes:predict", objects, "v1", [rows[3]]),  # keyed by name
            Request("/v1/models/diabetes:predict", b'{"instances": [[1.0]]}', "v1"),  # a 400
        ]
        sent = [send(server.client, r) for r in requests]
        assert [s.status for s in sent] == [200, 200, 200, 400]
        # A regressor's true values: the absolute error is recorded with each.
        first = sent[0].json()["predictions"]
        report = post_json(
            server,
            "/v1/models/diabetes/feedback",
            {
                "model_version": "v1",
                "request_ids": [sent[0].request_id] * 2,
                "predictions": first,
                "targets": [first[0] + 10.5, first[1] - 3.0],
            },
        )
        assert report.status_code == 200, report.text
        records = once_each(wait_for_records(log_uri, "predictions", len(sent)))
        outcomes = wait_for_records(log_uri, "outcomes", 2)
    assert server.process is not None
    assert server.process.returncode == 0
    for each in sent:
        record = records[each.request_id]
        assert record["model_name"] == "diabetes"
        assert record["status"] == each.status
        # The response body, as sent (the error's body for a refusal).
        assert record["outputs"] is not None
        assert orjson.loads(record["outputs"]) == each.json()
        if each.status == 200:  # the decoded rows, in feature order (also from objects)
            assert record["inputs"] is not None
            assert orjson.loads(record["inputs"]) == each.request.rows
            assert record["inputs_sha256"] == each.request.digest
        else:
            assert record["inputs"] is record["inputs_sha256"] is None
    assert sorted(r["abs_error"] for r in outcomes) == pytest.approx([3.0, 10.5])
    for outcome in outcomes:
        assert outcome["request_id"] == sent[0].request_id
        assert outcome["correct"] is None
        assert orjson.loads(outcome["prediction"]) in first
    # A regressor's live accuracy is its mean absolute error.
    code, report, err = model_trace("accuracy", "diabetes", "--log-uri", log_uri, "-o", "json")
    assert code == 0, err
    [row] = report["versions"]
    assert (row["model_version"], row["task"], row["count"], row["joined"]) == (
        "v1",
        "regression",
        2,
        2,
    )
    assert row["mae"] == pytest.approx(6.75)


def test_requests_the_guard_turns_away_are_recorded_too(registry: str, tmp_path: Path) -> None:
    """A shed 503 (past --max-concurrency) and a 413 (over --max-request-bytes) never reach the
    model, yet each is one record under the id its response carried (a UUIDv7 when the
    client sent none)."""
    log_uri = str(tmp_path / "prediction-log")
    args = server_args(
        registry, *FAST, "--prediction-log-uri", log_uri, "--max-concurrency", "1",
        "--fault-latency-ms", "400", "--max-request-bytes", "4096",
    )  # fmt: skip
    with ServerProcess(args, tmp_path) as server:
        wait_ready(server)
        rows = rows_of(server, MODEL, 1, seed=9)

        def one(_: int) -> Sent:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                return send(client, v1(MODEL, rows))

        with ThreadPoolExecutor(4) as pool:  # one is admitted, the others are shed at once
            sent = list(pool.map(one, range(4)))
        too_large = send(server.client, Request(f"/v1/models/{MODEL}:predict", b" " * 8192, "v1"))
        statuses = sorted(s.status for s in sent)
        assert statuses[0] == 200
        assert 503 in statuses
        assert too_large.status == 413
        every = [*sent, too_large]
        records = once_each(wait_for_records(log_uri, "predictions", len(every)))
    assert set(records) == {s.request_id for s in every}
    for each in every:
        record = records[each.request_id]
        assert record["status"] == each.status
        assert time_of(each.request_id) is not None  # the server made every id: UUIDv7s
        if each.status != 200:
            assert record["rows"] is None
            assert record["inputs_sha256"] is None


def test_binary_outputs_are_recorded_as_json_and_overlong_ids_are_replaced(
    registry: str, tmp_path: Path
) -> None:
    """With payloads, an answer sent as binary tensor data is recorded whole (as JSON); a
    client x-request-id over 256 characters is replaced by a UUIDv7, which the response
    carries and the record is filed under."""
    log_uri = str(tmp_path / "prediction-log")
    args = server_args(
        registry, *FAST, "--prediction-log-uri", log_uri, "--prediction-log-payloads"
    )
    with ServerProcess(args, tmp_path) as server:
        wait_ready(server)
        rows = rows_of(server, MODEL, 2, seed=11)
        plain = send(server.client, v2(MODEL, rows))
        request = v2(MODEL, rows, request_id="x" * 300)
        binary_ask = {
            **orjson.loads(request.body),
            "outputs": [{"name": "predict", "parameters": {"binary_data": True}}],
        }
        binary = send(
            server.client,
            Request(request.path, orjson.dumps(binary_ask), "v2", rows, request_id="x" * 300),
        )
        assert plain.status == binary.status == 200
        assert "inference-header-content-length" in binary.headers  # the answer is binary
        assert time_of(binary.request_id) is not None  # the 300-character id was replaced
        records = once_each(wait_for_records(log_uri, "predictions", 2))
    assert set(records) == {plain.request_id, binary.request_id}
    expected = plain.json()["outputs"][0]["data"]  # the same rows, answered as JSON
    outputs = orjson.loads(records[binary.request_id]["outputs"])["outputs"]
    assert [o["name"] for o in outputs] == ["predict"]
    assert outputs[0]["data"] == expected
