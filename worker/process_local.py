"""Objects a process keeps one of, made again in each process.

A prefork pool's child inherits its parent's objects but not its threads,
and a lock held at the fork stays held in the child: an object that owns a
thread or a lock (the watch of runs, the late writer of outcomes) is made
anew, on first use, in the process that uses it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def process_local(make: Callable[[], T]) -> Callable[[], T]:
    """A function that returns this process's one object made by ``make``."""
    made: dict[int, T] = {}
    lock = threading.Lock()

    def get() -> T:
        with lock:
            found = made.get(os.getpid())
            if found is None:
                found = made[os.getpid()] = make()
            return found

    return get
