"""An action for the lease-loss tests, registered in their workers
(``TASKS_IMPORTS=tests.security.lease_handlers``): each run records when it
started and stopped, so a test can tell whether two attempts overlapped."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from worker.context import TaskContext
from worker.registry import action


def runs_key(task_id: object) -> str:
    return f"lease-runs:{task_id}"


@action("test/lease-watch")
def lease_watch(ctx: TaskContext) -> Any:
    """The first attempt works until stopped (``input.seconds``); later ones end at once.
    Each run appends ``{attempt, start}`` then ``{attempt, stop}`` to a Redis list."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    key = runs_key(ctx.task.id)
    client.rpush(key, json.dumps({"attempt": ctx.task.attempt, "start": time.time()}))
    try:
        if ctx.task.attempt == 1:
            ctx.sleep(float((ctx.input or {}).get("seconds", 30)))
        return {"attempt": ctx.task.attempt}
    finally:
        client.rpush(key, json.dumps({"attempt": ctx.task.attempt, "stop": time.time()}))
