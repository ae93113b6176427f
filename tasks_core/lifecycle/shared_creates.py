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
alone. A create may bring an ``inside`` of its own (what must commit with
its insert, or not at all: an ``Idempotency-Key``'s claim): a set with one
runs in a transaction, each ``inside`` called with its own create's part,
and one that refuses its create (raises :class:`ItemRefused`, or a
``Conflict``: its key names another body) sends the set again one create
at a time. The ``inside``s of one kind that can go together
(:class:`Joined`: the keys' claims) are done for the whole set in one go.

Each caller (actor: an API key) has its sets of its own, so that a
set is one statement, committed or refused as a whole, and its events name
who created each task.

Threads call :func:`create_shared`; coroutines (the API's requests, on its
event loop) await :func:`create_shared_soon`, whose sets are sent by a
small pool of this process's threads (``SET_THREADS``) without a hop per
request. The two share no sets.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection

from tasks_core.errors import Conflict
from tasks_core.group_commit import Batcher, LoopBatcher, SetThreads, one_item_at_fault
from tasks_core.lifecycle.moves import Applied, Create
from tasks_core.lifecycle.publishing import create
from tasks_core.store import Store
from tasks_core.task import TaskRecord

Created = tuple[Applied, dict[uuid.UUID, TaskRecord]]
Inside = Callable[[Connection, Applied], None]
Shared = tuple[Create, Inside | None]  # a create of a set, and what commits with it


class Joined(ABC):
    """An ``inside`` that the creates of a set do together: one statement for
    all of them (each Idempotency-Key's claim), where each alone would cost
    one each. Called alone, it does its own create's part."""

    @abstractmethod
    def __call__(self, conn: Connection, applied: Applied) -> None: ...

    @classmethod
    @abstractmethod
    def together(cls, conn: Connection, parts: Sequence[tuple[Any, Applied]]) -> None:
        """Do the ``inside``s of this class of a set (each with its create's
        part) in one go; raise :class:`ItemRefused` when one of them would
        refuse its create, so that each is then done alone."""


class ItemRefused(Exception):
    """Raised by a create's ``inside`` when that create can not go as it is
    (the set is sent again one create at a time, so that it is its own)."""


def create_shared(store: Store, move: Create, *, inside: Inside | None = None) -> Created:
    """Like ``publishing.create(store, move, inside=inside)``, its statement
    shared with the concurrent creates of this process by the same actor."""
    result = creates_for(store, move.actor).submit((move, inside))
    assert result is not None, "a set answers every create"
    return result


async def create_shared_soon(
    store: Store, move: Create, *, inside: Inside | None = None
) -> Created:
    """:func:`create_shared` for a coroutine: its loop does not wait on the database."""
    result = await loop_creates_for(store, move.actor).submit((move, inside))
    assert result is not None, "a set answers every create"
    return result


def _send(store: Store, actor: str, shared: Sequence[Shared]) -> list[Created]:
    """The creates of a set: one insert and one publish, each create answered
    with its own tasks; in one transaction with their ``inside``s, if any."""
    news = tuple(new for move, _ in shared for new in move.tasks)
    insides = [(move, inside) for move, inside in shared if inside is not None]

    def each_inside(conn: Connection, applied: Applied) -> None:
        joined: dict[type[Joined], list[tuple[Any, Applied]]] = {}
        for move, inside in insides:
            part = _part(move, applied, {})[0]
            if isinstance(inside, Joined) and len(insides) > 1:
                joined.setdefault(type(inside), []).append((inside, part))
            else:
                inside(conn, part)
        for kind, parts in joined.items():
            kind.together(conn, parts)

    applied, now = create(store, Create(news, actor=actor), inside=each_inside if insides else None)
    return [_part(move, applied, now) for move, _ in shared]


def _one_create_at_fault(exc: Exception) -> bool:
    """A value PostgreSQL refuses, or a create its ``inside`` refused (a
    ``Conflict`` too: a key used with another body, or a collision that
    outlasted its retries, which each create then meets alone)."""
    return isinstance(exc, ItemRefused | Conflict) or one_item_at_fault(exc)


def _part(move: Create, applied: Applied, now: dict[uuid.UUID, TaskRecord]) -> Created:
    ids = {new.id for new in move.tasks}
    mine = {i: t for i, t in applied.tasks.items() if i in ids}
    items = tuple(p for p in applied.publish if p.task.id in ids)
    return Applied(tasks=mine, publish=items, moved=len(mine)), {
        i: t for i, t in now.items() if i in ids
    }


# The batchers of the actors seen last in this process; one idle long enough
# to fall out is made again when its actor comes back.
MAX_ACTORS = 1024
# The threads that send the sets of coroutines' creates: sets of different
# actors go in parallel, each on a connection of the store's pool (10 by
# default), and each actor's next set queues behind the others'.
SET_THREADS = 8
Send = Callable[[Sequence[Shared]], list[Created]]
B = TypeVar("B")
_lock = threading.Lock()
_batchers: OrderedDict[tuple[int, int, str, str], tuple[weakref.ref[Store], Any]] = OrderedDict()
_pools: dict[int, SetThreads] = {}


def creates_for(store: Store, actor: str) -> Batcher[Shared, Created]:
    """This process's batcher of ``actor``'s creates on ``store``, for threads."""

    def made(send: Send) -> Batcher[Shared, Created]:
        return Batcher(send, split=_one_create_at_fault)

    return _batcher_of(store, actor, "threads", made)


def loop_creates_for(store: Store, actor: str) -> LoopBatcher[Shared, Created]:
    """This process's batcher of ``actor``'s creates on ``store``, for coroutines."""

    def made(send: Send) -> LoopBatcher[Shared, Created]:
        return LoopBatcher(send, threads=_set_threads(), split=_one_create_at_fault)

    return _batcher_of(store, actor, "loop", made)


def _batcher_of(store: Store, actor: str, front: str, make: Callable[[Send], B]) -> B:
    """The batcher ``make`` made for ``actor`` on ``store`` in this process
    (made again after a fork: a child must not share its parent's locks).
    The store is held weakly, so that a disposed one (tests make many) is
    not kept alive."""
    key = (os.getpid(), id(store), actor, front)
    with _lock:
        found = _batchers.get(key)
        if found is None or found[0]() is not store:
            held = weakref.ref(store)

            def send(shared: Sequence[Shared]) -> list[Created]:
                live = held()
                assert live is not None, "a store in use is alive"
                return _send(live, actor, shared)

            found = _batchers[key] = (held, make(send))
            if len(_batchers) > MAX_ACTORS:
                _batchers.popitem(last=False)
        _batchers.move_to_end(key)
        batcher: B = found[1]
        return batcher


def _set_threads() -> SetThreads:
    """This process's pool of set-sending threads (called under ``_lock``)."""
    pool = _pools.get(os.getpid())
    if pool is None:
        pool = _pools[os.getpid()] = SetThreads(SET_THREADS, "create-sets")
    return pool
