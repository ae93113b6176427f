"""Wire shapes of the API: camelCase, exactly the reference's field names.

These exist only at the HTTP edge; services take and return snake_case
domain values (``TaskSpec``, ``TaskRecord``), converted here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    StrictBool,
    StrictInt,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from tasks_core.records import EventRecord, StateRecord
from tasks_core.status import Status
from tasks_core.task import IMMUTABLE_FIELDS as TASK_IMMUTABLE_FIELDS
from tasks_core.task import TASK_FIELDS, TaskRecord, TaskSpec


def _timestamp_string(value: Any) -> Any:
    """A timestamp on the wire is an RFC 3339 string, never a number or a
    numeric string (no Unix time)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise PydanticCustomError(
        "datetime_type", "must be an RFC 3339 date-time string, e.g. 2026-01-01T12:00:00Z"
    )


Timestamp = Annotated[datetime, BeforeValidator(_timestamp_string)]
Seconds = Annotated[float, Strict()]
Text = Annotated[str, Field(max_length=10_000)]
ShortText = Annotated[str, Field(max_length=256)]


class WireModel(BaseModel):
    """camelCase on the wire; unknown fields are an error, never ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")


class ErrorItem(WireModel):
    """One error of a failed task."""

    code: Annotated[str, Field(min_length=1, max_length=256)]
    message: Text


class ErrorResponse(BaseModel):
    """The body of every error response."""

    code: str = Field(description="Stable machine-readable code, e.g. not_found.")
    message: str = Field(description="What went wrong, naming the offending field.")


class TaskCreate(WireModel):
    """Body of ``POST /v1/tasks``. Only ``kind`` is required."""

    kind: ShortText = Field(description="Type of task, e.g. default, CallAction, Flow.")
    app_id: ShortText | None = Field(default=None, description="App associated with the task.")
    description: Text | None = None
    ended_at: Timestamp | None = Field(default=None, description="When execution completed.")
    executor_id: ShortText | None = Field(
        default=None, description="Which executor (worker pool) should run the task."
    )
    input: JsonValue = Field(default=None, description="Input data, any JSON value.")
    output: JsonValue = Field(default=None, description="Result data, any JSON value.")
    params: dict[str, JsonValue] | None = Field(
        default=None, description="Task-specific parameters as key-value pairs."
    )
    parent_id: ShortText | None = Field(default=None, description="Parent task, same organization.")
    started_at: Timestamp | None = Field(default=None, description="When execution began.")
    stateful: StrictBool = Field(default=False, description="Create and link a state object.")
    status: Status = Field(default=Status.CREATED, description="Initial status (default created).")
    target_id: ShortText | None = Field(default=None, description="Target resource or action.")
    title: Text | None = None
    max_attempts: StrictInt = Field(
        default=1, ge=1, le=100, description="Runs allowed before a failure is final (retries + 1)."
    )
    timeout_seconds: Seconds | None = Field(
        default=None,
        gt=0,
        description=(
            "A run longer than this fails with `timeout` (at most MAX_TIMEOUT_SECONDS; "
            "without it a run may last DEFAULT_TIMEOUT_SECONDS)."
        ),
    )
    queue_timeout_seconds: Seconds | None = Field(
        default=None,
        gt=0,
        le=604_800,
        description="A task still waiting for a worker after this long fails with `queue_timeout`.",
    )

    def to_spec(self) -> TaskSpec:
        """The domain value the create service takes."""
        values = {name: getattr(self, name) for name in _SPEC_FIELDS}
        return TaskSpec(**{**values, "params": dict(self.params or {})})


_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(TaskSpec))


class TaskBatchCreate(WireModel):
    """Body of ``POST /v1/tasks/batch``: create bodies, created in this order."""

    tasks: list[TaskCreate] = Field(
        description="1 to BATCH_MAX create bodies (each as for POST /v1/tasks); "
        "the whole body must fit in MAX_BODY_BYTES.",
    )


# Task fields PUT must refuse by name: those shown but not changeable, and
# create's `stateful` (the reference: they can not change).
IMMUTABLE_FIELDS = (
    *(f.wire for f in TASK_FIELDS if f.name in TASK_IMMUTABLE_FIELDS),
    "stateful",
)


class TaskUpdate(WireModel):
    """Body of ``PUT /v1/tasks/{taskId}``: only the fields sent are changed."""

    description: Text | None = None
    ended_at: Timestamp | None = None
    errors: list[ErrorItem] | None = None
    executor_id: ShortText | None = None
    input: JsonValue = None
    output: JsonValue = None
    params: dict[str, JsonValue] | None = None
    parent_id: ShortText | None = None
    started_at: Timestamp | None = None
    status: Status | None = None
    title: Text | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_immutable(cls, data: Any) -> Any:
        if isinstance(data, dict):
            named = [name for name in IMMUTABLE_FIELDS if name in data]
            if named:
                raise PydanticCustomError(
                    "immutable_field",
                    "{fields} can not be changed after a task is created",
                    {"fields": ", ".join(named)},
                )
        return data

    def changes(self) -> dict[str, Any]:
        """Field -> value (snake_case) for exactly the fields the caller sent."""
        values: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name == "errors" and value is not None:
                value = [e.model_dump() for e in value]
            if name == "status" and value is not None:
                value = value.value
            values[name] = value
        return values


def _wire_type(hint: Any) -> Any:
    """The type of a task's field on the wire: ids are strings, JSON is any JSON."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in members
    base = next(m for m in members if m is not type(None))
    if base is uuid.UUID:
        base = str
    elif base is Any:
        return JsonValue
    elif typing.get_origin(base) is dict:
        base = dict[str, JsonValue]
    elif typing.get_origin(base) is list:
        base = list[ErrorItem]
    elif typing.get_origin(base) is tuple:  # children
        base = list["TaskOut"]
    return base | None if optional else base


class _Shown(WireModel):
    """Base of the answers' models (TaskOut is built from the task declaration)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


def _task_out_model() -> type[BaseModel]:
    """The API's Task: every field of the declaration that the API shows."""
    fields: dict[str, Any] = {
        f.name: (_wire_type(f.type), Field(alias=f.wire, description=f.role.doc))
        for f in TASK_FIELDS
        if f.role.out
    }
    return create_model(
        "TaskOut",
        __base__=_Shown,
        __module__=__name__,
        __doc__="A task, with its children nested as deep as asked.",
        **fields,
    )


if TYPE_CHECKING:

    class TaskOut(_Shown):
        """A task, with its children nested as deep as asked."""

else:
    TaskOut = _task_out_model()
    TaskOut.model_rebuild()  # its children are TaskOut too


class TaskTreeOut(TaskOut):
    """The answer of ``GET /v1/tasks/{taskId}``: a Task, and (beyond the
    reference) ``truncated`` when children were left out."""

    truncated: bool | None = Field(
        default=None,
        description="Present (true) only when the answer left children out: past "
        "TREE_NODES_MAX nested tasks in all, or CHILDREN_MAX under one task. Read the "
        "rest with GET /v1/tasks?parentId=<id>, or a subtree by its own id.",
    )


class TaskBatchOut(BaseModel):
    """The answer of ``POST /v1/tasks/batch``: the tasks, in the order sent."""

    tasks: list[TaskOut]


class TaskPageOut(BaseModel):
    """A page of tasks, newest first. ``children`` is empty in listings."""

    items: list[TaskOut]
    nextCursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


class EventOut(WireModel):
    """One line of a task's event log."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: int
    task_id: str
    at: datetime
    type: str = Field(description="created, status or updated.")
    from_status: str | None
    to_status: str | None
    actor: str = Field(description="Who did it: key:<id>, system:<part> or worker:<name>.")
    detail: dict[str, JsonValue] | None


class EventPageOut(BaseModel):
    """Events of a task, oldest first."""

    items: list[EventOut]


class StateCreate(WireModel):
    """Body of ``POST /v1/states``."""

    name: Annotated[str, Field(min_length=1, max_length=256)]
    variables: dict[str, JsonValue] | None = None


class StateOut(WireModel):
    """A state object."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    organization_id: str
    name: str | None
    variables: dict[str, JsonValue]
    version: int
    created_at: datetime
    updated_at: datetime


def _encoder(hint: Any) -> Any:
    """How a value of a task's field is written on the wire."""
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if uuid.UUID in members:
        return lambda value: str(value) if value is not None else None
    if datetime in members:
        return lambda value: _ts(value)  # defined below
    if Status in members:
        return lambda value: value.value
    return None


# (wire name, field, encoder or None) of every field the API shows, in order.
_OUT = tuple(
    (f.wire, f.name, _encoder(f.type)) for f in TASK_FIELDS if f.role.out and f.name != "children"
)


def task_out(task: TaskRecord) -> dict[str, Any]:
    """The wire form of a task and its nested children (in the declared order)."""
    out: dict[str, Any] = {}
    for wire, name, encode in _OUT:
        value = getattr(task, name)
        out[wire] = encode(value) if encode is not None else value
        if name == "author_id":  # children follow authorId, as in the reference
            out["children"] = [task_out(child) for child in task.children]
    return out


def event_out(event: EventRecord) -> dict[str, Any]:
    """The wire form of an event."""
    return {
        "id": event.id,
        "taskId": str(event.task_id),
        "at": _ts(event.at),
        "type": event.type,
        "fromStatus": event.from_status,
        "toStatus": event.to_status,
        "actor": event.actor,
        "detail": event.detail,
    }


def state_out(state: StateRecord) -> dict[str, Any]:
    """The wire form of a state object."""
    return {
        "id": str(state.id),
        "organizationId": str(state.organization_id),
        "name": state.name,
        "variables": state.variables,
        "version": state.version,
        "createdAt": _ts(state.created_at),
        "updatedAt": _ts(state.updated_at),
    }


def _ts(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, as the reference's timestamps."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class WorkerOut(_Shown):
    """A worker node, as its last heartbeat told (with the caller's queues only)."""

    name: str
    queues: list[str]
    kinds: list[str]
    concurrency: int
    running: int = Field(description="Messages the node has in hand (a run set counts once).")
    started_at: datetime
    last_heartbeat_at: datetime
    alive: bool = Field(description="A heartbeat within three WORKER_HEARTBEAT_SECONDS.")


class WorkerListOut(BaseModel):
    """The answer of ``GET /v1/workers``: nodes heard from in the last hour."""

    items: list[WorkerOut]


class QueueOut(_Shown):
    """A queue the caller's tasks use, or that a live worker serves."""

    name: str
    kind: str
    executor_id: str | None
    waiting: int = Field(description="The caller's tasks `created` or `queued` on it.")
    running: int = Field(description="The caller's tasks `running` from it.")
    oldest_waiting_seconds: float | None = Field(
        description="Age of the caller's oldest waiting task on it; null when none waits."
    )
    depth: int = Field(description="Messages on the queue's Redis list (every organization's).")
    workers: int = Field(description="Live worker nodes consuming it.")


class QueueListOut(BaseModel):
    """The answer of ``GET /v1/queues``."""

    items: list[QueueOut]
