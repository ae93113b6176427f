"""The create routes served without FastAPI's parameter solving
(tasks_core/api/direct_route.py): the same answers as FastAPI's, for less."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tasks_core.api.auth import CallerDep, StoreDep, get_caller
from tasks_core.api.direct_route import DirectRoute
from tasks_core.api.errors import install_error_handlers
from tasks_core.api.key_cache import KeyCache
from tasks_core.api.routes_tasks import IdempotencyKey
from tasks_core.api.schemas import TaskCreate
from tasks_core.records import Caller
from tasks_core.settings import Settings
from tasks_core.storage.keys import Grant, digest

SECRET = "tk_test"
ORG = uuid.uuid4()
KEY = {"Authorization": f"Bearer {SECRET}"}


def echo(
    *, body: TaskCreate, caller: CallerDep, store: StoreDep, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """An endpoint of the create routes' shape that answers what it was given."""
    return JSONResponse(
        {"kind": body.kind, "org": str(caller.organization_id), "key": idempotency_key},
        status_code=201,
    )


def app_with(route_class: type[APIRoute]) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.router.add_api_route("/echo", echo, methods=["POST"], route_class_override=route_class)
    settings = Settings(rate_limit_per_minute=0, unauthenticated_rate_limit_per_minute=0)
    app.state.store = SimpleNamespace(settings=settings)
    app.state.key_cache = KeyCache(60)
    caller = Caller(organization_id=ORG, key_id=uuid.uuid4())
    app.state.key_cache.put(digest(SECRET), Grant(caller=caller, expires_at=None))
    return app


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times FastAPI solved a request's parameters."""
    calls: list[int] = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return calls


@pytest.fixture
def clients() -> Iterator[tuple[TestClient, TestClient]]:
    with TestClient(app_with(DirectRoute)) as direct, TestClient(app_with(APIRoute)) as plain:
        yield direct, plain


def test_a_valid_create_is_served_without_fastapis_solving(
    clients: tuple[TestClient, TestClient], solved: list[int]
) -> None:
    direct, _ = clients
    answer = direct.post("/echo", json={"kind": "Report"}, headers={**KEY, "Idempotency-Key": "k1"})
    assert answer.status_code == 201
    assert answer.json() == {"kind": "Report", "org": str(ORG), "key": "k1"}
    assert solved == []


JSON = {"Content-Type": "application/json"}
DEEP = b"[" * 100_000 + b"]" * 100_000  # past the interpreter's recursion limit
BAD_REQUESTS: list[dict[str, Any]] = [
    {"content": b"{not json", "headers": JSON},
    {"content": b'{"kind": 5}', "headers": JSON},
    {"content": b'{"kind": "A", "maxAttempts": "many"}', "headers": JSON},
    {"content": b"[]", "headers": JSON},
    {"content": b'{"kind": "A"}', "headers": {"Content-Type": "text/plain"}},
    {"content": b'{"kind": "A"}', "headers": {}},
    {"content": b"", "headers": JSON},
    {"content": b"\xff\xfe", "headers": JSON},
    {"content": b'{"kind": "A", "input": ' + DEEP + b"}", "headers": JSON},
]


@pytest.mark.parametrize("request_", BAD_REQUESTS)
def test_every_other_request_gets_fastapis_own_answer(
    clients: tuple[TestClient, TestClient], request_: dict[str, Any]
) -> None:
    direct, plain = clients
    headers = {**KEY, **request_["headers"]}
    ours = direct.post("/echo", content=request_["content"], headers=headers)
    theirs = plain.post("/echo", content=request_["content"], headers=headers)
    assert ours.status_code == theirs.status_code >= 400
    assert ours.json() == theirs.json()
    assert set(ours.json()) == {"code", "message"}


def test_authentication_comes_first_as_in_fastapi(clients: tuple[TestClient, TestClient]) -> None:
    direct, plain = clients
    for body in ({"kind": "Report"}, {"kind": 5}):
        ours, theirs = direct.post("/echo", json=body), plain.post("/echo", json=body)
        assert ours.status_code == theirs.status_code == 401
        assert ours.json() == theirs.json()


def test_an_app_with_overridden_dependencies_is_solved_by_fastapi(solved: list[int]) -> None:
    app = app_with(DirectRoute)
    app.dependency_overrides[get_caller] = lambda: Caller(organization_id=ORG, key_id=uuid.uuid4())
    with TestClient(app) as client:
        assert client.post("/echo", json={"kind": "Report"}).status_code == 201  # no key needed
    assert solved == [1]


def test_an_endpoint_of_another_shape_is_refused_when_declared() -> None:
    def other(*, body: TaskCreate, caller: CallerDep) -> JSONResponse:
        raise AssertionError("never called")

    router = FastAPI().router
    with pytest.raises(TypeError, match="a direct endpoint takes exactly"):
        router.add_api_route("/x", other, methods=["POST"], route_class_override=DirectRoute)
