"""Watching one run from beside it: lease renewal, cancellation, timeout.

A thread per running task wakes every ``HEARTBEAT_SECONDS``. It renews the
run's lease (one UPDATE); when the renewal finds the run is no longer current
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

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

from tasks_core.quotas import run_timeout
from tasks_core.settings import Settings
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.worker_protocol import renew_lease
from worker.context import TaskContext

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
    """Context manager running the watch thread for one run."""

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
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"watch-{task.id}", daemon=True)
        self.timed_out = False
        # The run was stopped because its lease could not be renewed: another
        # attempt may be running by now, so this one's outcome is not written.
        self.lease_lost = False
        self.timeout = run_timeout(task.timeout_seconds, store.settings)
        self._renewal: _Renewal | None = None

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        settings = self._store.settings
        grace = settings.cancel_grace_seconds
        started = time.monotonic()
        deadline = started + self.timeout
        renewed = started  # the claim's lease, a moment older: see lease_margin
        stop_asked: float | None = None
        while True:
            now = time.monotonic()
            if stop_asked is None:
                wake = min(now + settings.heartbeat_seconds, deadline)
            else:
                wake = min(now + settings.heartbeat_seconds, stop_asked + grace)
            if self._done.wait(max(0.0, wake - now)):
                return
            now = time.monotonic()
            if stop_asked is not None:
                if now >= stop_asked + grace:
                    self._on_unresponsive(self)
                    return
            elif now >= deadline:
                self.timed_out = True
                self._ctx.request_stop(timed_out=True)
                stop_asked = now
            else:
                renewal, sent = self._renew()
                if renewal is True:
                    renewed = sent
                elif renewal is False:  # cancelled, finished elsewhere, or handed on
                    self._ctx.request_stop()
                    stop_asked = now
                elif time.monotonic() >= renewed + lease_margin(settings):
                    self._lose_lease(time.monotonic() - renewed)
                    stop_asked = now

    def _renew(self) -> tuple[bool | None, float]:
        """The outcome of a renewal and when it was sent. True: renewed (the
        lease runs from about then); False: the run is no longer current;
        None: failed, or still unanswered after a heartbeat (it goes on, and
        the next tick waits for it again rather than send another)."""
        if self._renewal is None:
            self._renewal = _Renewal(self._store, self._task)
        renewal = self._renewal
        if not renewal.done.wait(self._store.settings.heartbeat_seconds):
            return None, renewal.sent
        self._renewal = None
        return renewal.result, renewal.sent

    def _lose_lease(self, since: float) -> None:
        log.error(
            "task %s: no lease renewal reached the database for %.1f s; stopping the run "
            "before its lease runs out and another attempt starts (its outcome is dropped)",
            self._task.id,
            since,
        )
        self.lease_lost = True
        self._ctx.request_stop()


class _Renewal:
    """One lease renewal, made beside the watch: a renewal stuck on a database
    that does not answer (a network cut: no error, no reply) must not stop
    the watch from noticing that the lease is running out."""

    def __init__(self, store: Store, task: TaskRecord) -> None:
        self.sent = time.monotonic()
        self.done = threading.Event()
        self.result: bool | None = None
        thread = threading.Thread(
            target=self._run, args=(store, task), name=f"renew-{task.id}", daemon=True
        )
        thread.start()

    def _run(self, store: Store, task: TaskRecord) -> None:
        try:
            self.result = renew_lease(store, task.id, task.attempt)
        except Exception:
            log.warning("lease renewal of task %s failed", task.id, exc_info=True)
        finally:
            self.done.set()


def lease_margin(settings: Settings) -> float:
    """How long after its last renewal a run whose renewals fail is asked to
    stop: early enough that the hard stop, ``CANCEL_GRACE_SECONDS`` later,
    still comes a heartbeat before the lease runs out (but never before one
    heartbeat: a single failed renewal of a short lease stops the run)."""
    return max(
        settings.heartbeat_seconds,
        settings.lease_seconds - settings.cancel_grace_seconds - settings.heartbeat_seconds,
    )
