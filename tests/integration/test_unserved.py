"""A kind no worker serves: the sweeper fails its waiting tasks ``unknown_kind``
once no worker node heard from within UNSERVED_TIMEOUT_SECONDS lists their
queue (tasks_core.unserved). Nodes are written as their heartbeats would be;
real workers, a real sweeper and a Flow are in tests/e2e/test_unserved.py."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import text

from tasks_core.lifecycle.moves import Unserved
from tasks_core.lifecycle.publishing import execute
from tasks_core.queues import queue_name
from tasks_core.recovery import sweep_once
from tasks_core.store import Store
from tests.support.api import OrgClient
from tests.support.registry import beat_node


def _waited(store: Store, ids: Sequence[str], seconds: float) -> None:
    """The tasks were created ``seconds`` ago."""
    with store.statement() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET created_at = now() - make_interval(secs => :s) "
                "WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"s": seconds, "ids": list(ids)},
        )


def _task(client: OrgClient, task_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _queue(client: OrgClient, name: str) -> dict[str, Any]:
    response = client.get("/v1/queues")
    assert response.status_code == 200, response.text
    return {q["name"]: q for q in response.json()["items"]}[name]


def test_a_task_of_a_kind_no_worker_serves_fails_unknown_kind_and_names_the_nearest(
    acme: OrgClient, store: Store
) -> None:
    prefix, timeout = store.settings.queue_prefix, store.settings.unserved_timeout_seconds
    beat_node(store, "reports@host", [queue_name(k, None, prefix) for k in ("Report", "default")])
    typo = acme.create(kind="Reprot")["id"]
    served = acme.create(kind="Report")["id"]
    typo_queue = queue_name("Reprot", None, prefix)
    assert (_queue(acme, typo_queue)["waiting"], _queue(acme, typo_queue)["workers"]) == (1, 0)

    _waited(store, [typo, served], timeout - 5)  # not yet
    assert sweep_once(store)["unknown_kind"] == 0
    assert _task(acme, typo)["status"] == "queued"

    _waited(store, [typo, served], timeout + 1)
    assert sweep_once(store)["unknown_kind"] == 1
    failed = _task(acme, typo)
    assert failed["status"] == "failed" and failed["endedAt"] is not None
    [error] = failed["errors"]
    assert error["code"] == "unknown_kind"
    assert typo_queue in error["message"] and "did you mean 'Report'?" in error["message"]
    assert _task(acme, served)["status"] == "queued"  # its queue has a worker
    events = acme.get(f"/v1/tasks/{typo}/events").json()["items"]
    assert events[-1]["toStatus"] == "failed" and events[-1]["actor"] == "system:sweeper"


def test_a_node_silent_longer_than_the_timeout_no_longer_serves_its_queues(
    acme: OrgClient, store: Store
) -> None:
    prefix, timeout = store.settings.queue_prefix, store.settings.unserved_timeout_seconds
    beat_node(store, "recent@host", [queue_name("Recent", None, prefix)], silent_for=timeout / 2)
    beat_node(store, "gone@host", [queue_name("Gone", None, prefix)], silent_for=timeout + 5)
    recent, gone = acme.create(kind="Recent")["id"], acme.create(kind="Gone")["id"]
    _waited(store, [recent, gone], timeout + 1)
    assert sweep_once(store)["unknown_kind"] == 1
    assert _task(acme, recent)["status"] == "queued"
    assert _task(acme, gone)["errors"][0]["code"] == "unknown_kind"


def test_an_executor_no_worker_runs_is_named_in_the_error(acme: OrgClient, store: Store) -> None:
    prefix, timeout = store.settings.queue_prefix, store.settings.unserved_timeout_seconds
    beat_node(store, "any@host", [queue_name("default", None, prefix)])
    pool = f"pool-{uuid.uuid4().hex[:6]}"
    bound = acme.create(kind="default", executorId=pool)["id"]
    _waited(store, [bound], timeout + 1)
    assert sweep_once(store)["unknown_kind"] == 1
    message = _task(acme, bound)["errors"][0]["message"]
    assert f"on executorId '{pool}'" in message and queue_name("default", pool, prefix) in message


def test_a_node_that_comes_up_before_the_move_keeps_the_tasks(
    acme: OrgClient, store: Store
) -> None:
    """The move checks the registry again: a worker that started between the
    sweeper's look and its move takes the task instead."""
    prefix, timeout = store.settings.queue_prefix, store.settings.unserved_timeout_seconds
    task_id = acme.create(kind="Late")["id"]
    _waited(store, [task_id], timeout + 1)
    late_queue = queue_name("Late", None, prefix)
    beat_node(store, "late@host", [late_queue])
    move = Unserved(late_queue, (uuid.UUID(task_id),), timeout, "x", actor="test")
    assert execute(store, move).moved == 0
    assert _task(acme, task_id)["status"] == "queued"


@pytest.mark.parametrize("settings", [{"unserved_timeout_seconds": 0}], indirect=True)
def test_a_timeout_of_zero_never_fails_a_task(acme: OrgClient, store: Store) -> None:
    task_id = acme.create(kind="Nobody")["id"]
    _waited(store, [task_id], 86_400)
    assert sweep_once(store)["unknown_kind"] == 0
    assert _task(acme, task_id)["status"] == "queued"
