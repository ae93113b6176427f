"""When recovering a task fails: the sweeper's answer to a poisoned task.

A batch of recoveries runs as one statement or one transaction, the fast
path; when it fails, :func:`each_alone` runs it in halves down to single
tasks, so that only the tasks that fail alone are left out. Those are
skipped by :func:`skip_failed`: logged with their id, their failure counted
on their row (and logged there as `recovery_error`), and a task that failed
``RECOVERY_MAX_FAILURES`` times in a row fails with ``recovery_failed``, a
move of its own that fans in like any other failure. A database out of
reach is nobody's fault: it blames no task.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from tasks_core.lifecycle.engine import count_recovery_failures
from tasks_core.lifecycle.moves import FailRecovery, Unrecoverable
from tasks_core.lifecycle.publishing import execute
from tasks_core.store import Store, is_unavailable
from tasks_core.task import TaskRecord

log = logging.getLogger(__name__)

SWEEPER = "system:sweeper"

# Counts of a sweep, per action (see tasks_core.recovery).
Tally = Counter[str]
RECOVERY_FAILED = "recovery_failed"

T = TypeVar("T")


def each_alone(
    items: Sequence[T], run: Callable[[Sequence[T]], object]
) -> list[tuple[T, Exception]]:
    """Run ``run`` on the whole batch (the fast path: one statement or one
    transaction); if it fails, on each half, down to single items, so that
    only the items that fail alone are left out. Returns them with their
    errors. The database being out of reach is no item's fault: it propagates.

    ``run`` must be all or nothing (a transaction, or a savepoint)."""
    if not items:
        return []
    try:
        run(items)
        return []
    except Exception as exc:
        if is_unavailable(exc):
            raise
        if len(items) == 1:
            return [(items[0], exc)]
    half = len(items) // 2
    return each_alone(items[:half], run) + each_alone(items[half:], run)


@dataclass(frozen=True, slots=True)
class Seen:
    """A task as the sweeper picked it: what giving up on it needs."""

    id: uuid.UUID
    lease: datetime | None = None
    is_step: bool = True  # unknown: then its Flow chain is locked, to be sure

    @classmethod
    def of(cls, task: TaskRecord) -> Seen:
        return cls(task.id, task.lease_expires_at, task.flow_step_id is not None)


def describe(exc: Exception) -> str:
    """The error in a line (the database's message, without the statement)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"[:500]


def skip_failed(store: Store, action: str, failures: Sequence[tuple[Seen, Exception]]) -> Tally:
    """Tasks whose recovery (``action``) failed alone: each is logged, its
    failure counted on its row, and those that failed ``RECOVERY_MAX_FAILURES``
    times in a row fail with ``recovery_failed`` (fanning in to their Flow)."""
    tally: Tally = Counter()
    if not failures:
        return tally
    for seen, exc in failures:
        log.warning("sweep: %s of task %s failed; skipped: %s", action, seen.id, describe(exc))
    tally[f"{action}_skipped"] += len(failures)
    errors = {seen.id: describe(exc) for seen, exc in failures}
    picked = {seen.id: seen for seen, _ in failures}
    counts: dict[uuid.UUID, int] = {}

    def count(part: Sequence[uuid.UUID]) -> None:
        mine = {i: errors[i] for i in part}
        counts.update(
            store.atomic(
                lambda conn: count_recovery_failures(conn, mine, action=action, actor=SWEEPER)
            )
        )

    for task_id, exc in each_alone(list(errors), count):
        log.warning("sweep: could not count the failure of task %s: %s", task_id, describe(exc))
    bound = store.settings.recovery_max_failures
    spent = [
        Unrecoverable(i, picked[i].lease, action, errors[i], is_step=picked[i].is_step)
        for i, n in counts.items()
        if n >= bound
    ]

    def give_up(part: Sequence[Unrecoverable]) -> None:
        failed = execute(store, FailRecovery(tuple(part), bound, actor=SWEEPER)).moved
        tally[RECOVERY_FAILED] += failed

    for gone, exc in each_alone(spent, give_up):
        log.warning("sweep: could not fail task %s: %s", gone.task_id, describe(exc))
    return tally
