"""A task runs only in the pool of its executorId, also after a PUT changes it:
the PUT publishes a waiting task on its new queue, and a worker refuses to
claim a task from a queue it no longer waits on. Two real workers, on two
executors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tasks_core.publisher import TaskMessage
from tasks_core.queues import queue_name
from tasks_core.store import Store
from tests.e2e.helpers_worker import events, status_events
from tests.support.api import OrgClient, wait_for_status
from tests.support.figures import report
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

SUFFIX = uuid.uuid4().hex[:6]
ALPHA, BETA, NOWHERE = f"alpha-{SUFFIX}", f"beta-{SUFFIX}", f"nowhere-{SUFFIX}"


@pytest.fixture(scope="module")
def pools(start_worker: Callable[..., WorkerProcess]) -> dict[str, WorkerProcess]:
    """A worker for each of two executors (kind ``default``)."""
    return {
        name: start_worker("--executor", name, "--kind", "default", "--name", f"{name}@%h")
        for name in (ALPHA, BETA)
    }


def claimed_by(client: OrgClient, task_id: str) -> str:
    (running,) = status_events(client, task_id, "running")
    actor: str = running["actor"]
    return actor


def test_a_put_of_executor_id_routes_a_waiting_task_to_its_new_pool(
    client: OrgClient, pools: dict[str, WorkerProcess]
) -> None:
    created = client.create(executorId=NOWHERE)  # no pool: it waits
    assert created["status"] == "queued"
    changed = client.put(f"/v1/tasks/{created['id']}", json={"executorId": BETA})
    assert changed.status_code == 200, changed.text
    task = wait_for_status(client, created["id"], timeout=20)
    assert task["status"] == "completed", task
    assert claimed_by(client, created["id"]).startswith(f"worker:{BETA}@")


def test_a_worker_refuses_a_task_that_no_longer_waits_on_its_queue(
    client: OrgClient, e2e_store: Store, pools: dict[str, WorkerProcess]
) -> None:
    created = client.create(executorId=NOWHERE)
    # A message on alpha's queue for a task bound elsewhere: what a PUT from
    # alpha to another executor leaves behind.
    prefix = e2e_store.settings.queue_prefix
    stale = TaskMessage(
        task_id=created["id"],
        queue=queue_name("default", ALPHA, prefix),
        kind="default",
        executor_id=ALPHA,
    )
    e2e_store.publisher.publish(stale)

    def dropped() -> bool:
        lines = pools[ALPHA].log().splitlines()
        return any(created["id"] in line and "delivery dropped" in line for line in lines)

    wait_until(
        dropped,
        timeout=20,
        message="alpha never took the stale message",
    )
    still: dict[str, Any] = client.get(f"/v1/tasks/{created['id']}").json()
    assert still["status"] == "queued" and still["attempt"] == 0, still

    moved = client.put(f"/v1/tasks/{created['id']}", json={"executorId": BETA})
    assert moved.status_code == 200, moved.text
    task = wait_for_status(client, created["id"], timeout=20)
    assert task["status"] == "completed" and task["attempt"] == 1, task
    assert claimed_by(client, created["id"]).startswith(f"worker:{BETA}@")
    assert [e["type"] for e in events(client, created["id"])].count("status") == 3
    report("routing: rerouted_by_put=1 stale_claims_refused=1 runs=1")
