"""POST /v1/tasks/{taskId}/cancel: the task and every non-terminal descendant, in one go."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.support.api import OrgClient, error_of


def ts(value: str | None) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def fetch(client: OrgClient, task_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}", params={"depth": 0})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def make_tree(client: OrgClient) -> dict[str, dict[str, Any]]:
    """root -> a, b; a -> a1 (queued), a2 (completed); b -> b1 (running), b2 (failed), b3 (waiting).

    Created one level at a time, some already finished (records of work done elsewhere).
    """
    root = client.create(title="root")
    a = client.create(title="a", parentId=root["id"])
    b = client.create(title="b", parentId=root["id"], status="running")
    tasks = [
        root,
        a,
        b,
        client.create(title="a1", parentId=a["id"]),
        client.create(title="a2", parentId=a["id"], status="completed"),
        client.create(title="b1", parentId=b["id"], status="running"),
        client.create(title="b2", parentId=b["id"], status="failed"),
        client.create(title="b3", parentId=b["id"], status="waiting"),
    ]
    return {t["title"]: t for t in tasks}


def test_cancel_cancels_every_non_terminal_task_of_the_subtree(acme: OrgClient) -> None:
    tree = make_tree(acme)
    response = acme.post(f"/v1/tasks/{tree['root']['id']}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == tree["root"]["id"]
    assert body["status"] == "cancelled"
    assert body["endedAt"] is not None
    assert {c["title"]: c["status"] for c in body["children"]} == {
        "a": "cancelled",
        "b": "cancelled",
    }
    for title in ("root", "a", "b", "a1", "b1", "b3"):
        task = fetch(acme, tree[title]["id"])
        assert task["status"] == "cancelled", title
        assert task["endedAt"] is not None, title
        assert ts(task["endedAt"]) >= ts(task["createdAt"]), title
    for title in ("a2", "b2"):
        assert fetch(acme, tree[title]["id"]) == tree[title], title


def test_cancel_keeps_started_at_and_ends_after_it(acme: OrgClient) -> None:
    tree = make_tree(acme)
    acme.post(f"/v1/tasks/{tree['root']['id']}/cancel")
    b1 = fetch(acme, tree["b1"]["id"])
    assert b1["startedAt"] == tree["b1"]["startedAt"]
    assert ts(b1["endedAt"]) >= ts(b1["startedAt"])


def test_cancel_of_a_subtree_leaves_the_rest_of_the_tree(acme: OrgClient) -> None:
    tree = make_tree(acme)
    assert acme.post(f"/v1/tasks/{tree['a']['id']}/cancel").status_code == 200
    assert fetch(acme, tree["a"]["id"])["status"] == "cancelled"
    assert fetch(acme, tree["a1"]["id"])["status"] == "cancelled"
    for title in ("root", "b", "b1", "b2", "b3"):
        assert fetch(acme, tree[title]["id"]) == tree[title], title


def test_cancel_reaches_below_a_finished_task(acme: OrgClient) -> None:
    root = acme.create()
    done = acme.create(parentId=root["id"], status="completed")
    below = acme.create(parentId=done["id"], status="running")
    assert acme.post(f"/v1/tasks/{root['id']}/cancel").status_code == 200
    assert fetch(acme, done["id"]) == done
    assert fetch(acme, below["id"])["status"] == "cancelled"


def test_cancel_a_single_task_logs_the_move(acme: OrgClient) -> None:
    task = acme.create()
    body = acme.post(f"/v1/tasks/{task['id']}/cancel").json()
    assert body["status"] == "cancelled"
    last = acme.get(f"/v1/tasks/{task['id']}/events").json()["items"][-1]
    assert (last["type"], last["fromStatus"], last["toStatus"]) == ("status", "queued", "cancelled")
    assert last["actor"] == f"key:{acme.key_id}"


def test_cancel_an_already_cancelled_task_is_200_and_changes_nothing(acme: OrgClient) -> None:
    task = acme.create()
    first = acme.post(f"/v1/tasks/{task['id']}/cancel")
    assert first.status_code == 200
    events = acme.get(f"/v1/tasks/{task['id']}/events").json()["items"]
    again = acme.post(f"/v1/tasks/{task['id']}/cancel")
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "cancelled"
    assert again.json()["endedAt"] == first.json()["endedAt"]
    assert acme.get(f"/v1/tasks/{task['id']}/events").json()["items"] == events


def test_cancel_a_task_created_cancelled_is_200(acme: OrgClient) -> None:
    task = acme.create(status="cancelled")
    response = acme.post(f"/v1/tasks/{task['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"


def test_cancel_a_completed_task_is_409(acme: OrgClient) -> None:
    task = acme.create(status="completed")
    child = acme.create(parentId=task["id"], status="running")
    response = acme.post(f"/v1/tasks/{task['id']}/cancel")
    assert "completed" in error_of(response, 409, "invalid_transition")
    assert fetch(acme, task["id"]) == task
    assert fetch(acme, child["id"]) == child


def test_cancel_a_failed_task_is_409(acme: OrgClient) -> None:
    task = acme.create(status="failed")
    error_of(acme.post(f"/v1/tasks/{task['id']}/cancel"), 409, "invalid_transition")


def test_cancel_another_orgs_task_is_404_and_cancels_nothing(
    acme: OrgClient, globex: OrgClient
) -> None:
    tree = make_tree(acme)
    error_of(globex.post(f"/v1/tasks/{tree['root']['id']}/cancel"), 404, "not_found")
    error_of(globex.post(f"/v1/tasks/{tree['a']['id']}/cancel"), 404, "not_found")
    for title, task in tree.items():
        assert fetch(acme, task["id"]) == task, title


def test_cancel_unknown_task_is_404(acme: OrgClient) -> None:
    error_of(acme.post("/v1/tasks/01a2228e-1802-7167-a110-00dc8b68f75e/cancel"), 404, "not_found")
    error_of(acme.post("/v1/tasks/nope/cancel"), 404, "not_found")
