"""The SQL of every move: the only code that writes ``tasks`` or ``task_events``.

Each statement applies its move to a set of tasks, given as one JSON array
(read with ``jsonb_to_recordset``) or one array of ids, so that one task and
a thousand cost the same round trip. Every status change is built by
:func:`_move`: a guarded ``UPDATE`` whose allowed sources are the rule of its
kind in ``tasks_core.status``, which locks its rows in id order (so moves can
not deadlock on each other) and logs each change through :func:`_events`,
the one shape of an event row. Recursive walks of a task tree stop at a
task seen before (a cycle) and at ``MAX_TREE_DEPTH``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from tasks_core.lifecycle.moves import Attempt, EndFlow
from tasks_core.status import (
    RULES,
    TERMINAL_STATUSES,
    MoveKind,
    Status,
)
from tasks_core.storage.db import sql_list
from tasks_core.task import INSERT_COLUMNS, MAX_TREE_DEPTH, MUTABLE_FIELDS, TaskRecord

_JSON = JSONB(none_as_null=True)


_TERMINAL = sql_list(TERMINAL_STATUSES)


def json_ready(value: Any) -> Any:
    """A column value as JSON for a recordset (ids, times and statuses as strings)."""
    if isinstance(value, uuid.UUID | enum.Enum):
        return str(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: json_ready(v) for k, v in row.items()} for row in rows]


def _statement(sql: str, *json_params: str) -> TextClause:
    return text(sql).bindparams(*(bindparam(name, type_=_JSON) for name in json_params))


# --- The one shape of an event row -------------------------------------------------------

_EVENT_COLUMNS = "task_id, type, from_status, to_status, actor, detail"


def _events(
    source: str,
    *,
    type_: str,
    task_id: str = "id",
    from_status: str = "NULL",
    to_status: str = "NULL",
    detail: str = "NULL",
    where: str = "",
) -> str:
    """``INSERT`` of one event per row of ``source``, by the statement's ``:actor``."""
    return (
        f"INSERT INTO task_events ({_EVENT_COLUMNS}) "
        f"SELECT {task_id}, {type_}, {from_status}, {to_status}, :actor, {detail} "
        f"FROM {source} {where}"
    )


# --- Status moves --------------------------------------------------------------------------


def _timestamps(
    status: str, kind: MoveKind, *, started: str = "t.started_at", ended: str = "t.ended_at"
) -> str:
    """Entering `running` sets startedAt if empty; entering a terminal status
    sets endedAt if empty (never before startedAt, which a caller may have set
    ahead). Only what the kind's targets can need is written; a fixed target
    (``status`` a literal) needs no test."""
    targets = RULES[kind].targets
    fixed = Status(status.strip("'")) if status.startswith("'") else None
    sets = []
    start = f"coalesce({started}, now())"
    if fixed is Status.RUNNING:
        sets.append(f"started_at = {start}")
    elif fixed is None and Status.RUNNING in targets:
        sets.append(f"started_at = CASE WHEN {status} = 'running' THEN {start} ELSE {started} END")
    elif started != "t.started_at":
        sets.append(f"started_at = {started}")
    end = f"coalesce({ended}, greatest(now(), {started}))"
    if fixed in TERMINAL_STATUSES:
        sets.append(f"ended_at = {end}")
    elif fixed is None and targets & TERMINAL_STATUSES:
        sets.append(f"ended_at = CASE WHEN {status} IN {_TERMINAL} THEN {end} ELSE {ended} END")
    elif ended != "t.ended_at":
        sets.append(f"ended_at = {ended}")
    return ", ".join([*sets, "updated_at = now()"])


def _move(
    kind: MoveKind,
    *,
    status: str,
    inputs: str = "",
    pick: str = "",
    where: str = "",
    using: str = "",
    sets: str = "",
    detail: str = "NULL::jsonb",
    returning: str = "t.*",
    recursive: bool = False,
) -> str:
    """A guarded status move of every task picked.

    ``inputs`` are CTEs the move reads (``r``, its rows); ``pick`` joins them
    to ``tasks t`` and ``where`` narrows further; ``using`` joins them again
    to the locked rows in the ``UPDATE``, where ``status``, ``sets`` and the
    event's ``detail`` may read them. The sources are the rule of ``kind``.
    Rows are locked ``FOR NO KEY UPDATE``: exclusive among writers, yet not in
    the way of a child's foreign-key check on its parent (an id never changes).
    """
    return f"""
WITH {"RECURSIVE " if recursive else ""}{inputs}old AS (
    SELECT t.id, t.status FROM tasks t {pick}
    WHERE t.status IN {sql_list(RULES[kind].sources)} {f"AND {where}" if where else ""}
    ORDER BY t.id
    FOR NO KEY UPDATE OF t
), moved AS (
    UPDATE tasks t SET status = {status}, {_timestamps(status, kind)}{sets}
    FROM old {using}
    WHERE t.id = old.id
    RETURNING {returning}, old.status AS from_status, {detail} AS event_detail
), ev AS (
    {
        _events(
            "moved",
            type_="'status'",
            from_status="from_status",
            to_status="status",
            detail="event_detail",
        )
    }
)
SELECT * FROM moved
"""


def _recordset(name: str, columns: str) -> str:
    return f"{name} AS (SELECT * FROM jsonb_to_recordset(:{name}) AS {name}({columns})), "


def _fenced(
    kind: MoveKind, *, status: str, sets: str, columns: str = "", detail: str = "NULL::jsonb"
) -> str:
    """A move of runs, given as rows ``r`` (``id uuid, attempt int, ...``):
    each applies only while its task is still at the run's attempt."""
    return _move(
        kind,
        status=status,
        inputs=_recordset("r", "id uuid, attempt int" + (f", {columns}" if columns else "")),
        pick="JOIN r ON r.id = t.id AND t.attempt = r.attempt",
        using="JOIN r ON r.id = old.id",
        sets=sets,
        detail=detail,
    )


_MARK_QUEUED = _statement(
    _move(MoveKind.MARK_QUEUED, status="'queued'", where="t.id = ANY(CAST(:ids AS uuid[]))")
)

_CLAIM = _statement(
    _move(
        MoveKind.CLAIM,
        status="'running'",
        where="t.id = ANY(CAST(:ids AS uuid[]))",
        sets=", attempt = t.attempt + 1, worker = :worker,"
        " lease_expires_at = now() + make_interval(secs => :lease)",
    )
)

_RENEW_LEASE = text(
    """
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => :lease)
FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS int[])) AS r(id, attempt)
WHERE t.id = r.id AND t.attempt = r.attempt AND t.status = 'running'
RETURNING t.id
"""
)

# Runs whose lease ran out, held for a while by the sweeper that picked them
# (a short lease of its own) so that other sweepers skip them meanwhile.
_HOLD_EXPIRED = text(
    """
WITH picked AS (
    SELECT id FROM tasks
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT :batch
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => :hold)
FROM picked WHERE t.id = picked.id
RETURNING t.*
"""
)


def _finish_sql(kind: MoveKind) -> str:
    return _fenced(
        kind,
        status="r.status",
        columns="status text, output jsonb, errors jsonb, detail jsonb",
        sets=", output = r.output, errors = r.errors, lease_expires_at = NULL",
        detail="r.detail",
    )


# An outcome fenced off is dropped; its task's log says so.
_IGNORED = f""", ignored AS (
    {
    _events(
        "r",
        type_="'result_ignored'",
        detail="jsonb_build_object('attempt', r.attempt, 'status', r.status)",
        where="WHERE r.id NOT IN (SELECT id FROM moved) "
        "AND EXISTS (SELECT 1 FROM tasks x WHERE x.id = r.id)",
    )
}
)
SELECT * FROM moved"""


def _with_ignored(sql: str) -> str:
    head, _, _ = sql.rpartition("SELECT * FROM moved")
    return head.rstrip() + _IGNORED


_FINISH = _statement(_with_ignored(_finish_sql(MoveKind.FINISH)), "r")
_LOSE = _statement(_with_ignored(_finish_sql(MoveKind.RECOVER_LEASE)), "r")

_RETRY = _statement(
    _fenced(
        MoveKind.RETRY,
        status="'queued'",
        columns="errors jsonb, delay float8, detail jsonb",
        sets=", errors = r.errors, lease_expires_at = NULL,"
        " available_at = now() + make_interval(secs => r.delay)",
        detail="r.detail",
    ),
    "r",
)

_REQUEUE_LOST = _statement(
    _fenced(
        MoveKind.RECOVER_LEASE,
        status="'queued'",
        sets=", lease_expires_at = NULL, available_at = NULL",
        detail="jsonb_build_object('reason', 'worker_lost', 'attempt', r.attempt)",
    ),
    "r",
)

_HAND_BACK = _statement(
    _move(
        MoveKind.HAND_BACK,
        status="'queued'",
        where="starts_with(t.worker, :prefix)",
        sets=", lease_expires_at = NULL",
        detail="""'{"reason": "worker stopping"}'::jsonb""",
    )
)

_QUEUE_TIMEOUT = _statement(
    _move(
        MoveKind.QUEUE_TIMEOUT,
        status="'failed'",
        where="t.id = ANY(CAST(:ids AS uuid[])) AND t.queue_timeout_seconds IS NOT NULL"
        " AND t.created_at < now() - make_interval(secs => t.queue_timeout_seconds)",
        sets=", errors = :errors",
        detail="""'{"reason": "queue_timeout"}'::jsonb""",
        returning="t.id, t.parent_id, t.flow_step_id, t.status, t.errors",
    ),
    "errors",
)

_START_FLOW = _statement(
    _fenced(
        MoveKind.START_FLOW,
        status="'waiting'",
        columns="open_steps int",
        sets=", open_steps = r.open_steps, lease_expires_at = NULL",
    ),
    "r",
)


_FLOW_ENDED = """'{"flow": "ended"}'::jsonb"""
_ENDED_SETS = ", output = r.output, errors = r.errors, open_steps = 0, lease_expires_at = NULL"

_END_FLOW = _statement(
    _move(
        MoveKind.END_FLOW,
        status="r.status",
        inputs=_recordset("r", "id uuid, status text, output jsonb, errors jsonb"),
        pick="JOIN r ON r.id = t.id",
        using="JOIN r ON r.id = old.id",
        sets=_ENDED_SETS,
        detail=_FLOW_ENDED,
    ),
    "r",
)

# A claimed Flow without steps completes at once (fenced like its start).
_COMPLETE_EMPTY_FLOW = _statement(
    _fenced(
        MoveKind.START_FLOW,
        status="r.status",
        columns="status text, output jsonb, errors jsonb",
        sets=_ENDED_SETS,
        detail=_FLOW_ENDED,
    ),
    "r",
)

# A subtree, walked down from its roots; each task once, with a root it is under.
_SUBTREE = f"""sub(id, root, depth, path) AS (
    SELECT t.id, t.id, 1, ARRAY[t.id] FROM tasks t WHERE t.id = ANY(CAST(:ids AS uuid[])) {{org}}
    UNION ALL
    SELECT c.id, sub.root, sub.depth + 1, sub.path || c.id
    FROM sub JOIN tasks c ON c.parent_id = sub.id
    WHERE sub.depth < {MAX_TREE_DEPTH} AND c.id <> ALL(sub.path)
), tree AS (SELECT DISTINCT ON (id) id, root FROM sub ORDER BY id, depth), """


def _cancel_sql(org: str) -> str:
    return _move(
        MoveKind.CANCEL,
        status="'cancelled'",
        inputs=_SUBTREE.format(org=org),
        pick="JOIN tree ON tree.id = t.id",
        using="JOIN tree ON tree.id = old.id",
        detail="jsonb_build_object('reason', 'cancel requested', 'root', tree.root)",
        returning="t.id, t.parent_id, t.flow_step_id, t.status, t.errors",
        recursive=True,
    )


_CANCEL_IN_ORG = _statement(_cancel_sql("AND t.organization_id = :org"))
_CANCEL = _statement(_cancel_sql(""))

_WAITED_TOO_LONG = """'{"reason": "waited too long for a worker"}'::jsonb"""

_REPUBLISH = text(
    f"""
WITH moved AS (
    UPDATE tasks SET updated_at = now(),
        status = CASE WHEN status = 'created' THEN 'queued' ELSE status END
    WHERE id = ANY(CAST(:ids AS uuid[])) AND status IN {sql_list(RULES[MoveKind.REPUBLISH].sources)}
    RETURNING id, status
), ev AS (
    {
        _events(
            "moved",
            type_="'republished'",
            to_status="status",
            detail=''''{"reason": "waited too long for a worker"}'::jsonb''',
        )
    }
)
SELECT id FROM moved
"""
)


# --- A caller's PUT: fields and status in one statement --------------------------------

_FIELD_TYPES = {
    "description": "text",
    "ended_at": "timestamptz",
    "errors": "jsonb",
    "executor_id": "text",
    "input": "jsonb",
    "output": "jsonb",
    "params": "jsonb",
    "parent_id": "uuid",
    "started_at": "timestamptz",
    "title": "text",
}
assert set(_FIELD_TYPES) == MUTABLE_FIELDS - {"status"}, "every mutable field has an SQL type"


def _new(column: str) -> str:
    """The value a column takes: the one sent, else the stored one."""
    return f"CASE WHEN '{column}' = ANY(r.fields) THEN r.{column} ELSE t.{column} END"


def _update_sql() -> str:
    columns = ", ".join(f"{name} {kind}" for name, kind in sorted(_FIELD_TYPES.items()))
    plain = [c for c in sorted(_FIELD_TYPES) if c not in ("started_at", "ended_at")]
    sets = ", ".join(f"{c} = {_new(c)}" for c in plain)
    status = "coalesce(r.status, t.status)"
    stamps = _timestamps(
        status, MoveKind.SET_STATUS, started=_new("started_at"), ended=_new("ended_at")
    )
    return f"""
WITH r AS (
    SELECT * FROM jsonb_to_recordset(:r) AS r(id uuid, fields text[], status text,
                                              sources text[], {columns})
), old AS (
    SELECT t.id, t.status FROM tasks t JOIN r ON r.id = t.id
    WHERE r.status IS NULL OR t.status = r.status OR t.status = ANY(r.sources)
    ORDER BY t.id
    FOR NO KEY UPDATE OF t
), moved AS (
    UPDATE tasks t SET {sets}, status = {status},
        {stamps}
    FROM old JOIN r ON r.id = old.id
    WHERE t.id = old.id
    RETURNING t.*, old.status AS from_status, r.fields AS changed
), logged AS (
    SELECT id, 1 AS ord, 'updated' AS type, NULL AS from_status, NULL AS to_status,
           jsonb_build_object('fields', to_jsonb(changed)) AS detail
    FROM moved WHERE cardinality(changed) > 0
    UNION ALL
    SELECT id, 2, 'status', from_status, status, NULL FROM moved WHERE status <> from_status
), ev AS (
    {
        _events(
            "logged",
            type_="type",
            from_status="from_status",
            to_status="to_status",
            detail="detail",
            where="ORDER BY id, ord",
        )
    }
)
SELECT * FROM moved
"""


_UPDATE = _statement(_update_sql(), "r")


# --- Creating tasks -----------------------------------------------------------------------

# Each distinct parent, its organization and how deep it is (walked up to the cap).
_PARENTS = f"""up(start, id, parent_id, depth, path) AS (
    SELECT p.id, p.id, p.parent_id, 1, ARRAY[p.id] FROM tasks p
    WHERE p.id IN (SELECT parent_id FROM r)
    UNION ALL
    SELECT up.start, t.id, t.parent_id, up.depth + 1, up.path || t.id
    FROM up JOIN tasks t ON t.id = up.parent_id
    WHERE up.depth < {MAX_TREE_DEPTH} AND t.id <> ALL(up.path)
), parents AS (
    SELECT p.id, p.organization_id, d.depth FROM tasks p
    JOIN (SELECT start, max(depth) AS depth FROM up GROUP BY start) d ON d.start = p.id
), ok AS (
    SELECT r.* FROM r WHERE r.parent_id IS NULL OR EXISTS (
        SELECT 1 FROM parents p WHERE p.id = r.parent_id
        AND p.organization_id = r.organization_id AND p.depth < {MAX_TREE_DEPTH})
), """


def _create_sql(*, with_parents: bool) -> str:
    values = {c: f"ok.{c}" for c in INSERT_COLUMNS}
    values["params"] = "coalesce(ok.params, '{}'::jsonb)"
    values["started_at"] = "coalesce(ok.started_at, CASE WHEN ok.status = 'running' THEN now() END)"
    values["ended_at"] = (
        f"coalesce(ok.ended_at, CASE WHEN ok.status IN {_TERMINAL} "
        "THEN greatest(now(), ok.started_at) END)"
    )
    ok = _PARENTS if with_parents else "ok AS (SELECT * FROM r), "
    return f"""
WITH RECURSIVE r AS (
    SELECT * FROM jsonb_populate_recordset(NULL::tasks, :rows)
), {ok}st AS (
    INSERT INTO states (id, organization_id, name)
    SELECT ok.state_id, ok.organization_id, 'task ' || ok.id FROM ok
    WHERE ok.id = ANY(CAST(:stateful AS uuid[]))
), t AS (
    INSERT INTO tasks ({", ".join(INSERT_COLUMNS)}, created_at, updated_at)
    SELECT {", ".join(values[c] for c in INSERT_COLUMNS)}, now(), now()
    FROM ok ORDER BY ok.id
    RETURNING *
), ev AS (
    {
        _events(
            "t",
            type_="'created'",
            to_status="status",
            detail="CASE WHEN flow_step_id IS NOT NULL "
            "THEN jsonb_build_object('flow', parent_id, 'step', flow_step_id) END",
        )
    }
)
SELECT * FROM t ORDER BY id
"""


_CREATE = _statement(_create_sql(with_parents=False), "rows")
_CREATE_WITH_PARENTS = _statement(_create_sql(with_parents=True), "rows")


# --- Locks ---------------------------------------------------------------------------------

# A task and every Flow it is (transitively) a step of, in id order: the order
# every writer of a task tree locks in.
_LOCK_CHAINS = f"""
WITH RECURSIVE chain(id, parent_id, flow_step_id, depth, path) AS (
    SELECT id, parent_id, flow_step_id, 1, ARRAY[id] FROM tasks
    WHERE id = ANY(CAST(:ids AS uuid[])) {{org}}
    UNION ALL
    SELECT t.id, t.parent_id, t.flow_step_id, c.depth + 1, c.path || t.id
    FROM chain c JOIN tasks t ON t.id = c.parent_id
    WHERE c.flow_step_id IS NOT NULL AND c.depth < {MAX_TREE_DEPTH} AND t.id <> ALL(c.path)
)
SELECT t.id FROM tasks t WHERE t.id IN (SELECT id FROM chain) ORDER BY t.id FOR NO KEY UPDATE OF t
"""
_LOCK = text(_LOCK_CHAINS.format(org=""))
_LOCK_IN_ORG = text(_LOCK_CHAINS.format(org="AND organization_id = :org"))


# --- Flows: their steps and counters --------------------------------------------------------

_STORE_STEPS = _statement(
    f"""
WITH s AS (
    INSERT INTO flow_steps (flow_id, step_id, spec, dependents, pending)
    SELECT s.flow_id, s.step_id, s.spec, ARRAY(SELECT jsonb_array_elements_text(s.dependents)),
           s.pending
    FROM jsonb_to_recordset(:steps)
        AS s(flow_id uuid, step_id text, spec jsonb, dependents jsonb, pending int)
), e AS (
    SELECT * FROM jsonb_to_recordset(:events) AS e(task_id uuid, detail jsonb)
), ev AS (
    {_events("e", type_="'spawned'", task_id="task_id", detail="detail")}
)
SELECT 1
""",
    "steps",
    "events",
)

_FAN_IN_STATE = _statement(
    """
SELECT e.id AS child_id, f.id AS flow_id, f.organization_id, f.author_id, f.app_id, f.state_id,
       f.open_steps,
       s.spec, s.dependents
FROM jsonb_to_recordset(:ended) AS e(id uuid, parent_id uuid, step text)
JOIN tasks f ON f.id = e.parent_id AND f.kind = 'Flow' AND f.status = 'waiting'
JOIN flow_steps s ON s.flow_id = f.id AND s.step_id = e.step
ORDER BY f.id, e.id
""",
    "ended",
)

_PENDING = text(
    """
SELECT s.flow_id, s.step_id, s.pending, s.spec FROM flow_steps s
JOIN unnest(CAST(:flows AS uuid[]), CAST(:steps AS text[])) AS d(flow_id, step_id)
  ON s.flow_id = d.flow_id AND s.step_id = d.step_id
"""
)

_COUNT_DOWN = _statement(
    f"""
WITH c AS (
    SELECT * FROM jsonb_to_recordset(:counts) AS c(id uuid, k int)
), f AS (
    UPDATE tasks t SET open_steps = t.open_steps - c.k FROM c WHERE t.id = c.id RETURNING t.id
), d AS (
    SELECT * FROM jsonb_to_recordset(:releases) AS d(flow_id uuid, step_id text, k int)
), s AS (
    UPDATE flow_steps fs SET pending = fs.pending - d.k FROM d
    WHERE fs.flow_id = d.flow_id AND fs.step_id = d.step_id RETURNING 1
), e AS (
    SELECT * FROM jsonb_to_recordset(:events) AS e(ord int, task_id uuid, detail jsonb)
), ev AS (
    {_events("e", type_="'fan_in'", task_id="task_id", detail="detail", where="ORDER BY ord")}
)
SELECT (SELECT count(*) FROM f) AS flows, (SELECT count(*) FROM s) AS steps
""",
    "counts",
    "releases",
    "events",
)

_STEP_DATA = text(
    """
SELECT id AS flow_id, NULL AS step, input AS value FROM tasks
WHERE id = ANY(CAST(:inputs AS uuid[]))
UNION ALL
SELECT parent_id, flow_step_id, output FROM tasks
WHERE parent_id = ANY(CAST(:flows AS uuid[])) AND flow_step_id = ANY(CAST(:steps AS text[]))
  AND status = 'completed'
"""
)

_OUTPUTS = text(
    """
SELECT parent_id AS flow_id, flow_step_id, status, output, errors FROM tasks
WHERE parent_id = ANY(CAST(:flows AS uuid[])) AND flow_step_id IS NOT NULL ORDER BY id
"""
)


# --- Running them ----------------------------------------------------------------------------


def _records(conn: Connection, stmt: TextClause, values: Mapping[str, Any]) -> list[TaskRecord]:
    return [TaskRecord.from_row(r) for r in conn.execute(stmt, values).mappings()]


def create(
    conn: Connection,
    rows: Sequence[Mapping[str, Any]],
    stateful: Sequence[uuid.UUID],
    *,
    actor: str,
    trusted: bool = False,
) -> list[TaskRecord]:
    """Insert tasks (``rows``: column -> value), the state objects of the
    ``stateful`` ones and their `created` events; a row whose parent is
    missing, of another organization or at the depth cap is left out, unless
    its parent is ``trusted`` (a locked Flow spawning its steps)."""
    checked = not trusted and any(row.get("parent_id") is not None for row in rows)
    stmt = _CREATE_WITH_PARENTS if checked else _CREATE
    values = {"rows": _rows(rows), "stateful": list(stateful), "actor": actor}
    return _records(conn, stmt, values)


def mark_queued(conn: Connection, ids: Sequence[uuid.UUID], *, actor: str) -> list[TaskRecord]:
    """`created` -> `queued` for published tasks."""
    return _records(conn, _MARK_QUEUED, {"ids": list(ids), "actor": actor})


def republish(conn: Connection, ids: Sequence[uuid.UUID], *, actor: str) -> int:
    """Re-arm the clock of tasks published again (and mark `created` ones `queued`)."""
    return len(conn.execute(_REPUBLISH, {"ids": list(ids), "actor": actor}).all())


def claim(
    conn: Connection, ids: Sequence[uuid.UUID], *, worker: str, lease: float, actor: str
) -> list[TaskRecord]:
    """Waiting tasks -> `running` as a new attempt with a lease."""
    values = {"ids": list(ids), "worker": worker, "lease": lease, "actor": actor}
    return _records(conn, _CLAIM, values)


def renew_leases(
    conn: Connection, attempts: Sequence[tuple[uuid.UUID, int]], *, lease: float
) -> set[uuid.UUID]:
    """Extend the leases of runs still current; the ids renewed."""
    values = {
        "ids": [task_id for task_id, _ in attempts],
        "attempts": [number for _, number in attempts],
        "lease": lease,
    }
    return {r.id for r in conn.execute(_RENEW_LEASE, values)}


def hold_expired(conn: Connection, *, batch: int, hold: float) -> list[TaskRecord]:
    """Pick runs whose lease expired and hold them for ``hold`` seconds."""
    return _records(conn, _HOLD_EXPIRED, {"batch": batch, "hold": hold})


def finish(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str, lost: bool = False
) -> list[TaskRecord]:
    """Fenced outcomes (id, attempt, status, output, errors, detail); a
    fenced-off one is logged as `result_ignored`. ``lost``: the sweeper's,
    for runs whose worker stopped."""
    return _records(conn, _LOSE if lost else _FINISH, {"r": _rows(rows), "actor": actor})


def retry(conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str) -> list[TaskRecord]:
    """Fenced hand-backs for another attempt (id, attempt, errors, delay, detail)."""
    return _records(conn, _RETRY, {"r": _rows(rows), "actor": actor})


def requeue_lost(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str
) -> list[TaskRecord]:
    """Fenced hand-backs of runs whose worker stopped (id, attempt)."""
    return _records(conn, _REQUEUE_LOST, {"r": _rows(rows), "actor": actor})


def hand_back(conn: Connection, *, worker_prefix: str, actor: str) -> list[TaskRecord]:
    """Every task running on one worker node -> `queued`."""
    return _records(conn, _HAND_BACK, {"prefix": worker_prefix, "actor": actor})


def queue_timeout(
    conn: Connection, ids: Sequence[uuid.UUID], errors: list[dict[str, str]], *, actor: str
) -> list[Row[Any]]:
    """Waiting tasks past their queueTimeoutSeconds -> `failed` (slim rows)."""
    values = {"ids": list(ids), "errors": errors, "actor": actor}
    return list(conn.execute(_QUEUE_TIMEOUT, values))


def cancel(
    conn: Connection,
    ids: Sequence[uuid.UUID],
    *,
    actor: str,
    organization_id: uuid.UUID | None = None,
) -> list[Row[Any]]:
    """Tasks and every non-terminal descendant -> `cancelled` (slim rows)."""
    values: dict[str, Any] = {"ids": list(ids), "actor": actor}
    if organization_id is None:
        return list(conn.execute(_CANCEL, values))
    return list(conn.execute(_CANCEL_IN_ORG, {**values, "org": organization_id}))


def update(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str
) -> list[tuple[TaskRecord, Status]]:
    """PUTs: (id, fields, status, sources, the fields' values) -> each task as
    changed, and the status it had before."""
    result = conn.execute(_UPDATE, {"r": _rows(rows), "actor": actor}).mappings()
    return [(TaskRecord.from_row(r), Status(r["from_status"])) for r in result]


def lock(
    conn: Connection, ids: Sequence[uuid.UUID], *, organization_id: uuid.UUID | None = None
) -> set[uuid.UUID]:
    """Lock tasks and the Flows they are steps of, in id order; the ids locked."""
    if organization_id is None:
        return {r.id for r in conn.execute(_LOCK, {"ids": list(ids)})}
    values = {"ids": list(ids), "org": organization_id}
    return {r.id for r in conn.execute(_LOCK_IN_ORG, values)}


def start_flows(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str
) -> list[TaskRecord]:
    """Claimed Flows (id, attempt, open) -> `waiting` with their count of open steps."""
    return _records(conn, _START_FLOW, {"r": _rows(rows), "actor": actor})


def end_flows(conn: Connection, move: EndFlow) -> list[TaskRecord]:
    """Waiting Flows -> `completed` or `failed`, with their output and errors."""
    rows = [
        {"id": e.flow_id, "status": e.status, "output": e.output, "errors": e.errors}
        for e in move.ends
    ]
    return _records(conn, _END_FLOW, {"r": _rows(rows), "actor": move.actor})


def complete_empty_flows(
    conn: Connection, attempts: Sequence[Attempt], *, actor: str
) -> list[TaskRecord]:
    """Claimed Flows without steps -> `completed` with an empty output."""
    rows = [
        {"id": a.task_id, "attempt": a.number, "status": Status.COMPLETED, "output": {},
         "errors": []}
        for a in attempts
    ]  # fmt: skip
    return _records(conn, _COMPLETE_EMPTY_FLOW, {"r": _rows(rows), "actor": actor})


def store_steps(
    conn: Connection,
    steps: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    *,
    actor: str,
) -> None:
    """Store started Flows' steps, and log what each spawned."""
    conn.execute(_STORE_STEPS, {"steps": _rows(steps), "events": _rows(events), "actor": actor})


def fan_in_state(conn: Connection, ended: Sequence[Mapping[str, Any]]) -> list[Row[Any]]:
    """For each ended step whose Flow waits: the Flow's counters and the step's spec."""
    return list(conn.execute(_FAN_IN_STATE, {"ended": _rows(ended)}))


def pending(conn: Connection, pairs: Sequence[tuple[uuid.UUID, str]]) -> list[Row[Any]]:
    """How many dependencies each (Flow, step) still waits on, and its spec."""
    values = {"flows": [f for f, _ in pairs], "steps": [s for _, s in pairs]}
    return list(conn.execute(_PENDING, values))


def count_down(
    conn: Connection,
    counts: Sequence[Mapping[str, Any]],
    releases: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    *,
    actor: str,
) -> None:
    """Flows' open steps and steps' pending dependencies go down; `fan_in` events."""
    values = {
        "counts": _rows(counts),
        "releases": _rows(releases),
        "events": _rows(events),
        "actor": actor,
    }
    conn.execute(_COUNT_DOWN, values)


def step_data(
    conn: Connection, inputs: Sequence[uuid.UUID], flows: Sequence[uuid.UUID], steps: Sequence[str]
) -> list[Row[Any]]:
    """Inputs of Flows, and outputs of completed steps, for resolving references."""
    values = {"inputs": list(inputs), "flows": list(flows), "steps": list(steps)}
    return list(conn.execute(_STEP_DATA, values))


def outputs(conn: Connection, flows: Sequence[uuid.UUID]) -> list[Row[Any]]:
    """Every step's status, output and errors, for Flows that complete."""
    return list(conn.execute(_OUTPUTS, {"flows": list(flows)}))
