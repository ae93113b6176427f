"""What a handler receives: its task, its state, cancellation and a logger."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from tasks_core.errors import Conflict
from tasks_core.records import TaskRecord
from tasks_core.store import Store
from worker.errors import Cancelled, TimedOut


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """The task being run, as a handler sees it."""

    id: uuid.UUID
    kind: str
    input: Any
    params: dict[str, Any]
    attempt: int
    max_attempts: int
    parent_id: uuid.UUID | None
    target_id: str | None
    executor_id: str | None
    organization_id: uuid.UUID

    @classmethod
    def of(cls, task: TaskRecord) -> TaskInfo:
        return cls(
            id=task.id,
            kind=task.kind,
            input=task.input,
            params=task.params,
            attempt=task.attempt,
            max_attempts=task.max_attempts,
            parent_id=task.parent_id,
            target_id=task.target_id,
            executor_id=task.executor_id,
            organization_id=task.organization_id,
        )


class StateHandle:
    """The task's state object. Concurrent writers are serialised, never
    silently lost: ``update`` locks the row for its read-modify-write, and
    ``write`` is a compare-and-set on ``version``."""

    def __init__(self, store: Store, state_id: uuid.UUID) -> None:
        self._store = store
        self.id = state_id

    def read(self) -> tuple[dict[str, Any], int]:
        """The variables and the version they are at."""
        with self._store.statement() as conn:
            row = conn.execute(
                text("SELECT variables, version FROM states WHERE id = :id"), {"id": self.id}
            ).one()
        return dict(row.variables), int(row.version)

    def write(self, variables: dict[str, Any], *, version: int) -> int:
        """Replace the variables if still at ``version``; returns the new version.
        Raises :class:`Conflict` when another writer got there first."""
        with self._store.statement() as conn:
            row = conn.execute(
                text(
                    "UPDATE states SET variables = :v, version = version + 1, updated_at = now() "
                    "WHERE id = :id AND version = :version RETURNING version"
                ).bindparams(bindparam("v", type_=JSONB)),
                {"id": self.id, "v": variables, "version": version},
            ).first()
        if row is None:
            raise Conflict(f"state {self.id} changed since version {version}")
        return int(row.version)

    def update(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Apply ``change`` to the variables atomically and return the new ones.

        The row is locked while ``change`` runs, so concurrent updaters queue
        up instead of retrying; keep ``change`` quick (no I/O).
        """
        with self._store.transaction() as conn:
            row = conn.execute(
                text("SELECT variables FROM states WHERE id = :id FOR UPDATE"), {"id": self.id}
            ).one()
            new = change(dict(row.variables))
            conn.execute(
                text(
                    "UPDATE states SET variables = :v, version = version + 1, updated_at = now() "
                    "WHERE id = :id"
                ).bindparams(bindparam("v", type_=JSONB)),
                {"id": self.id, "v": new},
            )
        return new


class TaskContext:
    """Passed to every handler and action."""

    def __init__(
        self,
        task: TaskRecord,
        *,
        store: Store,
        logger: logging.Logger,
        cancel_event: threading.Event | None = None,
    ) -> None:
        self.task = TaskInfo.of(task)
        self.input = task.input
        self.params = task.params
        self.log = logger
        self.state = StateHandle(store, task.state_id) if task.state_id else None
        self._cancel = cancel_event or threading.Event()
        self.timed_out = False

    def cancelled(self) -> bool:
        """Whether the task was cancelled (or ran out of time) and should stop."""
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` (or :class:`TimedOut`) if the run must stop."""
        if self._cancel.is_set():
            raise TimedOut() if self.timed_out else Cancelled()

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; returns early (True) when cancelled."""
        return self._cancel.wait(max(0.0, seconds))

    def request_stop(self, *, timed_out: bool = False) -> None:
        """Used by the worker: ask the handler to stop."""
        self.timed_out = self.timed_out or timed_out
        self._cancel.set()
