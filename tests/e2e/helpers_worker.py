"""Helpers shared by the worker end-to-end tests (``test_worker_*.py``).

Plain functions, not fixtures: each test module declares the few fixtures it
needs, so that no fixture is imported into a module's namespace unseen.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from sqlalchemy import Engine, text

from tests.support.api import OrgClient, wait_for_status
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess


def run(client: OrgClient, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
    """Create a task through the API and wait until it ends; returns it."""
    created = client.create(**fields)
    return wait_for_status(client, created["id"], timeout=timeout)


def events(client: OrgClient, task_id: str) -> list[dict[str, Any]]:
    """The task's event log (oldest first), through the API."""
    response = client.get(f"/v1/tasks/{task_id}/events")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def status_events(client: OrgClient, task_id: str, to: str) -> list[dict[str, Any]]:
    """The task's `status` events that moved it to ``to``."""
    return [e for e in events(client, task_id) if e["type"] == "status" and e["toStatus"] == to]


def worker_column(engine: Engine, task_id: str) -> str | None:
    """The task's ``worker`` column ("<hostname>:<pid>" of the process that claimed it)."""
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT worker FROM tasks WHERE id = :id"), {"id": uuid.UUID(task_id)}
        ).scalar_one()
    return str(value) if value is not None else None


def worker_pid(engine: Engine, task_id: str) -> int:
    """The pid part of the task's ``worker`` column."""
    name = worker_column(engine, task_id)
    assert name is not None, f"task {task_id} was never claimed"
    return int(name.rsplit(":", 1)[1])


def redis_int(client: redis.Redis, key: str) -> int:
    """An integer counter in Redis (0 when absent)."""
    value = client.get(key)
    return int(value) if value is not None else 0


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting on a Celery queue (the Redis list of the queue's name)."""
    return int(client.llen(queue))


def log_count(worker: WorkerProcess, needle: str) -> int:
    """How many times ``needle`` appears in a worker's log."""
    return worker.log().count(needle)


def start_many(
    start_worker: Callable[..., WorkerProcess], *arg_lists: Sequence[str]
) -> list[WorkerProcess]:
    """Start several workers at once (each takes ~2 s, mostly waiting)."""
    with ThreadPoolExecutor(max_workers=len(arg_lists)) as pool:
        futures = [pool.submit(start_worker, *args) for args in arg_lists]
    return [future.result() for future in futures]


def stop_many(processes: Sequence[WorkerProcess]) -> None:
    """Stop several workers at once (a warm shutdown takes a few seconds each)."""
    with ThreadPoolExecutor(max_workers=max(1, len(processes))) as pool:
        futures = [pool.submit(process.stop) for process in processes]
    for future in futures:
        future.result()


def stubborn_run_fails_and_its_worker_serves_on(
    client: OrgClient, worker: WorkerProcess, executor_id: str
) -> None:
    """A pool that can not end a handler (threads, solo): a handler that
    ignores its timeout fails with ``timeout``, the worker process stays and
    takes the next task, and the late result is fenced off when it comes."""
    stubborn = client.create(
        executorId=executor_id,
        kind="CallAction",
        targetId="test/stubborn",
        input={"seconds": 3},
        timeoutSeconds=0.5,
        maxAttempts=1,
    )
    failed = wait_for_status(client, stubborn["id"], timeout=15)
    assert failed["status"] == "failed" and failed["errors"][0]["code"] == "timeout", failed
    # The timeout is written before the worker says it can not end the handler.
    wait_until(lambda: "this pool can not end it" in worker.log(), timeout=10,
               message="the worker did not say that its pool can not end the handler")  # fmt: skip
    assert worker.process is not None and worker.process.poll() is None
    echo = client.create(executorId=executor_id, kind="CallAction", targetId="builtin/echo")
    assert wait_for_status(client, echo["id"], timeout=20)["status"] == "completed"
    wait_until(
        lambda: f"result of task {stubborn['id']} attempt 1 ignored" in worker.log(),
        timeout=15,
        message=f"late result not seen; log:\n{worker.log()}",
    )
