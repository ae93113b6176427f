"""Task statuses and the one table of allowed moves between them.

Nothing else in the project decides whether a status change is legal: the
repository's guarded updates take their ``WHERE status IN (...)`` lists from
here.
"""

from __future__ import annotations

from enum import StrEnum

from tasks_core.errors import InvalidTransition


class Status(StrEnum):
    """The lifecycle of a task."""

    CREATED = "created"  # stored, not yet handed to the broker
    QUEUED = "queued"  # published on its queue
    RUNNING = "running"  # claimed by a worker (or reported running by a caller)
    WAITING = "waiting"  # a Flow waiting on its children
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: frozenset[Status] = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED}
)

_ENDINGS = TERMINAL_STATUSES

ALLOWED_MOVES: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset({Status.QUEUED, Status.RUNNING, Status.WAITING}) | _ENDINGS,
    # queued -> created is not a move: re-publishing keeps a task queued.
    Status.QUEUED: frozenset({Status.RUNNING, Status.WAITING}) | _ENDINGS,
    # running -> queued hands a task back (a retry, a lost worker).
    Status.RUNNING: frozenset({Status.QUEUED, Status.WAITING}) | _ENDINGS,
    Status.WAITING: frozenset({Status.RUNNING}) | _ENDINGS,
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def is_terminal(status: Status) -> bool:
    """True for the statuses a task never leaves."""
    return status in TERMINAL_STATUSES


def can_move(current: Status, target: Status) -> bool:
    """Whether ``current -> target`` is an allowed move (staying put is not a move)."""
    return target in ALLOWED_MOVES[current]


def check_move(current: Status, target: Status) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> target`` is allowed."""
    if not can_move(current, target):
        if is_terminal(current):
            reason = f"'{current}' is terminal"
        else:
            allowed = ", ".join(sorted(ALLOWED_MOVES[current]))
            reason = f"from '{current}' a task may move to: {allowed}"
        raise InvalidTransition(f"cannot move a task from '{current}' to '{target}': {reason}")


def sources_of(target: Status) -> frozenset[Status]:
    """Every status from which ``target`` may be entered (for guarded updates)."""
    return frozenset(s for s, targets in ALLOWED_MOVES.items() if target in targets)


NON_TERMINAL_STATUSES: frozenset[Status] = frozenset(Status) - TERMINAL_STATUSES
