"""The reference's create call, end to end through the API on real servers."""

from __future__ import annotations

from tests.support.api import OrgClient


def test_create_default_task_returns_full_task_and_queues_it(acme: OrgClient) -> None:
    body = acme.create(kind="default")
    assert body["status"] == "queued"
    assert body["children"] == [] and body["errors"] == [] and body["params"] == {}
    assert body["organizationId"] == acme.organization_id
    assert body["authorId"] == acme.key_id
