"""Running one task: the whole life of a delivery, top to bottom.

claim (guarded) -> handler, watched by a supervisor -> one fenced write of
the outcome (or a hand-back for a retry). A Flow instead spawns its steps
and waits; its outcome is written by the fan-in of its last step. Every way a delivery can go wrong
(a duplicate, a late message, a cancel, a stale attempt) ends in a guarded
statement that changes nothing, and is logged.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

import worker.builtins  # noqa: F401  (the built-in kinds and actions are always there)
from tasks_core.flow_definitions import FLOW_KIND
from tasks_core.status import Status
from tasks_core.storage.errors import DatabaseFailure, classify, reason
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.worker_protocol import retry_task
from worker import outcome
from worker.batching import ClaimRequest, OutcomeRequest, batchers_for
from worker.context import TaskContext
from worker.errors import UNKNOWN_KIND, Cancelled, TimedOut
from worker.flow_kind import run_flow
from worker.registry import registry
from worker.supervisor import Supervisor, hard_stop

log = logging.getLogger(__name__)


def worker_name(node: str | None = None) -> str:
    """How this process is named in event logs and the task's ``worker`` column:
    ``<Celery node name>:<pid>``, so a worker can find its own runs at shutdown."""
    return f"{node or socket.gethostname()}:{os.getpid()}"


def run_task(
    store: Store, task_id: str, *, node: str | None = None, queue: str | None = None
) -> TaskRecord | None:
    """Run the task a message (from ``queue``, if known) points at; returns
    the task as finished (or handed back for a retry), None when nothing was
    run or the result was fenced off."""
    try:
        tid = uuid.UUID(task_id)
    except (ValueError, TypeError):
        log.error("dropping a message with an invalid task id %r", task_id)
        return None
    name = worker_name(node)
    # Through the process's batcher: in a thread pool, the claims that wait
    # together go as one statement.
    task = batchers_for(store, name).claims.submit(ClaimRequest(tid, queue))
    if task is None:
        log.info(
            "task %s is not waiting to run here now: duplicate or late delivery dropped "
            "(or a message left on its old queue, or its organization at its running limit)",
            task_id,
        )
        return None
    if task.kind == FLOW_KIND:
        return run_flow(store, task, worker=name)
    ctx = TaskContext(task, store=store, logger=logging.getLogger(f"tasks.{task.kind}"))
    supervisor = Supervisor(
        store, task, ctx, on_unresponsive=lambda s: _unresponsive(store, task, s)
    )
    with supervisor:
        decision = execute(
            ctx,
            max_output_bytes=store.settings.max_output_bytes,
            expose_tracebacks=store.settings.expose_tracebacks,
        )
    if supervisor.lease_lost:
        log.warning(
            "task %s attempt %s stopped: lease lost; outcome dropped", task.id, task.attempt
        )
        return None
    if ctx.timed_out:
        decision = outcome.timed_out(supervisor.timeout)
    return record(store, task, decision, worker=name)


def execute(
    ctx: TaskContext, *, max_output_bytes: int | None = None, expose_tracebacks: bool = False
) -> outcome.Decision:
    """Call the handler of the task's kind and turn what it did into a decision."""
    fn = registry.handlers.get(ctx.task.kind)
    if fn is None:
        kinds = ", ".join(registry.kinds())
        return outcome.failure(
            UNKNOWN_KIND,
            f"no handler for kind {ctx.task.kind!r} is registered on this worker (kinds: {kinds})",
            retryable=False,
        )
    try:
        result = fn(ctx)
    except Exception as exc:  # every handler failure becomes the task's errors
        if not isinstance(exc, Cancelled | TimedOut):
            # The traceback is for the operator: tenants see the type and message.
            log.error("task %s: its handler raised", ctx.task.id, exc_info=exc)
        return outcome.from_exception(exc, expose_traceback=expose_tracebacks)
    return outcome.from_result(result, max_bytes=max_output_bytes)


def record(
    store: Store, task: TaskRecord, decision: outcome.Decision, *, worker: str
) -> TaskRecord | None:
    """Persist a decision: a retry when allowed, else the terminal outcome.

    What a write's failure means is told by ``classify``. While PostgreSQL
    is unreachable the write is retried (with backoff, for up to
    ``OUTCOME_RETRY_SECONDS``) so that a computed outcome is not lost; past
    that the run is left to the sweeper, which runs it again once its lease
    expires. The write is fenced, so retrying it is safe. An outcome that
    PostgreSQL refuses (a value it can not store) would be refused again:
    the task fails at once with ``output_rejected`` instead.
    """
    deadline = time.monotonic() + store.settings.outcome_retry_seconds
    pause = 0.2
    refused = False  # the outcome was refused once: the failure written instead must pass
    while True:
        try:
            return _record_once(store, task, decision, worker=worker)
        except (DBAPIError, PoolTimeout) as exc:
            failure = classify(exc)
            if failure is DatabaseFailure.DATA and not refused:
                log.warning("the outcome of task %s was refused: %s", task.id, exc)
                decision, refused = outcome.rejected(reason(exc)), True
                continue
            if failure is not DatabaseFailure.OUTAGE or time.monotonic() + pause > deadline:
                log.error("could not record the outcome of task %s; the sweeper will", task.id)
                raise
            log.warning("database unavailable; retrying the outcome of task %s", task.id)
            time.sleep(pause)  # a back-off between tries, not a wait for a condition
            pause = min(pause * 2, 5.0)


def _record_once(
    store: Store, task: TaskRecord, decision: outcome.Decision, *, worker: str
) -> TaskRecord | None:
    settings = store.settings
    if outcome.should_retry(decision, attempt=task.attempt, max_attempts=task.max_attempts):
        delay = outcome.retry_delay(
            task.attempt, base=settings.retry_base_seconds, cap=settings.retry_max_seconds
        )
        result = retry_task(store, task, decision.outcome, delay=delay, worker=worker)
    else:
        outcomes = batchers_for(store, worker).outcomes
        result = outcomes.submit(OutcomeRequest(task, decision.outcome))
    if result is None:
        log.info("result of task %s attempt %s ignored: run superseded", task.id, task.attempt)
    elif result.status is not Status.QUEUED:
        log.info("task %s %s (attempt %s)", task.id, result.status.value, task.attempt)
    return result


def _unresponsive(store: Store, task: TaskRecord, supervisor: Supervisor) -> None:
    """The handler ignored a stop request for the whole grace period."""
    if supervisor.timed_out and not supervisor.lease_lost:
        record(store, task, outcome.timed_out(supervisor.timeout), worker=worker_name())
    hard_stop(task.id)
