from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tasks_core.errors import ValidationFailed
from tasks_core.ids import id_time, new_id
from tasks_core.usecases.read import decode_cursor, encode_cursor


def test_ids_are_uuid7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_an_id_carries_its_creation_time() -> None:
    before = time.time()
    made = id_time(new_id()).timestamp()
    assert before - 0.01 <= made <= time.time() + 0.01
    assert id_time(new_id()).tzinfo == UTC
    assert id_time(new_id()) <= datetime.now(UTC)


def test_cursor_round_trips_and_is_opaque() -> None:
    task_id = new_id()
    cursor = encode_cursor(task_id)
    assert str(task_id) not in cursor
    assert decode_cursor(cursor) == task_id


@pytest.mark.parametrize("garbage", ["x", "!!!!", "AAAA", "dGFza3MtY29yZQ"])
def test_a_cursor_we_did_not_make_is_refused(garbage: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        decode_cursor(garbage)
    assert raised.value.code == "invalid_cursor"
