"""Group commit for coroutines (tasks_core/group_commit.py: LoopBatcher and
its SetThreads): the callers on an event loop share sets, sent by pool
threads, and the loop never waits for a set."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tasks_core.group_commit import LoopBatcher, SetThreads
from tests.support.wait import until, wait_until


class Refused(Exception):
    pass


class HeldSends:
    """A ``send`` whose first set is held in flight until ``release()``;
    it records every set it is given and answers ``item * 10`` (or what
    ``rest`` says, for the sets after the first)."""

    def __init__(self, rest: Callable[[Sequence[int]], list[int]] | None = None) -> None:
        self.sets: list[list[int]] = []
        self.held = threading.Event()  # the first set is in flight
        self._go = threading.Event()
        self._rest = rest

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.sets.append(list(items))
        if len(self.sets) == 1:
            self.held.set()
            self._go.wait(10)
        elif self._rest is not None:
            return self._rest(items)
        return [i * 10 for i in items]

    def release(self) -> None:
        self._go.set()


@pytest.fixture
def threads() -> Iterator[SetThreads]:
    pool = SetThreads(2, "test-sets")
    yield pool
    pool.shutdown()


async def _behind_a_held_set(
    batcher: LoopBatcher[int, int], sends: HeldSends, first: int, others: Sequence[int]
) -> list[object]:
    """Submit ``first`` and hold its set; submit ``others`` meanwhile; let
    it go. What each caller got (a value, or the error raised to it)."""
    held = asyncio.ensure_future(batcher.submit(first))
    await until(sends.held.is_set, message="the first set was not sent")
    behind = [asyncio.ensure_future(batcher.submit(i)) for i in others]
    await until(lambda: batcher.waiting == len(others), message="the others did not join")
    sends.release()
    return await asyncio.gather(held, *behind, return_exceptions=True)


def test_a_lone_request_goes_at_once_alone(threads: SetThreads) -> None:
    sends = HeldSends()
    sends.release()
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads)
    assert asyncio.run(batcher.submit(7)) == 70
    assert sends.sets == [[7]] and batcher.sets_sent == 1


def test_requests_that_arrive_while_a_set_is_in_flight_go_together_next(
    threads: SetThreads,
) -> None:
    sends = HeldSends()
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads)
    answers = asyncio.run(_behind_a_held_set(batcher, sends, 1, range(2, 10)))
    assert answers == [i * 10 for i in range(1, 10)]  # each caller its own result
    assert sends.sets == [[1], list(range(2, 10))]


def test_a_set_holds_at_most_max_size_requests(threads: SetThreads) -> None:
    sends = HeldSends()
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads, max_size=3)
    answers = asyncio.run(_behind_a_held_set(batcher, sends, 0, range(1, 8)))
    assert answers == [i * 10 for i in range(8)]
    assert sends.sets == [[0], [1, 2, 3], [4, 5, 6], [7]]


def test_a_set_refused_for_one_item_is_sent_again_item_by_item(
    threads: SetThreads,
) -> None:
    def rest(items: Sequence[int]) -> list[int]:
        if 5 in items:
            raise Refused(f"refused {items}")
        return [i * 10 for i in items]

    sends = HeldSends(rest)
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads)
    answers = asyncio.run(_behind_a_held_set(batcher, sends, 1, [4, 5, 6]))
    assert answers[:2] == [10, 40] and answers[3] == 60
    assert isinstance(answers[2], Refused) and str(answers[2]) == "refused [5]"
    assert sends.sets == [[1], [4, 5, 6], [4], [5], [6]]
    assert batcher.sets_sent == 5


def test_an_error_no_item_is_at_fault_for_reaches_every_caller_of_the_set(
    threads: SetThreads,
) -> None:
    def rest(items: Sequence[int]) -> list[int]:
        raise Refused("the database is down")

    sends = HeldSends(rest)
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads, split=lambda _: False)
    answers = asyncio.run(_behind_a_held_set(batcher, sends, 1, [2, 3]))
    assert answers[0] == 10
    assert all(isinstance(a, Refused) for a in answers[1:])
    assert sends.sets == [[1], [2, 3]]


def test_the_loop_runs_on_while_its_set_is_in_flight(threads: SetThreads) -> None:
    sends = HeldSends()
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads)

    async def main() -> int:
        ticks = 0
        waiting = asyncio.ensure_future(batcher.submit(1))
        await until(sends.held.is_set, message="the set was not sent")
        while ticks < 100:  # the loop is free: other coroutines run
            ticks += 1
            await asyncio.sleep(0)
        assert not waiting.done()
        sends.release()
        return await waiting

    assert asyncio.run(main()) == 10


def test_a_caller_that_stops_waiting_leaves_its_item_in_the_set(
    threads: SetThreads,
) -> None:
    sends = HeldSends()
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads)

    async def main() -> list[object]:
        held = asyncio.ensure_future(batcher.submit(1))
        await until(sends.held.is_set, message="the first set was not sent")
        gone = asyncio.ensure_future(batcher.submit(2))
        stays = asyncio.ensure_future(batcher.submit(3))
        await until(lambda: batcher.waiting == 2, message="the others did not join")
        gone.cancel()
        sends.release()
        return await asyncio.gather(held, stays)

    assert asyncio.run(main()) == [10, 30]
    assert sends.sets == [[1], [2, 3]]  # sent whole: the item may already be stored


def test_callers_on_different_loops_share_a_set_and_are_each_answered_on_their_own(
    threads: SetThreads,
) -> None:
    sends = HeldSends()
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads)
    answers: dict[int, tuple[int | None, int]] = {}

    def on_a_loop_of_its_own(item: int) -> None:
        async def call() -> None:
            value = await batcher.submit(item)
            answers[item] = (value, threading.get_ident())

        asyncio.run(call())

    first = threading.Thread(target=on_a_loop_of_its_own, args=(1,))
    first.start()
    assert sends.held.wait(10)
    others = [threading.Thread(target=on_a_loop_of_its_own, args=(i,)) for i in (2, 3)]
    for thread in others:
        thread.start()
    wait_until(lambda: batcher.waiting == 2, timeout=10, message="the others did not join")
    sends.release()
    for thread in [first, *others]:
        thread.join(10)
    assert {item: value for item, (value, _) in answers.items()} == {1: 10, 2: 20, 3: 30}
    # One set for the two that waited, in the order their threads joined it.
    assert [sorted(items) for items in sends.sets] == [[1], [2, 3]]
    assert len({ident for _, ident in answers.values()}) == 3  # each on its own loop's thread


def test_a_batcher_that_never_runs_dry_does_not_keep_the_pool_thread_to_itself() -> None:
    """One pool thread, a batcher whose callers keep coming: another
    batcher's request is sent after the busy one's current set, not after
    it runs dry."""
    pool = SetThreads(1, "one-set-thread")
    order: list[str] = []
    gate = threading.Event()

    def busy_send(items: Sequence[int]) -> list[int]:
        order.append("busy")
        gate.wait(10)
        return list(items)

    def other_send(items: Sequence[int]) -> list[int]:
        order.append("other")
        return list(items)

    busy: LoopBatcher[int, int] = LoopBatcher(busy_send, threads=pool)
    other: LoopBatcher[int, int] = LoopBatcher(other_send, threads=pool)

    async def main() -> None:
        first = asyncio.ensure_future(busy.submit(1))
        await until(lambda: order == ["busy"], message="the busy batcher's set was not sent")
        second = asyncio.ensure_future(busy.submit(2))  # its next set, pending
        await until(lambda: busy.waiting == 1, message="the busy batcher's next set did not join")
        theirs = asyncio.ensure_future(other.submit(3))
        await asyncio.sleep(0)
        gate.set()
        assert await theirs == 3
        await asyncio.gather(first, second)

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
    assert order == ["busy", "other", "busy"]


def test_callers_are_told_when_no_thread_is_left_to_send_their_set() -> None:
    pool = SetThreads(1, "gone")
    pool.shutdown()
    batcher: LoopBatcher[int, int] = LoopBatcher(lambda items: list(items), threads=pool)
    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(batcher.submit(1))
    assert batcher.waiting == 0


def test_set_threads_are_daemons_that_outlive_a_failed_run() -> None:
    """Daemons: a process stopping does not wait on a set stuck on the
    database. A run that raises is logged, and the thread goes on."""
    pool = SetThreads(1, "daemon-check")
    done = threading.Event()

    def fails() -> None:
        raise RuntimeError("a set that failed")

    try:
        pool.submit(fails)
        pool.submit(done.set)
        assert done.wait(10)
        ours = [t for t in threading.enumerate() if t.name.startswith("daemon-check")]
        assert len(ours) == 1 and ours[0].daemon
    finally:
        pool.shutdown()


def test_the_callers_of_a_set_on_one_loop_are_answered_in_one_wake_of_it(
    threads: SetThreads,
) -> None:
    sends = HeldSends()
    batcher: LoopBatcher[int, int] = LoopBatcher(sends, threads=threads)

    async def main() -> tuple[list[object], int]:
        loop = asyncio.get_running_loop()
        wakes = [0]
        wake = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            wakes[0] += 1
            return wake(*args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        answers = await _behind_a_held_set(batcher, sends, 1, range(2, 10))
        return answers, wakes[0]

    answers, wakes = asyncio.run(main())
    assert answers == [i * 10 for i in range(1, 10)]
    assert wakes == 2  # the first set's one caller, then the eight of the next set
