"""Writing the decisions of runs: retries handed back, outcomes in sets.

Every write is fenced by the run's attempt, so writing again (after an error
whose effect is unknown) is safe. What a write's failure means is told by
``classify``. While PostgreSQL is unreachable the writes are retried (with
backoff, for up to ``OUTCOME_RETRY_SECONDS``) so that computed outcomes are
not lost, even when the outage outlasts their leases (see ``longest_pause``);
past that the runs are left to the sweeper, which runs them again once their
leases expire. An outcome that PostgreSQL refuses (a value it can
not store) would be refused again: that task fails at once with
``output_rejected`` instead, and the others of its set are written as they are.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tasks_core.metrics import TASKS_FINISHED, kind_label
from tasks_core.settings import Settings
from tasks_core.status import Status
from tasks_core.storage.errors import DatabaseFailure, classify, reason
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.worker_protocol import release_run, retry_task
from worker import outcome
from worker.batching import OutcomeRequest, batchers_for
from worker.process_local import process_local

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decided:
    """A run and what its handler's run decided."""

    run: TaskRecord
    decision: outcome.Decision
    refused: bool = False  # its outcome was refused once: the failure written instead must pass


def record(
    store: Store, task: TaskRecord, decision: outcome.Decision, *, worker: str
) -> TaskRecord | None:
    """Persist one decision: the task as written, None when fenced off."""
    written = record_all(store, [Decided(task, decision)], worker=worker)
    return written[0] if written else None


def record_all(store: Store, decided: Sequence[Decided], *, worker: str) -> list[TaskRecord]:
    """Persist decisions (a retry when allowed, else the terminal outcome,
    all of those in one fenced statement); the tasks as written (a fenced-off
    run is left out). Raises when the database stays unreachable past
    ``OUTCOME_RETRY_SECONDS``: those not yet written are left to the sweeper."""
    patience = Patience(store.settings)
    written: list[TaskRecord] = []
    todo = list(decided)
    while todo:
        again: list[Decided] = []
        outage = False
        for item, (result, error) in zip(todo, _write(store, todo, worker=worker), strict=True):
            if error is None:
                _log_written(item.run, result)
                written += [result] if result is not None else []
                continue
            if not isinstance(error, DBAPIError | PoolTimeout):
                raise error
            failure = classify(error)
            if failure is DatabaseFailure.DATA and not item.refused:
                log.warning("the outcome of task %s was refused: %s", item.run.id, error)
                again.append(Decided(item.run, outcome.rejected(reason(error)), refused=True))
            elif failure is DatabaseFailure.OUTAGE and patience.lasts():
                again.append(item)
                outage = True
            else:
                log.error("could not record the outcome of task %s; the sweeper will", item.run.id)
                raise error
        if outage:
            waiting = ", ".join(str(d.run.id) for d in again)
            log.warning("database unavailable; retrying the outcome of task %s", waiting)
            patience.pause()
        todo = again
    return written


def release(store: Store, run: TaskRecord, *, worker: str) -> bool:
    """Hand back a run stopped because no renewal of its lease reached
    PostgreSQL, trying while PostgreSQL is out of reach as an outcome's write
    does: an outage then costs the task no attempt. False when it was not
    handed back (fenced off, or PostgreSQL stayed away): the sweeper recovers
    it once its lease has expired."""
    patience = Patience(store.settings)
    while True:
        try:
            released = release_run(store, run, worker=worker)
        except (DBAPIError, PoolTimeout) as exc:
            if classify(exc) is not DatabaseFailure.OUTAGE or not patience.lasts():
                log.warning("could not hand back task %s; the sweeper will", run.id, exc_info=True)
                return False
            patience.pause()
            continue
        if released:
            log.info("task %s attempt %s handed back to its queue", run.id, run.attempt)
        return released


class Patience:
    """How long, and how often, a run's write is tried again while PostgreSQL
    is out of reach: for ``OUTCOME_RETRY_SECONDS``, with a back-off from 0.2 s
    doubling up to ``longest_pause``."""

    def __init__(self, settings: Settings) -> None:
        self._deadline = time.monotonic() + settings.outcome_retry_seconds
        self._longest = longest_pause(settings.lease_seconds)
        self._pause = min(0.2, self._longest)

    def lasts(self) -> bool:
        """Whether one more try, after the next pause, is still within the time."""
        return time.monotonic() + self._pause <= self._deadline

    def pause(self) -> None:
        time.sleep(self._pause)  # a back-off between tries, not a wait for a condition
        self._pause = min(self._pause * 2, self._longest)


def longest_pause(lease_seconds: float) -> float:
    """The longest back-off between two tries of a run's write. Once
    PostgreSQL is back, the sweeper leaves expired leases alone for a lease
    (``tasks_core.recovery.Hearing``): a write tried several times within
    that lands before its run can be taken for lost."""
    return min(5.0, lease_seconds / 4)


Written = tuple[TaskRecord | None, BaseException | None]


def _write(store: Store, decided: Sequence[Decided], *, worker: str) -> list[Written]:
    """One try of each write: (the task as written, or the error)."""
    settings = store.settings
    answers: dict[int, Written] = {}
    final: list[tuple[int, Decided]] = []
    for n, item in enumerate(decided):
        task, decision = item.run, item.decision
        if outcome.should_retry(decision, attempt=task.attempt, max_attempts=task.max_attempts):
            delay = outcome.retry_delay(
                task.attempt, base=settings.retry_base_seconds, cap=settings.retry_max_seconds
            )
            try:
                answers[n] = (
                    retry_task(store, task, decision.outcome, delay=delay, worker=worker),
                    None,
                )
            except Exception as exc:  # noqa: BLE001  (judged by the caller, as a set's would be)
                answers[n] = (None, exc)
        else:
            final.append((n, item))
    if final:
        outcomes = batchers_for(store, worker).outcomes
        requests = [OutcomeRequest(item.run, item.decision.outcome) for _, item in final]
        for (n, _), answer in zip(final, outcomes.submit_many(requests), strict=True):
            answers[n] = (answer.value, answer.error)
    return [answers[n] for n in range(len(decided))]


def _log_written(run: TaskRecord, result: TaskRecord | None) -> None:
    if result is None:
        log.info("result of task %s attempt %s ignored: run superseded", run.id, run.attempt)
        return
    TASKS_FINISHED.labels(kind_label(run.kind), result.status.value).inc()
    if result.status is not Status.QUEUED:
        log.info("task %s %s (attempt %s)", run.id, result.status.value, run.attempt)


class PendingOutcomes:
    """The decisions of a part of a run set, written together when the part
    ends, or ``window`` seconds after the first of them if the part is still
    running then (a handler that takes longer than expected must not hold the
    outcomes before it: their leases are no longer renewed)."""

    def __init__(self, store: Store, *, worker: str, window: float) -> None:
        self._store = store
        self._worker = worker
        self._window = window
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # held by the write under way
        self._items: list[Decided] = []
        self._armed = False  # a late write is due for the items kept
        self._closed = False  # flushed: a late write due now writes nothing
        self.written: list[TaskRecord] = []

    def add(self, decided: Decided, *, more: bool) -> None:
        """Keep a decision; ``more``: other runs of the part follow it."""
        with self._lock:
            self._items.append(decided)
            arm = more and not self._armed
            self._armed = self._armed or arm
        if arm:
            _late_writes().arm(self, time.monotonic() + self._window)

    def flush(self) -> list[TaskRecord]:
        """Write what is kept, once a late write under way has ended (the
        message is acknowledged after all are durable); every task written."""
        with self._lock:
            self._closed = True
        self._write_taken()
        return self.written

    def write_late(self) -> None:
        """The window has passed: write what is kept, unless flushed meanwhile."""
        with self._lock:
            if self._closed:
                return
        try:
            self._write_taken()
        except Exception:  # the sweeper recovers what could not be written
            log.exception("a late write of outcomes failed")

    def _write_taken(self) -> None:
        with self._writing:
            with self._lock:
                items, self._items, self._armed = self._items, [], False
            if items:
                self.written += record_all(self._store, items, worker=self._worker)


class _LateWrites:
    """The one thread of a process that makes the late writes of parts still
    running when their window has passed. A thread of its own per part cost
    about 0.26 ms of CPU to start, cancel and join (and the flush waited for
    the join), where a part nearly always ends within its window. The late
    writes of a process are made one after another here: only while the
    database does not answer does one wait behind another, and then all would."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, PendingOutcomes]] = []
        self._seq = itertools.count()
        threading.Thread(target=self._loop, name="late-outcomes", daemon=True).start()

    def arm(self, pending: PendingOutcomes, at: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (at, next(self._seq), pending))
            if self._due[0][2] is pending:  # only an earlier wake needs the thread woken
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._cond.wait(wait)
                _, _, pending = heapq.heappop(self._due)
            pending.write_late()


# This process's late writer, made in the process that runs tasks.
_late_writes = process_local(_LateWrites)
