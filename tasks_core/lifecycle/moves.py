"""Moves: every change of a task's status, as a typed value.

A move names the tasks it applies to (one or many) and carries what the
change records. :func:`tasks_core.lifecycle.engine.apply` applies it in one
statement or one transaction; which statuses it may start from is the rule
of its kind in ``tasks_core.status``, never something a caller passes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tasks_core.flow_definitions import Step
from tasks_core.status import RULES, MoveKind, Status
from tasks_core.task import NewTask, TaskRecord


@dataclass(frozen=True, slots=True)
class Attempt:
    """The fence of a run: a task and the attempt number its claim gave. A
    write fenced by it applies only while the task is still at that attempt,
    so a stale run (a duplicate delivery, a worker presumed dead) can never
    overwrite a newer one."""

    task_id: uuid.UUID
    number: int
    # A Flow's step: ending it fans in to its Flow, so its Flow chain is locked first.
    is_step: bool = False

    @classmethod
    def of(cls, run: TaskRecord) -> Attempt:
        """The fence of a run, as its claim returned it."""
        return cls(run.id, run.attempt, is_step=run.flow_step_id is not None)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: the status it leads to and what to record."""

    status: Status
    output: Any = None
    errors: list[dict[str, str]] = field(default_factory=list)
    detail: dict[str, Any] | None = None  # for the event log (e.g. a traceback)


# Codes of the failures the service itself records.
WORKER_LOST = "worker_lost"
QUEUE_TIMEOUT = "queue_timeout"
UNKNOWN_KIND = "unknown_kind"  # no live worker served the task's queue
STEP_FAILED = "step_failed"
TOO_LARGE = "too_large"  # a step's resolved input, or a Flow's output, over its limit
RECOVERY_FAILED = "recovery_failed"


def _check_targets(kind: MoveKind, statuses: list[Status]) -> None:
    allowed = RULES[kind].targets
    wrong = sorted({s for s in statuses if s not in allowed})
    if wrong:
        raise ValueError(f"a {kind} move can not lead to {', '.join(wrong)}")


@dataclass(frozen=True, slots=True)
class Create:
    """Insert tasks (with their state objects and `created` events). A task
    whose parent is missing, of another organization, or too deep is not
    inserted.

    With ``queued_by`` (the publisher's actor) a `created` task is stored
    `queued` at once, its `created` -> `queued` event by that actor in the same
    statement: for a caller that publishes it right after the commit and
    moves it back (:class:`PublishFailed`) if the broker refuses it."""

    tasks: tuple[NewTask, ...]
    actor: str
    queued_by: str | None = None


@dataclass(frozen=True, slots=True)
class PublishFailed:
    """Tasks a create stored `queued` whose publish failed go back to `created`."""

    task_ids: tuple[uuid.UUID, ...]
    actor: str
    kind = MoveKind.PUBLISH_FAILED


@dataclass(frozen=True, slots=True)
class MarkQueued:
    """Published `created` tasks move to `queued` (those no worker claimed yet)."""

    task_ids: tuple[uuid.UUID, ...]
    actor: str
    kind = MoveKind.MARK_QUEUED


@dataclass(frozen=True, slots=True)
class Republish:
    """Tasks published again after waiting too long: a `created` one becomes
    `queued`, and each backs off (``after_seconds``, doubled for each republish
    of this wait, up to ``max_seconds``) before the next. ``deferred`` tasks
    were not published (their queue holds messages enough) and only back off."""

    task_ids: tuple[uuid.UUID, ...]
    actor: str
    after_seconds: float = 60.0
    max_seconds: float = 3600.0
    deferred: tuple[uuid.UUID, ...] = ()
    kind = MoveKind.REPUBLISH


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker starts a new attempt of each task, with a lease.

    With ``queue`` (the one the message came from, named with ``prefix``),
    only a task that waits on that queue is claimed. With ``max_running``
    (MAX_RUNNING_PER_ORG), an organization runs at most that many tasks on
    one queue: a task over it stays waiting and is published again later
    (after at least ``wait_seconds``), its turn to come."""

    task_ids: tuple[uuid.UUID, ...]
    worker: str
    lease_seconds: float
    queue: str | None = None
    prefix: str = "tasks"
    max_running: int = 0
    wait_seconds: float = 1.0
    kind = MoveKind.CLAIM

    @property
    def actor(self) -> str:
        return f"worker:{self.worker}"


@dataclass(frozen=True, slots=True)
class Finished:
    """One run's outcome."""

    attempt: Attempt
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Finish:
    """Record the outcome of runs, each fenced by its attempt. A fenced-off
    outcome is dropped and logged as `result_ignored`."""

    results: tuple[Finished, ...]
    actor: str
    kind = MoveKind.FINISH

    def __post_init__(self) -> None:
        _check_targets(self.kind, [r.outcome.status for r in self.results])


@dataclass(frozen=True, slots=True)
class Retried:
    """One failed run to be attempted again after ``delay`` seconds."""

    attempt: Attempt
    outcome: Outcome
    delay: float


@dataclass(frozen=True, slots=True)
class Retry:
    """Hand failed runs back to their queues, fenced like :class:`Finish`."""

    retries: tuple[Retried, ...]
    actor: str
    kind = MoveKind.RETRY


@dataclass(frozen=True, slots=True)
class HandBack:
    """Every task still running on one worker node (its ``worker`` column
    starts with ``worker_prefix``) goes back to its queue, attempt kept."""

    worker_prefix: str
    actor: str
    kind = MoveKind.HAND_BACK


@dataclass(frozen=True, slots=True)
class Release:
    """Runs their worker stopped because no renewal of their lease reached
    PostgreSQL (down, or cut off from the worker) go back to their queues,
    attempt kept, each fenced on its attempt: a run the sweeper recovered
    meanwhile, or one another attempt has taken, is left as it is."""

    attempts: tuple[Attempt, ...]
    actor: str
    kind = MoveKind.RELEASE


@dataclass(frozen=True, slots=True)
class Expired:
    """A run whose lease ran out, how many attempts its task may have, and its
    lease as the sweeper saw it: a run renewed since is not recovered. With
    ``decide_by`` (PostgreSQL's time), a recovery that reaches PostgreSQL
    later is not applied: it was held up, and so may the run's worker be."""

    attempt: Attempt
    max_attempts: int
    lease: datetime | None
    decide_by: datetime | None = None

    @classmethod
    def of(cls, run: TaskRecord, *, decide_by: datetime | None = None) -> Expired:
        """A held run, as :func:`tasks_core.lifecycle.engine.hold_expired_runs` returned it."""
        return cls(Attempt.of(run), run.max_attempts, run.lease_expires_at, decide_by)


@dataclass(frozen=True, slots=True)
class RecoverLease:
    """Runs whose worker stopped renewing their lease: another attempt, or
    ``worker_lost`` once the attempts are spent."""

    expired: tuple[Expired, ...]
    actor: str
    kind = MoveKind.RECOVER_LEASE


@dataclass(frozen=True, slots=True)
class QueueTimeout:
    """Tasks that waited for a worker longer than their queueTimeoutSeconds fail."""

    task_ids: tuple[uuid.UUID, ...]
    actor: str
    kind = MoveKind.QUEUE_TIMEOUT


@dataclass(frozen=True, slots=True)
class Unserved:
    """Tasks waiting on ``queue`` fail ``unknown_kind``: they waited longer than
    ``timeout_seconds``, and no worker node that heartbeat within that long
    lists the queue (both checked again in the move's statement, so a worker
    that came up meanwhile keeps its tasks)."""

    queue: str
    task_ids: tuple[uuid.UUID, ...]
    timeout_seconds: float
    message: str
    actor: str
    kind = MoveKind.UNSERVED


@dataclass(frozen=True, slots=True)
class Unrecoverable:
    """A task whose recovery (``action``) kept failing, its lease as the sweeper
    saw it (None for a waiting task), and the last error."""

    task_id: uuid.UUID
    lease: datetime | None
    action: str
    error: str
    is_step: bool = False


@dataclass(frozen=True, slots=True)
class FailRecovery:
    """Tasks whose recovery by the sweeper failed ``max_failures`` times in a
    row fail with ``recovery_failed`` (a Flow's step fails its Flow)."""

    tasks: tuple[Unrecoverable, ...]
    max_failures: int
    actor: str
    kind = MoveKind.RECOVERY_FAILED


@dataclass(frozen=True, slots=True)
class FlowStart:
    """One claimed Flow run and its steps (validated)."""

    attempt: Attempt
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class StartFlow:
    """Claimed Flows store their steps, move to `waiting` and spawn the steps
    that wait on nothing; a Flow without steps completes at once."""

    starts: tuple[FlowStart, ...]
    actor: str
    kind = MoveKind.START_FLOW


@dataclass(frozen=True, slots=True)
class FlowEnd:
    """How one waiting Flow ends."""

    flow_id: uuid.UUID
    status: Status
    output: Any = None
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EndFlow:
    """Waiting Flows end: completed with their steps' outputs, or failed by a
    step (everything still open under a failed one is cancelled). Fan-in
    makes this move inside the one that ended their last step."""

    ends: tuple[FlowEnd, ...]
    actor: str
    kind = MoveKind.END_FLOW

    def __post_init__(self) -> None:
        _check_targets(self.kind, [e.status for e in self.ends])


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel tasks of one organization and every non-terminal descendant."""

    organization_id: uuid.UUID
    task_ids: tuple[uuid.UUID, ...]
    actor: str
    kind = MoveKind.CANCEL


@dataclass(frozen=True, slots=True)
class Change:
    """A PUT of one task: fields to write (of the mutable ones) and, if
    given, the status to move to."""

    task_id: uuid.UUID
    fields: Mapping[str, Any]
    status: Status | None = None
    # Its queue changed (a new executorId): a task still waiting is published
    # on the new one (the claim refuses its message on the old one).
    requeue: bool = False


@dataclass(frozen=True, slots=True)
class Update:
    """Apply PUTs: each task's fields and status move, with an `updated`
    and a `status` event. The tasks must be locked by :func:`lock` first and
    their changes checked against what is stored."""

    changes: tuple[Change, ...]
    actor: str
    kind = MoveKind.SET_STATUS

    def __post_init__(self) -> None:
        _check_targets(self.kind, [c.status for c in self.changes if c.status is not None])


Move = (
    Create
    | MarkQueued
    | PublishFailed
    | Republish
    | Claim
    | Finish
    | Retry
    | HandBack
    | Release
    | RecoverLease
    | QueueTimeout
    | Unserved
    | FailRecovery
    | StartFlow
    | EndFlow
    | Cancel
    | Update
)


@dataclass(frozen=True, slots=True)
class Publish:
    """A task to publish once the move is committed (after ``countdown`` seconds)."""

    task: TaskRecord
    countdown: float | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """What a move did."""

    # The tasks the move named that it changed, as they are now.
    tasks: Mapping[uuid.UUID, TaskRecord] = field(default_factory=dict)
    # What to publish after commit: new tasks, retries, runs handed back.
    publish: tuple[Publish, ...] = ()
    # How many tasks changed status in all (descendants of a cancel included).
    moved: int = 0
