"""The lifecycle engine on real PostgreSQL: the table of moves, moves in sets,
the attempt fence, fan-in from each of its routes, and the races it closes."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from tasks_core.errors import Conflict, InvalidTransition, ValidationFailed
from tasks_core.flow_definitions import Limits, Step
from tasks_core.lifecycle.engine import apply, lock
from tasks_core.lifecycle.moves import (
    Applied,
    Attempt,
    Cancel,
    Change,
    Claim,
    Create,
    EndFlow,
    Expired,
    FailRecovery,
    Finish,
    Finished,
    FlowEnd,
    FlowStart,
    HandBack,
    MarkQueued,
    Move,
    Outcome,
    QueueTimeout,
    RecoverLease,
    Release,
    Republish,
    Retried,
    Retry,
    StartFlow,
    Unrecoverable,
    Unserved,
    Update,
)
from tasks_core.records import Caller
from tasks_core.recovery import recover_expired_leases
from tasks_core.status import RULES, MoveKind, Status, can_move
from tasks_core.store import ATTEMPTS, Store
from tasks_core.task import TaskRecord, TaskSpec
from tasks_core.usecases.cancel import cancel_task
from tasks_core.usecases.create import create_task, new_task
from tasks_core.usecases.update import update_task
from tasks_core.worker_protocol import claim_task, finish_task, start_flow_run
from tests.support.api import OrgClient, error_of, issue_key

ACTOR = "system:test"
WORKER = "node-1:7"


@pytest.fixture
def caller(engine: Engine) -> Caller:
    _, key_id, org_id = issue_key(engine, "acme")
    return Caller(organization_id=uuid.UUID(org_id), key_id=uuid.UUID(key_id))


# --- Putting tasks where a test needs them ------------------------------------------------


def make(conn: Connection, caller: Caller, count: int = 1, **spec: Any) -> list[TaskRecord]:
    """``count`` new tasks in one Create move (``status`` among the spec)."""
    spec.setdefault("kind", "default")
    if spec["kind"] == "Flow":
        spec.setdefault("params", {"steps": []})
    news = tuple(new_task(caller, TaskSpec(**spec), limits=Limits()) for _ in range(count))
    created = apply(conn, Create(news, actor=caller.actor)).tasks
    assert len(created) == count
    return [created[n.id] for n in news]


def in_status(conn: Connection, caller: Caller, status: Status, count: int = 1,
              **spec: Any) -> list[TaskRecord]:  # fmt: skip
    """Tasks brought to ``status`` the way the service brings them there."""
    if status is Status.QUEUED:
        ids = tuple(t.id for t in make(conn, caller, count, **spec))
        return list(apply(conn, MarkQueued(ids, actor=ACTOR)).tasks.values())
    if status is Status.RUNNING:
        ids = tuple(t.id for t in make(conn, caller, count, **spec))
        claimed = apply(conn, Claim(ids, worker=WORKER, lease_seconds=30)).tasks
        return [claimed[i] for i in ids]
    return make(conn, caller, count, status=status, **spec)


def reload(conn: Connection, task: TaskRecord) -> TaskRecord:
    row = conn.execute(text("SELECT * FROM tasks WHERE id = :id"), {"id": task.id}).mappings()
    return TaskRecord.from_row(row.one())


def events(conn: Connection, task_id: uuid.UUID) -> list[tuple[Any, ...]]:
    rows = conn.execute(
        text(
            "SELECT type, from_status, to_status, actor, detail FROM task_events "
            "WHERE task_id = :id ORDER BY id"
        ),
        {"id": task_id},
    )
    return [tuple(r) for r in rows]


def one_step(step_id: str = "s", **fields: Any) -> Step:
    return Step(id=step_id, kind="default", after=(), **fields)


def started_flows(
    conn: Connection, caller: Caller, count: int, steps: Sequence[Step]
) -> list[TaskRecord]:
    """Flows claimed and started with ``steps`` (their first steps spawned)."""
    flows = in_status(conn, caller, Status.RUNNING, count, kind="Flow")
    starts = tuple(FlowStart(Attempt.of(f), tuple(steps)) for f in flows)
    waiting = apply(conn, StartFlow(starts, actor=ACTOR)).tasks
    return [waiting[f.id] for f in flows]


def children(conn: Connection, flow_id: uuid.UUID) -> list[TaskRecord]:
    rows = conn.execute(
        text("SELECT * FROM tasks WHERE parent_id = :f ORDER BY id"), {"f": flow_id}
    ).mappings()
    return [TaskRecord.from_row(r) for r in rows]


# --- Every allowed and forbidden move of the table -------------------------------------------

# The status each kind of move leads to in the test below.
TARGETS = {
    MoveKind.MARK_QUEUED: Status.QUEUED,
    MoveKind.REPUBLISH: Status.QUEUED,
    MoveKind.CLAIM: Status.RUNNING,
    MoveKind.FINISH: Status.COMPLETED,
    MoveKind.RETRY: Status.QUEUED,
    MoveKind.HAND_BACK: Status.QUEUED,
    MoveKind.RELEASE: Status.QUEUED,
    MoveKind.RECOVER_LEASE: Status.QUEUED,
    MoveKind.QUEUE_TIMEOUT: Status.FAILED,
    MoveKind.UNSERVED: Status.FAILED,
    MoveKind.RECOVERY_FAILED: Status.FAILED,
    MoveKind.START_FLOW: Status.WAITING,
    MoveKind.END_FLOW: Status.COMPLETED,
    MoveKind.CANCEL: Status.CANCELLED,
}


def move_of(kind: MoveKind, caller: Caller, tasks: Sequence[TaskRecord]) -> Move:
    """A move of ``kind`` of every one of ``tasks``, whatever their status."""
    ids = tuple(t.id for t in tasks)
    done = Outcome(Status.COMPLETED, output={"ok": True})
    failed = Outcome(Status.FAILED, errors=[{"code": "x", "message": "y"}])
    moves: dict[MoveKind, Callable[[], Move]] = {
        MoveKind.MARK_QUEUED: lambda: MarkQueued(ids, actor=ACTOR),
        MoveKind.REPUBLISH: lambda: Republish(ids, actor=ACTOR),
        MoveKind.CLAIM: lambda: Claim(ids, worker=WORKER, lease_seconds=30),
        MoveKind.FINISH: lambda: Finish(
            tuple(Finished(Attempt.of(t), done) for t in tasks), actor=ACTOR
        ),
        MoveKind.RETRY: lambda: Retry(
            tuple(Retried(Attempt.of(t), failed, delay=0) for t in tasks), actor=ACTOR
        ),
        MoveKind.HAND_BACK: lambda: HandBack(WORKER.split(":")[0] + ":", actor=ACTOR),
        MoveKind.RELEASE: lambda: Release(tuple(Attempt.of(t) for t in tasks), actor=ACTOR),
        MoveKind.RECOVER_LEASE: lambda: RecoverLease(
            tuple(Expired(Attempt.of(t), 3, t.lease_expires_at) for t in tasks), actor=ACTOR
        ),
        MoveKind.QUEUE_TIMEOUT: lambda: QueueTimeout(ids, actor=ACTOR),
        MoveKind.UNSERVED: lambda: Unserved("tasks.Flow", ids, 60, "nobody", actor=ACTOR),
        MoveKind.RECOVERY_FAILED: lambda: FailRecovery(
            tuple(Unrecoverable(t.id, t.lease_expires_at, "republish", "x") for t in tasks),
            max_failures=0,
            actor=ACTOR,
        ),
        MoveKind.START_FLOW: lambda: StartFlow(
            tuple(FlowStart(Attempt.of(t), (one_step(),)) for t in tasks), actor=ACTOR
        ),
        MoveKind.END_FLOW: lambda: EndFlow(
            tuple(FlowEnd(t.id, Status.COMPLETED, output={}) for t in tasks), actor=ACTOR
        ),
        MoveKind.CANCEL: lambda: Cancel(caller.organization_id, ids, actor=ACTOR),
    }
    return moves[kind]()


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_each_move_applies_from_exactly_the_sources_of_its_rule(
    kind: MoveKind, engine: Engine, caller: Caller
) -> None:
    """One task in every status; the move of all of them at once moves those
    its rule allows, logs each move, and leaves the others as they were."""
    with engine.begin() as conn:
        tasks = [
            in_status(conn, caller, status, kind="Flow", queue_timeout_seconds=1)[0]
            for status in Status
        ]
        # Every task on the worker being handed back, and waiting long past its timeout.
        conn.execute(
            text(
                "UPDATE tasks SET worker = :w, created_at = now() - interval '1 hour' "
                "WHERE id = ANY(:ids)"
            ),
            {"w": WORKER, "ids": [t.id for t in tasks]},
        )
        logged = {t.id: len(events(conn, t.id)) for t in tasks}
        apply(conn, move_of(kind, caller, tasks))
        for before in tasks:
            after = reload(conn, before)
            new_events = events(conn, before.id)[logged[before.id] :]
            allowed = before.status in RULES[kind].sources
            if allowed:
                assert after.status is TARGETS[kind], (before.status, after.status)
                recorded = {(e[0], e[1], e[2]) for e in new_events}
                expected_type = "republished" if kind is MoveKind.REPUBLISH else "status"
                from_status = None if kind is MoveKind.REPUBLISH else before.status.value
                assert (expected_type, from_status, TARGETS[kind].value) in recorded
            else:
                assert after.status is before.status, (kind, before.status)
                assert [e for e in new_events if e[0] in ("status", "republished")] == []


def test_a_put_moves_along_the_graph_and_nowhere_else(engine: Engine, caller: Caller) -> None:
    for source in Status:
        for target in Status:
            if target in (source, Status.QUEUED):
                continue  # staying put is no move; `queued` only the service sets
            with engine.connect() as conn, conn.begin():
                task = in_status(conn, caller, source)[0]
                held = lock(conn, caller.organization_id, [task.id])
                update = Update((Change(task.id, {}, target),), actor=ACTOR)
                if can_move(source, target):
                    assert apply(conn, update, locked=held).tasks[task.id].status is target
                    assert events(conn, task.id)[-1][:3] == ("status", source.value, target.value)
                else:
                    with pytest.raises(InvalidTransition):
                        apply(conn, update, locked=held)


# --- Moves in sets: one task and a hundred cost the same statements --------------------------

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def signature(conn: Connection, task: TaskRecord) -> tuple[Any, ...]:
    """What a move made of a task, ids and times left out: its fields and its log."""
    now = reload(conn, task)
    log = [
        (e[0], e[1], e[2], e[3], UUID_TEXT.sub("<id>", str(e[4]))) for e in events(conn, task.id)
    ]
    shape = (now.status, now.attempt, now.output, now.errors, now.worker, now.open_steps)
    return (shape, log, len(children(conn, task.id)))


@contextmanager
def counting(conn: Connection) -> Iterator[list[str]]:
    """The SQL statements run on ``conn`` meanwhile."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(conn, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(conn, "before_cursor_execute", count)


Scenario = Callable[[Connection, Caller, int], tuple[list[TaskRecord], Move]]


def _running(conn: Connection, caller: Caller, n: int, **spec: Any) -> list[TaskRecord]:
    return in_status(conn, caller, Status.RUNNING, n, **spec)


def _finish_steps(steps: Sequence[Step]) -> Scenario:
    """Flows started with ``steps``; the move finishes the first step of each."""

    def scenario(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
        flows = started_flows(conn, caller, n, steps)
        runs = [children(conn, f.id)[0] for f in flows]
        claimed = apply(conn, Claim(tuple(r.id for r in runs), worker=WORKER, lease_seconds=30))
        done = Outcome(Status.COMPLETED, output={"n": 1})
        results = tuple(Finished(Attempt.of(claimed.tasks[r.id]), done) for r in runs)
        return flows, Finish(results, actor=ACTOR)

    return scenario


def _update(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
    tasks = _running(conn, caller, n)
    lock(conn, caller.organization_id, [t.id for t in tasks])
    changes = tuple(Change(t.id, {"title": "done", "output": [1]}, Status.COMPLETED) for t in tasks)
    return tasks, Update(changes, actor=ACTOR)


def _cancel(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
    roots = make(conn, caller, n)
    for root in roots:
        make(conn, caller, 1, parent_id=root.id)
    return roots, Cancel(caller.organization_id, tuple(r.id for r in roots), actor=ACTOR)


def _lost(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
    runs = _running(conn, caller, n)
    return runs, RecoverLease(
        tuple(Expired(Attempt.of(r), 1, r.lease_expires_at) for r in runs), actor=ACTOR
    )


def _queue_timeout(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
    tasks = make(conn, caller, n, queue_timeout_seconds=1)
    conn.execute(
        text("UPDATE tasks SET created_at = now() - interval '1 hour' WHERE id = ANY(:ids)"),
        {"ids": [t.id for t in tasks]},
    )
    return tasks, QueueTimeout(tuple(t.id for t in tasks), actor=ACTOR)


def _unserved(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
    tasks, _ = _queue_timeout(conn, caller, n)
    return tasks, Unserved("tasks.default", tuple(t.id for t in tasks), 60, "x", actor=ACTOR)


def _end_flow(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
    flows = started_flows(conn, caller, n, [one_step()])
    ends = tuple(
        FlowEnd(f.id, Status.FAILED, errors=[{"code": "x", "message": "y"}]) for f in flows
    )
    return flows, EndFlow(ends, actor=ACTOR)


def _create_children(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
    """New tasks, stateful, under a parent: the tasks to compare are the move's own."""
    parent = make(conn, caller)[0]
    spec = TaskSpec(kind="default", parent_id=parent.id, stateful=True)
    news = tuple(new_task(caller, spec, limits=Limits()) for _ in range(n))
    return [], Create(news, actor=ACTOR)


def _start_flow(conn: Connection, caller: Caller, n: int) -> tuple[list[TaskRecord], Move]:
    flows = _running(conn, caller, n, kind="Flow", input={"a": 1})
    steps = (
        one_step("a", input={"x": {"$ref": "input.a"}}),
        Step(id="b", kind="default", after=("a",)),
    )
    return flows, StartFlow(tuple(FlowStart(Attempt.of(f), steps) for f in flows), actor=ACTOR)


SCENARIOS: dict[str, Scenario] = {
    "create children": _create_children,
    "mark queued": lambda c, o, n: (
        ts := make(c, o, n),
        MarkQueued(tuple(t.id for t in ts), actor=ACTOR),
    ),
    "republish": lambda c, o, n: (
        ts := make(c, o, n),
        Republish(tuple(t.id for t in ts), actor=ACTOR),
    ),
    "claim": lambda c, o, n: (
        ts := in_status(c, o, Status.QUEUED, n),
        Claim(tuple(t.id for t in ts), worker=WORKER, lease_seconds=30),
    ),
    "finish": lambda c, o, n: (
        ts := _running(c, o, n),
        Finish(
            tuple(Finished(Attempt.of(t), Outcome(Status.COMPLETED, output=1)) for t in ts),
            actor=ACTOR,
        ),
    ),
    "retry": lambda c, o, n: (
        ts := _running(c, o, n, max_attempts=3),
        Retry(
            tuple(Retried(Attempt.of(t), Outcome(Status.FAILED), delay=1.5) for t in ts),
            actor=ACTOR,
        ),
    ),
    "hand back": lambda c, o, n: (_running(c, o, n), HandBack("node-1:", actor=ACTOR)),
    "recover lease, another attempt": lambda c, o, n: (
        ts := _running(c, o, n, max_attempts=2),
        RecoverLease(tuple(Expired(Attempt.of(t), 2, t.lease_expires_at) for t in ts), actor=ACTOR),
    ),
    "recover lease, worker lost": _lost,
    "queue timeout": _queue_timeout,
    "unserved": _unserved,
    "start flow": _start_flow,
    "end flow (cancels its open steps)": _end_flow,
    "cancel a subtree": _cancel,
    "update (a PUT)": _update,
    "finish the only step (the Flow ends)": _finish_steps([one_step()]),
    "finish one of two parallel steps": _finish_steps([one_step("a"), one_step("b")]),
    "finish a step another waits on": _finish_steps(
        [
            one_step("a"),
            Step(
                id="b", kind="default", after=("a",), input={"from": {"$ref": "steps.a.output.n"}}
            ),
        ]
    ),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_move_of_a_hundred_tasks_does_what_it_does_to_one_in_as_many_statements(
    name: str, engine: Engine, caller: Caller
) -> None:
    results: dict[int, tuple[int, list[tuple[Any, ...]]]] = {}
    for n in (1, 100):
        with engine.connect() as conn, conn.begin():
            tasks, move = SCENARIOS[name](conn, caller, n)
            with counting(conn) as statements:
                applied = apply(conn, move)
            checked = tasks or list(applied.tasks.values())
            assert len(checked) == n
            results[n] = (len(statements), [signature(conn, t) for t in checked])
    (one_count, [one]), (many_count, many) = results[1], results[100]
    assert many_count == one_count, f"{name}: {one_count} statements for 1, {many_count} for 100"
    assert all(s == one for s in many), name
    assert one_count <= 8, f"{name}: {one_count} statements"


# --- The attempt fence --------------------------------------------------------------------------


@pytest.mark.parametrize("max_attempts", [1, 2], ids=["worker lost", "another attempt"])
def test_a_lease_recovery_that_reaches_postgres_after_its_deadline_changes_nothing(
    max_attempts: int, engine: Engine, caller: Caller
) -> None:
    with engine.begin() as conn:
        late, in_time = _running(conn, caller, 2, max_attempts=max_attempts)
        now: datetime = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        deadlines = {late.id: now - timedelta(seconds=1), in_time.id: now + timedelta(minutes=1)}
        move = RecoverLease(
            tuple(Expired.of(t, decide_by=deadlines[t.id]) for t in (late, in_time)), actor=ACTOR
        )

        assert set(apply(conn, move).tasks) == {in_time.id}
        assert reload(conn, late).status is Status.RUNNING
        assert reload(conn, in_time).status is not Status.RUNNING


def test_a_stale_attempt_can_not_finish_retry_recover_or_start_a_newer_run(
    engine: Engine, caller: Caller
) -> None:
    with engine.begin() as conn:
        first = _running(conn, caller, 1, max_attempts=3, kind="Flow")[0]
        failed = Outcome(Status.FAILED, errors=[{"code": "x", "message": "first"}])
        apply(conn, Retry((Retried(Attempt.of(first), failed, delay=0),), actor=ACTOR))
        second = apply(conn, Claim((first.id,), worker=WORKER, lease_seconds=30)).tasks[first.id]
        assert (first.attempt, second.attempt) == (1, 2)
        stale = Attempt.of(first)
        moves: list[Move] = [
            Finish((Finished(stale, Outcome(Status.COMPLETED, output="stale")),), actor=ACTOR),
            Retry((Retried(stale, failed, delay=0),), actor=ACTOR),
            RecoverLease((Expired(stale, 3, first.lease_expires_at),), actor=ACTOR),
            RecoverLease((Expired(stale, 1, first.lease_expires_at),), actor=ACTOR),
            StartFlow((FlowStart(stale, (one_step(),)),), actor=ACTOR),
        ]
        for move in moves:
            assert apply(conn, move).tasks == {}, move
        now = reload(conn, first)
        assert (now.status, now.attempt, now.output, children(conn, first.id)) == (
            Status.RUNNING, 2, None, [],
        )  # fmt: skip
        ignored = [e[4] for e in events(conn, first.id) if e[0] == "result_ignored"]
        assert ignored == [
            {"attempt": 1, "status": "completed"},
            {"attempt": 1, "status": "failed"},
        ]
        fresh = Finish((Finished(Attempt.of(second), Outcome(Status.COMPLETED)),), actor=ACTOR)
        assert apply(conn, fresh).tasks[first.id].status is Status.COMPLETED


# --- Fan-in from each route -----------------------------------------------------------------------


def _flow_with_steps(
    store: Store, caller: Caller, *step_ids: str
) -> tuple[TaskRecord, dict[str, TaskRecord]]:
    """A Flow claimed and started with parallel steps; its step tasks by step id."""
    steps = [{"id": s, "kind": "default"} for s in step_ids]
    flow = create_task(store, caller, TaskSpec(kind="Flow", params={"steps": steps},
                                               executor_id="nobody"))  # fmt: skip
    run = claim_task(store, flow.id, worker=WORKER)
    assert run is not None
    parsed = tuple(one_step(s) for s in step_ids)
    started = start_flow_run(store, run, list(parsed), worker=WORKER)
    assert started is not None and started.status is Status.WAITING
    with store.statement() as conn:
        return started, {c.flow_step_id or "": c for c in children(conn, flow.id)}


def _flow_now(store: Store, flow: TaskRecord) -> TaskRecord:
    with store.statement() as conn:
        return reload(conn, flow)


def test_a_worker_outcome_fans_in_and_ends_the_flow(store: Store, caller: Caller) -> None:
    flow, steps = _flow_with_steps(store, caller, "a")
    run = claim_task(store, steps["a"].id, worker=WORKER)
    assert run is not None
    finish_task(store, run, Outcome(Status.COMPLETED, output={"v": 1}), worker="w")
    after = _flow_now(store, flow)
    assert (after.status, after.output) == (Status.COMPLETED, {"a": {"v": 1}})


def test_the_sweeper_failing_a_lost_run_fans_in_and_fails_the_flow(
    store: Store, caller: Caller
) -> None:
    flow, steps = _flow_with_steps(store, caller, "a", "b")
    assert claim_task(store, steps["a"].id, worker=WORKER) is not None
    with store.statement() as conn:
        conn.execute(
            text("UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": steps["a"].id},
        )
    recovered = recover_expired_leases(store)
    assert (recovered["requeued"], recovered["lost"]) == (0, 1)
    after = _flow_now(store, flow)
    assert after.status is Status.FAILED
    assert after.errors[0]["code"] == "step_failed" and "worker_lost" in after.errors[0]["message"]
    with store.statement() as conn:
        assert reload(conn, steps["b"]).status is Status.CANCELLED  # the open step is cancelled


def test_a_put_ending_a_step_fans_in(store: Store, caller: Caller) -> None:
    flow, steps = _flow_with_steps(store, caller, "a", "b")
    update_task(store, caller, str(steps["a"].id), {"status": "completed", "output": 1})
    assert _flow_now(store, flow).open_steps == 1
    update_task(store, caller, str(steps["b"].id), {"status": "completed", "output": 2})
    after = _flow_now(store, flow)
    assert (after.status, after.output) == (Status.COMPLETED, {"a": 1, "b": 2})


def test_cancelling_a_step_fans_in_and_fails_the_flow(store: Store, caller: Caller) -> None:
    flow, steps = _flow_with_steps(store, caller, "a", "b")
    cancel_task(store, caller, str(steps["a"].id))
    after = _flow_now(store, flow)
    assert after.status is Status.FAILED
    assert after.errors == [{"code": "step_failed", "message": "step 'a' cancelled"}]


# --- A step can not be detached from its Flow --------------------------------------------------


def test_a_step_keeps_its_flow_as_parent_and_cancelling_it_ends_the_flow(
    acme: OrgClient, store: Store
) -> None:
    """The way it went wrong before: a step detached by a PUT, then cancelled,
    answered 500 and left its Flow waiting for ever."""
    created = acme.create(kind="Flow", executorId="nobody", params={"steps": [
        {"id": "nap", "kind": "CallAction", "targetId": "builtin/sleep", "input": {"seconds": 5}}
    ]})  # fmt: skip
    run = claim_task(store, uuid.UUID(created["id"]), worker=WORKER)
    assert run is not None
    assert start_flow_run(store, run, [one_step("nap")], worker=WORKER) is not None
    step = acme.get("/v1/tasks", params={"parentId": created["id"]}).json()["items"][0]
    assert claim_task(store, uuid.UUID(step["id"]), worker=WORKER) is not None

    refused = acme.put(f"/v1/tasks/{step['id']}", json={"parentId": None})
    assert "parentId" in error_of(refused, 422, "validation_error")
    elsewhere = acme.create()
    refused = acme.put(f"/v1/tasks/{step['id']}", json={"parentId": elsewhere["id"]})
    assert "parentId" in error_of(refused, 422, "validation_error")
    same = acme.put(f"/v1/tasks/{step['id']}", json={"parentId": created["id"], "title": "t"})
    assert same.status_code == 200, same.text  # its own parent again is no change

    assert acme.post(f"/v1/tasks/{step['id']}/cancel").status_code == 200
    flow = acme.get(f"/v1/tasks/{created['id']}", params={"depth": 0}).json()
    assert flow["status"] == "failed" and flow["errors"][0]["code"] == "step_failed"


def test_a_step_detached_before_the_rule_existed_is_cancelled_without_an_error(
    acme: OrgClient, store: Store, caller: Caller
) -> None:
    """Rows written before a step's parent was fixed: fan-in finds no Flow to
    count down and does nothing; it never fails on what a tenant made."""
    _, steps = _flow_with_steps(store, caller, "a")
    with store.statement() as conn:
        conn.execute(
            text("UPDATE tasks SET parent_id = NULL WHERE id = :id"), {"id": steps["a"].id}
        )
    response = acme.post(f"/v1/tasks/{steps['a'].id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


# --- Re-parenting races ---------------------------------------------------------------------------


def test_two_concurrent_puts_never_make_two_tasks_each_others_parent(
    store: Store, caller: Caller
) -> None:
    a = create_task(store, caller, TaskSpec(kind="default", status=Status.COMPLETED))
    b = create_task(store, caller, TaskSpec(kind="default", status=Status.COMPLETED))
    refused = 0
    for _ in range(50):
        for task in (a, b):
            update_task(store, caller, str(task.id), {"parent_id": None})
        barrier = threading.Barrier(2)

        def move(
            child: TaskRecord, parent: TaskRecord, barrier: threading.Barrier = barrier
        ) -> bool:
            barrier.wait()
            try:
                update_task(store, caller, str(child.id), {"parent_id": str(parent.id)})
            except ValidationFailed:
                return False
            return True

        with ThreadPoolExecutor(2) as pool:
            moved = list(pool.map(move, (a, b), (b, a)))
        with store.statement() as conn:
            parents = {t.id: reload(conn, t).parent_id for t in (a, b)}
        assert parents != {a.id: b.id, b.id: a.id}, "a cycle of parents"
        assert moved.count(True) == 1, moved
        refused += moved.count(False)
    assert refused == 50


# --- Collisions are run again --------------------------------------------------------------


def test_a_collision_is_run_again_a_bounded_number_of_times_then_is_a_conflict(
    store: Store,
) -> None:
    runs = []

    def always_collides(conn: Connection) -> None:
        runs.append(1)
        conn.execute(text(
            "DO $$ BEGIN RAISE EXCEPTION 'lost' USING ERRCODE = 'serialization_failure'; END $$"
        ))  # fmt: skip

    with pytest.raises(Conflict, match="retry"):
        store.atomic(always_collides)
    assert len(runs) == ATTEMPTS


def test_a_deadlock_is_rolled_back_and_run_again(store: Store, caller: Caller) -> None:
    """Two transactions lock two tasks in opposite orders; PostgreSQL aborts one
    as a deadlock, and the store runs it again instead of failing it."""
    with store.statement() as conn:
        x, y = make(conn, caller, 2)
    both_hold_one = threading.Barrier(2)
    runs = {"x": 0, "y": 0}

    def work(name: str, first: TaskRecord, second: TaskRecord) -> Callable[[Connection], Applied]:
        def run(conn: Connection) -> Applied:
            runs[name] += 1
            lock(conn, caller.organization_id, [first.id])
            if runs[name] == 1:
                both_hold_one.wait(timeout=10)
            lock(conn, caller.organization_id, [second.id])
            return apply(conn, Cancel(caller.organization_id, (first.id,), actor=ACTOR))

        return run

    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(store.atomic, [work("x", x, y), work("y", y, x)]))
    assert [a.moved for a in done] == [1, 1]
    assert sorted(runs.values()) == [1, 2]  # the deadlock's loser ran twice


def test_a_task_given_an_end_ahead_of_its_run_still_runs_and_ends_after_it_started(
    store: Store, caller: Caller
) -> None:
    past = datetime(97, 9, 15, tzinfo=UTC)  # an endedAt its creator gave, before any run
    task = create_task(store, caller, TaskSpec(kind="default", ended_at=past))
    run = claim_task(store, task.id, worker=WORKER)
    assert run is not None and run.status is Status.RUNNING  # no check violation
    assert run.ended_at is None and run.started_at is not None
    done = finish_task(store, run, Outcome(Status.COMPLETED), worker="w")
    assert done is not None and done.ended_at is not None
    assert done.started_at is not None and done.ended_at >= done.started_at
