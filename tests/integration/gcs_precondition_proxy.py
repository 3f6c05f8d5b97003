"""A loopback HTTP proxy in front of gcp-storage-emulator that enforces ``ifGenerationMatch``.

Real GCS refuses an upload with ``ifGenerationMatch=0`` when the object exists, and with
``ifGenerationMatch=G`` when the live object's generation is not G (HTTP 412); the emulator
ignores the parameter. This proxy adds exactly that rule, atomically (one upload with a
precondition at a time), and forwards everything else unchanged, so the registry's exclusive
writes and compare-and-swap alias updates are tested through gcsfs's real request path with
GCS's documented semantics.
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import parse_qs, quote, urlsplit

from tests.integration.loopback_proxy import Answer, LoopbackProxy

_NAME_IN_BODY = re.compile(rb'\{"name": (".*?(?<!\\)")')


class PreconditionProxy(LoopbackProxy):
    """In front of the emulator at ``127.0.0.1:upstream_port``."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.lock = threading.Lock()
        self.refused = 0

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        url = urlsplit(path)
        query = parse_qs(url.query)
        if not (
            method == "POST" and url.path.startswith("/upload/") and query.get("ifGenerationMatch")
        ):
            return self.forward(method, path, headers, body)
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
            status, _, live = self.forward(
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
            return self.forward(method, path, headers, body)
