"""Overload, faults and long runs against real server processes on 127.0.0.1 (issue 14).

Every test here is bounded in requests and time and stops by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from model_registry import Registry
from tests.integration.fault_proxy import FaultProxy, Mode
from tests.integration.open_loop import open_loop, percentile
from tests.integration.server_harness import ServerProcess
from tests.integration.soak import soak
from trainer.settings import TrainerSettings
from trainer.train import run

pytestmark = pytest.mark.integration

ROW = [14.0, 19.0, 91.0, 650.0, 0.096, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.9, 40.0, 0.007,
       0.025, 0.03, 0.011, 0.02, 0.0038, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29,
       0.084]  # fmt: skip
FOREST = "forest"


@pytest.fixture(scope="module")
def forest_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A model that costs real CPU per request (300 trees, one thread, served by the pipeline
    engine: ONNX Runtime would answer in about a millisecond): a worker overloads at a rate a
    Python client can offer ten times over."""
    uri = str(tmp_path_factory.mktemp("forest") / "registry")
    run(
        TrainerSettings(
            sample="breast-cancer",
            model_name=FOREST,
            registry_uri=uri,
            estimator="random-forest",
            params={"n_estimators": 300, "n_jobs": 1},
            promote=True,
        )
    )
    return uri


def raw_predict(model: str, rows: int = 1) -> bytes:
    body = orjson.dumps({"instances": [ROW] * rows})
    return (
        b"POST /v1/models/%s:predict HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (model.encode(), len(body), body)
    )


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_overload_ten_times_over_is_shed_and_admitted_latency_stays_bounded(
    forest_registry: str, tmp_path: Path
) -> None:
    """One worker, --max-concurrency 4, offered 10x what it can compute (open loop, 5 s): about
    90% are shed with 503 + Retry-After, the rest are served with latency bounded by the
    admission limit, every shed request is counted, and health checks are never shed."""
    limit = 4
    args = ["--registry-uri", forest_registry, "--model-name", FOREST, "--engine", "sklearn"]
    with ServerProcess([*args, "--max-concurrency", str(limit)], tmp_path) as server:
        request = raw_predict(FOREST)
        warm = open_loop(server.port, request, rate=1000, count=30, connections=1)
        service = percentile([r.seconds for r in warm], 0.5)  # one request, alone
        assert {r.status for r in warm} == {200}
        rate, seconds = 10 / service, 5.0
        results = open_loop(server.port, request, rate=rate, count=int(rate * seconds))
        assert server.client.get("/v2/health/ready").status_code == 200
        exposition = server.client.get("/metrics").text
    admitted = [r.seconds for r in results if r.status == 200]
    shed = [r for r in results if r.status == 503]
    assert len(admitted) + len(shed) == len(results), {r.status for r in results}
    share = len(shed) / len(results)
    p99 = percentile(admitted, 0.99)
    print(
        f"service {service * 1000:.1f} ms; offered {rate:.0f}/s for {seconds:.0f} s: "
        f"{len(results)} requests, shed {share:.1%}; admitted p50 "
        f"{percentile(admitted, 0.5) * 1000:.0f} ms p99 {p99 * 1000:.0f} ms; shed p50 "
        f"{percentile([r.seconds for r in shed], 0.5) * 1000:.1f} ms"
    )
    assert 0.75 <= share <= 0.97  # the overload's share: 1 - 1/10, give or take the warm-up
    # Admitted requests wait behind at most `limit` others: p99 bounded by the admission
    # limit, not by the length of the overload (which would queue about 45 s of work here).
    # The load generator shares this machine's cores with the server, so the bound leaves a
    # wide margin for noise (a CI run saw p99 = 20x the lone service time) while staying far
    # below the unbounded queue's (the next test: worst > 20x service after only 1 s).
    assert p99 < (limit + 2) * service * 10, (p99, service)
    assert all(r.headers.get("retry-after") == "1" for r in shed)
    assert all(r.headers.get("x-model-version") == "v1" for r in shed)
    counted = metric(exposition, "model_server_requests_total", code="503", protocol="v1")
    assert counted == len(shed) == metric(exposition, "model_server_requests_shed_total")


def test_without_a_limit_the_same_overload_queues_without_bound(
    forest_registry: str, tmp_path: Path
) -> None:
    """The contrast that makes the limit worth having: --max-concurrency 0, 10x for 1 s, and
    the last requests wait for the whole backlog."""
    args = [
        *("--registry-uri", forest_registry, "--model-name", FOREST, "--engine", "sklearn"),
        *("--max-concurrency", "0"),
    ]
    with ServerProcess(args, tmp_path) as server:
        request = raw_predict(FOREST)
        warm = open_loop(server.port, request, rate=1000, count=20, connections=1)
        service = percentile([r.seconds for r in warm], 0.5)
        rate = 10 / service
        results = open_loop(server.port, request, rate=rate, count=int(rate), connections=512)
    assert {r.status for r in results} == {200}  # nothing shed
    worst = max(r.seconds for r in results)
    assert worst > 20 * service, (worst, service)  # the queue, not the model


def test_a_shed_request_body_is_skipped_and_the_connection_reused(
    forest_registry: str, tmp_path: Path
) -> None:
    """A shed POST whose body arrives in pieces after the 503: the bytes are dropped, and the
    same connection then serves the next request."""
    args = [
        *("--registry-uri", forest_registry, "--model-name", FOREST),
        *("--max-concurrency", "1", "--fault-latency-ms", "1500"),  # each request holds 1.5 s
    ]
    with ServerProcess(args, tmp_path) as server:
        body = orjson.dumps({"instances": [ROW] * 200})
        head = (
            b"POST /v1/models/%s:predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
            b"\r\ncontent-length: %d\r\n\r\n" % (FOREST.encode(), len(body))
        )
        with (
            socket.create_connection(("127.0.0.1", server.port)) as holder,
            socket.create_connection(("127.0.0.1", server.port)) as sock,
        ):
            holder.sendall(raw_predict(FOREST))  # takes the worker's one slot
            time.sleep(0.3)
            sock.sendall(head)
            head_answer = _read_response(sock)
            assert head_answer.startswith(b"HTTP/1.1 503"), head_answer
            assert b"retry-after: 1" in head_answer
            assert b"connection: close" not in head_answer
            assert b"--max-concurrency" in head_answer
            for start in range(0, len(body), 1000):  # the body, late and in pieces
                sock.sendall(body[start : start + 1000])
                time.sleep(0.01)
            assert _read_response(holder).startswith(b"HTTP/1.1 200")
            sock.sendall(raw_predict(FOREST))  # the slot is free again
            answer = _read_response(sock)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert b'"predictions"' in answer


def _read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One whole response (head and Content-Length body) from ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        rest += chunk
    return head + b"\r\n\r\n" + rest


def wait_ready(server: ServerProcess, timeout: float) -> float:
    """Seconds until readiness is 200 (fails the test past ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server.client.get("/v2/health/ready").status_code == 200:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout} s:\n{server.log()[-3000:]}")


@pytest.mark.parametrize(
    ("remote_uri", "mode"),
    [("gs", "error"), ("s3", "down"), ("s3", "slow")],
    indirect=["remote_uri"],
)
def test_storage_outage_at_start_is_waited_out_without_a_restart(
    remote_uri: str, mode: Mode, tmp_path: Path
) -> None:
    """The registry answers 503s, cannot be reached, or is slower than startup waits: the
    server comes up (live), not ready with the reason, retries with backoff, and becomes ready
    once storage is back, in the same process."""
    run(TrainerSettings(sample="breast-cancer", registry_uri=remote_uri, promote=True))
    gcs = remote_uri.startswith("gs://")
    variable = "STORAGE_EMULATOR_HOST" if gcs else "AWS_ENDPOINT_URL_S3"
    with FaultProxy(os.environ[variable], mode=mode, delay=4.0) as proxy:
        args = [
            *("--registry-uri", remote_uri, "--model-name", "breast-cancer"),
            *("--load-wait-seconds", "1", "--load-retry-initial-seconds", "0.5"),
            *("--load-retry-max-seconds", "2"),
        ]
        env = {variable: proxy.url, "AWS_MAX_ATTEMPTS": "1"}
        with ServerProcess(args, tmp_path, env=env) as server:
            # gcsfs retries a 503 itself for about 30 s before failing: the first attempt is
            # still going ("still loading"). botocore gives up at once (AWS_MAX_ATTEMPTS=1):
            # the server's own retries take over, and readiness says when the next one is.
            wanted = "next in" if mode == "down" else "still loading"
            reason = ""
            deadline = time.monotonic() + 30
            while wanted not in reason and time.monotonic() < deadline:
                ready = server.client.get("/v2/health/ready")
                assert ready.status_code == 503
                reason = ready.json()["error"]
                time.sleep(0.2)
            assert wanted in reason, reason
            proxy.mode = "ok"
            took = wait_ready(server, timeout=90)
            answer = server.client.post(
                "/v1/models/breast-cancer:predict", content=orjson.dumps({"instances": [ROW]})
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == "v1"
            exposition = server.client.get("/metrics").text
            assert metric(exposition, "model_server_model_info", model_version="v1") == 1
            assert server.process is not None
            assert server.process.poll() is None  # the process started first, never restarted
        log = server.log()
    print(f"{mode}: reason {reason!r}; ready {took:.1f} s after storage returned")
    assert "still loading after 1 s" in log
    if mode == "down":  # the reason, and each retry, in the log
        assert "cannot load model from" in log
        assert "retrying in" in log


@pytest.mark.parametrize("remote_uri", ["s3"], indirect=True)
def test_trainer_outage_mid_publish_leaves_no_visible_version(
    remote_uri: str, tmp_path: Path
) -> None:
    """Storage goes away right after the artifact is uploaded, before metadata.json: the
    trainer exits 5 (registry), readers see no new version, and the next publish works.

    On S3 only: the publish order is the same code on every store, and gcsfs retries a dead
    store for about 30 s before it gives up, which this suite cannot afford (on GCS the test
    passes the same way, in 39 s)."""
    gcs = remote_uri.startswith("gs://")
    variable = "STORAGE_EMULATOR_HOST" if gcs else "AWS_ENDPOINT_URL_S3"

    def artifact_uploaded(method: str, path: str, body: bytes) -> bool:
        # S3 names the object in the path; a GCS upload in its JSON part ({"name": ...}).
        return method in {"PUT", "POST"} and (
            "model.skops" in path.replace("%2F", "/") or b"model.skops" in body[:1000]
        )

    with FaultProxy(os.environ[variable], fail_after=artifact_uploaded) as proxy:
        trainer = subprocess.run(
            [
                *(sys.executable, "-m", "trainer", "--sample", "breast-cancer"),
                *("--registry-uri", remote_uri, "--promote"),
            ],
            env={**os.environ, variable: proxy.url, "AWS_MAX_ATTEMPTS": "1"},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert proxy.mode == "down"  # the outage began mid-publish
    assert trainer.returncode == 5, trainer.stderr[-2000:]
    assert "registry" in trainer.stderr.lower()
    registry = Registry(remote_uri)
    assert registry.list_versions("breast-cancer") == []
    assert {s.version: s.state for s in registry.statuses("breast-cancer")} == {"v1": "incomplete"}
    assert registry.aliases("breast-cancer") == {}
    again = run(TrainerSettings(sample="breast-cancer", registry_uri=remote_uri, promote=True))
    assert again.outcome == "registered"
    assert registry.resolve("breast-cancer", "production") == "v2"  # v1 is never reused


def worker_pids(server: ServerProcess) -> list[int]:
    """The REST worker processes (spawned children) of ``server``."""
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    pids = [int(p) for p in children.read_text().split()]
    return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def series(text: str) -> dict[str, float]:
    """Every sample of the model server's own metrics, by name and labels."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("model_server_") and "drift" not in line
    }


def test_a_killed_worker_is_replaced_and_no_count_is_lost(
    registry_uri: str, tmp_path: Path
) -> None:
    """--workers 2: SIGKILL one worker, three times over. Readiness is 503 while it is gone,
    200 once the replacement serves; every request counted before and after is in /metrics
    exactly once; the metrics directory does not grow with each dead worker."""
    metrics_dir = tmp_path / "metrics"
    args = ["--registry-uri", registry_uri, "--model-name", "breast-cancer", "--workers", "2"]
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    body = orjson.dumps({"instances": [ROW]})
    sent = 0
    with ServerProcess(args, tmp_path, env=env) as server:
        wait_ready(server, timeout=60)
        files_with_two_workers = None
        for _ in range(3):
            for _ in range(40):
                answer = server.client.post("/v1/models/breast-cancer:predict", content=body)
                assert answer.status_code == 200
                sent += 1
            before = series(server.client.get("/metrics").text)
            victim, survivor = worker_pids(server)
            os.kill(victim, signal.SIGKILL)
            states: list[int] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    status = server.client.get("/v2/models/breast-cancer/ready").status_code
                except httpx.TransportError:  # a kept-alive connection to the dead worker
                    continue
                if not states or states[-1] != status:
                    states.append(status)
                if states[-1] == 200 and 503 in states:
                    break
                time.sleep(0.05)
            assert states[-2:] == [503, 200], states
            pids = worker_pids(server)
            assert survivor in pids
            assert victim not in pids
            assert len(pids) == 2
            after = series(server.client.get("/metrics").text)
            # Nothing lost, nothing counted twice: every series is still there with its count
            # (readiness probes are not counted).
            assert after == before
            files = sorted(p.name for p in metrics_dir.glob("*.db"))
            if files_with_two_workers is None:
                files_with_two_workers = len(files)
            assert len(files) == files_with_two_workers, files  # the archive, not one per death
        total = series(server.client.get("/metrics").text)
        log = server.log()
    requests = sum(v for k, v in total.items() if k.startswith("model_server_requests_total{"))
    assert requests == sent
    assert log.count("died (exit code -9); starting a replacement") == 3


SOAK_REQUESTS = int(os.environ.get("SOAK_REQUESTS", "30000"))
"""CI runs a short soak; `make soak` runs 200,000 requests."""
SOAK_MAX_RSS_GROWTH = 8 * 2**20
"""Per process, after warm-up: the drift window, the allocator's high water and the metric
files' pages settle; a leak of even 100 bytes a request would pass this by 200k requests."""


def test_soak_two_workers_memory_and_descriptors_stay_flat(
    registry_uri: str, tmp_path: Path
) -> None:
    """V1 and V2 predictions, bad requests and feedback on 8 connections to --workers 2:
    every answer as expected, RSS growth after warm-up under the bound, no descriptor growth."""
    # The prediction log writes every second: its first writes (pyarrow's imports and memory
    # pool) fall in the warm-up, and what it holds between writes is a second of records, not
    # ten; the bound is then about leaks, as it is meant to be.
    args = [
        "--registry-uri", registry_uri, "--model-name", "breast-cancer", "--workers", "2",
        "--prediction-log-flush-seconds", "1",
    ]  # fmt: skip
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with ServerProcess(args, tmp_path, env=env) as server:
        wait_ready(server, timeout=60)
        assert server.process is not None
        pids = [server.process.pid, *worker_pids(server)]
        report = soak(server.port, pids, version="v1", count=SOAK_REQUESTS)
        exposition = server.client.get("/metrics").text
    print("\n".join(report.lines()))
    assert report.unexpected == 0, report.outcomes
    assert max(report.rss_growth.values()) < SOAK_MAX_RSS_GROWTH, report.lines()
    assert max(report.fd_growth.values()) <= 0, report.lines()
    counted = metric(exposition, "model_server_requests_total")
    predictions = sum(n for kind, n in report.outcomes.items() if kind.startswith("v"))
    assert counted == predictions  # every inference request, good or bad, counted once
