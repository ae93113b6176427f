"""The Flow engine: spawning steps as child tasks and fanning in, exactly once.

Everything here runs inside a move's transaction, after the engine has
locked the tasks that move and every Flow they are steps of. A step's end is
then serialised with every other change to its Flow: the Flow's count of
open steps goes down once per step, a dependent step is spawned when its
last dependency ends (a unique index forbids spawning it twice), and the
step that closes the last one ends the Flow, once. A Flow that is itself a
step fans in one level up, in the same transaction. Children created by
hand (no ``flow_step_id``) are not steps and are never counted.

Each stage handles every ended step of the move at once: reading the Flows'
counters, counting down, spawning, ending Flows. The decision between them
(:func:`plan`) is pure.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection

from tasks_core.flow_definitions import Step, input_sizes, refs_in, resolve_refs, too_large_input
from tasks_core.ids import new_id
from tasks_core.json_sizes import object_size
from tasks_core.lifecycle import flow_statements, statements
from tasks_core.lifecycle.moves import STEP_FAILED, TOO_LARGE, EndFlow, FlowEnd, Publish
from tasks_core.status import Status
from tasks_core.storage.db import size_limits
from tasks_core.task import NewTask, TaskRecord, TaskSpec


class Ended(Protocol):
    """What fan-in needs of a task that just ended."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def parent_id(self) -> uuid.UUID | None: ...
    @property
    def flow_step_id(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def errors(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class ParentFlow:
    """The Flow a step belongs to, as fan-in reads it: what its children
    inherit and its counter, not its params (a large Flow's steps are there)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    author_id: str | None
    app_id: str | None
    state_id: uuid.UUID | None
    open_steps: int

    @classmethod
    def of(cls, task: TaskRecord) -> ParentFlow:
        return cls(
            task.id,
            task.organization_id,
            task.author_id,
            task.app_id,
            task.state_id,
            task.open_steps or 0,
        )


@dataclass(frozen=True, slots=True)
class StepEnd:
    """One ended step, with its Flow and its definition."""

    child_id: uuid.UUID
    step: Step
    dependents: tuple[str, ...]  # the steps that run after this one
    status: Status
    errors: Any
    flow: ParentFlow


@dataclass
class Plan:
    """What fan-in does for one batch of ended steps."""

    counts: dict[uuid.UUID, int] = field(default_factory=dict)  # Flow -> steps ended
    releases: dict[tuple[uuid.UUID, str], int] = field(default_factory=dict)  # dependencies ended
    events: list[tuple[uuid.UUID, dict[str, Any]]] = field(default_factory=list)  # fan_in lines
    ready: dict[uuid.UUID, list[Step]] = field(default_factory=dict)  # Flow -> steps to spawn
    flows: dict[uuid.UUID, ParentFlow] = field(default_factory=dict)
    complete: list[uuid.UUID] = field(default_factory=list)
    fail: dict[uuid.UUID, list[dict[str, str]]] = field(default_factory=dict)  # Flow -> errors


def plan(
    ends: Sequence[StepEnd], pending: Mapping[tuple[uuid.UUID, str], tuple[int, Step]]
) -> Plan:
    """Decide, for steps that ended (ordered by Flow, then child), what each
    Flow does: fail (a step failed without continueOnError; nothing more is
    spawned), or count down, spawn the steps now waiting on nothing, and
    complete when none is open. ``pending`` holds each dependent's count of
    dependencies not ended yet, and its definition."""
    result = Plan()
    by_flow: dict[uuid.UUID, list[StepEnd]] = defaultdict(list)
    for end in ends:
        by_flow[end.flow.id].append(end)
    for flow_id, flow_ends in by_flow.items():
        flow = flow_ends[0].flow
        result.flows[flow_id] = flow
        failing = next((e for e in flow_ends if _fails_flow(e)), None)
        if failing is not None:
            detail = {"step": failing.step.id, "status": failing.status.value, "fails_flow": True}
            result.events.append((flow_id, detail))
            result.fail[flow_id] = [_step_failed(failing)]
            continue
        _count_down(result, flow, flow_ends, pending)
    return result


def _fails_flow(end: StepEnd) -> bool:
    return end.status is not Status.COMPLETED and not end.step.continue_on_error


def _step_failed(end: StepEnd) -> dict[str, str]:
    """The Flow's error naming its failed (or cancelled) step and the cause."""
    first = end.errors[0] if isinstance(end.errors, list) and end.errors else None
    cause = first if isinstance(first, dict) else {"code": end.status.value, "message": ""}
    message = f"step {end.step.id!r} {end.status.value}"
    if cause.get("message") or cause.get("code") != end.status.value:
        message += f": {cause.get('code')}: {cause.get('message')}"
    return {"code": STEP_FAILED, "message": message}


def _count_down(
    result: Plan,
    flow: ParentFlow,
    ends: Sequence[StepEnd],
    pending: Mapping[tuple[uuid.UUID, str], tuple[int, Step]],
) -> None:
    """Steps end one after another: each lowers the open count and its
    dependents' pending counts; a dependent spawns on the end that frees it."""
    open_steps = flow.open_steps
    waiting = {key: count for key, (count, _) in pending.items() if key[0] == flow.id}
    ready: list[Step] = []
    for end in ends:
        open_steps -= 1
        freed = []
        for dependent in end.dependents:
            key = (flow.id, dependent)
            if key not in waiting:
                continue  # a definition out of step with its rows: never spawn blindly
            waiting[key] -= 1
            result.releases[key] = result.releases.get(key, 0) + 1
            if waiting[key] == 0:
                freed.append(pending[key][1])
        freed.sort(key=lambda s: s.id)
        ready += freed
        result.events.append(
            (
                flow.id,
                {
                    "step": end.step.id,
                    "status": end.status.value,
                    "open_steps": open_steps,
                    "spawned": [s.id for s in freed],
                },
            )
        )
    result.counts[flow.id] = len(ends)
    if ready:
        result.ready[flow.id] = ready
    if open_steps <= 0:
        result.complete.append(flow.id)


def fan_in(conn: Connection, ended: Iterable[Ended], *, actor: str) -> list[Publish]:
    """Account for tasks that just ended; those that are steps of a waiting
    Flow count down, spawn and end it, level after level up the Flow chain.
    Returns the steps spawned, to publish after commit."""
    publish: list[Publish] = []
    level = [e for e in ended if e.flow_step_id is not None and e.parent_id is not None]
    while level:
        ends = _step_ends(conn, level)
        if not ends:
            break
        decided = plan(ends, _pending(conn, ends))
        if decided.ready:  # spawned first, so that the fan_in lines say what was
            ready = {f: (decided.flows[f], steps) for f, steps in decided.ready.items()}
            spawned = spawn(conn, ready, actor=actor)
            publish += spawned.publish
            _refuse(decided, spawned.refused)
        _write_counts(conn, decided, actor=actor)
        flows = _end_flows(conn, decided, actor=actor)
        level = [f for f in flows if f.flow_step_id is not None and f.parent_id is not None]
    return publish


def _refuse(decided: Plan, refused: Mapping[uuid.UUID, list[dict[str, str]]]) -> None:
    """Flows whose ready steps were refused (an input too large) fail instead;
    their fan_in lines spawn nothing."""
    for flow_id, detail in decided.events:
        if flow_id in refused and detail.get("spawned"):
            detail["spawned"] = []
    decided.fail.update(refused)


def _step_ends(conn: Connection, level: Sequence[Ended]) -> list[StepEnd]:
    """The ended steps whose Flow still waits (others end nothing more: the
    Flow failed or was cancelled, or the task is no step of a Flow any more)."""
    by_id = {e.id: e for e in level}
    rows = flow_statements.fan_in_state(
        conn, [{"id": e.id, "parent_id": e.parent_id, "step": e.flow_step_id} for e in level]
    )
    return [
        StepEnd(
            child_id=r.child_id,
            step=Step.from_json(r.spec),
            dependents=tuple(r.dependents),
            status=Status(by_id[r.child_id].status),
            errors=by_id[r.child_id].errors,
            flow=ParentFlow(
                r.flow_id, r.organization_id, r.author_id, r.app_id, r.state_id, r.open_steps or 0
            ),
        )
        for r in rows
    ]


def _pending(
    conn: Connection, ends: Sequence[StepEnd]
) -> dict[tuple[uuid.UUID, str], tuple[int, Step]]:
    pairs = sorted({(e.flow.id, d) for e in ends for d in e.dependents})
    if not pairs:
        return {}
    return {
        (r.flow_id, r.step_id): (int(r.pending), Step.from_json(r.spec))
        for r in flow_statements.pending(conn, pairs)
    }


def _write_counts(conn: Connection, decided: Plan, *, actor: str) -> None:
    if not decided.events:
        return
    flow_statements.count_down(
        conn,
        counts=[{"id": f, "k": k} for f, k in decided.counts.items()],
        releases=[{"flow_id": f, "step_id": s, "k": k} for (f, s), k in decided.releases.items()],
        events=[{"ord": i, "task_id": f, "detail": d} for i, (f, d) in enumerate(decided.events)],
        actor=actor,
    )


def _end_flows(conn: Connection, decided: Plan, *, actor: str) -> list[TaskRecord]:
    """Complete the Flows with no open step (output: step id -> output) and
    fail those a step failed."""
    if not decided.complete and not decided.fail:
        return []
    outputs = flow_outputs(conn, decided.complete)
    limit = size_limits(conn).max_output_bytes
    ends = [_completed(f, outputs.get(f, {}), limit=limit) for f in decided.complete]
    ends += [FlowEnd(f, Status.FAILED, errors=errors) for f, errors in decided.fail.items()]
    return end_flows(conn, EndFlow(tuple(ends), actor=actor))


def _completed(flow_id: uuid.UUID, output: dict[str, Any], *, limit: int) -> FlowEnd:
    """A Flow whose steps all ended completes with their outputs, unless
    those would pass ``MAX_OUTPUT_BYTES`` (measured step by step, before the
    whole is serialised): then it fails ``too_large``."""
    size = object_size(output, stop_over=limit)
    if size <= limit:
        return FlowEnd(flow_id, Status.COMPLETED, output=output)
    message = f"the Flow's output would be at least {size:,} bytes, over MAX_OUTPUT_BYTES {limit:,}"
    return FlowEnd(flow_id, Status.FAILED, errors=[{"code": TOO_LARGE, "message": message}])


def end_flows(conn: Connection, move: EndFlow) -> list[TaskRecord]:
    """End Flows; everything still open under a failed one is cancelled (its
    steps' ends fan in to nothing: their Flow no longer waits)."""
    ended = flow_statements.end_flows(conn, move)
    failed = [f.id for f in ended if f.status is Status.FAILED]
    if failed:
        statements.cancel(conn, failed, actor=move.actor)
    return ended


def flow_outputs(
    conn: Connection, flow_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """Each Flow's output: step id -> output; a failed step (continueOnError)
    -> ``{"status": "failed", "errors": [...]}``."""
    if not flow_ids:
        return {}
    result: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
    for r in flow_statements.outputs(conn, flow_ids):
        result[r.flow_id][r.flow_step_id] = (
            r.output if r.status == Status.COMPLETED else {"status": r.status, "errors": r.errors}
        )
    return result


@dataclass(frozen=True, slots=True)
class Spawned:
    """What a spawn did: the step tasks to publish, and the Flows that must
    fail instead because a ready step's input would be too large (none of
    their steps is created)."""

    publish: list[Publish]
    refused: dict[uuid.UUID, list[dict[str, str]]]  # Flow -> its errors


def spawn(
    conn: Connection,
    ready: Mapping[uuid.UUID, tuple[ParentFlow, Sequence[Step]]],
    *,
    actor: str,
    inputs: Mapping[uuid.UUID, Any] | None = None,
) -> Spawned:
    """Create the child tasks of each Flow's ready steps, inputs resolved, all
    in one statement; they share their Flow's organization, author, app and
    state. ``inputs``: Flows' inputs the caller has read already. A step
    whose input would resolve over ``MAX_INPUT_BYTES`` is found before it is
    built: its Flow fails ``too_large`` instead."""
    known, outputs = _referenced(conn, ready, inputs or {})
    limit = size_limits(conn).max_input_bytes
    refused: dict[uuid.UUID, list[dict[str, str]]] = {}
    new: list[NewTask] = []
    for flow, steps in ready.values():
        error = _oversized(
            steps, flow_input=known.get(flow.id), outputs=outputs[flow.id], limit=limit
        )
        if error is not None:
            refused[flow.id] = [error]
            continue
        new += [
            _step_task(flow, step, flow_input=known.get(flow.id), outputs=outputs[flow.id])
            for step in steps
        ]
    created = (
        statements.create(conn, [t.columns() for t in new], [], actor=actor, trusted=True)
        if new
        else []
    )
    return Spawned([Publish(task) for task in created], refused)


def _referenced(
    conn: Connection,
    ready: Mapping[uuid.UUID, tuple[ParentFlow, Sequence[Step]]],
    inputs: Mapping[uuid.UUID, Any],
) -> tuple[dict[uuid.UUID, Any], dict[uuid.UUID, dict[str, Any]]]:
    """What the ready steps refer to, read in one statement: each Flow's
    input (unless in ``inputs``) and the outputs of the steps referred to."""
    known = dict(inputs)
    refs = {f: {r for s in steps for r in refs_in(s.input)} for f, (_, steps) in ready.items()}
    need_input = [f for f, rs in refs.items() if f not in known and any(_of_input(r) for r in rs)]
    wanted = {f: {r.split(".")[1] for r in rs if r.startswith("steps.")} for f, rs in refs.items()}
    outputs: dict[uuid.UUID, dict[str, Any]] = {f: {} for f in ready}
    if need_input or any(wanted.values()):
        flows = [f for f, steps in wanted.items() if steps]
        names = sorted(set().union(*wanted.values()))
        for r in flow_statements.step_data(conn, need_input, flows, names):
            if r.step is None:
                known[r.flow_id] = r.value
            elif r.step in wanted[r.flow_id]:
                outputs[r.flow_id][r.step] = r.value
    return known, outputs


def _oversized(
    steps: Sequence[Step], *, flow_input: Any, outputs: Mapping[str, Any], limit: int
) -> dict[str, str] | None:
    """The error of the first step whose input would resolve over ``limit``."""
    size_of = input_sizes(flow_input, outputs)
    for step in steps:
        size = size_of(step)
        if size > limit:
            return {"code": TOO_LARGE, "message": too_large_input(step, size, limit)}
    return None


def _of_input(ref: str) -> bool:
    return ref.split(".")[0] == "input"


def _step_task(
    flow: ParentFlow, step: Step, *, flow_input: Any, outputs: Mapping[str, Any]
) -> NewTask:
    return NewTask(
        id=new_id(),
        organization_id=flow.organization_id,
        author_id=flow.author_id,
        spec=TaskSpec(
            kind=step.kind,
            app_id=flow.app_id,
            target_id=step.target_id,
            executor_id=step.executor_id,
            title=step.title,
            input=resolve_refs(step.input, flow_input=flow_input, outputs=outputs),
            params=step.params,
            max_attempts=step.max_attempts,
            timeout_seconds=step.timeout_seconds,
        ),
        parent_id=flow.id,
        state_id=flow.state_id,
        flow_step_id=step.id,
    )
