"""Every error is ``{"code", "message"}``: oversized, malformed, mistyped bodies; unknown paths."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.api import OrgClient, error_of

SMALL_LIMIT = 2048


def assert_error_shape(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"code", "message"}, body
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["message"], str) and body["message"], body


@pytest.fixture
def small(client_with: Callable[..., OrgClient]) -> OrgClient:
    """A client of an app whose body limit is SMALL_LIMIT bytes."""
    return client_with(max_body_bytes=SMALL_LIMIT)


def json_of_size(size: int) -> bytes:
    head, tail = b'{"kind": "default", "title": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def post_raw(client: OrgClient, content: Any) -> httpx.Response:
    headers = {**client.headers, "Content-Type": "application/json"}
    return client.http.post("/v1/tasks", content=content, headers=headers)


def test_body_over_the_limit_is_413(small: OrgClient) -> None:
    response = post_raw(small, json_of_size(SMALL_LIMIT + 1))
    assert str(SMALL_LIMIT) in error_of(response, 413, "payload_too_large")
    assert small.get("/v1/tasks").json()["items"] == []


def test_body_at_the_limit_is_accepted(small: OrgClient) -> None:
    response = post_raw(small, json_of_size(SMALL_LIMIT))
    assert response.status_code == 201, response.text


def test_body_over_the_limit_is_413_on_put_and_states(small: OrgClient) -> None:
    task = small.create()
    big = {"title": "x" * SMALL_LIMIT}
    error_of(small.put(f"/v1/tasks/{task['id']}", json=big), 413, "payload_too_large")
    error_of(small.post("/v1/states", json={"name": "x" * SMALL_LIMIT}), 413, "payload_too_large")
    assert small.get(f"/v1/tasks/{task['id']}").json()["title"] is None


def test_streamed_body_over_the_limit_is_413(small: OrgClient) -> None:
    body = json_of_size(SMALL_LIMIT * 4)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    error_of(post_raw(small, chunks()), 413, "payload_too_large")


def test_streamed_body_under_the_limit_is_accepted(small: OrgClient) -> None:
    body = json_of_size(SMALL_LIMIT // 2)
    response = post_raw(small, iter([body[:100], body[100:]]))
    assert response.status_code == 201, response.text


def test_body_over_the_default_one_mib_is_413(acme: OrgClient) -> None:
    response = post_raw(acme, json_of_size(1_048_576 + 1))
    error_of(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "content", [b"{bad", b'{"kind": "default"', b"", b"nul", b"{'kind': 'default'}"]
)
def test_malformed_json_is_400_invalid_json(acme: OrgClient, content: bytes) -> None:
    error_of(post_raw(acme, content), 400, "invalid_json")


def test_malformed_json_on_put_is_400_invalid_json(acme: OrgClient) -> None:
    task = acme.create()
    headers = {**acme.headers, "Content-Type": "application/json"}
    response = acme.http.put(f"/v1/tasks/{task['id']}", content=b"{bad", headers=headers)
    error_of(response, 400, "invalid_json")


@pytest.mark.parametrize("body", [[{"kind": "default"}], "default", 5, None])
def test_non_object_json_body_is_4xx(acme: OrgClient, body: Any) -> None:
    response = acme.post("/v1/tasks", json=body)
    assert_error_shape(response)
    assert acme.get("/v1/tasks").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": 5}, "kind"),
        ({"kind": None}, "kind"),
        ({"kind": ["default"]}, "kind"),
        ({"kind": "default", "params": []}, "params"),
        ({"kind": "default", "params": "a=b"}, "params"),
        ({"kind": "default", "stateful": "x"}, "stateful"),
        ({"kind": "default", "startedAt": "yesterday"}, "startedAt"),
        ({"kind": "default", "endedAt": 12.5e99}, "endedAt"),
        ({"kind": "default", "parentId": 12}, "parentId"),
        ({"kind": "default", "title": {"a": 1}}, "title"),
        ({"kind": "default", "status": 1}, "status"),
        ({"kind": "default", "title": "x" * 10_001}, "title"),
        ({"kind": "default", "appId": "x" * 257}, "appId"),
    ],
)
def test_wrong_types_are_422_naming_the_field(
    acme: OrgClient, body: dict[str, Any], field: str
) -> None:
    message = error_of(acme.post("/v1/tasks", json=body), 422, "validation_error")
    assert field in message


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "default", "input": "a\u0000b"},
        {"kind": "default", "input": {"k": ["\u0000"]}},
        {"kind": "default", "output": "\u0000"},
        {"kind": "default", "params": {"a\u0000": 1}},
        {"kind": "default", "title": "a\u0000b"},
        {"kind": "default", "description": "\u0000"},
        {"kind": "default", "appId": "\u0000"},
    ],
)
def test_nul_character_is_4xx_never_500(acme: OrgClient, body: dict[str, Any]) -> None:
    response = acme.post("/v1/tasks", json=body)
    assert_error_shape(response)
    assert acme.get("/v1/tasks").json()["items"] == []


def test_nul_character_in_put_is_4xx_and_changes_nothing(acme: OrgClient) -> None:
    task = acme.create(input="clean")
    for changes in (
        {"input": "\u0000"},
        {"title": "\u0000"},
        {"errors": [{"code": "\u0000", "message": "m"}]},
    ):
        assert_error_shape(acme.put(f"/v1/tasks/{task['id']}", json=changes))
    assert acme.get(f"/v1/tasks/{task['id']}").json() == task


def test_nul_character_in_state_is_4xx(acme: OrgClient) -> None:
    assert_error_shape(acme.post("/v1/states", json={"name": "a\u0000"}))
    assert_error_shape(acme.post("/v1/states", json={"name": "a", "variables": {"v": "\u0000"}}))


@pytest.mark.parametrize(
    "content",
    [
        b'{"kind": "default", "input": NaN}',
        b'{"kind": "default", "output": Infinity}',
        b'{"kind": "default", "params": {"a": -Infinity}}',
        b'{"kind": "default", "input": 1e400}',
    ],
)
def test_non_finite_numbers_are_4xx_never_500(acme: OrgClient, content: bytes) -> None:
    assert_error_shape(post_raw(acme, content))
    assert acme.get("/v1/tasks").json()["items"] == []


def test_deeply_nested_input_is_4xx_never_500(acme: OrgClient) -> None:
    content = b'{"kind": "default", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert_error_shape(post_raw(acme, content))


def test_running_with_an_ended_at_in_the_past_is_422_not_500(acme: OrgClient) -> None:
    response = acme.post(
        "/v1/tasks",
        json={"kind": "default", "status": "running", "endedAt": "2020-01-01T00:00:00Z"},
    )
    error_of(response, 422, "validation_error")


@pytest.mark.parametrize("path", ["/nope", "/v1/nope", "/v1/tasks/a/b/c", "/v2/tasks"])
def test_unknown_path_is_404_in_error_shape(acme: OrgClient, path: str) -> None:
    error_of(acme.get(path), 404, "not_found")


def test_wrong_method_is_405_in_error_shape(acme: OrgClient) -> None:
    task = acme.create()
    response = acme.http.delete(f"/v1/tasks/{task['id']}", headers=acme.headers)
    error_of(response, 405, "method_not_allowed")


def test_every_error_body_is_exactly_code_and_message(
    acme: OrgClient, globex: OrgClient, http: TestClient
) -> None:
    done = acme.create(status="completed")
    responses = [
        http.get("/v1/tasks"),
        acme.post("/v1/tasks", json={}),
        acme.post("/v1/tasks", json={"kind": "default", "x": 1}),
        acme.put(f"/v1/tasks/{done['id']}", json={"kind": "x"}),
        acme.put(f"/v1/tasks/{done['id']}", json={"status": "running"}),
        acme.post(f"/v1/tasks/{done['id']}/cancel"),
        globex.get(f"/v1/tasks/{done['id']}"),
        acme.get("/v1/tasks", params={"cursor": "zz"}),
        acme.get("/v1/tasks", params={"limit": 9999}),
        acme.get(f"/v1/tasks/{done['id']}", params={"depth": 99}),
        post_raw(acme, b"{"),
        acme.get("/missing"),
    ]
    codes = set()
    for response in responses:
        assert_error_shape(response)
        codes.add(response.json()["code"])
    assert codes == {
        "unauthorized",
        "validation_error",
        "unknown_field",
        "immutable_field",
        "invalid_transition",
        "not_found",
        "invalid_cursor",
        "invalid_json",
    }
