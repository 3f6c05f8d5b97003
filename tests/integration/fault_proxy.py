"""A loopback HTTP proxy that can make a storage emulator fail on demand.

``mode``: ``"ok"`` forwards every request; ``"error"`` answers 503 with a JSON error, as an object
store does when it is overloaded; ``"down"`` closes each connection without an answer, as when
the store cannot be reached; ``"slow"`` forwards after ``delay`` seconds. The mode can change at
any time from the test.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["ok", "error", "down", "slow"]
_HOP = {"host", "content-length", "connection", "transfer-encoding"}


class FaultProxy:
    """Serve on ``127.0.0.1:port`` in front of ``upstream`` (``host:port``)."""

    def __init__(
        self,
        upstream: str,
        mode: Mode = "ok",
        delay: float = 5.0,
        fail_after: Callable[[str, str, bytes], bool] | None = None,
    ) -> None:
        """``fail_after(method, path, body)``: when true for a forwarded request, every later one
        fails (``mode`` becomes ``"down"``): an outage that starts at a chosen moment."""
        host, _, port = upstream.rpartition(":")
        self.upstream = (host.removeprefix("http://") or "127.0.0.1", int(port))
        self.mode: Mode = mode
        self.delay = delay
        self.fail_after = fail_after
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _relay(self) -> None:
                proxy.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                mode = proxy.mode
                if mode == "down":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if mode == "error":
                    self._answer(503, [("Content-Type", "application/json")], ERROR)
                    return
                if mode == "slow":
                    time.sleep(proxy.delay)
                status, headers, payload = proxy.forward(self.command, self.path, self, body)
                if proxy.fail_after is not None and proxy.fail_after(self.command, self.path, body):
                    proxy.mode = "down"
                self._answer(status, headers, payload)

            def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _relay  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def forward(
        self, method: str, path: str, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


ERROR = b'{"error": {"code": 503, "message": "Service Unavailable (injected by the test)"}}'
