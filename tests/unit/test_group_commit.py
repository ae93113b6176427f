"""Group commit: concurrent requests sent in sets (tasks_core/group_commit.py: Batcher)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tasks_core.group_commit import Batcher
from tests.support.wait import wait_until


class Refused(Exception):
    pass


def test_requests_arriving_while_a_set_is_in_flight_go_together_next() -> None:
    release = threading.Event()
    sets: list[list[int]] = []

    def send(items: Sequence[int]) -> list[int]:
        sets.append(list(items))
        if len(sets) == 1:
            release.wait(10)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(send)
    results: dict[int, int | None] = {}
    callers = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.submit(i)))
        for i in range(5)
    ]
    callers[0].start()
    wait_until(lambda: len(sets) == 1, timeout=5, message="first set not sent")
    for caller in callers[1:]:
        caller.start()
    wait_until(lambda: batcher.waiting == 4, timeout=5, message="requests not waiting")
    release.set()
    for caller in callers:
        caller.join(5)
    assert len(sets) == 2 and sets[0] == [0] and sorted(sets[1]) == [1, 2, 3, 4]
    assert results == {i: i * 10 for i in range(5)}


def test_a_request_alone_goes_out_at_once_as_a_set_of_one() -> None:
    sets: list[list[int]] = []
    batcher: Batcher[int, int] = Batcher(lambda items: sets.append(list(items)) or list(items))
    assert [batcher.submit(i) for i in range(3)] == [0, 1, 2]
    assert sets == [[0], [1], [2]]


def _two_waiting_then(send_error: Exception, split: bool) -> tuple[list[list[int]], list[object]]:
    release = threading.Event()
    sets: list[list[int]] = []

    def send(items: Sequence[int]) -> list[int]:
        sets.append(list(items))
        if len(sets) == 1:
            release.wait(10)
            return list(items)
        if 2 in items:
            raise send_error
        return list(items)

    batcher: Batcher[int, int] = Batcher(send, split=lambda _: split)
    outcomes: list[object] = [None, None, None]

    def call(i: int) -> None:
        try:
            outcomes[i] = batcher.submit(i)
        except Exception as exc:  # what the caller saw
            outcomes[i] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    wait_until(lambda: len(sets) == 1, timeout=5, message="first set not sent")
    others = [threading.Thread(target=call, args=(i,)) for i in (1, 2)]
    for other in others:
        other.start()
    wait_until(lambda: batcher.waiting == 2, timeout=5, message="requests not waiting")
    release.set()
    for thread in (first, *others):
        thread.join(5)
    return sets, outcomes


def test_a_request_at_fault_fails_alone_and_the_others_of_its_set_succeed() -> None:
    error = Refused("a value the database refuses")
    sets, outcomes = _two_waiting_then(error, split=True)
    assert outcomes[:2] == [0, 1] and outcomes[2] is error
    assert sorted(sets[1]) == [1, 2] and sorted(map(tuple, sets[2:])) == [(1,), (2,)]


def test_an_outage_fails_every_request_of_the_set_without_sending_each_again() -> None:
    error = Refused("the database is unreachable")
    sets, outcomes = _two_waiting_then(error, split=False)
    assert outcomes[0] == 0 and outcomes[1] is error and outcomes[2] is error
    assert len(sets) == 2


def test_equal_requests_of_different_callers_are_each_answered() -> None:
    """Copies of one message make equal requests: each caller still gets its
    own answer, whichever of them sends the next set."""
    for _ in range(30):
        release = threading.Event()
        sets: list[list[int]] = []

        def send(items: Sequence[int], sets: list[list[int]] = sets,
                 release: threading.Event = release) -> list[int]:  # fmt: skip
            sets.append(list(items))
            if len(sets) == 1:
                release.wait(10)
            return [i * 10 for i in items]

        batcher: Batcher[int, int] = Batcher(send)
        answers: list[object] = []

        def call(b: Batcher[int, int] = batcher, out: list[object] = answers) -> None:
            try:
                out.append(b.submit(7))
            except BaseException as exc:  # the test looks at it
                out.append(exc)

        first = threading.Thread(target=call)
        first.start()
        wait_until(lambda s=sets: len(s) == 1, timeout=5, message="first set not sent")
        copies = [threading.Thread(target=call) for _ in range(3)]
        for copy in copies:
            copy.start()
        wait_until(lambda b=batcher: b.waiting == 3, timeout=5, message="copies not waiting")
        release.set()
        for caller in [first, *copies]:
            caller.join(5)
        assert answers == [70, 70, 70, 70], answers
        assert sorted(len(s) for s in sets) == [1, 3]
