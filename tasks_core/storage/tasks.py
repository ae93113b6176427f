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
from tasks_core.status import NON_TERMINAL_STATUSES, RULES, MoveKind, Status
from tasks_core.storage.db import as_ids, json_ids, sql_list, statement
from tasks_core.storage.rows import tasks_of
from tasks_core.task import MAX_TREE_DEPTH, TaskRecord

_GET = text("SELECT * FROM tasks WHERE id = :id AND organization_id = :org")


def get_task(conn: Connection, organization_id: uuid.UUID, task_id: uuid.UUID) -> TaskRecord | None:
    """One task of the organization, without children."""
    found = tasks_of(conn, _GET, {"id": task_id, "org": organization_id})
    return found[0] if found else None


# Each task by its key (a lateral pick; OFFSET 0 keeps the planner from
# turning it into a join that an organization's index could serve instead).
_GET_MANY = statement(
    f"""SELECT t.* FROM unnest({json_ids("ids")}) WITH ORDINALITY AS k(id, n)
CROSS JOIN LATERAL (
    SELECT * FROM tasks WHERE id = k.id AND organization_id = :org OFFSET 0
) AS t
ORDER BY k.n""",
    "ids",
)


def get_tasks(
    conn: Connection, organization_id: uuid.UUID, task_ids: Sequence[uuid.UUID]
) -> list[TaskRecord]:
    """The organization's tasks of ``task_ids``, in that order (missing ones left out)."""
    return tasks_of(conn, _GET_MANY, {"ids": as_ids(task_ids), "org": organization_id})


# No ORDER BY outside: the nested loop yields the parents in the order given
# and each parent's children oldest first, and the outer LIMIT stops the scan
# there (sorting would read every child of every parent first).
_CHILDREN = statement(
    f"""
SELECT c.* FROM unnest({json_ids("ids")}) AS p(id)
CROSS JOIN LATERAL (
    SELECT * FROM tasks WHERE parent_id = p.id ORDER BY id LIMIT :n
) AS c
LIMIT :total
""",
    "ids",
)


def children_of(
    conn: Connection, parent_ids: Sequence[uuid.UUID], *, per_parent: int, total: int
) -> list[TaskRecord]:
    """The first ``per_parent`` children (oldest first) of each given task, in
    the order of the given tasks, and at most ``total`` in all: PostgreSQL
    reads no more rows than that."""
    if not parent_ids or total <= 0:
        return []
    values = {"ids": as_ids(parent_ids), "n": per_parent, "total": total}
    return tasks_of(conn, _CHILDREN, values)


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


# What a task weighs on the wire, from its stored JSON: the large fields as
# PostgreSQL prints them (a little wider than the API's compact JSON), plus a
# fixed allowance for ids, timestamps and the short fields.
_TASK_BYTES = (
    "1024 + octet_length(coalesce(input::text, '')) + octet_length(coalesce(output::text, ''))"
    " + octet_length(params::text) + octet_length(errors::text)"
    " + octet_length(coalesce(title, '')) + octet_length(coalesce(description, ''))"
)


@dataclass(frozen=True, slots=True)
class ListedTasks:
    """A page's tasks, and whether the byte budget left out some of those in range."""

    items: list[TaskRecord]
    cut: bool


def list_tasks(
    conn: Connection,
    organization_id: uuid.UUID,
    *,
    filters: Mapping[str, Any],
    before: uuid.UUID | None,
    limit: int,
    max_bytes: int,
) -> ListedTasks:
    """A page of the organization's tasks, newest first (id order is creation
    order): at most ``limit``, and no more than fit in ``max_bytes`` (but
    always the first). Only the ids and sizes of the ``limit`` rows are
    measured; the full rows are read for the tasks kept."""
    where = ["organization_id = :org"]
    values: dict[str, Any] = {"org": organization_id, "limit": limit, "bytes": max_bytes}
    for name, value in filters.items():
        column = LIST_FILTERS[name]
        where.append(f"{column} = :{name}")
        values[name] = value
    if before is not None:
        where.append("id < :before")
        values["before"] = before
    sql = f"""
WITH page AS (
    SELECT id, {_TASK_BYTES} AS bytes FROM tasks WHERE {" AND ".join(where)}
    ORDER BY id DESC LIMIT :limit
), sized AS (
    SELECT id, row_number() OVER w AS n, sum(bytes) OVER w AS running, count(*) OVER () AS seen
    FROM page WINDOW w AS (ORDER BY id DESC ROWS UNBOUNDED PRECEDING)
)
SELECT t.*, sized.seen AS page_seen FROM sized JOIN tasks t ON t.id = sized.id
WHERE sized.n = 1 OR sized.running <= :bytes
ORDER BY t.id DESC
"""
    rows = conn.execute(text(sql), values).mappings().all()
    items = [TaskRecord.from_row(r) for r in rows]
    return ListedTasks(items=items, cut=bool(rows) and len(rows) < rows[0]["page_seen"])


_WAITING = sql_list(RULES[MoveKind.REPUBLISH].sources)
_NOT_HELD_BACK = "(available_at IS NULL OR available_at < now() - make_interval(secs => :after))"

# Waiting tasks due for a republish, oldest first: a first time
# REPUBLISH_AFTER_SECONDS after their last change, then when their backoff
# (republish_at) is due. Each part is an ordered range of its own index, so a
# pass reads only what it takes, however many tasks are backing off.
_STALE = text(
    f"""
WITH first AS (
    SELECT * FROM tasks
    WHERE status IN {_WAITING} AND republish_at IS NULL
      AND updated_at < now() - make_interval(secs => :after) AND {_NOT_HELD_BACK}
    ORDER BY updated_at LIMIT :batch
    FOR NO KEY UPDATE SKIP LOCKED
), again AS (
    SELECT * FROM tasks
    WHERE status IN {_WAITING} AND republish_at < now() AND {_NOT_HELD_BACK}
    ORDER BY republish_at LIMIT :batch
    FOR NO KEY UPDATE SKIP LOCKED
)
SELECT * FROM first UNION ALL SELECT * FROM again
LIMIT :batch
"""
)


def lock_stale(conn: Connection, *, after: float, batch: int) -> list[TaskRecord]:
    """Tasks due for a republish, oldest first, locked (those another sweeper
    holds are skipped)."""
    rows = conn.execute(_STALE, {"after": after, "batch": batch}).mappings()
    return [TaskRecord.from_row(r) for r in rows]


# How many tasks wait on each queue (kind, executor), counted up to its cap.
_WAITING_ON = statement(
    f"""
SELECT q.kind, q.executor_id, c.n FROM jsonb_to_recordset(:q)
    AS q(kind text, executor_id text, cap int)
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM tasks t WHERE t.status IN {_WAITING}
            AND t.kind = q.kind AND t.executor_id = q.executor_id
        UNION ALL
        SELECT 1 FROM tasks t WHERE t.status IN {_WAITING} AND q.executor_id IS NULL
            AND t.kind = q.kind AND t.executor_id IS NULL
        LIMIT q.cap
    ) AS w
) AS c
""",
    "q",
)

Queue = tuple[str, str | None]  # (kind, executor id)


def waiting_on(conn: Connection, caps: Mapping[Queue, int]) -> dict[Queue, int]:
    """How many tasks wait (`created`/`queued`) on each queue, each count
    stopped at its cap (so that a queue of a million costs what its cap does)."""
    rows = [{"kind": k, "executor_id": e, "cap": cap} for (k, e), cap in caps.items()]
    result = conn.execute(_WAITING_ON, {"q": rows})
    return {(r.kind, r.executor_id): int(r.n) for r in result}


_EXPIRED = text(
    f"""
SELECT id FROM tasks WHERE status = '{Status.RUNNING.value}' AND lease_expires_at < now()
ORDER BY lease_expires_at LIMIT :batch
"""
)


def expired_runs(conn: Connection, *, batch: int) -> list[uuid.UUID]:
    """Runs whose lease expired, oldest first (not locked: read to be held one by one)."""
    return [r.id for r in conn.execute(_EXPIRED, {"batch": batch})]


_TIMING_OUT = sql_list(RULES[MoveKind.QUEUE_TIMEOUT].sources)


def due_queue_timeouts(conn: Connection, *, batch: int) -> list[uuid.UUID]:
    """Tasks that have waited for a worker longer than their queueTimeoutSeconds."""
    rows = conn.execute(
        text(
            f"SELECT id FROM tasks WHERE status IN {_WAITING} "
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
