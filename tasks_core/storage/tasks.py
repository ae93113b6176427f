"""Reading tasks and their event logs, and the shape of task trees.

Every write of a task (its status, fields, lease, events) belongs to the
lifecycle engine (``tasks_core.lifecycle``); this module only reads. Walks
up or down a tree stop at a task seen before (a cycle) and at
``MAX_TREE_DEPTH`` levels, and take one index lookup a level (``LATERAL ...
OFFSET 0``), so that no plan turns them into a scan of every task.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from tasks_core.flow_definitions import FLOW_KIND
from tasks_core.records import EventRecord
from tasks_core.status import NON_TERMINAL_STATUSES, RULES, MoveKind
from tasks_core.storage.db import as_ids, json_ids, sql_list, statement
from tasks_core.task import MAX_TREE_DEPTH, TaskRecord

_GET = text("SELECT * FROM tasks WHERE id = :id AND organization_id = :org")


def get_task(conn: Connection, organization_id: uuid.UUID, task_id: uuid.UUID) -> TaskRecord | None:
    """One task of the organization, without children."""
    row = conn.execute(_GET, {"id": task_id, "org": organization_id}).mappings().first()
    return TaskRecord.from_row(row) if row else None


_CHILDREN = statement(
    f"""
SELECT c.* FROM unnest({json_ids("ids")}) AS p(id)
CROSS JOIN LATERAL (
    SELECT * FROM tasks WHERE parent_id = p.id ORDER BY id LIMIT :n
) AS c
""",
    "ids",
)


def children_of(
    conn: Connection, parent_ids: Sequence[uuid.UUID], *, per_parent: int
) -> list[TaskRecord]:
    """The first ``per_parent`` children (oldest first) of each given task."""
    if not parent_ids:
        return []
    values = {"ids": as_ids(parent_ids), "n": per_parent}
    return [TaskRecord.from_row(r) for r in conn.execute(_CHILDREN, values).mappings()]


@dataclass(frozen=True, slots=True)
class Ancestry:
    """Where a task stands in its tree."""

    depth: int  # levels from the root down to the task (a root is 1)
    flows: int  # how many of its ancestors are Flows
    ancestors: frozenset[uuid.UUID]


_ANCESTRY = text(
    f"""
WITH RECURSIVE up(id, parent_id, kind, depth, path) AS (
    SELECT id, parent_id, kind, 1, ARRAY[id] FROM tasks WHERE id = :id
    UNION ALL
    SELECT t.id, t.parent_id, t.kind, up.depth + 1, up.path || t.id
    FROM up CROSS JOIN LATERAL (
        SELECT t.id, t.parent_id, t.kind FROM tasks t WHERE t.id = up.parent_id OFFSET 0
    ) AS t
    WHERE up.depth < {MAX_TREE_DEPTH} AND t.id <> ALL(up.path)
)
SELECT id, kind, depth FROM up
"""
)


def ancestry(conn: Connection, task_id: uuid.UUID) -> Ancestry:
    """The task's depth, its Flow ancestors, and every ancestor's id."""
    rows = conn.execute(_ANCESTRY, {"id": task_id}).all()
    above = [r for r in rows if r.id != task_id]
    return Ancestry(
        depth=max((r.depth for r in rows), default=0),
        flows=sum(1 for r in above if r.kind == FLOW_KIND),
        ancestors=frozenset(r.id for r in above),
    )


_HEIGHT = text(
    f"""
WITH RECURSIVE down(id, depth, path) AS (
    SELECT id, 1, ARRAY[id] FROM tasks WHERE id = :id
    UNION ALL
    SELECT c.id, down.depth + 1, down.path || c.id
    FROM down CROSS JOIN LATERAL (
        SELECT c.id FROM tasks c WHERE c.parent_id = down.id OFFSET 0
    ) AS c
    WHERE down.depth < {MAX_TREE_DEPTH} AND c.id <> ALL(down.path)
)
SELECT max(depth) FROM down
"""
)


def subtree_height(conn: Connection, task_id: uuid.UUID) -> int:
    """Levels of the task's subtree, the task included (1 for a leaf)."""
    return int(conn.execute(_HEIGHT, {"id": task_id}).scalar_one() or 0)


def lock_reparenting(conn: Connection, organization_id: uuid.UUID) -> None:
    """Serialise the changes of ``parentId`` in one organization until the
    transaction ends, so that two concurrent moves can not together make a
    cycle (each checks the tree as the other committed it)."""
    conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended('tasks.parent:' || :org, 0))"),
        {"org": str(organization_id)},
    )


def list_events(
    conn: Connection, task_id: uuid.UUID, *, after: int, limit: int
) -> list[EventRecord]:
    """A task's events in the order they happened."""
    rows = conn.execute(
        text(
            "SELECT * FROM task_events WHERE task_id = :task_id AND id > :after "
            "ORDER BY id LIMIT :limit"
        ),
        {"task_id": task_id, "after": after, "limit": limit},
    ).mappings()
    return [EventRecord.from_row(r) for r in rows]


# Filters of GET /v1/tasks: API name -> column. Each has an index (storage/tables.py).
LIST_FILTERS = {
    "status": "status",
    "kind": "kind",
    "executor_id": "executor_id",
    "parent_id": "parent_id",
    "app_id": "app_id",
    "target_id": "target_id",
}


def list_tasks(
    conn: Connection,
    organization_id: uuid.UUID,
    *,
    filters: Mapping[str, Any],
    before: uuid.UUID | None,
    limit: int,
) -> list[TaskRecord]:
    """A page of the organization's tasks, newest first (id order is creation order)."""
    where = ["organization_id = :org"]
    values: dict[str, Any] = {"org": organization_id, "limit": limit}
    for name, value in filters.items():
        column = LIST_FILTERS[name]
        where.append(f"{column} = :{name}")
        values[name] = value
    if before is not None:
        where.append("id < :before")
        values["before"] = before
    sql = f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit"
    return [TaskRecord.from_row(r) for r in conn.execute(text(sql), values).mappings()]


_STALE = text(
    f"""
SELECT * FROM tasks
WHERE status IN {sql_list(RULES[MoveKind.REPUBLISH].sources)}
  AND updated_at < now() - make_interval(secs => :after)
  AND (available_at IS NULL OR available_at < now() - make_interval(secs => :after))
ORDER BY updated_at
LIMIT :batch
FOR NO KEY UPDATE SKIP LOCKED
"""
)


def lock_stale(conn: Connection, *, after: float, batch: int) -> list[TaskRecord]:
    """Tasks waiting for a worker longer than ``after`` seconds, oldest first,
    locked (those another sweeper holds are skipped)."""
    rows = conn.execute(_STALE, {"after": after, "batch": batch}).mappings()
    return [TaskRecord.from_row(r) for r in rows]


_TIMING_OUT = sql_list(RULES[MoveKind.QUEUE_TIMEOUT].sources)


def due_queue_timeouts(conn: Connection, *, batch: int) -> list[uuid.UUID]:
    """Tasks that have waited for a worker longer than their queueTimeoutSeconds."""
    rows = conn.execute(
        text(
            f"SELECT id FROM tasks WHERE status IN {sql_list(RULES[MoveKind.REPUBLISH].sources)} "
            "AND queue_timeout_seconds IS NOT NULL "
            "AND created_at < now() - make_interval(secs => queue_timeout_seconds) "
            "ORDER BY created_at LIMIT :batch"
        ),
        {"batch": batch},
    )
    return [r.id for r in rows]


_OPEN_TASKS = text(
    f"""
SELECT count(*) FROM (
    SELECT 1 FROM tasks
    WHERE organization_id = :org AND status IN {sql_list(NON_TERMINAL_STATUSES)}
    LIMIT :limit
) AS open
"""
)


def count_open_tasks(conn: Connection, organization_id: uuid.UUID, *, limit: int) -> int:
    """How many tasks of the organization are not finished, counted up to
    ``limit`` (an index range of ``(organization_id, status)``, never more rows)."""
    return int(conn.execute(_OPEN_TASKS, {"org": organization_id, "limit": limit}).scalar_one())
