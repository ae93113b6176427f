"""Cancelling a task and its whole subtree."""

from __future__ import annotations

from tasks_core.errors import InvalidTransition, NotFound
from tasks_core.lifecycle.flow_engine import fan_in, lock_for_change
from tasks_core.lifecycle.publishing import enqueue_many
from tasks_core.records import Caller, TaskRecord
from tasks_core.status import Status, is_terminal
from tasks_core.storage.tasks import cancel_subtree, get_task
from tasks_core.store import Store
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
    spawned: list[TaskRecord] = []
    with store.transaction() as conn:
        task = lock_for_change(conn, caller.organization_id, tid)
        if task is None:
            raise NotFound(f"task {task_id!r} not found")
        if is_terminal(task.status) and task.status is not Status.CANCELLED:
            raise InvalidTransition(
                f"task {task_id} is already {task.status.value} and can not be cancelled"
            )
        cancel_subtree(conn, caller.organization_id, tid, actor=caller.actor)
        if task.flow_step_id is not None and task.status is not Status.CANCELLED:
            cancelled = get_task(conn, caller.organization_id, tid)
            assert cancelled is not None
            spawned = fan_in(conn, cancelled, actor=caller.actor)
    enqueue_many(store, spawned)
    return get_task_tree(store, caller, task_id, depth=1)
