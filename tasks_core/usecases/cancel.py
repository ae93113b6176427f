"""Cancelling a task and its whole subtree."""

from __future__ import annotations

from sqlalchemy import Connection

from tasks_core.errors import InvalidTransition, NotFound
from tasks_core.lifecycle.engine import apply, lock
from tasks_core.lifecycle.moves import Applied, Cancel
from tasks_core.lifecycle.publishing import publish
from tasks_core.records import Caller
from tasks_core.status import Status, is_terminal
from tasks_core.storage.tasks import get_task
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.usecases.read import get_task_tree
from tasks_core.usecases.validation import parse_task_id


def cancel_task(store: Store, caller: Caller, task_id: str) -> TaskRecord:
    """Cancel a task and every non-terminal descendant, in one transaction.

    Cancelling a task that is already `cancelled` changes nothing and answers
    the task (clients may retry); a `completed` or `failed` task can not be
    cancelled (409). Cancelling one step of a running Flow fails that Flow
    (unless the step has continueOnError) like any step that does not complete.
    """
    tid = parse_task_id(task_id)

    def work(conn: Connection) -> Applied:
        held = lock(conn, caller.organization_id, [tid])
        task = get_task(conn, caller.organization_id, tid) if held.ids else None
        if task is None:
            raise NotFound(f"task {task_id!r} not found")
        if is_terminal(task.status) and task.status is not Status.CANCELLED:
            raise InvalidTransition(
                f"task {task_id} is already {task.status.value} and can not be cancelled"
            )
        move = Cancel(caller.organization_id, (tid,), actor=caller.actor)
        return apply(conn, move, locked=held)

    publish(store, store.atomic(work).publish)
    return get_task_tree(store, caller, task_id, depth=1).task
