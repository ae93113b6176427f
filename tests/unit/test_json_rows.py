"""A recordset's rows as JSON (``lifecycle.sql.json_rows``): ids, times and
statuses become strings, every other value is sent as it is."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime, timedelta, timezone

from tasks_core.lifecycle.sql import json_rows
from tasks_core.status import Status


class Plain(enum.Enum):
    ONE = 1


def test_ids_times_and_statuses_become_strings_and_the_rest_stays() -> None:
    task_id = uuid.UUID("01a23eb4-a056-7224-8999-526de4ca25cf")
    at = datetime(2026, 12, 4, 1, 2, 3, 456789, tzinfo=UTC)
    east = datetime(2026, 12, 4, 3, 2, 3, tzinfo=timezone(timedelta(hours=2)))
    row = {"id": task_id, "status": Status.QUEUED, "started_at": at, "ended_at": east,
           "kind": "default", "max_attempts": 3, "timeout_seconds": 1.5, "stateful": True,
           "parent_id": None, "params": {"a": [1]}, "input": [1, "x"],
           "step": Plain.ONE}  # fmt: skip

    (ready,) = json_rows([row])

    assert ready == {
        "id": "01a23eb4-a056-7224-8999-526de4ca25cf",
        "status": "queued",
        "started_at": "2026-12-04T01:02:03.456789+00:00",
        "ended_at": "2026-12-04T03:02:03+02:00",
        "kind": "default",
        "max_attempts": 3,
        "timeout_seconds": 1.5,
        "stateful": True,
        "parent_id": None,
        "params": {"a": [1]},
        "input": [1, "x"],
        "step": "1",
    }
    assert type(ready["status"]) is str  # not the Status itself, which is a str too
