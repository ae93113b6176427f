"""Rate limiting per API key, and per client address for requests without a
valid key: a fixed one-minute window counted in Redis.

Why Redis: the limit is per key, not per process. Every API process (uvicorn
workers, replicas) must add to the same count, and the broker's Redis is
already a dependency of the API, so the counter lives there.

Why a fixed window: one round trip per request (``INCR`` and ``EXPIRE`` in
one ``MULTI``/``EXEC`` pipeline) and one small key per key and minute
(``ratelimit:<key id>:<window start>``). A client may burst up to twice the
limit across a window edge; for protecting the service from a runaway or
abusive client that is an acceptable price for the simplicity.

Why fail open: the limiter protects the service; it must not become the
reason the service refuses everything. If Redis does not answer, requests
pass, a warning is logged, and the limiter is bypassed for a few seconds so
an outage does not add a connect timeout to every request.

The window start comes from the API process's clock (the hosts are expected
to be NTP-synchronized); asking Redis for its time would cost a second round
trip per request.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable

import redis

from tasks_core.errors import RateLimited

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# The limiter sits on the path of every request: a slow Redis must not make a
# slow API, so it gets little time before we give up and let the request in.
SOCKET_TIMEOUT_SECONDS = 0.5
# After a Redis failure, skip the limiter this long: failing open must not
# cost a (timed-out) round trip per request, nor a warning per request.
BYPASS_AFTER_FAILURE_SECONDS = 5.0


class RateLimiter:
    """Counts the requests of each key in fixed one-minute windows, in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._clock = clock
        self._monotonic = monotonic
        # A float read and written without a lock: a race only means one more
        # or one fewer request tries Redis during an outage.
        self._bypass_until = 0.0

    def check(self, key_id: str, limit: int, *, who: str = "this API key") -> None:
        """Count one request of ``key_id``; raise RateLimited when over ``limit``
        (``who`` names the counted party in the message).

        Lets the request through (and logs a warning) when Redis fails."""
        if self._monotonic() < self._bypass_until:
            return
        now = self._clock()
        window_start = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
        counter = f"ratelimit:{key_id}:{window_start}"
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.incr(counter)
            # The key is useless once its window is over; re-arming the expiry on
            # every hit keeps it at most one window past its end, with no
            # extra round trip (EXPIRE ... NX needs Redis 7).
            pipe.expire(counter, WINDOW_SECONDS)
            count, _ = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._bypass_until = self._monotonic() + BYPASS_AFTER_FAILURE_SECONDS
            log.warning(
                "rate limiter: Redis did not answer (%s); letting requests through "
                "unlimited for %.0f s",
                exc,
                BYPASS_AFTER_FAILURE_SECONDS,
            )
            return
        if int(count) > limit:
            retry_after = max(1, math.ceil(window_start + WINDOW_SECONDS - now))
            raise RateLimited(
                f"{who} made more than {limit} requests this minute; retry in {retry_after} s",
                retry_after=retry_after,
            )


_limiters: dict[str, RateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(redis_url: str) -> RateLimiter:
    """The process's limiter for one Redis URL, created on first use.

    Cached by URL at module level because the Store (which owns the other
    connections) has no place for it; one connection pool per Redis serves
    every app and thread of the process."""
    limiter = _limiters.get(redis_url)
    if limiter is not None:
        return limiter
    with _limiters_lock:
        limiter = _limiters.get(redis_url)
        if limiter is None:
            client = redis.Redis.from_url(
                redis_url,
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
            )
            limiter = _limiters[redis_url] = RateLimiter(client)
    return limiter


def enforce_rate_limit(redis_url: str, key_id: uuid.UUID, limit: int) -> None:
    """Count this request against its key; raise RateLimited (429) when over ``limit``."""
    limiter_for(redis_url).check(str(key_id), limit)


def enforce_unauthenticated_limit(redis_url: str, address: str, limit: int) -> None:
    """Count a request without a valid key against its client address; raise
    RateLimited (429) when over ``limit``.

    Counted apart from the keys' (``ratelimit:anon:<address>:<window>``), so a
    stranger's bad keys never use up a customer's allowance, and only once the
    request is refused, so a valid key never pays for it."""
    limiter_for(redis_url).check(
        f"anon:{address}", limit, who="this address, without a valid API key,"
    )
