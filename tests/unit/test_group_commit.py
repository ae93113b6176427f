"""Group commit: concurrent requests sent in sets (tasks_core/group_commit.py: Batcher)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from tasks_core.group_commit import Batcher
from tests.support.wait import wait_until


class Refused(Exception):
    pass


def _behind_a_held_set(
    first: int,
    others: Sequence[int],
    rest: Callable[[Sequence[int]], list[int]] = lambda items: [i * 10 for i in items],
    split: bool = True,
) -> tuple[list[list[int]], list[object]]:
    """Submit ``first`` alone and hold its set in flight; submit ``others``
    from threads of their own while it is; then let it go. The sets sent, and
    what each caller got (``first``'s, then the others' in order): a value or
    the error raised to it. The first set is answered like the rest."""
    release = threading.Event()
    sets: list[list[int]] = []

    def send(items: Sequence[int]) -> list[int]:
        sets.append(list(items))
        if len(sets) == 1:
            release.wait(10)
            return [i * 10 for i in items]
        return rest(items)

    batcher: Batcher[int, int] = Batcher(send, split=lambda _: split)
    outcomes: list[object] = [None] * (1 + len(others))

    def call(slot: int, item: int) -> None:
        try:
            outcomes[slot] = batcher.submit(item)
        except Exception as exc:  # what the caller saw
            outcomes[slot] = exc

    callers = [threading.Thread(target=call, args=(0, first))]
    callers += [threading.Thread(target=call, args=(n + 1, i)) for n, i in enumerate(others)]
    callers[0].start()
    wait_until(lambda: len(sets) == 1, timeout=5, message="first set not sent")
    for caller in callers[1:]:
        caller.start()
    wait_until(lambda: batcher.waiting == len(others), timeout=5, message="requests not waiting")
    release.set()
    for caller in callers:
        caller.join(5)
    return sets, outcomes


def test_requests_arriving_while_a_set_is_in_flight_go_together_next() -> None:
    sets, outcomes = _behind_a_held_set(0, [1, 2, 3, 4])
    assert len(sets) == 2 and sets[0] == [0] and sorted(sets[1]) == [1, 2, 3, 4]
    assert outcomes == [0, 10, 20, 30, 40]


def test_a_request_alone_goes_out_at_once_as_a_set_of_one() -> None:
    sets: list[list[int]] = []
    batcher: Batcher[int, int] = Batcher(lambda items: sets.append(list(items)) or list(items))
    assert [batcher.submit(i) for i in range(3)] == [0, 1, 2]
    assert sets == [[0], [1], [2]]


def _refusing(error: Exception) -> Callable[[Sequence[int]], list[int]]:
    """A send that fails any set holding 2, and answers the others."""

    def send(items: Sequence[int]) -> list[int]:
        if 2 in items:
            raise error
        return [i * 10 for i in items]

    return send


def test_a_request_at_fault_fails_alone_and_the_others_of_its_set_succeed() -> None:
    error = Refused("a value the database refuses")
    sets, outcomes = _behind_a_held_set(0, [1, 2], _refusing(error), split=True)
    assert outcomes[:2] == [0, 10] and outcomes[2] is error
    assert sorted(sets[1]) == [1, 2] and sorted(map(tuple, sets[2:])) == [(1,), (2,)]


def test_an_outage_fails_every_request_of_the_set_without_sending_each_again() -> None:
    error = Refused("the database is unreachable")
    sets, outcomes = _behind_a_held_set(0, [1, 2], _refusing(error), split=False)
    assert outcomes[0] == 0 and outcomes[1] is error and outcomes[2] is error
    assert len(sets) == 2


def test_equal_requests_of_different_callers_are_each_answered() -> None:
    """Copies of one message make equal requests: each caller still gets its
    own answer, whichever of them sends the next set (tried many times, since
    which waiter sends is the scheduler's choice)."""
    for _ in range(30):
        sets, outcomes = _behind_a_held_set(7, [7, 7, 7])
        assert outcomes == [70, 70, 70, 70], outcomes
        assert [len(s) for s in sets] == [1, 3]
