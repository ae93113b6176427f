"""A worker cut off from PostgreSQL stops its run before the sweeper can start
another attempt of it: the handler's side effects never happen twice at once.
Servers of its own (``tests.support.stack``): PostgreSQL is stopped under a
running task, and started again once the run has stopped."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

from tasks_core.storage.tasks import get_task
from tests.security.lease_handlers import runs_key
from tests.support.figures import report
from tests.support.stack import Stack, stack
from tests.support.wait import wait_until

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


def test_a_run_whose_lease_can_not_be_renewed_stops_before_another_attempt_starts() -> None:
    with stack() as system:
        worker = system.start_worker("--concurrency", "1", env={"TASKS_IMPORTS": IMPORTS})
        system.start_sweeper()
        (task_id,) = system.create(
            1, kind="CallAction", target_id="test/lease-watch", input={"seconds": 60},
            max_attempts=3,
        )  # fmt: skip
        wait_until(lambda: 1 in runs(system, task_id), timeout=30, message="never started")

        system.postgres.stop()
        # Renewals fail; the worker stops the handler before the lease runs out.
        wait_until(
            lambda: "stop" in runs(system, task_id).get(1, {}),
            timeout=20,
            message=f"the run went on without its lease; log:\n{worker.log()}",
        )
        assert "no lease renewal reached the database" in worker.log()
        system.postgres.start()

        # The sweeper gives the task another attempt, which completes.
        system.wait_all([task_id], ("completed",), timeout=60)
        with system.store.statement() as conn:
            task = get_task(conn, system.caller.organization_id, task_id)
        assert task is not None and task.attempt == 2 and task.output == {"attempt": 2}, task
        seen = runs(system, task_id)
        assert sorted(seen) == [1, 2], seen
        spans = [(r["start"], r["stop"]) for r in seen.values()]
        concurrent = most_at_once(spans)
        assert concurrent == 1, seen
        # The stopped run wrote nothing: the task's only outcome is attempt 2's.
        assert system.terminal_events([task_id]) == {task_id: 1}
        report(f"lease loss: concurrent_runs={concurrent} attempts={len(seen)}")
