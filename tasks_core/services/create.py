"""Creating tasks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks_core.errors import NotFound, ValidationFailed
from tasks_core.ids import new_id
from tasks_core.records import Caller, TaskRecord
from tasks_core.repository import NewTask, insert_task
from tasks_core.services.enqueue import enqueue
from tasks_core.services.store import Store
from tasks_core.services.validation import (
    as_utc,
    check_name,
    check_times,
    parse_task_id,
)
from tasks_core.status import Status


@dataclass(frozen=True)
class TaskSpec:
    """What a caller asks for when creating a task (the reference's create fields)."""

    kind: str
    status: Status = Status.CREATED
    app_id: str | None = None
    description: str | None = None
    executor_id: str | None = None
    target_id: str | None = None
    title: str | None = None
    input: Any = None
    output: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    parent_id: str | uuid.UUID | None = None
    stateful: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    max_attempts: int = 1
    timeout_seconds: float | None = None


def create_task(store: Store, caller: Caller, spec: TaskSpec) -> TaskRecord:
    """Store a task and, if it is `created`, publish it on its queue.

    A task created with any other status is a record of work done elsewhere
    (an external executor) and is never published.
    """
    new = _new_task(caller, spec)
    with store.statement() as conn:
        task = insert_task(conn, new)
    if task is None:
        raise NotFound(f"parentId {str(spec.parent_id)!r} names no task")
    if task.status is Status.CREATED:
        return enqueue(store, task)
    return task


def _new_task(caller: Caller, spec: TaskSpec) -> NewTask:
    check_name("kind", spec.kind)
    check_name("executorId", spec.executor_id)
    if spec.status is Status.QUEUED:
        raise ValidationFailed(
            "status 'queued' is set by the service when it publishes a task; "
            "create the task with status 'created' to have it queued"
        )
    started_at, ended_at = as_utc(spec.started_at), as_utc(spec.ended_at)
    check_times(started_at, ended_at)
    if spec.max_attempts < 1:
        raise ValidationFailed(f"maxAttempts must be at least 1, not {spec.max_attempts}")
    if spec.timeout_seconds is not None and spec.timeout_seconds <= 0:
        raise ValidationFailed(f"timeoutSeconds must be positive, not {spec.timeout_seconds}")
    parent_id = parse_task_id(spec.parent_id, field="parentId") if spec.parent_id else None
    task_id = new_id()
    return NewTask(
        id=task_id,
        organization_id=caller.organization_id,
        author_id=str(caller.key_id),
        actor=caller.actor,
        kind=spec.kind,
        status=spec.status,
        parent_id=parent_id,
        state_id=new_id() if spec.stateful else None,
        state_name=f"task {task_id}" if spec.stateful else None,
        app_id=spec.app_id,
        executor_id=spec.executor_id,
        target_id=spec.target_id,
        title=spec.title,
        description=spec.description,
        input=spec.input,
        output=spec.output,
        params=spec.params,
        started_at=started_at,
        ended_at=ended_at,
        max_attempts=spec.max_attempts,
        timeout_seconds=spec.timeout_seconds,
    )
