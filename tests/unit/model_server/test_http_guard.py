"""The lingering close of ``model_server.http_guard`` on a real uvicorn over 127.0.0.1: every
client reads its answer, and no connection lingers past its bounds."""

from __future__ import annotations

import asyncio
import functools
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from model_server import http_guard
from model_server.http_guard import GuardedHttpToolsProtocol
from serving_common.net import free_port

LIMIT = 64 * 1024


async def app(scope: Any, receive: Any, send: Any) -> None:
    """413 for a declared body over LIMIT (nothing of it read), else read it and answer 200;
    ``/slow`` holds its request for 2 s (so the next POST is shed)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(2)
    declared = dict(scope["headers"]).get(b"content-length", b"0")
    if int(declared) > LIMIT:
        body = b'{"error":"request body is larger than the limit"}'
        headers = [(b"content-length", b"%d" % len(body)), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def shed(path: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    close = b"" if keep_alive else b"connection: close\r\n"
    return b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n" + close + b"\r\nbusy"


@pytest.fixture(params=["asyncio", "uvloop"])
def server(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[uvicorn.Server]:
    """A guarded uvicorn in a thread: lingering bounded by 1.5 s and 1 MiB. On both event
    loops: one worker serves on asyncio, ``--workers N`` on uvloop (uvicorn's "auto")."""
    monkeypatch.setattr(http_guard, "LINGER_SECONDS", 1.5)
    monkeypatch.setattr(http_guard, "LINGER_MIN_BYTES", 1 << 20)
    http_guard.set_body_limit(lambda: LIMIT)
    http_guard.set_shed_answer(shed)
    chosen = free_port()
    protocol = functools.partial(
        GuardedHttpToolsProtocol,
        header_timeout=5.0,
        body_timeout=5.0,
        max_connections=50,
        max_concurrency=1,
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=chosen,
        log_level="error",
        lifespan="off",
        loop=request.param,
        http=protocol,  # type: ignore[arg-type]  # uvicorn takes any protocol factory
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    server.port = chosen  # type: ignore[attr-defined]
    yield server
    server.should_exit = True
    thread.join(10)
    http_guard.set_body_limit(None)
    http_guard.set_shed_answer(None)


@pytest.fixture
def port(server: uvicorn.Server) -> int:
    return int(server.port)  # type: ignore[attr-defined]


def _open(server: uvicorn.Server) -> int:
    return len(server.server_state.connections)


def _until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    sock.settimeout(seconds)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


def test_a_body_far_over_the_limit_gets_its_413_through_http_client(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 MiB, more than loopback's socket buffers hold: without the linger, http.client gets
    a reset or a broken pipe while it still writes."""
    monkeypatch.setattr(http_guard, "LINGER_MIN_BYTES", 64 << 20)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("POST", "/", body=b"x" * (16 << 20))
        response = connection.getresponse()
        assert (response.status, response.read()) == (
            413,
            b'{"error":"request body is larger than the limit"}',
        )
    finally:
        connection.close()


def test_a_lingering_connection_whose_client_never_closes_ends_on_time(
    server: uvicorn.Server, port: int
) -> None:
    """The client reads the 413 and its EOF, then neither sends nor closes: the server keeps
    the connection for the linger (1.5 s here), not for the body timeout (5 s) or forever."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n"
        sock.sendall(head + b"x" * 10)
        data, _ = _until_closed(sock, 10)  # the response, then the server's half-close
        started = time.monotonic()
        assert _open(server) == 1  # lingering, not closed at once
        while _open(server) and time.monotonic() - started < 10:
            time.sleep(0.05)
        seconds = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 413"), data
    assert seconds < 3.0, seconds


def test_a_trickling_body_does_not_extend_the_linger(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 6:
            try:
                sock.sendall(b"x")
            except OSError:
                closed = True
                break
            time.sleep(0.1)
        seconds = time.monotonic() - started
    assert closed, "the server kept reading a trickle past the linger"
    assert seconds < 4.0, seconds


def test_past_the_byte_bound_the_rest_is_not_read(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_guard, "LINGER_SECONDS", 60.0)  # only the bytes can end it
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n")
        sock.settimeout(5)
        chunk = b"x" * 65536
        try:
            while sent < 64 << 20:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
    assert sent < 64 << 20, "the server read 64 MiB past a 1 MiB bound"
    assert time.monotonic() - started < 30


def test_a_shed_request_with_connection_close_does_not_linger(
    server: uvicorn.Server, port: int
) -> None:
    """Shed with ``connection: close``, its small body in the same packet: the whole message
    was read, so the server closes the connection at once (it once stayed open, no timer)."""
    with socket.create_connection(("127.0.0.1", port)) as busy:
        busy.sendall(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi"
            )
            data, _ = _until_closed(sock, 10)
            started = time.monotonic()
            while _open(server) > 1 and time.monotonic() - started < 5:  # the busy one stays
                time.sleep(0.02)
            seconds = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 503"), data
    assert seconds < 1.0, seconds


def test_uvicorns_400_for_a_broken_body_reaches_http_client(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_guard, "LINGER_MIN_BYTES", 64 << 20)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.putrequest("POST", "/")
        connection.putheader("transfer-encoding", "chunked")
        connection.endheaders()
        connection.send(b"zz\r\n" + b"x" * (16 << 20))  # not a chunk size, then 16 MiB
        response = connection.getresponse()
        assert response.status == 400
        assert b"Invalid HTTP request" in response.read()
    finally:
        connection.close()


def test_a_400_mid_body_ends_the_request_task_at_once(server: uvicorn.Server, port: int) -> None:
    """uvicorn's 400 for a body that breaks off mid-read: the app's task learns the client is
    gone now, not when the linger ends (a task would hold an admission slot meanwhile)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        deadline = time.monotonic() + 5
        while not server.server_state.tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.server_state.tasks, "the app never started reading"
        sock.sendall(b"zz\r\n")  # not a chunk size: uvicorn answers 400 and lingers
        started = time.monotonic()
        while server.server_state.tasks and time.monotonic() - started < 5:
            time.sleep(0.01)
        seconds = time.monotonic() - started
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    assert seconds < 1.0, seconds
