"""``Authorization: Bearer <key>`` on every ``/v1`` call."""

from __future__ import annotations

from typing import Annotated, NoReturn

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tasks_core.api.key_cache import KeyCache
from tasks_core.api.ratelimit import enforce_rate_limit, enforce_unauthenticated_limit
from tasks_core.errors import Unauthorized
from tasks_core.records import Caller
from tasks_core.storage.keys import digest, look_up
from tasks_core.store import Store

bearer = HTTPBearer(auto_error=False, description="Your API key as the bearer token.")


async def get_store(request: Request) -> Store:
    """The process's store, created at start-up. Async because it does no
    I/O: a sync dependency would cost a hop to the threadpool per request."""
    store: Store = request.app.state.store
    return store


async def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The organization and key of the request; 401 without a valid key, 429
    when the key is over ``RATE_LIMIT_PER_MINUTE``, or when its address sent
    more than ``UNAUTHENTICATED_RATE_LIMIT_PER_MINUTE`` requests without a valid key.

    A valid key's lookup is remembered for ``KEY_CACHE_SECONDS`` (see
    ``api.key_cache``): a remembered key costs no SQL at all, and with the
    per-key limit off it is answered on the event loop, without the hop to the
    threadpool that the blocking lookups (SQL, Redis) need."""
    store: Store = request.app.state.store
    secret = credentials.credentials if credentials is not None else ""
    if secret and store.settings.rate_limit_per_minute <= 0:
        cache: KeyCache = request.app.state.key_cache
        caller = cache.get(digest(secret))
        if caller is not None:
            return caller
    return await run_in_threadpool(_authenticate, request, store, secret)


def _authenticate(request: Request, store: Store, secret: str) -> Caller:
    """:func:`get_caller`'s blocking part.

    The per-key limit is counted only after authentication: it is per key, and
    a stranger's bad keys must not use up a customer's allowance. A refused
    request costs one Redis round trip, never another SQL lookup. With the
    limits off (0) nothing beyond the one SQL lookup happens."""
    if not secret:
        _refuse(request, store, "missing API key: send 'Authorization: Bearer <key>'")
    caller = _caller_of(request, store, digest(secret))
    if caller is None:
        _refuse(request, store, "the API key is unknown, revoked or expired")
    limit = store.settings.rate_limit_per_minute
    if limit > 0:
        enforce_rate_limit(store.settings.redis_url, caller.key_id, limit)
    return caller


def _caller_of(request: Request, store: Store, key_hash: bytes) -> Caller | None:
    """The key's caller, from the process's cache or else from PostgreSQL."""
    cache: KeyCache = request.app.state.key_cache
    caller = cache.get(key_hash)
    if caller is not None:
        return caller
    with store.statement() as conn:
        grant = look_up(conn, key_hash)
    if grant is None:
        return None
    cache.put(key_hash, grant)
    return grant.caller


def _refuse(request: Request, store: Store, message: str) -> NoReturn:
    """401, or 429 once the client's address is over its limit of refused requests.

    The address is the connection's peer as the server reports it: behind a
    proxy, uvicorn's ``--proxy-headers`` and ``--forwarded-allow-ips`` decide
    whether that is the proxy or the client it forwards for; a header sent by
    the client itself (X-Forwarded-For) is never trusted here."""
    limit = store.settings.unauthenticated_rate_limit_per_minute
    if limit > 0:
        address = request.client.host if request.client else "unknown"
        enforce_unauthenticated_limit(store.settings.redis_url, address, limit)
    raise Unauthorized(message)


CallerDep = Annotated[Caller, Depends(get_caller)]
StoreDep = Annotated[Store, Depends(get_store)]
