"""A loopback proxy that makes a storage emulator fail on demand.

``mode``: ``"ok"`` forwards every request; ``"error"`` answers 503 with a JSON error, as an object
store does when it is overloaded; ``"down"`` closes each connection without an answer, as when
the store cannot be reached; ``"slow"`` forwards after ``delay`` seconds. The mode can change at
any time from the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from tests.integration.loopback_proxy import Answer, LoopbackProxy

Mode = Literal["ok", "error", "down", "slow"]
ERROR = b'{"error": {"code": 503, "message": "Service Unavailable (injected by the test)"}}'


class FaultProxy(LoopbackProxy):
    """In front of the emulator at ``upstream`` (``http://127.0.0.1:PORT``)."""

    def __init__(
        self,
        upstream: str,
        mode: Mode = "ok",
        delay: float = 5.0,
        fail_after: Callable[[str, str, bytes], bool] | None = None,
    ) -> None:
        """``fail_after(method, path, body)``: when true for a forwarded request, every later one
        fails (``mode`` becomes ``"down"``): an outage that starts at a chosen moment."""
        super().__init__(int(upstream.rsplit(":", 1)[1]))
        self.mode: Mode = mode
        self.delay = delay
        self.fail_after = fail_after
        self.requests = 0

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        self.requests += 1
        mode = self.mode
        if mode == "down":
            return None
        if mode == "error":
            return 503, [("Content-Type", "application/json")], ERROR
        if mode == "slow":
            time.sleep(self.delay)
        answer = self.forward(method, path, headers, body)
        if self.fail_after is not None and self.fail_after(method, path, body):
            self.mode = "down"
        return answer
