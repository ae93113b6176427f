"""GET /v1/tasks/{taskId}: one task with its children nested to a depth."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import OrgClient, error_of


def make_tree(client: OrgClient) -> dict[str, Any]:
    """root -> (a -> (a1, a2), b -> (b1)) -> a1 -> a1x; ids by name."""
    root = client.create(title="root")
    a = client.create(title="a", parentId=root["id"])
    b = client.create(title="b", parentId=root["id"])
    a1 = client.create(title="a1", parentId=a["id"])
    a2 = client.create(title="a2", parentId=a["id"])
    b1 = client.create(title="b1", parentId=b["id"])
    a1x = client.create(title="a1x", parentId=a1["id"])
    return {t["title"]: t["id"] for t in (root, a, b, a1, a2, b1, a1x)}


def titles(task: dict[str, Any]) -> list[str]:
    return [child["title"] for child in task["children"]]


def test_get_returns_the_task(acme: OrgClient) -> None:
    created = acme.create(title="one", input={"x": 1})
    response = acme.get(f"/v1/tasks/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created


def test_get_nests_direct_children_oldest_first_by_default(acme: OrgClient) -> None:
    ids = make_tree(acme)
    body = acme.get(f"/v1/tasks/{ids['root']}").json()
    assert titles(body) == ["a", "b"]
    assert [c["id"] for c in body["children"]] == [ids["a"], ids["b"]]
    assert all(c["parentId"] == ids["root"] for c in body["children"])
    assert all(c["children"] == [] for c in body["children"])


def test_get_depth_zero_nests_no_children(acme: OrgClient) -> None:
    ids = make_tree(acme)
    body = acme.get(f"/v1/tasks/{ids['root']}", params={"depth": 0}).json()
    assert body["id"] == ids["root"]
    assert body["children"] == []


def test_get_depth_two_nests_grandchildren(acme: OrgClient) -> None:
    ids = make_tree(acme)
    body = acme.get(f"/v1/tasks/{ids['root']}", params={"depth": 2}).json()
    a, b = body["children"]
    assert titles(a) == ["a1", "a2"]
    assert titles(b) == ["b1"]
    assert a["children"][0]["parentId"] == ids["a"]
    # The third level is not nested at depth 2.
    assert a["children"][0]["children"] == []


def test_get_depth_three_nests_great_grandchildren(acme: OrgClient) -> None:
    ids = make_tree(acme)
    body = acme.get(f"/v1/tasks/{ids['root']}", params={"depth": 3}).json()
    assert titles(body["children"][0]["children"][0]) == ["a1x"]


def test_get_a_child_nests_its_own_subtree(acme: OrgClient) -> None:
    ids = make_tree(acme)
    body = acme.get(f"/v1/tasks/{ids['a']}", params={"depth": 5}).json()
    assert titles(body) == ["a1", "a2"]
    assert titles(body["children"][0]) == ["a1x"]


def test_get_depth_at_maximum_is_allowed(acme: OrgClient) -> None:
    task = acme.create()
    assert acme.get(f"/v1/tasks/{task['id']}", params={"depth": 5}).status_code == 200


@pytest.mark.parametrize("depth", [6, 100])
def test_get_depth_above_maximum_is_422(acme: OrgClient, depth: int) -> None:
    task = acme.create()
    response = acme.get(f"/v1/tasks/{task['id']}", params={"depth": depth})
    assert "depth" in error_of(response, 422, "validation_error")


@pytest.mark.parametrize("depth", ["-1", "two"])
def test_get_invalid_depth_is_422(acme: OrgClient, depth: str) -> None:
    task = acme.create()
    response = acme.get(f"/v1/tasks/{task['id']}", params={"depth": depth})
    assert "depth" in error_of(response, 422, "validation_error")


def test_get_another_orgs_task_is_404(acme: OrgClient, globex: OrgClient) -> None:
    theirs = globex.create(title="secret")
    response = acme.get(f"/v1/tasks/{theirs['id']}")
    message = error_of(response, 404, "not_found")
    assert "secret" not in message
    assert globex.get(f"/v1/tasks/{theirs['id']}").status_code == 200


@pytest.mark.parametrize("task_id", ["01a2228e-1802-7167-a110-00dc8b68f75e", "not-an-id", "0"])
def test_get_unknown_id_is_404(acme: OrgClient, task_id: str) -> None:
    error_of(acme.get(f"/v1/tasks/{task_id}"), 404, "not_found")
