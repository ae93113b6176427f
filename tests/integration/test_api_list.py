"""GET /v1/tasks: newest first, filters, limits and cursor pagination, one organization only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import OrgClient, error_of


def page(client: OrgClient, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/tasks", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"items", "nextCursor"}
    return body


def ids(client: OrgClient, **params: Any) -> list[str]:
    return [t["id"] for t in page(client, **params)["items"]]


def test_list_is_newest_first(acme: OrgClient) -> None:
    created = [acme.create(title=f"t{i}")["id"] for i in range(4)]
    assert ids(acme) == list(reversed(created))


def test_list_items_are_full_tasks_without_children(acme: OrgClient) -> None:
    parent = acme.create(title="p")
    acme.create(parentId=parent["id"])
    items = page(acme)["items"]
    listed_parent = next(t for t in items if t["id"] == parent["id"])
    assert listed_parent["children"] == []
    assert {k: v for k, v in listed_parent.items() if k != "children"} == {
        k: v for k, v in parent.items() if k != "children"
    }


def test_list_empty_organization(acme: OrgClient) -> None:
    assert page(acme) == {"items": [], "nextCursor": None}


@pytest.mark.parametrize(
    ("param", "field", "match", "other"),
    [
        ("kind", "kind", "Flow", "default"),
        ("executorId", "executorId", "gpu", "cpu"),
        ("appId", "appId", "app-1", "app-2"),
        ("targetId", "targetId", "billing/charge", "billing/refund"),
    ],
)
def test_list_filter_narrows(
    acme: OrgClient, param: str, field: str, match: str, other: str
) -> None:
    # A Flow that will run needs its steps (an empty list is a valid Flow).
    extra = {"params": {"steps": []}} if match == "Flow" else {}
    wanted = [acme.create(**{field: match}, **extra)["id"] for _ in range(2)]
    acme.create(**{field: other})
    acme.create()
    assert ids(acme, **{param: match}) == list(reversed(wanted))
    assert ids(acme, **{param: "nothing-like-it"}) == []


def test_list_filter_status_narrows(acme: OrgClient) -> None:
    completed = acme.create(status="completed")["id"]
    running = acme.create(status="running")["id"]
    queued = acme.create()["id"]
    failed = acme.create(status="failed")["id"]
    assert ids(acme, status="completed") == [completed]
    assert ids(acme, status="running") == [running]
    assert ids(acme, status="queued") == [queued]
    assert ids(acme, status="failed") == [failed]
    assert ids(acme, status="cancelled") == []


def test_list_filter_status_follows_updates(acme: OrgClient) -> None:
    task = acme.create()["id"]
    assert acme.put(f"/v1/tasks/{task}", json={"status": "running"}).status_code == 200
    assert ids(acme, status="running") == [task]
    assert ids(acme, status="queued") == []


def test_list_filter_parent_id_narrows_to_direct_children(acme: OrgClient) -> None:
    parent, other = acme.create()["id"], acme.create()["id"]
    kids = [acme.create(parentId=parent)["id"] for _ in range(3)]
    acme.create(parentId=kids[0])
    acme.create(parentId=other)
    assert ids(acme, parentId=parent) == list(reversed(kids))
    assert ids(acme, parentId="not-an-id") == []


def test_list_filters_combine(acme: OrgClient) -> None:
    hit = acme.create(kind="Flow", appId="a", status="completed")["id"]
    acme.create(kind="Flow", appId="a", params={"steps": []})
    acme.create(kind="Flow", appId="b", status="completed")
    acme.create(kind="default", appId="a", status="completed")
    assert ids(acme, kind="Flow", appId="a", status="completed") == [hit]


def test_list_unknown_status_filter_is_422(acme: OrgClient) -> None:
    response = acme.get("/v1/tasks", params={"status": "done"})
    assert "status" in error_of(response, 422, "validation_error")


def test_list_limit_caps_the_page(acme: OrgClient) -> None:
    created = [acme.create()["id"] for _ in range(3)]
    body = page(acme, limit=2)
    assert [t["id"] for t in body["items"]] == [created[2], created[1]]
    assert body["nextCursor"]
    assert ids(acme, limit=1) == [created[2]]


def test_list_limit_at_maximum_is_allowed(acme: OrgClient) -> None:
    acme.create()
    assert len(page(acme, limit=500)["items"]) == 1


@pytest.mark.parametrize("limit", [501, 10_000])
def test_list_limit_above_maximum_is_422(acme: OrgClient, limit: int) -> None:
    response = acme.get("/v1/tasks", params={"limit": limit})
    assert "limit" in error_of(response, 422, "validation_error")


@pytest.mark.parametrize("limit", [0, -1, "many"])
def test_list_invalid_limit_is_422(acme: OrgClient, limit: Any) -> None:
    response = acme.get("/v1/tasks", params={"limit": limit})
    assert "limit" in error_of(response, 422, "validation_error")


@pytest.mark.parametrize(("total", "limit"), [(23, 5), (20, 5), (7, 1)])
def test_list_cursor_pages_through_every_task_exactly_once(
    acme: OrgClient, total: int, limit: int
) -> None:
    created = [acme.create(status="completed", title=str(i))["id"] for i in range(total)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        body = page(acme, **params)
        pages += 1
        assert 0 < len(body["items"]) <= limit
        seen.extend(t["id"] for t in body["items"])
        cursor = body["nextCursor"]
        if cursor is None:
            break
        assert len(body["items"]) == limit
        assert pages <= total
    assert seen == list(reversed(created))
    assert len(set(seen)) == total
    assert pages == -(-total // limit)


def test_list_cursor_keeps_filters(acme: OrgClient) -> None:
    flows = [acme.create(kind="Flow", status="completed")["id"] for _ in range(5)]
    for _ in range(5):
        acme.create(status="completed")
    first = page(acme, kind="Flow", limit=3)
    second = page(acme, kind="Flow", limit=3, cursor=first["nextCursor"])
    assert [t["id"] for t in first["items"] + second["items"]] == list(reversed(flows))
    assert second["nextCursor"] is None


def test_list_cursor_is_stable_when_tasks_are_added(acme: OrgClient) -> None:
    old = [acme.create(status="completed")["id"] for _ in range(4)]
    first = page(acme, limit=2)
    acme.create(status="completed")
    second = page(acme, limit=2, cursor=first["nextCursor"])
    assert [t["id"] for t in second["items"]] == [old[1], old[0]]


@pytest.mark.parametrize("cursor", ["garbage!", "AAAA", "%%%", "not-a-cursor-at-all"])
def test_list_garbage_cursor_is_422_invalid_cursor(acme: OrgClient, cursor: str) -> None:
    acme.create()
    response = acme.get("/v1/tasks", params={"cursor": cursor})
    assert "cursor" in error_of(response, 422, "invalid_cursor")


def test_list_never_shows_another_orgs_tasks(acme: OrgClient, globex: OrgClient) -> None:
    ours = [
        acme.create(kind="Flow", appId="shared", executorId="gpu", targetId="f")["id"]
        for _ in range(2)
    ]
    theirs = [
        globex.create(kind="Flow", appId="shared", executorId="gpu", targetId="f")["id"]
        for _ in range(3)
    ]
    globex_parent = theirs[0]
    globex.create(parentId=globex_parent)
    assert ids(acme) == list(reversed(ours))
    assert ids(acme, kind="Flow", appId="shared", executorId="gpu") == list(reversed(ours))
    assert ids(acme, parentId=globex_parent) == []
    assert set(ids(globex)).isdisjoint(ours)
    first = page(acme, limit=1)
    assert ids(acme, limit=10, cursor=first["nextCursor"]) == [ours[0]]
    assert all(t["organizationId"] == acme.organization_id for t in page(acme)["items"])
