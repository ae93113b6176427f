"""2. Workers killed with SIGKILL mid-task, again and again: nothing is lost or finished twice."""

from __future__ import annotations

import redis

from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.figures import report
from tests.support.stack import stack
from tests.support.wait import wait_until

TASKS = 500
KILLS = 5


def test_kill_9_of_workers_mid_task_loses_nothing_and_finishes_nothing_twice() -> None:
    with stack() as system:
        spec = TaskSpec(
            kind="CallAction", target_id="test/work", input={"seconds": 0.02}, max_attempts=10
        )
        ids = [create_task(system.store, system.caller, spec).id for _ in range(TASKS)]
        system.start_sweeper()
        kills = 0
        worker = system.start_worker("--concurrency", "2")
        while kills < KILLS:
            # Kill only while a task is mid-run on this worker.
            wait_until(
                lambda: system.statuses(ids).get("running", 0) > 0, timeout=60, interval=0.01
            )
            worker.kill()
            kills += 1
            worker = system.start_worker("--concurrency", "2")
        system.wait_all(ids, ("completed", "failed"), timeout=300)

        counts = system.statuses(ids)
        terminal = system.terminal_events(ids)
        client = redis.Redis.from_url(system.settings.redis_url)
        started = sum(int(client.get(f"started:{i}") or 0) for i in ids)
        finished = sum(int(client.get(f"finished:{i}") or 0) for i in ids)
        lost = TASKS - counts.get("completed", 0) - counts.get("failed", 0)
        double = sum(1 for n in terminal.values() if n != 1)
        assert lost == 0 and double == 0, (counts, double)
        assert counts.get("completed", 0) == TASKS, counts
        assert "running" not in counts
        report(
            f"\nworker kills: tasks={TASKS} kills={kills} lost={lost} double={double} "
            f"handler_starts={started} handler_finishes={finished} "
            f"interrupted_runs={started - finished}"
        )
