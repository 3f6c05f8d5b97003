"""Request ids that say when they were made: UUIDv7 (RFC 9562, section 5.7).

The first 48 bits are the Unix time in milliseconds, so an id the server made names the hour
its prediction record is filed under, and a lookup reads that hour only. Python 3.11 has no
``uuid.uuid7`` (it came in 3.14); this is the RFC's layout: 48 bits of time, the version (7),
12 random bits, the variant (0b10) and 62 random bits.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime

_EARLIEST_MS = 1_577_836_800_000
"""2020-01-01T00:00:00Z: no id this server made is older."""
_FUTURE_MS = 86_400_000
"""A day past now: room for a client's clock running fast, not for nonsense."""


def new_request_id(now_ns: int | None = None) -> str:
    """A new UUIDv7 in its canonical text form (36 characters, lower case)."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    random_bits = int.from_bytes(os.urandom(10), "big")  # 80 bits; 74 are used
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= (random_bits >> 62 & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62  # the RFC 9562 variant
    value |= random_bits & 0x3FFF_FFFF_FFFF_FFFF  # rand_b: 62 bits
    return str(uuid.UUID(int=value))


def time_of(request_id: str) -> datetime | None:
    """When a UUIDv7 request id was made (UTC, to the millisecond); None for any other id
    (a client's own ``x-request-id``, a UUIDv4, free text)."""
    try:
        parsed = uuid.UUID(request_id)
    except (ValueError, TypeError, AttributeError):
        return None
    if parsed.version != 7 or parsed.variant != uuid.RFC_4122:
        return None
    millis = parsed.int >> 80
    # A client may send any id, a v7 one with an absurd time included: a time outside what a
    # server could have made is no time (the id is then searched like any client's).
    if not _EARLIEST_MS <= millis <= time.time_ns() // 1_000_000 + _FUTURE_MS:
        return None
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


MAX_REQUEST_ID = 256
"""Longest client ``x-request-id`` kept (as feedback accepts it); a longer or empty one is
replaced by a UUIDv7 the server makes (and the response carries that one)."""


def request_id_from(given: str | None) -> str:
    """The request id of a request: the client's own when it sent a usable one (1 to 256
    characters), else a new UUIDv7."""
    if given and len(given) <= MAX_REQUEST_ID:
        return given
    return new_request_id()
