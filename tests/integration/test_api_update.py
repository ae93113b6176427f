"""PUT /v1/tasks/{taskId}: the mutable fields change, the rest is refused by name."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.support.api import OrgClient, error_of


def ts(value: str | None) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def put(client: OrgClient, task_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    response = client.put(f"/v1/tasks/{task_id}", json=changes)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def fetch(client: OrgClient, task_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("description", "new description"),
        (
            "errors",
            [{"code": "timeout", "message": "took too long"}, {"code": "e2", "message": ""}],
        ),
        ("executorId", "gpu"),
        ("input", {"a": [1, 2, {"b": None}]}),
        ("input", [1, "x"]),
        ("input", "plain"),
        ("input", 7),
        ("output", {"result": 42}),
        ("output", ["done"]),
        ("params", {"retries": 3, "nested": {"k": "v"}}),
        ("title", "new title"),
    ],
)
def test_put_updates_a_mutable_field(acme: OrgClient, field: str, value: Any) -> None:
    task = acme.create(
        title="old title",
        description="old",
        input={"old": True},
        output={"old": True},
        params={"old": 1},
        executorId="cpu",
    )
    body = put(acme, task["id"], {field: value})
    assert body[field] == value
    assert fetch(acme, task["id"])[field] == value
    assert ts(body["updatedAt"]) >= ts(task["updatedAt"])
    assert body["kind"] == task["kind"] and body["status"] == task["status"]


@pytest.mark.parametrize("field", ["description", "title", "input", "output", "executorId"])
def test_put_null_clears_a_field(acme: OrgClient, field: str) -> None:
    task = acme.create(title="t", description="d", input=[1], output=[2], executorId="gpu")
    assert put(acme, task["id"], {field: None})[field] is None
    assert fetch(acme, task["id"])[field] is None


def test_put_leaves_unsent_fields_alone(acme: OrgClient) -> None:
    task = acme.create(title="keep", description="keep too", input={"k": 1}, params={"p": 1})
    body = put(acme, task["id"], {"output": "new"})
    for field in ("title", "description", "input", "params", "executorId", "parentId"):
        assert body[field] == task[field], field


def test_put_started_at_and_ended_at(acme: OrgClient) -> None:
    task = acme.create(status="running", startedAt="2024-01-01T00:00:00Z")
    body = put(acme, task["id"], {"startedAt": "2024-01-01T01:00:00Z"})
    assert ts(body["startedAt"]) == ts("2024-01-01T01:00:00Z")
    body = put(acme, task["id"], {"endedAt": "2024-01-01T02:00:00+01:00"})
    assert ts(body["endedAt"]) == ts("2024-01-01T01:00:00Z")
    stored = fetch(acme, task["id"])
    assert ts(stored["startedAt"]) == ts(stored["endedAt"]) == ts("2024-01-01T01:00:00Z")


def test_put_ended_before_started_is_422(acme: OrgClient) -> None:
    task = acme.create(status="running", startedAt="2024-01-01T10:00:00Z")
    response = acme.put(f"/v1/tasks/{task['id']}", json={"endedAt": "2024-01-01T09:00:00Z"})
    assert "endedAt" in error_of(response, 422, "validation_error")
    assert fetch(acme, task["id"])["endedAt"] is None


def test_put_status_moves_the_task(acme: OrgClient) -> None:
    task = acme.create()
    assert task["status"] == "queued"
    assert put(acme, task["id"], {"status": "running"})["status"] == "running"
    assert put(acme, task["id"], {"status": "waiting"})["status"] == "waiting"
    assert put(acme, task["id"], {"status": "completed"})["status"] == "completed"
    assert fetch(acme, task["id"])["status"] == "completed"


def test_put_parent_id_moves_the_task_under_another(acme: OrgClient) -> None:
    old_parent, new_parent = acme.create(), acme.create()
    task = acme.create(parentId=old_parent["id"])
    assert put(acme, task["id"], {"parentId": new_parent["id"]})["parentId"] == new_parent["id"]
    assert [c["id"] for c in fetch(acme, new_parent["id"])["children"]] == [task["id"]]
    assert fetch(acme, old_parent["id"])["children"] == []


def test_put_parent_id_null_detaches_the_task(acme: OrgClient) -> None:
    parent = acme.create()
    task = acme.create(parentId=parent["id"])
    assert put(acme, task["id"], {"parentId": None})["parentId"] is None
    assert fetch(acme, parent["id"])["children"] == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "Flow"),
        ("appId", "other-app"),
        ("targetId", "other/target"),
        ("stateId", "01a2228e-1802-7167-a110-00dc8b68f75e"),
        ("authorId", "someone"),
        ("organizationId", "01a2228e-1802-7167-a110-00dc8b68f75e"),
    ],
)
def test_put_immutable_field_is_422_naming_it(acme: OrgClient, field: str, value: str) -> None:
    task = acme.create(appId="app", targetId="t/1", stateful=True)
    response = acme.put(f"/v1/tasks/{task['id']}", json={field: value, "title": "changed"})
    assert field in error_of(response, 422, "immutable_field")
    assert fetch(acme, task["id"]) == task


@pytest.mark.parametrize("source", ["completed", "failed", "cancelled"])
def test_put_any_move_from_a_terminal_status_is_409(acme: OrgClient, source: str) -> None:
    task = acme.create(status=source)
    for target in sorted(
        {"created", "running", "waiting", "completed", "failed", "cancelled"} - {source}
    ):
        response = acme.put(f"/v1/tasks/{task['id']}", json={"status": target})
        message = error_of(response, 409, "invalid_transition")
        assert source in message and target in message
    assert fetch(acme, task["id"]) == task


def test_put_completed_to_running_is_409(acme: OrgClient) -> None:
    task = acme.create(status="completed")
    response = acme.put(f"/v1/tasks/{task['id']}", json={"status": "running"})
    error_of(response, 409, "invalid_transition")
    assert fetch(acme, task["id"])["status"] == "completed"


def test_put_queued_back_to_created_is_409(acme: OrgClient) -> None:
    task = acme.create()
    response = acme.put(f"/v1/tasks/{task['id']}", json={"status": "created"})
    error_of(response, 409, "invalid_transition")


@pytest.mark.parametrize("source", ["running", "waiting"])
def test_put_status_queued_is_409(acme: OrgClient, source: str) -> None:
    task = acme.create(status=source)
    response = acme.put(f"/v1/tasks/{task['id']}", json={"status": "queued"})
    assert "queued" in error_of(response, 409, "invalid_transition")
    assert fetch(acme, task["id"])["status"] == source


def test_put_refused_transition_changes_no_other_field(acme: OrgClient) -> None:
    task = acme.create(status="completed", title="before")
    response = acme.put(f"/v1/tasks/{task['id']}", json={"status": "running", "title": "after"})
    error_of(response, 409, "invalid_transition")
    assert fetch(acme, task["id"])["title"] == "before"


def test_put_running_sets_started_at_when_empty(acme: OrgClient) -> None:
    task = acme.create()
    assert task["startedAt"] is None
    body = put(acme, task["id"], {"status": "running"})
    assert body["startedAt"] is not None
    assert ts(body["startedAt"]) >= ts(task["createdAt"])
    assert body["endedAt"] is None


def test_put_running_keeps_a_given_started_at(acme: OrgClient) -> None:
    task = acme.create(startedAt="2024-03-01T00:00:00Z")
    body = put(acme, task["id"], {"status": "running"})
    assert ts(body["startedAt"]) == ts("2024-03-01T00:00:00Z")


def test_put_running_with_started_at_in_the_same_request_keeps_it(acme: OrgClient) -> None:
    task = acme.create()
    body = put(acme, task["id"], {"status": "running", "startedAt": "2024-03-01T00:00:00Z"})
    assert ts(body["startedAt"]) == ts("2024-03-01T00:00:00Z")


@pytest.mark.parametrize("target", ["completed", "failed", "cancelled"])
def test_put_terminal_sets_ended_at_when_empty(acme: OrgClient, target: str) -> None:
    task = acme.create(status="running")
    body = put(acme, task["id"], {"status": target})
    assert body["status"] == target
    assert body["endedAt"] is not None
    assert ts(body["endedAt"]) >= ts(body["startedAt"])


@pytest.mark.parametrize("target", ["completed", "failed", "cancelled"])
def test_put_terminal_keeps_an_ended_at_given_in_the_request(acme: OrgClient, target: str) -> None:
    task = acme.create(status="running", startedAt="2024-03-01T00:00:00Z")
    body = put(acme, task["id"], {"status": target, "endedAt": "2024-03-01T00:05:00Z"})
    assert ts(body["endedAt"]) == ts("2024-03-01T00:05:00Z")
    assert ts(fetch(acme, task["id"])["endedAt"]) == ts("2024-03-01T00:05:00Z")


def test_put_terminal_keeps_an_ended_at_set_before(acme: OrgClient) -> None:
    task = acme.create(status="running", startedAt="2024-03-01T00:00:00Z")
    put(acme, task["id"], {"endedAt": "2024-03-01T00:07:00Z"})
    body = put(acme, task["id"], {"status": "failed"})
    assert ts(body["endedAt"]) == ts("2024-03-01T00:07:00Z")


def test_put_completed_with_output_and_errors_in_one_request(acme: OrgClient) -> None:
    task = acme.create(status="running")
    errors = [{"code": "partial", "message": "one item skipped"}]
    body = put(acme, task["id"], {"status": "completed", "output": {"n": 1}, "errors": errors})
    assert (body["status"], body["output"], body["errors"]) == ("completed", {"n": 1}, errors)


def test_put_parent_id_under_its_own_child_is_422(acme: OrgClient) -> None:
    root = acme.create()
    child = acme.create(parentId=root["id"])
    grandchild = acme.create(parentId=child["id"])
    for descendant in (child, grandchild):
        response = acme.put(f"/v1/tasks/{root['id']}", json={"parentId": descendant["id"]})
        assert "parentId" in error_of(response, 422, "validation_error")
    assert fetch(acme, root["id"])["parentId"] is None


def test_put_parent_id_itself_is_422(acme: OrgClient) -> None:
    task = acme.create()
    response = acme.put(f"/v1/tasks/{task['id']}", json={"parentId": task["id"]})
    error_of(response, 422, "validation_error")


def test_put_parent_id_of_another_org_is_404(acme: OrgClient, globex: OrgClient) -> None:
    task, theirs = acme.create(), globex.create()
    response = acme.put(f"/v1/tasks/{task['id']}", json={"parentId": theirs["id"]})
    error_of(response, 404, "not_found")
    assert fetch(acme, task["id"])["parentId"] is None


def test_put_another_orgs_task_is_404_and_leaves_it_unchanged(
    acme: OrgClient, globex: OrgClient
) -> None:
    task = acme.create(title="mine")
    for changes in ({"title": "hijacked"}, {"status": "cancelled"}, {"output": "x"}):
        error_of(globex.put(f"/v1/tasks/{task['id']}", json=changes), 404, "not_found")
    assert fetch(acme, task["id"]) == task


def test_put_unknown_task_is_404(acme: OrgClient) -> None:
    response = acme.put("/v1/tasks/01a2228e-1802-7167-a110-00dc8b68f75e", json={"title": "x"})
    error_of(response, 404, "not_found")


def test_put_unknown_field_is_422_naming_it(acme: OrgClient) -> None:
    task = acme.create()
    response = acme.put(f"/v1/tasks/{task['id']}", json={"priority": 1})
    assert "priority" in error_of(response, 422, "unknown_field")


@pytest.mark.parametrize(
    "errors",
    [[{"code": "x"}], [{"message": "x"}], [{"code": "", "message": "x"}], {"code": "x"}],
)
def test_put_malformed_errors_is_422(acme: OrgClient, errors: Any) -> None:
    task = acme.create()
    response = acme.put(f"/v1/tasks/{task['id']}", json={"errors": errors})
    assert "errors" in error_of(response, 422, "validation_error")
    assert fetch(acme, task["id"])["errors"] == []


def test_put_errors_item_that_is_not_an_object_is_422_naming_it(acme: OrgClient) -> None:
    task = acme.create()
    response = acme.put(f"/v1/tasks/{task['id']}", json={"errors": ["boom"]})
    assert "errors" in error_of(response, 422, "validation_error")


def test_put_cannot_clear_ended_at_of_a_terminal_task(acme: OrgClient) -> None:
    task = acme.create(status="completed")
    response = acme.put(f"/v1/tasks/{task['id']}", json={"endedAt": None})
    assert response.status_code == 422 or response.json()["endedAt"] is not None
    assert fetch(acme, task["id"])["endedAt"] is not None


def test_put_running_on_a_task_with_an_earlier_ended_at_is_not_a_500(acme: OrgClient) -> None:
    task = acme.create(endedAt="2020-01-01T00:00:00Z")
    response = acme.put(f"/v1/tasks/{task['id']}", json={"status": "running"})
    assert response.status_code < 500, response.text
    error_of(response, 422, "validation_error")


def test_put_cannot_clear_started_at_of_a_running_task(acme: OrgClient) -> None:
    task = acme.create(status="running")
    response = acme.put(f"/v1/tasks/{task['id']}", json={"startedAt": None})
    assert response.status_code == 422 or response.json()["startedAt"] is not None
    assert fetch(acme, task["id"])["startedAt"] is not None
