"""Wire shapes of the API: camelCase, exactly the reference's field names.

These exist only at the HTTP edge; services take and return snake_case
domain values (``TaskSpec``, ``TaskRecord``), converted here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    StrictBool,
    StrictInt,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from tasks_core.records import EventRecord, StateRecord, TaskRecord
from tasks_core.status import Status
from tasks_core.usecases.create import TaskSpec


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
        default=None, gt=0, le=604_800, description="A run longer than this fails with `timeout`."
    )
    queue_timeout_seconds: Seconds | None = Field(
        default=None,
        gt=0,
        le=604_800,
        description="A task still waiting for a worker after this long fails with `queue_timeout`.",
    )

    def to_spec(self) -> TaskSpec:
        """The domain value the create service takes."""
        return TaskSpec(
            kind=self.kind,
            status=self.status,
            app_id=self.app_id,
            description=self.description,
            executor_id=self.executor_id,
            target_id=self.target_id,
            title=self.title,
            input=self.input,
            output=self.output,
            params=dict(self.params or {}),
            parent_id=self.parent_id,
            stateful=self.stateful,
            started_at=self.started_at,
            ended_at=self.ended_at,
            max_attempts=self.max_attempts,
            timeout_seconds=self.timeout_seconds,
            queue_timeout_seconds=self.queue_timeout_seconds,
        )


# Task fields PUT must refuse by name (the reference: they can not change).
IMMUTABLE_FIELDS = (
    "kind",
    "appId",
    "targetId",
    "stateId",
    "authorId",
    "organizationId",
    "id",
    "createdAt",
    "updatedAt",
    "children",
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


class TaskOut(WireModel):
    """A task, with its children nested as deep as asked."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    app_id: str | None
    author_id: str | None
    children: list[TaskOut]
    created_at: datetime
    description: str | None
    ended_at: datetime | None
    errors: list[ErrorItem]
    executor_id: str | None
    id: str
    input: JsonValue
    kind: str
    organization_id: str
    output: JsonValue
    params: dict[str, JsonValue]
    parent_id: str | None
    started_at: datetime | None
    state_id: str | None
    status: Status
    target_id: str | None
    title: str | None
    updated_at: datetime
    attempt: int = Field(description="Number of the current or last run (0: never run).")
    step_id: str | None = Field(description="For a Flow's child: the id of the step it runs.")
    max_attempts: int
    timeout_seconds: float | None


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


def task_out(task: TaskRecord) -> dict[str, Any]:
    """The wire form of a task and its nested children."""
    return {
        "appId": task.app_id,
        "authorId": task.author_id,
        "children": [task_out(child) for child in task.children],
        "createdAt": _ts(task.created_at),
        "description": task.description,
        "endedAt": _ts(task.ended_at),
        "errors": task.errors,
        "executorId": task.executor_id,
        "id": str(task.id),
        "input": task.input,
        "kind": task.kind,
        "organizationId": str(task.organization_id),
        "output": task.output,
        "params": task.params,
        "parentId": str(task.parent_id) if task.parent_id else None,
        "startedAt": _ts(task.started_at),
        "stateId": str(task.state_id) if task.state_id else None,
        "status": task.status.value,
        "targetId": task.target_id,
        "title": task.title,
        "updatedAt": _ts(task.updated_at),
        "attempt": task.attempt,
        "stepId": task.flow_step_id,
        "maxAttempts": task.max_attempts,
        "timeoutSeconds": task.timeout_seconds,
    }


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
