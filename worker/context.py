"""What a handler receives: its task, its state, cancellation and a logger."""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks_core.errors import Conflict
from tasks_core.storage import states
from tasks_core.store import Store
from tasks_core.task import TaskRecord
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
        """The handler's view of a task: these of its fields."""
        return cls(**{name: getattr(task, name) for name in _INFO_FIELDS})


_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(TaskInfo))


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
            return states.read_state(conn, self.id)

    def write(self, variables: dict[str, Any], *, version: int) -> int:
        """Replace the variables if still at ``version``; returns the new version.
        Raises :class:`Conflict` when another writer got there first."""
        with self._store.statement() as conn:
            new_version = states.write_state_if(conn, self.id, variables, version=version)
        if new_version is None:
            raise Conflict(f"state {self.id} changed since version {version}")
        return new_version

    def update(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Apply ``change`` to the variables atomically and return the new ones.

        The row is locked while ``change`` runs, so concurrent updaters queue
        up instead of retrying; keep ``change`` quick (no I/O).
        """
        return self._store.atomic(lambda conn: states.change_state(conn, self.id, change))


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
