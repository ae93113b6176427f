"""Claims and outcomes of the runs one worker process has in hand, in sets.

In a thread pool (``--pool threads``) many runs share a process. Each run
still claims its task and writes its outcome itself, but through a
:class:`~tasks_core.group_commit.Batcher`, which sends the requests that wait
together as one set move (``claim_tasks``, ``finish_tasks``): one statement
for all.

The batching is a group commit, with no timer (``tasks_core.group_commit``).
So a prefork child, which has one run in hand, sends sets of one, as before,
and adds no delay; a busy thread pool sends sets as large as the requests
that pile up behind one statement.

Each request keeps its meaning inside a set: a claim is guarded per task
(a task named twice in one set is claimed once, for the first caller), an
outcome is fenced per attempt (a stale one is dropped, the others applied),
and every caller returns only after its set's statement committed, so the
message is acked after its outcome is durable, as before.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from tasks_core.group_commit import Batcher, one_item_at_fault
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.worker_protocol import Outcome, claim_tasks, finish_tasks, renew_run_leases


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    task_id: uuid.UUID
    queue: str | None


@dataclass(frozen=True, slots=True)
class OutcomeRequest:
    run: TaskRecord
    outcome: Outcome


@dataclass(slots=True)
class RunBatchers:
    """The claim and outcome batchers of one worker process."""

    store: Store
    worker: str
    claims: Batcher[ClaimRequest, TaskRecord | None] = field(init=False)
    outcomes: Batcher[OutcomeRequest, TaskRecord | None] = field(init=False)
    renewals: Batcher[tuple[uuid.UUID, int], bool] = field(init=False)

    def __post_init__(self) -> None:
        self.claims = Batcher(self._claim, split=one_item_at_fault)
        self.outcomes = Batcher(self._finish, split=one_item_at_fault)
        self.renewals = Batcher(self._renew, split=one_item_at_fault)

    def _renew(self, runs: Sequence[tuple[uuid.UUID, int]]) -> list[bool]:
        """Lease renewals (task, attempt) in one statement; False: no longer current."""
        renewed = renew_run_leases(self.store, runs)
        return [task_id in renewed for task_id, _ in runs]

    def _claim(self, requests: Sequence[ClaimRequest]) -> list[TaskRecord | None]:
        """One claim per queue named (the claim checks each task's queue):
        one statement for a set, since a worker's messages of a moment
        mostly come from one queue. A task named twice is claimed once."""
        claimed: dict[tuple[uuid.UUID, str | None], TaskRecord] = {}
        for queue in dict.fromkeys(r.queue for r in requests):
            ids = list(dict.fromkeys(r.task_id for r in requests if r.queue == queue))
            runs = claim_tasks(self.store, ids, worker=self.worker, queue=queue)
            claimed.update({(i, queue): run for i, run in runs.items()})
        return [claimed.pop((r.task_id, r.queue), None) for r in requests]

    def _finish(self, requests: Sequence[OutcomeRequest]) -> list[TaskRecord | None]:
        """One fenced write of every outcome (with the fan-in of the steps
        among them, once per Flow); a stale run's outcome is None."""
        runs = {r.run.id: r for r in requests}
        if len(runs) < len(requests):  # the same task twice: each alone, fenced
            return [self._finish_one(r) for r in requests]
        results = [(r.run, r.outcome) for r in requests]
        finished = finish_tasks(self.store, results, worker=self.worker)
        return [finished.get(r.run.id) for r in requests]

    def _finish_one(self, request: OutcomeRequest) -> TaskRecord | None:
        finished = finish_tasks(self.store, [(request.run, request.outcome)], worker=self.worker)
        return finished.get(request.run.id)


_lock = threading.Lock()
_by_process: dict[tuple[int, int, str], RunBatchers] = {}


def batchers_for(store: Store, worker: str) -> RunBatchers:
    """This process's batchers for ``store`` and worker name (made after a
    fork: a child must not share its parent's locks)."""
    key = (os.getpid(), id(store), worker)
    with _lock:
        found = _by_process.get(key)
        if found is None or found.store is not store:
            found = _by_process[key] = RunBatchers(store, worker)
        return found
