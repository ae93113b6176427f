"""After PostgreSQL was out of reach, and when it starts, the sweeper judges
no worker by its silence until a live one could have broken it: an expired
lease is recovered only once PostgreSQL has been reachable for a lease, and
a queue is taken for unserved only once it has been for two worker
heartbeats (``tasks_core.recovery.Hearing``). A PostgreSQL that answers no
one for a while (frozen, as across a network cut that drops packets) counts
as out of reach once a call has waited for it too long. A real PostgreSQL is
stopped and started, or frozen and thawed; each pass is run by hand.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from tasks_core.recovery import (
    HELD_BACK,
    Hearing,
    recover_expired_leases,
    slow_answer_seconds,
    sweep_once,
)
from tasks_core.status import Status
from tasks_core.storage.tasks import expired_runs
from tasks_core.task import TaskRecord
from tasks_core.worker_protocol import Outcome, claim_task, finish_task
from tests.support.cuts import postgres_frozen
from tests.support.stack import Stack, stack
from tests.support.wait import wait_until

WORKER = "test-node:1"


def _expired_run(system: Stack) -> TaskRecord:
    """A task claimed by a worker whose lease has run out."""
    [task_id] = system.create(1)
    run = claim_task(system.store, task_id, worker=WORKER)
    assert run is not None

    def expired() -> bool:
        with system.store.statement() as conn:
            return task_id in expired_runs(conn, batch=10)

    wait_until(expired, timeout=30, message="the claimed run's lease did not run out")
    return run


def _through_an_outage(system: Stack, hearing: Hearing) -> None:
    """One pass while PostgreSQL is stopped, then PostgreSQL again."""
    system.postgres.stop()
    down = sweep_once(system.store, hearing)
    assert down["statistics_error"] == 1, down  # the pass found PostgreSQL out of reach
    system.postgres.start()


def _outcome_is_kept(system: Stack, run: TaskRecord) -> None:
    """The run's worker, alive all along, writes its outcome: it is the task's."""
    written = finish_task(
        system.store, run, Outcome(status=Status.COMPLETED, output={"ok": 1}), worker=WORKER
    )
    assert written is not None and written.status is Status.COMPLETED
    assert system.terminal_events([run.id]) == {run.id: 1}


def test_a_pass_that_waited_out_a_frozen_postgres_recovers_no_lease_that_ran_out_then() -> None:
    with stack() as system:
        hearing, lease = Hearing(), system.settings.lease_seconds
        slow = slow_answer_seconds(system.settings)
        wait_until(lambda: sweep_once(system.store, hearing) is not None
                   and hearing.heard_for() >= lease, timeout=30, interval=0.05,
                   message="the sweeper never heard PostgreSQL for a lease")  # fmt: skip
        [task_id] = system.create(1)
        run = claim_task(system.store, task_id, worker=WORKER)
        assert run is not None and run.lease_expires_at is not None
        expiry = run.lease_expires_at + timedelta(seconds=0.2)

        with ThreadPoolExecutor(1) as pool, postgres_frozen(system):  # thawed, then joined
            asked = time.monotonic()
            waiting = pool.submit(sweep_once, system.store, hearing)  # blocks on PostgreSQL
            # Frozen past the run's lease: its worker could not renew it either.
            wait_until(lambda: datetime.now(UTC) > expiry and time.monotonic() - asked > slow,
                       timeout=30, message="the run's lease did not run out")  # fmt: skip
            assert not waiting.done()
        report = waiting.result(timeout=60)

        assert report.lost == 0 and report.requeued == 0, report
        assert system.task(task_id).status == "running"
        assert hearing.heard_for() < lease  # the wait starts again from the late answer
        _outcome_is_kept(system, run)


def test_runs_held_by_a_hold_answered_late_are_left_to_their_workers() -> None:
    with stack() as system:
        run = _expired_run(system)
        slow = slow_answer_seconds(system.settings)

        with ThreadPoolExecutor(1) as pool, postgres_frozen(system):  # thawed, then joined
            asked = time.monotonic()
            holding = pool.submit(recover_expired_leases, system.store)
            wait_until(lambda: time.monotonic() - asked > slow, timeout=30,
                       message="the clock stood still")  # fmt: skip
        tally = holding.result(timeout=60)

        assert dict(tally) == {HELD_BACK: 1}
        assert system.task(run.id).status == "running"
        _outcome_is_kept(system, run)


def test_an_outcome_written_when_postgres_returns_is_kept_though_its_lease_ran_out() -> None:
    with stack() as system:
        run, hearing = _expired_run(system), Hearing()
        _through_an_outage(system, hearing)

        wait_until(lambda: sweep_once(system.store, hearing)["statistics_error"] == 0,
                   timeout=30, message="the sweeper did not reach PostgreSQL again")  # fmt: skip
        # The run's worker is alive and holds its outcome: the pass leaves the run to it.
        assert system.task(run.id).status == "running"
        _outcome_is_kept(system, run)
        assert sweep_once(system.store, hearing).lost == 0


def test_a_run_no_worker_renews_after_an_outage_is_recovered_once_a_lease_has_passed() -> None:
    with stack() as system:
        run, hearing = _expired_run(system), Hearing()
        _through_an_outage(system, hearing)
        lease = system.settings.lease_seconds

        wait_until(lambda: sweep_once(system.store, hearing).lost == 1, timeout=30,
                   interval=0.05, message="the expired run was never recovered")  # fmt: skip

        assert hearing.heard_for() >= lease  # not before PostgreSQL was reachable for a lease
        assert system.task(run.id).status == "failed"  # its one attempt was spent: worker_lost


def test_a_sweeper_starting_takes_no_queue_for_unserved_before_two_worker_heartbeats() -> None:
    heartbeat = 0.5
    with stack(worker_heartbeat_seconds=heartbeat, unserved_timeout_seconds=5) as system:
        [task_id] = system.create(1, kind="NoWorkerServesThis")
        with system.store.statement() as conn:  # it has waited past the unserved timeout
            conn.execute(
                text("UPDATE tasks SET created_at = now() - interval '60 s' WHERE id = :i"),
                {"i": task_id},
            )
        hearing = Hearing()  # a sweeper that has just started

        first = sweep_once(system.store, hearing)
        assert first["unknown_kind"] == 0 and system.task(task_id).status == "queued"
        wait_until(lambda: sweep_once(system.store, hearing)["unknown_kind"] == 1, timeout=30,
                   interval=0.05, message="the unserved task never failed")  # fmt: skip
        assert hearing.heard_for() >= 2 * heartbeat
