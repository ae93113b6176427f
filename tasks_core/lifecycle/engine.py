"""The lifecycle engine: applies a move to its tasks, fan-in included.

:func:`apply` takes any move (``tasks_core.lifecycle.moves``) on a connection
and does the whole of it: it locks the Flow chain of every task whose end
may fan in, moves the tasks with one guarded statement, and, when a Flow's
step ended, fans in, spawns the steps now unblocked and ends Flows, all in
the caller's transaction. It returns what changed and what to publish once
committed. A move of one task and of a hundred run the same statements.

Callers apply a move in a transaction (or, when :func:`needs_transaction`
is false, as one autocommitted statement) and publish after commit; see
``tasks_core.lifecycle.publishing.execute``, which does both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection

from tasks_core.errors import InvalidTransition
from tasks_core.flow_definitions import Step
from tasks_core.lifecycle import flow_engine, flow_statements, statements
from tasks_core.lifecycle.flow_engine import Ended, ParentFlow
from tasks_core.lifecycle.moves import (
    QUEUE_TIMEOUT,
    RECOVERY_FAILED,
    UNKNOWN_KIND,
    WORKER_LOST,
    Applied,
    Attempt,
    Cancel,
    Claim,
    Create,
    EndFlow,
    FailRecovery,
    Finish,
    FlowEnd,
    FlowStart,
    HandBack,
    MarkQueued,
    Move,
    Publish,
    PublishFailed,
    QueueTimeout,
    RecoverLease,
    Release,
    Republish,
    Retry,
    StartFlow,
    Unserved,
    Update,
)
from tasks_core.status import MoveKind, Status, is_terminal, sources_for
from tasks_core.task import TaskRecord


@dataclass(frozen=True, slots=True)
class Locked:
    """Tasks (and their Flow chains) this transaction has locked already:
    a move applied with it does not lock them again."""

    ids: frozenset[uuid.UUID] = field(default_factory=frozenset)


def lock(conn: Connection, organization_id: uuid.UUID, task_ids: Sequence[uuid.UUID]) -> Locked:
    """Lock tasks of one organization and every Flow they are steps of (an end
    of theirs may fan in to those), before checking and changing them."""
    return Locked(frozenset(statements.lock(conn, task_ids, organization_id=organization_id)))


def renew_leases(
    conn: Connection, attempts: Sequence[Attempt], *, lease_seconds: float
) -> set[uuid.UUID]:
    """Extend the leases of runs still current (not a move: the status stays
    `running`); returns the tasks whose run is still current."""
    pairs = [(a.task_id, a.number) for a in attempts]
    return statements.renew_leases(conn, pairs, lease=lease_seconds)


def hold_expired_runs(conn: Connection, *, batch: int, hold_seconds: float) -> list[TaskRecord]:
    """Runs whose worker stopped renewing their lease, oldest first, held for
    ``hold_seconds`` so that other sweepers skip them while this one decides."""
    return statements.hold_expired(conn, batch=batch, hold=hold_seconds)


def count_recovery_failures(
    conn: Connection, errors: Mapping[uuid.UUID, str], *, action: str, actor: str
) -> dict[uuid.UUID, int]:
    """One more failed recovery of each task (not a move: the status stays),
    logged with its error; returns the failures in a row each task has now."""
    return statements.count_recovery_failures(conn, errors, action=action, actor=actor)


def hold_runs(
    conn: Connection, task_ids: Sequence[uuid.UUID], *, hold_seconds: float
) -> list[TaskRecord]:
    """Like :func:`hold_expired_runs`, for named runs (those still expired)."""
    return statements.hold_named(conn, task_ids, hold=hold_seconds)


def restart_backoffs(conn: Connection) -> int:
    """The broker lost its messages: every waiting task may be published again
    now, whatever its backoff (not a move: no status changes)."""
    return statements.restart_backoffs(conn)


def needs_transaction(move: Move) -> bool:
    """Whether the move takes more than one statement (and so a transaction)."""
    match move:
        case Finish():
            return any(r.attempt.is_step for r in move.results)
        case Claim():
            return move.max_running > 0  # the share's lock, the claim, the rest's wait
        case Create() | MarkQueued() | PublishFailed() | Republish():
            return False
        case Retry() | HandBack() | Release():  # runs back to their queues
            return False
        case _:
            return True


def apply(conn: Connection, move: Move, *, locked: Locked | None = None) -> Applied:
    """Apply ``move`` on ``conn``: one statement, or several in the caller's transaction."""
    held = locked or Locked()
    match move:
        case Create():
            return _create(conn, move)
        case MarkQueued():
            return _named(statements.mark_queued(conn, move.task_ids, actor=move.actor))
        case PublishFailed():
            return _named(statements.publish_failed(conn, move.task_ids, actor=move.actor))
        case Republish():
            published = statements.republish(
                conn,
                move.task_ids,
                move.deferred,
                after=move.after_seconds,
                most=move.max_seconds,
                actor=move.actor,
            )
            return Applied(moved=published)
        case Claim():
            return _claim(conn, move)
        case Finish():
            return _finish(conn, move, held)
        case Retry():
            return _retry(conn, move)
        case HandBack():
            handed = statements.hand_back(conn, worker_prefix=move.worker_prefix, actor=move.actor)
            return _named(handed, publish=[Publish(t) for t in handed])
        case Release():
            rows = [{"id": a.task_id, "attempt": a.number} for a in move.attempts]
            released = statements.release(conn, rows, actor=move.actor)
            return _named(released, publish=[Publish(t) for t in released])
        case RecoverLease():
            return _recover(conn, move, held)
        case QueueTimeout():
            return _queue_timeout(conn, move, held)
        case Unserved():
            return _unserved(conn, move, held)
        case FailRecovery():
            return _fail_recovery(conn, move, held)
        case StartFlow():
            return _start_flows(conn, move, held)
        case EndFlow():
            _lock(conn, held, [e.flow_id for e in move.ends])
            ended = flow_engine.end_flows(conn, move)
            return _named(ended, publish=_ended(conn, ended, actor=move.actor))
        case Cancel():
            return _cancel(conn, move, held)
        case Update():
            return _update(conn, move, held)
    raise TypeError(f"not a move: {move!r}")


def _named(tasks: Iterable[TaskRecord], *, publish: Iterable[Publish] = ()) -> Applied:
    changed = {t.id: t for t in tasks}
    return Applied(tasks=changed, publish=tuple(publish), moved=len(changed))


def _lock(conn: Connection, held: Locked, ids: Iterable[uuid.UUID]) -> None:
    missing = sorted(set(ids) - held.ids)
    if missing:
        statements.lock(conn, missing)


def _create(conn: Connection, move: Create) -> Applied:
    rows = [task.columns() for task in move.tasks]
    stateful = [task.id for task in move.tasks if task.spec.stateful]
    created = statements.create(conn, rows, stateful, actor=move.actor, queued_by=move.queued_by)
    waiting = (Status.CREATED, Status.QUEUED)  # a new `queued` one is stored so to be published
    return _named(created, publish=[Publish(t) for t in created if t.status in waiting])


def _ended(conn: Connection, ended: Sequence[Ended], *, actor: str) -> list[Publish]:
    """Fan in for tasks a move ended, but not for those whose parent ended in
    the same move (a cancelled subtree: its Flows end with it)."""
    moved = {e.id for e in ended}
    return flow_engine.fan_in(
        conn,
        [e for e in ended if is_terminal(Status(e.status)) and e.parent_id not in moved],
        actor=actor,
    )


def _claim(conn: Connection, move: Claim) -> Applied:
    """Claim the tasks; with a running limit, under the lock of each task's
    (organization, queue), and the tasks with no room left wait their turn."""
    fair = move.max_running > 0
    if fair:
        statements.lock_shares(conn, move.task_ids)
    claimed = statements.claim(
        conn,
        move.task_ids,
        worker=move.worker,
        lease=move.lease_seconds,
        actor=move.actor,
        queue=move.queue,
        prefix=move.prefix,
        max_running=move.max_running,
    )
    if not fair:
        return _named(claimed)
    taken = {t.id for t in claimed}
    waiting = statements.wait_turn(
        conn,
        [i for i in move.task_ids if i not in taken],
        queue=move.queue,
        prefix=move.prefix,
        base=move.wait_seconds,
    )
    return _named(claimed, publish=[Publish(t, countdown=wait) for t, wait in waiting])


def _finish(conn: Connection, move: Finish, held: Locked) -> Applied:
    _lock(conn, held, [r.attempt.task_id for r in move.results if r.attempt.is_step])
    rows = [
        {
            "id": r.attempt.task_id,
            "attempt": r.attempt.number,
            "status": r.outcome.status,
            "output": r.outcome.output,
            "errors": r.outcome.errors,
            "detail": {"attempt": r.attempt.number, **(r.outcome.detail or {})},
        }
        for r in move.results
    ]
    finished = statements.finish(conn, rows, actor=move.actor)
    return _named(finished, publish=_ended(conn, finished, actor=move.actor))


def _retry(conn: Connection, move: Retry) -> Applied:
    rows = [
        {
            "id": r.attempt.task_id,
            "attempt": r.attempt.number,
            "errors": r.outcome.errors,
            "delay": r.delay,
            "detail": {"retry": True, "attempt": r.attempt.number, "delay": round(r.delay, 3)}
            | (r.outcome.detail or {}),
        }
        for r in move.retries
    ]
    queued = statements.retry(conn, rows, actor=move.actor)
    delays = {r.attempt.task_id: r.delay for r in move.retries}
    return _named(queued, publish=[Publish(t, countdown=delays[t.id]) for t in queued])


def _recover(conn: Connection, move: RecoverLease, held: Locked) -> Applied:
    """Another attempt while attempts are left, else ``worker_lost``."""
    again = [e for e in move.expired if e.attempt.number < e.max_attempts]
    lost = [e for e in move.expired if e.attempt.number >= e.max_attempts]
    _lock(conn, held, [e.attempt.task_id for e in lost if e.attempt.is_step])
    requeued = []
    if again:
        runs = [
            {
                "id": e.attempt.task_id,
                "attempt": e.attempt.number,
                "lease": e.lease,
                "decide_by": e.decide_by,
            }
            for e in again
        ]
        requeued = statements.requeue_lost(conn, runs, actor=move.actor)
    failed: list[TaskRecord] = []
    if lost:
        rows = [
            {
                "id": e.attempt.task_id,
                "attempt": e.attempt.number,
                "status": Status.FAILED,
                "output": None,
                "errors": [
                    {
                        "code": WORKER_LOST,
                        "message": f"the worker running attempt {e.attempt.number} of "
                        f"{e.max_attempts} stopped (no heartbeat)",
                    }
                ],
                "detail": {"attempt": e.attempt.number, "reason": WORKER_LOST},
                "lease": e.lease,
                "decide_by": e.decide_by,
            }
            for e in lost
        ]
        failed = statements.finish(conn, rows, actor=move.actor, lost=True)
    spawned = _ended(conn, failed, actor=move.actor)
    return _named([*requeued, *failed], publish=[*(Publish(t) for t in requeued), *spawned])


def _queue_timeout(conn: Connection, move: QueueTimeout, held: Locked) -> Applied:
    _lock(conn, held, move.task_ids)
    errors = [
        {"code": QUEUE_TIMEOUT, "message": "no worker took the task within its queueTimeoutSeconds"}
    ]
    failed = statements.queue_timeout(conn, move.task_ids, errors, actor=move.actor)
    return Applied(publish=tuple(_ended(conn, failed, actor=move.actor)), moved=len(failed))


def _unserved(conn: Connection, move: Unserved, held: Locked) -> Applied:
    _lock(conn, held, move.task_ids)
    errors = [{"code": UNKNOWN_KIND, "message": move.message}]
    failed = statements.unserved(
        conn,
        move.task_ids,
        errors,
        queue=move.queue,
        timeout=move.timeout_seconds,
        actor=move.actor,
    )
    return Applied(publish=tuple(_ended(conn, failed, actor=move.actor)), moved=len(failed))


def _fail_recovery(conn: Connection, move: FailRecovery, held: Locked) -> Applied:
    _lock(conn, held, [t.task_id for t in move.tasks if t.is_step])
    rows = [
        {
            "id": t.task_id,
            "lease": t.lease,
            "errors": [
                {
                    "code": RECOVERY_FAILED,
                    "message": f"the sweeper failed {move.max_failures} times in a row to "
                    f"{t.action.replace('_', ' ')} the task; last error: {t.error}",
                }
            ],
            "detail": {"reason": RECOVERY_FAILED, "action": t.action},
        }
        for t in move.tasks
    ]
    failed = statements.fail_recovery(conn, rows, max_failures=move.max_failures, actor=move.actor)
    return Applied(publish=tuple(_ended(conn, failed, actor=move.actor)), moved=len(failed))


def _start_flows(conn: Connection, move: StartFlow, held: Locked) -> Applied:
    """Flows with steps wait on them, the first ones spawned; a Flow without
    steps completes at once (and, if it is a step itself, fans in)."""
    _lock(conn, held, [s.attempt.task_id for s in move.starts])
    with_steps = {s.attempt.task_id: s for s in move.starts if s.steps}
    waiting = []
    publish: list[Publish] = []
    if with_steps:
        rows = [
            {"id": s.attempt.task_id, "attempt": s.attempt.number, "open_steps": len(s.steps)}
            for s in with_steps.values()
        ]
        waiting = flow_statements.start_flows(conn, rows, actor=move.actor)
        spawned = _spawn_first_steps(conn, waiting, with_steps, actor=move.actor)
        publish += spawned.publish
        if spawned.refused:  # a first step's input too large: the Flow fails at once
            ends = tuple(FlowEnd(f, Status.FAILED, errors=e) for f, e in spawned.refused.items())
            failed = flow_engine.end_flows(conn, EndFlow(ends, actor=move.actor))
            publish += _ended(conn, failed, actor=move.actor)
            waiting = [*(w for w in waiting if w.id not in spawned.refused), *failed]
    empty = [s.attempt for s in move.starts if not s.steps]
    done = flow_statements.complete_empty_flows(conn, empty, actor=move.actor) if empty else []
    publish += _ended(conn, done, actor=move.actor)
    return _named([*waiting, *done], publish=publish)


def _spawn_first_steps(
    conn: Connection, waiting: Sequence[TaskRecord], starts: dict[uuid.UUID, FlowStart], *,
    actor: str,
) -> flow_engine.Spawned:  # fmt: skip
    """Store each started Flow's steps (with who waits on whom) and spawn those
    that wait on nothing, for every Flow at once."""
    steps_rows: list[dict[str, object]] = []
    events: list[dict[str, object]] = []
    ready: dict[uuid.UUID, tuple[ParentFlow, Sequence[Step]]] = {}
    for flow in waiting:
        steps = starts[flow.id].steps
        dependents: dict[str, list[str]] = {s.id: [] for s in steps}
        for step in steps:
            for dep in set(step.after):
                dependents[dep].append(step.id)
        steps_rows += [
            {"flow_id": flow.id, "step_id": s.id, "spec": s.to_json(),
             "dependents": sorted(dependents[s.id]), "pending": len(set(s.after))}
            for s in steps
        ]  # fmt: skip
        roots = [s for s in steps if not s.after]
        events.append({"task_id": flow.id, "detail": {"steps": [s.id for s in roots]}})
        ready[flow.id] = (ParentFlow.of(flow), roots)
    flow_statements.store_steps(conn, steps_rows, events, actor=actor)
    inputs = {flow.id: flow.input for flow in waiting}
    return flow_engine.spawn(conn, ready, actor=actor, inputs=inputs)


def _cancel(conn: Connection, move: Cancel, held: Locked) -> Applied:
    _lock(conn, held, move.task_ids)
    cancelled = statements.cancel(
        conn, move.task_ids, actor=move.actor, organization_id=move.organization_id
    )
    return Applied(publish=tuple(_ended(conn, cancelled, actor=move.actor)), moved=len(cancelled))


def _update(conn: Connection, move: Update, held: Locked) -> Applied:
    _lock(conn, held, [c.task_id for c in move.changes])
    rows = []
    for change in move.changes:
        status = change.status
        sources = sources_for(MoveKind.SET_STATUS, status) if status is not None else frozenset()
        rows.append(
            {
                **dict(change.fields),
                "id": change.task_id,
                "fields": sorted(change.fields),
                "status": status,
                "sources": sorted(sources),
            }
        )
    changed = statements.update(conn, rows, actor=move.actor)
    if len(changed) != len(move.changes):
        raise InvalidTransition("a task changed status while it was being updated; retry")
    ended = [task for task, before in changed if task.status is not before]
    requeued = {c.task_id for c in move.changes if c.requeue}
    moved = [
        _republish(task)
        for task, _ in changed
        if task.id in requeued and task.status in (Status.CREATED, Status.QUEUED)
    ]
    return _named(
        [task for task, _ in changed], publish=[*moved, *_ended(conn, ended, actor=move.actor)]
    )


def _republish(task: TaskRecord) -> Publish:
    """A waiting task on its new queue, no sooner than a retry's backoff allows."""
    wait = None
    if task.available_at is not None:
        wait = (task.available_at - datetime.now(UTC)).total_seconds()
    return Publish(task, countdown=wait if wait is not None and wait > 0 else None)
