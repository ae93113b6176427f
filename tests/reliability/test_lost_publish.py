"""1. The publish is lost after the commit: the sweeper runs the task anyway."""

from __future__ import annotations

from tasks_core.linger import BEHIND_DEPTH
from tasks_core.publisher import CeleryPublisher, MemoryPublisher
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


def test_tasks_whose_messages_were_held_by_a_process_that_died_are_run_by_the_sweeper() -> None:
    with stack() as system:
        # A publisher that holds the messages of a queue that is behind
        # (tasks_core.linger) for longer than this test: its process "dies"
        # with them held.
        holding = CeleryPublisher(system.settings.redis_url, linger_seconds=60)
        creator = Store(engine=system.store.engine, publisher=holding, settings=system.settings)
        spec = TaskSpec(kind="CallAction", target_id="builtin/echo")
        ids = [create_task(creator, system.caller, spec).id for _ in range(TASKS)]
        # The first BEHIND_DEPTH found no backlog and went at once; the others
        # were held, and went in full run sets (RUN_SET_MAX) but for the last few.
        assert holding.linger.held_total == TASKS - BEHIND_DEPTH
        lost = sum(len(q.held) for q in holding.linger._queues.values())
        assert lost > 0
        holding.linger._queues.clear()  # the process died: what it held is gone
        holding.close()
        assert system.statuses(ids) == {"queued": TASKS}
        system.start_worker("--concurrency", "2")
        system.start_sweeper()
        system.wait_all(ids, ("completed",), timeout=120)
        doubled = sum(1 for n in system.terminal_events(ids).values() if n != 1)
        assert doubled == 0
        report(f"held messages lost: tasks={TASKS} lost={lost} completed={TASKS} double={doubled}")
