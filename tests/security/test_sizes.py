"""Sizes as resolved: a small Flow definition whose references repeat a large
value many times is refused by its resolved size, at create time when that
size is known then, else when the step would be spawned, before its input is
built; a Flow's output is held to ``MAX_OUTPUT_BYTES`` the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks_core.flow_definitions import Step, input_sizes, resolve_refs
from tasks_core.json_sizes import json_size
from tests.support.api import OrgClient, error_of, wait_for_status
from tests.support.figures import report
from tests.support.workers import WorkerProcess

LIMIT = 524_288  # MAX_INPUT_BYTES and MAX_OUTPUT_BYTES, the defaults
VALUE = "x" * 100_000  # 100,002 bytes as JSON
REPEATS = 2000
MB = 1_000_000


def _echo(step_id: str, value: Any, **more: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "CallAction", "targetId": "builtin/echo", "input": value, **more}


def _peak_rss(worker: WorkerProcess) -> int:
    """The sum of the peak resident sizes (VmHWM) of the worker's processes, in bytes."""
    total = 0
    for pid in worker.pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def test_a_create_whose_references_resolve_over_the_limit_is_422(acme: OrgClient) -> None:
    body = {
        "kind": "Flow",
        "input": VALUE,
        "params": {"steps": [_echo("b", [{"$ref": "input"}] * REPEATS)]},
    }
    answer = acme.post("/v1/tasks", json=body)
    message = error_of(answer, 422, "too_large")
    bound = REPEATS * len(json.dumps(VALUE)) + REPEATS - 1 + 2
    assert message.startswith("step 'b' input would be") and f"{bound:,}" in message, message
    assert "MAX_INPUT_BYTES 524,288" in message
    assert acme.get("/v1/tasks").json()["items"] == []
    report(
        f"reference bomb: body={len(json.dumps(body)) / MB:.1f}MB bound={bound / MB:.0f}MB "
        f"answer={answer.status_code} worker_rss_growth=0 (refused before any worker)"
    )


def test_a_step_input_found_too_large_at_run_time_fails_the_flow_without_building_it(
    client: OrgClient, worker: WorkerProcess
) -> None:
    warm = client.create(
        kind="Flow", input=VALUE, params={"steps": [_echo("a", {"$ref": "input"})]}
    )
    assert wait_for_status(client, warm["id"])["status"] == "completed"
    before = _peak_rss(worker)
    steps = [
        _echo("a", {"$ref": "input"}),  # outputs 100 KB, known only once it ran
        _echo("b", [{"$ref": "steps.a.output"}] * REPEATS, after=["a"]),
    ]
    flow = client.create(kind="Flow", input=VALUE, params={"steps": steps})  # bound: 10 KB
    final = wait_for_status(client, flow["id"], timeout=30)
    growth = max(0, _peak_rss(worker) - before)
    error = final["errors"][0] if final["errors"] else {}
    report(
        f"reference bomb at run time: bound={REPEATS * 100_002 / MB:.0f}MB "
        f"status={final['status']} code={error.get('code')} "
        f"worker_rss_growth={growth / MB:.0f}MB"
    )
    assert final["status"] == "failed" and error.get("code") == "too_large", final["errors"]
    assert error["message"] == (
        f"step 'b' input would be {REPEATS * 100_002 + REPEATS + 1:,} bytes, "
        f"over MAX_INPUT_BYTES {LIMIT:,}"
    )
    children = client.get(f"/v1/tasks/{flow['id']}", params={"depth": 1}).json()["children"]
    assert [c["stepId"] for c in children] == ["a"]  # b was never created
    events = client.get(f"/v1/tasks/{flow['id']}/events").json()
    items = events["items"] if isinstance(events, dict) else events
    fan_ins = [e["detail"] for e in items if e["type"] == "fan_in"]
    assert [(d["step"], d["spawned"]) for d in fan_ins] == [("a", [])], fan_ins
    assert growth < 50 * MB, growth


def test_a_flow_whose_output_would_pass_the_limit_fails_too_large(
    client: OrgClient, worker: WorkerProcess
) -> None:
    steps = [_echo(f"s{i}", {"$ref": "input"}) for i in range(6)]  # 6 x 100 KB > 512 KB
    flow = client.create(kind="Flow", input=VALUE, params={"steps": steps})
    final = wait_for_status(client, flow["id"], timeout=30)
    assert final["status"] == "failed" and final["output"] is None, final["errors"]
    assert final["errors"][0]["code"] == "too_large"
    assert "MAX_OUTPUT_BYTES 524,288" in final["errors"][0]["message"]


def test_a_flow_under_the_limits_still_completes(client: OrgClient, worker: WorkerProcess) -> None:
    steps = [
        _echo("a", {"$ref": "input"}),
        _echo("b", [{"$ref": "steps.a.output"}] * 4, after=["a"]),
    ]
    flow = client.create(kind="Flow", input=VALUE, params={"steps": steps})
    final = wait_for_status(client, flow["id"], timeout=30)
    assert final["status"] == "completed", final["errors"]
    assert final["output"]["b"] == [VALUE] * 4


def test_a_nested_flow_whose_first_step_is_too_large_fails_at_its_start(
    client: OrgClient, worker: WorkerProcess
) -> None:
    inner = [_echo("b", [{"$ref": "input"}] * REPEATS)]  # its input is known only at run time
    steps = [
        _echo("a", {"$ref": "input"}),
        {"id": "n", "kind": "Flow", "after": ["a"], "input": {"$ref": "steps.a.output"},
         "params": {"steps": inner}},
    ]  # fmt: skip
    flow = client.create(kind="Flow", input=VALUE, params={"steps": steps})
    final = wait_for_status(client, flow["id"], timeout=30)
    assert final["status"] == "failed", final["errors"]
    message = final["errors"][0]["message"]
    assert message.startswith("step 'n' failed: too_large: step 'b' input would be"), message


@pytest.mark.parametrize(
    "template",
    [
        {"a": {"$ref": "input"}, "b": [{"$ref": "input.k"}, 1, "é", None], "c": {}},
        [{"$ref": "steps.s.output"}] * 3 + [{"$ref": "steps.s.output.missing"}, []],
        {"$ref": "input.k"},
        "plain",
    ],
)
def test_a_resolved_size_is_the_size_of_the_resolved_value(template: Any) -> None:
    flow_input = {"k": ["ü", 1.5, True, {"x": "y"}]}
    outputs = {"s": {"n": 10**30, "t": 'quote"d'}}
    step = Step(id="x", kind="default", after=(), input=template)
    resolved = resolve_refs(template, flow_input=flow_input, outputs=outputs)
    assert input_sizes(flow_input, outputs)(step) == json_size(resolved)
