"""What waits and runs on each queue: every organization's (for the metrics), or one's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, TextClause, text

from tasks_core.storage.tasks import Queue


@dataclass(frozen=True, slots=True)
class Waiting:
    """The tasks waiting (`created` or `queued`) for one kind and executorId."""

    kind: str
    executor_id: str | None
    count: int
    oldest_seconds: float


# On ix_tasks_waiting_kind_executor_id (kind, executor_id, created_at) alone.
_WAITING = text(
    "SELECT kind, executor_id, count(*) AS n, "
    "extract(epoch FROM now() - min(created_at))::float8 AS oldest "
    "FROM tasks WHERE status IN ('created', 'queued') "
    "GROUP BY kind, executor_id ORDER BY oldest DESC LIMIT :limit"
)


def waiting_by_queue(conn: Connection, *, limit: int) -> list[Waiting]:
    """The ``limit`` queues whose oldest task has waited longest."""
    rows = conn.execute(_WAITING, {"limit": limit})
    return [Waiting(r.kind, r.executor_id, int(r.n), max(0.0, float(r.oldest))) for r in rows]


# Also on ix_tasks_waiting_kind_executor_id: an index-only scan of the waiting tasks.
_WAITING_SINCE = text(
    "SELECT kind, executor_id FROM tasks WHERE status IN ('created', 'queued') "
    "AND created_at < now() - make_interval(secs => :older) "
    "GROUP BY kind, executor_id ORDER BY kind, executor_id NULLS FIRST LIMIT :limit"
)


def waiting_longer_than(conn: Connection, seconds: float, *, limit: int) -> list[Queue]:
    """The (kind, executorId) of every queue with a task waiting longer than ``seconds``."""
    rows = conn.execute(_WAITING_SINCE, {"older": seconds, "limit": limit})
    return [(r.kind, r.executor_id) for r in rows]


def _waiting_on_one(executor_bound: bool) -> TextClause:
    # Two forms, so that executor_id is an index condition (IS NOT DISTINCT FROM is not).
    executor = "executor_id = :executor" if executor_bound else "executor_id IS NULL"
    return text(
        f"SELECT id FROM tasks WHERE status IN ('created', 'queued') AND kind = :kind "
        f"AND {executor} AND created_at < now() - make_interval(secs => :older) "
        "ORDER BY created_at LIMIT :batch"
    )


_WAITING_ON = {bound: _waiting_on_one(bound) for bound in (False, True)}


def waiting_on_since(
    conn: Connection, queue: Queue, seconds: float, *, batch: int
) -> list[uuid.UUID]:
    """Up to ``batch`` tasks of one queue waiting longer than ``seconds``, oldest first."""
    kind, executor_id = queue
    values = {"kind": kind, "executor": executor_id, "older": seconds, "batch": batch}
    return [r.id for r in conn.execute(_WAITING_ON[executor_id is not None], values)]


@dataclass(frozen=True, slots=True)
class Open:
    """One organization's unfinished tasks on one kind and executorId."""

    kind: str
    executor_id: str | None
    waiting: int
    running: int
    oldest_seconds: float | None  # of the waiting ones; None when none waits


# On ix_tasks_org_status_id (organization_id, status, id).
_OPEN = text(
    "SELECT kind, executor_id, "
    "count(*) FILTER (WHERE status IN ('created', 'queued')) AS waiting, "
    "count(*) FILTER (WHERE status = 'running') AS running, "
    "extract(epoch FROM now() - min(created_at) FILTER "
    "(WHERE status IN ('created', 'queued')))::float8 AS oldest "
    "FROM tasks WHERE organization_id = :org AND status IN ('created', 'queued', 'running') "
    "GROUP BY kind, executor_id ORDER BY kind, executor_id NULLS FIRST LIMIT :limit"
)


def open_by_queue(conn: Connection, organization_id: uuid.UUID, *, limit: int) -> list[Open]:
    """The organization's waiting and running tasks, counted per queue."""
    rows = conn.execute(_OPEN, {"org": organization_id, "limit": limit})
    return [
        Open(
            r.kind,
            r.executor_id,
            int(r.waiting),
            int(r.running),
            None if r.oldest is None else max(0.0, float(r.oldest)),
        )
        for r in rows
    ]
