"""How long the runs of each queue take in this process, to size run sets.

A run set (one message naming several tasks of a queue) is claimed and
recorded in parts, each as large as the worker expects to run within
``RUN_SET_WINDOW_SECONDS``: all of a set of short tasks in one claim and one
outcome write, a set of long tasks one task at a time, and the rest of it
handed back to the queue, where idle workers take it. The expectation is a
moving average of the runs of the queue in this process; a queue with none
yet is sampled with one task first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

# Weight of the newest run in the average: a few runs change it, one odd run
# does not.
NEWEST = 0.2

# Most queues whose pace a process keeps (a worker serves a few; this bounds
# what a stream of unexpected routing keys could make it keep).
MAX_QUEUES = 256


@dataclass(slots=True)
class Pace:
    """The average run of one queue here, in seconds (None before the first)."""

    seconds: float | None = None

    def note(self, seconds: float) -> None:
        self.seconds = (
            seconds if self.seconds is None else (1 - NEWEST) * self.seconds + NEWEST * seconds
        )

    def share(self, window: float, pending: int) -> int:
        """How many of ``pending`` tasks to claim now: those expected to run
        within ``window`` (at least one; one while the pace is unknown)."""
        if self.seconds is None:
            return min(1, pending)
        return max(1, min(pending, int(window / max(self.seconds, 1e-6))))


_lock = threading.Lock()
_paces: OrderedDict[str | None, Pace] = OrderedDict()


def pace_of(queue: str | None) -> Pace:
    """This process's pace of ``queue``."""
    with _lock:
        pace = _paces.pop(queue, None) or Pace()
        _paces[queue] = pace
        if len(_paces) > MAX_QUEUES:
            _paces.popitem(last=False)
        return pace
