"""Where every benchmark's no-op task records the moment it started.

One Redis hash, ``bench:started``: task id → ``time.time()`` at the start of
the task's code, written in one round trip (HSET). The client reads it back
to compute throughput (the last start) and enqueue→start latency (per id).
"""

from __future__ import annotations

import os
import time

import redis

STARTED = "bench:started"
# Where ``tests.bench.hop_stamps`` writes each task's hops, for ``tests.bench.hops``.
HOPS = "bench:hops"

_client: tuple[int, redis.Redis] | None = None


def _redis() -> redis.Redis:
    """One client per process: a prefork child must not share its parent's sockets."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(os.environ["REDIS_URL"]))
    return _client[1]


def record_start(task_id: str) -> None:
    """The one thing a no-op task does: say when it started."""
    _redis().hset(STARTED, task_id, repr(time.time()))
