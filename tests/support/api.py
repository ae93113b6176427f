"""An API client bound to one organization's key, over the real app in-process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine

from tasks_core.storage.keys import create_key, ensure_organization


@dataclass
class OrgClient:
    """Requests to the API as one organization (its key in every call)."""

    http: httpx.Client
    key: str
    key_id: str
    organization_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def post(
        self, path: str, json: Any = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return self.http.post(path, json=json, headers={**self.headers, **(headers or {})}, **kw)

    def put(self, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return self.http.put(path, json=json, headers=self.headers, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, headers=self.headers, **kw)

    def create(self, **fields: Any) -> dict[str, Any]:
        """POST /v1/tasks, asserting 201; ``kind`` defaults to ``default``."""
        fields.setdefault("kind", "default")
        response = self.post("/v1/tasks", json=fields)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


def issue_key(engine: Engine, organization: str) -> tuple[str, str, str]:
    """(secret, key id, organization id) of a new key of ``organization``."""
    with engine.begin() as conn:
        org_id = ensure_organization(conn, organization)
        issued = create_key(conn, org_id, name="test")
    return issued.secret, str(issued.id), str(org_id)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    """Assert an error answer: its status, the exact {code, message} shape, and the
    code; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    message: str = body["message"]
    return message


TERMINAL = ("completed", "failed", "cancelled")


def wait_for_status(
    client: OrgClient, task_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 20.0
) -> dict[str, Any]:
    """Poll GET /v1/tasks/{id} until the task has one of ``statuses``; returns it."""
    from tests.support.wait import wait_until

    def current() -> dict[str, Any] | None:
        # depth=0: a large Flow's children would make every poll heavy.
        body: dict[str, Any] = client.get(f"/v1/tasks/{task_id}", params={"depth": 0}).json()
        return body if body.get("status") in statuses else None

    return wait_until(current, timeout=timeout, message=f"task {task_id} never reached {statuses}")
