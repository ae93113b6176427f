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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tasks_core.storage.errors import DatabaseFailure, classify

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


class Batcher(Generic[T, R]):
    """Sends the requests of concurrent callers in sets: ``send`` takes a set
    of items and returns one result per item, in order."""

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
        self._cond = threading.Condition()
        self._pending: list[Answer[T, R]] = []
        self._busy = False
        self.sets_sent = 0  # for tests and figures

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
                self._run(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            if all(s.done for s in slots):
                return slots

    def _run(self, batch: list[Answer[T, R]]) -> None:
        self.sets_sent += 1
        try:
            values = self._send([s.item for s in batch])
        except Exception as exc:  # noqa: BLE001  (raised again in each caller)
            if len(batch) == 1 or not self._split(exc):
                for slot in batch:
                    _settle(slot, error=exc)
                return
            # Which request failed the set is not known (an outcome PostgreSQL
            # refuses, say): each is sent alone, so that the error is its own.
            for slot in batch:
                self._run([slot])
            return
        for slot, value in zip(batch, values, strict=True):
            _settle(slot, value=value)


def _settle(
    slot: Answer[T, R], *, value: R | None = None, error: BaseException | None = None
) -> None:
    slot.value, slot.error, slot.done = value, error, True


def one_item_at_fault(exc: Exception) -> bool:
    """A value PostgreSQL refuses is one request's fault: the set is sent
    again one by one. An outage fails every request of the set alike (each
    caller waits it out as it would alone)."""
    return classify(exc) is DatabaseFailure.DATA
