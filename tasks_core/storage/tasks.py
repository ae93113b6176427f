"""SQL for tasks and their event log.

Every status change goes through :func:`transition` (one row) or
:func:`cancel_subtree` (a tree): a guarded ``UPDATE ... WHERE status IN
(allowed sources)`` that appends the event in the same statement, so a
status and its log can never disagree. The allowed sources come from
``tasks_core.status``; nothing else assigns a status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from tasks_core.records import EventRecord, TaskRecord
from tasks_core.status import (
    NON_TERMINAL_STATUSES,
    TERMINAL_STATUSES,
    Status,
    sources_of,
)

_JSON = JSONB(none_as_null=True)
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
_NON_TERMINAL = sorted(s.value for s in NON_TERMINAL_STATUSES)

# Entering `running` sets startedAt if empty; entering a terminal status sets
# endedAt if empty (never before startedAt, which a caller may have set ahead).
_TIMESTAMPS = """
    started_at = CASE WHEN :to = 'running' THEN coalesce(t.started_at, now()) ELSE t.started_at END,
    ended_at = CASE WHEN :to = ANY(:terminal)
                    THEN coalesce(t.ended_at, greatest(now(), t.started_at)) ELSE t.ended_at END,
    updated_at = now()
"""


@dataclass(frozen=True, slots=True)
class NewTask:
    """Everything needed to insert one task (already validated)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    author_id: str
    actor: str
    kind: str
    status: Status
    parent_id: uuid.UUID | None = None
    state_id: uuid.UUID | None = None  # set: a state object of that id is created with the task
    state_name: str | None = None
    app_id: str | None = None
    executor_id: str | None = None
    target_id: str | None = None
    title: str | None = None
    description: str | None = None
    input: Any = None
    output: Any = None
    params: Mapping[str, Any] | None = None
    errors: Sequence[Mapping[str, Any]] | None = None
    started_at: Any = None
    ended_at: Any = None
    max_attempts: int = 1
    timeout_seconds: float | None = None
    queue_timeout_seconds: float | None = None


_INSERT_TASK = text(
    """
WITH ok AS (
    SELECT 1 WHERE CAST(:parent_id AS uuid) IS NULL
        OR EXISTS (SELECT 1 FROM tasks WHERE id = :parent_id AND organization_id = :organization_id)
), st AS (
    INSERT INTO states (id, organization_id, name)
    SELECT :state_id, :organization_id, :state_name FROM ok
    WHERE CAST(:state_id AS uuid) IS NOT NULL
    RETURNING id
), t AS (
    INSERT INTO tasks (id, organization_id, author_id, parent_id, state_id, kind, status, app_id,
                       executor_id, target_id, title, description, input, output, params, errors,
                       max_attempts, timeout_seconds, queue_timeout_seconds, created_at,
                       updated_at, started_at, ended_at)
    SELECT :id, :organization_id, :author_id, :parent_id, (SELECT id FROM st), :kind, :status,
           :app_id, :executor_id, :target_id, :title, :description, :input, :output, :params,
           :errors, :max_attempts, :timeout_seconds, :queue_timeout_seconds, now(), now(),
           coalesce(:started_at, CASE WHEN :status = 'running' THEN now() END),
           coalesce(:ended_at, CASE WHEN :status = ANY(:terminal)
                                    THEN greatest(now(), :started_at) END)
    FROM ok
    RETURNING *
), ev AS (
    INSERT INTO task_events (task_id, type, to_status, actor)
    SELECT id, 'created', status, :actor FROM t
)
SELECT * FROM t
"""
).bindparams(
    bindparam("input", type_=_JSON),
    bindparam("output", type_=_JSON),
    bindparam("params", type_=_JSON),
    bindparam("errors", type_=_JSON),
)


def insert_task(conn: Connection, new: NewTask) -> TaskRecord | None:
    """Insert a task, its state object (if stateful) and its `created` event in
    one statement. Returns None when ``parent_id`` names no task of the organization.

    Entering `running` sets startedAt if empty and a terminal status sets
    endedAt if empty, from the database clock like every other timestamp."""
    values = {name: getattr(new, name) for name in NewTask.__slots__}
    values["status"] = new.status.value
    values["terminal"] = _TERMINAL
    values["params"] = dict(new.params or {})
    values["errors"] = list(new.errors or [])
    row = conn.execute(_INSERT_TASK, values).mappings().first()
    return TaskRecord.from_row(row) if row else None


def get_task(conn: Connection, organization_id: uuid.UUID, task_id: uuid.UUID) -> TaskRecord | None:
    """One task of the organization, without children."""
    row = (
        conn.execute(
            text("SELECT * FROM tasks WHERE id = :id AND organization_id = :org"),
            {"id": task_id, "org": organization_id},
        )
        .mappings()
        .first()
    )
    return TaskRecord.from_row(row) if row else None


def lock_task(
    conn: Connection, organization_id: uuid.UUID, task_id: uuid.UUID
) -> TaskRecord | None:
    """Like :func:`get_task`, holding the row lock until the transaction ends."""
    row = (
        conn.execute(
            text("SELECT * FROM tasks WHERE id = :id AND organization_id = :org FOR UPDATE"),
            {"id": task_id, "org": organization_id},
        )
        .mappings()
        .first()
    )
    return TaskRecord.from_row(row) if row else None


def children_of(
    conn: Connection, parent_ids: Sequence[uuid.UUID], *, per_parent: int
) -> list[TaskRecord]:
    """The first ``per_parent`` children (oldest first) of each given task."""
    if not parent_ids:
        return []
    rows = conn.execute(
        text(
            """
SELECT c.* FROM unnest(CAST(:ids AS uuid[])) AS p(id)
CROSS JOIN LATERAL (
    SELECT * FROM tasks WHERE parent_id = p.id ORDER BY id LIMIT :n
) AS c
"""
        ),
        {"ids": list(parent_ids), "n": per_parent},
    ).mappings()
    return [TaskRecord.from_row(r) for r in rows]


def _transition_sql(extra_sets: str, guard: str) -> TextClause:
    return text(
        f"""
WITH old AS (
    SELECT id, status FROM tasks WHERE id = :id AND status = ANY(:sources) {guard} FOR UPDATE
), moved AS (
    UPDATE tasks AS t SET status = :to, {_TIMESTAMPS} {extra_sets}
    FROM old WHERE t.id = old.id
    RETURNING t.*, old.status AS from_status
), ev AS (
    INSERT INTO task_events (task_id, type, from_status, to_status, actor, detail)
    SELECT id, 'status', from_status, :to, :actor, :detail FROM moved
)
SELECT * FROM moved
"""
    ).bindparams(bindparam("detail", type_=_JSON))


def transition(
    conn: Connection,
    task_id: uuid.UUID,
    to: Status,
    *,
    actor: str,
    sources: Iterable[Status] | None = None,
    detail: Mapping[str, Any] | None = None,
    extra_sets: str = "",
    guard: str = "",
    params: Mapping[str, Any] | None = None,
    json_params: Sequence[str] = (),
) -> TaskRecord | None:
    """Move one task to ``to`` if its status is one of ``sources`` (default: every
    status ``to`` may be entered from), logging the event. Returns the updated
    task, or None when the guard did not match (the caller decides what that means).

    ``extra_sets`` (``", col = :x"``) and ``guard`` (``"AND attempt = :attempt"``)
    are trusted SQL fragments from this package, with their values in ``params``
    (those named in ``json_params`` are stored as JSONB).
    """
    allowed = sorted(s.value for s in (sources if sources is not None else sources_of(to)))
    values: dict[str, Any] = {
        "id": task_id,
        "to": to.value,
        "sources": allowed,
        "terminal": _TERMINAL,
        "actor": actor,
        "detail": dict(detail) if detail else None,
        **(params or {}),
    }
    stmt = _transition_sql(extra_sets, guard)
    if json_params:
        stmt = stmt.bindparams(*(bindparam(name, type_=_JSON) for name in json_params))
    row = conn.execute(stmt, values).mappings().first()
    return TaskRecord.from_row(row) if row else None


_CANCEL_SUBTREE = text(
    """
WITH RECURSIVE sub AS (
    SELECT id FROM tasks WHERE id = :id AND organization_id = :org
    UNION ALL
    SELECT t.id FROM tasks t JOIN sub ON t.parent_id = sub.id
), old AS (
    SELECT t.id, t.status FROM tasks t JOIN sub ON t.id = sub.id
    WHERE t.status = ANY(:sources)
    ORDER BY t.id
    FOR UPDATE OF t
), moved AS (
    UPDATE tasks AS t SET status = :to, """
    + _TIMESTAMPS
    + """
    FROM old WHERE t.id = old.id
    RETURNING t.id, old.status AS from_status
), ev AS (
    INSERT INTO task_events (task_id, type, from_status, to_status, actor, detail)
    SELECT id, 'status', from_status, :to, :actor, :detail FROM moved
)
SELECT count(*) FROM moved
"""
).bindparams(bindparam("detail", type_=_JSON))


def cancel_subtree(
    conn: Connection, organization_id: uuid.UUID, task_id: uuid.UUID, *, actor: str
) -> int:
    """Cancel a task and every non-terminal descendant; returns how many moved.
    Rows are locked in id order so that concurrent cancels can not deadlock."""
    result = conn.execute(
        _CANCEL_SUBTREE,
        {
            "id": task_id,
            "org": organization_id,
            "to": Status.CANCELLED.value,
            "sources": _NON_TERMINAL,
            "terminal": _TERMINAL,
            "actor": actor,
            "detail": {"reason": "cancel requested", "root": str(task_id)},
        },
    )
    return int(result.scalar_one())


_MARK_QUEUED = text(
    """
WITH moved AS (
    UPDATE tasks SET status = 'queued', updated_at = now()
    WHERE id = ANY(:ids) AND status = 'created'
    RETURNING id
)
INSERT INTO task_events (task_id, type, from_status, to_status, actor)
SELECT id, 'status', 'created', 'queued', :actor FROM moved
"""
)


def mark_queued(conn: Connection, task_ids: Sequence[uuid.UUID], *, actor: str) -> None:
    """Move published tasks `created` -> `queued` (those a worker has not
    claimed already), logging each move, in one statement."""
    conn.execute(_MARK_QUEUED, {"ids": list(task_ids), "actor": actor})


def is_ancestor(conn: Connection, ancestor_id: uuid.UUID, task_id: uuid.UUID) -> bool:
    """Whether ``ancestor_id`` is ``task_id`` itself or one of its ancestors."""
    found = conn.execute(
        text(
            """
WITH RECURSIVE up AS (
    SELECT id, parent_id FROM tasks WHERE id = :task
    UNION ALL
    SELECT t.id, t.parent_id FROM tasks t JOIN up ON t.id = up.parent_id
)
SELECT EXISTS (SELECT 1 FROM up WHERE id = :ancestor)
"""
        ),
        {"task": task_id, "ancestor": ancestor_id},
    ).scalar_one()
    return bool(found)


_UPDATABLE_JSON = {"input", "output", "params", "errors"}


def update_fields(conn: Connection, task_id: uuid.UUID, values: Mapping[str, Any]) -> TaskRecord:
    """Write plain (non-status) fields of a task the caller holds locked."""
    names = sorted(values)
    sets = ", ".join(f"{name} = :{name}" for name in names)
    stmt = text(f"UPDATE tasks SET {sets}, updated_at = now() WHERE id = :id RETURNING *")
    stmt = stmt.bindparams(*(bindparam(n, type_=_JSON) for n in names if n in _UPDATABLE_JSON))
    row = conn.execute(stmt, {**values, "id": task_id}).mappings().one()
    return TaskRecord.from_row(row)


def append_event(
    conn: Connection,
    task_id: uuid.UUID,
    type_: str,
    *,
    actor: str,
    from_status: Status | None = None,
    to_status: Status | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Add a line to a task's event log (for events that are not a status move)."""
    conn.execute(
        text(
            "INSERT INTO task_events (task_id, type, from_status, to_status, actor, detail) "
            "VALUES (:task_id, :type, :from_status, :to_status, :actor, :detail)"
        ).bindparams(bindparam("detail", type_=_JSON)),
        {
            "task_id": task_id,
            "type": type_,
            "from_status": from_status.value if from_status else None,
            "to_status": to_status.value if to_status else None,
            "actor": actor,
            "detail": dict(detail) if detail else None,
        },
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
