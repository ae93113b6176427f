"""Probes and the published OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_healthz_is_200(http: TestClient) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_with_database_and_redis_up(http: TestClient) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


def test_probes_need_no_key(http: TestClient) -> None:
    assert http.get("/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 200
    assert http.get("/readyz", headers={"Authorization": "Bearer wrong"}).status_code == 200


def test_openapi_lists_every_endpoint(http: TestClient) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/v1/tasks": {"get", "post"},
        "/v1/tasks/batch": {"post"},
        "/v1/tasks/{taskId}": {"get", "put"},
        "/v1/tasks/{taskId}/cancel": {"post"},
        "/v1/tasks/{taskId}/events": {"get"},
        "/v1/states": {"post"},
        "/v1/states/{stateId}": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path


def test_openapi_task_schema_uses_the_reference_field_names(http: TestClient) -> None:
    schemas = http.get("/openapi.json").json()["components"]["schemas"]
    task_out = schemas["TaskOut"]["properties"]
    assert {"appId", "children", "createdAt", "stateId", "updatedAt"} <= set(task_out)
    create = schemas["TaskCreate"]
    assert create["required"] == ["kind"]
