"""Checks shared by create and update that need no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tasks_core.errors import NotFound, ValidationFailed
from tasks_core.queues import is_valid_name

NAME_RULE = "1 to 128 characters of letters, digits and _ . : / - (starting with a letter or digit)"


def check_name(field: str, value: str | None) -> None:
    """``kind`` and ``executorId`` become parts of queue names; keep them plain."""
    if value is not None and not is_valid_name(value):
        raise ValidationFailed(f"{field} {value!r} is not valid: use {NAME_RULE}")


def check_times(started_at: datetime | None, ended_at: datetime | None) -> None:
    """``endedAt`` may not be before ``startedAt``."""
    if started_at is not None and ended_at is not None and ended_at < started_at:
        raise ValidationFailed(
            f"endedAt ({ended_at.isoformat()}) is before startedAt ({started_at.isoformat()})"
        )


def as_utc(value: datetime | None) -> datetime | None:
    """Timestamps without a zone are read as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def parse_task_id(value: str | uuid.UUID, *, field: str = "task") -> uuid.UUID:
    """A task id from the wire. A string that is no id names no task: 404, like
    an id of another organization, so callers learn nothing from the difference."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"{field} {value!r} names no task") from None
