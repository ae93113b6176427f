"""3. Redis killed and restarted empty (no persistence) with tasks queued: all still run."""

from __future__ import annotations

import redis

from tasks_core.publisher import CeleryPublisher
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.figures import report
from tests.support.stack import stack
from tests.support.wait import wait_until

TASKS = 500
RUN_SECONDS = 0.005  # 500 runs on 2 processes: about 1.3 s of work
MARKER = "test:before-the-restart"


def test_tasks_queued_in_a_redis_that_restarts_empty_all_complete() -> None:
    with stack() as system:
        # A run cut off by the broker connection loss is cancelled by its worker
        # (worker_cancel_long_running_tasks_on_connection_loss) and runs again:
        # attempts to spare keep such a task from failing `worker_lost`.
        # Each run takes a few ms, so that a backlog is still in Redis when it
        # restarts: no-op tasks could all be taken before it (a fast day did).
        spec = TaskSpec(kind="CallAction", target_id="builtin/sleep",
                        input={"seconds": RUN_SECONDS}, max_attempts=3)  # fmt: skip
        first = [create_task(system.store, system.caller, spec).id for _ in range(TASKS // 2)]
        worker = system.start_worker("--concurrency", "2")
        # Mid-run: some done, most still queued in Redis.
        rest = [
            create_task(system.store, system.caller, spec).id for _ in range(TASKS - len(first))
        ]
        ids = first + rest
        # Creates on a queue that is behind may be held for PUBLISH_LINGER_SECONDS
        # (tasks_core.linger): pushed now, so that every message is in Redis.
        publisher = system.store.publisher
        assert isinstance(publisher, CeleryPublisher)
        publisher.linger.flush()
        wait_until(lambda: system.statuses(ids).get("completed", 0) > 20, timeout=60, interval=0.01)
        client = redis.Redis.from_url(system.settings.redis_url)
        depth_before = sum(client.llen(q) for q in client.scan_iter("tasks.*"))
        client.set(MARKER, 1)
        system.redis.kill()
        system.redis.start()
        # Every queued message is gone with the rest of Redis's data (a key
        # set just before the kill; the lists themselves may already hold a
        # message a reconnected worker put back).
        assert depth_before > 0 and not client.exists(MARKER)
        system.start_sweeper()
        system.wait_all(ids, ("completed",), timeout=180)
        counts = system.statuses(ids)
        double = sum(1 for n in system.terminal_events(ids).values() if n != 1)
        assert counts == {"completed": TASKS} and double == 0
        assert worker.process is not None and worker.process.poll() is None  # reconnected
        report(
            f"\nredis restart: tasks={TASKS} messages_lost_in_restart={depth_before} "
            f"completed={counts['completed']} lost=0 double={double}"
        )
