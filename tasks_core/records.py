"""Domain values read from storage: frozen, snake_case, free of I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks_core.status import Status


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as stored, plus the children loaded with it (if any)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    author_id: str | None
    parent_id: uuid.UUID | None
    state_id: uuid.UUID | None
    kind: str
    status: Status
    app_id: str | None
    executor_id: str | None
    target_id: str | None
    title: str | None
    description: str | None
    input: Any
    output: Any
    params: dict[str, Any]
    errors: list[dict[str, Any]]
    attempt: int
    max_attempts: int
    timeout_seconds: float | None
    flow_step_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    children: tuple[TaskRecord, ...] = field(default=())

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> TaskRecord:
        """Build from a ``tasks`` row (any mapping with the column names)."""
        return cls(
            id=row["id"],
            organization_id=row["organization_id"],
            author_id=row["author_id"],
            parent_id=row["parent_id"],
            state_id=row["state_id"],
            kind=row["kind"],
            status=Status(row["status"]),
            app_id=row["app_id"],
            executor_id=row["executor_id"],
            target_id=row["target_id"],
            title=row["title"],
            description=row["description"],
            input=row["input"],
            output=row["output"],
            params=row["params"] or {},
            errors=row["errors"] or [],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            timeout_seconds=row["timeout_seconds"],
            flow_step_id=row["flow_step_id"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
        )


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A state object: named variables with a version for optimistic writes."""

    id: uuid.UUID
    organization_id: uuid.UUID
    name: str | None
    variables: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StateRecord:
        """Build from a ``states`` row."""
        return cls(
            id=row["id"],
            organization_id=row["organization_id"],
            name=row["name"],
            variables=row["variables"] or {},
            version=row["version"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One line of a task's event log."""

    id: int
    task_id: uuid.UUID
    at: datetime
    type: str
    from_status: str | None
    to_status: str | None
    actor: str
    detail: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> EventRecord:
        """Build from a ``task_events`` row."""
        return cls(**{name: row[name] for name in cls.__slots__})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request: the organization and API key it came with."""

    organization_id: uuid.UUID
    key_id: uuid.UUID

    @property
    def actor(self) -> str:
        """How this caller is named in event logs."""
        return f"key:{self.key_id}"
