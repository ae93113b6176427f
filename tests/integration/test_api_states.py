"""POST /v1/states and GET /v1/states/{stateId}: named containers of variables."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.support.api import OrgClient, error_of

STATE_FIELDS = {"id", "organizationId", "name", "variables", "version", "createdAt", "updatedAt"}


def test_create_state_with_name_and_variables(acme: OrgClient) -> None:
    variables = {"count": 3, "items": ["a", {"b": None}], "flag": True}
    response = acme.post("/v1/states", json={"name": "cart", "variables": variables})
    assert response.status_code == 201, response.text
    state = response.json()
    assert set(state) == STATE_FIELDS
    assert state["id"]
    assert state["organizationId"] == acme.organization_id
    assert state["name"] == "cart"
    assert state["variables"] == variables
    assert state["version"] == 1
    created = datetime.fromisoformat(state["createdAt"])
    assert state["createdAt"].endswith("Z") and state["updatedAt"].endswith("Z")
    assert datetime.fromisoformat(state["updatedAt"]) >= created


def test_get_state_returns_what_was_created(acme: OrgClient) -> None:
    state = acme.post("/v1/states", json={"name": "s", "variables": {"x": 1}}).json()
    response = acme.get(f"/v1/states/{state['id']}")
    assert response.status_code == 200
    assert response.json() == state


def test_create_state_without_variables_has_an_empty_object(acme: OrgClient) -> None:
    state = acme.post("/v1/states", json={"name": "empty"}).json()
    assert state["variables"] == {}
    assert state["version"] == 1


def test_create_state_without_name_is_422(acme: OrgClient) -> None:
    response = acme.post("/v1/states", json={"variables": {"x": 1}})
    assert "name" in error_of(response, 422, "validation_error")


@pytest.mark.parametrize("body", [{"name": ""}, {"name": 5}, {"name": "s", "variables": [1]}])
def test_create_state_with_invalid_values_is_422(acme: OrgClient, body: dict[str, object]) -> None:
    error_of(acme.post("/v1/states", json=body), 422, "validation_error")


def test_create_state_with_unknown_field_is_422(acme: OrgClient) -> None:
    response = acme.post("/v1/states", json={"name": "s", "version": 7})
    assert "version" in error_of(response, 422, "unknown_field")


def test_get_another_orgs_state_is_404(acme: OrgClient, globex: OrgClient) -> None:
    theirs = globex.post("/v1/states", json={"name": "secret"}).json()
    error_of(acme.get(f"/v1/states/{theirs['id']}"), 404, "not_found")
    assert globex.get(f"/v1/states/{theirs['id']}").status_code == 200


def test_get_another_orgs_task_state_is_404(acme: OrgClient, globex: OrgClient) -> None:
    theirs = globex.create(stateful=True)
    error_of(acme.get(f"/v1/states/{theirs['stateId']}"), 404, "not_found")


@pytest.mark.parametrize("state_id", ["01a2228e-1802-7167-a110-00dc8b68f75e", "not-an-id"])
def test_get_unknown_state_is_404(acme: OrgClient, state_id: str) -> None:
    error_of(acme.get(f"/v1/states/{state_id}"), 404, "not_found")
