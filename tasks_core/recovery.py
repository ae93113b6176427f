"""Recovery: what the sweeper does every few seconds, and its loop.

PostgreSQL is the source of truth, so every way a task can be dropped on the
way is found from there:

- a task left `created` or `queued` for ``REPUBLISH_AFTER_SECONDS`` (a crash
  between commit and publish, Redis restarted empty) is published again;
- a `running` task whose lease expired (its worker died or hung) gets a new
  attempt, or fails with ``worker_lost`` once its attempts are spent;
- a task waiting longer than its ``queueTimeoutSeconds`` fails with
  ``queue_timeout``.

Re-publishing and lease recovery take bounded batches with ``FOR UPDATE SKIP
LOCKED`` so that several sweepers share the work; queue timeouts are guarded
updates that only one sweeper can apply. Duplicate publishes are harmless
because the worker's claim is guarded. Every action lands in the task's
event log.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass

from sqlalchemy import text

from tasks_core.lifecycle.flow_engine import fan_in, lock_chain
from tasks_core.lifecycle.publishing import enqueue_many, try_publish
from tasks_core.records import TaskRecord
from tasks_core.status import Status
from tasks_core.storage.tasks import transition
from tasks_core.store import Store
from tasks_core.usecases.idempotency import forget_expired
from tasks_core.worker_protocol import Outcome, finish_task

log = logging.getLogger(__name__)

SWEEPER = "system:sweeper"
WORKER_LOST = "worker_lost"
QUEUE_TIMEOUT = "queue_timeout"


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one pass did."""

    republished: int = 0
    requeued: int = 0
    lost: int = 0
    queue_timeouts: int = 0

    @property
    def total(self) -> int:
        return self.republished + self.requeued + self.lost + self.queue_timeouts


def sweep_once(store: Store) -> SweepReport:
    """One pass of every recovery, each in bounded batches."""
    timeouts = fail_queue_timeouts(store)
    requeued, lost = recover_expired_leases(store)
    republished = republish_stale(store)
    with store.statement() as conn:
        forget_expired(conn, batch=store.settings.sweep_batch)
    report = SweepReport(republished, requeued, lost, timeouts)
    if report.total:
        log.info("sweep: %s", report)
    return report


_STALE = text(
    """
SELECT * FROM tasks
WHERE status IN ('created', 'queued')
  AND updated_at < now() - make_interval(secs => :after)
  AND (available_at IS NULL OR available_at < now() - make_interval(secs => :after))
ORDER BY updated_at
LIMIT :batch
FOR UPDATE SKIP LOCKED
"""
)


def republish_stale(store: Store) -> int:
    """Publish again the tasks that waited too long for a worker; returns how many."""
    settings = store.settings
    with store.transaction() as conn:
        rows = conn.execute(
            _STALE, {"after": settings.republish_after_seconds, "batch": settings.sweep_batch}
        ).mappings()
        stale = [TaskRecord.from_row(r) for r in rows]
        published: list[uuid.UUID] = []
        for task in stale:
            if not try_publish(store, task):
                break  # the broker is down: try again next pass
            published.append(task.id)
        if published:
            # Re-arm the clock, and log the re-publish on each task.
            conn.execute(
                text(
                    """
WITH moved AS (
    UPDATE tasks SET updated_at = now(),
        status = CASE WHEN status = 'created' THEN 'queued' ELSE status END
    WHERE id = ANY(:ids)
    RETURNING id, status
)
INSERT INTO task_events (task_id, type, to_status, actor, detail)
SELECT id, 'republished', status, :actor, '{"reason": "waited too long for a worker"}'::jsonb
FROM moved
"""
                ),
                {"ids": published, "actor": SWEEPER},
            )
    return len(published)


_EXPIRED = text(
    """
WITH picked AS (
    SELECT id FROM tasks
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => :hold)
FROM picked WHERE t.id = picked.id
RETURNING t.*
"""
)


def recover_expired_leases(store: Store) -> tuple[int, int]:
    """Runs whose worker stopped renewing their lease: a new attempt, or
    ``worker_lost`` when attempts are spent. Returns (requeued, failed)."""
    settings = store.settings
    # Pick a batch and hold it briefly (a short lease of the sweeper's own), so
    # that other sweepers skip it while this one decides each task.
    with store.statement() as conn:
        rows = conn.execute(
            _EXPIRED, {"batch": settings.sweep_batch, "hold": settings.lease_seconds}
        ).mappings()
        expired = [TaskRecord.from_row(r) for r in rows]
    requeued = failed = 0
    for run in expired:
        if run.attempt < run.max_attempts:
            requeued += _requeue_lost(store, run)
        else:
            lost = Outcome(
                Status.FAILED,
                errors=[
                    {
                        "code": WORKER_LOST,
                        "message": f"the worker running attempt {run.attempt} of "
                        f"{run.max_attempts} stopped (no heartbeat)",
                    }
                ],
                detail={"reason": WORKER_LOST},
            )
            failed += finish_task(store, run, lost, worker="sweeper") is not None
    return requeued, failed


def _requeue_lost(store: Store, run: TaskRecord) -> int:
    with store.statement() as conn:
        queued = transition(
            conn,
            run.id,
            Status.QUEUED,
            actor=SWEEPER,
            sources={Status.RUNNING},
            guard="AND attempt = :attempt",
            extra_sets=", lease_expires_at = NULL, available_at = NULL",
            params={"attempt": run.attempt},
            detail={"reason": WORKER_LOST, "attempt": run.attempt},
        )
    if queued is None:
        return 0
    try_publish(store, queued)
    return 1


def fail_queue_timeouts(store: Store) -> int:
    """Tasks that waited for a worker longer than their queueTimeoutSeconds."""
    with store.statement() as conn:
        ids = [
            r.id
            for r in conn.execute(
                text(
                    "SELECT id FROM tasks WHERE status IN ('created', 'queued') "
                    "AND queue_timeout_seconds IS NOT NULL "
                    "AND created_at < now() - make_interval(secs => queue_timeout_seconds) "
                    "ORDER BY created_at LIMIT :batch"
                ),
                {"batch": store.settings.sweep_batch},
            )
        ]
    return sum(_fail_in_queue(store, task_id) for task_id in ids)


def _fail_in_queue(store: Store, task_id: uuid.UUID) -> int:
    spawned: list[TaskRecord] = []
    with store.transaction() as conn:
        lock_chain(conn, task_id)
        failed = transition(
            conn,
            task_id,
            Status.FAILED,
            actor=SWEEPER,
            sources={Status.CREATED, Status.QUEUED},
            guard="AND created_at < now() - make_interval(secs => queue_timeout_seconds)",
            extra_sets=", errors = :errors",
            params={
                "errors": [
                    {
                        "code": QUEUE_TIMEOUT,
                        "message": "no worker took the task within its queueTimeoutSeconds",
                    }
                ]
            },
            json_params=("errors",),
            detail={"reason": QUEUE_TIMEOUT},
        )
        if failed is not None and failed.flow_step_id is not None:
            spawned = fan_in(conn, failed, actor=SWEEPER)
    enqueue_many(store, spawned)
    return int(failed is not None)


def run_sweeper(store: Store, stop: threading.Event) -> None:
    """Sweep every ``SWEEP_INTERVAL_SECONDS`` until ``stop`` is set (``tasks-core
    sweeper``). A pass that fails (PostgreSQL down) is logged and tried again
    on the next tick."""
    interval = store.settings.sweep_interval_seconds
    log.info("sweeper started (every %ss)", interval)
    while not stop.is_set():
        try:
            sweep_once(store)
        except Exception:
            log.warning("sweep failed; trying again in %ss", interval, exc_info=True)
        stop.wait(interval)
    log.info("sweeper stopped")


def start_in_thread(store: Store) -> tuple[threading.Thread, threading.Event]:
    """A sweeper beside other work in this process (``tasks-core dev``)."""
    stop = threading.Event()
    thread = threading.Thread(target=run_sweeper, args=(store, stop), name="sweeper", daemon=True)
    thread.start()
    return thread, stop
