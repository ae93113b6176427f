"""GET /v1/tasks/{taskId}/events: the task's log, oldest first, naming who did what."""

from __future__ import annotations

from typing import Any

from tests.support.api import OrgClient, error_of


def events(client: OrgClient, task_id: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/tasks/{task_id}/events", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_events_log_creation_queueing_status_change_and_update_in_order(acme: OrgClient) -> None:
    task = acme.create()
    me = f"key:{acme.key_id}"
    assert acme.put(f"/v1/tasks/{task['id']}", json={"status": "running"}).status_code == 200
    assert acme.put(f"/v1/tasks/{task['id']}", json={"title": "renamed"}).status_code == 200
    log = events(acme, task["id"])
    summary = [(e["type"], e["fromStatus"], e["toStatus"], e["actor"]) for e in log]
    assert summary == [
        ("created", None, "created", me),
        ("status", "created", "queued", "system:publisher"),
        ("status", "queued", "running", me),
        ("updated", None, None, me),
    ]
    assert log[3]["detail"] == {"fields": ["title"]}
    assert all(e["taskId"] == task["id"] for e in log)
    assert [e["id"] for e in log] == sorted(e["id"] for e in log)
    assert len({e["id"] for e in log}) == 4
    assert all(e["at"].endswith("Z") for e in log)
    assert set(log[0]) == {
        "id",
        "taskId",
        "at",
        "type",
        "fromStatus",
        "toStatus",
        "actor",
        "detail",
    }


def test_events_of_a_put_with_fields_and_status(acme: OrgClient) -> None:
    task = acme.create(status="running")
    acme.put(f"/v1/tasks/{task['id']}", json={"status": "completed", "output": 1})
    log = events(acme, task["id"])
    assert [(e["type"], e["toStatus"]) for e in log] == [
        ("created", "running"),
        ("updated", None),
        ("status", "completed"),
    ]
    assert log[1]["detail"] == {"fields": ["output"]}
    assert log[2]["fromStatus"] == "running"


def test_events_only_of_the_task_asked(acme: OrgClient) -> None:
    one, two = acme.create(), acme.create()
    acme.put(f"/v1/tasks/{two['id']}", json={"title": "x"})
    assert {e["taskId"] for e in events(acme, one["id"])} == {one["id"]}
    assert len(events(acme, one["id"])) == 2


def test_events_after_skips_earlier_ones(acme: OrgClient) -> None:
    task = acme.create()
    log = events(acme, task["id"])
    assert events(acme, task["id"], after=log[0]["id"]) == log[1:]
    assert events(acme, task["id"], limit=1) == log[:1]


def test_events_another_orgs_task_is_404(acme: OrgClient, globex: OrgClient) -> None:
    task = acme.create()
    error_of(globex.get(f"/v1/tasks/{task['id']}/events"), 404, "not_found")


def test_events_unknown_task_is_404(acme: OrgClient) -> None:
    error_of(acme.get("/v1/tasks/01a2228e-1802-7167-a110-00dc8b68f75e/events"), 404, "not_found")
