"""Request ids: UUIDv7 layout (RFC 9562, section 5.7), their time, and which client ids are kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prediction_log.ids import MAX_REQUEST_ID, new_request_id, request_id_from, time_of

WHEN = datetime(2026, 12, 3, 19, 45, 55, 776000, tzinfo=UTC)


def test_a_new_id_is_a_version_7_uuid_carrying_its_time_to_the_millisecond() -> None:
    made = new_request_id(int(WHEN.timestamp() * 1e9))
    parsed = uuid.UUID(made)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert made == str(parsed)  # canonical: 36 characters, lower case
    assert time_of(made) == WHEN
    assert int(made.replace("-", "")[:12], 16) == int(WHEN.timestamp() * 1000)


def test_ids_made_later_sort_later() -> None:
    earlier = new_request_id(int(WHEN.timestamp() * 1e9))
    later = new_request_id(int(WHEN.timestamp() * 1e9) + 1_000_000)
    assert earlier < later


@pytest.mark.parametrize(
    "request_id",
    [
        "my-id-1",
        "",
        str(uuid.uuid4()),
        "ffffffff-ffff-7fff-bfff-ffffffffffff",  # a v7 layout, in the year 10889
        "e677d21e-0740-7000-8000-000000000000",  # year 9999
        "00000000-0000-7000-8000-000000000000",  # 1970
        "01a23d71-2840-7e2c-c5b3-95b792455c30",  # variant bits not RFC 9562's
    ],
)
def test_any_other_id_has_no_time(request_id: str) -> None:
    assert time_of(request_id) is None


@given(st.text(max_size=300))
def test_time_of_never_raises_on_client_text(text: str) -> None:
    time_of(text)


def test_a_client_id_is_kept_unless_empty_or_too_long() -> None:
    assert request_id_from("abc") == "abc"
    assert request_id_from("x" * MAX_REQUEST_ID) == "x" * MAX_REQUEST_ID
    for replaced in (None, "", "x" * (MAX_REQUEST_ID + 1)):
        made = request_id_from(replaced)
        assert time_of(made) is not None
