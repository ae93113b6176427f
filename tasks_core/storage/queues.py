"""What waits on each queue, read for the metrics (every organization's)."""

from __future__ import annotations

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
