"""Running a move against a store, and handing tasks to the broker after commit.

:func:`execute` is how a move is made: applied in one autocommitted
statement, or in one transaction (retried on a deadlock), and then what it
asks for is published. A task a Flow spawns is published after its commit
and then marked `queued`; if the broker can not be reached it stays
`created` (durable already) and the sweeper publishes it later.

A create costs one statement: :func:`create` stores its tasks `queued` at
once and publishes them right after the commit (all in one broker round
trip), so `queued` means "committed and handed to the broker". Those the
broker refuses are moved back to `created` (a second statement, only then).
The one exception: a single create whose queue is behind may have its
message held for PUBLISH_LINGER_SECONDS, to go with the next creates of the
queue as a run set (``tasks_core.linger``); a held message the broker later
refuses leaves its task `queued`, for the sweeper. A process that dies
between the commit and the publish (or while it holds messages) leaves its
tasks `queued` without a message; the sweeper republishes them after
REPUBLISH_AFTER_SECONDS, as it does any waiting task whose message was lost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from tasks_core.lifecycle.engine import apply, needs_transaction
from tasks_core.lifecycle.moves import Applied, Create, MarkQueued, Move, Publish, PublishFailed
from tasks_core.publisher import BatchPublisher, TaskMessage
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
    # Those to run now in one round trip (run sets, for a Flow's steps);
    # those to run later (a retry's delay) each with its countdown.
    now = [item.task for item in items if not item.countdown]
    refused = unsent(store, now) if now else frozenset()
    sent = [task for task in now if task.id not in refused]
    sent += [
        item.task
        for item in items
        if item.countdown and try_publish(store, item.task, countdown=item.countdown)
    ]
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


def create(
    store: Store,
    move: Create,
    *,
    inside: Callable[[Connection, Applied], None] | None = None,
) -> tuple[Applied, dict[uuid.UUID, TaskRecord]]:
    """Insert ``move``'s tasks in one statement, the `created` ones stored
    `queued`, and publish them after the commit; also gives each published
    (or refused) task as it now is. With ``inside`` the insert runs in a
    transaction of its own, and ``inside`` is called in it before the commit
    (raise to roll back)."""
    queued = Create(move.tasks, actor=move.actor, queued_by=PUBLISHER_ACTOR)
    if inside is None:
        with store.statement() as conn:  # one statement: no transaction round trips
            applied = apply(conn, queued)
    else:

        def work(conn: Connection) -> Applied:
            done = apply(conn, queued)
            inside(conn, done)
            return done

        applied = store.atomic(work)
    return applied, publish_created(store, [item.task for item in applied.publish])


def publish_created(store: Store, tasks: Sequence[TaskRecord]) -> dict[uuid.UUID, TaskRecord]:
    """Publish new tasks stored `queued` (one broker round trip when the
    publisher takes batches); those the broker refused go back to `created`.
    Gives each task as it now is."""
    now = {t.id: t for t in tasks}
    refused = unsent(store, tasks, coalesce=True)
    failed = tuple(t.id for t in tasks if t.id in refused)
    if not failed:
        return now
    try:
        with store.relaxed_statement() as conn:
            back = apply(conn, PublishFailed(failed, actor=PUBLISHER_ACTOR))
    except DBAPIError:
        # Stored, not published, and still `queued`: the sweeper republishes
        # it all the same; only the status overstates it until then.
        log.warning("%d unpublished task(s) left queued", len(failed), exc_info=True)
        return now
    return {**now, **back.tasks}


def unsent(
    store: Store, tasks: Sequence[TaskRecord], *, coalesce: bool = False
) -> frozenset[uuid.UUID]:
    """Publish every task's message in one round trip (one by one for a
    publisher that takes no batches); the ids the broker did not take (logged).
    ``coalesce``: new tasks, whose single message may wait a moment for
    others of its queue (``tasks_core.linger``)."""
    publisher = store.publisher
    if len(tasks) == 1 or not isinstance(publisher, BatchPublisher):
        # One message: a plain publish costs less than kombu's batch and its pipeline.
        return frozenset(t.id for t in tasks if not try_publish(store, t, coalesce=coalesce))
    prefix = store.settings.queue_prefix
    try:
        publisher.publish_many([message_for(task, prefix) for task in tasks])
    except Exception:
        log.warning(
            "publish of %d task(s) failed; the sweeper will retry", len(tasks), exc_info=True
        )
        return frozenset(t.id for t in tasks)
    return frozenset()


def message_for(task: TaskRecord, prefix: str) -> TaskMessage:
    """The broker message of a task: its id and routing keys only."""
    return TaskMessage(
        task_id=str(task.id),
        queue=queue_name(task.kind, task.executor_id, prefix),
        kind=task.kind,
        executor_id=task.executor_id,
    )


def try_publish(
    store: Store, task: TaskRecord, *, countdown: float | None = None, coalesce: bool = False
) -> bool:
    """Publish a task's message; False (logged) when the broker is unreachable.

    A failed publish loses nothing: the task is in PostgreSQL, waiting
    (`created` or `queued`), and the sweeper publishes it again later.
    """
    try:
        message = message_for(task, store.settings.queue_prefix)
        store.publisher.publish(message, countdown=countdown, coalesce=coalesce)
    except Exception:
        log.warning("publish of task %s failed; the sweeper will retry", task.id, exc_info=True)
        return False
    return True
