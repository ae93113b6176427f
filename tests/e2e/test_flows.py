"""Flow tasks on real workers: order, data between steps, nesting, failures, cancel."""

from __future__ import annotations

from typing import Any

from tests.support.api import OrgClient, wait_for_status
from tests.support.workers import WorkerProcess


def echo(step_id: str, value: Any = None, **more: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "CallAction", "targetId": "builtin/echo", "input": value, **more}


def sleep(step_id: str, seconds: float, **more: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "kind": "CallAction",
        "targetId": "builtin/sleep",
        "input": {"seconds": seconds},
        **more,
    }


def run_flow(client: OrgClient, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    params = {"steps": steps, **fields.pop("params", {})}
    created = client.create(kind="Flow", params=params, **fields)
    return wait_for_status(client, created["id"], timeout=30)


def children(client: OrgClient, flow: dict[str, Any], depth: int = 1) -> dict[str, Any]:
    tree = client.get(f"/v1/tasks/{flow['id']}", params={"depth": depth}).json()
    return {child["stepId"]: child for child in tree["children"]}


def test_parallel_flow_completes_with_each_output(client: OrgClient, worker: WorkerProcess) -> None:
    flow = run_flow(client, [echo("a", 1), echo("b", {"x": 2}), echo("c", [3])])
    assert flow["status"] == "completed", flow
    assert flow["output"] == {"a": 1, "b": {"x": 2}, "c": [3]}
    kids = children(client, flow)
    assert set(kids) == {"a", "b", "c"}
    assert all(k["status"] == "completed" and k["parentId"] == flow["id"] for k in kids.values())


def test_sequential_flow_runs_each_step_after_the_previous(
    client: OrgClient, worker: WorkerProcess
) -> None:
    steps = [sleep("one", 0.05), sleep("two", 0.05), echo("three", "done")]
    flow = run_flow(client, steps, params={"mode": "sequential"})
    assert flow["status"] == "completed", flow
    kids = children(client, flow)
    assert kids["two"]["startedAt"] >= kids["one"]["endedAt"]
    assert kids["three"]["startedAt"] >= kids["two"]["endedAt"]


def test_graph_flow_passes_outputs_and_input_between_steps(
    client: OrgClient, worker: WorkerProcess
) -> None:
    steps = [
        echo("fetch", {"user": {"$ref": "input.userId"}}),
        echo("price", {"amount": 42}),
        echo(
            "bill",
            {"who": {"$ref": "steps.fetch.output.user"}, "total": {"$ref": "steps.price.output"}},
            after=["fetch", "price"],
        ),
    ]
    flow = run_flow(client, steps, input={"userId": "u-7"})
    assert flow["status"] == "completed", flow
    assert flow["output"]["bill"] == {"who": "u-7", "total": {"amount": 42}}
    kids = children(client, flow)
    assert kids["bill"]["input"] == {"who": "u-7", "total": {"amount": 42}}
    for dep in ("fetch", "price"):
        assert kids["bill"]["startedAt"] >= kids[dep]["endedAt"]


def test_an_empty_flow_completes_at_once(client: OrgClient, worker: WorkerProcess) -> None:
    flow = run_flow(client, [])
    assert (flow["status"], flow["output"]) == ("completed", {})


def test_a_nested_flow_completes_its_parent(client: OrgClient, worker: WorkerProcess) -> None:
    inner = {"id": "inner", "kind": "Flow", "params": {"steps": [echo("x", "deep")]}}
    flow = run_flow(client, [inner, echo("after", "end", after=["inner"])])
    assert flow["status"] == "completed", flow
    assert flow["output"] == {"inner": {"x": "deep"}, "after": "end"}
    tree = children(client, flow, depth=2)
    assert tree["inner"]["children"][0]["stepId"] == "x"


def test_a_failing_step_fails_the_flow_and_cancels_the_rest(
    client: OrgClient, worker: WorkerProcess
) -> None:
    steps = [
        {"id": "boom", "kind": "CallAction", "targetId": "builtin/fail",
         "input": {"code": "card_declined", "message": "no funds"}},
        sleep("slow", 30),
        echo("later", 1, after=["boom"]),
    ]  # fmt: skip
    flow = run_flow(client, steps)
    assert flow["status"] == "failed", flow
    assert flow["errors"][0]["code"] == "step_failed"
    assert (
        "boom" in flow["errors"][0]["message"] and "card_declined" in flow["errors"][0]["message"]
    )
    kids = wait_for_status_of_children(client, flow, {"boom": ("failed",), "slow": ("cancelled",)})
    assert "later" not in kids  # never spawned


def test_continue_on_error_goes_on_and_lists_the_failure(
    client: OrgClient, worker: WorkerProcess
) -> None:
    steps = [
        {"id": "flaky", "kind": "CallAction", "targetId": "builtin/fail",
         "input": {"code": "nope"}, "continueOnError": True},
        echo("next", {"prev": {"$ref": "steps.flaky.output"}}, after=["flaky"]),
    ]  # fmt: skip
    flow = run_flow(client, steps)
    assert flow["status"] == "completed", flow
    assert flow["output"]["flaky"]["status"] == "failed"
    assert flow["output"]["flaky"]["errors"][0]["code"] == "nope"
    assert flow["output"]["next"] == {"prev": None}


def test_cancel_of_a_flow_cancels_every_descendant_and_spawns_nothing_after(
    client: OrgClient, worker: WorkerProcess
) -> None:
    inner = {"id": "inner", "kind": "Flow", "params": {"steps": [sleep("deep", 30)]}}
    steps = [sleep("slow", 30), inner, echo("after", 1, after=["slow"])]
    created = client.create(kind="Flow", params={"steps": steps})
    wait_for_status_of_children(
        client, created, {"slow": ("running",), "inner": ("waiting",)}, depth=1
    )
    response = client.post(f"/v1/tasks/{created['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    tree = client.get(f"/v1/tasks/{created['id']}", params={"depth": 2}).json()
    kids = {c["stepId"]: c for c in tree["children"]}
    assert kids["slow"]["status"] == "cancelled" and kids["inner"]["status"] == "cancelled"
    assert all(c["status"] == "cancelled" for c in kids["inner"]["children"])
    assert "after" not in kids
    flow = wait_for_status(client, created["id"])
    assert flow["status"] == "cancelled"


def test_children_created_by_hand_are_not_steps(client: OrgClient, worker: WorkerProcess) -> None:
    created = client.create(kind="Flow", params={"steps": [sleep("s", 0.3)]})
    manual = client.create(kind="CallAction", targetId="builtin/sleep", parentId=created["id"],
                           input={"seconds": 30})  # fmt: skip
    flow = wait_for_status(client, created["id"], timeout=30)
    assert flow["status"] == "completed" and set(flow["output"]) == {"s"}
    assert client.get(f"/v1/tasks/{manual['id']}").json()["status"] in ("queued", "running")
    client.post(f"/v1/tasks/{manual['id']}/cancel")


def test_the_event_log_shows_spawns_and_fan_in(client: OrgClient, worker: WorkerProcess) -> None:
    flow = run_flow(client, [echo("a", 1), echo("b", 2, after=["a"])])
    events = client.get(f"/v1/tasks/{flow['id']}/events").json()["items"]
    kinds = [e["type"] for e in events]
    assert kinds.count("spawned") == 1 and kinds.count("fan_in") == 2
    fan_ins = [e["detail"] for e in events if e["type"] == "fan_in"]
    assert fan_ins[0]["step"] == "a" and fan_ins[0]["spawned"] == ["b"]
    assert fan_ins[1]["open_steps"] == 0
    assert [e["toStatus"] for e in events if e["type"] == "status"][-1] == "completed"
    assert sum(1 for e in events if e["toStatus"] in ("completed", "failed")) == 1


def wait_for_status_of_children(
    client: OrgClient, flow: dict[str, Any], wanted: dict[str, tuple[str, ...]], depth: int = 1
) -> dict[str, Any]:
    from tests.support.wait import wait_until

    def ready() -> dict[str, Any] | None:
        kids = children(client, flow, depth)
        ok = all(k in kids and kids[k]["status"] in s for k, s in wanted.items())
        return kids if ok else None

    return wait_until(ready, timeout=20, message=f"children never reached {wanted}")


def test_a_registered_flow_runs_by_target_id(client: OrgClient, worker: WorkerProcess) -> None:
    created = client.create(kind="Flow", targetId="test/two-steps", input={"n": 1})
    flow = wait_for_status(client, created["id"], timeout=30)
    assert flow["status"] == "completed", flow
    assert flow["output"] == {"first": {"n": 1}, "second": {"got": {"n": 1}}}


def test_an_unregistered_flow_fails_with_flow_not_found(
    client: OrgClient, worker: WorkerProcess
) -> None:
    created = client.create(kind="Flow", targetId="test/nothing")
    flow = wait_for_status(client, created["id"])
    assert flow["status"] == "failed" and flow["errors"][0]["code"] == "flow_not_found"


def test_steps_of_a_stateful_flow_share_its_state(client: OrgClient, worker: WorkerProcess) -> None:
    steps = [{"id": "a", "kind": "test.StateReader"}, {"id": "b", "kind": "test.StateReader"}]
    flow = run_flow(client, steps, stateful=True)
    assert flow["status"] == "completed", flow
    assert flow["output"] == {"a": {"state": flow["stateId"]}, "b": {"state": flow["stateId"]}}


def test_cancelling_one_step_fails_its_flow(client: OrgClient, worker: WorkerProcess) -> None:
    created = client.create(kind="Flow", params={"steps": [sleep("slow", 30), sleep("other", 30)]})
    kids = wait_for_status_of_children(client, created, {"slow": ("running",)})
    assert client.post(f"/v1/tasks/{kids['slow']['id']}/cancel").status_code == 200
    flow = wait_for_status(client, created["id"])
    assert flow["status"] == "failed" and "slow" in flow["errors"][0]["message"]
    kids = wait_for_status_of_children(client, created, {"other": ("cancelled",)})


def test_a_step_completed_by_put_fans_in(client: OrgClient, worker: WorkerProcess) -> None:
    created = client.create(kind="Flow", params={"steps": [sleep("external", 30)]})
    kids = wait_for_status_of_children(client, created, {"external": ("running",)})
    response = client.put(
        f"/v1/tasks/{kids['external']['id']}", json={"status": "completed", "output": "by hand"}
    )
    assert response.status_code == 200, response.text
    flow = wait_for_status(client, created["id"])
    assert (flow["status"], flow["output"]) == ("completed", {"external": "by hand"})
