"""``Authorization: Bearer <key>`` on every ``/v1`` call."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tasks_core.errors import Unauthorized
from tasks_core.keys import authenticate
from tasks_core.records import Caller
from tasks_core.services.store import Store

_bearer = HTTPBearer(auto_error=False, description="Your API key as the bearer token.")


def get_store(request: Request) -> Store:
    """The process's store, created at start-up."""
    store: Store = request.app.state.store
    return store


def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The organization and key of the request; 401 without a valid key."""
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    store = get_store(request)
    with store.statement() as conn:
        caller = authenticate(conn, credentials.credentials)
    if caller is None:
        raise Unauthorized("the API key is unknown, revoked or expired")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
StoreDep = Annotated[Store, Depends(get_store)]
