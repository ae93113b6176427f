"""The wire shapes and error mapping, without servers."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tasks_core.api.errors import describe_validation
from tasks_core.api.schemas import TaskCreate, TaskUpdate


def _errors(model: type[Any], body: Any) -> list[Any]:
    with pytest.raises(ValidationError) as raised:
        model.model_validate(body)
    return raised.value.errors()


def test_create_accepts_every_reference_field_in_camel_case() -> None:
    body = {
        "appId": "app",
        "description": "d",
        "endedAt": "2026-01-01T00:00:02Z",
        "executorId": "pool",
        "input": [1, {"a": None}],
        "kind": "CallAction",
        "output": "x",
        "params": {"p": 1},
        "parentId": "01a2228c-411a-7292-9f74-1775d17d9cee",
        "startedAt": "2026-01-01T00:00:01Z",
        "stateful": True,
        "status": "completed",
        "targetId": "billing/charge",
        "title": "t",
    }
    spec = TaskCreate.model_validate(body).to_spec()
    assert spec.kind == "CallAction" and spec.app_id == "app" and spec.target_id == "billing/charge"
    assert spec.input == [1, {"a": None}] and spec.params == {"p": 1} and spec.stateful


def test_snake_case_names_are_unknown_on_the_wire() -> None:
    (error,) = _errors(TaskCreate, {"kind": "default", "app_id": "x"})
    assert describe_validation([error])[:2] == (422, "unknown_field")


def test_missing_kind_names_kind() -> None:
    status, code, message = describe_validation(_errors(TaskCreate, {}))
    assert (status, code) == (422, "validation_error") and "kind" in message


def test_update_refuses_immutable_fields_by_name() -> None:
    errors = _errors(TaskUpdate, {"kind": "x", "appId": "y", "title": "ok"})
    status, code, message = describe_validation(errors)
    assert (status, code) == (422, "immutable_field")
    assert "kind" in message and "appId" in message


def test_update_reports_only_the_fields_sent() -> None:
    update = TaskUpdate.model_validate({"title": None, "status": "running"})
    assert update.changes() == {"title": None, "status": "running"}


def test_wrong_type_names_the_field() -> None:
    status, code, message = describe_validation(_errors(TaskCreate, {"kind": "k", "stateful": "x"}))
    assert (status, code) == (422, "validation_error") and message.startswith("stateful")
