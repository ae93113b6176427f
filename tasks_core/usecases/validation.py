"""Checks shared by create and update that need no database."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tasks_core.errors import NotFound, ValidationFailed
from tasks_core.json_sizes import json_size
from tasks_core.queues import is_valid_name
from tasks_core.settings import Settings

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


def as_utc(value: datetime | None, *, field: str) -> datetime | None:
    """A timestamp in UTC (one without a zone is read as UTC). It must stay
    within years 1 to 9999 once in UTC, as PostgreSQL and the API's own
    answers need."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationFailed(
            f"{field} {value.isoformat()} is outside years 1 to 9999 once in UTC"
        ) from None


def parse_task_id(value: str | uuid.UUID, *, field: str = "task") -> uuid.UUID:
    """A task id from the wire. A string that is no id names no task: 404, like
    an id of another organization, so callers learn nothing from the difference."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise NotFound(f"{field} {value!r} names no task") from None


def check_sizes(settings: Settings, values: Mapping[str, Any]) -> None:
    """``input``, ``output`` and ``params`` each stay under their setting."""
    limits = {
        "input": settings.max_input_bytes,
        "output": settings.max_output_bytes,
        "params": settings.max_params_bytes,
    }
    for field, limit in limits.items():
        if field in values and values[field] is not None:
            size = json_size(values[field])
            if size > limit:
                raise ValidationFailed(
                    f"{field} is {size} bytes as JSON; the limit is {limit}", code="too_large"
                )
