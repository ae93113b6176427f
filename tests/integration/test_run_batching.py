"""Claims and outcomes of a worker process's runs, sent in sets (worker/batching.py)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text

from tasks_core.status import Status
from tasks_core.store import Store
from tasks_core.worker_protocol import Outcome, claim_task, hand_back
from tests.support.api import OrgClient
from tests.support.figures import report
from tests.support.stack import stored_task
from tests.support.wait import wait_until
from worker.batching import ClaimRequest, OutcomeRequest, RunBatchers, batchers_for
from worker.flow_kind import run_flow
from worker.runner import run_task, worker_name

K = 8


@contextmanager
def counted(store: Store) -> Iterator[list[int]]:
    """The statements run on the store while inside."""
    count = [0]

    def _one(*_: Any) -> None:
        count[0] += 1

    event.listen(store.engine, "before_cursor_execute", _one)
    try:
        yield count
    finally:
        event.remove(store.engine, "before_cursor_execute", _one)


def _tasks(client: OrgClient, n: int, pool: str) -> list[uuid.UUID]:
    # executorId: no worker serves this pool, so the test alone runs them.
    return [uuid.UUID(client.create(kind="default", executorId=pool)["id"]) for _ in range(n)]


def test_runs_that_wait_together_take_fewer_statements_per_task(
    acme: OrgClient, store: Store
) -> None:
    (alone,) = _tasks(acme, 1, "batch-pool")
    with counted(store) as one:
        assert run_task(store, str(alone)) is not None
    ids = _tasks(acme, K, "batch-pool")
    claims = batchers_for(store, worker_name()).claims
    with store.engine.connect() as lock, counted(store) as many:
        # The first run's claim waits on this row lock, so that the other
        # runs' claims pile up behind it, as behind any claim in flight.
        lock.execute(text("SELECT 1 FROM tasks WHERE id = :i FOR UPDATE"), {"i": ids[0]})
        many[0] = 0
        runs = [threading.Thread(target=run_task, args=(store, str(i))) for i in ids]
        runs[0].start()
        wait_until(lambda: claims._busy, timeout=10, message="first claim not sent")
        for run in runs[1:]:
            run.start()
        wait_until(lambda: claims.waiting == K - 1, timeout=10, message="claims not waiting")
        lock.commit()
        for run in runs:
            run.join(20)
    assert all(stored_task(store, acme.organization_id, i).status is Status.COMPLETED for i in ids)
    per_task = many[0] / K
    assert one[0] == 2  # one claim, one outcome
    assert per_task < one[0]
    report(f"run path statements per task: one_by_one={one[0]} set_of_{K}={per_task:.2f}")


def test_a_task_named_twice_in_a_set_of_claims_is_claimed_once(
    acme: OrgClient, store: Store
) -> None:
    first, second = _tasks(acme, 2, "batch-pool")
    batchers = RunBatchers(store, "batch:1")
    requests = [ClaimRequest(first, None), ClaimRequest(second, None), ClaimRequest(first, None)]
    claimed = batchers._claim(requests)
    assert [r is not None for r in claimed] == [True, True, False]
    assert claimed[0] is not None and claimed[0].attempt == 1


def test_a_stale_outcome_in_a_set_is_dropped_and_the_others_applied(
    acme: OrgClient, store: Store
) -> None:
    a, b, c = _tasks(acme, 3, "batch-pool")
    run_a = claim_task(store, a, worker="batch:1")
    run_b = claim_task(store, b, worker="gone:1")
    run_c = claim_task(store, c, worker="batch:1")
    assert run_a and run_b and run_c
    # b's worker is presumed gone: b is handed back and runs again, attempt 2.
    assert hand_back(store, node_prefix="gone:", actor="test") == 1
    again = claim_task(store, b, worker="batch:2")
    assert again is not None and again.attempt == 2
    done = Outcome(Status.COMPLETED, output={"ok": True})
    batchers = RunBatchers(store, "batch:1")
    written = batchers._finish([OutcomeRequest(r, done) for r in (run_a, run_b, run_c)])
    assert [w is not None for w in written] == [True, False, True]
    assert stored_task(store, acme.organization_id, a).status is Status.COMPLETED
    assert stored_task(store, acme.organization_id, c).status is Status.COMPLETED
    current = stored_task(store, acme.organization_id, b)
    assert current.status is Status.RUNNING and current.attempt == 2 and current.output is None


def test_steps_of_one_flow_ending_in_one_set_fan_in_exactly_once(
    acme: OrgClient, store: Store
) -> None:
    steps = [{"id": f"s{i}", "kind": "CallAction", "targetId": "builtin/echo"} for i in range(4)]
    created = acme.create(kind="Flow", params={"steps": steps}, executorId="batch-pool")
    flow = claim_task(store, uuid.UUID(created["id"]), worker="batch:0")
    assert flow is not None and run_flow(store, flow, worker="batch:0") is not None
    with store.statement() as conn:
        rows = conn.execute(text("SELECT id FROM tasks WHERE parent_id = :f"), {"f": flow.id})
        kids = [r.id for r in rows]
    runs = [claim_task(store, k, worker="batch:1") for k in kids]
    requests = [
        OutcomeRequest(r, Outcome(Status.COMPLETED, output={"n": r.flow_step_id}))
        for r in runs
        if r is not None
    ]
    assert len(requests) == 4
    written = RunBatchers(store, "batch:1")._finish(requests)
    assert all(w is not None for w in written)
    ended = stored_task(store, acme.organization_id, flow.id)
    with store.statement() as conn:
        events = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE to_status IN ('completed', 'failed')) AS ends, "
                "count(*) FILTER (WHERE type = 'fan_in') AS fan_ins "
                "FROM task_events WHERE task_id = :t"
            ),
            {"t": flow.id},
        ).one()
    assert ended.status is Status.COMPLETED
    assert ended.output == {f"s{i}": {"n": f"s{i}"} for i in range(4)}
    assert events.ends == 1
    assert events.fan_ins == 4


def test_renewals_of_a_set_go_in_one_statement_and_a_stale_run_is_not_renewed(
    acme: OrgClient, store: Store
) -> None:
    a, b = _tasks(acme, 2, "batch-pool")
    run_a = claim_task(store, a, worker="batch:1")
    run_b = claim_task(store, b, worker="batch:1")
    assert run_a and run_b
    with counted(store) as statements:
        renewed = RunBatchers(store, "batch:1")._renew([(a, run_a.attempt), (b, run_b.attempt + 1)])
    assert renewed == [True, False]
    assert statements[0] == 1


def test_one_thread_watches_all_the_runs_of_a_process(acme: OrgClient, store: Store) -> None:
    ids = [
        uuid.UUID(
            acme.create(
                kind="CallAction",
                targetId="builtin/sleep",
                input={"seconds": 2},
                executorId="batch-pool",
            )["id"]
        )
        for _ in range(4)
    ]
    runs = [threading.Thread(target=run_task, args=(store, str(i))) for i in ids]
    for run in runs:
        run.start()
    wait_until(
        lambda: all(
            stored_task(store, acme.organization_id, i).status is Status.RUNNING for i in ids
        ),
        timeout=10,
        message="not all running",
    )
    watching = [t.name for t in threading.enumerate() if t.name.startswith("watch")]
    for run in runs:
        run.join(20)
    assert watching == ["watch-runs"]
    assert all(stored_task(store, acme.organization_id, i).status is Status.COMPLETED for i in ids)
