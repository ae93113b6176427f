"""5. One message delivered twice at once; 6. a stale attempt finishing late;
7. a poison task that kills its worker every time."""

from __future__ import annotations

import importlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from sqlalchemy import text

# The real runner runs in this process here: register the test actions in it.
import tests.support.handlers  # noqa: F401
from tasks_core.status import Status
from tasks_core.storage.tasks import get_task
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tasks_core.worker_protocol import Outcome, claim_task, finish_task, retry_task
from tests.support.figures import report
from tests.support.stack import stack
from worker.runner import run_task

TASKS = 50


def test_a_message_delivered_twice_at_once_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with stack() as system:
        # The real runner runs in this process here: register the test actions in it.
        monkeypatch.setenv("REDIS_URL", system.settings.redis_url)
        importlib.import_module("tests.support.handlers")
        spec = TaskSpec(kind="CallAction", target_id="test/work", input={"seconds": 0.05})
        ids = [create_task(system.store, system.caller, spec).id for _ in range(TASKS)]
        # Both deliveries of each message race in two threads of real runner code.
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: run_task(system.store, str(i)), ids + ids))
        ran = [r for r in results if r is not None]
        client = redis.Redis.from_url(system.settings.redis_url)
        handler_runs = sum(int(client.get(f"started:{i}") or 0) for i in ids)
        terminal = system.terminal_events(ids)
        with system.store.statement() as conn:
            claims = conn.execute(
                text(
                    "SELECT count(*) FROM task_events WHERE task_id = ANY(:ids) "
                    "AND to_status = 'running'"
                ),
                {"ids": ids},
            ).scalar_one()
        assert len(ran) == TASKS and handler_runs == TASKS and claims == TASKS
        assert set(terminal.values()) == {1}
        report(
            f"\nduplicate delivery: tasks={TASKS} deliveries={2 * TASKS} claims={claims} "
            f"handler_runs={handler_runs} terminal_events={sum(terminal.values())}"
        )


def test_a_stale_attempt_finishing_after_its_retry_started_changes_nothing() -> None:
    with stack() as system:
        task = create_task(system.store, system.caller, TaskSpec(kind="default", max_attempts=3))
        first = claim_task(system.store, task.id, worker="a:1")
        assert first is not None
        failed = Outcome(Status.FAILED, errors=[{"code": "x", "message": "first attempt failed"}])
        assert retry_task(system.store, first, failed, delay=0, worker="a:1") is not None
        second = claim_task(system.store, task.id, worker="b:2")
        assert second is not None and second.attempt == 2
        late = finish_task(
            system.store, first, Outcome(Status.COMPLETED, output="stale"), worker="a:1"
        )
        with system.store.statement() as conn:
            now = get_task(conn, system.caller.organization_id, task.id)
        assert late is None and now is not None
        assert (now.status, now.attempt, now.output) == (Status.RUNNING, 2, None)
        done = finish_task(
            system.store, second, Outcome(Status.COMPLETED, output="fresh"), worker="b:2"
        )
        assert done is not None and done.output == "fresh"
        assert system.terminal_events([task.id]) == {task.id: 1}
        report("\nstale attempt: attempts=2 stale_writes_applied=0 terminal_events=1")


def test_a_poison_task_fails_after_its_attempts_instead_of_looping() -> None:
    with stack() as system:
        spec = TaskSpec(kind="CallAction", target_id="test/poison", max_attempts=3)
        task = create_task(system.store, system.caller, spec)
        healthy = create_task(system.store, system.caller, TaskSpec(kind="default"))
        system.start_worker("--concurrency", "2")
        system.start_sweeper()
        system.wait_all([task.id], ("failed",), timeout=120)
        with system.store.statement() as conn:
            final = get_task(conn, system.caller.organization_id, task.id)
        assert final is not None and final.errors[0]["code"] == "worker_lost"
        attempts = int(
            redis.Redis.from_url(system.settings.redis_url).get(f"attempts:{task.id}") or 0
        )
        assert final.attempt == 3 and attempts == 3
        system.wait_all([healthy.id], ("completed",), timeout=30)  # the pool survived
        report(
            f"\npoison: max_attempts=3 handler_runs={attempts} status={final.status.value} "
            f"code={final.errors[0]['code']}"
        )


def test_sigterm_hands_back_a_long_task_and_another_worker_finishes_it() -> None:
    with stack() as system:
        spec = TaskSpec(kind="CallAction", target_id="test/stubborn", input={"seconds": 3})
        task = create_task(system.store, system.caller, spec)
        quick = create_task(system.store, system.caller, TaskSpec(kind="CallAction",
                            target_id="builtin/sleep", input={"seconds": 0.5}))  # fmt: skip
        first = system.start_worker("--concurrency", "2", env={"SHUTDOWN_GRACE_SECONDS": "1"})
        system.wait_all([task.id, quick.id], ("running",), timeout=30)
        first.stop(timeout=30)  # SIGTERM: warm shutdown, then hand-back after the grace
        assert first.process is not None and first.process.returncode is not None
        counts = system.statuses([task.id, quick.id])
        assert "running" not in counts, counts  # nothing left without a live owner
        system.wait_all([quick.id], ("completed",), timeout=5)  # finished within the grace
        system.start_worker("--concurrency", "2")
        system.wait_all([task.id], ("completed",), timeout=60)
        with system.store.statement() as conn:
            final = get_task(conn, system.caller.organization_id, task.id)
        assert final is not None and final.attempt == 2
        report("\ngraceful shutdown: finished_in_grace=1 handed_back=1 left_running=0")
