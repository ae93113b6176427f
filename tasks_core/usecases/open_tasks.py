"""The open-task quota of an organization (``MAX_OPEN_TASKS_PER_ORG``).

A create must not cost a query more, nor make every create of an
organization update one hot row. So each process keeps the count of every
organization it creates tasks for, read from PostgreSQL at most once a
second (a count bounded by the limit, on the ``(organization_id, status)``
index) and raised by its own creates in between.

The slack, documented in the README: within that second, tasks created by
other API processes are not yet counted (an organization may pass the limit
by what the other processes create in a second), and tasks that ended are
still counted (a create may be refused for up to a second after the count
went under). Steps a Flow spawns are counted when the count is read, but
never refused: a started Flow must be able to finish.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from tasks_core.errors import QuotaExceeded
from tasks_core.storage.tasks import count_open_tasks
from tasks_core.store import Store

# How old a count may be before it is read again.
REFRESH_SECONDS = 1.0


@dataclass
class _Count:
    value: int
    read_at: float


_counts: dict[tuple[str, uuid.UUID], _Count] = {}
_lock = threading.Lock()


def check_open_tasks(
    store: Store, organization_id: uuid.UUID, *, adding: int = 1, may_read: bool = True
) -> bool:
    """Raise :class:`QuotaExceeded` if ``adding`` more tasks would take the
    organization past ``MAX_OPEN_TASKS_PER_ORG``; else count them (True).
    With ``may_read`` False (a caller on an event loop) nothing is checked
    when the count must be read again first: False, and the caller checks
    again where it may wait on the database."""
    limit = store.settings.max_open_tasks_per_org
    if limit <= 0:
        return True
    key = (store.settings.database_url, organization_id)
    with _lock:
        count = _counts.get(key)
    now = time.monotonic()
    if count is None or now - count.read_at >= REFRESH_SECONDS:
        if not may_read:
            return False
        with store.statement() as conn:
            count = _Count(count_open_tasks(conn, organization_id, limit=limit + 1), now)
    with _lock:
        _counts[key] = count
        if count.value + adding > limit:
            raise QuotaExceeded(
                f"this organization has {count.value} open tasks (created, queued, running "
                f"or waiting); the limit is {limit} (MAX_OPEN_TASKS_PER_ORG). Wait for some "
                "to finish, or cancel some, then retry",
                retry_after=max(1, round(REFRESH_SECONDS)),
            )
        count.value += adding
    return True
