"""uvicorn's httptools protocol with the limits uvicorn lacks: slow and idle clients cut off.

uvicorn bounds idle keep-alive connections (``--timeout-keep-alive``) but not a request head that
never ends, nor a body that stops arriving: a client that sends half a head and then nothing
holds its connection forever. This protocol adds, per connection:

- a head timeout: the request line and headers must be complete within ``header_timeout``
  seconds of the connection opening (or of the previous response); else a 408 (when part of a
  head arrived) and the connection is closed;
- a body timeout: a body that receives no bytes for ``body_timeout`` seconds is abandoned with a
  408 and the connection closed (the request's handler sees the client gone);
- a cap on open connections per worker: past ``max_connections``, a new connection is closed at
  once (no request of it is read), so a flood cannot exhaust file descriptors or memory;
- load shedding: when ``max_concurrency`` requests are in progress in this worker (ASGI tasks
  queued or running), a POST is answered 503 right here, as soon as its head is parsed: no task,
  no routing, no body read (its bytes are dropped as they arrive and the connection is kept).
  The answer comes from the hook the app registers with ``set_shed_answer`` (it counts the
  request). Requests queue in the event loop behind one another, so answering from the protocol
  is the only way the refusal does not wait behind the very backlog it refuses to join. GETs
  (health, metadata, metrics) are never shed: probes must see a busy worker as alive and ready.

- a lingering close: a response that closes the connection while the request's body is still
  arriving (a 413 for a body over the limit, whose rest is never read) does not close at once.
  Closing a socket with unread bytes makes the kernel send a reset, and a client still writing
  its body (Python's ``http.client`` and ``urllib`` write it all before reading) then gets
  ``ConnectionResetError`` instead of the 413 and its message. Like nginx's
  ``lingering_close``, the protocol shuts its write side (the response goes out whole, then
  EOF), reads and discards what still comes, and closes when the client closes, or after
  ``LINGER_LIMITS`` times the body limit (at least ``LINGER_MIN_BYTES``) in bytes or
  ``LINGER_SECONDS``, whichever comes first (a client 8x over the limit still reads its 413).
  uvicorn's own 400 for a request it cannot parse lingers too; TLS connections (which cannot
  shut one side) close at once. It is safe against slow bodies: a lingering connection holds
  no buffer (bytes are dropped as they arrive), no task (an unfinished request's task is told
  the client is gone) and no admission slot, it still counts against ``max_connections``, and
  it ends within ``LINGER_SECONDS`` however slowly its bytes trickle in; and against fast ones:
  past the byte bound it is closed, so an endless body is not read to its end.

``uvicorn.Config.http`` takes a protocol class; ``server.py`` gives it this one through
``functools.partial`` with the limits, which pickles into spawned workers.

Part of the HTTP transport, at its bottom: it knows uvicorn's protocol and bytes on the wire,
and nothing of routes, models or the service (the shed answer is a registered hook).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

log = logging.getLogger(__name__)

_BODY = b'{"error":"request timeout: the request did not arrive in time"}'
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


LINGER_SECONDS = 10.0
"""The longest a connection answered before its body arrived keeps reading (nginx: 30 s)."""
LINGER_LIMITS = 16
"""The most bytes of such a body read and dropped, in body limits ..."""
LINGER_MIN_BYTES = 64 * 1024 * 1024
"""... and at least this many (a 30 MB batch against a 1 MiB limit still reads its 413)."""
DEFAULT_BODY_LIMIT = 4 * 1024 * 1024
"""The body limit before the app registers its own (``set_body_limit``)."""


class _LingeringClose:
    """The transport a request's cycle writes to: ``close`` lingers (see the module docstring)
    while the request's body is still arriving; everything else is the real transport's."""

    def __init__(self, protocol: GuardedHttpToolsProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def close(self) -> None:
        self._protocol.close_or_linger()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        """Written, unless the connection lingers: then its write side is shut, and a response
        still being made (a pipelined request's) is dropped, as on a closed transport."""
        if not self._protocol.lingering:
            self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


ShedAnswer = Callable[[bytes, list[tuple[bytes, bytes]], bool], bytes]
"""``(path, headers, keep_alive) -> the whole HTTP response`` for a shed request."""

_shed_answer: ShedAnswer | None = None
_body_limit: Callable[[], int] | None = None


def set_shed_answer(answer: ShedAnswer | None) -> None:
    """Register (once per worker process, by the app) how shed requests are answered."""
    global _shed_answer  # noqa: PLW0603 (one app per worker process)
    _shed_answer = answer


def set_body_limit(limit: Callable[[], int] | None) -> None:
    """Register (once per worker process, by the app) the request body limit in bytes, which
    bounds how much of an answered body a lingering close reads."""
    global _body_limit  # noqa: PLW0603 (one app per worker process)
    _body_limit = limit


def linger_bytes() -> int:
    """How many bytes of an answered body a lingering close reads and drops at most."""
    limit = _body_limit() if _body_limit is not None else DEFAULT_BODY_LIMIT
    return max(LINGER_LIMITS * limit, LINGER_MIN_BYTES)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus head and body timeouts, a connection cap and load shedding."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        body_timeout: float,
        max_connections: int,
        max_concurrency: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.max_concurrency = max_concurrency
        self._timer: asyncio.TimerHandle | None = None
        self._head_started = False
        self._dropping_body = False
        self._message_complete = True
        self._lingering = False
        self._linger_left = 0

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._head_started:  # part of a request arrived: say why it is cut off
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()

    # -- the protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            log.warning(
                "closing a new connection: %d are open in this worker (--max-connections)",
                len(self.connections),
            )
            transport.close()
            return
        super().connection_made(transport)
        self._arm(self.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.transport is None:  # refused in connection_made
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self._lingering:  # the rest of a body that was answered: dropped
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self.transport.close()
            return
        super().data_received(data)

    # -- lingering close -------------------------------------------------------------------

    def close_or_linger(self) -> None:
        """Close; or, while the request's body is still arriving, linger: shut the write side
        (the response is complete), then drop what arrives until the client closes, or
        ``linger_bytes()`` or ``LINGER_SECONDS`` pass."""
        transport = self.transport
        if transport.is_closing():
            return
        if self._message_complete or self._lingering or not transport.can_write_eof():
            transport.close()
            return
        self._lingering = True
        self._linger_left = linger_bytes()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # uvicorn's 400 mid-request
            cycle.disconnected = True  # the app's receive() says so: its task ends now
            cycle.message_event.set()
        self._arm(LINGER_SECONDS, self._linger_over)
        transport.write_eof()
        self.flow.resume_reading()  # uvicorn pauses reading when a body is not being read

    @property
    def lingering(self) -> bool:
        return self._lingering

    def _linger_over(self) -> None:
        self._timer = None
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's 400 for a request it cannot parse, with a lingering close: the rest of
        its body may still be on its way."""
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(msg)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                msg.encode("ascii"),
            ]
        )
        self.transport.write(b"".join(content))
        self.close_or_linger()

    # While lingering, the parser may still be inside the packet that made the answer (a shed
    # request's small body, a pipelined request after it): nothing of it starts a request or
    # moves a timer, and the end of the message closes, since nothing is left unread.

    def on_message_begin(self) -> None:
        if self._lingering:
            return
        super().on_message_begin()
        self._message_complete = False
        self._head_started = True
        if self._timer is None:  # a keep-alive connection's next request
            self._arm(self.header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        if self._lingering:
            return
        self._head_started = False
        self._arm(self.body_timeout, self._body_timed_out)
        if self._overloaded():
            self._shed()
            return
        super().on_headers_complete()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.transport = _LingeringClose(self)  # type: ignore[assignment]

    def _overloaded(self) -> bool:
        return (
            self.max_concurrency > 0
            and len(self.tasks) >= self.max_concurrency  # this worker's requests in progress
            and _shed_answer is not None
            and self.parser.get_method() == b"POST"
            # a pipelined request waits behind its connection's previous one: answering it now
            # would put its response first
            and (self.cycle is None or self.cycle.response_complete)
        )

    def _shed(self) -> None:
        assert _shed_answer is not None
        keep_alive = (
            self.parser.get_http_version() != "1.0"
            and self.parser.should_keep_alive()
            and not self.expect_100_continue  # the client may never send the body we skip
        )
        path = httptools.parse_url(self.url).path
        response = _shed_answer(path, self.headers, keep_alive)
        # A cycle that is already complete: uvicorn drops the request's body as it arrives.
        cycle = RequestResponseCycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=False,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=keep_alive,
            on_response=self.on_response_complete,
        )
        cycle.response_started = cycle.response_complete = True
        self.cycle = cycle
        self.transport.write(response)
        if keep_alive:
            self._dropping_body = True  # on_message_complete readies the next request
        else:
            self._disarm()
            self.close_or_linger()

    def on_body(self, body: bytes) -> None:
        if self._lingering:
            return
        super().on_body(body)
        if self._timer is not None:
            self._arm(self.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._message_complete = True
        if self._lingering:  # the whole body has passed: nothing unread, close
            self._disarm()
            self.transport.close()
            return
        self._disarm()
        if self._dropping_body:  # a shed request's body has passed: on to the next request
            self._dropping_body = False
            self.on_response_complete()
            return
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._lingering:  # closing: no next request, no keep-alive timer
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        # Idle until the next request: uvicorn's keep-alive timeout bounds that; the head
        # timeout starts again with the next request's first byte.
        self._disarm()
