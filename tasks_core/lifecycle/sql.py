"""How a move is written in SQL: the shape of a status change and of an event row.

Every status change of the lifecycle is built by :func:`move`: a guarded
``UPDATE`` whose allowed sources are the rule of its kind in
``tasks_core.status``, which locks its rows in id order (so moves can not
deadlock on each other) and logs each change through :func:`events`, the one
shape of an event row. Inputs come as one JSON array read with
``jsonb_to_recordset`` (:func:`recordset`), so that one task and a thousand
cost the same round trip.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, TextClause

from tasks_core.status import RULES, TERMINAL_STATUSES, MoveKind, Status
from tasks_core.storage.db import json_ids, sql_list
from tasks_core.storage.rows import tasks_of
from tasks_core.task import TaskRecord

TERMINAL = sql_list(TERMINAL_STATUSES)


# Values a recordset takes as they are. Most of a row's values are these, and
# a create turns some twenty of them: one set lookup each is cheaper than
# three isinstance tests (a Status is a str, but not of type str).
_AS_IS = frozenset({str, int, float, bool, type(None), dict, list})


def json_ready(value: Any) -> Any:
    """A column value as JSON for a recordset (ids, times and statuses as strings)."""
    if type(value) in _AS_IS:
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def json_rows(values: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a recordset, their values as JSON."""
    return [{k: json_ready(v) for k, v in row.items()} for row in values]


# --- The one shape of an event row -------------------------------------------------------

_EVENT_COLUMNS = "task_id, type, from_status, to_status, actor, detail"


def events(
    source: str,
    *,
    type_: str,
    task_id: str = "id",
    from_status: str = "NULL",
    to_status: str = "NULL",
    detail: str = "NULL",
    where: str = "",
    actor: str = ":actor",
) -> str:
    """``INSERT`` of one event per row of ``source``, by the statement's ``:actor``
    (or the ``actor`` expression given)."""
    return (
        f"INSERT INTO task_events ({_EVENT_COLUMNS}) "
        f"SELECT {task_id}, {type_}, {from_status}, {to_status}, {actor}, {detail} "
        f"FROM {source} {where}"
    )


# --- Status moves --------------------------------------------------------------------------


def timestamps(
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
        # A run that starts has not ended: an endedAt its creator or a PUT gave
        # ahead (perhaps before now) would break startedAt <= endedAt.
        sets.append(f"started_at = {start}, ended_at = NULL")
    elif fixed is None and Status.RUNNING in targets:
        sets.append(f"started_at = CASE WHEN {status} = 'running' THEN {start} ELSE {started} END")
    elif started != "t.started_at":
        sets.append(f"started_at = {started}")
    end = f"coalesce({ended}, greatest(now(), {started}))"
    if fixed in TERMINAL_STATUSES:
        sets.append(f"ended_at = {end}")
    elif fixed is None and targets & TERMINAL_STATUSES:
        sets.append(f"ended_at = CASE WHEN {status} IN {TERMINAL} THEN {end} ELSE {ended} END")
    elif ended != "t.ended_at":
        sets.append(f"ended_at = {ended}")
    return ", ".join([*sets, "updated_at = now()"])


def keyed_status(statuses: Iterable[Status]) -> str:
    """The status guard of a task found by its id, written so that only the
    primary key can find it. Written plainly (``t.status IN (...)``) it lets
    the planner pick a partial index of waiting or running tasks instead,
    and scan that whole index for each id: with statistics taken while few
    tasks waited (a million completed rows), a claim of 32 ids during a
    backlog took 9.7 ms where it takes 1.3. No index's predicate follows
    from ``(t.status || '')``, which is the status all the same."""
    return f"(t.status || '') IN {sql_list(statuses)}"


def locked(kind: MoveKind, *, keys: str | None, fence: bool = False, where: str = "") -> str:
    """A SELECT of the tasks a move of ``kind`` may move now, each locked.

    ``keys`` selects the ids (and, with ``fence``, the attempts) named by the
    move: each is found by one primary-key lookup (a ``LATERAL`` subquery
    that holds the row lock, which PostgreSQL never flattens into a join, its
    status guard by :func:`keyed_status`), so the plan is the same whatever
    the statistics say, also as a prepared statement's generic plan. Without
    ``keys``, the status and ``where`` pick them.
    Locks are taken in id order, so moves can not deadlock on each other, and
    ``FOR NO KEY UPDATE``: exclusive among writers, yet not in the way of a
    child's foreign-key check on its parent (an id never changes).
    """
    sources = RULES[kind].sources
    more = " AND t.attempt = k.attempt" if fence else ""
    more += f" AND {where}" if where else ""
    if keys is None:  # picked by status: its indexes are the point
        return (
            f"SELECT t.id, t.status FROM tasks t WHERE t.status IN {sql_list(sources)}{more} "
            "ORDER BY t.id FOR NO KEY UPDATE"
        )
    guard = keyed_status(sources) + more
    return f"""SELECT t.id, t.status FROM ({keys} ORDER BY id) AS k
    CROSS JOIN LATERAL (
        SELECT t.id, t.status FROM tasks t WHERE t.id = k.id AND {guard} FOR NO KEY UPDATE
    ) AS t"""


def progress(kind: MoveKind) -> str:
    """What every status move resets: the sweeper's count of failed recoveries
    (a move is progress; the move that gives up on a task keeps it), and, for a
    move into a wait (a retry, a hand-back, a lost run's new attempt), the
    republish backoff, which starts afresh."""
    sets = [] if kind is MoveKind.RECOVERY_FAILED else ["recovery_failures = 0"]
    if RULES[kind].targets & {Status.CREATED, Status.QUEUED}:
        sets += ["republishes = 0", "republish_at = NULL"]
    return "".join(f", {s}" for s in sets)


def by_key(relation: str, *, alias: str = "t", column: str = "id") -> str:
    """A condition that reaches each task of ``relation`` (its ``column``)
    through the primary key, whatever the statistics (an array made by a
    subquery can only be an index condition)."""
    return f"{alias}.id = ANY(ARRAY(SELECT {column} FROM {relation}))"


def move(
    kind: MoveKind,
    *,
    status: str,
    keys: str | None,
    inputs: str = "",
    fence: bool = False,
    where: str = "",
    using: str = "",
    sets: str = "",
    detail: str = "NULL::jsonb",
    returning: str = "t.*",
    recursive: bool = False,
) -> str:
    """A guarded status move of the tasks :func:`locked` picks.

    ``inputs`` are CTEs the move reads (``r``, its rows); ``keys`` and
    ``where`` pick the tasks; ``using`` joins the inputs again to the locked
    rows in the ``UPDATE``, where ``status``, ``sets`` and the event's
    ``detail`` may read them. The sources are the rule of ``kind``.
    """
    return f"""
WITH {"RECURSIVE " if recursive else ""}{inputs}old AS (
    {locked(kind, keys=keys, fence=fence, where=where)}
), moved AS (
    UPDATE tasks t SET status = {status}, {timestamps(status, kind)}{progress(kind)}{sets}
    FROM old {using}
    WHERE {by_key("old")} AND t.id = old.id
    RETURNING {returning}, old.status AS from_status, {detail} AS event_detail
), ev AS (
    {
        events(
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


# The ids a move names, from its :ids parameter (a JSON array).
IDS = "SELECT unnest(" + json_ids("ids") + ") AS id"


def recordset(name: str, columns: str) -> str:
    return f"{name} AS (SELECT * FROM jsonb_to_recordset(:{name}) AS {name}({columns})), "


# A run's lease as the sweeper saw it (rows with ``lease``): a run renewed since
# has a later one, and is left alone.
LEASE_FENCE = "t.lease_expires_at IS NOT DISTINCT FROM k.lease"
# A recovery decided in time (rows with ``decide_by``): PostgreSQL's clock, as it
# applies the row, is before the row's deadline. A recovery that reaches the
# server only after an outage, long after the sweeper held the run, is dropped:
# the run's worker may have waited out the same outage to renew it.
DECIDED_IN_TIME = "(k.decide_by IS NULL OR clock_timestamp() < k.decide_by)"
RECOVERY_COLUMNS = "lease timestamptz, decide_by timestamptz"


def fenced(
    kind: MoveKind,
    *,
    status: str,
    sets: str,
    columns: str = "",
    detail: str = "NULL::jsonb",
    where: str = "",
) -> str:
    """A move of runs, given as rows ``r`` (``id uuid, attempt int, ...``):
    each applies only while its task is still at the run's attempt (and
    ``where`` holds, with ``k`` the row)."""
    return move(
        kind,
        status=status,
        inputs=recordset("r", "id uuid, attempt int" + (f", {columns}" if columns else "")),
        keys="SELECT * FROM r",
        fence=True,
        where=where,
        using="JOIN r ON r.id = old.id",
        sets=sets,
        detail=detail,
    )


def records(conn: Connection, stmt: TextClause, values: Mapping[str, Any]) -> list[TaskRecord]:
    """The tasks a move returns (``RETURNING t.*``), read from the driver."""
    return tasks_of(conn, stmt, values)
