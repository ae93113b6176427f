"""When a client sends a call again, and how it waits for a task to end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from tasks_core.client.calls import WAIT_SECONDS_MAX


@dataclass(frozen=True)
class Retry:
    """Resend a retryable call up to ``attempts`` times in all, the pauses
    doubling from ``first_delay`` to at most ``max_delay`` seconds: long
    enough together (about 10 s by default) to ride out an API restart."""

    attempts: int = 8
    first_delay: float = 0.1
    max_delay: float = 2.0

    def delays(self) -> Iterator[float]:
        """The pause before each resend (``attempts - 1`` of them)."""
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay)


class WaitClock:
    """The deadline of ``wait``, and what each long-poll asks for.

    Each GET asks the API to hold it (``waitSeconds``) until the task ends
    or the deadline comes. An answer that came back early with the task
    still running (a server without long polls, or woken for nothing) is
    followed by a short pause, growing to 1 s, so that waiting never
    becomes a tight loop.
    """

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._pause = 0.05

    def remaining(self) -> float:
        if self.deadline is None:
            return WAIT_SECONDS_MAX
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def next_wait(self) -> float:
        return min(self.remaining(), WAIT_SECONDS_MAX)

    def pause_after(self, asked: float, took: float) -> float:
        """Seconds to pause after a GET that asked to wait ``asked`` and took ``took``."""
        if took >= asked * 0.5:
            self._pause = 0.05
            return 0.0
        pause = min(self._pause, self.remaining())
        self._pause = min(self._pause * 2, 1.0)
        return pause
