"""``POST /v1/apps/actions/call`` against a real ``tasks-core api`` and
worker: with ``waitForResult`` it answers the ended task's output or error,
without it at once with the task queued."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.bench.processes import ApiServer
from tests.support.api import error_of
from tests.support.wait import wait_until

CALL = "/v1/apps/actions/call"


@pytest.fixture(scope="module")
def http(api: ApiServer, key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=90) as client:
        yield client


def call(http: httpx.Client, status: int, **body: Any) -> dict[str, Any]:
    answer = http.post(CALL, json=body)
    assert answer.status_code == status, answer.text
    result: dict[str, Any] = answer.json()
    assert set(result) == {"data", "error", "options", "task"}
    return result


def test_waiting_for_the_result_answers_the_actions_output(http: httpx.Client) -> None:
    result = call(http, 200, actionIdentifier="builtin/echo", input={"n": 7})
    assert result["data"] == {"n": 7} and result["error"] is None and result["options"] == []
    task = result["task"]
    assert (task["kind"], task["targetId"], task["status"]) == (
        "CallAction",
        "builtin/echo",
        "completed",
    )


def test_a_failed_action_answers_its_first_error(http: httpx.Client) -> None:
    failing = {"code": "card_declined", "message": "no funds"}
    result = call(http, 200, actionIdentifier="builtin/fail", input=failing, waitForResult=True)
    assert result["data"] is None and result["task"]["status"] == "failed"
    assert result["error"]["code"] == "card_declined"


def test_without_waiting_it_answers_at_once_with_the_task_queued(http: httpx.Client) -> None:
    parent = http.post("/v1/tasks", json={"kind": "default", "status": "running"}).json()
    result = call(
        http, 202, actionIdentifier="builtin/sleep", input={"seconds": 0.3},
        parentTaskId=parent["id"], waitForResult=False,
    )  # fmt: skip
    task = result["task"]
    assert task["status"] == "queued" and task["parentId"] == parent["id"]
    assert result["data"] is None and result["error"] is None

    def ended() -> bool:
        answer = http.get(f"/v1/tasks/{task['id']}")
        return bool(answer.json()["status"] == "completed")

    wait_until(ended, timeout=30, message="the called action runs")


def test_an_idempotency_key_makes_one_task_of_two_calls(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": f"call-{uuid.uuid4()}"}
    body = {"actionIdentifier": "builtin/echo", "input": 1}
    first = http.post(CALL, json=body, headers=headers).json()
    again = http.post(CALL, json=body, headers=headers).json()
    assert first["task"]["id"] == again["task"]["id"] and again["data"] == 1


def test_bad_calls_are_clear_422s(http: httpx.Client) -> None:
    assert "actionIdentifier" in error_of(
        http.post(CALL, json={"input": 1}), 422, "validation_error"
    )
    unknown = http.post(CALL, json={"actionIdentifier": "builtin/echo", "colour": "red"})
    assert "colour" in error_of(unknown, 422, "unknown_field")
    missing_parent = http.post(
        CALL, json={"actionIdentifier": "builtin/echo", "parentTaskId": str(uuid.uuid4())}
    )
    error_of(missing_parent, 404, "not_found")
