"""Handing a stored task to the broker: publish after commit, then mark it `queued`."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError

from tasks_core.publisher import TaskMessage
from tasks_core.queues import queue_name
from tasks_core.records import TaskRecord
from tasks_core.status import Status
from tasks_core.storage.tasks import get_task, mark_queued, transition
from tasks_core.store import Store

log = logging.getLogger(__name__)

PUBLISHER_ACTOR = "system:publisher"


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


def enqueue(store: Store, task: TaskRecord) -> TaskRecord:
    """Publish a committed `created` task and move it to `queued`.

    If the broker is unreachable the task stays `created` (it is durable
    already) and the sweeper publishes it later; the caller still gets the
    task. A worker may claim the task before it is marked `queued`: the claim
    accepts `created` too, and the guarded move below then changes nothing.
    """
    if not try_publish(store, task):
        return task
    try:
        with store.relaxed_statement() as conn:
            moved = transition(
                conn, task.id, Status.QUEUED, actor=PUBLISHER_ACTOR, sources={Status.CREATED}
            )
            if moved is not None:
                return moved
            return get_task(conn, task.organization_id, task.id) or task
    except DBAPIError:
        # Stored and published: only the `queued` mark is missing, which
        # nothing depends on (the claim takes `created` too).
        log.warning("task %s published but not marked queued", task.id, exc_info=True)
        return task


def enqueue_many(store: Store, tasks: list[TaskRecord]) -> None:
    """Publish committed `created` tasks (a Flow's new steps) and mark the
    published ones `queued` in one statement. Tasks whose publish fails stay
    `created` for the sweeper."""
    published = [task.id for task in tasks if try_publish(store, task)]
    if published:
        try:
            with store.relaxed_statement() as conn:
                mark_queued(conn, published, actor=PUBLISHER_ACTOR)
        except DBAPIError:  # published already; see enqueue()
            log.warning("%d published tasks not marked queued", len(published), exc_info=True)
