"""Recovery: what the sweeper does every few seconds, and its loop.

PostgreSQL is the source of truth, so every way a task can be dropped on the
way is found from there:

- a task left `created` or `queued` for ``REPUBLISH_AFTER_SECONDS`` (a crash
  between commit and publish, Redis restarted empty) is published again, then
  again after twice as long, and so on up to ``REPUBLISH_MAX_SECONDS``; and
  never while its queue already holds a message for every task waiting on it;
- a `running` task whose lease expired (its worker died or hung) gets a new
  attempt, or fails with ``worker_lost`` once its attempts are spent; a run
  renewed after the sweeper saw it expired is left alone (the lease fence);
- a task waiting longer than its ``queueTimeoutSeconds`` fails with
  ``queue_timeout``;
- a task waiting longer than ``UNSERVED_TIMEOUT_SECONDS`` on a queue no
  worker node serves fails with ``unknown_kind`` (``tasks_core.unserved``);
- a table filled from empty faster than autovacuum analyzes it is analyzed,
  so that the plans cached on it find tasks by key again
  (``tasks_core.storage.statistics``).

Nothing one task holds can stop the sweeper for the others: each kind of
recovery runs on its own, and each batch runs as one statement or
transaction and, when that fails, in halves down to single tasks, so only
the tasks that fail alone are skipped. Such a failure is logged with the
task id, counted on the task's row and in the pass's report, and a task
whose recovery fails ``RECOVERY_MAX_FAILURES`` times in a row fails with
``recovery_failed`` (see ``tasks_core.recovery_failures``).

A worker is judged by its silence (a lease not renewed, a heartbeat not
written) only once it could have spoken: after PostgreSQL was out of reach
(a crash, a restart, a cut), and when the sweeper starts, the sweeper
recovers no lease until it has reached PostgreSQL for ``LEASE_SECONDS``
without a break, and fails no task as unserved until it has for two
``WORKER_HEARTBEAT_SECONDS`` (see :class:`Hearing`). An outage longer than a
lease leaves every lease expired and every heartbeat old, yet the workers
are alive, holding outcomes to write; they write them in that time. A
PostgreSQL that stops answering without refusing (frozen, or across a
network cut that drops packets) counts as out of reach too: a call of the
sweeper's that takes longer than a quarter of a lease (at least a second)
starts the wait again (see :func:`slow_answer_seconds`).

Re-publishing and lease recovery take bounded batches with ``SKIP LOCKED``
so that several sweepers share the work; queue timeouts are guarded
updates that only one sweeper can apply. Duplicate publishes are harmless
because the worker's claim is guarded. Every action lands in the task's
event log.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from tasks_core.lifecycle.engine import apply, hold_expired_runs, hold_runs, restart_backoffs
from tasks_core.lifecycle.moves import Expired, QueueTimeout, RecoverLease, Republish
from tasks_core.lifecycle.publishing import execute, message_for
from tasks_core.metrics import SWEEPER_ACTIONS
from tasks_core.queues import queue_name
from tasks_core.recovery_failures import (
    SWEEPER,
    Seen,
    Tally,
    describe,
    each_alone,
    skip_failed,
)
from tasks_core.settings import Settings
from tasks_core.status import Status
from tasks_core.storage.errors import is_lock_timeout, out_of_reach
from tasks_core.storage.idempotency import forget_expired
from tasks_core.storage.statistics import analyze, outgrown
from tasks_core.storage.tasks import (
    Queue,
    due_queue_timeouts,
    expired_runs,
    lock_stale,
    waiting_on,
)
from tasks_core.storage.workers import forget_silent
from tasks_core.store import Store, is_unavailable
from tasks_core.task import TaskRecord
from tasks_core.unserved import fail_unserved

log = logging.getLogger(__name__)

# What a pass counts, per action (``tasks_sweeper_actions_total{action}``);
# also ``<kind>_skipped`` (tasks whose recovery failed alone) and
# ``<kind>_error`` (a kind of recovery that failed as a whole this pass).
REPUBLISHED = "republished"
DEFERRED = "republish_deferred"  # due, but its queue holds messages enough
REQUEUED = "requeued"
LOST = "lost"
QUEUE_TIMED_OUT = "queue_timeout"
FORGOTTEN_KEYS = "idempotency_keys_forgotten"
FORGOTTEN_WORKERS = "workers_forgotten"
BACKOFFS_RESTARTED = "republish_backoffs_restarted"  # the broker lost its data
HELD_BACK = "recover_lease_held_back"  # held, but PostgreSQL answered the hold too late
TABLES_ANALYZED = "tables_analyzed"  # a table outgrew its planner statistics


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one pass did: how many tasks each action took."""

    counts: Mapping[str, int] = field(default_factory=dict)

    def __getitem__(self, action: str) -> int:
        return self.counts.get(action, 0)

    @property
    def republished(self) -> int:
        return self[REPUBLISHED]

    @property
    def requeued(self) -> int:
        return self[REQUEUED]

    @property
    def lost(self) -> int:
        return self[LOST]

    @property
    def queue_timeouts(self) -> int:
        return self[QUEUE_TIMED_OUT]

    @property
    def skipped(self) -> int:
        """Tasks whose recovery failed this pass (left for the next)."""
        return sum(n for action, n in self.counts.items() if action.endswith("_skipped"))

    @property
    def total(self) -> int:
        return self.republished + self.requeued + self.lost + self.queue_timeouts


class Hearing:
    """How long one sweeper has reached PostgreSQL without a break, counted
    from the start of its first pass that did (a sweeper starts with none),
    or from the end of its last call that waited too long for an answer.
    The recoveries that judge a worker by its silence wait for as long as a
    live worker takes to break it (:func:`_silence_needs`)."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._was_lost = False

    def pass_starts(self) -> None:
        if self._since is not None:
            return
        self._since = time.monotonic()
        if self._was_lost:
            log.info(
                "sweep: trying PostgreSQL again; expired leases and unserved queues "
                "wait until it has been reachable long enough for live workers to renew"
            )

    def lost(self) -> None:
        """PostgreSQL was out of reach in this pass."""
        self._since = None
        self._was_lost = True

    def answered(self, took: float, *, slow: float) -> None:
        """A call of this pass was answered after ``took`` seconds. One slower
        than ``slow`` may have waited out a PostgreSQL that answered no one
        (frozen, or cut off by a network that drops packets), the workers
        included: what was heard before it no longer counts."""
        if took <= slow:
            return
        log.warning(
            "sweep: PostgreSQL took %.1fs to answer; expired leases and unserved queues "
            "wait until it has answered promptly long enough for live workers to renew",
            took,
        )
        self._since = time.monotonic()
        self._was_lost = True

    def heard_for(self) -> float:
        return 0.0 if self._since is None else time.monotonic() - self._since


def slow_answer_seconds(settings: Settings) -> float:
    """A wait for PostgreSQL that may have hidden an outage from the sweeper:
    a quarter of a lease, and at least a second.

    A lease runs out for want of PostgreSQL only when no renewal reached it
    for a lease less a heartbeat. The sweeper sleeps a sweep interval between
    passes, so such an outage keeps one of its calls waiting at least a lease
    less a heartbeat and a sweep interval: more than a quarter of a lease with
    the defaults (30 s; 1 s and 5 s). A quarter also rides out a slow moment
    of a loaded server: a call that slow only delays recoveries by a lease.
    At least a second, which a live server's answers may take under load
    (with a lease of a few seconds, as in tests, a quarter would be less)."""
    return max(settings.lease_seconds / 4, 1.0)


def _silence_needs(kind: str, settings: Settings) -> float:
    """How long PostgreSQL must have been reachable before the silence that
    ``kind`` of recovery acts on means a worker is gone: a live worker renews
    a lease within a lease (it writes an outcome it holds sooner, see
    ``worker.recording``), and beats within a heartbeat interval; two, since
    a beat under way when PostgreSQL returned may have failed."""
    if kind == "recover_lease":
        return settings.lease_seconds
    if kind == "unserved":
        return 2 * settings.worker_heartbeat_seconds
    return 0.0


# --- The kinds of recovery ---------------------------------------------------------------


def sweep_once(store: Store, hearing: Hearing | None = None) -> SweepReport:
    """One pass of every kind of recovery, each in bounded batches and each on
    its own: one that fails (logged, counted as ``<kind>_error``) does not
    keep the others from running, unless PostgreSQL itself is out of reach.
    With ``hearing`` (the sweeper's loop), the kinds that judge workers by
    their silence wait until PostgreSQL has been reachable long enough."""
    counts: Tally = Counter()
    if hearing is not None:
        hearing.pass_starts()
    for name, recover in KINDS:
        if hearing is not None and hearing.heard_for() < _silence_needs(name, store.settings):
            continue  # live workers may not have reached PostgreSQL yet
        asked = time.monotonic()
        try:
            counts.update(recover(store))
        except Exception as exc:
            counts[f"{name}_error"] += 1
            if is_unavailable(exc):  # no kind can do anything without PostgreSQL
                log.warning("sweep: PostgreSQL unavailable (%s); next pass", describe(exc))
                if hearing is not None and out_of_reach(exc):
                    hearing.lost()
                break
            log.warning("sweep: %s failed; the other recoveries go on", name, exc_info=True)
        if hearing is not None:
            hearing.answered(time.monotonic() - asked, slow=slow_answer_seconds(store.settings))
    report = SweepReport(dict(counts))
    for action, n in counts.items():
        SWEEPER_ACTIONS.labels(action).inc(n)
    # Deferrals (a queue nobody serves, backing off) are routine, not news.
    if set(counts) - {DEFERRED, FORGOTTEN_KEYS, FORGOTTEN_WORKERS}:
        log.info("sweep: %s", dict(counts))
    return report


def republish_stale(store: Store) -> Tally:
    """Publish again the tasks due for it (see :func:`_room`), and back each
    off before its next republish."""

    def work(conn: Connection) -> tuple[Tally, list[tuple[Seen, Exception]]]:
        settings = store.settings
        stale = lock_stale(conn, after=settings.republish_after_seconds, batch=settings.sweep_batch)
        room = _room(store, conn, stale) if stale else None
        if room is None:
            return Counter(), []  # nothing due, or the broker is down: next pass
        published, deferred, failures = _publish_within(store, stale, room)
        tally: Tally = Counter()

        def rearm(part: Sequence[tuple[uuid.UUID, bool]]) -> None:
            move = Republish(
                tuple(i for i, sent in part if sent),
                actor=SWEEPER,
                after_seconds=settings.republish_after_seconds,
                max_seconds=settings.republish_max_seconds,
                deferred=tuple(i for i, sent in part if not sent),
            )
            with conn.begin_nested():  # a failed part leaves the others' locks and work
                tally[REPUBLISHED] += apply(conn, move).moved
            tally[DEFERRED] += len(move.deferred)

        items = [(i, True) for i in published] + [(i, False) for i in deferred]
        by_id = {t.id: t for t in stale}
        failures += [(Seen.of(by_id[i]), exc) for (i, _), exc in each_alone(items, rearm)]
        return tally, failures

    restarted = _restart_if_broker_forgot(store)
    tally, failures = store.atomic(work)
    tally.update(skip_failed(store, "republish", failures))
    if restarted:
        tally[BACKOFFS_RESTARTED] += restarted
    return tally


def _restart_if_broker_forgot(store: Store) -> int:
    """A broker that lost its data (Redis restarted without persistence) lost
    every message: no waiting task then waits for its backoff (the room of
    each queue still keeps its list from getting copies)."""
    try:
        forgot = store.publisher.forgot()
    except Exception:  # the broker is down; republishing waits anyway
        log.debug("sweep: the broker can not be reached", exc_info=True)
        return 0
    if not forgot:
        return 0
    with store.statement() as conn:
        restarted = restart_backoffs(conn)
    if restarted:
        log.warning("sweep: the broker lost its data; %d tasks may be published again", restarted)
    return restarted


def _room(store: Store, conn: Connection, stale: Sequence[TaskRecord]) -> dict[str, int] | None:
    """How many messages each queue of ``stale`` may be missing: the tasks
    waiting on it less the messages its Redis list holds. None if the broker
    can not be reached.

    Each republish pushes one more copy of a message onto its queue's list,
    and a queue no worker serves keeps every copy. Bounding republishes by
    this room keeps such a list at one message per waiting task, whatever
    the backoff and however long the tasks wait; a served queue drains, and
    then the tasks whose message is really lost find room again."""
    prefix = store.settings.queue_prefix
    due: Counter[Queue] = Counter((t.kind, t.executor_id) for t in stale)
    names = {q: queue_name(q[0], q[1], prefix) for q in due}
    try:
        held = store.publisher.depths(names.values())
    except Exception:
        log.warning("sweep: the broker can not be reached; republishing waits", exc_info=True)
        return None
    waiting = waiting_on(conn, {q: held[names[q]] + n for q, n in due.items()})
    return {names[q]: waiting.get(q, 0) - held[names[q]] for q in due}


def _publish_within(
    store: Store, stale: Sequence[TaskRecord], room: dict[str, int]
) -> tuple[list[uuid.UUID], list[uuid.UUID], list[tuple[Seen, Exception]]]:
    """Publish each task whose queue has room: (published, deferred, failed).
    A publish that fails while the broker answers is that task's failure; when
    the broker is down the rest wait for the next pass."""
    published: list[uuid.UUID] = []
    deferred: list[uuid.UUID] = []
    failed: list[tuple[Seen, Exception]] = []
    for task in stale:
        message = message_for(task, store.settings.queue_prefix)
        if room[message.queue] <= 0:
            deferred.append(task.id)
            continue
        room[message.queue] -= 1  # a refused message takes its task's room too
        try:
            store.publisher.publish(message)
        except Exception as exc:
            if not store.publisher.ping():
                log.warning("sweep: the broker went down; republishing waits", exc_info=True)
                break
            failed.append((Seen.of(task), exc))
            continue
        published.append(task.id)
    return published, deferred, failed


def recover_expired_leases(store: Store) -> Tally:
    """Runs whose worker stopped renewing their lease: a new attempt, or
    ``worker_lost`` when attempts are spent (``requeued``, ``lost``). Each
    recovery is fenced on the lease the sweeper saw, so a run its worker
    renewed meanwhile goes on. Runs held by a hold that PostgreSQL answered
    too late (``slow_answer_seconds``) are not recovered now: their workers
    may have waited as long to renew them. They are held for a lease, and
    taken again after it if no renewal came."""
    asked = time.monotonic()
    held, unheld = _hold(store)
    took = time.monotonic() - asked
    if held and took > slow_answer_seconds(store.settings):
        log.warning(
            "sweep: PostgreSQL took %.1fs to hold %d expired run(s); they are recovered "
            "only if still expired after their hold",
            took,
            len(held),
        )
        return Counter({HELD_BACK: len(held)}) + skip_failed(store, "recover_lease", unheld)
    tally: Tally = Counter()

    def recover(part: Sequence[TaskRecord]) -> None:
        expired = tuple(Expired.of(run, decide_by=_decide_by(run, store.settings)) for run in part)
        move = RecoverLease(expired, actor=SWEEPER)
        recovered = execute(store, move).tasks.values()
        requeued = sum(1 for t in recovered if t.status is Status.QUEUED)
        tally[REQUEUED] += requeued
        tally[LOST] += len(recovered) - requeued

    failures = [(Seen.of(run), exc) for run, exc in each_alone(held, recover)]
    tally.update(skip_failed(store, "recover_lease", [*unheld, *failures]))
    return tally


def _hold_seconds(settings: Settings) -> float:
    """How long a sweeper holds the expired runs it picked: a lease, so that a
    run held back (see :func:`recover_expired_leases`) waits that long."""
    return settings.lease_seconds


def _decide_by(held: TaskRecord, settings: Settings) -> datetime | None:
    """When, by PostgreSQL's clock, a held run's recovery is too late to be
    applied: ``slow_answer_seconds`` after its hold (which set the held lease
    ``_hold_seconds`` ahead of that moment)."""
    if held.lease_expires_at is None:
        return None
    wait = _hold_seconds(settings) - slow_answer_seconds(settings)
    return held.lease_expires_at - timedelta(seconds=wait)


def _hold(store: Store) -> tuple[list[TaskRecord], list[tuple[Seen, Exception]]]:
    """Pick and hold expired runs in one statement; if that fails, hold them
    in halves, so that a run whose row can not be written holds up no other.
    The runs held, and those that could not be."""
    settings = store.settings
    try:
        with store.statement() as conn:
            return hold_expired_runs(
                conn, batch=settings.sweep_batch, hold_seconds=_hold_seconds(settings)
            ), []
    except Exception as exc:
        if is_unavailable(exc):
            raise
        log.warning("sweep: holding expired runs failed (%s); one by one", describe(exc))
    with store.statement() as conn:
        expired = expired_runs(conn, batch=settings.sweep_batch)
    held: list[TaskRecord] = []

    def hold(part: Sequence[uuid.UUID]) -> None:
        with store.statement() as conn:
            held.extend(hold_runs(conn, part, hold_seconds=_hold_seconds(settings)))

    return held, [(Seen(task_id), exc) for task_id, exc in each_alone(expired, hold)]


def fail_queue_timeouts(store: Store) -> Tally:
    """Tasks that waited for a worker longer than their queueTimeoutSeconds."""
    with store.statement() as conn:
        due = due_queue_timeouts(conn, batch=store.settings.sweep_batch)
    tally: Tally = Counter()

    def time_out(part: Sequence[uuid.UUID]) -> None:
        tally[QUEUE_TIMED_OUT] += execute(store, QueueTimeout(tuple(part), actor=SWEEPER)).moved

    failures = [(Seen(task_id), exc) for task_id, exc in each_alone(due, time_out)]
    tally.update(skip_failed(store, "queue_timeout", failures))
    return tally


def forget_silent_workers(store: Store) -> Tally:
    """Worker nodes silent for an hour leave the registry."""
    with store.statement() as conn:
        return Counter({FORGOTTEN_WORKERS: forget_silent(conn)})


def forget_idempotency_keys(store: Store) -> Tally:
    """Idempotency keys past their lifetime."""
    with store.statement() as conn:
        return Counter({FORGOTTEN_KEYS: forget_expired(conn, batch=store.settings.sweep_batch)})


# The tables (database URL, name) this process may not analyze (its role
# lacks the right): left to autovacuum, and said once.
_NOT_ANALYZABLE: set[tuple[str, str]] = set()


def refresh_statistics(store: Store) -> Tally:
    """Analyze each table that outgrew its planner statistics, so that the
    plans cached on it are made again, by key (``tasks_core.storage.statistics``).
    A table whose lock is taken (autovacuum is at it) waits for the next pass."""
    database = store.engine.url.render_as_string(hide_password=True)
    with store.statement() as conn:
        tables = [t for t in outgrown(conn) if (database, t) not in _NOT_ANALYZABLE]
    analyzed = 0
    for table in tables:
        try:
            with store.transaction() as conn:
                covered = analyze(conn, table)
        except DBAPIError as exc:
            if not is_lock_timeout(exc):
                raise
            log.info("sweep: %s is being vacuumed or analyzed; next pass", table)
            continue
        if covered:
            analyzed += 1
            log.info("sweep: analyzed %s, which had outgrown its planner statistics", table)
        else:
            _NOT_ANALYZABLE.add((database, table))
            log.warning(
                "sweep: this role may not ANALYZE %s (grant it MAINTAIN on the table); "
                "its planner statistics are left to autovacuum",
                table,
            )
    return Counter({TABLES_ANALYZED: analyzed}) if analyzed else Counter()


# Each runs on its own, whatever the others do. Statistics come first (the
# others' statements read the same tables). Timeouts (and unserved
# tasks) come before republishes (a task past its queue timeout is not published again), lost
# runs before them too (a new attempt is published by its move).
KINDS: tuple[tuple[str, Callable[[Store], Tally]], ...] = (
    ("statistics", refresh_statistics),
    ("forget_idempotency_keys", forget_idempotency_keys),
    ("forget_workers", forget_silent_workers),
    ("queue_timeout", fail_queue_timeouts),
    ("unserved", fail_unserved),
    ("recover_lease", recover_expired_leases),
    ("republish", republish_stale),
)


# --- The loop ------------------------------------------------------------------------------


def run_sweeper(store: Store, stop: threading.Event, totals: Tally | None = None) -> None:
    """Sweep every ``SWEEP_INTERVAL_SECONDS`` until ``stop`` is set (``tasks-core
    sweeper``), adding each pass's counts to ``totals``. A kind of recovery
    that fails (PostgreSQL down) is logged and tried again on the next tick."""
    interval = store.settings.sweep_interval_seconds
    log.info("sweeper started (every %ss)", interval)
    hearing = Hearing()
    while not stop.is_set():
        report = sweep_once(store, hearing)
        if totals is not None:
            totals.update(report.counts)
        stop.wait(interval)
    log.info("sweeper stopped")


def start_in_thread(
    store: Store, totals: Tally | None = None
) -> tuple[threading.Thread, threading.Event]:
    """A sweeper beside other work in this process (``tasks-core dev``)."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_sweeper, args=(store, stop, totals), name="sweeper", daemon=True
    )
    thread.start()
    return thread, stop
