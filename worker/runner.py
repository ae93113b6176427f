"""Running the tasks of one message: the whole life of a delivery, top to bottom.

claim (guarded) -> handler, watched by a supervisor -> one fenced write of
the outcome (or a hand-back for a retry). A Flow instead spawns its steps
and waits; its outcome is written by the fan-in of its last step. A message
names one task, or a run set of a queue's tasks published together: those
are claimed, and their outcomes written, in sets. Every way a delivery can
go wrong (a duplicate, a late message, a cancel, a stale attempt) ends in a
guarded statement that changes nothing, and is logged.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence

import worker.builtins  # noqa: F401  (the built-in kinds and actions are always there)
from tasks_core.flow_definitions import FLOW_KIND
from tasks_core.logs import run_context
from tasks_core.metrics import TASK_QUEUE_WAIT, TASK_RUN, TASKS_RUNNING, kind_label
from tasks_core.publisher import BatchPublisher, TaskMessage
from tasks_core.storage.errors import DatabaseFailure, classify
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.worker_protocol import renew_lease
from worker import outcome
from worker.batching import ClaimRequest, batchers_for
from worker.context import TaskContext
from worker.errors import UNKNOWN_KIND, Cancelled, TimedOut
from worker.flow_kind import run_flow
from worker.pace import Pace, pace_of
from worker.recording import Decided, PendingOutcomes, record, release
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
    written = run_set(store, [task_id], node=node, queue=queue)
    return written[0] if written else None


def run_set(
    store: Store,
    task_ids: Sequence[str],
    *,
    node: str | None = None,
    queue: str | None = None,
    route: tuple[str, str | None] | None = None,
) -> list[TaskRecord]:
    """Run the tasks a message names (all of ``queue``, if known), in order;
    the tasks as written (finished, handed back for a retry, or a Flow
    started), leaving out those not run here or fenced off.

    They go in parts (``worker.pace``): each part claimed in one statement,
    run one task after another, and its outcomes written in one statement.
    When the tasks of the queue take longer than ``RUN_SET_WINDOW_SECONDS``
    the rest of the set is handed back to the queue in smaller sets (when
    the message's ``route``, kind and executorId, is known), so that other
    workers share it."""
    ids = _task_ids(task_ids)
    name = worker_name(node)
    window = store.settings.run_set_window_seconds
    pace = pace_of(queue)
    written: list[TaskRecord] = []
    while ids:
        share = pace.share(window, len(ids))
        slow = share < len(ids) and pace.seconds is not None
        if slow and queue and route and _hand_on(store, ids[share:], queue, route, share):
            ids = ids[:share]
        part, ids = ids[:share], ids[share:]
        written += _run_part(store, part, worker=name, queue=queue, pace=pace)
    return written


def _task_ids(task_ids: Sequence[str]) -> list[uuid.UUID]:
    """The valid ids of a message, each once."""
    ids: list[uuid.UUID] = []
    for task_id in task_ids:
        try:
            ids.append(uuid.UUID(task_id))
        except (ValueError, TypeError, AttributeError):
            log.error("dropping a message's invalid task id %r", task_id)
    return list(dict.fromkeys(ids))


def _hand_on(
    store: Store,
    ids: Sequence[uuid.UUID],
    queue: str,
    route: tuple[str, str | None],
    set_size: int,
) -> bool:
    """Publish ``ids`` again on their queue, in sets of ``set_size``; False
    (logged) when the broker did not take them: they are then run here. The
    message in hand is acknowledged only later, so a crash in between leaves
    copies, which the claim drops."""
    publisher = store.publisher
    if not isinstance(publisher, BatchPublisher):
        return False
    kind, executor_id = route
    messages = [TaskMessage(str(i), queue, kind, executor_id) for i in ids]
    try:
        publisher.publish_many(messages, set_size=set_size)
    except Exception:
        log.warning(
            "could not hand %d task(s) back to %s; running them here",
            len(ids),
            queue,
            exc_info=True,
        )
        return False
    return True


def _run_part(
    store: Store, ids: Sequence[uuid.UUID], *, worker: str, queue: str | None, pace: Pace
) -> list[TaskRecord]:
    """Claim ``ids`` in one statement, run those claimed, and write their
    outcomes together (see ``PendingOutcomes``)."""
    claims = batchers_for(store, worker).claims
    answers = claims.submit_many([ClaimRequest(i, queue) for i in ids])
    claimed_at = time.monotonic()
    for answer in answers:
        if answer.error is not None:
            raise answer.error
    runs = [a.value for a in answers if a.value is not None]
    for task_id, answer in zip(ids, answers, strict=True):
        if answer.value is None:
            log.info(
                "task %s is not waiting to run here now: duplicate or late delivery dropped "
                "(or a message left on its old queue, or its organization at its running limit)",
                task_id,
            )
    pending = PendingOutcomes(store, worker=worker, window=store.settings.run_set_window_seconds)
    flows: list[TaskRecord] = []
    for n, task in enumerate(runs):
        if n and not _still_current(store, task, since=claimed_at, worker=worker):
            continue
        started = time.monotonic()
        if task.kind == FLOW_KIND:
            flow = run_flow(store, task, worker=worker)
            flows += [flow] if flow is not None else []
        else:
            decision = attend(store, task, worker=worker)
            if decision is not None:
                pending.add(Decided(task, decision), more=n + 1 < len(runs))
        pace.note(time.monotonic() - started)
    return [*flows, *pending.flush()]


def _still_current(store: Store, task: TaskRecord, *, since: float, worker: str) -> bool:
    """A run claimed with others that waited past a heartbeat behind them
    (one ran longer than expected) has its lease renewed before it starts;
    False: it was cancelled meanwhile, or its lease ran out and another
    attempt has it, or PostgreSQL could not be reached to renew it (the run
    is then handed back, unstarted, once it can)."""
    if time.monotonic() - since < store.settings.heartbeat_seconds:
        return True
    try:
        if renew_lease(store, task.id, task.attempt):
            return True
    except Exception as exc:  # only an outage is handed back; classify names one
        if classify(exc) is not DatabaseFailure.OUTAGE:
            raise
        log.warning(
            "task %s attempt %s: its lease could not be renewed before it started; handing it back",
            task.id,
            task.attempt,
        )
        release(store, task, worker=worker)
        return False
    log.info("task %s attempt %s waited too long behind others; dropped", task.id, task.attempt)
    return False


def attend(store: Store, task: TaskRecord, *, worker: str) -> outcome.Decision | None:
    """Run a claimed task's handler, watched by a supervisor; its decision,
    or None when the run lost its lease (another attempt may have it)."""
    ctx = TaskContext(task, store=store, logger=logging.getLogger(f"tasks.{task.kind}"))
    supervisor = Supervisor(
        store, task, ctx, on_unresponsive=lambda s: _unresponsive(store, task, s)
    )
    kind = kind_label(task.kind)
    if task.attempt == 1 and task.started_at is not None:
        TASK_QUEUE_WAIT.labels(kind).observe((task.started_at - task.created_at).total_seconds())
    started = time.perf_counter()
    context = run_context(
        task_id=task.id,
        kind=task.kind,
        attempt=task.attempt,
        worker=worker,
        organization_id=task.organization_id,
    )
    with context, supervisor, TASKS_RUNNING.labels(kind).track_inprogress():
        decision = execute(
            ctx,
            max_output_bytes=store.settings.max_output_bytes,
            expose_tracebacks=store.settings.expose_tracebacks,
        )
    TASK_RUN.labels(kind).observe(time.perf_counter() - started)
    if supervisor.lease_lost:
        log.warning(
            "task %s attempt %s stopped: lease lost; outcome dropped", task.id, task.attempt
        )
        release(store, task, worker=worker)
        return None
    if ctx.timed_out:
        decision = outcome.timed_out(supervisor.timeout)
    return decision


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


def _unresponsive(store: Store, task: TaskRecord, supervisor: Supervisor) -> None:
    """The handler ignored a stop request for the whole grace period."""
    if supervisor.timed_out and not supervisor.lease_lost:
        record(store, task, outcome.timed_out(supervisor.timeout), worker=worker_name())
    hard_stop(task.id)
