"""A task's fields are declared once (``tasks_core.task.TaskRecord``); what is
derived from it matches, and what is written by hand for its validation
follows it."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

from tasks_core.api.schemas import IMMUTABLE_FIELDS, TaskCreate, TaskOut, TaskUpdate, task_out
from tasks_core.status import Status
from tasks_core.storage.tables import tasks
from tasks_core.task import (
    COLUMNS,
    CREATE_FIELDS,
    INSERT_COLUMNS,
    MUTABLE_FIELDS,
    TASK_FIELDS,
    NewTask,
    TaskRecord,
    TaskSpec,
)


def test_the_table_has_a_column_for_each_stored_field_and_no_other() -> None:
    assert tuple(c.name for c in tasks.columns) == COLUMNS
    nullable = {c.name: c.nullable for c in tasks.columns}
    assert nullable["id"] is False and nullable["parent_id"] is True
    assert nullable["params"] is False and nullable["input"] is True


def test_the_create_inputs_follow_the_declaration() -> None:
    spec_fields = {f.name for f in dataclasses.fields(TaskSpec)}
    assert spec_fields == CREATE_FIELDS | {"stateful"}
    assert set(TaskCreate.model_fields) == CREATE_FIELDS | {"stateful"}
    decided = {f.name for f in dataclasses.fields(NewTask)} - {"spec"}
    assert set(INSERT_COLUMNS) == CREATE_FIELDS | decided


def test_a_put_takes_the_mutable_fields_and_names_the_others() -> None:
    assert set(TaskUpdate.model_fields) == MUTABLE_FIELDS
    shown = {f.wire for f in TASK_FIELDS if f.role.out}
    mutable_wire = {f.wire for f in TASK_FIELDS if f.role.mutable}
    assert set(IMMUTABLE_FIELDS) == (shown - mutable_wire) | {"stateful"}


def test_the_answer_shows_the_declared_fields_in_their_order() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    values = {f.name: None for f in TASK_FIELDS if f.role.stored}
    values.update(
        id=uuid.uuid4(), organization_id=uuid.uuid4(), kind="k", status=Status.QUEUED,
        params={}, errors=[], attempt=0, max_attempts=1, created_at=now, updated_at=now,
    )  # fmt: skip
    body = task_out(TaskRecord(**values))
    assert list(body) == [f.wire for f in TASK_FIELDS if f.role.out]
    assert list(body) == [field.alias for field in TaskOut.model_fields.values()]
    assert body["stepId"] is None and body["status"] == "queued"
    assert body["createdAt"] == "2026-01-01T00:00:00Z" and body["children"] == []
    assert "leaseExpiresAt" not in body and "queueTimeoutSeconds" not in body
