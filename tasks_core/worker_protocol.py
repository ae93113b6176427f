"""The life of a run, as a worker drives it.

``claim_task`` -> (``renew_lease`` ...) -> ``finish_task`` or ``retry_task``
(or, for a Flow, ``start_flow_run``); ``release_run`` for a run stopped
because its lease could not be renewed; ``hand_back`` when a worker stops.
Each is a move of the lifecycle engine: the claim accepts only a task that
waits to run, and every later write is fenced by the attempt the claim
returned, so a stale run (a duplicate delivery, a worker presumed dead) can
never overwrite a newer one. Each single-task call is the one-task case of
its set move (``claim_tasks``, ``finish_tasks``...).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from tasks_core.flow_definitions import Step
from tasks_core.lifecycle.engine import renew_leases
from tasks_core.lifecycle.moves import (
    Attempt,
    Claim,
    Finish,
    Finished,
    FlowStart,
    HandBack,
    Outcome,
    Release,
    Retried,
    Retry,
    StartFlow,
)
from tasks_core.lifecycle.publishing import execute
from tasks_core.store import Store
from tasks_core.task import TaskRecord

# Outcome is part of this protocol: workers build one per run.
__all__ = [
    "Outcome",
    "claim_task",
    "claim_tasks",
    "finish_task",
    "finish_tasks",
    "hand_back",
    "release_run",
    "renew_lease",
    "renew_run_leases",
    "retry_task",
    "start_flow_run",
]


def claim_task(
    store: Store, task_id: uuid.UUID, *, worker: str, queue: str | None = None
) -> TaskRecord | None:
    """Move a waiting task to `running` as a new attempt, with a fresh lease.

    None means the task is not to run here now: it is not waiting (already
    claimed, finished or cancelled: a duplicate or late delivery), it waits
    on another queue than ``queue`` (the message's, left behind by a change
    of executorId), or its organization has MAX_RUNNING_PER_ORG tasks
    running on this queue (it is published again later). The delivery is
    dropped.
    """
    return claim_tasks(store, [task_id], worker=worker, queue=queue).get(task_id)


def claim_tasks(
    store: Store, task_ids: Sequence[uuid.UUID], *, worker: str, queue: str | None = None
) -> dict[uuid.UUID, TaskRecord]:
    """Claim each of ``task_ids`` that waits to run; the runs claimed, by task.

    The claim commits without waiting for the WAL flush: a database crash can
    only undo it, and the task then runs again. With MAX_RUNNING_PER_ORG it
    is a transaction (lock, claim, wait of the rest), committed as any other."""
    settings = store.settings
    move = Claim(
        tuple(task_ids),
        worker=worker,
        lease_seconds=settings.lease_seconds,
        queue=queue,
        prefix=settings.queue_prefix,
        max_running=settings.max_running_per_org,
        wait_seconds=settings.heartbeat_seconds,
    )
    return dict(execute(store, move, relaxed=True).tasks)


def renew_lease(store: Store, task_id: uuid.UUID, attempt: int) -> bool:
    """Extend the lease of a run; False when the run is no longer current
    (the task was cancelled, finished, or handed to another attempt)."""
    return task_id in renew_run_leases(store, [(task_id, attempt)])


def renew_run_leases(store: Store, runs: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
    """Extend the leases of runs (task, attempt) in one statement; the tasks
    whose run is still current."""
    attempts = [Attempt(task_id, attempt) for task_id, attempt in runs]
    with store.relaxed_statement() as conn:
        return renew_leases(conn, attempts, lease_seconds=store.settings.lease_seconds)


def finish_task(
    store: Store, run: TaskRecord, outcome: Outcome, *, worker: str
) -> TaskRecord | None:
    """Record the outcome of ``run`` (the task as its claim returned it), only
    if that run is still the current one.

    None means the write was fenced off (cancelled meanwhile, or a newer
    attempt exists): the result is dropped, which the event log notes. A
    Flow's step fans in to its Flow in the same transaction.
    """
    return finish_tasks(store, [(run, outcome)], worker=worker).get(run.id)


def finish_tasks(
    store: Store, results: Sequence[tuple[TaskRecord, Outcome]], *, worker: str
) -> dict[uuid.UUID, TaskRecord]:
    """Record the outcomes of runs; those still current, as finished, by task."""
    finished = tuple(Finished(Attempt.of(run), outcome) for run, outcome in results)
    return dict(execute(store, Finish(finished, actor=f"worker:{worker}")).tasks)


def retry_task(
    store: Store, run: TaskRecord, outcome: Outcome, *, delay: float, worker: str
) -> TaskRecord | None:
    """Hand a failed run back to its queue for another attempt after ``delay``
    seconds (fenced like :func:`finish_task`), then publish it again."""
    retried = (Retried(Attempt.of(run), outcome, delay),)
    return execute(store, Retry(retried, actor=f"worker:{worker}")).tasks.get(run.id)


def start_flow_run(
    store: Store, flow: TaskRecord, steps: list[Step], *, worker: str
) -> TaskRecord | None:
    """Start a claimed Flow: its steps stored, the ready ones spawned and
    published. Returns the Flow as it is then (`waiting`, or ended when it
    has no steps), or None when the run was fenced off."""
    start = (FlowStart(Attempt.of(flow), tuple(steps)),)
    return execute(store, StartFlow(start, actor=f"worker:{worker}")).tasks.get(flow.id)


def release_run(store: Store, run: TaskRecord, *, worker: str) -> bool:
    """Hand a run its worker stopped for want of its lease back to its queue
    (attempt kept, published again), only if it is still the current run;
    False when it is not: the sweeper recovered it, or another attempt has it."""
    move = Release((Attempt.of(run),), actor=f"worker:{worker}")
    return run.id in execute(store, move).tasks


def hand_back(store: Store, *, node_prefix: str, actor: str) -> int:
    """Put every task still `running` on one worker (its ``worker`` column
    starts with ``node_prefix``) back on its queue, for a worker that stops.
    The attempt is kept: the next claim makes a new one, and a late outcome of
    the old run is fenced off because the task is no longer `running`."""
    return execute(store, HandBack(node_prefix, actor=actor)).moved
