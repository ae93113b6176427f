"""Task statuses and the one table of allowed moves between them.

``ALLOWED_MOVES`` is the graph of status changes. ``RULES`` says, for each
kind of move the service makes, from which statuses it may start and where
it may lead; every one of its edges is an edge of the graph (checked below).
The lifecycle engine takes every guard of every move from here, and nothing
else decides whether a status change is legal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from tasks_core.errors import InvalidTransition


class Status(StrEnum):
    """The lifecycle of a task."""

    CREATED = "created"  # stored, not (yet, or successfully) handed to the broker
    QUEUED = "queued"  # stored and handed to the broker: on its queue
    RUNNING = "running"  # claimed by a worker (or reported running by a caller)
    WAITING = "waiting"  # a Flow waiting on its children
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: frozenset[Status] = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELLED}
)
NON_TERMINAL_STATUSES: frozenset[Status] = frozenset(Status) - TERMINAL_STATUSES

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


class MoveKind(StrEnum):
    """Every kind of status change the service makes."""

    MARK_QUEUED = "mark_queued"  # a created task was published
    PUBLISH_FAILED = "publish_failed"  # a task stored queued at create whose publish failed
    REPUBLISH = "republish"  # a waiting task was published again
    CLAIM = "claim"  # a worker starts a run
    FINISH = "finish"  # a run's outcome
    RETRY = "retry"  # a failed run goes back to its queue for another attempt
    HAND_BACK = "hand_back"  # a stopping worker returns its runs
    RELEASE = "release"  # a run stopped for want of its lease goes back to its queue
    RECOVER_LEASE = "recover_lease"  # a run whose worker stopped renewing its lease
    QUEUE_TIMEOUT = "queue_timeout"  # waited longer than queueTimeoutSeconds
    UNSERVED = "unserved"  # waited on a queue no live worker served for UNSERVED_TIMEOUT_SECONDS
    RECOVERY_FAILED = "recovery_failed"  # the sweeper could not recover it, time after time
    START_FLOW = "start_flow"  # a claimed Flow spawns its steps (or ends, with none)
    END_FLOW = "end_flow"  # a Flow's steps are done, or one failed it
    CANCEL = "cancel"  # a task and its subtree
    SET_STATUS = "set_status"  # a caller's PUT


@dataclass(frozen=True, slots=True)
class Rule:
    """Where a kind of move may start and where it may lead."""

    sources: frozenset[Status]
    targets: frozenset[Status]


def _rule(sources: Iterable[Status], targets: Iterable[Status]) -> Rule:
    return Rule(frozenset(sources), frozenset(targets))


RULES: dict[MoveKind, Rule] = {
    MoveKind.MARK_QUEUED: _rule({Status.CREATED}, {Status.QUEUED}),
    # A create stores its tasks `queued` (the mark_queued move folded into the
    # insert) and publishes right after the commit; those the broker refused
    # go back to `created` (the sweeper publishes them). The undo of that one
    # mark, not an edge of the graph: nothing else moves a task back.
    MoveKind.PUBLISH_FAILED: _rule({Status.QUEUED}, {Status.CREATED}),
    # A queued task stays queued; only its clock is re-armed.
    MoveKind.REPUBLISH: _rule({Status.CREATED, Status.QUEUED}, {Status.QUEUED}),
    # `created` too: a worker may see the message before the task is marked queued.
    MoveKind.CLAIM: _rule({Status.CREATED, Status.QUEUED}, {Status.RUNNING}),
    MoveKind.FINISH: _rule({Status.RUNNING}, TERMINAL_STATUSES),
    MoveKind.RETRY: _rule({Status.RUNNING}, {Status.QUEUED}),
    MoveKind.HAND_BACK: _rule({Status.RUNNING}, {Status.QUEUED}),
    MoveKind.RELEASE: _rule({Status.RUNNING}, {Status.QUEUED}),
    MoveKind.RECOVER_LEASE: _rule({Status.RUNNING}, {Status.QUEUED, Status.FAILED}),
    MoveKind.QUEUE_TIMEOUT: _rule({Status.CREATED, Status.QUEUED}, {Status.FAILED}),
    MoveKind.UNSERVED: _rule({Status.CREATED, Status.QUEUED}, {Status.FAILED}),
    # What the sweeper recovers: waiting tasks (republish, queue timeout) and lost runs.
    MoveKind.RECOVERY_FAILED: _rule(
        {Status.CREATED, Status.QUEUED, Status.RUNNING}, {Status.FAILED}
    ),
    MoveKind.START_FLOW: _rule({Status.RUNNING}, {Status.WAITING, Status.COMPLETED}),
    MoveKind.END_FLOW: _rule({Status.WAITING}, {Status.COMPLETED, Status.FAILED}),
    MoveKind.CANCEL: _rule(NON_TERMINAL_STATUSES, {Status.CANCELLED}),
    # A PUT may make any move of the graph but into `queued`, which only the
    # service sets when it publishes.
    MoveKind.SET_STATUS: _rule(frozenset(Status), frozenset(Status) - {Status.QUEUED}),
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


def sources_for(kind: MoveKind, target: Status) -> frozenset[Status]:
    """The statuses a move of ``kind`` into ``target`` may start from: the
    rule's sources that the graph lets reach ``target`` (a re-publish also
    keeps `queued` where it is)."""
    rule = RULES[kind]
    if target not in rule.targets:
        raise ValueError(f"a {kind} move can not lead to '{target}'")
    return frozenset(s for s in rule.sources if can_move(s, target) or s is target)


# Kinds whose edges the graph does not hold: a PUT (checked against the graph
# task by task) and the undo of a create's `queued` mark.
_OFF_GRAPH = (MoveKind.SET_STATUS, MoveKind.PUBLISH_FAILED)


def _check_rules() -> None:
    """Every edge of every rule is an edge of the graph (or stays put)."""
    for kind, rule in RULES.items():
        for target in rule.targets:
            if kind not in _OFF_GRAPH and sources_for(kind, target) != rule.sources:
                raise AssertionError(f"{kind}: not every source may move to '{target}'")


_check_rules()
