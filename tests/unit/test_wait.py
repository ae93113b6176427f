"""wait_until: polls until a truthy value, fails with a message at the deadline."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import wait
from tests.support.wait import wait_until


class FakeClock:
    """Stands in for time.monotonic and time.sleep: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    fake = FakeClock()
    monkeypatch.setattr(wait, "monotonic", fake.monotonic)
    monkeypatch.setattr(wait, "sleep", fake.sleep)
    yield fake


def test_returns_the_first_truthy_value(clock: FakeClock) -> None:
    values: Iterator[object] = iter([0, None, "", [], "ready", "later"])

    assert wait_until(lambda: next(values), interval=0.5) == "ready"
    assert clock.sleeps == [0.5, 0.5, 0.5, 0.5]


def test_calls_the_predicate_once_even_with_no_time(clock: FakeClock) -> None:
    calls: list[int] = []

    def holds() -> int:
        calls.append(1)
        return 42

    assert wait_until(holds, timeout=0) == 42
    assert calls == [1]
    assert clock.sleeps == []


def test_fails_with_the_message_and_last_value_at_the_deadline(clock: FakeClock) -> None:
    expected = r"queue never drained: still false after 1.0s \(last value: 0\)"
    with pytest.raises(AssertionError, match=expected):
        wait_until(lambda: 0, timeout=1.0, interval=0.3, message="queue never drained")

    # The last sleep is cut short so as to check once more exactly at the deadline.
    assert clock.sleeps == pytest.approx([0.3, 0.3, 0.3, 0.1])


def test_checks_once_more_at_the_deadline(clock: FakeClock) -> None:
    assert wait_until(lambda: clock.now >= 1.0, timeout=1.0, interval=0.3) is True


def test_predicate_errors_propagate(clock: FakeClock) -> None:
    def broken() -> bool:
        raise KeyError("no such task")

    with pytest.raises(KeyError, match="no such task"):
        wait_until(broken)


def test_gives_up_on_the_real_clock() -> None:
    with pytest.raises(AssertionError, match="condition not met"):
        wait_until(lambda: False, timeout=0.05, interval=0.01)
