"""Creating tasks."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from tasks_core.errors import NotFound, QuotaExceeded, TasksError, ValidationFailed
from tasks_core.flow_definitions import FLOW_KIND, Limits, check_input_sizes, parse_flow
from tasks_core.ids import new_id
from tasks_core.lifecycle.moves import Applied, Create
from tasks_core.lifecycle.publishing import create
from tasks_core.lifecycle.shared_creates import (
    Inside,
    ItemRefused,
    Joined,
    create_shared,
    create_shared_soon,
)
from tasks_core.metrics import TASKS_CREATED, kind_label
from tasks_core.quotas import check_executor, check_timeout
from tasks_core.records import Caller
from tasks_core.status import Status, is_terminal
from tasks_core.storage.idempotency import (
    MAX_KEY_LENGTH,
    Binding,
    Replay,
    bind_keys,
    claim_key,
    find_replay,
)
from tasks_core.storage.tasks import ancestry, get_task, get_tasks
from tasks_core.store import Store
from tasks_core.task import MAX_TREE_DEPTH, TASK_FIELDS, NewTask, TaskRecord, TaskSpec
from tasks_core.usecases.open_tasks import check_open_tasks
from tasks_core.usecases.validation import (
    as_utc,
    check_name,
    check_sizes,
    check_times,
    parse_task_id,
)


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An ``Idempotency-Key`` and the digest of the request it came with."""

    key: str
    digest: bytes


def create_task(
    store: Store, caller: Caller, spec: TaskSpec, *, idempotency: Idempotency | None = None
) -> TaskRecord:
    """Store a task and, if it is `created`, publish it on its queue.

    A task created with any other status is a record of work done elsewhere
    (an external executor) and is never published. With ``idempotency``, a
    key already used with the same body returns that first task instead
    (see :func:`create_task_once`).
    """
    return create_task_once(store, caller, spec, idempotency=idempotency)[0]


def create_tasks(
    store: Store,
    caller: Caller,
    specs: Sequence[TaskSpec],
    *,
    idempotency: Idempotency | None = None,
) -> list[TaskRecord]:
    """Store many tasks at once, in the order given, and publish the `created`
    ones (see :func:`create_tasks_once`)."""
    return create_tasks_once(store, caller, specs, idempotency=idempotency)[0]


def create_task_once(
    store: Store, caller: Caller, spec: TaskSpec, *, idempotency: Idempotency | None = None
) -> tuple[TaskRecord, bool]:
    """Like :func:`create_task`; also says whether the answer is a replay of an
    earlier create with the same idempotency key.

    One statement, the insert: a `created` task is stored `queued` and
    published right after the commit (moved back to `created` only if the
    broker refuses it; see ``tasks_core.lifecycle.publishing``)."""
    news = [_validated(store, caller, spec)]
    tasks, replayed = _create(store, caller, news, idempotency=idempotency, batch=False)
    return tasks[0], replayed


async def create_task_soon(
    store: Store, caller: Caller, spec: TaskSpec, *, idempotency: Idempotency | None = None
) -> tuple[TaskRecord, bool]:
    """:func:`create_task_once` for a coroutine (the API's ``POST /v1/tasks``):
    the same checks and the same statement, shared with the concurrent
    creates of the caller (``shared_creates.create_shared_soon``), and its
    loop never waits on the database. What may wait (an open-task count due
    to be read again, a replay's tasks, why a parent refused a task) is done
    in a thread."""
    news = [_validated(store, caller, spec)]
    opening = _opening(news)
    try:
        org = caller.organization_id
        if opening and not check_open_tasks(store, org, adding=opening, may_read=False):
            await asyncio.to_thread(check_open_tasks, store, org, adding=opening)
    except QuotaExceeded:
        # Only a retry of an answered create (its key) may still be answered.
        first = (
            None
            if idempotency is None
            else await asyncio.to_thread(_replay, store, caller, idempotency)
        )
        if first is None:
            raise
        return first[0], True
    move, inside = _planned(caller, news, idempotency, batch=False)
    try:
        applied, now = await create_shared_soon(store, move, inside=inside)
    except _Replayed as replay:
        return (await asyncio.to_thread(_replayed, store, caller, replay))[0], True
    except _Missing as refused:
        raise await asyncio.to_thread(_refused, store, caller, refused.new) from None
    missing = _missing(news, applied)
    if missing is not None:
        raise await asyncio.to_thread(_refused, store, caller, missing)
    return _answered(news, applied, now)[0], False


def create_tasks_once(
    store: Store,
    caller: Caller,
    specs: Sequence[TaskSpec],
    *,
    idempotency: Idempotency | None = None,
) -> tuple[list[TaskRecord], bool]:
    """Like :func:`create_tasks`; also says whether the answer is a replay.

    All or nothing: every spec is validated first, and a bad one raises
    naming its index (``tasks[3].kind ...``) before anything is stored. The
    tasks are inserted in one statement (with the idempotency key, in one
    transaction) and published in one broker round trip; quotas count them
    all. With ``idempotency`` the key covers the whole batch: a retry answers
    the same tasks in the same order."""
    most = store.settings.batch_max
    if not 1 <= len(specs) <= most:
        raise ValidationFailed(f"tasks must hold 1 to {most} tasks (BATCH_MAX), not {len(specs)}")
    news = [_at(index, store, caller, spec) for index, spec in enumerate(specs)]
    return _create(store, caller, news, idempotency=idempotency, batch=True)


def _limits(store: Store, caller: Caller) -> Limits:
    return Limits(
        max_steps=store.settings.flow_max_steps,
        max_depth=store.settings.flow_max_depth,
        max_input_bytes=store.settings.max_input_bytes,
        max_timeout_seconds=store.settings.max_timeout_seconds,
        executors=caller.executors,
    )


def _validated(store: Store, caller: Caller, spec: TaskSpec) -> NewTask:
    check_sizes(store.settings, {"input": spec.input, "output": spec.output, "params": spec.params})
    return new_task(caller, spec, limits=_limits(store, caller))


# A message that starts with a field's name ("kind 'x' is not valid") is told
# as that field of the batch's task ("tasks[3].kind 'x' is not valid").
_SPEC_FIELDS = frozenset(f.wire for f in TASK_FIELDS if f.role.create) | {"stateful"}


def _at(index: int, store: Store, caller: Caller, spec: TaskSpec) -> NewTask:
    """Validate one task of a batch; a refusal names its index."""
    try:
        return _validated(store, caller, spec)
    except TasksError as exc:
        first = exc.message.split(" ", 1)[0]
        joint = "." if first in _SPEC_FIELDS else ": "
        exc.message = f"tasks[{index}]{joint}{exc.message}"
        exc.args = (exc.message,)
        raise


def _create(
    store: Store,
    caller: Caller,
    news: list[NewTask],
    *,
    idempotency: Idempotency | None,
    batch: bool,
) -> tuple[list[TaskRecord], bool]:
    """Insert validated tasks (one statement), publish them, answer them in order."""
    opening = _opening(news)
    if opening:
        try:
            check_open_tasks(store, caller.organization_id, adding=opening)
        except QuotaExceeded:
            first = _replay(store, caller, idempotency)
            if first is None:
                raise
            return first, True  # a retry of a create that was answered: not new tasks
    move, inside = _planned(caller, news, idempotency, batch=batch)
    # One create shares its statement (and its transaction, if it has one)
    # with the concurrent creates of its caller; a batch, or tasks with
    # parents among them, commit alone, all or nothing.
    try:
        if batch or _is_tree(news):
            applied, now = create(store, move, inside=inside)
        else:
            applied, now = create_shared(store, move, inside=inside)
    except _Replayed as replay:  # the new tasks were rolled back; answer the first ones
        return _replayed(store, caller, replay), True
    except _Missing as refused:
        raise _refused(store, caller, refused.new) from None
    missing = _missing(news, applied)
    if missing is not None:
        raise _refused(store, caller, missing)
    return _answered(news, applied, now), False


def _opening(news: Sequence[NewTask]) -> int:
    """How many of the tasks count as open (a record of finished work does not)."""
    return sum(1 for new in news if not is_terminal(new.spec.status))


def _planned(
    caller: Caller, news: list[NewTask], idempotency: Idempotency | None, *, batch: bool
) -> tuple[Create, Inside | None]:
    """The create of ``news``, and what must commit with its insert or not at
    all (the key's claim; a batch's or a tree's other tasks): None when
    nothing does, and the insert needs no transaction."""
    move = Create(tuple(news), actor=caller.actor)
    if idempotency is not None:
        check_key(idempotency.key)
        return move, _Keyed(caller, idempotency, tuple(news), batch=batch)
    if not _is_tree(news):
        return move, None

    def inside(conn: Connection, applied: Applied) -> None:
        _all_inserted(news, applied)

    return move, inside


def _all_inserted(news: Sequence[NewTask], applied: Applied) -> None:
    """All or nothing: a task its parent refused rolls back the others."""
    missing = _missing(news, applied)
    if missing is not None:
        raise _Missing(missing)


@dataclass(frozen=True, slots=True)
class _Keyed(Joined):
    """What commits with a create that has an ``Idempotency-Key``: all its
    tasks inserted, and the key bound to them (or the create rolled back to
    answer the tasks the key already names)."""

    caller: Caller
    idempotency: Idempotency
    news: tuple[NewTask, ...]
    batch: bool

    def __call__(self, conn: Connection, applied: Applied) -> None:
        _all_inserted(self.news, applied)
        claim = claim_key(conn, self.caller.organization_id, self.binding)
        if isinstance(claim, Replay):
            raise _Replayed(claim.tasks)

    @classmethod
    def together(cls, conn: Connection, parts: Sequence[tuple[Any, Applied]]) -> None:
        """The keys of a set's creates bound in one statement (per
        organization); a key that is not free, or named twice in the set,
        refuses the set, whose creates then go alone (a replay, a conflict)."""
        by_org: dict[uuid.UUID, list[Binding]] = {}
        for keyed, applied in parts:
            assert isinstance(keyed, _Keyed), "a set joins the insides of one class"
            _all_inserted(keyed.news, applied)
            by_org.setdefault(keyed.caller.organization_id, []).append(keyed.binding)
        for org, bindings in by_org.items():
            if len({b.key for b in bindings}) < len(bindings):
                raise ItemRefused("a key named twice in one set")
            if not all(bind_keys(conn, org, bindings)):
                raise ItemRefused("a key of the set names earlier tasks")

    @property
    def binding(self) -> Binding:
        ids = tuple(new.id for new in self.news)
        key = self.idempotency
        return Binding(key.key, key.digest, ids[0], ids if self.batch else None)


def _is_tree(news: Sequence[NewTask]) -> bool:
    """Tasks created together, some children of others: all or nothing."""
    return len(news) > 1 and any(new.parent_id is not None for new in news)


def _missing(news: Sequence[NewTask], applied: Applied) -> NewTask | None:
    """The first task that was not inserted (its parent refused it), if any."""
    return next((new for new in news if new.id not in applied.tasks), None)


def _answered(
    news: Sequence[NewTask], applied: Applied, now: dict[uuid.UUID, TaskRecord]
) -> list[TaskRecord]:
    """The created tasks, as they now are, in order; counted in the metrics."""
    for new in news:
        TASKS_CREATED.labels(kind=kind_label(new.spec.kind)).inc()
    return [now.get(new.id) or applied.tasks[new.id] for new in news]


def _replayed(store: Store, caller: Caller, replay: _Replayed) -> list[TaskRecord]:
    """The tasks of the first create with a replayed key (the new ones were rolled back)."""
    with store.statement() as conn:
        first = get_tasks(conn, caller.organization_id, replay.task_ids)
    assert len(first) == len(replay.task_ids), "a key is deleted with its tasks"
    return first


class _Missing(ItemRefused):
    """Raised inside the create transaction when a task's parent refused it."""

    def __init__(self, new: NewTask) -> None:
        self.new = new


def _replay(
    store: Store, caller: Caller, idempotency: Idempotency | None
) -> list[TaskRecord] | None:
    """The tasks an earlier create with this key made, if any."""
    if idempotency is None:
        return None
    check_key(idempotency.key)
    with store.statement() as conn:
        replay = find_replay(conn, caller.organization_id, idempotency.key, idempotency.digest)
        return None if replay is None else get_tasks(conn, caller.organization_id, replay.tasks)


class _Replayed(ItemRefused):
    """Raised inside the create transaction to roll it back on a replay."""

    def __init__(self, task_ids: tuple[uuid.UUID, ...]) -> None:
        self.task_ids = task_ids


def _refused(store: Store, caller: Caller, new: NewTask) -> Exception:
    """Why a task with a parent was not inserted: no such parent, or one too deep."""
    assert new.parent_id is not None, "only a task with a parent can be refused"
    with store.statement() as conn:
        parent = get_task(conn, caller.organization_id, new.parent_id)
        depth = ancestry(conn, new.parent_id).depth if parent is not None else 0
    if parent is None:
        return NotFound(f"parentId {str(new.parent_id)!r} names no task")
    return ValidationFailed(
        f"parentId {str(new.parent_id)!r} is {depth} levels deep; "
        f"a task tree may have at most {MAX_TREE_DEPTH} levels"
    )


def check_key(key: str) -> None:
    """Keys are opaque strings of printable characters, at most 255."""
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters"
        )


def new_task(caller: Caller, spec: TaskSpec, *, limits: Limits) -> NewTask:
    """Validate a caller's spec into the task to insert (raises ValidationFailed)."""
    check_name("kind", spec.kind)
    check_name("executorId", spec.executor_id)
    check_executor(spec.executor_id, limits.executors)
    if spec.status is Status.QUEUED:
        raise ValidationFailed(
            "status 'queued' is set by the service when it publishes a task; "
            "create the task with status 'created' to have it queued"
        )
    started_at = as_utc(spec.started_at, field="startedAt")
    ended_at = as_utc(spec.ended_at, field="endedAt")
    check_times(started_at, ended_at)
    if spec.kind == FLOW_KIND and spec.status is Status.CREATED:
        check_flow_definition(spec.params, spec.target_id, limits=limits, flow_input=spec.input)
    if spec.max_attempts < 1:
        raise ValidationFailed(f"maxAttempts must be at least 1, not {spec.max_attempts}")
    if spec.timeout_seconds is not None and spec.timeout_seconds <= 0:
        raise ValidationFailed(f"timeoutSeconds must be positive, not {spec.timeout_seconds}")
    check_timeout(spec.timeout_seconds, limits.max_timeout_seconds)
    parent_id = parse_task_id(spec.parent_id, field="parentId") if spec.parent_id else None
    return NewTask(
        id=new_id(),
        organization_id=caller.organization_id,
        author_id=str(caller.key_id),
        spec=dataclasses.replace(
            spec, parent_id=parent_id, started_at=started_at, ended_at=ended_at
        ),
        parent_id=parent_id,
        state_id=new_id() if spec.stateful else None,
    )


def check_flow_definition(
    params: dict[str, object], target_id: str | None, *, limits: Limits, flow_input: Any = None
) -> None:
    """A Flow that will run has its inline steps validated now, so a bad one is
    a 4xx at create time, not a failure at run time. A registered flow
    (``targetId``) is checked by the worker that knows it. A Flow created as a
    record (any other status) is never run and needs no steps."""
    if "steps" in params:
        if target_id:
            raise ValidationFailed(
                "a Flow takes params.steps or targetId (a registered flow), not both"
            )
        steps = parse_flow(params["steps"], params.get("mode"), limits=limits)
        check_input_sizes(steps, flow_input=flow_input, max_bytes=limits.max_input_bytes)
    elif not target_id:
        raise ValidationFailed(
            "a Flow needs params.steps (a list of steps) or targetId naming a registered flow"
        )
