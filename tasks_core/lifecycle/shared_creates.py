"""Creates of one process that share a statement and its commit.

Concurrent callers of one process (the API's request threads, or threads of
an application) each create a task with its own request; sent one by one,
each would wait on a commit of its own (a WAL flush) and the round trips of
its own statement and publish. :func:`create_shared` sends them through a
group commit (``tasks_core.group_commit``): a create that finds none in
flight goes out at once, alone, as before; the creates that arrive while
one is in flight go together as the next set, in one insert, one commit and
one broker round trip. Each caller is answered only once its tasks are
committed, as alone.

Each create keeps its meaning in a set: its tasks are inserted or refused
on their own (a missing parent refuses one task, not the set), a value
PostgreSQL refuses sends the set again one create at a time so that the
error is its caller's alone, and an outage fails each caller as it would
alone. Creates of different callers go in one statement per actor (the
events name who created each task).
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Sequence

from tasks_core.group_commit import Batcher, one_item_at_fault
from tasks_core.lifecycle.moves import Applied, Create, Publish
from tasks_core.lifecycle.publishing import create
from tasks_core.store import Store
from tasks_core.task import NewTask, TaskRecord

Created = tuple[Applied, dict[uuid.UUID, TaskRecord]]


def create_shared(store: Store, move: Create) -> Created:
    """Like ``publishing.create(store, move)`` (no ``inside``), its statement
    shared with the concurrent creates of this process."""
    result = _creates_for(store).submit(move)
    assert result is not None, "a set answers every create"
    return result


def _send(store: Store, moves: Sequence[Create]) -> list[Created]:
    """The creates of a set: one insert and publish per actor, each create
    answered with its own tasks."""
    by_actor: dict[str, list[NewTask]] = {}
    for move in moves:
        by_actor.setdefault(move.actor, []).extend(move.tasks)
    applied: dict[uuid.UUID, TaskRecord] = {}
    publish: list[Publish] = []
    now: dict[uuid.UUID, TaskRecord] = {}
    for actor, news in by_actor.items():
        done, published = create(store, Create(tuple(news), actor=actor))
        applied.update(done.tasks)
        publish.extend(done.publish)
        now.update(published)
    return [_part(move, applied, publish, now) for move in moves]


def _part(
    move: Create,
    applied: dict[uuid.UUID, TaskRecord],
    publish: list[Publish],
    now: dict[uuid.UUID, TaskRecord],
) -> Created:
    ids = {new.id for new in move.tasks}
    mine = {i: applied[i] for i in ids if i in applied}
    items = tuple(p for p in publish if p.task.id in ids)
    return Applied(tasks=mine, publish=items, moved=len(mine)), {i: now[i] for i in ids if i in now}


_lock = threading.Lock()
# Per process and store; the store is held weakly, so that a disposed one
# (tests make many) is not kept alive by its batcher.
_by_process: dict[tuple[int, int], tuple[weakref.ref[Store], Batcher[Create, Created]]] = {}


def _creates_for(store: Store) -> Batcher[Create, Created]:
    """This process's batcher for ``store`` (made after a fork: a child must
    not share its parent's locks)."""
    key = (os.getpid(), id(store))
    with _lock:
        found = _by_process.get(key)
        if found is None or found[0]() is not store:
            held = weakref.ref(store)

            def send(moves: Sequence[Create]) -> list[Created]:
                live = held()
                assert live is not None, "a store in use is alive"
                return _send(live, moves)

            found = _by_process[key] = (held, Batcher(send, split=one_item_at_fault))
        return found[1]
