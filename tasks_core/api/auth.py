"""``Authorization: Bearer <key>`` on every ``/v1`` call."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tasks_core.api.ratelimit import enforce_rate_limit
from tasks_core.errors import Unauthorized
from tasks_core.records import Caller
from tasks_core.storage.keys import authenticate
from tasks_core.store import Store

_bearer = HTTPBearer(auto_error=False, description="Your API key as the bearer token.")


def get_store(request: Request) -> Store:
    """The process's store, created at start-up."""
    store: Store = request.app.state.store
    return store


def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The organization and key of the request; 401 without a valid key, 429
    when the key is over ``RATE_LIMIT_PER_MINUTE``.

    The limit is counted only after authentication: it is per key, and a
    stranger's bad keys must not use up a customer's allowance. With the
    limit off (0) nothing beyond the one SQL lookup happens."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    store = get_store(request)
    with store.statement() as conn:
        caller = authenticate(conn, credentials.credentials)
    if caller is None:
        raise Unauthorized("the API key is unknown, revoked or expired")
    limit = store.settings.rate_limit_per_minute
    if limit > 0:
        enforce_rate_limit(store.settings.redis_url, caller.key_id, limit)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
StoreDep = Annotated[Store, Depends(get_store)]
