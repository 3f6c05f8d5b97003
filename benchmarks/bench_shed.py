"""Server time of a shed request, side by side with uvicorn's own limit and an admitted request.

In one process, on one event loop, with a transport that records what is written (no sockets),
the same HTTP/1.1 keep-alive connection is fed a 1-row V1 request again and again:

  (a) shed       this project's protocol at --max-concurrency with the worker full: answered
                 from the protocol as soon as the head is parsed (counted in the metrics);
  (b) uvicorn    uvicorn's own --limit-concurrency (the peer): it builds a request cycle and a
                 task that runs a 503 app on the next loop turn;
  (c) admitted   the same request served in full by the model server's app (routing,
                 validation, the breast-cancer pipeline, metrics, the JSON answer).

Reported: microseconds of server time per request and the ratios. Target (issue 14): a shed
request costs well under a millisecond of server time, and far less than serving one.
Nothing is sent over a network.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROW = [14.0, 19.0, 91.0, 650.0, 0.096, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.9, 40.0, 0.007,
       0.025, 0.03, 0.011, 0.02, 0.0038, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29,
       0.084]  # fmt: skip
MODEL = "breast-cancer"


class Transport(asyncio.Transport):
    """Records writes; a connection from 127.0.0.1 that never closes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return

    def pause_reading(self) -> None:
        return

    def resume_reading(self) -> None:
        return

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        return


def request() -> bytes:
    body = orjson.dumps({"instances": [ROW]})
    return (
        b"POST /v1/models/%s:predict HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        % (MODEL.encode(), len(body), body)
    )


def measure(
    loop: asyncio.AbstractEventLoop, make: Callable[[], Any], status: bytes, count: int
) -> list[float]:
    """Seconds per request: feed it, run the loop until its whole answer is written."""
    protocol, transport = make(), Transport()
    protocol.connection_made(transport)
    raw, times = request(), []
    for _ in range(count):
        transport.written.clear()
        started = time.perf_counter()
        protocol.data_received(raw)
        while b"\r\n\r\n" not in transport.written or not _complete(transport.written):
            loop.run_until_complete(asyncio.sleep(0))
        times.append(time.perf_counter() - started)
        assert transport.written.startswith(b"HTTP/1.1 " + status), bytes(transport.written[:80])
    protocol.connection_lost(None)
    return times


def _complete(data: bytearray) -> bool:
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_shed", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000, help="per kind (default 5000)")
    args = parser.parse_args(argv)

    import kserve.model_server
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from model_server.http_app import install
    from model_server.http_guard import GuardedHttpToolsProtocol
    from model_server.model import SklearnModel
    from model_server.service import ModelService
    from model_server.settings import ModelServerSettings
    from trainer.settings import TrainerSettings
    from trainer.train import run

    with tempfile.TemporaryDirectory() as work:
        registry = str(Path(work) / "registry")
        run(TrainerSettings(sample="breast-cancer", registry_uri=registry, promote=True))
        settings = ModelServerSettings(registry_uri=registry, model_name=MODEL, drift=False)
        model = SklearnModel(settings)
        model.load()
    app = kserve.model_server.app
    install(app, ModelService(model, access_log=False))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    config = uvicorn.Config(app=app, log_level="warning", lifespan="off")
    config.load()
    limited = uvicorn.Config(app=app, limit_concurrency=1, log_level="warning", lifespan="off")
    limited.load()
    logging.getLogger("uvicorn.error").setLevel(logging.ERROR)  # its 503s warn on every request
    common: dict[str, Any] = {"config": config, "app_state": {}, "_loop": loop}
    busy = ServerState()
    busy.tasks.add(loop.create_task(asyncio.sleep(3600)))  # one request in progress: full

    kinds: dict[str, tuple[Callable[[], Any], bytes]] = {
        "shed": (
            lambda: GuardedHttpToolsProtocol(
                server_state=busy,
                header_timeout=10,
                body_timeout=15,
                max_connections=100,
                max_concurrency=1,
                **common,
            ),
            b"503",
        ),
        "uvicorn": (
            lambda: HttpToolsProtocol(server_state=busy, **{**common, "config": limited}),
            b"503",
        ),
        "admitted": (lambda: HttpToolsProtocol(server_state=ServerState(), **common), b"200"),
    }
    medians: dict[str, float] = {}
    for kind, (make, status) in kinds.items():
        measure(loop, make, status, 200)  # warm-up
        times = measure(loop, make, status, args.requests)
        medians[kind] = statistics.median(times)
        p99 = sorted(times)[int(len(times) * 0.99)]
        print(f"{kind:9s} median {medians[kind] * 1e6:8.1f} us   p99 {p99 * 1e6:8.1f} us")
    shed = medians["shed"]
    print(f"shed / uvicorn's limit:  {shed / medians['uvicorn']:.2f}x the server time")
    print(f"shed / admitted request: {shed / medians['admitted']:.3f}x the server time")
    met = shed < 0.0005 and shed < medians["admitted"] / 5
    print(
        f"target: shed under 0.5 ms and under a fifth of an admitted request: "
        f"{'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
