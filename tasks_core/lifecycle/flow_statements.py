"""The SQL of Flows: starting and ending them, their steps and their counters.

Written with the shapes of ``tasks_core.lifecycle.sql``; used by the Flow
engine (``tasks_core.lifecycle.flow_engine``) and the engine's Flow moves.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row

from tasks_core.lifecycle.moves import Attempt, EndFlow
from tasks_core.lifecycle.sql import (
    by_key,
    events,
    fenced,
    json_rows,
    move,
    records,
    recordset,
)
from tasks_core.status import MoveKind, Status
from tasks_core.storage.db import as_ids, json_ids, statement
from tasks_core.task import TaskRecord

_START_FLOW = statement(
    fenced(
        MoveKind.START_FLOW,
        status="'waiting'",
        columns="open_steps int",
        sets=", open_steps = r.open_steps, lease_expires_at = NULL",
    ),
    "r",
)


_FLOW_ENDED = """'{"flow": "ended"}'::jsonb"""
_ENDED_SETS = ", output = r.output, errors = r.errors, open_steps = 0, lease_expires_at = NULL"

_END_FLOW = statement(
    move(
        MoveKind.END_FLOW,
        status="r.status",
        inputs=recordset("r", "id uuid, status text, output jsonb, errors jsonb"),
        keys="SELECT * FROM r",
        using="JOIN r ON r.id = old.id",
        sets=_ENDED_SETS,
        detail=_FLOW_ENDED,
    ),
    "r",
)

# A claimed Flow without steps completes at once (fenced like its start).
_COMPLETE_EMPTY_FLOW = statement(
    fenced(
        MoveKind.START_FLOW,
        status="r.status",
        columns="status text, output jsonb, errors jsonb",
        sets=_ENDED_SETS,
        detail=_FLOW_ENDED,
    ),
    "r",
)

# A subtree, walked down from its roots; each task once, with a root it is under.
# --- Flows: their steps and counters --------------------------------------------------------

_STORE_STEPS = statement(
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
    {events("e", type_="'spawned'", task_id="task_id", detail="detail")}
)
SELECT 1
""",
    "steps",
    "events",
)

# For each ended step whose Flow waits: the Flow's counters and the step's
# definition, each found by its key (OFFSET 0 keeps a lookup a lookup).
_FAN_IN_STATE = statement(
    """
SELECT e.id AS child_id, f.id AS flow_id, f.organization_id, f.author_id, f.app_id, f.state_id,
       f.open_steps, s.spec, s.dependents
FROM jsonb_to_recordset(:ended) AS e(id uuid, parent_id uuid, step text)
CROSS JOIN LATERAL (
    SELECT f.id, f.organization_id, f.author_id, f.app_id, f.state_id, f.open_steps
    FROM tasks f WHERE f.id = e.parent_id AND f.kind = 'Flow' AND f.status = 'waiting' OFFSET 0
) AS f
CROSS JOIN LATERAL (
    SELECT s.spec, s.dependents FROM flow_steps s
    WHERE s.flow_id = f.id AND s.step_id = e.step OFFSET 0
) AS s
ORDER BY f.id, e.id
""",
    "ended",
)

_PENDING = statement(
    """
SELECT d.flow_id, d.step_id, s.pending, s.spec
FROM jsonb_to_recordset(:pairs) AS d(flow_id uuid, step_id text)
CROSS JOIN LATERAL (
    SELECT s.pending, s.spec FROM flow_steps s
    WHERE s.flow_id = d.flow_id AND s.step_id = d.step_id OFFSET 0
) AS s
""",
    "pairs",
)

_COUNT_DOWN = statement(
    f"""
WITH c AS (
    SELECT * FROM jsonb_to_recordset(:counts) AS c(id uuid, k int)
), f AS (
    UPDATE tasks t SET open_steps = t.open_steps - c.k FROM c
    WHERE {by_key("c")} AND t.id = c.id RETURNING t.id
), d AS (
    SELECT * FROM jsonb_to_recordset(:releases) AS d(flow_id uuid, step_id text, k int)
), s AS (
    UPDATE flow_steps fs SET pending = fs.pending - d.k FROM d
    WHERE fs.flow_id = ANY(ARRAY(SELECT flow_id FROM d))
      AND fs.step_id = ANY(ARRAY(SELECT step_id FROM d))
      AND fs.flow_id = d.flow_id AND fs.step_id = d.step_id
    RETURNING 1
), e AS (
    SELECT * FROM jsonb_to_recordset(:events) AS e(ord int, task_id uuid, detail jsonb)
), ev AS (
    {events("e", type_="'fan_in'", task_id="task_id", detail="detail", where="ORDER BY ord")}
)
SELECT (SELECT count(*) FROM f) AS flows, (SELECT count(*) FROM s) AS steps
""",
    "counts",
    "releases",
    "events",
)

_STEP_DATA = statement(
    f"""
SELECT id AS flow_id, NULL AS step, input AS value FROM tasks
WHERE id = ANY({json_ids("inputs")})
UNION ALL
SELECT parent_id, flow_step_id, output FROM tasks
WHERE parent_id = ANY({json_ids("flows")}) AND flow_step_id = ANY({json_ids("steps", "text")})
  AND status = 'completed'
""",
    "inputs",
    "flows",
    "steps",
)

_OUTPUTS = statement(
    f"""
SELECT parent_id AS flow_id, flow_step_id, status, output, errors FROM tasks
WHERE parent_id = ANY({json_ids("flows")}) AND flow_step_id IS NOT NULL ORDER BY id
""",
    "flows",
)


def start_flows(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, actor: str
) -> list[TaskRecord]:
    """Claimed Flows (id, attempt, open) -> `waiting` with their count of open steps."""
    return records(conn, _START_FLOW, {"r": json_rows(rows), "actor": actor})


def end_flows(conn: Connection, ending: EndFlow) -> list[TaskRecord]:
    """Waiting Flows -> `completed` or `failed`, with their output and errors."""
    rows = [
        {"id": e.flow_id, "status": e.status, "output": e.output, "errors": e.errors}
        for e in ending.ends
    ]
    return records(conn, _END_FLOW, {"r": json_rows(rows), "actor": ending.actor})


def complete_empty_flows(
    conn: Connection, attempts: Sequence[Attempt], *, actor: str
) -> list[TaskRecord]:
    """Claimed Flows without steps -> `completed` with an empty output."""
    rows = [
        {"id": a.task_id, "attempt": a.number, "status": Status.COMPLETED, "output": {},
         "errors": []}
        for a in attempts
    ]  # fmt: skip
    return records(conn, _COMPLETE_EMPTY_FLOW, {"r": json_rows(rows), "actor": actor})


def store_steps(
    conn: Connection,
    steps: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    *,
    actor: str,
) -> None:
    """Store started Flows' steps, and log what each spawned."""
    conn.execute(
        _STORE_STEPS, {"steps": json_rows(steps), "events": json_rows(events), "actor": actor}
    )


def fan_in_state(conn: Connection, ended: Sequence[Mapping[str, Any]]) -> list[Row[Any]]:
    """For each ended step whose Flow waits: the Flow's counters and the step's spec."""
    return list(conn.execute(_FAN_IN_STATE, {"ended": json_rows(ended)}))


def pending(conn: Connection, pairs: Sequence[tuple[uuid.UUID, str]]) -> list[Row[Any]]:
    """How many dependencies each (Flow, step) still waits on, and its spec."""
    rows = [{"flow_id": f, "step_id": s} for f, s in pairs]
    return list(conn.execute(_PENDING, {"pairs": json_rows(rows)}))


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
        "counts": json_rows(counts),
        "releases": json_rows(releases),
        "events": json_rows(events),
        "actor": actor,
    }
    conn.execute(_COUNT_DOWN, values)


def step_data(
    conn: Connection, inputs: Sequence[uuid.UUID], flows: Sequence[uuid.UUID], steps: Sequence[str]
) -> list[Row[Any]]:
    """Inputs of Flows, and outputs of completed steps, for resolving references."""
    values = {"inputs": as_ids(inputs), "flows": as_ids(flows), "steps": list(steps)}
    return list(conn.execute(_STEP_DATA, values))


def outputs(conn: Connection, flows: Sequence[uuid.UUID]) -> list[Row[Any]]:
    """Every step's status, output and errors, for Flows that complete."""
    return list(conn.execute(_OUTPUTS, {"flows": as_ids(flows)}))
