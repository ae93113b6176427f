"""Tasks no worker serves: the sweeper fails them ``unknown_kind``.

A task of a kind no worker registers (a typo such as ``Reprot``, a pool not
deployed yet, an executorId nobody runs) would otherwise wait `queued` for
ever. Each worker node lists the queues it consumes in the worker registry
(``tasks_core.storage.workers``); a task that has waited longer than
``UNSERVED_TIMEOUT_SECONDS`` on a queue that no node heard from within that
long lists fails with ``unknown_kind``, its message naming the queue, the
kinds that are served, and the nearest one. A failed step fails its Flow as
any failure does.

The same rule covers a pool that is down for longer than the timeout: its
waiting tasks fail rather than wait. Deployments whose pools scale to zero,
or that would rather have tasks wait out an outage, raise the timeout or set
it to 0 (never). Workers must be started with ``tasks-core worker`` (which
heartbeats); a bare ``celery worker`` is not in the registry.
"""

from __future__ import annotations

import difflib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from tasks_core.lifecycle.moves import Unserved
from tasks_core.lifecycle.publishing import execute
from tasks_core.queues import parse_queue, queue_name
from tasks_core.recovery_failures import SWEEPER, Seen, Tally, each_alone, skip_failed
from tasks_core.storage.queues import waiting_longer_than, waiting_on_since
from tasks_core.storage.tasks import Queue
from tasks_core.storage.workers import queues_heard_within
from tasks_core.store import Store

# The sweeper's action (``tasks_sweeper_actions_total{action="unknown_kind"}``).
UNKNOWN_KIND = "unknown_kind"

# Queues looked at per pass; the rest wait for the next.
_QUEUES_PER_PASS = 100


def fail_unserved(store: Store) -> Tally:
    """Fail the tasks that waited longer than UNSERVED_TIMEOUT_SECONDS on a
    queue no worker node heard from within as long consumes."""
    settings = store.settings
    timeout = settings.unserved_timeout_seconds
    tally: Tally = Counter()
    if timeout <= 0:
        return tally
    with store.statement() as conn:
        served = queues_heard_within(conn, timeout)
        waiting = waiting_longer_than(conn, timeout, limit=_QUEUES_PER_PASS)
    kinds = served_kinds(served, settings.queue_prefix)
    for queue in waiting:
        name = queue_name(*queue, settings.queue_prefix)
        if name in served:
            continue
        with store.statement() as conn:
            ids = waiting_on_since(conn, queue, timeout, batch=settings.sweep_batch)
        move = Unserved(name, (), timeout, unserved_message(queue, name, timeout, kinds), SWEEPER)
        failures = [(Seen(i), exc) for i, exc in each_alone(ids, _failer(store, move, tally))]
        tally.update(skip_failed(store, "unserved", failures))
    return tally


def _failer(store: Store, move: Unserved, tally: Tally) -> Callable[[Sequence[uuid.UUID]], None]:
    """The move of a part of one queue's tasks, counted in ``tally``."""

    def fail(part: Sequence[uuid.UUID]) -> None:
        tally[UNKNOWN_KIND] += execute(store, replace(move, task_ids=tuple(part))).moved

    return fail


def served_kinds(queues: Iterable[str], prefix: str) -> list[str]:
    """The kinds of the task queues among ``queues``."""
    return sorted({p[0] for p in (parse_queue(q, prefix) for q in queues) if p is not None})


def unserved_message(queue: Queue, name: str, timeout: float, served: Sequence[str]) -> str:
    """What the task's error says: which queue nobody took, for how long, and
    which kinds are served (with the nearest, for a typo)."""
    kind, executor_id = queue
    waited = f"no worker took queue {name} for {timeout:g} s"
    if executor_id is not None and kind in served:
        return f"no worker serves kind {kind!r} on executorId {executor_id!r}: {waited}"
    known = ", ".join(served) or "none"
    message = f"no worker serves kind {kind!r}: {waited} (kinds served: {known})"
    nearest = difflib.get_close_matches(kind, served, n=1)
    return f"{message}; did you mean {nearest[0]!r}?" if nearest else message
