"""The worker registry with real worker processes: a node heartbeats what it
serves, a killed node leaves the alive list within three heartbeats, and
/v1/queues shows a pool with a worker and a pool without one."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tasks_core.api.app import create_app
from tasks_core.queues import queue_name
from tests.support.api import OrgClient, issue_key, wait_for_status
from tests.support.figures import report
from tests.support.stack import Stack, stack
from tests.support.wait import wait_until

HEARTBEAT = 0.5  # WORKER_HEARTBEAT_SECONDS of the workers and the API here
ENV = {"WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT)}


@pytest.fixture
def registry() -> Iterator[tuple[Stack, OrgClient]]:
    """A system of this test's own (one test kills its worker) and a client of it."""
    with (
        stack(worker_heartbeat_seconds=HEARTBEAT) as system,
        TestClient(create_app(store=system.store)) as http,
    ):
        secret, key_id, org_id = issue_key(system.store.engine, "registry")
        yield system, OrgClient(http=http, key=secret, key_id=key_id, organization_id=org_id)


def _workers(client: OrgClient) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/workers")
    assert response.status_code == 200, response.text
    return {w["name"]: w for w in response.json()["items"]}


def _queues(client: OrgClient) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/queues")
    assert response.status_code == 200, response.text
    return {q["name"]: q for q in response.json()["items"]}


def test_a_killed_worker_leaves_the_alive_list_within_three_heartbeats(
    registry: tuple[Stack, OrgClient],
) -> None:
    system, client = registry
    pool = f"reg-{uuid.uuid4().hex[:6]}"
    worker = system.start_worker("--executor", pool, "--concurrency", "2", env=ENV)
    name = wait_until(
        lambda: next((n for n, w in _workers(client).items() if w["alive"]), None),
        timeout=20,
        message="the worker never appeared alive",
    )
    node = _workers(client)[name]
    assert queue_name("CallAction", pool, system.settings.queue_prefix) in node["queues"]
    assert "CallAction" in node["kinds"] and node["concurrency"] == 2
    # A task runs there: its queue shows the worker.
    done = wait_for_status(
        client, client.create(kind="CallAction", targetId="builtin/echo", executorId=pool)["id"]
    )
    assert done["status"] == "completed"
    assert (
        _queues(client)[queue_name("CallAction", pool, system.settings.queue_prefix)]["workers"]
        == 1
    )

    os.kill(worker.pid, signal.SIGKILL)  # the node's main process: no goodbye
    killed = time.monotonic()
    wait_until(
        lambda: _workers(client)[name]["alive"] is False,
        timeout=3 * HEARTBEAT + 2,
        message="the killed worker is still listed alive",
    )
    gone_after = time.monotonic() - killed
    assert name in _workers(client)  # listed, not alive, for an hour
    report(
        f"worker registry: killed node not alive after {gone_after:.1f}s (heartbeat {HEARTBEAT}s)"
    )


def test_queues_of_a_pool_with_a_worker_and_of_one_without(
    registry: tuple[Stack, OrgClient],
) -> None:
    system, client = registry
    prefix = system.settings.queue_prefix
    served, unserved = (f"pool-{uuid.uuid4().hex[:6]}" for _ in range(2))
    system.start_worker("--executor", served, "--concurrency", "1", env=ENV)
    served_q = queue_name("CallAction", served, prefix)
    wait_until(
        lambda: _queues(client).get(served_q, {}).get("workers") == 1,
        timeout=20,
        message="the served pool never showed its worker",
    )
    sleeping = {"kind": "CallAction", "targetId": "builtin/sleep", "input": {"seconds": 30}}
    running = client.create(**sleeping, executorId=served)  # takes the only slot
    waiting = [client.create(**sleeping, executorId=served)["id"] for _ in range(2)]
    stuck = [client.create(**sleeping, executorId=unserved)["id"] for _ in range(3)]
    wait_for_status(client, running["id"], statuses=("running",))

    def settled() -> dict[str, dict[str, Any]] | None:
        found = _queues(client)
        return found if found.get(served_q, {}).get("running") == 1 else None

    queues = wait_until(settled, timeout=20, message="the running task is not counted")
    with_worker = queues[served_q]
    assert (with_worker["waiting"], with_worker["running"], with_worker["workers"]) == (2, 1, 1)
    # Prefetch: the worker holds one message of a waiting task; the other is on the list.
    assert with_worker["depth"] <= len(waiting)
    without = queues[queue_name("CallAction", unserved, prefix)]
    assert (without["waiting"], without["running"], without["depth"], without["workers"]) == (
        len(stuck),
        0,
        len(stuck),
        0,
    )
