"""Recovery: what the sweeper does every few seconds, and its loop.

PostgreSQL is the source of truth, so every way a task can be dropped on the
way is found from there:

- a task left `created` or `queued` for ``REPUBLISH_AFTER_SECONDS`` (a crash
  between commit and publish, Redis restarted empty) is published again;
- a `running` task whose lease expired (its worker died or hung) gets a new
  attempt, or fails with ``worker_lost`` once its attempts are spent;
- a task waiting longer than its ``queueTimeoutSeconds`` fails with
  ``queue_timeout``.

Re-publishing and lease recovery take bounded batches with ``SKIP LOCKED``
so that several sweepers share the work; queue timeouts are guarded
updates that only one sweeper can apply. Duplicate publishes are harmless
because the worker's claim is guarded. Every action lands in the task's
event log.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection

from tasks_core.lifecycle.engine import apply, hold_expired_runs
from tasks_core.lifecycle.moves import Attempt, Expired, QueueTimeout, RecoverLease, Republish
from tasks_core.lifecycle.publishing import execute, try_publish
from tasks_core.status import Status
from tasks_core.storage.errors import DatabaseFailure, classify, reason
from tasks_core.storage.idempotency import forget_expired
from tasks_core.storage.tasks import due_queue_timeouts, lock_stale
from tasks_core.store import Store

log = logging.getLogger(__name__)

SWEEPER = "system:sweeper"


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


def republish_stale(store: Store) -> int:
    """Publish again the tasks that waited too long for a worker; returns how many."""
    settings = store.settings

    def work(conn: Connection) -> int:
        stale = lock_stale(conn, after=settings.republish_after_seconds, batch=settings.sweep_batch)
        published: list[uuid.UUID] = []
        for task in stale:
            if not try_publish(store, task):
                break  # the broker is down: try again next pass
            published.append(task.id)
        if published:  # re-arm their clocks, and log the re-publish on each
            apply(conn, Republish(tuple(published), actor=SWEEPER))
        return len(published)

    return store.atomic(work)


def recover_expired_leases(store: Store) -> tuple[int, int]:
    """Runs whose worker stopped renewing their lease: a new attempt, or
    ``worker_lost`` when attempts are spent. Returns (requeued, failed)."""
    settings = store.settings
    with store.statement() as conn:
        held = hold_expired_runs(
            conn, batch=settings.sweep_batch, hold_seconds=settings.lease_seconds
        )
    if not held:
        return 0, 0
    expired = tuple(Expired(Attempt.of(run), run.max_attempts) for run in held)
    recovered = execute(store, RecoverLease(expired, actor=SWEEPER)).tasks.values()
    requeued = sum(1 for t in recovered if t.status is Status.QUEUED)
    return requeued, len(recovered) - requeued


def fail_queue_timeouts(store: Store) -> int:
    """Tasks that waited for a worker longer than their queueTimeoutSeconds."""
    with store.statement() as conn:
        due = due_queue_timeouts(conn, batch=store.settings.sweep_batch)
    if not due:
        return 0
    return execute(store, QueueTimeout(tuple(due), actor=SWEEPER)).moved


def run_sweeper(store: Store, stop: threading.Event) -> None:
    """Sweep every ``SWEEP_INTERVAL_SECONDS`` until ``stop`` is set (``tasks-core
    sweeper``). A pass that fails is tried again on the next tick; an outage
    (told by ``classify``, like the worker's and the API's) is a warning,
    anything else an error with its traceback."""
    interval = store.settings.sweep_interval_seconds
    log.info("sweeper started (every %ss)", interval)
    while not stop.is_set():
        try:
            sweep_once(store)
        except Exception as exc:
            if classify(exc) is DatabaseFailure.OUTAGE:
                log.warning("sweep failed, database unavailable (%s); trying again", reason(exc))
            else:  # not healed by waiting: a refused value or a bug, worth a traceback
                log.error("sweep failed; trying again in %ss", interval, exc_info=True)
        stop.wait(interval)
    log.info("sweeper stopped")


def start_in_thread(store: Store) -> tuple[threading.Thread, threading.Event]:
    """A sweeper beside other work in this process (``tasks-core dev``)."""
    stop = threading.Event()
    thread = threading.Thread(target=run_sweeper, args=(store, stop), name="sweeper", daemon=True)
    thread.start()
    return thread, stop
