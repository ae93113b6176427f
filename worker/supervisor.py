"""Watching one run from beside it: lease renewal, cancellation, timeout.

One thread per process watches all of its running tasks (a heap of wake
times: a run costs no thread of its own). Each run is woken every
``HEARTBEAT_SECONDS``: its lease is renewed (one UPDATE, made beside the
watch); when the renewal finds the run is no longer current
(cancelled, or handed to another attempt) it asks the handler to stop, and
when the run passes its time (``timeoutSeconds``, else
``DEFAULT_TIMEOUT_SECONDS``, at most ``MAX_TIMEOUT_SECONDS``) it does the
same, marked as a timeout. A handler that does not stop within
``CANCEL_GRACE_SECONDS`` is stopped by ending its process (see
:func:`hard_stop`).

A renewal that fails (the database can not be reached) is not a renewal: the
lease still runs out ``LEASE_SECONDS`` after the last one that reached the
database, and then the sweeper gives the task another attempt, elsewhere.
So a worker whose renewals keep failing stops its handler first, early
enough that even the hard stop comes before the lease can run out, and
writes nothing of that run (see :attr:`Supervisor.lease_lost`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

from tasks_core.quotas import run_timeout
from tasks_core.settings import Settings
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from worker.batching import batchers_for
from worker.context import TaskContext
from worker.process_local import process_local

log = logging.getLogger(__name__)

# Set in Celery's prefork children (worker_process_init): only there may a
# stuck handler be stopped by exiting the process, which the pool replaces.
IN_POOL_CHILD = False


def hard_stop(task_id: object) -> None:
    """End this process to stop a handler that ignores cancellation."""
    if IN_POOL_CHILD:
        log.error("task %s did not stop within the grace period; ending its process", task_id)
        logging.shutdown()
        os._exit(1)
    log.error(
        "task %s did not stop within the grace period and this pool can not end it; "
        "its result will be ignored",
        task_id,
    )


class Supervisor:
    """Context manager watching one run, from this process's watch thread."""

    def __init__(
        self,
        store: Store,
        task: TaskRecord,
        ctx: TaskContext,
        *,
        on_unresponsive: Callable[[Supervisor], None],
    ) -> None:
        self._store = store
        self._task = task
        self._ctx = ctx
        self._on_unresponsive = on_unresponsive
        self._lock = threading.Lock()
        self._done = False
        self.timed_out = False
        # The run was stopped because its lease could not be renewed: another
        # attempt may be running by now, so this one's outcome is not written.
        self.lease_lost = False
        self.timeout = run_timeout(task.timeout_seconds, store.settings)
        self._renewal: _Renewal | None = None
        self._awaiting = False  # a tick waits for the renewal's answer
        self._stop_asked: float | None = None
        self._started = time.monotonic()
        self._deadline = self._started + self.timeout
        self._renewed = self._started  # the claim's lease, a moment older: see lease_margin
        self._last_resort: threading.Thread | None = None

    def __enter__(self) -> Supervisor:
        _watcher().watch(self, self._next_wake(self._started), coarse=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:  # no tick of this run is under way once this returns
            self._done = True
        _watcher().forget(self)
        if self._last_resort is not None:
            self._last_resort.join()

    @property
    def ended(self) -> bool:
        """The run's handler has returned."""
        return self._done

    def _next_wake(self, now: float) -> float:
        heartbeat = self._store.settings.heartbeat_seconds
        if self._stop_asked is None:
            return min(now + heartbeat, self._deadline)
        return min(now + heartbeat, self._stop_asked + self._store.settings.cancel_grace_seconds)

    def tick(self) -> float | None:
        """One wake of the watch: the next wake, or None when the watch ends."""
        with self._lock:
            if self._done:
                return None
            now = time.monotonic()
            if self._awaiting:
                return self._answered(now)
            if self._stop_asked is not None:
                if now >= self._stop_asked + self._store.settings.cancel_grace_seconds:
                    self._last_resort = threading.Thread(
                        target=self._on_unresponsive, args=(self,), daemon=True
                    )
                    self._last_resort.start()
                    return None
            elif now >= self._deadline:
                self.timed_out = True
                self._ctx.request_stop(timed_out=True)
                self._stop_asked = now
            else:
                # A renewal still unanswered from the last tick is waited for
                # again rather than another sent.
                if self._renewal is None:
                    self._renewal = _Renewal(self._store, self._task, on_done=self._answer)
                self._awaiting = True
                return now + self._store.settings.heartbeat_seconds
            return self._next_wake(now)

    def _answer(self) -> None:
        _watcher().wake(self)

    def _answered(self, now: float) -> float:
        """The renewal answered, or a heartbeat passed without an answer (it
        goes on). True: renewed (the lease runs from about when it was sent);
        False: the run is no longer current; None: failed or unanswered."""
        renewal = self._renewal
        assert renewal is not None
        self._awaiting = False
        result = None
        if renewal.done.is_set():
            self._renewal = None
            result = renewal.result
        if result is True:
            self._renewed = renewal.sent
        elif result is False:  # cancelled, finished elsewhere, or handed on
            self._ctx.request_stop()
            self._stop_asked = now
        elif time.monotonic() >= self._renewed + lease_margin(self._store.settings):
            self._lose_lease(time.monotonic() - self._renewed)
            self._stop_asked = now
        return self._next_wake(now)

    def _lose_lease(self, since: float) -> None:
        log.error(
            "task %s: no lease renewal reached the database for %.1f s; stopping the run "
            "before its lease runs out and another attempt starts (its outcome is dropped)",
            self._task.id,
            since,
        )
        self.lease_lost = True
        self._ctx.request_stop()


# Wakes of new runs are rounded up to this (seconds): far below any
# heartbeat, timeout or grace period a run is watched for.
WAKE_GRAIN = 0.05


class _Watcher:
    """The one thread of a process that watches all of its runs: each run
    is a wake time in a heap, so a run costs no thread of its own (a thread
    pool runs many at once), and a tick never waits on the database (each
    renewal is made beside it, and wakes its run when answered)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Supervisor]] = []
        self._due: dict[int, int] = {}  # run -> its one live entry in the heap
        self._woken: set[int] = set()  # runs answered while their tick was under way
        self._seq = itertools.count()
        self.wakes = 0  # times the thread woke (for tests and figures)
        threading.Thread(target=self._loop, name="watch-runs", daemon=True).start()

    def watch(self, run: Supervisor, at: float, *, coarse: bool = False) -> None:
        """Tick ``run`` at ``at``; ``coarse`` rounds it up to the next
        ``WAKE_GRAIN``, so that the wakes of runs started close together come
        in one (a stream of short tasks does not wake the thread per task)."""
        if coarse:
            at = math.ceil(at / WAKE_GRAIN) * WAKE_GRAIN
        with self._cond:
            entry = next(self._seq)
            self._due[id(run)] = entry
            heapq.heappush(self._heap, (at, entry, run))
            # The thread sleeps until the earliest wake: only an earlier one
            # needs to wake it.
            if self._heap[0][1] == entry:
                self._cond.notify()

    def forget(self, run: Supervisor) -> None:
        """``run`` ended: its wake is dropped when it comes, without a tick."""
        with self._cond:
            self._due.pop(id(run), None)
            self._woken.discard(id(run))

    def wake(self, run: Supervisor) -> None:
        """Tick ``run`` now (its renewal answered)."""
        with self._cond:
            if run.ended:  # forgotten meanwhile
                return
            if id(run) in self._due:
                self.watch(run, time.monotonic())
            else:
                self._woken.add(id(run))

    def _loop(self) -> None:
        while True:
            run = self._next()
            try:
                wake = run.tick()
            except Exception:  # a watch must go on for the other runs
                log.exception("the watch of a run failed")
                wake = None
            with self._cond:
                if id(run) in self._woken:
                    self._woken.discard(id(run))
                    wake = None if wake is None else time.monotonic()
                if wake is not None and id(run) not in self._due:
                    self.watch(run, wake)

    def _next(self) -> Supervisor:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _, entry, run = heapq.heappop(self._heap)
                    if self._due.get(id(run)) == entry:
                        del self._due[id(run)]
                        return run
                    continue  # superseded by a later wake of the same run
                self._cond.wait(self._heap[0][0] - now if self._heap else None)
                self.wakes += 1


# This process's watcher, made in the process that runs tasks.
_watcher = process_local(_Watcher)


class _Renewal:
    """One lease renewal, made beside the watch: a renewal stuck on a database
    that does not answer (a network cut: no error, no reply) must not stop
    the watch from noticing that the lease is running out."""

    def __init__(self, store: Store, task: TaskRecord, *, on_done: Callable[[], None]) -> None:
        self.sent = time.monotonic()
        self._on_done = on_done
        self.done = threading.Event()
        self.result: bool | None = None
        thread = threading.Thread(
            target=self._run, args=(store, task), name=f"renew-{task.id}", daemon=True
        )
        thread.start()

    def _run(self, store: Store, task: TaskRecord) -> None:
        try:
            # Beside the renewals of the process's other runs, in one statement.
            renewals = batchers_for(store, task.worker or "").renewals
            self.result = renewals.submit((task.id, task.attempt))
        except Exception:
            log.warning("lease renewal of task %s failed", task.id, exc_info=True)
        finally:
            self.done.set()
            self._on_done()


def lease_margin(settings: Settings) -> float:
    """How long after its last renewal a run whose renewals fail is asked to
    stop: early enough that the hard stop, ``CANCEL_GRACE_SECONDS`` later,
    still comes a heartbeat before the lease runs out (but never before one
    heartbeat: a single failed renewal of a short lease stops the run)."""
    return max(
        settings.heartbeat_seconds,
        settings.lease_seconds - settings.cancel_grace_seconds - settings.heartbeat_seconds,
    )
