"""What waits and runs on each queue: every organization's (for the metrics), or one's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, text


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
