"""GET /v1/workers and GET /v1/queues on the real database and Redis, with
nodes written as their heartbeats would (real worker processes are in
tests/e2e/test_worker_registry.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tasks_core.queues import queue_name
from tasks_core.recovery import sweep_once
from tasks_core.storage.keys import set_allowed_executors
from tasks_core.store import Store
from tests.support.api import OrgClient
from tests.support.registry import beat_node


def _items(client: OrgClient, path: str) -> list[dict[str, Any]]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_workers_are_alive_while_they_heartbeat_and_dropped_after_an_hour(
    acme: OrgClient, store: Store
) -> None:
    interval = store.settings.worker_heartbeat_seconds
    queue = queue_name("default", None, store.settings.queue_prefix)
    beat_node(store, "fresh@host", [queue])
    beat_node(store, "late@host", [queue], silent_for=3 * interval + 1)  # missed three beats
    beat_node(store, "gone@host", [queue], silent_for=3601)
    workers = {w["name"]: w for w in _items(acme, "/v1/workers")}
    assert set(workers) == {"fresh@host", "late@host"}
    fresh = workers["fresh@host"]
    assert fresh["alive"] is True and workers["late@host"]["alive"] is False
    assert set(fresh) == {
        "name", "queues", "kinds", "concurrency", "running", "startedAt", "lastHeartbeatAt",
        "alive",
    }  # fmt: skip
    assert (fresh["queues"], fresh["kinds"], fresh["concurrency"]) == ([queue], ["default"], 4)
    # The sweeper drops a node silent for an hour.
    assert sweep_once(store).counts["workers_forgotten"] == 1
    with store.statement() as conn:
        left = conn.execute(text("SELECT name FROM worker_nodes ORDER BY name")).scalars().all()
    assert left == ["fresh@host", "late@host"]


def test_a_worker_of_an_executor_the_caller_may_not_use_is_not_shown(
    acme: OrgClient, store: Store
) -> None:
    prefix = store.settings.queue_prefix
    with store.transaction() as conn:
        set_allowed_executors(conn, "acme", ["gpu"])
    beat_node(store, "gpu@host", [queue_name("Train", "gpu", prefix)])
    beat_node(store, "secret@host", [queue_name("Train", "rival", prefix)])
    beat_node(
        store, "both@host", [queue_name("Train", "gpu", prefix), queue_name("X", "rival", prefix)]
    )
    workers = {w["name"]: w["queues"] for w in _items(acme, "/v1/workers")}
    assert workers == {
        "gpu@host": [queue_name("Train", "gpu", prefix)],
        "both@host": [queue_name("Train", "gpu", prefix)],
    }
    assert all("rival" not in q["name"] for q in _items(acme, "/v1/queues"))


def test_queues_show_waiting_running_depth_and_workers(acme: OrgClient, store: Store) -> None:
    prefix = store.settings.queue_prefix
    served, unserved = (f"pool-{uuid.uuid4().hex[:6]}" for _ in range(2))
    for pool, n in ((served, 2), (unserved, 3)):
        for _ in range(n):
            acme.create(kind="default", executorId=pool)
    beat_node(store, "served@host", [queue_name("default", served, prefix)])
    beat_node(store, "idle@host", [queue_name("Idle", None, prefix)])
    queues = {q["name"]: q for q in _items(acme, "/v1/queues")}
    without = queues[queue_name("default", unserved, prefix)]
    assert (without["waiting"], without["running"], without["depth"], without["workers"]) == (
        3,
        0,
        3,
        0,
    )
    assert without["kind"] == "default" and without["executorId"] == unserved
    assert without["oldestWaitingSeconds"] >= 0
    withone = queues[queue_name("default", served, prefix)]
    assert (withone["waiting"], withone["depth"], withone["workers"]) == (2, 2, 1)
    # A queue a live worker serves is listed though the caller has no task on it.
    idle = queues[queue_name("Idle", None, prefix)]
    assert (idle["waiting"], idle["workers"], idle["oldestWaitingSeconds"]) == (0, 1, None)
    # The same counts in the metrics.
    metrics = acme.http.get("/metrics").text
    assert f'tasks_workers{{queue="{queue_name("default", served, prefix)}"}} 1.0' in metrics
    assert f'tasks_workers{{queue="{queue_name("default", unserved, prefix)}"}} 0.0' in metrics


def test_another_organization_s_tasks_are_not_counted(
    acme: OrgClient, globex: OrgClient, store: Store
) -> None:
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    globex.create(kind="default", executorId=pool)
    name = queue_name("default", pool, store.settings.queue_prefix)
    assert name not in {q["name"] for q in _items(acme, "/v1/queues")}
    assert {q["name"]: q["waiting"] for q in _items(globex, "/v1/queues")}[name] == 1


@pytest.mark.parametrize("path", ["/v1/workers", "/v1/queues"])
def test_workers_and_queues_need_a_key(acme: OrgClient, path: str) -> None:
    assert acme.http.get(path).status_code == 401
