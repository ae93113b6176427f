"""KeyCache on a hand-driven clock: lifetime, a key's own expiry, LRU bound."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tasks_core.api.key_cache import KeyCache
from tasks_core.records import Caller
from tasks_core.storage.keys import Grant, digest

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return NOW + timedelta(seconds=self.t - 100.0)


def _grant(expires_at: datetime | None = None) -> Grant:
    return Grant(Caller(uuid.uuid4(), uuid.uuid4(), frozenset({"gpu"})), expires_at)


def _cache(seconds: float, clock: Clock, **kw: int) -> KeyCache:
    return KeyCache(seconds, monotonic=clock.monotonic, now=clock.now, **kw)


def test_an_entry_lives_key_cache_seconds_and_no_longer() -> None:
    clock = Clock()
    cache = _cache(5, clock)
    grant = _grant()
    cache.put(digest("tk_a"), grant)
    clock.t += 4.99
    assert cache.get(digest("tk_a")) == grant.caller
    clock.t += 0.01
    assert cache.get(digest("tk_a")) is None
    assert len(cache) == 0


def test_an_entry_never_outlives_the_keys_expiry() -> None:
    clock = Clock()
    cache = _cache(5, clock)
    cache.put(digest("tk_a"), _grant(NOW + timedelta(seconds=2)))
    cache.put(digest("tk_gone"), _grant(NOW - timedelta(seconds=1)))
    assert cache.get(digest("tk_a")) is not None
    clock.t += 2
    assert cache.get(digest("tk_a")) is None
    assert cache.get(digest("tk_gone")) is None


def test_zero_seconds_keeps_nothing() -> None:
    cache = _cache(0, Clock())
    cache.put(digest("tk_a"), _grant())
    assert cache.get(digest("tk_a")) is None and len(cache) == 0


def test_the_least_recently_used_goes_first() -> None:
    cache = _cache(5, Clock(), max_entries=2)
    for name in ("tk_a", "tk_b"):
        cache.put(digest(name), _grant())
    assert cache.get(digest("tk_a")) is not None  # a is now the most recent
    cache.put(digest("tk_c"), _grant())
    assert len(cache) == 2
    assert cache.get(digest("tk_b")) is None
    assert cache.get(digest("tk_a")) is not None and cache.get(digest("tk_c")) is not None


def test_only_digests_are_kept() -> None:
    cache = _cache(5, Clock())
    cache.put(digest("tk_secret"), _grant())
    assert "tk_secret" not in repr(cache._entries)
    assert all(len(k) == 32 for k in cache._entries)
