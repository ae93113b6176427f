"""What the client resends and how it waits, against a scripted transport."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tasks_core.client import Retry, TasksClient, TasksError
from tasks_core.client.policy import WaitClock

TASK = {"id": "t1", "kind": "default", "status": "queued"}
FAST = Retry(attempts=3, first_delay=0.001, max_delay=0.001)


def client(
    answers: list[Callable[[httpx.Request], httpx.Response]],
) -> tuple[TasksClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1](request)

    transport = httpx.MockTransport(handle)
    return TasksClient("http://api", "k", retry=FAST, transport=transport), seen


def status(code: int, body: object = None) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, json=body)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def test_a_create_is_resent_after_a_503_with_the_same_idempotency_key() -> None:
    tasks, seen = client([status(503, {"code": "unavailable", "message": "m"}), status(201, TASK)])
    assert tasks.create("default")["id"] == "t1"
    keys = [r.headers["Idempotency-Key"] for r in seen]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("client-")


def test_each_create_gets_a_key_of_its_own_unless_one_is_given() -> None:
    tasks, seen = client([status(201, TASK)])
    tasks.create("default")
    tasks.create("default")
    tasks.create("default", idempotency_key="mine")
    keys = [r.headers["Idempotency-Key"] for r in seen]
    assert keys[0] != keys[1] and keys[2] == "mine"


def test_reads_are_resent_after_a_refused_connection_until_attempts_run_out() -> None:
    tasks, seen = client([refused, status(200, TASK)])
    assert tasks.get("t1")["status"] == "queued" and len(seen) == 2
    down, seen = client([refused])
    with pytest.raises(httpx.ConnectError):
        down.get("t1")
    assert len(seen) == FAST.attempts


def test_updates_and_cancels_are_sent_once() -> None:
    tasks, seen = client([status(503, {"code": "unavailable", "message": "try later"})])
    with pytest.raises(TasksError) as error:
        tasks.update("t1", status="completed")
    assert (error.value.status, error.value.code, error.value.message) == (
        503,
        "unavailable",
        "try later",
    )
    with pytest.raises(TasksError):
        tasks.cancel("t1")
    assert len(seen) == 2


def test_an_answer_not_in_the_api_shape_is_still_a_tasks_error() -> None:
    tasks, _ = client([lambda request: httpx.Response(400, text="<html>proxy</html>")])
    with pytest.raises(TasksError) as error:
        tasks.get("t1")
    assert error.value.code == "http_error" and "proxy" in error.value.message


def test_a_task_id_stays_one_path_segment() -> None:
    tasks, seen = client([status(200, TASK)])
    tasks.get("../keys")
    assert seen[0].url.raw_path.startswith(b"/v1/tasks/..%2Fkeys")


def test_wait_asks_for_long_polls_and_pauses_after_early_answers() -> None:
    clock = WaitClock(timeout=100)
    assert clock.next_wait() == 60  # one GET waits at most 60 s
    assert clock.pause_after(asked=60, took=59) == 0  # a real long poll: no pause
    pauses = [clock.pause_after(asked=60, took=0.001) for _ in range(7)]
    assert pauses == sorted(pauses) and pauses[0] > 0 and pauses[-1] == 1.0
    assert WaitClock(timeout=0).expired()


def test_wait_long_polls_with_wait_seconds_until_the_task_ends() -> None:
    running = {**TASK, "status": "running"}
    tasks, seen = client([status(200, running), status(200, {**TASK, "status": "completed"})])
    assert tasks.wait("t1", timeout=5)["status"] == "completed"
    asked = [float(r.url.params["waitSeconds"]) for r in seen]
    assert len(asked) == 2 and all(0 < a <= 5 for a in asked)
