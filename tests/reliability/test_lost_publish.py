"""1. The publish is lost after the commit: the sweeper runs the task anyway."""

from __future__ import annotations

from tasks_core.publisher import MemoryPublisher
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.figures import report
from tests.support.stack import stack

TASKS = 100


def test_tasks_whose_publish_was_lost_are_run_by_the_sweeper() -> None:
    with stack() as system:
        # The broker "fails" right after each commit: every task stays `created`.
        broken = Store(
            engine=system.store.engine,
            publisher=MemoryPublisher(fail=True),
            settings=system.settings,
        )
        spec = TaskSpec(kind="CallAction", target_id="builtin/echo")
        ids = [create_task(broken, system.caller, spec).id for _ in range(TASKS)]
        assert system.statuses(ids) == {"created": TASKS}
        system.start_worker("--concurrency", "2")
        system.start_sweeper()
        system.wait_all(ids, ("completed",), timeout=120)
        stuck = sum(n for s, n in system.statuses(ids).items() if s != "completed")
        doubled = sum(1 for n in system.terminal_events(ids).values() if n != 1)
        assert stuck == 0 and doubled == 0
        report(
            f"\nlost publish: tasks={TASKS} lost_publishes={TASKS} stuck={stuck} double={doubled}"
        )
