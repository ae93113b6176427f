"""Limits on the size of input, output and params are settings, enforced with a clear 422."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tasks_core.api.app import create_app
from tasks_core.publisher import CeleryPublisher
from tasks_core.services.store import Store
from tasks_core.settings import Settings
from tests.support.api import OrgClient, error_of, issue_key
from worker.outcome import from_result

LIMIT = 100


@pytest.fixture
def small(engine: Engine, settings: Settings) -> Iterator[OrgClient]:
    limited = settings.model_copy(
        update={"max_input_bytes": LIMIT, "max_output_bytes": LIMIT, "max_params_bytes": LIMIT}
    )
    publisher = CeleryPublisher(limited.redis_url)
    store = Store(engine=engine, publisher=publisher, settings=limited)
    with TestClient(create_app(store=store), raise_server_exceptions=False) as http:
        secret, key_id, org_id = issue_key(engine, "acme")
        yield OrgClient(http=http, key=secret, key_id=key_id, organization_id=org_id)
    publisher.close()


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
