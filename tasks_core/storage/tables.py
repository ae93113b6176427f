"""The tables, as typed SQLAlchemy 2 models.

The ``tasks`` table is derived from :class:`tasks_core.task.TaskRecord`, the
one declaration of a task's fields; the others are declared here. Rows are
storage shapes only: the API turns them into its schemas at the edge. The
Alembic migrations in ``tasks_core/migrations`` create exactly this metadata
(a test compares the two).

Index plan: every list filter of ``GET /v1/tasks`` is ``organization_id`` plus
at most one column, ordered by ``id`` (a UUIDv7, so id order is creation
order). Each filter therefore has an index ``(organization_id, column, id)``
and a page is a bounded index range scan at any table size. Columns that are
mostly NULL get partial indexes to stay small.
"""

from __future__ import annotations

import types
import typing
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tasks_core.status import Status
from tasks_core.task import TASK_FIELDS, TaskField

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_STATUS_LIST = ", ".join(f"'{s.value}'" for s in Status)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Organization(Base):
    """A tenant: every task, state and key belongs to exactly one."""

    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    created_at: Mapped[datetime] = _now()
    # The executorIds its tasks may name; NULL: any (see tasks_core.quotas).
    allowed_executors: Mapped[list[str] | None] = mapped_column(ARRAY(Text))


class ApiKey(Base):
    """A bearer key; only the SHA-256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str | None] = mapped_column(Text)
    # The secret's first characters, to let operators tell keys apart in listings.
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, unique=True)
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class State(Base):
    """A named container of variables, shared by a task (and later its Flow steps)."""

    __tablename__ = "states"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str | None] = mapped_column(Text)
    variables: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    # Bumped by every write; writers compare it to serialise concurrent updates.
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


# How each Python type of a task's field is stored.
_SQL_TYPES: dict[Any, Any] = {
    uuid.UUID: Uuid,
    str: Text,
    Status: Text,
    int: Integer,
    float: Float,
    datetime: DateTime(timezone=True),
}

# What a column needs beyond its type: keys, references and defaults.
_TASK_COLUMNS: dict[str, dict[str, Any]] = {
    "id": {"primary_key": True},
    "organization_id": {"references": ForeignKey("organizations.id", ondelete="CASCADE")},
    "parent_id": {"references": ForeignKey("tasks.id", ondelete="CASCADE")},
    "state_id": {"references": ForeignKey("states.id", ondelete="SET NULL")},
    "params": {"server_default": text("'{}'::jsonb")},
    "errors": {"server_default": text("'[]'::jsonb")},
    "attempt": {"server_default": text("0")},
    "max_attempts": {"server_default": text("1")},
    "recovery_failures": {"server_default": text("0")},
    "republishes": {"server_default": text("0")},
    "created_at": {"server_default": func.now()},
    "updated_at": {"server_default": func.now()},
}


def _task_column(task_field: TaskField) -> Column[Any]:
    """The column of one field of :class:`TaskRecord`: its type and nullability
    from the field's annotation (``X | None`` may be NULL; so may ``Any``)."""
    hint = task_field.type
    options = dict(_TASK_COLUMNS.get(task_field.name, {}))
    references = options.pop("references", None)
    members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    nullable = type(None) in members or hint is Any
    base = next(m for m in members if m is not type(None))
    sql_type = _SQL_TYPES.get(base) or JSONB(none_as_null=True)  # Any, dicts and lists
    args = (references,) if references is not None else ()
    return Column(task_field.name, sql_type, *args, nullable=nullable, **options)


tasks = Table(
    "tasks",
    Base.metadata,
    *(_task_column(f) for f in TASK_FIELDS if f.role.stored),
    CheckConstraint(f"status IN ({_STATUS_LIST})", name="status"),
    CheckConstraint(
        "ended_at IS NULL OR started_at IS NULL OR ended_at >= started_at",
        name="times",
    ),
    Index("ix_tasks_org_id", "organization_id", "id"),
    Index("ix_tasks_org_status_id", "organization_id", "status", "id"),
    Index("ix_tasks_org_kind_id", "organization_id", "kind", "id"),
    Index(
        "ix_tasks_org_executor_id",
        "organization_id",
        "executor_id",
        "id",
        postgresql_where=text("executor_id IS NOT NULL"),
    ),
    Index(
        "ix_tasks_org_app_id",
        "organization_id",
        "app_id",
        "id",
        postgresql_where=text("app_id IS NOT NULL"),
    ),
    Index(
        "ix_tasks_org_target_id",
        "organization_id",
        "target_id",
        "id",
        postgresql_where=text("target_id IS NOT NULL"),
    ),
    # Children of a task (nesting, cancel of a subtree, the parentId filter).
    Index(
        "ix_tasks_parent_id",
        "parent_id",
        "id",
        postgresql_where=text("parent_id IS NOT NULL"),
    ),
    Index(
        "ix_tasks_state_id",
        "state_id",
        postgresql_where=text("state_id IS NOT NULL"),
    ),
    # An organization's running tasks on one queue, counted by a claim when
    # MAX_RUNNING_PER_ORG is set.
    Index(
        "ix_tasks_running_org_queue",
        "organization_id",
        "kind",
        "executor_id",
        postgresql_where=text("status = 'running'"),
    ),
    # Running tasks by lease, for finding the ones whose worker died.
    Index(
        "ix_tasks_running_lease",
        "lease_expires_at",
        postgresql_where=text("status = 'running'"),
    ),
    CheckConstraint("max_attempts >= 1", name="max_attempts"),
    # Tasks waiting for a worker, oldest first: what the sweeper re-publishes
    # a first time; then again when their backoff (republish_at) is due.
    Index(
        "ix_tasks_waiting_updated_at",
        "updated_at",
        postgresql_where=text("status IN ('created', 'queued') AND republish_at IS NULL"),
    ),
    Index(
        "ix_tasks_waiting_republish_at",
        "republish_at",
        postgresql_where=text("status IN ('created', 'queued') AND republish_at IS NOT NULL"),
    ),
    # Tasks waiting on one queue: how many messages its Redis list should
    # hold, and how long the oldest has waited (metrics), from the index alone.
    Index(
        "ix_tasks_waiting_kind_executor_id",
        "kind",
        "executor_id",
        "created_at",
        postgresql_where=text("status IN ('created', 'queued')"),
    ),
    # A step runs as at most one child: spawning twice is impossible.
    Index(
        "ux_tasks_parent_id_flow_step_id",
        "parent_id",
        "flow_step_id",
        unique=True,
        postgresql_where=text("flow_step_id IS NOT NULL"),
    ),
)
"""One unit of work: the source of truth for its status and results. Its
columns are the fields of :class:`TaskRecord`, the one declaration of a task."""


class TaskEvent(Base):
    """One line of a task's append-only log: a creation or a status change, and who did it."""

    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    at: Mapped[datetime] = _now()
    type: Mapped[str] = mapped_column(Text, nullable=False)
    from_status: Mapped[str | None] = mapped_column(Text)
    to_status: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text, nullable=False)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (Index("ix_task_events_task_id_id", "task_id", "id"),)


class FlowStep(Base):
    """One step of a running Flow: its definition and how many of its
    dependencies have not ended yet (the step is spawned when that reaches 0)."""

    __tablename__ = "flow_steps"

    flow_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    step_id: Mapped[str] = mapped_column(Text, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    dependents: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    pending: Mapped[int] = mapped_column(Integer, nullable=False)


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` of ``POST /v1/tasks``: the same key and body
    answer the first task again instead of creating another."""

    __tablename__ = "idempotency_keys"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    # A batch create's tasks in the order sent (task_id is the first); NULL for one task.
    task_ids: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(Uuid), nullable=True)
    created_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


class WorkerNode(Base):
    """A worker node (one ``tasks-core worker``), as its last heartbeat told:
    what it serves, and whether it is alive (a heartbeat within three
    intervals). One row per node, written once per WORKER_HEARTBEAT_SECONDS."""

    __tablename__ = "worker_nodes"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    queues: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    kinds: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    actions: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    concurrency: Mapped[int] = mapped_column(Integer, nullable=False)
    running: Mapped[int] = mapped_column(Integer, nullable=False)
    version: Mapped[str] = mapped_column(Text, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_worker_nodes_last_heartbeat_at", "last_heartbeat_at"),)
