"""An open-loop HTTP/1.1 load generator for overload tests: requests leave on a fixed schedule
whether or not earlier ones were answered (as real clients arrive), over keep-alive connections
to 127.0.0.1. Bounded by count; every request has a deadline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    status: int  # 0: no answer (connection closed or timed out)
    seconds: float
    headers: dict[str, str]


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict[str, str]]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers


async def _run(  # noqa: PLR0917 (the private body of open_loop)
    port: int, request: bytes, rate: float, count: int, connections: int, timeout: float
) -> list[Result]:
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(None)  # opened on first use
    results: list[Result] = []

    async def one(due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        conn = await pool.get()  # the pool is sized so that this does not wait
        started = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            status, headers = await asyncio.wait_for(_exchange(*conn, request), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            if conn is not None:
                conn[1].close()
            pool.put_nowait(None)
            results.append(Result(0, time.perf_counter() - started, {}))
            return
        if headers.get("connection") == "close":
            conn[1].close()
            conn = None
        pool.put_nowait(conn)
        results.append(Result(status, time.perf_counter() - started, headers))

    start = time.perf_counter() + 0.05
    await asyncio.gather(*(one(start + i / rate) for i in range(count)))
    while not pool.empty():
        conn = pool.get_nowait()
        if conn is not None:
            conn[1].close()
            await conn[1].wait_closed()
    return results


def open_loop(
    port: int,
    request: bytes,
    *,
    rate: float,
    count: int,
    connections: int = 64,
    timeout: float = 30.0,
) -> list[Result]:
    """Send ``count`` copies of the raw ``request`` at ``rate`` per second; their results."""
    return asyncio.run(_run(port, request, rate, count, connections, timeout))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]
