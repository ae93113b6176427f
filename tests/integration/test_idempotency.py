"""Idempotency-Key on POST /v1/tasks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine, text

from tests.support.api import OrgClient, error_of


def _post(
    client: OrgClient, body: dict[str, object], key: str
) -> tuple[int, dict[str, object], str]:
    response = client.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
    return response.status_code, response.json(), response.headers.get("Idempotent-Replayed", "")


def test_same_key_and_body_answer_the_first_task(acme: OrgClient) -> None:
    body = {"kind": "default", "input": {"order": 7}}
    first = _post(acme, body, "order-7")
    again = _post(acme, body, "order-7")
    assert first[0] == again[0] == 201
    assert again[1]["id"] == first[1]["id"]
    assert (first[2], again[2]) == ("", "true")
    assert len(acme.get("/v1/tasks").json()["items"]) == 1


def test_same_key_with_another_body_is_409(acme: OrgClient) -> None:
    _post(acme, {"kind": "default", "input": 1}, "k")
    response = acme.post(
        "/v1/tasks",
        json={"kind": "default", "input": 2},
        headers={"Idempotency-Key": "k"},
    )
    assert "Idempotency-Key" in error_of(response, 409, "idempotency_conflict")
    assert len(acme.get("/v1/tasks").json()["items"]) == 1


def test_keys_are_per_organization(acme: OrgClient, globex: OrgClient) -> None:
    ours = _post(acme, {"kind": "default"}, "shared")
    theirs = _post(globex, {"kind": "default"}, "shared")
    assert ours[1]["id"] != theirs[1]["id"] and theirs[2] == ""


def test_concurrent_requests_with_one_key_create_one_task(acme: OrgClient, engine: Engine) -> None:
    body = {"kind": "default", "title": "once"}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _post(acme, body, "race"), range(16)))
    assert {status for status, _, _ in results} == {201}
    assert len({answer["id"] for _, answer, _ in results}) == 1
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tasks WHERE title = 'once'")).scalar() == 1


def test_an_expired_key_creates_a_new_task(acme: OrgClient, engine: Engine) -> None:
    first = _post(acme, {"kind": "default"}, "old")
    with engine.begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"))
    again = _post(acme, {"kind": "default", "input": "changed"}, "old")
    assert again[0] == 201 and again[1]["id"] != first[1]["id"] and again[2] == ""


def test_a_bad_key_is_422(acme: OrgClient) -> None:
    response = acme.post(
        "/v1/tasks",
        json={"kind": "default"},
        headers={"Idempotency-Key": "x" * 300},
    )
    assert "Idempotency-Key" in error_of(response, 422, "validation_error")
