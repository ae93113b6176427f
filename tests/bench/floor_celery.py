"""Raw Celery made durable by hand, with nothing else: the floor of any
design that keeps tasks-core's promises (``tests.bench.floor``).

A task is a row of ``floor_tasks`` (an id, a status, three times; its
primary key the only index). The client inserts it `queued` in one
autocommitted statement with a durable commit, then sends its message; the
worker claims it with one guarded ``UPDATE`` whose commit is relaxed (as
tasks-core's claim), runs the no-op, and writes the outcome with one guarded
``UPDATE`` and a durable commit. No events, no JSON, no fields, no sets.

In a worker started with ``BENCH_HOPS=1`` the no-op also writes, once its
outcome is written, when its body began and its claim was sent and
answered (``tests.bench.hops``, the same stamps as tasks-core's).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import psycopg

from tests.bench.raw_celery import app
from tests.bench.starts import HOPS, _redis, record_start

QUEUE = "raw-durable"
STAMPING = os.environ.get("BENCH_HOPS") == "1"
TABLE = """
CREATE TABLE IF NOT EXISTS floor_tasks (
    id uuid PRIMARY KEY,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    ended_at timestamptz
)
"""
INSERT = "INSERT INTO floor_tasks (id, status) VALUES (%s, 'queued')"
CLAIM = (
    "UPDATE floor_tasks SET status = 'running', started_at = now() "
    "WHERE id = %s AND status = 'queued' RETURNING id"
)
FINISH = (
    "UPDATE floor_tasks SET status = 'completed', ended_at = now() "
    "WHERE id = %s AND status = 'running'"
)

_connections: tuple[int, psycopg.Connection[Any], psycopg.Connection[Any]] | None = None


def connect(url: str, *, relaxed: bool = False) -> psycopg.Connection[Any]:
    """An autocommit connection whose statements are prepared from their
    first run; ``relaxed``: its commits do not wait for the WAL flush."""
    options = "-c synchronous_commit=off" if relaxed else ""
    return psycopg.connect(url, autocommit=True, prepare_threshold=0, options=options)


def _worker_connections() -> tuple[psycopg.Connection[Any], psycopg.Connection[Any]]:
    """This process's (relaxed, durable) connections: a prefork child opens its own."""
    global _connections
    if _connections is None or _connections[0] != os.getpid():
        url = os.environ["DATABASE_URL"]
        _connections = (os.getpid(), connect(url, relaxed=True), connect(url))
    return _connections[1], _connections[2]


@app.task(name="raw.durable")
def durable_noop(task_id: str) -> None:
    reached = time.time()
    relaxed, durable = _worker_connections()
    row = uuid.UUID(task_id)
    sent = time.time()
    if relaxed.execute(CLAIM, (row,)).fetchone() is None:
        return  # claimed already (a duplicate delivery) or never stored
    answered = time.time()
    record_start(task_id)
    durable.execute(FINISH, (row,))
    if STAMPING:
        _redis().hset(HOPS, task_id, f"{reached!r},{sent!r},{answered!r}")
