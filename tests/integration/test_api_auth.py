"""Authorization: a valid key on every /v1 call; organizations never see each other."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tasks_core.storage.keys import revoke_key
from tests.support.api import OrgClient, error_of

MISSING_ID = "01a2228e-1802-7167-a110-00dc8b68f75e"

# (method, path template, JSON body); {task} and {state} are filled with real ids.
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/tasks", {"kind": "default"}),
    ("GET", "/v1/tasks", None),
    ("GET", "/v1/tasks/{task}", None),
    ("PUT", "/v1/tasks/{task}", {"title": "x"}),
    ("POST", "/v1/tasks/{task}/cancel", None),
    ("GET", "/v1/tasks/{task}/events", None),
    ("POST", "/v1/states", {"name": "s"}),
    ("GET", "/v1/states/{state}", None),
]


def send(
    http: TestClient,
    endpoint: tuple[str, str, Any],
    ids: dict[str, str],
    headers: dict[str, str],
) -> httpx.Response:
    method, template, body = endpoint
    return http.request(method, template.format(**ids), json=body, headers=headers)


@pytest.fixture
def ids(acme: OrgClient) -> dict[str, str]:
    task = acme.create(title="mine")
    state = acme.post("/v1/states", json={"name": "mine"}).json()
    return {"task": task["id"], "state": state["id"]}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "tk_raw-key-without-scheme"},
    ],
    ids=["none", "empty", "scheme-only", "scheme-space", "basic", "no-scheme"],
)
def test_missing_key_is_401_on_every_endpoint(
    http: TestClient, ids: dict[str, str], headers: dict[str, str]
) -> None:
    for endpoint in ENDPOINTS:
        error_of(send(http, endpoint, ids, headers), 401, "unauthorized")


@pytest.mark.parametrize(
    "key", ["tk_wrong", "not-even-a-key", "x" * 500], ids=["prefixed", "plain", "long"]
)
def test_wrong_key_is_401_on_every_endpoint(
    http: TestClient, ids: dict[str, str], key: str
) -> None:
    for endpoint in ENDPOINTS:
        response = send(http, endpoint, ids, {"Authorization": f"Bearer {key}"})
        error_of(response, 401, "unauthorized")


def test_401_does_not_create_anything(http: TestClient, acme: OrgClient) -> None:
    response = http.post(
        "/v1/tasks", json={"kind": "default"}, headers={"Authorization": "Bearer tk_wrong"}
    )
    error_of(response, 401, "unauthorized")
    assert acme.get("/v1/tasks").json()["items"] == []


def test_unauthorized_comes_before_body_validation(http: TestClient) -> None:
    error_of(http.post("/v1/tasks", json={"nokind": 1}), 401, "unauthorized")


# Revocation takes effect at once only without the key cache (KEY_CACHE_SECONDS=0).
@pytest.mark.parametrize("settings", [{"key_cache_seconds": 0}], indirect=True)
def test_revoked_key_is_401_on_every_endpoint(
    http: TestClient, engine: Engine, acme: OrgClient, ids: dict[str, str]
) -> None:
    for endpoint in ENDPOINTS:
        assert send(http, endpoint, ids, acme.headers).status_code < 300, endpoint
    with engine.begin() as conn:
        revoke_key(conn, uuid.UUID(acme.key_id))
    for endpoint in ENDPOINTS:
        error_of(send(http, endpoint, ids, acme.headers), 401, "unauthorized")


# Revocation takes effect at once only without the key cache (KEY_CACHE_SECONDS=0).
@pytest.mark.parametrize("settings", [{"key_cache_seconds": 0}], indirect=True)
def test_revoking_one_key_leaves_other_keys_of_the_org(
    engine: Engine, org_client: Callable[[str], OrgClient]
) -> None:
    first, second = org_client("acme"), org_client("acme")
    task = first.create()
    with engine.begin() as conn:
        revoke_key(conn, uuid.UUID(first.key_id))
    error_of(first.get(f"/v1/tasks/{task['id']}"), 401, "unauthorized")
    response = second.get(f"/v1/tasks/{task['id']}")
    assert response.status_code == 200
    assert response.json()["authorId"] == first.key_id


def test_keys_of_one_org_share_its_tasks(org_client: Callable[[str], OrgClient]) -> None:
    first, second = org_client("acme"), org_client("acme")
    task = first.create()
    assert second.get(f"/v1/tasks/{task['id']}").status_code == 200
    assert [t["id"] for t in second.get("/v1/tasks").json()["items"]] == [task["id"]]
    assert second.create()["authorId"] == second.key_id


def test_other_org_gets_404_on_every_task_and_state_endpoint(
    http: TestClient, acme: OrgClient, globex: OrgClient, ids: dict[str, str]
) -> None:
    for endpoint in ENDPOINTS:
        if "{" not in endpoint[1]:
            continue
        error_of(send(http, endpoint, ids, globex.headers), 404, "not_found")
    task = acme.get(f"/v1/tasks/{ids['task']}").json()
    assert task["title"] == "mine" and task["status"] == "queued"


def test_other_org_gets_the_same_404_as_for_a_missing_id(
    acme: OrgClient, globex: OrgClient, ids: dict[str, str]
) -> None:
    theirs = globex.get(f"/v1/tasks/{ids['task']}")
    missing = globex.get(f"/v1/tasks/{MISSING_ID}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["code"] == missing.json()["code"] == "not_found"
    assert "mine" not in theirs.text


def test_other_org_does_not_see_tasks_in_list(
    acme: OrgClient, globex: OrgClient, ids: dict[str, str]
) -> None:
    response = globex.get("/v1/tasks")
    assert response.status_code == 200
    assert response.json()["items"] == []
    assert globex.get("/v1/tasks", params={"parentId": ids["task"]}).json()["items"] == []


def test_other_orgs_task_as_parent_id_is_404(
    acme: OrgClient, globex: OrgClient, ids: dict[str, str]
) -> None:
    created = globex.post("/v1/tasks", json={"kind": "default", "parentId": ids["task"]})
    error_of(created, 404, "not_found")
    own = globex.create()
    moved = globex.put(f"/v1/tasks/{own['id']}", json={"parentId": ids["task"]})
    error_of(moved, 404, "not_found")
    assert acme.get(f"/v1/tasks/{ids['task']}").json()["children"] == []
