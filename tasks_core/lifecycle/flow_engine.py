"""Running Flows: spawning steps as child tasks and fanning in, exactly once.

Every function here runs inside the caller's transaction, after
:func:`lock_chain` has locked the task and the Flows above it (in id order,
the order every other writer of a task tree locks in, so they can not
deadlock). A step's child ending is then serialised with every other change
to its Flow: the Flow's count of open steps goes down once per step, a
dependent step is spawned when its last dependency ends (a unique index
forbids spawning it twice), and whichever child closes the last step ends
the Flow, once. Children created by hand (no ``flow_step_id``) are not steps
and are never counted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from tasks_core.flow_definitions import FLOW_KIND, Step, refs_in, resolve_refs
from tasks_core.ids import new_id
from tasks_core.records import TaskRecord
from tasks_core.status import Status
from tasks_core.storage.tasks import (
    append_event,
    cancel_subtree,
    get_task,
    lock_task,
    transition,
)

STEP_FAILED = "step_failed"

_LOCK_CHAIN = text(
    """
WITH RECURSIVE chain AS (
    SELECT id, parent_id, flow_step_id FROM tasks WHERE id = :id
    UNION ALL
    SELECT t.id, t.parent_id, t.flow_step_id FROM tasks t JOIN chain c ON t.id = c.parent_id
    WHERE c.flow_step_id IS NOT NULL
)
SELECT t.id FROM tasks t WHERE t.id IN (SELECT id FROM chain) ORDER BY t.id FOR UPDATE OF t
"""
)


def lock_chain(conn: Connection, task_id: uuid.UUID) -> None:
    """Lock a task and every Flow it is (transitively) a step of."""
    conn.execute(_LOCK_CHAIN, {"id": task_id})


def lock_for_change(
    conn: Connection, organization_id: uuid.UUID, task_id: uuid.UUID
) -> TaskRecord | None:
    """Lock a task of the organization before changing its status: a Flow's
    step together with the Flows above it (its end may fan in to them)."""
    task = get_task(conn, organization_id, task_id)
    if task is None:
        return None
    if task.flow_step_id is None:
        return lock_task(conn, organization_id, task_id)
    lock_chain(conn, task_id)
    return get_task(conn, organization_id, task_id)


def start_flow(
    conn: Connection, flow: TaskRecord, steps: list[Step], *, actor: str
) -> list[TaskRecord] | None:
    """Store a claimed Flow's steps, move it to `waiting` and spawn the steps
    that wait on nothing. Returns the tasks to publish, or None when the run
    was fenced off (the Flow is no longer this attempt's)."""
    if not steps:
        done = _end_flow(
            conn, flow, Status.COMPLETED, output={}, actor=actor, sources={Status.RUNNING}
        )
        return None if done is None else _cascade(conn, done, actor=actor)
    waiting = transition(
        conn,
        flow.id,
        Status.WAITING,
        actor=actor,
        sources={Status.RUNNING},
        guard="AND attempt = :attempt",
        extra_sets=", open_steps = :open, lease_expires_at = NULL",
        params={"attempt": flow.attempt, "open": len(steps)},
    )
    if waiting is None:
        return None
    _insert_steps(conn, flow.id, steps)
    roots = [s for s in steps if not s.after]
    spawned = _spawn(conn, waiting, roots, actor=actor)
    append_event(conn, flow.id, "spawned", actor=actor, detail={"steps": [s.id for s in roots]})
    return spawned


def fan_in(conn: Connection, child: TaskRecord, *, actor: str) -> list[TaskRecord]:
    """Account for a step's child that just ended; returns newly spawned tasks."""
    assert child.parent_id is not None and child.flow_step_id is not None
    flow = _flow_row(conn, child.parent_id)
    if flow is None or flow.status is not Status.WAITING:
        return []  # the Flow ended already (failed, cancelled): nothing more happens
    spec = conn.execute(
        text("SELECT spec, dependents FROM flow_steps WHERE flow_id = :f AND step_id = :s"),
        {"f": flow.id, "s": child.flow_step_id},
    ).first()
    if spec is None:
        return []
    step = Step.from_json(spec.spec)
    if child.status is not Status.COMPLETED and not step.continue_on_error:
        return _fail_flow(conn, flow, child, actor=actor)
    open_steps = conn.execute(
        text("UPDATE tasks SET open_steps = open_steps - 1 WHERE id = :id RETURNING open_steps"),
        {"id": flow.id},
    ).scalar_one()
    ready = _release_dependents(conn, flow.id, list(spec.dependents))
    spawned = _spawn(conn, flow, ready, actor=actor)
    append_event(
        conn,
        flow.id,
        "fan_in",
        actor=actor,
        detail={
            "step": child.flow_step_id,
            "status": child.status.value,
            "open_steps": open_steps,
            "spawned": [s.id for s in ready],
        },
    )
    if open_steps > 0:
        return spawned
    done = _end_flow(conn, flow, Status.COMPLETED, output=_outputs(conn, flow.id), actor=actor)
    return spawned + (_cascade(conn, done, actor=actor) if done else [])


def _fail_flow(
    conn: Connection, flow: FlowState, child: TaskRecord, *, actor: str
) -> list[TaskRecord]:
    """A step failed (or was cancelled) without continueOnError: the Flow fails
    and everything still open under it is cancelled."""
    cause = child.errors[0] if child.errors else {"code": child.status.value, "message": ""}
    message = f"step {child.flow_step_id!r} {child.status.value}"
    if cause.get("message") or cause.get("code") != child.status.value:
        message += f": {cause.get('code')}: {cause.get('message')}"
    errors = [{"code": STEP_FAILED, "message": message}]
    append_event(
        conn,
        flow.id,
        "fan_in",
        actor=actor,
        detail={"step": child.flow_step_id, "status": child.status.value, "fails_flow": True},
    )
    done = _end_flow(conn, flow, Status.FAILED, errors=errors, actor=actor)
    if done is None:
        return []
    cancel_subtree(conn, flow.organization_id, flow.id, actor=actor)
    return _cascade(conn, done, actor=actor)


def _end_flow(
    conn: Connection,
    flow: TaskRecord | FlowState,
    status: Status,
    *,
    actor: str,
    output: Any = None,
    errors: list[dict[str, str]] | None = None,
    sources: set[Status] | None = None,
) -> TaskRecord | None:
    return transition(
        conn,
        flow.id,
        status,
        actor=actor,
        sources=sources or {Status.WAITING},
        extra_sets=", output = :output, errors = :errors, open_steps = 0, lease_expires_at = NULL",
        params={"output": output, "errors": errors or []},
        json_params=("output", "errors"),
        detail={"flow": "ended"},
    )


def _cascade(conn: Connection, flow: TaskRecord, *, actor: str) -> list[TaskRecord]:
    """A Flow that is itself a step of a Flow ended: fan in one level up."""
    if flow.flow_step_id is None or flow.parent_id is None:
        return []
    return fan_in(conn, flow, actor=actor)


@dataclass(frozen=True, slots=True)
class FlowState:
    """What fan-in needs of a Flow (not its params: a large Flow's steps are
    there, and fan-in runs once per step)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    status: Status
    input: Any
    parent_id: uuid.UUID | None
    flow_step_id: str | None


def _flow_row(conn: Connection, flow_id: uuid.UUID) -> FlowState | None:
    row = conn.execute(
        text(
            "SELECT id, organization_id, status, input, parent_id, flow_step_id FROM tasks "
            "WHERE id = :id AND kind = :flow"
        ),
        {"id": flow_id, "flow": FLOW_KIND},
    ).first()
    if row is None:
        return None
    return FlowState(
        id=row.id,
        organization_id=row.organization_id,
        status=Status(row.status),
        input=row.input,
        parent_id=row.parent_id,
        flow_step_id=row.flow_step_id,
    )


def _insert_steps(conn: Connection, flow_id: uuid.UUID, steps: list[Step]) -> None:
    dependents: dict[str, list[str]] = {s.id: [] for s in steps}
    for step in steps:
        for dep in set(step.after):
            dependents[dep].append(step.id)
    rows = [
        {
            "step_id": s.id,
            "spec": s.to_json(),
            "dependents": dependents[s.id],
            "pending": len(set(s.after)),
        }
        for s in steps
    ]
    conn.execute(
        text(
            """
INSERT INTO flow_steps (flow_id, step_id, spec, dependents, pending)
SELECT :flow, r.step_id, r.spec, ARRAY(SELECT jsonb_array_elements_text(r.dependents)), r.pending
FROM jsonb_to_recordset(:rows) AS r(step_id text, spec jsonb, dependents jsonb, pending int)
"""
        ).bindparams(bindparam("rows", type_=JSONB)),
        {"flow": flow_id, "rows": rows},
    )


def _release_dependents(conn: Connection, flow_id: uuid.UUID, dependents: list[str]) -> list[Step]:
    """One dependency of each of ``dependents`` ended; those waiting on nothing more are ready."""
    if not dependents:
        return []
    rows = conn.execute(
        text(
            "UPDATE flow_steps SET pending = pending - 1 "
            "WHERE flow_id = :f AND step_id = ANY(:ids) RETURNING spec, pending"
        ),
        {"f": flow_id, "ids": dependents},
    )
    ready = [Step.from_json(r.spec) for r in rows if r.pending == 0]
    return sorted(ready, key=lambda s: s.id)


_SPAWN = text(
    """
WITH r AS (
    SELECT * FROM jsonb_to_recordset(:rows) AS r(
        id uuid, kind text, target_id text, executor_id text, title text, input jsonb,
        params jsonb, max_attempts int, timeout_seconds float8, flow_step_id text)
), t AS (
    INSERT INTO tasks (id, organization_id, author_id, app_id, parent_id, state_id, kind, status,
                       target_id, executor_id, title, input, params, errors, max_attempts,
                       timeout_seconds, flow_step_id, created_at, updated_at)
    SELECT r.id, f.organization_id, f.author_id, f.app_id, f.id, f.state_id, r.kind, 'created',
           r.target_id, r.executor_id, r.title, r.input, coalesce(r.params, '{}'::jsonb),
           '[]'::jsonb, r.max_attempts, r.timeout_seconds, r.flow_step_id, now(), now()
    -- Only what children inherit: a large Flow's params (its steps) are not read per spawn.
    FROM r CROSS JOIN (
        SELECT id, organization_id, author_id, app_id, state_id FROM tasks WHERE id = :flow
    ) AS f
    ORDER BY r.id
    RETURNING *
), ev AS (
    INSERT INTO task_events (task_id, type, to_status, actor, detail)
    SELECT id, 'created', 'created', :actor,
           jsonb_build_object('flow', parent_id, 'step', flow_step_id)
    FROM t
)
SELECT * FROM t ORDER BY id
"""
).bindparams(bindparam("rows", type_=JSONB))


def _spawn(
    conn: Connection, flow: TaskRecord | FlowState, steps: list[Step], *, actor: str
) -> list[TaskRecord]:
    """Create the child tasks of ``steps`` (inputs resolved) in one statement."""
    if not steps:
        return []
    outputs = _step_outputs(
        conn,
        flow.id,
        {r.split(".")[1] for s in steps for r in refs_in(s.input) if r.startswith("steps.")},
    )
    rows = [
        {
            "id": str(new_id()),
            "kind": s.kind,
            "target_id": s.target_id,
            "executor_id": s.executor_id,
            "title": s.title,
            "input": resolve_refs(s.input, flow_input=flow.input, outputs=outputs),
            "params": s.params,
            "max_attempts": s.max_attempts,
            "timeout_seconds": s.timeout_seconds,
            "flow_step_id": s.id,
        }
        for s in steps
    ]
    result = conn.execute(_SPAWN, {"rows": rows, "flow": flow.id, "actor": actor}).mappings()
    return [TaskRecord.from_row(r) for r in result]


def _step_outputs(conn: Connection, flow_id: uuid.UUID, step_ids: set[str]) -> dict[str, Any]:
    if not step_ids:
        return {}
    rows = conn.execute(
        text(
            "SELECT flow_step_id, output FROM tasks "
            "WHERE parent_id = :f AND flow_step_id = ANY(:ids) AND status = 'completed'"
        ),
        {"f": flow_id, "ids": sorted(step_ids)},
    )
    return {r.flow_step_id: r.output for r in rows}


def _outputs(conn: Connection, flow_id: uuid.UUID) -> dict[str, Any]:
    """The Flow's output: step id -> output; a failed step (continueOnError)
    -> ``{"status": "failed", "errors": [...]}``."""
    rows = conn.execute(
        text(
            "SELECT flow_step_id, status, output, errors FROM tasks "
            "WHERE parent_id = :f AND flow_step_id IS NOT NULL ORDER BY id"
        ),
        {"f": flow_id},
    )
    return {
        r.flow_step_id: r.output
        if r.status == Status.COMPLETED.value
        else {"status": r.status, "errors": r.errors}
        for r in rows
    }
