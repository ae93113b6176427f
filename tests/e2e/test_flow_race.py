"""Fan-in under concurrency: many children ending at once, each outcome delivered twice."""

from __future__ import annotations

import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import text

from tasks_core.status import Status
from tasks_core.storage.tasks import get_task
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.worker_protocol import Outcome, claim_task, finish_task
from tests.support.api import OrgClient
from tests.support.figures import report
from worker.flow_kind import run_flow

CHILDREN = 500
THREADS = 8


def test_fan_in_completes_the_flow_exactly_once_under_duplicate_concurrent_completions(
    client: OrgClient, e2e_store: Store
) -> None:
    steps = [
        {"id": f"s{i}", "kind": "CallAction", "targetId": "builtin/echo"} for i in range(CHILDREN)
    ]
    # executorId: no worker serves this pool, so this test alone drives the runs.
    created = client.create(kind="Flow", params={"steps": steps}, executorId="race-pool")
    org = uuid.UUID(client.organization_id)
    flow = claim_task(e2e_store, uuid.UUID(created["id"]), worker="race:0")
    assert flow is not None
    assert run_flow(e2e_store, flow, worker="race:0") is not None
    kids = _children(e2e_store, flow.id)
    assert len(kids) == CHILDREN

    # Every claim and every completion is delivered twice, concurrently.
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        claims = list(pool.map(lambda k: claim_task(e2e_store, k, worker="race"), _twice(kids)))
        runs = [run for run in claims if run is not None]
        assert len(runs) == CHILDREN  # one claim per child, the duplicate dropped
        results = list(pool.map(lambda r: _complete(e2e_store, r), _twice(runs)))
    elapsed = time.perf_counter() - started

    finished = [r for r in results if r is not None]
    assert len(finished) == CHILDREN  # one outcome per child, the duplicate fenced off
    with e2e_store.statement() as conn:
        parent = get_task(conn, org, flow.id)
        terminal_events = _count_events(conn, flow.id, "AND to_status IN ('completed', 'failed')")
        fan_ins = _count_events(conn, flow.id, "AND type = 'fan_in'")
        ignored = conn.execute(
            text(
                "SELECT count(*) FROM task_events e JOIN tasks t ON t.id = e.task_id "
                "WHERE t.parent_id = :f AND e.type = 'result_ignored'"
            ),
            {"f": flow.id},
        ).scalar_one()
    assert parent is not None and parent.status is Status.COMPLETED
    assert terminal_events == 1
    assert fan_ins == CHILDREN
    assert ignored == CHILDREN
    assert parent.output == {f"s{i}": {"n": f"s{i}"} for i in range(CHILDREN)}
    report(
        f"\nfan-in race: children={CHILDREN} threads={THREADS} deliveries_per_outcome=2 "
        f"terminal_events={terminal_events} fan_ins={fan_ins} ignored={ignored} "
        f"seconds={elapsed:.2f}"
    )


def _complete(store: Store, run: TaskRecord) -> TaskRecord | None:
    outcome = Outcome(Status.COMPLETED, output={"n": run.flow_step_id})
    return finish_task(store, run, outcome, worker="race")


def _twice(items: list[Any]) -> list[Any]:
    doubled = items + items
    random.Random(5).shuffle(doubled)
    return doubled


def _children(store: Store, flow_id: uuid.UUID) -> list[uuid.UUID]:
    with store.statement() as conn:
        rows = conn.execute(text("SELECT id FROM tasks WHERE parent_id = :f"), {"f": flow_id})
        return [r.id for r in rows]


def _count_events(conn: Any, task_id: uuid.UUID, condition: str) -> int:
    sql = f"SELECT count(*) FROM task_events WHERE task_id = :t {condition}"
    return int(conn.execute(text(sql), {"t": task_id}).scalar_one())
