"""Creating tasks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks_core.errors import NotFound, ValidationFailed
from tasks_core.flow_definitions import FLOW_KIND, Limits, parse_flow
from tasks_core.ids import new_id
from tasks_core.lifecycle.publishing import enqueue
from tasks_core.records import Caller, TaskRecord
from tasks_core.status import Status
from tasks_core.storage.tasks import NewTask, get_task, insert_task
from tasks_core.store import Store
from tasks_core.usecases.idempotency import Replay, check_key, claim_key
from tasks_core.usecases.validation import (
    as_utc,
    check_name,
    check_sizes,
    check_times,
    parse_task_id,
)


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
    queue_timeout_seconds: float | None = None


def create_task(
    store: Store, caller: Caller, spec: TaskSpec, *, idempotency: Idempotency | None = None
) -> TaskRecord:
    """Store a task and, if it is `created`, publish it on its queue.

    A task created with any other status is a record of work done elsewhere
    (an external executor) and is never published. With ``idempotency``, a
    key already used with the same body returns that first task instead
    (see :func:`create_task_once`).
    """
    return create_task_once(store, caller, spec, idempotency=idempotency)[0]


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An ``Idempotency-Key`` and the digest of the request it came with."""

    key: str
    digest: bytes


def create_task_once(
    store: Store, caller: Caller, spec: TaskSpec, *, idempotency: Idempotency | None = None
) -> tuple[TaskRecord, bool]:
    """Like :func:`create_task`; also says whether the answer is a replay of an
    earlier create with the same idempotency key."""
    limits = Limits(
        max_steps=store.settings.flow_max_steps, max_depth=store.settings.flow_max_depth
    )
    check_sizes(store.settings, {"input": spec.input, "output": spec.output, "params": spec.params})
    new = _new_task(caller, spec, limits=limits)
    if idempotency is None:
        with store.statement() as conn:  # one statement: no transaction round trips
            task = insert_task(conn, new)
    else:
        check_key(idempotency.key)
        try:
            task = _insert_with_key(store, caller, new, idempotency)
        except _Replayed as replay:  # the new task was rolled back; answer the first
            with store.statement() as conn:
                first = get_task(conn, caller.organization_id, replay.task_id)
            assert first is not None, "a key is deleted with its task"
            return first, True
    if task is None:
        raise NotFound(f"parentId {str(spec.parent_id)!r} names no task")
    if task.status is Status.CREATED:
        return enqueue(store, task), False
    return task, False


class _Replayed(Exception):
    """Raised inside the create transaction to roll it back on a replay."""

    def __init__(self, task_id: uuid.UUID) -> None:
        self.task_id = task_id


def _insert_with_key(
    store: Store, caller: Caller, new: NewTask, idempotency: Idempotency
) -> TaskRecord | None:
    with store.transaction() as conn:
        task = insert_task(conn, new)
        if task is not None:
            claim = claim_key(
                conn, caller.organization_id, idempotency.key, idempotency.digest, task.id
            )
            if isinstance(claim, Replay):
                raise _Replayed(claim.task_id)
        return task


def _new_task(caller: Caller, spec: TaskSpec, *, limits: Limits) -> NewTask:
    check_name("kind", spec.kind)
    check_name("executorId", spec.executor_id)
    if spec.status is Status.QUEUED:
        raise ValidationFailed(
            "status 'queued' is set by the service when it publishes a task; "
            "create the task with status 'created' to have it queued"
        )
    started_at = as_utc(spec.started_at, field="startedAt")
    ended_at = as_utc(spec.ended_at, field="endedAt")
    check_times(started_at, ended_at)
    if spec.kind == FLOW_KIND and spec.status is Status.CREATED:
        check_flow_definition(spec.params, spec.target_id, limits=limits)
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
        queue_timeout_seconds=spec.queue_timeout_seconds,
    )


def check_flow_definition(params: dict[str, Any], target_id: str | None, *, limits: Limits) -> None:
    """A Flow that will run has its inline steps validated now, so a bad one is
    a 4xx at create time, not a failure at run time. A registered flow
    (``targetId``) is checked by the worker that knows it. A Flow created as a
    record (any other status) is never run and needs no steps."""
    if "steps" in params:
        if target_id:
            raise ValidationFailed(
                "a Flow takes params.steps or targetId (a registered flow), not both"
            )
        parse_flow(params["steps"], params.get("mode"), limits=limits)
    elif not target_id:
        raise ValidationFailed(
            "a Flow needs params.steps (a list of steps) or targetId naming a registered flow"
        )
