"""The thread pool (``tasks-core worker --pool threads``): runs share one
process, and their claims and outcomes go in sets; duplicates, cancels and
timeouts keep their meaning."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import text

from tasks_core.lifecycle.publishing import message_for
from tasks_core.settings import Settings
from tasks_core.storage.tasks import get_task
from tasks_core.store import Store
from tests.e2e.helpers_worker import (
    log_count,
    queue_depth,
    redis_int,
    status_events,
    stubborn_run_fails_and_its_worker_serves_on,
    worker_pid,
)
from tests.support.api import OrgClient, wait_for_status
from tests.support.figures import report
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

POOL = "threads-pool"
DROPPED = "duplicate or late delivery dropped"  # logged by worker.runner.run_task
LONG = 30.0


@pytest.fixture(scope="module")
def broker(e2e_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(e2e_settings.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def threads(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker("--executor", POOL, "--pool", "threads", "--concurrency", "8")


def _create(client: OrgClient, **fields: Any) -> dict[str, Any]:
    return client.create(executorId=POOL, **fields)


def test_the_thread_pool_runs_tasks_in_its_one_process(
    client: OrgClient, e2e_store: Store, threads: WorkerProcess
) -> None:
    ids = [_create(client, kind="CallAction", targetId="builtin/echo")["id"] for _ in range(24)]
    done = [wait_for_status(client, i) for i in ids]
    assert all(t["status"] == "completed" for t in done), done
    assert {worker_pid(e2e_store.engine, i) for i in ids} == {threads.pid}
    report(f"thread pool: tasks={len(ids)} processes=1 completed={len(done)}")


def test_duplicate_messages_run_the_handler_once_in_the_thread_pool(
    client: OrgClient,
    e2e_store: Store,
    e2e_settings: Settings,
    broker: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # No worker serves "dup-threads" yet: the copies pile up on its queue,
    # to be taken at once by the pool's threads.
    created = client.create(
        kind="CallAction", executorId="dup-threads", targetId="test/count", input={"seconds": 0.3}
    )
    with e2e_store.statement() as conn:
        record = get_task(conn, uuid.UUID(client.organization_id), uuid.UUID(created["id"]))
    assert record is not None
    message = message_for(record, e2e_settings.queue_prefix)
    for _ in range(3):
        e2e_store.publisher.publish(message)
    assert queue_depth(broker, message.queue) == 4
    pool = start_worker("--executor", "dup-threads", "--pool", "threads", "--concurrency", "4")
    task = wait_for_status(client, created["id"])
    wait_until(
        lambda: log_count(pool, DROPPED) >= 3 and queue_depth(broker, message.queue) == 0,
        timeout=10,
        message=f"copies not consumed; log:\n{pool.log()}",
    )
    assert task["status"] == "completed" and task["output"] == {"runs": 1}, task
    assert redis_int(broker, f"runs:{created['id']}") == 1
    assert len(status_events(client, created["id"], "running")) == 1
    assert log_count(pool, DROPPED) == 3


def test_cancel_and_timeout_stop_runs_in_the_thread_pool(
    client: OrgClient, threads: WorkerProcess
) -> None:
    sleeping = _create(client, kind="CallAction", targetId="builtin/sleep", input={"seconds": LONG})
    timed = _create(
        client,
        kind="CallAction",
        targetId="builtin/sleep",
        input={"seconds": LONG},
        timeoutSeconds=0.5,
    )
    wait_until(
        lambda: client.get(f"/v1/tasks/{sleeping['id']}").json()["status"] == "running",
        timeout=10,
        message="never ran",
    )
    assert client.post(f"/v1/tasks/{sleeping['id']}/cancel").status_code == 200
    assert wait_for_status(client, sleeping["id"], ("cancelled",), timeout=10)
    failed = wait_for_status(client, timed["id"], timeout=10)
    assert failed["status"] == "failed" and failed["errors"][0]["code"] == "timeout", failed
    # The threads that ran them are free again: new tasks run.
    echo = _create(client, kind="CallAction", targetId="builtin/echo")
    assert wait_for_status(client, echo["id"])["status"] == "completed"


def test_a_handler_ignoring_its_timeout_in_the_thread_pool_fails_and_the_pool_serves_on(
    client: OrgClient, threads: WorkerProcess
) -> None:
    # A thread can not be ended: the process stays, its other threads serve.
    stubborn_run_fails_and_its_worker_serves_on(client, threads, POOL)


def test_a_flow_run_by_the_thread_pool_fans_in_once_per_step_and_ends_once(
    client: OrgClient, e2e_store: Store, threads: WorkerProcess
) -> None:
    steps = [
        {"id": f"s{i}", "kind": "CallAction", "targetId": "builtin/echo", "executorId": POOL}
        for i in range(40)
    ]
    created = _create(client, kind="Flow", params={"steps": steps})
    flow = wait_for_status(client, created["id"], timeout=30)
    assert flow["status"] == "completed", flow
    assert set(flow["output"]) == {f"s{i}" for i in range(40)}
    with e2e_store.statement() as conn:
        counts = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE to_status IN ('completed', 'failed')) AS ends, "
                "count(*) FILTER (WHERE type = 'fan_in') AS fan_ins "
                "FROM task_events WHERE task_id = :t"
            ),
            {"t": uuid.UUID(created["id"])},
        ).one()
    assert counts.ends == 1
    assert counts.fan_ins == 40
    report(f"thread pool flow: steps=40 flow_ends={counts.ends} fan_ins={counts.fan_ins}")
