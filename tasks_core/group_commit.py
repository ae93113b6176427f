"""Group commit: the requests of concurrent callers sent as one set.

A :class:`Batcher` has no timer: a request that finds no set in flight goes
out at once, alone; the requests that arrive while a set is in flight wait
for it, and then go together as the next set (at most ``max_size``). So a
lone caller adds no delay, and callers that pile up behind one statement
share the next one: its round trip and its commit.

Each caller returns only after its set was sent (its statement committed),
with its own result. A set that fails is sent again one request at a time
when ``split`` says the error may be one request's fault, so that each
caller gets its own error; otherwise every caller of the set gets it.

Two fronts, one way of sending a set: :class:`Batcher` for callers on
threads (one of them sends the set, the others wait), :class:`LoopBatcher`
for coroutines on event loops (a thread of a pool sends the set, and the
callers' loops never block).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from tasks_core.storage.errors import DatabaseFailure, classify

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# The most requests sent in one set.
MAX_SET = 64


# Compared by identity: two callers may send equal requests (copies of one
# message), and each must find its own slot in the queue, not the other's.
@dataclass(slots=True, eq=False)
class Answer(Generic[T, R]):
    """One request and, once its set was sent, its result or its error."""

    item: T
    done: bool = False
    value: R | None = None
    error: BaseException | None = None
    queued: bool = False  # waits in the batcher's queue


class _Sets(Generic[T, R]):
    """What both fronts share: how a set is sent (``send``, and ``split``
    when it fails), the largest set, and how many sets went."""

    def __init__(
        self,
        send: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_size: int = MAX_SET,
        split: Callable[[Exception], bool] = lambda _: True,
    ):
        self._send = send
        self._split = split
        self._max = max_size
        self.sets_sent = 0  # for tests and figures

    def _send_set(self, batch: list[Answer[T, R]]) -> None:
        self.sets_sent += send_set(self._send, self._split, batch)


class Batcher(_Sets[T, R]):
    """Sends the requests of concurrent callers in sets: ``send`` takes a set
    of items and returns one result per item, in order."""

    def __init__(
        self,
        send: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_size: int = MAX_SET,
        split: Callable[[Exception], bool] = lambda _: True,
    ):
        super().__init__(send, max_size=max_size, split=split)
        self._cond = threading.Condition()
        self._pending: list[Answer[T, R]] = []
        self._busy = False

    @property
    def waiting(self) -> int:
        """Requests waiting for the set in flight to end."""
        with self._cond:
            return len(self._pending)

    def submit(self, item: T) -> R | None:
        """Send ``item`` in the next set; its result (or the set's error)."""
        (answer,) = self.submit_many([item])
        if answer.error is not None:
            raise answer.error
        return answer.value

    def submit_many(self, items: Sequence[T]) -> list[Answer[T, R]]:
        """Send ``items`` together (with whatever else waits), in as few sets
        as ``max_size`` allows; each one's answer, in order: its result, or
        the error of the set (or of the item alone) that carried it."""
        slots: list[Answer[T, R]] = [Answer(item) for item in items]
        while True:
            with self._cond:
                if not self._busy and not self._pending and len(slots) <= self._max:
                    batch = slots  # the common case: nothing in flight, nothing queued
                else:
                    self._pending.extend(s for s in slots if not s.queued)
                    for slot in slots:
                        slot.queued = True
                    while self._busy and not all(s.done for s in slots):
                        self._cond.wait()
                    # This caller sends the next set, its own requests first.
                    mine = [s for s in slots if not s.done]
                    if not mine:
                        return slots
                    others = [s for s in self._pending if s not in mine]
                    batch = [*mine, *others][: self._max]
                    taken = set(map(id, batch))
                    self._pending = [s for s in self._pending if id(s) not in taken]
                self._busy = True
            try:
                self._send_set(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if all(s.done for s in slots):
                return slots


class Runs(Protocol):
    """Where a :class:`LoopBatcher` sends its sets: ``submit`` runs the
    callable on some thread, and raises ``RuntimeError`` once shut down."""

    def submit(self, fn: Callable[[], None], /) -> object: ...


class SetThreads:
    """A fixed pool of daemon threads running what it is given, in order.

    Daemon, unlike ``concurrent.futures``' pools, which are joined at exit:
    a process that is stopping must not wait on a set stuck on a database
    that does not answer (a network cut); the set's callers get no answer,
    as after a crash, and a create they send again with its
    ``Idempotency-Key`` is answered once."""

    def __init__(self, count: int, name: str) -> None:
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._open = True
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], None], /) -> None:
        if not self._open:
            raise RuntimeError("cannot run new work after shutdown")
        self._work.put(fn)

    def shutdown(self) -> None:
        """Let the threads end once the work given so far is done."""
        self._open = False
        for _ in self._threads:
            self._work.put(None)

    def _serve(self) -> None:
        while (fn := self._work.get()) is not None:
            try:
                fn()
            except Exception:  # a thread must go on for the other sets
                log.exception("a set failed in its thread")


class LoopBatcher(_Sets[T, R]):
    """:class:`Batcher` for coroutines: ``await submit(item)``.

    The API serves creates on its event loop; a thread hop per request (and
    a wait on a lock in that thread) cost it more than the create itself
    once many requests were in flight. Here a request only joins the
    pending list: when no set is in flight, one thread of ``threads`` takes
    the list as a set, sends it, settles each caller's future on the
    caller's own loop, and queues what arrived meanwhile as the next set
    (behind other batchers' sets: the threads are shared fairly). So a set
    costs one hop, however many requests it carries, and a loop never
    waits for the database. One set of a batcher is in flight at a time.

    A caller that stops waiting (its request went away) does not take its
    item back: the set it joined is sent whole, as a thread's caller's is.
    """

    def __init__(
        self,
        send: Callable[[Sequence[T]], Sequence[R]],
        *,
        threads: Runs,
        max_size: int = MAX_SET,
        split: Callable[[Exception], bool] = lambda _: True,
    ):
        super().__init__(send, max_size=max_size, split=split)
        self._threads = threads
        self._lock = threading.Lock()  # held only to touch the list, never while sending
        self._pending: list[tuple[Answer[T, R], asyncio.Future[R | None]]] = []
        self._busy = False

    @property
    def waiting(self) -> int:
        """Requests waiting for the set in flight to end."""
        with self._lock:
            return len(self._pending)

    async def submit(self, item: T) -> R | None:
        """Send ``item`` in the next set; its result (or the set's error)."""
        future: asyncio.Future[R | None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._pending.append((Answer(item), future))
            start, self._busy = not self._busy, True
        if start:
            self._queue_next_set()
        return await future

    def _queue_next_set(self) -> None:
        """Give the next set to a pool thread; without one (the pool is shut
        down) every waiting caller gets the error."""
        try:
            self._threads.submit(self._send_next_set)
        except RuntimeError as exc:  # the pool is shut down
            self._fail([], exc)

    def _send_next_set(self) -> None:
        """In a pool thread: send one set, then queue the next one behind
        the sets of the other batchers, so that a batcher that never runs
        dry (one busy API key) does not keep a thread to itself."""
        with self._lock:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
        try:
            self._send_set([a for a, _ in batch])
        except BaseException as exc:  # never leave callers waiting on a dead thread
            self._fail(batch, exc)
            raise
        _resolve_soon(batch)
        with self._lock:
            more = bool(self._pending)
            self._busy = more
        if more:
            self._queue_next_set()

    def _fail(
        self, batch: list[tuple[Answer[T, R], asyncio.Future[R | None]]], exc: BaseException
    ) -> None:
        with self._lock:
            stranded, self._pending, self._busy = [*batch, *self._pending], [], False
        for answer, _ in stranded:
            answer.error = exc
        _resolve_soon(stranded)


def send_set(
    send: Callable[[Sequence[T]], Sequence[R]],
    split: Callable[[Exception], bool],
    batch: list[Answer[T, R]],
) -> int:
    """Send one set and settle each of its answers with its result or error;
    how many times ``send`` was called (a split set is sent again item by item)."""
    try:
        values = send([s.item for s in batch])
    except Exception as exc:  # noqa: BLE001  (raised again in each caller)
        if len(batch) == 1 or not split(exc):
            for slot in batch:
                _settle(slot, error=exc)
            return 1
        # Which request failed the set is not known (an outcome PostgreSQL
        # refuses, say): each is sent alone, so that the error is its own.
        return 1 + sum(send_set(send, split, [slot]) for slot in batch)
    for slot, value in zip(batch, values, strict=True):
        _settle(slot, value=value)
    return 1


def _resolve_soon(settled: Sequence[tuple[Answer[T, R], asyncio.Future[R | None]]]) -> None:
    """Settle waiting coroutines' futures from a thread, each on its own
    loop: one wake of each loop for the whole set, not one per caller."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Answer[T, R], asyncio.Future[R | None]]]]
    by_loop = {}
    for answer, future in settled:
        by_loop.setdefault(future.get_loop(), []).append((answer, future))
    for loop, theirs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve, theirs)


def _resolve(settled: Sequence[tuple[Answer[T, R], asyncio.Future[R | None]]]) -> None:
    """On the callers' loop: give each future its answer."""
    for answer, future in settled:
        if future.done():  # its caller stopped waiting
            continue
        if answer.error is not None:
            future.set_exception(answer.error)
        else:
            future.set_result(answer.value)


def _settle(
    slot: Answer[T, R], *, value: R | None = None, error: BaseException | None = None
) -> None:
    slot.value, slot.error, slot.done = value, error, True


def one_item_at_fault(exc: Exception) -> bool:
    """A value PostgreSQL refuses is one request's fault: the set is sent
    again one by one. An outage fails every request of the set alike (each
    caller waits it out as it would alone)."""
    return classify(exc) is DatabaseFailure.DATA
