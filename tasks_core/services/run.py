"""The life of one run of a task, as the worker drives it.

``claim_task`` -> (``renew_lease`` ...) -> ``finish_task`` or ``retry_task``.
Each is one guarded statement: the claim accepts only a task that waits to
run, and every later write is fenced by the attempt number the claim
returned, so a stale run (a duplicate delivery, a worker presumed dead) can
never overwrite a newer one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from tasks_core.records import TaskRecord
from tasks_core.repository import append_event, transition
from tasks_core.services.enqueue import message_for
from tasks_core.services.store import Store
from tasks_core.status import Status


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
    with store.statement() as conn:
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
    with store.statement() as conn:
        row = conn.execute(
            text(
                "UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease) "
                "WHERE id = :id AND attempt = :attempt AND status = 'running' RETURNING 1"
            ),
            {"id": task_id, "attempt": attempt, "lease": store.settings.lease_seconds},
        ).first()
    return row is not None


def finish_task(
    store: Store, task_id: uuid.UUID, attempt: int, outcome: Outcome, *, worker: str
) -> TaskRecord | None:
    """Record the outcome of a run, only if that run is still the current one.

    None means the write was fenced off (cancelled meanwhile, or a newer
    attempt exists): the result is dropped, which the event log notes.
    """
    with store.transaction() as conn:
        finished = transition(
            conn,
            task_id,
            outcome.status,
            actor=f"worker:{worker}",
            sources={Status.RUNNING},
            guard="AND attempt = :attempt",
            extra_sets=", output = :output, errors = :errors, lease_expires_at = NULL",
            params={"attempt": attempt, "output": outcome.output, "errors": outcome.errors},
            json_params=("output", "errors"),
            detail={"attempt": attempt, **(outcome.detail or {})},
        )
        if finished is None:
            append_event(
                conn,
                task_id,
                "result_ignored",
                actor=f"worker:{worker}",
                detail={"attempt": attempt, "status": outcome.status.value},
            )
        return finished


def retry_task(
    store: Store,
    task_id: uuid.UUID,
    attempt: int,
    outcome: Outcome,
    *,
    delay: float,
    worker: str,
) -> TaskRecord | None:
    """Hand a failed run back to its queue for another attempt after ``delay``
    seconds (fenced like :func:`finish_task`), then publish it again."""
    with store.statement() as conn:
        queued = transition(
            conn,
            task_id,
            Status.QUEUED,
            actor=f"worker:{worker}",
            sources={Status.RUNNING},
            guard="AND attempt = :attempt",
            extra_sets=", errors = :errors, lease_expires_at = NULL",
            params={"attempt": attempt, "errors": outcome.errors},
            json_params=("errors",),
            detail={"retry": True, "attempt": attempt, "delay": round(delay, 3)}
            | (outcome.detail or {}),
        )
    if queued is not None:
        # A failed publish leaves the task `queued`; the sweeper re-publishes it.
        store.publisher.publish(message_for(queued, store.settings.queue_prefix), countdown=delay)
    return queued
