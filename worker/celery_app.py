"""The Celery application of the workers, and why each setting is what it is.

Celery only moves "look at task X" messages; the truth (status, attempts,
outcome) is in PostgreSQL, so settings are chosen for at-least-once delivery
and the guarded claim turns that into exactly-once outcomes.

The app is built by :func:`get_app` where a worker starts (``tasks-core
worker``, or ``celery -A worker`` through ``worker.app``), never on import:
application code that only registers handlers loads no Celery.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutting_down

import worker.builtins  # noqa: F401  (the kinds and actions built into every worker)
from tasks_core.publisher import RUN_SET, RUN_TASK
from tasks_core.queues import queue_name
from tasks_core.settings import Settings, get_settings
from tasks_core.store import Store, store_from_settings
from worker import broker_fixes, supervisor

log = logging.getLogger(__name__)


# The process the app was made in: the worker itself (prefork children fork from it).
_app_pid = 0


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``; its one task runs tasks by id."""
    global _app_pid
    _app_pid = os.getpid()
    broker_fixes.install()
    worker_process_init.connect(_in_pool_child, weak=False, dispatch_uid="tasks-core-pool-child")
    worker_process_shutdown.connect(
        _pool_child_ends, weak=False, dispatch_uid="tasks-core-pool-child-ends"
    )
    worker_shutting_down.connect(
        _on_shutting_down, weak=False, dispatch_uid="tasks-core-shutting-down"
    )
    app = Celery("tasks_core_worker", broker=settings.redis_url or "redis://127.0.0.1:6379/0")
    app.conf.update(
        # JSON only: a message is an id, and pickle from a broker is remote code execution.
        task_serializer="json",
        accept_content=["json"],
        # Outcomes are written to PostgreSQL by the runner; Celery keeps no results.
        task_ignore_result=True,
        # Ack after the run, not on receipt: a worker that dies mid-task leaves
        # the message to be delivered again (the claim drops it if the task moved on).
        task_acks_late=True,
        # A pool child killed mid-task (OOM, kill -9) puts its message back.
        task_reject_on_worker_lost=True,
        # With late acks, a prefetched message waits behind a long task while
        # other workers idle; take one at a time.
        worker_prefetch_multiplier=1,
        # Redis redelivers an unacked message after this long: longer than any
        # sane run, since a live worker's lease (not Redis) says it is alive.
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        },
        # Keep trying to reach Redis at start-up instead of exiting.
        broker_connection_retry_on_startup=True,
        # On a lost broker connection, unacked messages return to the queue;
        # stop the runs they belong to rather than run them twice.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=queue_name("default", None, settings.queue_prefix),
        # Application modules that register handlers and actions.
        imports=[m.strip() for m in settings.tasks_imports.split(",") if m.strip()],
        worker_hijack_root_logger=False,
    )
    app.task(name=RUN_TASK, ignore_result=True, bind=True)(_run)
    app.task(name=RUN_SET, ignore_result=True, bind=True)(_run_set)
    return app


_store: Store | None = None
_store_pid = 0


def process_store() -> Store:
    """This process's store, made after fork (connections must not be shared)."""
    global _store, _store_pid
    if _store is None or _store_pid != os.getpid():
        _store = store_from_settings(get_settings())
        _store_pid = os.getpid()
    return _store


def _run(self: Task, task_id: str) -> None:
    from worker.runner import run_task

    # The queue the message came from: the claim refuses a task that waits on
    # another one now (its executorId was changed after it was published).
    queue = (self.request.delivery_info or {}).get("routing_key")
    run_task(process_store(), task_id, node=self.request.hostname, queue=queue)


def _run_set(self: Task, task_ids: list[str]) -> None:
    from worker.runner import run_set

    request = self.request
    queue = (request.delivery_info or {}).get("routing_key")
    # The message's headers name the kind and executorId of its queue, for
    # the part of a slow set handed back to it.
    kind = getattr(request, "kind", None)
    route = (kind, getattr(request, "executor_id", None)) if isinstance(kind, str) else None
    if not isinstance(task_ids, list):
        log.error("dropping a run set whose argument is not a list of ids: %r", task_ids)
        return
    run_set(process_store(), task_ids, node=request.hostname, queue=queue, route=route)


def _in_pool_child(**_: Any) -> None:
    # The solo pool sends this signal too, in the worker's own process: that
    # process is also the consumer, and ending it would leave its queues
    # unserved, so only a forked child counts.
    supervisor.IN_POOL_CHILD = os.getpid() != _app_pid


def _pool_child_ends(**_: Any) -> None:
    """A pool process ends (replaced, or the worker stops): its runs under
    way no longer count in ``tasks_running``."""
    from tasks_core.metrics_processes import process_ended

    process_ended(os.getpid())


def _on_shutting_down(sender: str, how: str, **_: Any) -> None:
    """A warm shutdown (SIGTERM) lets running tasks finish; after
    ``SHUTDOWN_GRACE_SECONDS`` the ones still running are handed back to their
    queues and the worker stops (cold), so none is left `running` without a
    live owner."""
    if how != "Warm":
        return
    timer = threading.Timer(
        get_settings().shutdown_grace_seconds, _hand_back_and_stop, args=(sender,)
    )
    timer.daemon = True
    timer.start()


def _hand_back_and_stop(node: str) -> None:
    from tasks_core.worker_protocol import hand_back

    try:
        handed = hand_back(process_store(), node_prefix=f"{node}:", actor=f"worker:{node}")
        log.warning("shutdown grace over: handed back %d running task(s)", handed)
    finally:
        os.kill(os.getpid(), signal.SIGQUIT)  # Celery's cold shutdown ends the pool


@functools.cache
def get_app() -> Celery:
    """This process's Celery app, built on first use from the settings."""
    return create_celery(get_settings())
