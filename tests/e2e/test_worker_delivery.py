"""Delivery: at-least-once messages, exactly-once outcomes.

Duplicate messages of one task run its handler once (the guarded claim), a
stale attempt can not overwrite a newer one and a result arriving after a
cancel is dropped (the attempt fence), all on the real database and broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tasks_core.lifecycle.publishing import message_for
from tasks_core.settings import Settings
from tasks_core.status import Status
from tasks_core.storage.tasks import get_task
from tasks_core.store import Store
from tasks_core.worker_protocol import Outcome, claim_task, finish_task, renew_lease, retry_task
from tests.e2e.helpers_worker import (
    events,
    log_count,
    queue_depth,
    redis_int,
    status_events,
    stop_many,
)
from tests.support.api import OrgClient, wait_for_status
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

DROPPED = "duplicate or late delivery dropped"  # logged by worker.runner.run_task


@pytest.fixture(scope="module")
def broker(e2e_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(e2e_settings.redis_url)
    yield client
    client.close()


def task_of(client: OrgClient, task_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def unserved_task(client: OrgClient) -> uuid.UUID:
    """A queued task on a queue no worker of this module serves."""
    created = client.create(kind="default", executorId=f"nobody-{uuid.uuid4().hex[:8]}")
    assert created["status"] == "queued"
    return uuid.UUID(created["id"])


def test_duplicate_messages_of_one_task_run_its_handler_once(
    client: OrgClient,
    e2e_store: Store,
    e2e_settings: Settings,
    broker: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # No worker serves "dup-pool" yet: the messages pile up on its queue.
    created = client.create(
        kind="CallAction", executorId="dup-pool", targetId="test/count", input={"seconds": 0.3}
    )
    assert created["status"] == "queued"
    with e2e_store.statement() as conn:
        record = get_task(conn, uuid.UUID(client.organization_id), uuid.UUID(created["id"]))
    assert record is not None
    message = message_for(record, e2e_settings.queue_prefix)
    for _ in range(2):
        e2e_store.publisher.publish(message)
    assert queue_depth(broker, message.queue) == 3

    pool = start_worker("--executor", "dup-pool", "--concurrency", "2")
    try:
        task = wait_for_status(client, created["id"])
        # Every copy was taken and the two extra ones dropped by the claim.
        wait_until(
            lambda: log_count(pool, DROPPED) >= 2 and queue_depth(broker, message.queue) == 0,
            timeout=10,
            message=f"duplicates not consumed; log:\n{pool.log()}",
        )
    finally:
        stop_many([pool])
    assert task["status"] == "completed", task
    assert task["output"] == {"runs": 1}
    assert task["attempt"] == 1
    assert redis_int(broker, f"runs:{created['id']}") == 1
    assert len(status_events(client, created["id"], "running")) == 1
    assert len(status_events(client, created["id"], "completed")) == 1
    assert log_count(pool, DROPPED) == 2


def test_a_stale_attempt_can_not_overwrite_the_current_one(
    client: OrgClient, e2e_store: Store
) -> None:
    tid = unserved_task(client)
    first = claim_task(e2e_store, tid, worker="host-a:1")
    assert first is not None and (first.status, first.attempt) == (Status.RUNNING, 1)
    failure = Outcome(Status.FAILED, errors=[{"code": "flaky", "message": "attempt 1 fails"}])
    back = retry_task(e2e_store, first, failure, delay=0, worker="host-a:1")
    assert back is not None and back.status is Status.QUEUED
    second = claim_task(e2e_store, tid, worker="host-b:2")
    assert second is not None and (second.status, second.attempt) == (Status.RUNNING, 2)

    # Attempt 1 comes back late with a result: fenced off, nothing changes.
    late = Outcome(Status.COMPLETED, output={"from": "attempt 1"})
    assert finish_task(e2e_store, first, late, worker="host-a:1") is None
    assert renew_lease(e2e_store, tid, 1) is False
    task = task_of(client, str(tid))
    assert (task["status"], task["attempt"], task["output"]) == ("running", 2, None)
    assert task["endedAt"] is None
    ignored = [e for e in events(client, str(tid)) if e["type"] == "result_ignored"]
    assert len(ignored) == 1, ignored
    assert ignored[0]["actor"] == "worker:host-a:1"
    assert ignored[0]["detail"] == {"attempt": 1, "status": "completed"}

    # The current attempt still finishes normally.
    assert renew_lease(e2e_store, tid, 2) is True
    done = finish_task(
        e2e_store, second, Outcome(Status.COMPLETED, output={"from": "attempt 2"}), worker="b"
    )
    assert done is not None and done.status is Status.COMPLETED
    task = task_of(client, str(tid))
    assert (task["status"], task["attempt"], task["output"]) == (
        "completed",
        2,
        {"from": "attempt 2"},
    )
    assert len(status_events(client, str(tid), "completed")) == 1


def test_a_result_arriving_after_a_cancel_is_ignored(client: OrgClient, e2e_store: Store) -> None:
    tid = unserved_task(client)
    claimed = claim_task(e2e_store, tid, worker="host-c:3")
    assert claimed is not None and claimed.attempt == 1
    response = client.post(f"/v1/tasks/{tid}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    assert renew_lease(e2e_store, tid, 1) is False
    result = Outcome(Status.COMPLETED, output={"too": "late"})
    assert finish_task(e2e_store, claimed, result, worker="host-c:3") is None
    task = task_of(client, str(tid))
    assert (task["status"], task["output"], task["errors"]) == ("cancelled", None, [])
    log = events(client, str(tid))
    assert [e["type"] for e in log][-1] == "result_ignored"
    assert len(status_events(client, str(tid), "completed")) == 0
