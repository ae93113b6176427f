"""Updating a task (``PUT /v1/tasks/{id}``): the reference's mutable fields only."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection

from tasks_core.errors import InvalidTransition, NotFound, ValidationFailed
from tasks_core.lifecycle.engine import apply, lock
from tasks_core.lifecycle.moves import Applied, Change, Update
from tasks_core.lifecycle.publishing import publish
from tasks_core.quotas import check_executor
from tasks_core.records import Caller
from tasks_core.status import Status, check_move, is_terminal
from tasks_core.storage.tasks import ancestry, get_task, lock_reparenting, subtree_height
from tasks_core.store import Store
from tasks_core.task import MAX_TREE_DEPTH, MUTABLE_FIELDS, TaskRecord
from tasks_core.usecases.validation import (
    as_utc,
    check_name,
    check_sizes,
    check_times,
    parse_task_id,
)


def update_task(store: Store, caller: Caller, task_id: str, changes: dict[str, Any]) -> TaskRecord:
    """Apply ``changes`` (field -> new value, only the fields the caller sent)
    to one task in one transaction, logging the change and any status move."""
    unknown = set(changes) - MUTABLE_FIELDS
    if unknown:
        raise ValidationFailed(f"fields {sorted(unknown)} can not be updated")
    check_sizes(store.settings, changes)
    tid = parse_task_id(task_id)

    def work(conn: Connection) -> Applied:
        if "parent_id" in changes:
            # Moves of parentId in one organization take turns (taken before any
            # row lock), so each one checks the tree as the one before it left it.
            lock_reparenting(conn, caller.organization_id)
        held = lock(conn, caller.organization_id, [tid])
        task = get_task(conn, caller.organization_id, tid) if held.ids else None
        if task is None:
            raise NotFound(f"task {task_id!r} not found")
        fields = _checked_fields(conn, caller, task, changes)
        target = Status(changes["status"]) if changes.get("status") else None
        _check_cleared_times(target or task.status, fields)
        if target is not None:
            _check_status(task.status, target)
        requeue = "executor_id" in fields and fields["executor_id"] != task.executor_id
        status = target if target is not task.status else None
        move = Change(task.id, fields, status, requeue=requeue)
        if not move.fields and move.status is None:
            return Applied(tasks={task.id: task})
        return apply(conn, Update((move,), actor=caller.actor), locked=held)

    applied = store.atomic(work)
    publish(store, applied.publish)
    return applied.tasks[tid]


def _check_cleared_times(status: Status, fields: dict[str, Any]) -> None:
    """A running task keeps its startedAt and a finished one its endedAt."""
    if "ended_at" in fields and fields["ended_at"] is None and is_terminal(status):
        raise ValidationFailed(f"endedAt can not be cleared on a {status.value} task")
    if "started_at" in fields and fields["started_at"] is None and status is Status.RUNNING:
        raise ValidationFailed("startedAt can not be cleared on a running task")


def _check_status(current: Status, target: Status) -> None:
    if target is current:
        return
    if target is Status.QUEUED:
        raise InvalidTransition(
            "status 'queued' is set only by the service when it publishes a task"
        )
    check_move(current, target)


def _checked_fields(
    conn: Connection, caller: Caller, task: TaskRecord, changes: dict[str, Any]
) -> dict[str, Any]:
    """The plain (non-status) columns to write, validated against the stored task."""
    fields = {k: v for k, v in changes.items() if k != "status"}
    if "params" in fields and fields["params"] is None:
        fields["params"] = {}
    if "errors" in fields and fields["errors"] is None:
        fields["errors"] = []
    check_name("executorId", fields.get("executor_id"))
    if fields.get("executor_id") != task.executor_id:  # a task may keep what it had
        check_executor(fields.get("executor_id"), caller.executors)
    for name, wire in (("started_at", "startedAt"), ("ended_at", "endedAt")):
        if name in fields:
            fields[name] = as_utc(fields[name], field=wire)
    check_times(fields.get("started_at", task.started_at), fields.get("ended_at", task.ended_at))
    if "parent_id" in fields:
        parent = fields["parent_id"]
        parent_id = parse_task_id(parent, field="parentId") if parent is not None else None
        if parent_id != task.parent_id:  # the same parent again is no move
            _check_parent(conn, caller, task, parent_id)
        fields["parent_id"] = parent_id
    return fields


def _check_parent(
    conn: Connection, caller: Caller, task: TaskRecord, parent_id: uuid.UUID | None
) -> None:
    """A new parent: the task must not be a Flow's step, and the tree must stay
    a tree (no cycle) of at most ``MAX_TREE_DEPTH`` levels."""
    if task.flow_step_id is not None:
        raise ValidationFailed(
            f"parentId can not be changed: the task runs step {task.flow_step_id!r} of "
            f"Flow {task.parent_id}, and its Flow waits for it"
        )
    if parent_id is None:
        return
    if get_task(conn, caller.organization_id, parent_id) is None:
        raise NotFound(f"parentId {str(parent_id)!r} names no task")
    above = ancestry(conn, parent_id)
    if task.id == parent_id or task.id in above.ancestors:
        raise ValidationFailed(
            f"parentId {str(parent_id)!r} is this task or one of its descendants; "
            "a task tree can not have a cycle"
        )
    depth = above.depth + subtree_height(conn, task.id)
    if depth > MAX_TREE_DEPTH:
        raise ValidationFailed(
            f"parentId {str(parent_id)!r} would make the tree {depth} levels deep; "
            f"a task tree may have at most {MAX_TREE_DEPTH} levels"
        )
