"""Wait on a condition with a deadline, instead of sleeping in a test."""

from __future__ import annotations

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
