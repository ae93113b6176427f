"""Watching one run from beside it: lease renewal, cancellation, timeout.

A thread per running task wakes every ``HEARTBEAT_SECONDS``. It renews the
run's lease (one UPDATE); when the renewal finds the run is no longer current
(cancelled, or handed to another attempt) it asks the handler to stop, and
when the run passes its ``timeoutSeconds`` it does the same, marked as a
timeout. A handler that does not stop within ``CANCEL_GRACE_SECONDS`` is
stopped by ending its process (see :func:`hard_stop`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

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
        started = time.monotonic()
        timeout = self._task.timeout_seconds
        deadline = started + timeout if timeout else None
        stop_asked: float | None = None
        while True:
            wait = settings.heartbeat_seconds
            if deadline is not None and stop_asked is None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            if stop_asked is not None:
                wait = min(
                    wait, max(0.0, stop_asked + settings.cancel_grace_seconds - time.monotonic())
                )
            if self._done.wait(wait):
                return
            now = time.monotonic()
            if stop_asked is not None:
                if now >= stop_asked + settings.cancel_grace_seconds:
                    self._on_unresponsive(self)
                    return
            elif deadline is not None and now >= deadline:
                self.timed_out = True
                self._ctx.request_stop(timed_out=True)
                stop_asked = now
            elif not self._renew():  # cancelled, finished elsewhere, or handed to another attempt
                self._ctx.request_stop()
                stop_asked = now

    def _renew(self) -> bool:
        try:
            return renew_lease(self._store, self._task.id, self._task.attempt)
        except Exception:  # a database blip must not stop the run
            log.warning("lease renewal of task %s failed", self._task.id, exc_info=True)
            return True
