"""Domain values read from storage: frozen, snake_case, free of I/O (a task's own are in
``tasks_core.task``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
    # The executorIds the organization may send tasks to (None: any), read
    # with the key, so checking them costs no query.
    executors: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        """How this caller is named in event logs."""
        return f"key:{self.key_id}"
