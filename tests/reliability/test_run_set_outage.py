"""A run claimed in a set, waiting behind a run that took longer than
expected, has its lease renewed before it starts; when PostgreSQL can not
be reached for that, the run is handed back unstarted once it can, instead
of being left `running` for the sweeper to take for lost. The set runs in
this process (``worker.runner.run_set``); its first handler stops a real
PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text

from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.stack import Stack, stack
from tests.support.wait import wait_until
from worker.context import TaskContext
from worker.pace import pace_of
from worker.registry import action
from worker.runner import run_set

HEARTBEAT = 0.2
_SYSTEM: list[Stack] = []  # the stack the handler below stops PostgreSQL of


@action("test/stop-postgres")
def stop_postgres(ctx: TaskContext) -> Any:
    """Stops PostgreSQL, then works past a heartbeat: the run after it in the
    set waits that long."""
    _SYSTEM[0].postgres.stop()
    ctx.sleep(HEARTBEAT * 1.5)
    return {"stopped": True}


class _Seen(logging.Handler):
    """Sets ``event`` when a record with ``words`` in its message is logged."""

    def __init__(self, words: str) -> None:
        super().__init__()
        self.words, self.event = words, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.words in record.getMessage():
            self.event.set()


@contextmanager
def _watching(words: str) -> Iterator[threading.Event]:
    seen = _Seen(words)
    logging.getLogger("worker.runner").addHandler(seen)
    try:
        yield seen.event
    finally:
        logging.getLogger("worker.runner").removeHandler(seen)


@contextmanager
def _short_runs() -> Iterator[None]:
    """This process expects short runs of messages of no named queue, so both
    tasks are claimed in one part: set, not noted, since other tests in this
    process ran such messages; then as it was."""
    pace = pace_of(None)
    before, pace.seconds = pace.seconds, 0.001
    try:
        yield
    finally:
        pace.seconds = before


def test_a_run_whose_lease_can_not_be_renewed_before_it_starts_is_handed_back() -> None:
    # A long lease: only the renewal before the second run is at stake here.
    with stack(heartbeat_seconds=HEARTBEAT, lease_seconds=30, cancel_grace_seconds=1) as system:
        _SYSTEM[:] = [system]
        first = create_task(
            system.store, system.caller, TaskSpec(kind="CallAction", target_id="test/stop-postgres")
        )
        second = create_task(system.store, system.caller, TaskSpec(kind="default"))
        done: list[Any] = []
        with _short_runs(), _watching("could not be renewed before it started") as refused:
            runner = threading.Thread(
                target=lambda: done.append(run_set(system.store, [str(first.id), str(second.id)])),
                daemon=True,  # a failed test leaves it retrying against a stopped server
            )
            runner.start()
            # The second run's renewal failed (or the set ended without it).
            wait_until(lambda: refused.is_set() or not runner.is_alive(), timeout=30,
                       message="the second run's renewal never failed")  # fmt: skip
            system.postgres.start()
            runner.join(60)
        assert not runner.is_alive()

        with system.store.statement() as conn:
            rows = conn.execute(
                text("SELECT id, status, attempt FROM tasks WHERE id = ANY(:ids)"),
                {"ids": [first.id, second.id]},
            )
            found = {r.id: (r.status, r.attempt) for r in rows}
        assert found[first.id] == ("completed", 1)
        assert found[second.id] == ("queued", 1)  # handed back, never started
        assert len(done) == 1  # the set ended as it should, without an error
