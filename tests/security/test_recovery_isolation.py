"""Nothing one tenant's tasks hold can stop the sweeper for the others: a task
whose recovery fails is skipped (and, failing again and again, given up on),
each kind of recovery runs on its own, and a run its worker renewed after the
sweeper saw it expire is never given a new attempt. Real PostgreSQL and Redis;
faults are injected where they happen for real: a broker refusing one
message, a database trigger refusing one task's row."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from tasks_core.flow_definitions import Step
from tasks_core.lifecycle.engine import hold_expired_runs, renew_leases
from tasks_core.lifecycle.moves import Attempt, Expired, RecoverLease
from tasks_core.lifecycle.publishing import execute
from tasks_core.publisher import CeleryPublisher, MemoryPublisher, Publisher, TaskMessage
from tasks_core.records import Caller
from tasks_core.recovery import SweepReport, sweep_once
from tasks_core.settings import Settings
from tasks_core.status import Status
from tasks_core.storage.db import make_engine
from tasks_core.store import Store
from tasks_core.task import TaskRecord, TaskSpec
from tasks_core.usecases.create import create_task
from tasks_core.worker_protocol import claim_task, start_flow_run
from tests.support.api import issue_key
from tests.support.figures import report
from tests.support.wait import wait_until

WORKER = "node-9:1"


def caller_of(engine: Engine, organization: str) -> Caller:
    _, key_id, org_id = issue_key(engine, organization)
    return Caller(organization_id=uuid.UUID(org_id), key_id=uuid.UUID(key_id))


@dataclass
class RefusingBroker:
    """The real broker, refusing the messages of some tasks (as a broker
    rejecting one message would) while it answers for everything else."""

    inner: Publisher
    refused: set[str] = field(default_factory=set)

    def publish(
        self, message: TaskMessage, *, countdown: float | None = None, coalesce: bool = False
    ) -> None:
        if message.task_id in self.refused:
            raise ValueError(f"the broker refused the message of task {message.task_id}")
        self.inner.publish(message, countdown=countdown)

    def ping(self) -> bool:
        return self.inner.ping()

    def depths(self, queues: Iterable[str]) -> dict[str, int]:
        return self.inner.depths(queues)


@pytest.fixture
def sweeper_settings(settings: Settings) -> Settings:
    # Recovery within a fraction of a second, so that passes follow each other.
    # No worker node serves these queues: the tasks are to be republished, not
    # failed unknown_kind (tests/integration/test_unserved.py).
    fast = {"republish_after_seconds": 0.05, "lease_seconds": 0.05, "recovery_max_failures": 5}
    return settings.model_copy(update={**fast, "unserved_timeout_seconds": 0})


@pytest.fixture
def broker(settings: Settings) -> Iterator[RefusingBroker]:
    publisher = CeleryPublisher(settings.redis_url)
    yield RefusingBroker(publisher)
    publisher.close()


@pytest.fixture
def sweeper(engine: Engine, sweeper_settings: Settings, broker: RefusingBroker) -> Store:
    return Store(engine=engine, publisher=broker, settings=sweeper_settings)


def created_unpublished(store: Store, caller: Caller, count: int, **spec: Any) -> list[TaskRecord]:
    """Tasks stored `created` whose publish was lost (the broker was down)."""
    lost = Store(engine=store.engine, publisher=MemoryPublisher(fail=True), settings=store.settings)
    return [create_task(lost, caller, TaskSpec(kind="default", **spec)) for _ in range(count)]


def expire_leases(store: Store, ids: Sequence[uuid.UUID]) -> None:
    with store.statement() as conn:
        conn.execute(
            text(
                "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = ANY(:i)"
            ),
            {"i": list(ids)},
        )


def tasks_now(store: Store, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, TaskRecord]:
    with store.statement() as conn:
        rows = conn.execute(text("SELECT * FROM tasks WHERE id = ANY(:i)"), {"i": list(ids)})
        return {r["id"]: TaskRecord.from_row(r) for r in rows.mappings()}


def event_types(store: Store, task_id: uuid.UUID) -> list[str]:
    with store.statement() as conn:
        rows = conn.execute(
            text("SELECT type FROM task_events WHERE task_id = :i ORDER BY id"), {"i": task_id}
        )
        return [r.type for r in rows]


def sweep_until(store: Store, done: Any, *, timeout: float = 20) -> tuple[Counter[str], int]:
    """Sweep pass after pass until ``done()``; the counts of every pass, and how many."""
    totals: Counter[str] = Counter()
    passes = 0

    def step() -> bool:
        nonlocal passes
        totals.update(sweep_once(store).counts)
        passes += 1
        return bool(done())

    wait_until(step, timeout=timeout, interval=0.01)
    return totals, passes


def failed_with(store: Store, ids: Iterable[uuid.UUID], code: str) -> bool:
    now = tasks_now(store, ids).values()
    return all(t.status is Status.FAILED and t.errors[0]["code"] == code for t in now)


# --- A task whose recovery raises ----------------------------------------------------------


def test_a_poisoned_sweep_recovers_every_other_task_and_gives_up_on_the_poisoned(
    engine: Engine, sweeper: Store, broker: RefusingBroker, sweeper_settings: Settings
) -> None:
    acme, globex = caller_of(engine, "acme"), caller_of(engine, "globex")
    poisoned = created_unpublished(sweeper, acme, 3)
    healthy = created_unpublished(sweeper, acme, 47) + created_unpublished(sweeper, globex, 50)
    broker.refused = {str(t.id) for t in poisoned}
    # The other kinds of recovery have work too: a lost run, a task past its queue timeout.
    lost_run = created_unpublished(sweeper, globex, 1, max_attempts=2)[0]
    run = claim_task(sweeper, lost_run.id, worker=WORKER)
    assert run is not None
    expire_leases(sweeper, [run.id])
    late = created_unpublished(sweeper, globex, 1, queue_timeout_seconds=0.01)[0]
    stale = [t.id for t in poisoned + healthy]
    with sweeper.statement() as conn:  # all of them waited long enough
        conn.execute(
            text("UPDATE tasks SET updated_at = now() - interval '1 minute', "
                 "created_at = now() - interval '1 minute' WHERE id = ANY(:i)"),
            {"i": [*stale, late.id]},
        )  # fmt: skip

    first: SweepReport = sweep_once(sweeper)

    assert first.republished == len(healthy)
    assert first["republish_skipped"] == len(poisoned)
    assert (first.requeued, first.queue_timeouts) == (1, 1)  # the other kinds ran
    assert all(
        t.status is Status.QUEUED for t in tasks_now(sweeper, [t.id for t in healthy]).values()
    )
    poisoned_ids = [t.id for t in poisoned]
    totals, passes = sweep_until(
        sweeper, lambda: failed_with(sweeper, poisoned_ids, "recovery_failed")
    )
    totals.update(first.counts)
    bound = sweeper_settings.recovery_max_failures
    assert totals["recovery_failed"] == len(poisoned)
    assert totals["republish_skipped"] == bound * len(poisoned)
    for task in poisoned:
        assert event_types(sweeper, task.id).count("recovery_error") == bound
    healthy_now = tasks_now(sweeper, [t.id for t in healthy])
    assert {t.status for t in healthy_now.values()} == {Status.QUEUED}
    assert {t.recovery_failures for t in healthy_now.values()} == {0}
    with redis.Redis.from_url(sweeper.settings.redis_url) as client:
        # One message for each healthy task and for the lost run's new attempt.
        assert client.llen("tasks.default") == len(healthy) + 1
    report(
        f"\npoisoned sweep: tasks={len(stale)} poisoned={len(poisoned)} "
        f"recovered={first.republished} skipped={first['republish_skipped']} "
        f"failed_recovery_failed={totals['recovery_failed']} after_passes={passes + 1}"
    )


POISON = (
    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'task % is poisoned', NEW; END $$",
    # The new attempt of that task alone can not be logged, so not made.
    "CREATE TRIGGER poison BEFORE INSERT ON task_events FOR EACH ROW "
    "WHEN (NEW.task_id = '{task}' AND NEW.type = 'status' AND NEW.to_status = 'queued') "
    "EXECUTE FUNCTION poison()",
)


def test_a_run_whose_recovery_the_database_refuses_is_skipped_then_fails_its_flow(
    engine: Engine, sweeper: Store
) -> None:
    """The database itself refuses to give one lost run a new attempt (a
    trigger on that task): the other lost runs are recovered on every pass,
    and the refused one, a Flow's step, fails ``recovery_failed`` and fails
    its Flow like any failed step."""
    caller = caller_of(engine, "acme")
    spec = {"kind": "default", "maxAttempts": 3}
    flow = create_task(sweeper, caller, TaskSpec(
        kind="Flow", executor_id="nobody",
        params={"steps": [{"id": "a", **spec}, {"id": "b", **spec}]},
    ))  # fmt: skip
    claimed = claim_task(sweeper, flow.id, worker=WORKER)
    assert claimed is not None
    steps = [Step(id=s, kind="default", after=(), max_attempts=3) for s in ("a", "b")]
    assert start_flow_run(sweeper, claimed, steps, worker=WORKER) is not None
    with sweeper.statement() as conn:
        step_a = conn.execute(
            text("SELECT id FROM tasks WHERE parent_id = :f AND flow_step_id = 'a'"), {"f": flow.id}
        ).scalar_one()
    others = [create_task(sweeper, caller, TaskSpec(kind="default", max_attempts=3)).id
              for _ in range(9)]  # fmt: skip
    for task_id in [step_a, *others]:
        assert claim_task(sweeper, task_id, worker=WORKER) is not None
    expire_leases(sweeper, [step_a, *others])
    with sweeper.statement() as conn:
        for ddl in POISON:
            conn.exec_driver_sql(ddl.replace("{task}", str(step_a)).replace("%", "%%"))

    first = sweep_once(sweeper)

    assert (first.requeued, first["recover_lease_skipped"]) == (len(others), 1)
    totals, _ = sweep_until(sweeper, lambda: failed_with(sweeper, [step_a], "recovery_failed"))
    assert totals["recovery_failed"] == 1
    now = tasks_now(sweeper, [flow.id, step_a, *others])
    assert now[flow.id].status is Status.FAILED
    assert now[flow.id].errors[0]["code"] == "step_failed"
    assert "recovery_failed" in now[flow.id].errors[0]["message"]
    assert all(now[i].status is Status.QUEUED and now[i].attempt == 1 for i in others)


def test_a_run_whose_row_refuses_every_write_holds_up_no_other_lost_run(
    engine: Engine, sweeper: Store
) -> None:
    """The sweeper can not even take hold of one expired run (a trigger
    refuses every update of its row): the other lost runs get their new
    attempt all the same, pass after pass."""
    caller = caller_of(engine, "acme")
    runs = [create_task(sweeper, caller, TaskSpec(kind="default", max_attempts=3)).id
            for _ in range(6)]  # fmt: skip
    for task_id in runs:
        assert claim_task(sweeper, task_id, worker=WORKER) is not None
    expire_leases(sweeper, runs)
    stuck, others = runs[0], runs[1:]
    with sweeper.statement() as conn:
        conn.exec_driver_sql(POISON[0].replace("%", "%%"))
        conn.exec_driver_sql(
            f"CREATE TRIGGER poison BEFORE UPDATE ON tasks FOR EACH ROW "
            f"WHEN (OLD.id = '{stuck}') EXECUTE FUNCTION poison()"
        )

    passed = sweep_once(sweeper)

    assert (passed.requeued, passed["recover_lease_skipped"]) == (len(others), 1)
    now = tasks_now(sweeper, runs)
    assert all(now[i].status is Status.QUEUED for i in others)
    assert (now[stuck].status, now[stuck].attempt) == (Status.RUNNING, 1)


def test_a_kind_of_recovery_that_fails_as_a_whole_does_not_stop_the_others(
    engine: Engine, sweeper: Store
) -> None:
    """Expired idempotency keys can not be deleted (their table is locked by
    another session, past the statement timeout): the pass still times out,
    recovers and republishes tasks."""
    caller = caller_of(engine, "acme")
    late = created_unpublished(sweeper, caller, 1, queue_timeout_seconds=0.01)[0]
    lost = created_unpublished(sweeper, caller, 1)[0]
    with sweeper.statement() as conn:
        conn.execute(
            text("UPDATE tasks SET updated_at = now() - interval '1 minute', "
                 "created_at = now() - interval '1 minute' WHERE id = ANY(:i)"),
            {"i": [late.id, lost.id]},
        )  # fmt: skip
    patience = sweeper.settings.model_copy(update={"db_statement_timeout_ms": 300})
    impatient = Store(
        engine=make_engine(patience.database_url, patience),
        publisher=sweeper.publisher,
        settings=patience,
    )
    try:
        with engine.connect() as other, other.begin():
            other.execute(text("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE"))
            passed = sweep_once(impatient)
    finally:
        impatient.dispose()

    assert passed["forget_idempotency_keys_error"] == 1
    assert (passed.queue_timeouts, passed.republished) == (1, 1)
    now = tasks_now(sweeper, [late.id, lost.id])
    assert (now[late.id].status, now[lost.id].status) == (Status.FAILED, Status.QUEUED)


# --- The lease fence -------------------------------------------------------------------------


def test_a_run_renewed_after_the_sweeper_saw_it_expire_is_not_recovered(
    engine: Engine, sweeper: Store
) -> None:
    caller = caller_of(engine, "acme")
    task = create_task(sweeper, caller, TaskSpec(kind="default", max_attempts=3))
    run = claim_task(sweeper, task.id, worker=WORKER)
    assert run is not None
    expire_leases(sweeper, [task.id])
    with sweeper.statement() as conn:
        [seen] = hold_expired_runs(conn, batch=10, hold_seconds=30)
    with sweeper.statement() as conn:  # the worker was slow, not dead: it renews
        assert renew_leases(conn, [Attempt.of(run)], lease_seconds=30) == {task.id}

    recovered = execute(sweeper, RecoverLease((Expired.of(seen),), actor="system:sweeper"))

    assert recovered.tasks == {}
    after = tasks_now(sweeper, [task.id])[task.id]
    assert (after.status, after.attempt, after.worker) == (Status.RUNNING, 1, WORKER)
    # The same run, not renewed, is recovered (the fence is the lease, nothing else).
    expire_leases(sweeper, [task.id])
    with sweeper.statement() as conn:
        [seen] = hold_expired_runs(conn, batch=10, hold_seconds=30)
    again = execute(sweeper, RecoverLease((Expired.of(seen),), actor="system:sweeper"))
    assert again.tasks[task.id].status is Status.QUEUED
