"""A loopback HTTP proxy in front of gcp-storage-emulator that enforces ``ifGenerationMatch``.

Real GCS refuses an upload with ``ifGenerationMatch=0`` when the object exists, and with
``ifGenerationMatch=G`` when the live object's generation is not G (HTTP 412); the emulator
ignores the parameter. This proxy adds exactly that rule, atomically (one upload with a
precondition at a time), and forwards everything else unchanged, so the registry's exclusive
writes and compare-and-swap alias updates are tested through gcsfs's real request path with
GCS's documented semantics.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

_NAME_IN_BODY = re.compile(rb'\{"name": (".*?(?<!\\)")')


class PreconditionProxy:
    """Serve on ``127.0.0.1:port`` and forward to the emulator at ``upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = proxy.handle(self.command, self.path, self.headers, body)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _relay  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PreconditionProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _forward(
        self, method: str, path: str, headers: object, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            forwarded = {
                k: v
                for k, v in headers.items()  # type: ignore[attr-defined]
                if k.lower() not in {"host", "content-length", "connection"}
            }
            connection.request(method, path, body=body or None, headers=forwarded)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def handle(
        self, method: str, path: str, headers: object, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        url = urlsplit(path)
        query = parse_qs(url.query)
        if not (
            method == "POST" and url.path.startswith("/upload/") and query.get("ifGenerationMatch")
        ):
            return self._forward(method, path, headers, body)
        bucket = url.path.split("/b/", 1)[1].split("/", 1)[0]
        names = query.get("name")
        if names:
            name = names[0]
        else:
            match = _NAME_IN_BODY.search(body)
            if match is None:
                return 400, [], b'{"error": {"code": 400, "message": "no object name"}}'
            name = json.loads(match.group(1))
        wanted = query["ifGenerationMatch"][0]
        with self.lock:
            status, _, live = self._forward(
                "GET", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}", {}, b""
            )
            generation = json.loads(live)["generation"] if status == 200 else "0"
            if generation != wanted:
                self.refused += 1
                error = {
                    "error": {
                        "code": 412,
                        "message": "At least one of the pre-conditions you specified did not hold.",
                    }
                }
                return 412, [("Content-Type", "application/json")], json.dumps(error).encode()
            return self._forward(method, path, headers, body)
