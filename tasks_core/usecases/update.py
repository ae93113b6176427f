"""Updating a task (``PUT /v1/tasks/{id}``): the reference's mutable fields only."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic.alias_generators import to_camel
from sqlalchemy import Connection

from tasks_core.errors import InvalidTransition, NotFound, ValidationFailed
from tasks_core.lifecycle.flow_engine import fan_in, lock_for_change
from tasks_core.lifecycle.publishing import enqueue_many
from tasks_core.records import Caller, TaskRecord
from tasks_core.status import Status, check_move, is_terminal
from tasks_core.storage.tasks import (
    append_event,
    get_task,
    is_ancestor,
    transition,
    update_fields,
)
from tasks_core.store import Store
from tasks_core.usecases.validation import (
    as_utc,
    check_name,
    check_sizes,
    check_times,
    parse_task_id,
)

# The fields PUT may change (snake_case); every other Task field is immutable.
MUTABLE_FIELDS = frozenset(
    {
        "description",
        "ended_at",
        "errors",
        "executor_id",
        "input",
        "output",
        "params",
        "parent_id",
        "started_at",
        "status",
        "title",
    }
)


def update_task(store: Store, caller: Caller, task_id: str, changes: dict[str, Any]) -> TaskRecord:
    """Apply ``changes`` (field -> new value, only the fields the caller sent)
    to one task in one transaction, logging the change and any status move."""
    unknown = set(changes) - MUTABLE_FIELDS
    if unknown:
        raise ValidationFailed(f"fields {sorted(unknown)} can not be updated")
    check_sizes(store.settings, changes)
    tid = parse_task_id(task_id)
    spawned: list[TaskRecord] = []
    with store.transaction() as conn:
        task = lock_for_change(conn, caller.organization_id, tid)
        if task is None:
            raise NotFound(f"task {task_id!r} not found")
        fields = _checked_fields(conn, caller, task, changes)
        target = changes.get("status")
        _check_cleared_times(Status(target) if target else task.status, fields)
        if target is not None:
            _check_status(task.status, Status(target))
        if fields:
            task = update_fields(conn, task.id, fields)
            append_event(
                conn,
                task.id,
                "updated",
                actor=caller.actor,
                detail={"fields": sorted(fields)},
            )
        if target is not None and Status(target) is not task.status:
            moved = transition(
                conn, task.id, Status(target), actor=caller.actor, sources={task.status}
            )
            assert moved is not None, "the row is locked; its status can not have changed"
            task = moved
            if task.flow_step_id is not None and is_terminal(task.status):
                spawned = fan_in(conn, task, actor=caller.actor)
    enqueue_many(store, spawned)
    return task


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
    for name in ("started_at", "ended_at"):
        if name in fields:
            fields[name] = as_utc(fields[name], field=to_camel(name))
    check_times(fields.get("started_at", task.started_at), fields.get("ended_at", task.ended_at))
    if fields.get("parent_id") is not None:
        fields["parent_id"] = _checked_parent(conn, caller, task.id, fields["parent_id"])
    return fields


def _checked_parent(conn: Connection, caller: Caller, task_id: uuid.UUID, value: Any) -> uuid.UUID:
    parent_id = parse_task_id(value, field="parentId")

    if get_task(conn, caller.organization_id, parent_id) is None:
        raise NotFound(f"parentId {str(value)!r} names no task")
    if is_ancestor(conn, task_id, parent_id):
        raise ValidationFailed(
            f"parentId {str(value)!r} is this task or one of its descendants; "
            "a task tree can not have a cycle"
        )
    return parent_id
