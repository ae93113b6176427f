"""Wait on a condition with a deadline, instead of sleeping in a test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import monotonic, sleep
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Return the first truthy value of ``predicate()``, polled every ``interval`` seconds.

    The predicate is called at least once, and once more at the deadline, so a
    short timeout cannot fail a condition that already holds. Exceptions of
    the predicate propagate: a broken check should fail loudly, not time out.
    Raises AssertionError with ``message`` if no truthy value came by ``timeout``.
    """
    deadline = monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - monotonic()
        if remaining <= 0:
            what = message or "condition not met"
            raise AssertionError(f"{what}: still false after {timeout}s (last value: {value!r})")
        sleep(min(interval, remaining))


async def until(
    predicate: Callable[[], object], *, timeout: float = 10.0, message: str = ""
) -> None:
    """:func:`wait_until` for a coroutine: the loop runs on between checks
    (other coroutines, and callbacks from threads, make progress)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"{message or 'condition not met'}: still false after {timeout}s")
        await asyncio.sleep(0.001)
