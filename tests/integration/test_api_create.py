"""POST /v1/tasks: the reference's create fields, echoed back in camelCase."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.support.api import OrgClient, error_of

TASK_FIELDS = {
    "appId",
    "authorId",
    "children",
    "createdAt",
    "description",
    "endedAt",
    "errors",
    "executorId",
    "id",
    "input",
    "kind",
    "organizationId",
    "output",
    "params",
    "parentId",
    "startedAt",
    "stateId",
    "status",
    "targetId",
    "title",
    "updatedAt",
}


def ts(value: str | None) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def test_create_accepts_and_echoes_every_reference_field(acme: OrgClient) -> None:
    parent = acme.create(kind="Flow", params={"steps": []})
    sent: dict[str, Any] = {
        "kind": "CallAction",
        "appId": "app-1",
        "description": "charges the card",
        "endedAt": "2024-05-01T10:00:05Z",
        "executorId": "gpu",
        "input": {"amount": 12, "currency": "EUR"},
        "output": {"charged": True},
        "params": {"retries": 2, "tags": ["a", "b"]},
        "parentId": parent["id"],
        "startedAt": "2024-05-01T10:00:00Z",
        "stateful": True,
        "status": "completed",
        "targetId": "billing/charge",
        "title": "Charge",
    }
    response = acme.post("/v1/tasks", json=sent)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) >= TASK_FIELDS
    for field in ("kind", "appId", "description", "executorId", "input", "output", "params"):
        assert body[field] == sent[field], field
    for field in ("parentId", "status", "targetId", "title"):
        assert body[field] == sent[field], field
    assert ts(body["startedAt"]) == ts(sent["startedAt"])
    assert ts(body["endedAt"]) == ts(sent["endedAt"])
    assert body["stateId"]


def test_create_response_has_every_task_field_with_empty_defaults(acme: OrgClient) -> None:
    body = acme.create(kind="default")
    assert set(body) >= TASK_FIELDS
    assert body["children"] == []
    assert body["errors"] == []
    assert body["params"] == {}
    assert body["kind"] == "default"
    assert body["id"]
    assert ts(body["createdAt"]) <= ts(body["updatedAt"])
    assert body["createdAt"].endswith("Z")
    for field in ("appId", "description", "endedAt", "executorId", "input", "output"):
        assert body[field] is None, field
    for field in ("parentId", "startedAt", "stateId", "targetId", "title"):
        assert body[field] is None, field


@pytest.mark.parametrize(
    "value",
    [{"a": {"b": [1, 2]}}, [1, "two", None], "text", 42, 3.5, True, None],
    ids=["object", "list", "string", "int", "float", "bool", "null"],
)
def test_create_accepts_any_json_as_input_and_output(acme: OrgClient, value: Any) -> None:
    body = acme.create(input=value, output=value)
    assert body["input"] == value
    assert body["output"] == value
    fetched = acme.get(f"/v1/tasks/{body['id']}").json()
    assert fetched["input"] == value
    assert fetched["output"] == value


def test_create_without_kind_is_422_naming_kind(acme: OrgClient) -> None:
    message = error_of(acme.post("/v1/tasks", json={"title": "no kind"}), 422, "validation_error")
    assert "kind" in message


def test_create_with_unknown_field_is_422_naming_it(acme: OrgClient) -> None:
    response = acme.post("/v1/tasks", json={"kind": "default", "colour": "red"})
    assert "colour" in error_of(response, 422, "unknown_field")


@pytest.mark.parametrize("field", ["organizationId", "authorId"])
def test_create_refuses_organization_and_author_in_the_body(acme: OrgClient, field: str) -> None:
    response = acme.post("/v1/tasks", json={"kind": "default", field: acme.organization_id})
    assert field in error_of(response, 422, "unknown_field")


def test_create_takes_organization_and_author_from_the_key(
    acme: OrgClient, globex: OrgClient
) -> None:
    ours, theirs = acme.create(), globex.create()
    assert ours["organizationId"] == acme.organization_id
    assert ours["authorId"] == acme.key_id
    assert theirs["organizationId"] == globex.organization_id
    assert theirs["authorId"] == globex.key_id
    assert acme.organization_id != globex.organization_id


def test_create_stateful_links_a_state_readable_by_id(acme: OrgClient) -> None:
    body = acme.create(stateful=True)
    assert body["stateId"]
    state = acme.get(f"/v1/states/{body['stateId']}")
    assert state.status_code == 200, state.text
    assert state.json()["id"] == body["stateId"]
    assert state.json()["organizationId"] == acme.organization_id
    assert state.json()["version"] == 1


def test_create_not_stateful_has_no_state(acme: OrgClient) -> None:
    assert acme.create(stateful=False)["stateId"] is None


def test_create_with_parent_of_same_org_links_it(acme: OrgClient) -> None:
    parent = acme.create()
    child = acme.create(parentId=parent["id"])
    assert child["parentId"] == parent["id"]
    children = acme.get(f"/v1/tasks/{parent['id']}").json()["children"]
    assert [c["id"] for c in children] == [child["id"]]


def test_create_with_parent_of_another_org_is_404(acme: OrgClient, globex: OrgClient) -> None:
    theirs = globex.create()
    response = acme.post("/v1/tasks", json={"kind": "default", "parentId": theirs["id"]})
    error_of(response, 404, "not_found")
    assert acme.get("/v1/tasks").json()["items"] == []


@pytest.mark.parametrize(
    "parent_id", ["not-an-id", "12345", "01a2228e-1802-7167-a110-00dc8b68f75e"]
)
def test_create_with_parent_that_names_no_task_is_404(acme: OrgClient, parent_id: str) -> None:
    response = acme.post("/v1/tasks", json={"kind": "default", "parentId": parent_id})
    error_of(response, 404, "not_found")


def test_create_with_ended_before_started_is_422(acme: OrgClient) -> None:
    response = acme.post(
        "/v1/tasks",
        json={
            "kind": "default",
            "status": "completed",
            "startedAt": "2024-05-01T10:00:00Z",
            "endedAt": "2024-05-01T09:59:59Z",
        },
    )
    message = error_of(response, 422, "validation_error")
    assert "endedAt" in message
    assert acme.get("/v1/tasks").json()["items"] == []


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_create_terminal_sets_ended_at_when_missing(acme: OrgClient, status: str) -> None:
    body = acme.create(status=status)
    assert body["status"] == status
    assert body["endedAt"] is not None
    assert ts(body["endedAt"]) >= ts(body["createdAt"])


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_create_terminal_keeps_a_given_ended_at(acme: OrgClient, status: str) -> None:
    body = acme.create(status=status, endedAt="2024-01-02T03:04:05Z")
    assert ts(body["endedAt"]) == ts("2024-01-02T03:04:05Z")


def test_create_completed_after_future_start_never_ends_before_it(acme: OrgClient) -> None:
    body = acme.create(status="completed", startedAt="2099-01-01T00:00:00Z")
    assert ts(body["endedAt"]) >= ts(body["startedAt"])


def test_create_running_sets_started_at(acme: OrgClient) -> None:
    body = acme.create(status="running")
    assert body["status"] == "running"
    assert body["startedAt"] is not None
    assert ts(body["startedAt"]) >= ts(body["createdAt"])
    assert body["endedAt"] is None


def test_create_running_keeps_a_given_started_at(acme: OrgClient) -> None:
    body = acme.create(status="running", startedAt="2024-01-02T03:04:05+02:00")
    assert ts(body["startedAt"]) == ts("2024-01-02T01:04:05Z")
    assert body["startedAt"].endswith("Z")


def test_create_default_status_is_not_started(acme: OrgClient) -> None:
    body = acme.create()
    assert body["startedAt"] is None
    assert body["endedAt"] is None


def test_create_with_status_queued_is_422(acme: OrgClient) -> None:
    response = acme.post("/v1/tasks", json={"kind": "default", "status": "queued"})
    assert "queued" in error_of(response, 422, "validation_error")
    assert acme.get("/v1/tasks").json()["items"] == []


def test_create_with_unknown_status_is_422(acme: OrgClient) -> None:
    response = acme.post("/v1/tasks", json={"kind": "default", "status": "done"})
    assert "status" in error_of(response, 422, "validation_error")


@pytest.mark.parametrize("kind", ["a b", "", "-lead", "a*b", "x" * 129, "ké"])
def test_create_with_invalid_kind_is_422(acme: OrgClient, kind: str) -> None:
    response = acme.post("/v1/tasks", json={"kind": kind})
    assert "kind" in error_of(response, 422, "validation_error")


@pytest.mark.parametrize("executor_id", ["a b", "", "gpu#1"])
def test_create_with_invalid_executor_id_is_422(acme: OrgClient, executor_id: str) -> None:
    response = acme.post("/v1/tasks", json={"kind": "default", "executorId": executor_id})
    assert "executorId" in error_of(response, 422, "validation_error")


@pytest.mark.parametrize("kind", ["default", "CallAction", "Flow", "billing/charge:v2", "a.b-c_d"])
def test_create_accepts_plain_kinds(acme: OrgClient, kind: str) -> None:
    # A Flow that will run needs its steps (an empty list is a valid Flow).
    params = {"steps": []} if kind == "Flow" else {}
    assert acme.create(kind=kind, params=params)["kind"] == kind


def test_create_is_persisted_as_answered(acme: OrgClient) -> None:
    body = acme.create(title="persisted", params={"k": "v"}, appId="app", targetId="t/1")
    fetched = acme.get(f"/v1/tasks/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == body
