"""The hardening ring collects and reaches both rings' fixtures."""

from __future__ import annotations

from tests.support.api import OrgClient


def test_an_organization_of_the_api_ring_creates_a_task(acme: OrgClient) -> None:
    answer = acme.post("/v1/tasks", json={"kind": "default"})
    assert answer.status_code == 201, answer.text
