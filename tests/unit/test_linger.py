"""Messages of a busy queue held a moment to go as one run set (tasks_core/linger.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tasks_core.linger import BACKLOG_SECONDS, BEHIND_DEPTH, Linger
from tests.support.wait import wait_until


class Pushes:
    """A fake broker: records each push, answers a queue length."""

    def __init__(self, depth: int = 5, fail: bool = False) -> None:
        self.sets: list[tuple[str, list[str]]] = []
        self.depth = depth
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, queue: str, messages: Sequence[str]) -> int:
        if self.fail:
            raise ConnectionError("broker down")
        with self.lock:
            self.sets.append((queue, list(messages)))
        return self.depth


def test_a_message_of_an_idle_queue_is_not_held() -> None:
    linger: Linger[str] = Linger(Pushes(), set_max=8)
    assert linger.offer("q", "never-seen") is False  # nothing known of q: publish now
    linger.observed("q", 1)  # the last push found the queue empty
    assert linger.offer("q", "idle") is False


def test_one_message_waiting_beside_the_pushed_one_is_not_a_backlog() -> None:
    # A worker that has not yet come back for the message before: not behind.
    linger: Linger[str] = Linger(Pushes(), set_max=8, linger=60)
    linger.observed("q", BEHIND_DEPTH - 1)
    assert linger.offer("q", "next") is False
    linger.observed("q", BEHIND_DEPTH)
    assert linger.offer("q", "held")


def test_messages_of_a_queue_that_is_behind_go_together_after_the_linger() -> None:
    pushes = Pushes()
    linger: Linger[str] = Linger(pushes, set_max=8, linger=0.01)
    linger.observed("q", 3)  # two messages were already waiting
    assert linger.offer("q", "a") and linger.offer("q", "b") and linger.offer("q", "c")
    wait_until(lambda: pushes.sets, timeout=5, message="held messages never sent")
    assert pushes.sets == [("q", ["a", "b", "c"])]
    assert linger.held_total == 3


def test_a_full_set_goes_at_once_from_the_caller() -> None:
    pushes = Pushes()
    linger: Linger[str] = Linger(pushes, set_max=2, linger=60)
    linger.observed("q", 3)
    assert linger.offer("q", "a") and pushes.sets == []
    assert linger.offer("q", "b") and pushes.sets == [("q", ["a", "b"])]


def test_a_held_message_is_not_overtaken_by_a_later_one() -> None:
    pushes = Pushes(depth=1)
    linger: Linger[str] = Linger(pushes, set_max=8, linger=60)
    linger.observed("q", 4)
    assert linger.offer("q", "first")
    linger.observed("q", 1)  # the queue drained meanwhile (another process pushed)
    assert linger.offer("q", "second")  # held behind the first, not published before it
    linger.flush()
    assert pushes.sets == [("q", ["first", "second"])]


def test_a_backlog_seen_long_ago_is_not_believed() -> None:
    linger: Linger[str] = Linger(Pushes(), set_max=8)
    linger.observed("q", 10)
    linger._queues["q"].seen -= BACKLOG_SECONDS * 2
    assert linger.offer("q", "late") is False


def test_a_failed_push_of_held_messages_is_logged_and_the_next_go_on() -> None:
    pushes = Pushes(fail=True)
    linger: Linger[str] = Linger(pushes, set_max=8, linger=60)
    linger.observed("q", 3)
    assert linger.offer("q", "lost")
    linger.flush()  # logs; the sweeper republishes the task
    assert pushes.sets == []
    pushes.fail = False
    assert linger.offer("q", "next")  # still believed behind: held
    linger.flush()
    assert pushes.sets == [("q", ["next"])]
