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
    return datetime.fromtimestamp((parsed.int >> 80) / 1000, tz=UTC)
