"""Timeouts and cancellation of running tasks, enforced by the worker's
supervisor thread (and, for a handler that ignores it, by ending its process)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from tasks_core.store import Store
from tests.e2e.helpers_worker import events, run, status_events, worker_pid
from tests.support.api import OrgClient, wait_for_status
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

LONG = 30.0  # far longer than any wait below: a task that ends soon was stopped


def run_seconds(task: dict[str, Any]) -> float:
    started = datetime.fromisoformat(task["startedAt"])
    ended = datetime.fromisoformat(task["endedAt"])
    return (ended - started).total_seconds()


def is_running(client: OrgClient, task_id: str) -> bool:
    return bool(client.get(f"/v1/tasks/{task_id}").json()["status"] == "running")


def test_a_task_running_past_its_timeout_fails_with_timeout(
    client: OrgClient, worker: WorkerProcess
) -> None:
    task = run(
        client,
        timeout=10,
        kind="CallAction",
        targetId="builtin/sleep",
        input={"seconds": LONG},
        timeoutSeconds=0.5,
    )
    assert task["status"] == "failed", task
    assert task["errors"][0]["code"] == "timeout", task["errors"]
    assert "0.5 s" in task["errors"][0]["message"]
    assert 0.5 <= run_seconds(task) < 10
    failed = status_events(client, task["id"], "failed")
    assert len(failed) == 1 and failed[0]["fromStatus"] == "running"
    assert failed[0]["detail"]["error"] == "timeout"
    assert failed[0]["actor"].startswith("worker:")


def test_cancelling_a_running_task_stops_it_and_its_late_result_is_ignored(
    client: OrgClient, worker: WorkerProcess
) -> None:
    created = client.create(kind="CallAction", targetId="builtin/sleep", input={"seconds": LONG})
    wait_until(lambda: is_running(client, created["id"]), timeout=10, message="never ran")
    response = client.post(f"/v1/tasks/{created['id']}/cancel")
    assert response.status_code == 200, response.text
    task = wait_for_status(client, created["id"], ("cancelled",), timeout=5)
    assert task["endedAt"] is not None

    # The supervisor sees the cancel at its next lease renewal and stops the
    # handler, whose result (a cancel) is then fenced off: well before LONG.
    def ignored() -> list[dict[str, Any]]:
        return [e for e in events(client, created["id"]) if e["type"] == "result_ignored"]

    late = wait_until(ignored, timeout=5, message="the worker never reported its late result")
    assert len(late) == 1
    assert late[0]["actor"].startswith("worker:")
    assert late[0]["detail"] == {"attempt": 1, "status": "cancelled"}
    after = client.get(f"/v1/tasks/{created['id']}").json()
    assert after["status"] == "cancelled" and after["output"] is None, after
    assert after["endedAt"] == task["endedAt"]
    assert status_events(client, created["id"], "completed") == []


def test_a_handler_ignoring_its_timeout_is_ended_and_the_worker_keeps_serving(
    client: OrgClient, e2e_store: Store, worker: WorkerProcess
) -> None:
    task = run(
        client,
        timeout=10,
        kind="CallAction",
        targetId="test/stubborn",
        input={"seconds": LONG},
        timeoutSeconds=0.5,
    )
    assert task["status"] == "failed", task
    assert task["errors"][0]["code"] == "timeout", task["errors"]
    # timeout (0.5 s) + grace (CANCEL_GRACE_SECONDS=1) + a heartbeat or two.
    assert run_seconds(task) < 10
    # The pool process that ran it was ended, and replaced by the pool.
    engine: Engine = e2e_store.engine
    pid = worker_pid(engine, task["id"])
    wait_until(
        lambda: pid not in worker.pids(),
        timeout=10,
        message=f"pool process {pid} still alive; log:\n{worker.log()}",
    )
    assert "did not stop within the grace period; ending its process" in worker.log()
    wait_until(lambda: len(worker.pids()) == 3, timeout=10, message="pool not refilled")
    # Its message went back to the queue (reject on worker lost) and the
    # redelivery was dropped by the claim: the task stays failed.
    dropped = f"task {task['id']} is not waiting to run"
    wait_until(lambda: dropped in worker.log(), timeout=10, message="no redelivery seen")
    # The worker still serves: new tasks run to completion (on both slots).
    for _ in range(3):
        follow = run(client, kind="CallAction", targetId="builtin/echo", input="still here")
        assert (follow["status"], follow["output"]) == ("completed", "still here"), follow
    assert len(status_events(client, task["id"], "failed")) == 1
