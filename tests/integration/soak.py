"""A bounded soak of a running model server: ``python -m tests.integration.soak --help``.

Closed loop over keep-alive connections to 127.0.0.1: each connection sends the next request of a
fixed mix (V1 and V2 predictions, bad requests of both protocols, feedback) as soon as the last
is answered, and checks every status. The server's processes are sampled (RSS, open file
descriptors) after a warm-up and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

ROW = [14.0, 19.0, 91.0, 650.0, 0.096, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.9, 40.0, 0.007,
       0.025, 0.03, 0.011, 0.02, 0.0038, 16.0, 25.0, 107.0, 880.0, 0.13, 0.25, 0.27, 0.11, 0.29,
       0.084]  # fmt: skip
MODEL = "breast-cancer"


def _post(path: str, document: object) -> bytes:
    body = orjson.dumps(document)
    return (
        b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
    )


MALFORMED = (
    b"POST /v1/models/%s:predict HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n{nope"
    % MODEL.encode()
)


def mix(version: str) -> list[tuple[str, bytes, int]]:
    """(kind, raw request, expected status): the soak's requests, in order, repeated."""
    v2_inputs = [{"name": "input-0", "datatype": "FP64", "shape": [2, len(ROW)], "data": ROW * 2}]
    return [
        ("v1", _post(f"/v1/models/{MODEL}:predict", {"instances": [ROW]}), 200),
        ("v2", _post(f"/v2/models/{MODEL}/infer", {"inputs": v2_inputs}), 200),
        ("v1", _post(f"/v1/models/{MODEL}:predict", {"instances": [ROW] * 8}), 200),
        ("v1-bad", _post(f"/v1/models/{MODEL}:predict", {"instances": [ROW[:3]]}), 400),
        ("v2-bad", _post(f"/v2/models/{MODEL}/infer", {"inputs": "nope"}), 400),
        ("v1-bad", MALFORMED, 400),
        (
            "feedback",
            _post(
                f"/v1/models/{MODEL}/feedback",
                {"model_version": version, "prediction": "benign", "target": "malignant"},
            ),
            200,
        ),
    ]


@dataclass(frozen=True)
class Sample:
    rss_bytes: int
    open_fds: int


def sample(pids: Sequence[int]) -> dict[int, Sample]:
    """RSS and open file descriptors of each process."""
    out = {}
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
        out[pid] = Sample(rss_kb * 1024, len(list(Path(f"/proc/{pid}/fd").iterdir())))
    return out


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _soak(
    port: int, requests: list[tuple[str, bytes, int]], count: int, connections: int, on_warm: object
) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    queue = itertools.islice(itertools.cycle(requests), count)
    warm_at = count // 5
    done = 0

    async def connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for kind, request, expected in queue:
                status = await asyncio.wait_for(_exchange(reader, writer, request), 30)
                outcomes[kind if status == expected else f"{kind} got {status}"] += 1
                done += 1
                if done == warm_at and callable(on_warm):
                    on_warm()
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return outcomes


@dataclass(frozen=True)
class SoakReport:
    outcomes: Counter[str]
    seconds: float
    warm: dict[int, Sample]
    end: dict[int, Sample]

    @property
    def unexpected(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if " got " in kind)

    @property
    def rss_growth(self) -> dict[int, int]:
        return {pid: self.end[pid].rss_bytes - self.warm[pid].rss_bytes for pid in self.warm}

    @property
    def fd_growth(self) -> dict[int, int]:
        return {pid: self.end[pid].open_fds - self.warm[pid].open_fds for pid in self.warm}

    def lines(self) -> list[str]:
        total = sum(self.outcomes.values())
        out = [f"{total} requests in {self.seconds:.0f} s ({total / self.seconds:.0f}/s)"]
        out += [f"  {kind}: {n}" for kind, n in sorted(self.outcomes.items())]
        for pid in self.warm:
            out.append(
                f"  pid {pid}: RSS {self.warm[pid].rss_bytes / 2**20:.1f} -> "
                f"{self.end[pid].rss_bytes / 2**20:.1f} MiB after warm-up "
                f"({self.rss_growth[pid] / 2**20:+.2f} MiB); open fds "
                f"{self.warm[pid].open_fds} -> {self.end[pid].open_fds}"
            )
        return out


def soak(
    port: int, pids: Sequence[int], *, version: str, count: int, connections: int = 8
) -> SoakReport:
    """Send ``count`` requests of the mix; sample ``pids`` after the first fifth and at the end."""
    warm: dict[int, Sample] = {}

    def on_warm() -> None:
        warm.update(sample(pids))

    started = time.perf_counter()
    outcomes = asyncio.run(_soak(port, mix(version), count, connections, on_warm))
    seconds = time.perf_counter() - started
    return SoakReport(outcomes, seconds, warm, sample(pids))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.integration.soak",
        description="Soak a model server on 127.0.0.1 serving breast-cancer; exit 1 on an "
        "unexpected status, RSS growth over --max-rss-growth-mib or any fd growth.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, action="append", required=True, help="repeatable")
    parser.add_argument("--version", default="v1", help="served version (for feedback)")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--max-rss-growth-mib", type=float, default=8.0)
    args = parser.parse_args(argv)
    report = soak(
        args.port,
        args.pid,
        version=args.version,
        count=args.requests,
        connections=args.connections,
    )
    print("\n".join(report.lines()))
    ok = (
        report.unexpected == 0
        and max(report.rss_growth.values()) <= args.max_rss_growth_mib * 2**20
        and max(report.fd_growth.values()) <= 0
    )
    print("soak:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
