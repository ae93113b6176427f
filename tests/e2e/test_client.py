"""``tasks_core.client`` against a real ``tasks-core api`` process and a real
worker: every method of both clients, error answers, pagination, ``wait``
on a running task, and creates resent across a lost answer and an API
restart that make one task each."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks_core.client import AsyncTasksClient, TasksClient, TasksError
from tasks_core.settings import Settings
from tests.bench.processes import ApiServer
from tests.e2e.conftest import worker_env
from tests.support.wait import wait_until

ECHO = {"targetId": "builtin/echo"}


@pytest.fixture
def tasks(api: ApiServer, key: str) -> Iterator[TasksClient]:
    with TasksClient(api.url, key, timeout=10) as client:
        yield client


def test_create_runs_and_wait_returns_the_output(tasks: TasksClient) -> None:
    task = tasks.create("CallAction", input={"n": 1}, **ECHO)
    assert task["status"] == "queued" and task["kind"] == "CallAction"
    done = tasks.wait(task["id"], timeout=30)
    assert done["status"] == "completed" and done["output"] == {"n": 1}
    assert tasks.get(task["id"])["output"] == {"n": 1}


def test_wait_on_a_running_task_returns_once_it_ends(tasks: TasksClient) -> None:
    task = tasks.create("CallAction", targetId="builtin/sleep", input={"seconds": 0.5})
    wait_until(lambda: tasks.get(task["id"])["status"] == "running", timeout=30)
    done = tasks.wait(task["id"], timeout=30)
    assert done["status"] == "completed" and done["endedAt"]


def test_wait_times_out_with_the_task_still_running(tasks: TasksClient) -> None:
    task = tasks.create("CallAction", targetId="builtin/sleep", input={"seconds": 30})
    with pytest.raises(TimeoutError, match=task["id"]):
        tasks.wait(task["id"], timeout=0.5)
    assert tasks.cancel(task["id"])["status"] == "cancelled"


def test_create_many_keeps_the_order_and_get_nests_children(tasks: TasksClient) -> None:
    made = tasks.create_many([{"kind": "default", "input": i} for i in range(3)])
    assert [t["input"] for t in made] == [0, 1, 2]
    parent = tasks.create("default", status="running")
    child = tasks.create("default", parentId=parent["id"], status="running")
    tree = tasks.get(parent["id"], depth=1)
    assert [c["id"] for c in tree["children"]] == [child["id"]]
    assert tasks.get(parent["id"], depth=0)["children"] == []


def test_list_iterates_over_every_page(tasks: TasksClient) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    made = [tasks.create("default", appId=app, status="running")["id"] for _ in range(5)]
    listed = [t["id"] for t in tasks.list(appId=app, limit=2)]
    assert listed == made[::-1]  # newest first, across three pages
    assert list(tasks.list(appId=app, status="completed")) == []


def test_update_cancel_and_events(tasks: TasksClient) -> None:
    record = tasks.create("default", status="running")
    updated = tasks.update(record["id"], status="completed", output={"ok": True})
    assert updated["status"] == "completed" and updated["output"] == {"ok": True}
    timeline = [(e["type"], e["toStatus"]) for e in tasks.events(record["id"])]
    assert timeline[0][0] == "created" and timeline[-1] == ("status", "completed")

    sleeping = tasks.create("CallAction", targetId="builtin/sleep", input={"seconds": 30})
    assert tasks.cancel(sleeping["id"])["status"] == "cancelled"
    assert tasks.events(sleeping["id"])[-1]["toStatus"] == "cancelled"


def test_error_answers_raise_tasks_error(tasks: TasksClient, api: ApiServer) -> None:
    with pytest.raises(TasksError) as missing:
        tasks.get(str(uuid.uuid4()))
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(TasksError) as invalid:
        tasks.create("", input=1)
    assert invalid.value.status == 422 and "kind" in invalid.value.message
    done = tasks.create("default", status="completed")
    with pytest.raises(TasksError) as conflict:
        tasks.update(done["id"], status="running")
    assert (conflict.value.status, conflict.value.code) == (409, "invalid_transition")
    with TasksClient(api.url, "not-a-key") as stranger, pytest.raises(TasksError) as refused:
        stranger.get(done["id"])
    assert refused.value.status == 401


class _LoseFirstAnswer(httpx.HTTPTransport):
    """Sends every request, but loses the answer of the first: the server
    committed, the client saw a broken connection."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent += 1
        if self.sent == 1:
            response.read()
            raise httpx.ReadError("connection lost after the request was sent", request=request)
        return response


def test_a_create_resent_after_a_lost_answer_makes_one_task(api: ApiServer, key: str) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    transport = _LoseFirstAnswer()
    with TasksClient(api.url, key, transport=transport) as tasks:
        task = tasks.create("default", appId=app, status="running")
        assert transport.sent == 2
        assert [t["id"] for t in tasks.list(appId=app)] == [task["id"]]


class _Counting(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return super().handle_request(request)


def test_a_create_retried_across_an_api_restart_makes_one_task(
    e2e_settings: Settings, key: str
) -> None:
    server = ApiServer(worker_env(e2e_settings)).start_serving()
    server.kill()  # down: every connection is refused until it is back
    app = f"app-{uuid.uuid4().hex[:8]}"
    transport = _Counting()
    made: list[Any] = []
    with TasksClient(server.url, key, transport=transport) as tasks:
        sender = threading.Thread(target=lambda: made.append(tasks.create("default", appId=app)))
        sender.start()
        wait_until(lambda: transport.attempts >= 2, timeout=10, message="the create is resent")
        again = ApiServer(worker_env(e2e_settings), port=server.port).start_serving()
        try:
            sender.join(30)
            assert made and made[0]["kind"] == "default"
            assert [t["id"] for t in tasks.list(appId=app)] == [made[0]["id"]]
            assert tasks.wait(made[0]["id"], timeout=30)["status"] == "completed"
        finally:
            again.kill()


def test_the_async_client_offers_the_same_calls(api: ApiServer, key: str) -> None:
    async def scenario() -> None:
        async with AsyncTasksClient(api.url, key, timeout=10) as tasks:
            task = await tasks.create("CallAction", input="hi", **ECHO)
            done = await tasks.wait(task["id"], timeout=30)
            assert done["output"] == "hi"
            assert (await tasks.get(task["id"], depth=0))["status"] == "completed"
            made = await tasks.create_many([{"kind": "default", "appId": task["id"]}] * 3)
            listed = [t["id"] async for t in tasks.list(appId=task["id"], limit=2)]
            assert listed == [t["id"] for t in made][::-1]
            record = await tasks.create("default", status="running")
            updated = await tasks.update(
                record["id"], status="failed", errors=[{"code": "boom", "message": "it broke"}]
            )
            assert updated["status"] == "failed"
            assert (await tasks.events(record["id"]))[-1]["toStatus"] == "failed"
            sleeping = await tasks.create("CallAction", targetId="builtin/sleep", input={})
            assert (await tasks.cancel(sleeping["id"]))["status"] == "cancelled"
            with pytest.raises(TasksError) as missing:
                await tasks.get(str(uuid.uuid4()))
            assert missing.value.code == "not_found"
            running = await tasks.create("default", status="running")  # a record: never ends
            with pytest.raises(TimeoutError):
                await tasks.wait(running["id"], timeout=0.3)

    asyncio.run(scenario())


def test_the_readme_example_runs(api: ApiServer, key: str, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("From Python, `tasks_core.client`", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / ".tasks").mkdir()
    (tmp_path / ".tasks" / "api-key").write_text(key + "\n")
    script = example.replace("http://127.0.0.1:8000", api.url)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "completed {'hello': 'world'}" in done.stdout
    assert "409 invalid_transition" in done.stdout
