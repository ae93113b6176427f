"""The create routes, served without FastAPI's solving of their parameters.

A create is the API's hottest request. Under 32 keep-alive clients,
FastAPI's per-request solving of its endpoint's parameters (the body model,
the key, the store, the ``Idempotency-Key`` header) held the GIL for 20% of
the API process's time (py-spy ``--gil``), more than the create itself;
served directly, one process's creates per second rose by 11-32% in
alternating runs.

:class:`DirectRoute` keeps FastAPI's route as it is declared (its OpenAPI
operation, its validation errors, its content-type rules) and serves the
one common request itself: a JSON body that parses and validates. Every
other request (no or another content type, a body that does not parse or
validate, an app with dependency overrides) goes to FastAPI's own handler,
which answers it exactly as before. The parameters are found as the
declarations say: the caller by ``get_caller`` (so authentication, rate
limits and the key cache are those of every route), the store by
``get_store``, and the body by the model the endpoint declares, validated
the way FastAPI does (``json.loads``, then the model). Authentication still
comes first: a body is only parsed here, and an unauthenticated request
fails in ``get_caller`` as it would in FastAPI.
"""

from __future__ import annotations

import email.message
import functools
import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, get_type_hints

from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tasks_core.api.auth import bearer, get_caller, get_store

# What a direct endpoint takes, by name. A sync one (it blocks on the
# database) is run in the threadpool, an async one awaited, as FastAPI would.
PARAMETERS = frozenset({"body", "caller", "store", "idempotency_key"})

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def direct_post(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """``@router.post(path, **options)``, served by :class:`DirectRoute`."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(
            path, endpoint, methods=["POST"], route_class_override=DirectRoute, **options
        )
        return endpoint

    return register


class DirectRoute(APIRoute):
    """An ``APIRoute`` whose valid JSON requests skip FastAPI's parameter solving."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self.body_model = _body_model(endpoint)  # before the handler is built
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Handler:
        declared = super().get_route_handler()
        model, endpoint = self.body_model, self.endpoint
        is_async = inspect.iscoroutinefunction(endpoint)
        # The header as the endpoint declares it (``Header(alias=...)``).
        (header,) = [p.alias for p in self.dependant.header_params if p.name == "idempotency_key"]

        async def handler(request: Request) -> Response:
            body = _valid_body(request, model, await request.body())
            # FastAPI's own answer, errors and all; and wherever a dependency
            # is overridden (only FastAPI's solving knows of overrides).
            if body is None or request.app.dependency_overrides:
                return await declared(request)
            arguments = {
                "body": body,
                "caller": await get_caller(request, await bearer(request)),
                "store": await get_store(request),
                "idempotency_key": request.headers.get(header),
            }
            if is_async:
                response: Response = await endpoint(**arguments)
            else:
                response = await run_in_threadpool(endpoint, **arguments)
            return response

        return handler


def _body_model(endpoint: Callable[..., Any]) -> type[BaseModel]:
    """The body model of an endpoint of the shape a direct route serves."""
    hints = get_type_hints(endpoint)
    names = set(hints) - {"return"}
    if names != PARAMETERS:
        raise TypeError(
            f"a direct endpoint takes exactly {sorted(PARAMETERS)}, "
            f"not {sorted(names)} ({endpoint.__qualname__})"
        )
    body = hints["body"]
    if not (isinstance(body, type) and issubclass(body, BaseModel)):
        raise TypeError(f"the body of {endpoint.__qualname__} must be a pydantic model")
    return body


def _valid_body(request: Request, model: type[BaseModel], raw: bytes) -> BaseModel | None:
    """The body as ``model``, when it is JSON that FastAPI would accept as it;
    None for anything FastAPI must answer itself."""
    if not raw or not _is_json(request.headers.get("content-type")):
        return None
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError, RecursionError):
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; a body
        # nested past the interpreter's depth is a RecursionError. FastAPI
        # parses it again and gives its own answer.
        return None


@functools.lru_cache(maxsize=64)
def _is_json(content_type: str | None) -> bool:
    """The content types FastAPI reads as JSON (``application/json``, ``+json``)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
