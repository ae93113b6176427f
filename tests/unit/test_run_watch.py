"""The one watch thread of a process (worker/supervisor.py): runs started
close together share its wakes, so a stream of short tasks does not wake it
once or twice per task."""

from __future__ import annotations

import math
import time
import uuid
from types import SimpleNamespace
from typing import Any

from tasks_core.settings import Settings
from tests.support.wait import wait_until
from worker.supervisor import WAKE_GRAIN, Supervisor, _watcher

RUNS = 200


def _run() -> Supervisor:
    settings = Settings(heartbeat_seconds=0.2)
    store: Any = SimpleNamespace(settings=settings)
    task: Any = SimpleNamespace(id=uuid.uuid4(), attempt=1, worker="w:1", timeout_seconds=None)
    ctx: Any = SimpleNamespace(request_stop=lambda **_: None)
    return Supervisor(store, task, ctx, on_unresponsive=lambda _: None)


def test_short_runs_started_together_share_the_wakes_of_the_watch() -> None:
    watcher = _watcher()
    wait_until(lambda: not watcher._heap, timeout=10, message="the watch is busy")
    before = watcher.wakes
    started = time.monotonic()
    for _ in range(RUNS):
        with _run():  # a short task: started and ended at once
            pass
    spread = time.monotonic() - started
    # Every run's first wake (a heartbeat on) has come and gone.
    wait_until(lambda: not watcher._heap, timeout=10, message="wakes still due")
    woke = watcher.wakes - before
    # The runs' wakes fall in the WAKE_GRAIN windows their starts spread over
    # (more windows on a loaded machine, never one a run); ended runs are not
    # ticked. A window costs the thread at most two wakes: the notify of its
    # first run (the earliest wake in the heap) and the timeout when it is due.
    windows = math.ceil(max(spread, 0.5) / WAKE_GRAIN) + 1
    assert woke <= 2 * windows, (woke, spread)
    assert woke < RUNS / 4, woke


def test_a_run_still_going_is_woken_each_heartbeat() -> None:
    run = _run()
    ticks: list[float] = []
    original = run.tick

    def counted() -> float | None:
        ticks.append(0.0)
        return original()

    run.tick = counted  # type: ignore[method-assign]
    with run:
        wait_until(lambda: len(ticks) >= 3, timeout=10, message="the run is not watched")
