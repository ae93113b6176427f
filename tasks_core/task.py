"""A task's fields, declared once, and the values that create a task.

:class:`TaskRecord` is the one declaration of what a task holds. Each field
says how the API treats it: shown in the answer (``out``), accepted on create
(``create``), changeable by ``PUT`` (``mutable``), and its wire name when that
is not the camelCase of its own. The rest is derived from it: the ``tasks``
table (``tasks_core.storage.tables``), the column lists of inserts and updates
(``tasks_core.lifecycle``), :meth:`TaskRecord.from_row`, and the API's Task
(``tasks_core.api.schemas``). Adding a column is one field here plus its
migration.

The reference's fields come first, in its (alphabetical) order, which is the
order of the API's answer; then ours; then those the API never shows.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_type_hints

from tasks_core.status import Status

# How many levels a task tree may have (a root is level 1). Creates and PUTs
# that would nest deeper are refused, and every walk of a tree stops here.
MAX_TREE_DEPTH = 1000


@dataclass(frozen=True, slots=True)
class Role:
    """How the API and the storage treat one field of a task."""

    out: bool = True  # part of the API's Task
    create: bool = False  # accepted by POST /v1/tasks
    mutable: bool = False  # accepted by PUT /v1/tasks/{taskId}
    stored: bool = True  # a column of the tasks table
    wire: str | None = None  # the API's name, when not the camelCase of the field's
    doc: str | None = None


_REQUIRED: Any = dataclasses.MISSING


def _field(default: Any = _REQUIRED, **role: Any) -> Any:
    return field(default=default, metadata={"role": Role(**role)})


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskRecord:
    """One task as stored, plus the children loaded with it (if any)."""

    # The reference's fields, in its order.
    app_id: str | None = _field(create=True)
    author_id: str | None = _field()
    children: tuple[TaskRecord, ...] = field(default=(), metadata={"role": Role(stored=False)})
    created_at: datetime = _field()
    description: str | None = _field(create=True, mutable=True)
    ended_at: datetime | None = _field(create=True, mutable=True)
    errors: list[dict[str, Any]] = _field(mutable=True)
    executor_id: str | None = _field(create=True, mutable=True)
    id: uuid.UUID = _field()
    input: Any = _field(create=True, mutable=True)
    kind: str = _field(create=True)
    organization_id: uuid.UUID = _field()
    output: Any = _field(create=True, mutable=True)
    params: dict[str, Any] = _field(create=True, mutable=True)
    parent_id: uuid.UUID | None = _field(create=True, mutable=True)
    started_at: datetime | None = _field(create=True, mutable=True)
    state_id: uuid.UUID | None = _field()
    status: Status = _field(create=True, mutable=True)
    target_id: str | None = _field(create=True)
    title: str | None = _field(create=True, mutable=True)
    updated_at: datetime = _field()
    # Ours, beyond the reference.
    # Number of the current run; outcomes are fenced by it.
    attempt: int = _field(doc="Number of the current or last run (0: never run).")
    # A Flow's child task: the id of the step it runs (None for other tasks,
    # including children created by hand, which a Flow does not wait for).
    flow_step_id: str | None = _field(
        wire="stepId", doc="For a Flow's child: the id of the step it runs."
    )
    max_attempts: int = _field(create=True)
    timeout_seconds: float | None = _field(create=True)
    # Kept for the service, never shown.
    # Fail the task if it waits in `created`/`queued` longer than this.
    queue_timeout_seconds: float | None = _field(create=True, out=False)
    # A running task's owner renews this; past it, the owner is presumed dead.
    lease_expires_at: datetime | None = _field(out=False)
    worker: str | None = _field(out=False)
    # A running Flow: how many of its steps have not ended yet.
    open_steps: int | None = _field(out=False)
    # A queued retry may not run before this (its backoff); the sweeper waits too.
    available_at: datetime | None = _field(out=False)
    # How many times the sweeper's recovery of the task failed in a row; at
    # RECOVERY_MAX_FAILURES the task fails `recovery_failed`.
    recovery_failures: int = _field(0, out=False)
    # Times the sweeper published the task again in its current wait, and when
    # it may next (None: REPUBLISH_AFTER_SECONDS after the task's last change).
    republishes: int = _field(0, out=False)
    republish_at: datetime | None = _field(None, out=False)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> TaskRecord:
        """Build from a ``tasks`` row (any mapping with the column names)."""
        return cls(**{name: _decoded(decode, row[name]) for name, decode in _DECODERS})

    @staticmethod
    def reader(names: tuple[str, ...]) -> Callable[[Sequence[Any]], TaskRecord]:
        """Build from rows as tuples whose columns are ``names`` (a statement's
        result read from the driver, ``storage.rows``)."""
        return _reader(names)


@dataclass(frozen=True, slots=True)
class TaskField:
    """One field of :class:`TaskRecord`: its name, Python type and role."""

    name: str
    type: Any
    role: Role

    @property
    def wire(self) -> str:
        """The field's name in the API."""
        return self.role.wire or _camel(self.name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


_HINTS = get_type_hints(TaskRecord)
TASK_FIELDS: tuple[TaskField, ...] = tuple(
    TaskField(f.name, _HINTS[f.name], f.metadata["role"]) for f in dataclasses.fields(TaskRecord)
)
COLUMNS: tuple[str, ...] = tuple(f.name for f in TASK_FIELDS if f.role.stored)
CREATE_FIELDS: frozenset[str] = frozenset(f.name for f in TASK_FIELDS if f.role.create)
MUTABLE_FIELDS: frozenset[str] = frozenset(f.name for f in TASK_FIELDS if f.role.mutable)
# Shown by the API but not changeable: PUT names them in its refusal.
IMMUTABLE_FIELDS: frozenset[str] = frozenset(
    f.name for f in TASK_FIELDS if f.role.out and not f.role.mutable
)


def _decoder(hint: Any) -> Callable[[Any], Any] | None:
    """How a stored value becomes the record's (an empty JSON column is {} or
    []); None: as it is stored."""
    if hint is Status:
        return Status
    origin = getattr(hint, "__origin__", None)
    if origin is dict:
        return lambda value: value or {}
    if origin is list:
        return lambda value: value or []
    return None


_DECODERS: tuple[tuple[str, Callable[[Any], Any] | None], ...] = tuple(
    (f.name, _decoder(f.type)) for f in TASK_FIELDS if f.role.stored
)


def _decoded(decode: Callable[[Any], Any] | None, value: Any) -> Any:
    return value if decode is None else decode(value)


@functools.lru_cache(maxsize=256)
def _reader(names: tuple[str, ...]) -> Callable[[Sequence[Any]], TaskRecord]:
    """Each stored field's position in rows of ``names``, found once. Most
    fields are taken as stored, with no call (a row is read on every move)."""
    plain = tuple((name, names.index(name)) for name, decode in _DECODERS if decode is None)
    decoded = tuple(
        (name, names.index(name), decode) for name, decode in _DECODERS if decode is not None
    )

    def read(row: Sequence[Any]) -> TaskRecord:
        values = {name: row[i] for name, i in plain}
        for name, i, decode in decoded:
            values[name] = decode(row[i])
        return TaskRecord(**values)

    return read


@dataclass(frozen=True)
class TaskSpec:
    """What a caller asks for when creating a task: the create fields of
    :class:`TaskRecord`, and ``stateful`` (a state object made with the task)."""

    kind: str
    status: Status = Status.CREATED
    app_id: str | None = None
    description: str | None = None
    executor_id: str | None = None
    target_id: str | None = None
    title: str | None = None
    input: Any = None
    output: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    parent_id: str | uuid.UUID | None = None
    stateful: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    max_attempts: int = 1
    timeout_seconds: float | None = None
    queue_timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated task to insert: what its creator asked for (``spec``) and
    what the service decides (identity, owner, and a Flow step's links)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    author_id: str | None
    spec: TaskSpec
    parent_id: uuid.UUID | None = None
    # With spec.stateful a new state object of this id is made with the task;
    # without, it names an existing one (a Flow's step shares its Flow's).
    state_id: uuid.UUID | None = None
    flow_step_id: str | None = None

    def columns(self) -> dict[str, Any]:
        """Column -> value for the insert: the spec's create fields and the
        service's own (those not given, such as ``attempt``, take their defaults)."""
        values = {name: getattr(self.spec, name) for name in CREATE_FIELDS}
        values.update({name: getattr(self, name) for name in _DECIDED})
        return values


# What the service decides for a new task: NewTask's fields but its spec.
_DECIDED = tuple(f.name for f in dataclasses.fields(NewTask) if f.name != "spec")
INSERT_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c in CREATE_FIELDS or c in _DECIDED)
