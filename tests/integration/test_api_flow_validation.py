"""POST /v1/tasks of kind Flow: an inline definition is validated at create time (422
naming the step, nothing stored); a registered flow (targetId) is left to the worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.api import OrgClient, error_of

MAX_STEPS = 3
MAX_DEPTH = 2


def step(step_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "CallAction", **fields}


def nested(depth: int) -> list[dict[str, Any]]:
    """Steps whose inline Flow steps nest ``depth`` levels in all (the top level is 1);
    the nested Flow steps are l2, l3, ..."""
    steps: list[dict[str, Any]] = [step("leaf")]
    for level in range(depth, 1, -1):
        steps = [step(f"l{level}", kind="Flow", params={"steps": steps})]
    return steps


def stored(client: OrgClient) -> list[dict[str, Any]]:
    response = client.get("/v1/tasks")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def refused(client: OrgClient, **fields: Any) -> str:
    """POST a Flow, assert 422 validation_error and that nothing was stored; the message."""
    response = client.post("/v1/tasks", json={"kind": "Flow", **fields})
    message = error_of(response, 422, "validation_error")
    assert stored(client) == []
    return message


@pytest.fixture
def limited(client_with: Callable[..., OrgClient]) -> OrgClient:
    """A client of an app allowing MAX_STEPS steps per Flow and MAX_DEPTH levels of nesting."""
    return client_with(flow_max_steps=MAX_STEPS, flow_max_depth=MAX_DEPTH)


def test_a_flow_with_a_cycle_is_422_naming_a_step_on_it(acme: OrgClient) -> None:
    steps = [step("start"), step("a", after=["start", "b"]), step("b", after=["a"])]
    message = refused(acme, params={"steps": steps})
    assert "cycle" in message
    assert "'a'" in message or "'b'" in message


def test_a_flow_with_a_duplicate_step_id_is_422_naming_it(acme: OrgClient) -> None:
    message = refused(acme, params={"steps": [step("fetch"), step("fetch")]})
    assert "'fetch'" in message


def test_a_flow_with_an_unknown_after_is_422_naming_both_steps(acme: OrgClient) -> None:
    message = refused(acme, params={"steps": [step("a"), step("b", after=["ghost"])]})
    assert "'b'" in message and "'ghost'" in message


def test_a_flow_with_an_empty_step_id_is_422_naming_the_step(acme: OrgClient) -> None:
    message = refused(acme, params={"steps": [step("a"), step("")]})
    assert "params.steps[1].id" in message


def test_a_flow_with_a_bad_ref_is_422_naming_the_step(acme: OrgClient) -> None:
    steps = [step("a"), step("b", input={"x": {"$ref": "steps.a.output"}})]
    message = refused(acme, params={"steps": steps})
    assert "'b'" in message and "steps.a.output" in message


def test_a_flow_with_more_steps_than_the_limit_is_422(limited: OrgClient) -> None:
    message = refused(limited, params={"steps": [step(f"s{i}") for i in range(MAX_STEPS + 1)]})
    assert str(MAX_STEPS) in message and str(MAX_STEPS + 1) in message
    body = limited.create(kind="Flow", params={"steps": [step(f"s{i}") for i in range(MAX_STEPS)]})
    assert len(body["params"]["steps"]) == MAX_STEPS


def test_a_flow_nested_deeper_than_the_limit_is_422(limited: OrgClient) -> None:
    message = refused(limited, params={"steps": nested(MAX_DEPTH + 1)})
    assert "nest" in message and str(MAX_DEPTH) in message
    limited.create(kind="Flow", params={"steps": nested(MAX_DEPTH)})


def test_a_flow_nested_deeper_than_the_limit_is_422_naming_the_step(limited: OrgClient) -> None:
    message = refused(limited, params={"steps": nested(MAX_DEPTH + 1)})
    assert "'l2'" in message or "'l3'" in message, message


def test_a_nested_inline_flow_with_a_cycle_is_422(acme: OrgClient) -> None:
    inner = [step("x", after=["y"]), step("y", after=["x"])]
    message = refused(acme, params={"steps": [step("sub", kind="Flow", params={"steps": inner})]})
    assert "cycle" in message and ("'x'" in message or "'y'" in message)


def test_a_flow_with_neither_steps_nor_target_is_422(acme: OrgClient) -> None:
    message = refused(acme, params={"mode": "sequential"})
    assert "params.steps" in message and "targetId" in message
    assert "params.steps" in refused(acme)


def test_a_flow_with_both_steps_and_target_is_422(acme: OrgClient) -> None:
    message = refused(acme, targetId="onboarding", params={"steps": [step("a")]})
    assert "params.steps" in message and "targetId" in message


def test_a_valid_three_step_graph_is_accepted_and_echoed(acme: OrgClient) -> None:
    params = {
        "steps": [
            step("login", targetId="auth/login", input={"user": {"$ref": "input.user"}}),
            step("fetch", after=["login"], input={"token": {"$ref": "steps.login.output.t"}}),
            step("audit", after=["login", "fetch"], maxAttempts=3, continueOnError=True),
        ]
    }
    body = acme.create(kind="Flow", params=params, input={"user": "ada"})
    assert body["status"] == "queued"
    assert body["kind"] == "Flow"
    assert body["params"] == params
    fetched = acme.get(f"/v1/tasks/{body['id']}").json()
    assert fetched["params"] == params
    assert [t["id"] for t in stored(acme)] == [body["id"]]


def test_a_flow_with_an_empty_step_list_is_accepted(acme: OrgClient) -> None:
    body = acme.create(kind="Flow", params={"steps": []})
    assert body["status"] == "queued"
    assert body["params"] == {"steps": []}


def test_a_flow_naming_a_registered_flow_is_accepted_at_create_time(acme: OrgClient) -> None:
    body = acme.create(kind="Flow", targetId="onboarding", params={"mode": "sequential"})
    assert body["status"] == "queued"
    assert body["targetId"] == "onboarding"
    assert body["params"] == {"mode": "sequential"}


def test_steps_are_only_checked_for_flows(acme: OrgClient) -> None:
    params = {"steps": [step("a", after=["a"])]}
    assert acme.create(kind="default", params=params)["params"] == params
