"""Run sets on real worker processes: tasks published together go as one
message, and duplicate or overlapping deliveries of it still run each task
once; the steps of one Flow, delivered as a set and recorded together, fan
in to it exactly once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tasks_core.publisher import BatchPublisher, TaskMessage
from tasks_core.queues import queue_name
from tasks_core.settings import Settings
from tasks_core.store import Store
from tests.e2e.helpers_worker import queue_depth, redis_int, status_events, stop_many
from tests.integration.test_api_queueing import ids_on, messages_on
from tests.support.api import OrgClient, wait_for_status
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess


@pytest.fixture(scope="module")
def broker(e2e_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(e2e_settings.redis_url)
    yield client
    client.close()


def _count_steps(n: int, pool: str) -> list[dict[str, Any]]:
    return [
        {"id": f"s{i}", "kind": "CallAction", "targetId": "test/count", "executorId": pool}
        for i in range(n)
    ]


def test_duplicate_and_overlapping_run_sets_run_each_task_once(
    client: OrgClient,
    e2e_store: Store,
    e2e_settings: Settings,
    broker: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    pool = f"sets-{uuid.uuid4().hex[:8]}"  # no worker serves it yet: messages pile up
    queue = queue_name("CallAction", pool, e2e_settings.queue_prefix)
    bodies = [{"kind": "CallAction", "targetId": "test/count", "executorId": pool}] * 6
    response = client.post("/v1/tasks/batch", json={"tasks": bodies})
    assert response.status_code == 201, response.text
    ids = [t["id"] for t in response.json()["tasks"]]
    assert ids_on(broker, queue) == ids and len(messages_on(broker, queue)) == 1
    # The same set again, and half of it as single messages (a sweeper's
    # republish beside a redelivery).
    publisher = e2e_store.publisher
    assert isinstance(publisher, BatchPublisher)
    messages = [TaskMessage(i, queue, "CallAction", pool) for i in ids]
    publisher.publish_many(messages)
    publisher.publish_many(messages[:3], set_size=1)
    assert queue_depth(broker, queue) == 5

    workers = [start_worker("--executor", pool, "--concurrency", "2") for _ in range(2)]
    try:
        for task_id in ids:
            assert wait_for_status(client, task_id, timeout=30)["status"] == "completed"
        wait_until(lambda: queue_depth(broker, queue) == 0, timeout=10, message="copies left")
    finally:
        stop_many(workers)
    for task_id in ids:
        assert redis_int(broker, f"runs:{task_id}") == 1
        assert len(status_events(client, task_id, "running")) == 1
        assert len(status_events(client, task_id, "completed")) == 1


def test_steps_of_one_flow_run_as_a_set_and_fan_in_exactly_once(
    client: OrgClient,
    e2e_settings: Settings,
    broker: redis.Redis,
    worker: WorkerProcess,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    pool = f"steps-{uuid.uuid4().hex[:8]}"
    queue = queue_name("CallAction", pool, e2e_settings.queue_prefix)
    flow = client.create(kind="Flow", params={"steps": _count_steps(8, pool)})
    # The module's worker started the Flow; its eight steps went out as one
    # message, on a queue no worker serves yet.
    wait_until(lambda: queue_depth(broker, queue) == 1, timeout=20, message="steps not spawned")
    steps = ids_on(broker, queue)
    assert len(steps) == 8
    pool_worker = start_worker("--executor", pool, "--concurrency", "2")
    try:
        done = wait_for_status(client, flow["id"], timeout=30)
    finally:
        stop_many([pool_worker])
    assert done["status"] == "completed", done
    assert done["output"] == {f"s{i}": {"runs": 1} for i in range(8)}
    assert all(redis_int(broker, f"runs:{step}") == 1 for step in steps)
    assert len(status_events(client, flow["id"], "completed")) == 1
    events = client.get(f"/v1/tasks/{flow['id']}/events").json()["items"]
    fan_ins = [e for e in events if e["type"] == "fan_in"]
    assert len(fan_ins) == 8 and fan_ins[-1]["detail"]["open_steps"] == 0
