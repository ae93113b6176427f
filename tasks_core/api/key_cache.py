"""Valid API keys' lookups, remembered for ``KEY_CACHE_SECONDS`` in one API process.

Why: every request authenticates, and the lookup is a PostgreSQL round trip
of its own; a client sending many requests a second pays it each time for the
same answer. Remembered, a key costs no round trip until its entry is older
than ``KEY_CACHE_SECONDS``.

What it costs: a key revoked (or an organization's executor list changed, or
a key's expiry moved earlier) is still honoured by each API process that
looked it up within the last ``KEY_CACHE_SECONDS``. A key's expiry as it was
read is kept exactly: an entry never outlives the key's ``expires_at``.

What is kept: the key's SHA-256 digest (the form the database keeps too) and
what it grants, never the secret. Only valid keys are remembered: unknown,
revoked and expired keys are looked up every time (their requests are held to
``UNAUTHENTICATED_RATE_LIMIT_PER_MINUTE`` per address), so a stranger trying
keys can not fill the cache nor push customers' keys out of it. The number
of entries is bounded; the least recently used goes first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from tasks_core.records import Caller
from tasks_core.storage.keys import Grant

# Keys one API process remembers at once: far more than any deployment's
# active keys, and a few MB at most.
MAX_ENTRIES = 10_000


class KeyCache:
    """Grants by key digest, each for at most ``seconds`` (0: nothing is kept)."""

    def __init__(
        self,
        seconds: float,
        *,
        max_entries: int = MAX_ENTRIES,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._seconds = seconds
        self._max_entries = max_entries
        self._monotonic = monotonic
        self._now = now
        self._entries: OrderedDict[bytes, tuple[float, Caller]] = OrderedDict()
        # Requests of sync routes authenticate on the threadpool's threads.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key_hash: bytes) -> Caller | None:
        """The remembered caller of this digest, or None (never seen, or too old)."""
        with self._lock:
            entry = self._entries.get(key_hash)
            if entry is None:
                return None
            until, caller = entry
            if self._monotonic() >= until:
                del self._entries[key_hash]
                return None
            self._entries.move_to_end(key_hash)
            return caller

    def put(self, key_hash: bytes, grant: Grant) -> None:
        """Remember a valid key's grant, until ``seconds`` from now or its expiry."""
        if self._seconds <= 0:
            return
        lifetime = self._seconds
        if grant.expires_at is not None:
            lifetime = min(lifetime, (grant.expires_at - self._now()).total_seconds())
        if lifetime <= 0:
            return
        with self._lock:
            self._entries[key_hash] = (self._monotonic() + lifetime, grant.caller)
            self._entries.move_to_end(key_hash)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
