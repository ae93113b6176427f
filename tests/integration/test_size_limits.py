"""Limits on the size of input, output and params are settings, enforced with a clear 422."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.api import OrgClient, error_of
from worker.outcome import from_result

LIMIT = 100


@pytest.fixture
def small(client_with: Callable[..., OrgClient]) -> OrgClient:
    return client_with(max_input_bytes=LIMIT, max_output_bytes=LIMIT, max_params_bytes=LIMIT)


@pytest.mark.parametrize("field", ["input", "output", "params"])
def test_create_over_a_size_limit_is_422_naming_the_field(small: OrgClient, field: str) -> None:
    value = {"blob": "x" * LIMIT}
    response = small.post("/v1/tasks", json={"kind": "default", field: value})
    message = error_of(response, 422, "too_large")
    assert message.startswith(field) and str(LIMIT) in message
    assert small.get("/v1/tasks").json()["items"] == []


@pytest.mark.parametrize("field", ["input", "output", "params"])
def test_update_over_a_size_limit_is_422_and_changes_nothing(small: OrgClient, field: str) -> None:
    task = small.create(kind="default", status="running")
    response = small.put(f"/v1/tasks/{task['id']}", json={field: {"blob": "x" * LIMIT}})
    assert error_of(response, 422, "too_large").startswith(field)
    assert small.get(f"/v1/tasks/{task['id']}").json()[field] == task[field]


def test_values_at_the_limit_are_accepted(small: OrgClient) -> None:
    value = "x" * (LIMIT - 2)  # a JSON string of exactly LIMIT bytes
    assert small.create(kind="default", input=value)["input"] == value


def test_a_handler_output_over_the_limit_fails_the_task() -> None:
    decision = from_result({"blob": "x" * LIMIT}, max_bytes=LIMIT)
    assert decision.outcome.errors[0]["code"] == "output_too_large"
    assert not decision.retryable
    assert from_result("x" * (LIMIT - 2), max_bytes=LIMIT).outcome.output == "x" * (LIMIT - 2)
