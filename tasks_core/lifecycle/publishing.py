"""Running a move against a store, and handing tasks to the broker after commit.

:func:`execute` is how a move is made: applied in one autocommitted
statement, or in one transaction (retried on a deadlock), and then what it
asks for is published. A new task is published after its commit and then
marked `queued`; if the broker can not be reached it stays `created`
(durable already) and the sweeper publishes it later.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from tasks_core.lifecycle.engine import apply, needs_transaction
from tasks_core.lifecycle.moves import Applied, MarkQueued, Move, Publish
from tasks_core.publisher import TaskMessage
from tasks_core.queues import queue_name
from tasks_core.status import Status
from tasks_core.store import Store
from tasks_core.task import TaskRecord

log = logging.getLogger(__name__)

PUBLISHER_ACTOR = "system:publisher"


def execute(store: Store, move: Move, *, relaxed: bool = False) -> Applied:
    """Apply ``move`` and publish what it asks for after commit.

    ``relaxed`` commits without waiting for the WAL flush, for single
    statements a database crash may undo harmlessly (see
    ``Store.relaxed_statement``)."""
    if needs_transaction(move):
        applied = store.atomic(lambda conn: apply(conn, move))
    else:
        applied = store.at_once(lambda conn: apply(conn, move), relaxed=relaxed)
    publish(store, applied.publish)
    return applied


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish did: the `created` tasks now marked `queued`, and the
    tasks the broker could not take (left to the sweeper)."""

    queued: dict[uuid.UUID, TaskRecord] = field(default_factory=dict)
    failed: frozenset[uuid.UUID] = frozenset()


def publish(store: Store, items: Sequence[Publish]) -> Published:
    """Publish committed tasks; mark the `created` ones that went out `queued`
    in one statement."""
    if not items:
        return Published()
    sent = [item.task for item in items if try_publish(store, item.task, countdown=item.countdown)]
    failed = frozenset(item.task.id for item in items) - {t.id for t in sent}
    created = tuple(t.id for t in sent if t.status is Status.CREATED)
    if not created:
        return Published(failed=failed)
    try:
        with store.relaxed_statement() as conn:
            marked = apply(conn, MarkQueued(created, actor=PUBLISHER_ACTOR))
    except DBAPIError:
        # Stored and published: only the `queued` mark is missing, which
        # nothing depends on (the claim takes `created` too).
        log.warning("%d published task(s) not marked queued", len(created), exc_info=True)
        return Published(failed=failed)
    return Published(queued=dict(marked.tasks), failed=failed)


def message_for(task: TaskRecord, prefix: str) -> TaskMessage:
    """The broker message of a task: its id and routing keys only."""
    return TaskMessage(
        task_id=str(task.id),
        queue=queue_name(task.kind, task.executor_id, prefix),
        kind=task.kind,
        executor_id=task.executor_id,
    )


def try_publish(store: Store, task: TaskRecord, *, countdown: float | None = None) -> bool:
    """Publish a task's message; False (logged) when the broker is unreachable.

    A failed publish loses nothing: the task is in PostgreSQL, waiting
    (`created` or `queued`), and the sweeper publishes it again later.
    """
    try:
        store.publisher.publish(message_for(task, store.settings.queue_prefix), countdown=countdown)
    except Exception:
        log.warning("publish of task %s failed; the sweeper will retry", task.id, exc_info=True)
        return False
    return True
