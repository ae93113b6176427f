"""The life of one run of a task, as the worker drives it.

``claim_task`` -> (``renew_lease`` ...) -> ``finish_task`` or ``retry_task``
(or, for a Flow, ``start_flow_run``).
Each is one guarded statement: the claim accepts only a task that waits to
run, and every later write is fenced by the attempt number the claim
returned, so a stale run (a duplicate delivery, a worker presumed dead) can
never overwrite a newer one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from tasks_core.flow_definitions import Step
from tasks_core.lifecycle.flow_engine import fan_in, lock_chain, start_flow
from tasks_core.lifecycle.publishing import enqueue_many, try_publish
from tasks_core.records import TaskRecord
from tasks_core.status import Status
from tasks_core.storage.tasks import append_event, get_task, transition
from tasks_core.store import Store


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: the terminal status and what to record."""

    status: Status
    output: Any = None
    errors: list[dict[str, str]] = field(default_factory=list)
    detail: dict[str, Any] | None = None  # goes to the event log (e.g. a traceback)


def claim_task(store: Store, task_id: uuid.UUID, *, worker: str) -> TaskRecord | None:
    """Move a waiting task to `running` as a new attempt, with a fresh lease.

    None means the task is not waiting to run (already claimed, finished or
    cancelled): the delivery is a duplicate or late and must be dropped.
    `created` is accepted too: a worker may see the message before the
    publisher has marked the task `queued`.
    """
    try:
        return _claim(store, task_id, worker=worker)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        # A pooled connection from before a database restart: once more, fresh.
        return _claim(store, task_id, worker=worker)


def _claim(store: Store, task_id: uuid.UUID, *, worker: str) -> TaskRecord | None:
    with store.relaxed_statement() as conn:
        return transition(
            conn,
            task_id,
            Status.RUNNING,
            actor=f"worker:{worker}",
            sources={Status.CREATED, Status.QUEUED},
            extra_sets=", attempt = t.attempt + 1, worker = :worker,"
            " lease_expires_at = now() + make_interval(secs => :lease)",
            params={"worker": worker, "lease": store.settings.lease_seconds},
        )


def renew_lease(store: Store, task_id: uuid.UUID, attempt: int) -> bool:
    """Extend the lease of a run; False when the run is no longer current
    (the task was cancelled, finished, or handed to another attempt)."""
    with store.relaxed_statement() as conn:
        row = conn.execute(
            text(
                "UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease) "
                "WHERE id = :id AND attempt = :attempt AND status = 'running' RETURNING 1"
            ),
            {"id": task_id, "attempt": attempt, "lease": store.settings.lease_seconds},
        ).first()
    return row is not None


def finish_task(
    store: Store, run: TaskRecord, outcome: Outcome, *, worker: str
) -> TaskRecord | None:
    """Record the outcome of ``run`` (the task as its claim returned it), only
    if that run is still the current one.

    None means the write was fenced off (cancelled meanwhile, or a newer
    attempt exists): the result is dropped, which the event log notes. A
    Flow's step fans in to its Flow in the same transaction; any other task's
    outcome is a single statement.
    """
    actor = f"worker:{worker}"
    if run.flow_step_id is None:
        with store.statement() as conn:
            return _record_outcome(conn, run, outcome, actor=actor)
    with store.transaction() as conn:
        lock_chain(conn, run.id)
        finished = _record_outcome(conn, run, outcome, actor=actor)
        spawned = fan_in(conn, finished, actor=actor) if finished else []
    enqueue_many(store, spawned)
    return finished


def _record_outcome(
    conn: Connection, run: TaskRecord, outcome: Outcome, *, actor: str
) -> TaskRecord | None:
    finished = transition(
        conn,
        run.id,
        outcome.status,
        actor=actor,
        sources={Status.RUNNING},
        guard="AND attempt = :attempt",
        extra_sets=", output = :output, errors = :errors, lease_expires_at = NULL",
        params={"attempt": run.attempt, "output": outcome.output, "errors": outcome.errors},
        json_params=("output", "errors"),
        detail={"attempt": run.attempt, **(outcome.detail or {})},
    )
    if finished is None:
        append_event(
            conn,
            run.id,
            "result_ignored",
            actor=actor,
            detail={"attempt": run.attempt, "status": outcome.status.value},
        )
    return finished


def retry_task(
    store: Store, run: TaskRecord, outcome: Outcome, *, delay: float, worker: str
) -> TaskRecord | None:
    """Hand a failed run back to its queue for another attempt after ``delay``
    seconds (fenced like :func:`finish_task`), then publish it again."""
    with store.statement() as conn:
        queued = transition(
            conn,
            run.id,
            Status.QUEUED,
            actor=f"worker:{worker}",
            sources={Status.RUNNING},
            guard="AND attempt = :attempt",
            extra_sets=", errors = :errors, lease_expires_at = NULL,"
            " available_at = now() + make_interval(secs => :delay)",
            params={"attempt": run.attempt, "errors": outcome.errors, "delay": delay},
            json_params=("errors",),
            detail={"retry": True, "attempt": run.attempt, "delay": round(delay, 3)}
            | (outcome.detail or {}),
        )
    if queued is not None:
        try_publish(store, queued, countdown=delay)
    return queued


def start_flow_run(
    store: Store, flow: TaskRecord, steps: list[Step], *, worker: str
) -> TaskRecord | None:
    """Start a claimed Flow: its steps stored, the ready ones spawned and
    published. Returns the Flow as it is then (`waiting`, or ended when it
    has no steps), or None when the run was fenced off."""
    with store.transaction() as conn:
        lock_chain(conn, flow.id)
        spawned = start_flow(conn, flow, steps, actor=f"worker:{worker}")
        current = get_task(conn, flow.organization_id, flow.id)
    if spawned is None:
        return None
    enqueue_many(store, spawned)
    return current


def hand_back(store: Store, *, node_prefix: str, actor: str) -> int:
    """Put every task still `running` on one worker (its ``worker`` column
    starts with ``node_prefix``) back on its queue, for a worker that stops.
    The attempt is kept: the next claim makes a new one, and a late outcome of
    the old run is fenced off because the task is no longer `running`."""
    with store.statement() as conn:
        rows = conn.execute(
            text(
                """
WITH moved AS (
    UPDATE tasks SET status = 'queued', lease_expires_at = NULL, updated_at = now()
    WHERE status = 'running' AND starts_with(worker, :prefix)
    RETURNING *
), ev AS (
    INSERT INTO task_events (task_id, type, from_status, to_status, actor, detail)
    SELECT id, 'status', 'running', 'queued', :actor, '{"reason": "worker stopping"}'::jsonb
    FROM moved
)
SELECT * FROM moved
"""
            ),
            {"prefix": node_prefix, "actor": actor},
        ).mappings()
        handed = [TaskRecord.from_row(r) for r in rows]
    for task in handed:
        try_publish(store, task)
    return len(handed)
