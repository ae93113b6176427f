"""One organization can not take every slot of a pool (MAX_RUNNING_PER_ORG):
on a real worker of four slots, an organization that floods its queue runs at
most its limit at once, and another organization's tasks, sent after the
flood, start while the flood still waits."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tests.support.api import OrgClient, issue_key
from tests.support.figures import report
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

LIMIT = 2


@pytest.fixture(scope="module")
def fair_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """Four slots, at most LIMIT of them for one organization's tasks of a queue."""
    return start_worker("--concurrency", "4", env={"MAX_RUNNING_PER_ORG": str(LIMIT)})


def sleeper(seconds: float) -> dict[str, Any]:
    return {"kind": "CallAction", "targetId": "builtin/sleep", "input": {"seconds": seconds}}


def counts(engine: Engine, org: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, count(*) AS n FROM tasks WHERE organization_id = :org GROUP BY 1"),
            {"org": uuid.UUID(org)},
        )
        return {r.status: int(r.n) for r in rows}


def waited(task: dict[str, Any]) -> float:
    started = datetime.fromisoformat(task["startedAt"])
    return (started - datetime.fromisoformat(task["createdAt"])).total_seconds()


def test_a_flooding_organization_runs_at_most_its_limit_and_the_others_get_their_turn(
    client: OrgClient,
    e2e_http: TestClient,
    e2e_engine: Engine,
    fair_worker: WorkerProcess,
) -> None:
    flood = client
    secret, key_id, org_id = issue_key(e2e_engine, f"org-b-{uuid.uuid4().hex[:8]}")
    other = OrgClient(http=e2e_http, key=secret, key_id=key_id, organization_id=org_id)

    flooded = [flood.create(**sleeper(2.0))["id"] for _ in range(50)]
    wait_until(
        lambda: counts(e2e_engine, flood.organization_id).get("running", 0) > 0,
        timeout=20,
        message="the flood never started",
    )
    sent = [other.create(**sleeper(0.2))["id"] for _ in range(5)]

    flood_running: list[int] = []

    def others_done() -> bool:
        flood_running.append(counts(e2e_engine, flood.organization_id).get("running", 0))
        return counts(e2e_engine, other.organization_id).get("completed", 0) == len(sent)

    wait_until(others_done, timeout=30, interval=0.05, message="the other organization waited")
    left = counts(e2e_engine, flood.organization_id)
    tasks = [other.get(f"/v1/tasks/{task_id}").json() for task_id in sent]
    for task_id in flooded:  # the rest of the flood is not needed
        answer = flood.post(f"/v1/tasks/{task_id}/cancel")
        assert answer.status_code in (200, 409), answer.text

    assert max(flood_running) == LIMIT, flood_running  # at its limit, never above it
    # The other organization did not wait for the flood to drain.
    assert left.get("queued", 0) + left.get("created", 0) >= 30, left
    assert all(t["status"] == "completed" for t in tasks), tasks
    # A task over the limit waits its turn: it does not fail.
    assert left.get("failed", 0) == 0, left
    p50 = statistics.median(waited(t) for t in tasks)
    report(
        f"fairness: org_a_max_running={max(flood_running)} limit={LIMIT} org_b_p50_wait={p50:.2f}s"
    )


def test_tasks_over_the_limit_all_run_in_turn(
    client: OrgClient, fair_worker: WorkerProcess
) -> None:
    ids = [client.create(**sleeper(0.1))["id"] for _ in range(8)]
    wait_until(
        lambda: all(
            client.get(f"/v1/tasks/{task_id}").json()["status"] == "completed" for task_id in ids
        ),
        timeout=30,
        message="tasks over the limit were not all run",
    )
