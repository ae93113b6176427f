"""A worker cut off from PostgreSQL stops its run before the sweeper can start
another attempt of it: the handler's side effects never happen twice at once.
Servers of its own (``tests.support.stack``): PostgreSQL is stopped (or
frozen, as across a network cut) under a running task, and brought back once
the run has stopped."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis

from tests.security.lease_handlers import runs_key
from tests.support.cuts import postgres_frozen, postgres_stopped
from tests.support.figures import report
from tests.support.stack import Stack, stack
from tests.support.wait import wait_until
from tests.support.workers import WorkerProcess

IMPORTS = "tests.support.handlers,tests.security.lease_handlers"


def runs(system: Stack, task_id: uuid.UUID) -> dict[int, dict[str, float]]:
    """Each attempt's start and stop (wall-clock), as its handler recorded them."""
    client = redis.Redis.from_url(system.settings.redis_url)
    found: dict[int, dict[str, float]] = {}
    for raw in client.lrange(runs_key(task_id), 0, -1):
        mark: dict[str, Any] = json.loads(raw)
        found.setdefault(int(mark.pop("attempt")), {}).update(mark)
    client.close()
    return found


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most runs in progress at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(stop, -1) for _, stop in spans])
    at_once = best = 0
    for _, step in edges:  # a stop sorts before a start at the same instant
        at_once += step
        best = max(best, at_once)
    return best


def stopped_by_a_cut(
    system: Stack, cut: Callable[[Stack], AbstractContextManager[None]], *, max_attempts: int
) -> tuple[WorkerProcess, uuid.UUID]:
    """A worker and a sweeper, and a task whose first run a cut from
    PostgreSQL stopped (renewals fail; the worker stops the handler before
    the lease runs out); PostgreSQL is back when this returns."""
    worker = system.start_worker("--concurrency", "1", env={"TASKS_IMPORTS": IMPORTS})
    system.start_sweeper()
    (task_id,) = system.create(
        1, kind="CallAction", target_id="test/lease-watch", input={"seconds": 60},
        max_attempts=max_attempts,
    )  # fmt: skip
    wait_until(lambda: 1 in runs(system, task_id), timeout=30, message="never started")
    with cut(system):
        wait_until(
            lambda: "stop" in runs(system, task_id).get(1, {}),
            timeout=20,
            message=f"the run went on without its lease; log:\n{worker.log()}",
        )
    return worker, task_id


@pytest.mark.parametrize("cut", [postgres_stopped, postgres_frozen], ids=["stopped", "frozen"])
def test_a_run_whose_lease_can_not_be_renewed_stops_before_another_attempt_starts(
    cut: Callable[[Stack], AbstractContextManager[None]],
) -> None:
    with stack() as system:
        worker, task_id = stopped_by_a_cut(system, cut, max_attempts=3)
        assert "no lease renewal reached the database" in worker.log()

        # The sweeper gives the task another attempt, which completes.
        system.wait_all([task_id], ("completed",), timeout=60)
        task = system.task(task_id)
        assert task.attempt == 2 and task.output == {"attempt": 2}, task
        seen = runs(system, task_id)
        assert sorted(seen) == [1, 2], seen
        spans = [(r["start"], r["stop"]) for r in seen.values()]
        concurrent = most_at_once(spans)
        assert concurrent == 1, seen
        # The stopped run wrote nothing: the task's only outcome is attempt 2's.
        assert system.terminal_events([task_id]) == {task_id: 1}
        report(f"lease loss ({cut.__name__}): concurrent_runs={concurrent} attempts={len(seen)}")


def test_a_run_stopped_while_postgres_was_down_is_handed_back_and_costs_no_attempt() -> None:
    with stack() as system:
        worker, task_id = stopped_by_a_cut(system, postgres_stopped, max_attempts=1)

        # Its one attempt was stopped by the outage, not spent: the worker hands
        # the run back once PostgreSQL answers, before the sweeper may take it
        # for lost, and the next run completes.
        system.wait_all([task_id], ("completed", "failed"), timeout=60)
        task = system.task(task_id)
        assert task.status.value == "completed", task
        assert task.attempt == 2 and task.output == {"attempt": 2}
        assert "handed back to its queue" in worker.log()
        assert system.terminal_events([task_id]) == {task_id: 1}
        report("lease loss while postgres was down: handed_back=1 worker_lost=0")
