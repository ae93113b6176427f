"""Every built-in kind and action runs to its terminal status on a real worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import OrgClient, wait_for_status
from tests.support.workers import WorkerProcess


def run(client: OrgClient, **fields: Any) -> dict[str, Any]:
    created = client.create(**fields)
    return wait_for_status(client, created["id"])


def test_default_completes_with_timestamps(client: OrgClient, worker: WorkerProcess) -> None:
    task = run(client, kind="default")
    assert task["status"] == "completed", task
    assert task["startedAt"] and task["endedAt"] and task["endedAt"] >= task["startedAt"]
    assert task["attempt"] == 1 and task["errors"] == []


def test_echo_outputs_its_input(client: OrgClient, worker: WorkerProcess) -> None:
    task = run(client, kind="CallAction", targetId="builtin/echo", input={"x": [1, 2]})
    assert (task["status"], task["output"]) == ("completed", {"x": [1, 2]})


def test_default_with_an_action_target_runs_it(client: OrgClient, worker: WorkerProcess) -> None:
    task = run(client, kind="default", targetId="builtin/echo", input="hi")
    assert (task["status"], task["output"]) == ("completed", "hi")


def test_sleep_sleeps_then_completes(client: OrgClient, worker: WorkerProcess) -> None:
    task = run(client, kind="CallAction", targetId="builtin/sleep", input={"seconds": 0.3})
    assert (task["status"], task["output"]) == ("completed", {"slept": 0.3})


def test_fail_fails_with_its_code_and_message(client: OrgClient, worker: WorkerProcess) -> None:
    task = run(
        client,
        kind="CallAction",
        targetId="builtin/fail",
        input={"code": "card_declined", "message": "no"},
    )
    assert task["status"] == "failed"
    assert task["errors"] == [{"code": "card_declined", "message": "no"}]
    assert task["endedAt"]


def test_unknown_action_fails_with_action_not_found(
    client: OrgClient, worker: WorkerProcess
) -> None:
    task = run(client, kind="CallAction", targetId="billing/nothing")
    assert task["status"] == "failed" and task["errors"][0]["code"] == "action_not_found"
    assert "billing/nothing" in task["errors"][0]["message"]


def test_exception_becomes_errors_and_its_type_goes_to_the_event_log(
    client: OrgClient, worker: WorkerProcess
) -> None:
    task = run(client, kind="CallAction", targetId="test/raise")
    assert task["errors"] == [{"code": "value_error", "message": "bad value in input"}]
    events = client.get(f"/v1/tasks/{task['id']}/events").json()["items"]
    failed = [e for e in events if e["toStatus"] == "failed"]
    assert failed[0]["detail"]["exception"] == "ValueError"
    assert "Traceback" not in str(failed[0]["detail"]) + task["errors"][0]["message"]


def test_output_that_is_not_json_fails_the_task(client: OrgClient, worker: WorkerProcess) -> None:
    task = run(client, kind="CallAction", targetId="test/not-json")
    assert task["status"] == "failed" and task["errors"][0]["code"] == "invalid_output"


@pytest.mark.parametrize("times", [1, 5])
def test_stateful_handler_reads_and_writes_its_state(
    client: OrgClient, worker: WorkerProcess, times: int
) -> None:
    task = run(client, kind="test.StateCounter", stateful=True, input={"times": times})
    assert task["status"] == "completed", task
    assert task["output"] == {"n": times, "version": times + 1}
    state = client.get(f"/v1/states/{task['stateId']}").json()
    assert state["variables"] == {"n": times} and state["version"] == times + 1
