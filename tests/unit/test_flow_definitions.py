"""Flow definitions (tasks_core.flow_definitions): validation, order, references. No servers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tasks_core.errors import ValidationFailed
from tasks_core.flow_definitions import Limits, Step, parse_flow, refs_in, resolve_refs

LIMITS = Limits()


def step(step_id: str, **fields: Any) -> dict[str, Any]:
    """A raw step (wire form) of kind CallAction unless told otherwise."""
    return {"id": step_id, "kind": "CallAction", **fields}


def after_of(steps: list[Step]) -> dict[str, tuple[str, ...]]:
    return {s.id: s.after for s in steps}


def refused(raw_steps: Any, mode: Any = None, *, limits: Limits = LIMITS) -> str:
    """Assert that the definition is refused; returns the message."""
    with pytest.raises(ValidationFailed) as caught:
        parse_flow(raw_steps, mode, limits=limits)
    assert caught.value.code == "validation_error"
    assert caught.value.message
    return caught.value.message


def nested(depth: int) -> list[dict[str, Any]]:
    """A definition whose Flow steps nest inline ``depth`` levels deep in all
    (the top level counts as 1); the nested Flow steps are l2, l3, ..."""
    steps: list[dict[str, Any]] = [step("leaf")]
    for level in range(depth, 1, -1):
        steps = [step(f"l{level}", kind="Flow", params={"steps": steps})]
    return steps


# --- order: mode and after ---------------------------------------------------------------


def test_without_mode_or_after_every_step_runs_at_once() -> None:
    steps = parse_flow([step("a"), step("b"), step("c")], None, limits=LIMITS)
    assert [s.id for s in steps] == ["a", "b", "c"]
    assert after_of(steps) == {"a": (), "b": (), "c": ()}


def test_parallel_mode_is_the_default() -> None:
    raw = [step("a"), step("b")]
    assert parse_flow(raw, "parallel", limits=LIMITS) == parse_flow(raw, None, limits=LIMITS)


def test_sequential_mode_makes_each_step_run_after_the_previous_one() -> None:
    steps = parse_flow([step("a"), step("b"), step("c")], "sequential", limits=LIMITS)
    assert after_of(steps) == {"a": (), "b": ("a",), "c": ("b",)}


def test_explicit_after_makes_a_graph_and_mode_is_then_ignored() -> None:
    raw = [step("a"), step("b"), step("c", after=["a"]), step("d", after=["a", "c"])]
    expected = {"a": (), "b": (), "c": ("a",), "d": ("a", "c")}
    assert after_of(parse_flow(raw, "sequential", limits=LIMITS)) == expected
    assert after_of(parse_flow(raw, "parallel", limits=LIMITS)) == expected


def test_parsed_steps_carry_every_field() -> None:
    raw = step(
        "fetch",
        targetId="http/get",
        input={"url": {"$ref": "input.url"}},
        params={"verb": "GET"},
        executorId="gpu",
        continueOnError=True,
        maxAttempts=3,
        timeoutSeconds=2.5,
        title="Fetch",
    )
    (parsed,) = parse_flow([raw], None, limits=LIMITS)
    assert parsed == Step(
        id="fetch",
        kind="CallAction",
        after=(),
        target_id="http/get",
        input={"url": {"$ref": "input.url"}},
        params={"verb": "GET"},
        executor_id="gpu",
        continue_on_error=True,
        max_attempts=3,
        timeout_seconds=2.5,
        title="Fetch",
    )


def test_an_empty_definition_is_valid() -> None:
    assert parse_flow([], None, limits=LIMITS) == []
    assert parse_flow([], "sequential", limits=LIMITS) == []


# --- refused definitions: the message names the step -------------------------------------


def test_a_two_step_cycle_is_refused_naming_a_step_on_it() -> None:
    message = refused([step("a", after=["b"]), step("b", after=["a"]), step("c")])
    assert "cycle" in message
    assert "'a'" in message or "'b'" in message
    assert "'c'" not in message


def test_a_three_step_cycle_is_refused_naming_a_step_on_it() -> None:
    raw = [
        step("start"),
        step("x", after=["start", "z"]),
        step("y", after=["x"]),
        step("z", after=["y"]),
    ]
    message = refused(raw)
    assert "cycle" in message
    assert any(f"'{sid}'" in message for sid in ("x", "y", "z"))
    assert "start" not in message


def test_the_cycle_named_is_the_cycle_not_the_steps_waiting_on_it() -> None:
    message = refused([step("a", after=["z"]), step("y", after=["z"]), step("z", after=["y"])])
    assert message.endswith(
        (
            "'z' -> 'y' -> 'z' (each runs after the next)",
            "'y' -> 'z' -> 'y' (each runs after the next)",
        )
    ), message
    assert "'a'" not in message


def test_a_step_that_runs_after_itself_is_refused_naming_it() -> None:
    assert "'a'" in refused([step("a", after=["a"])])


def test_after_an_unknown_step_is_refused_naming_both() -> None:
    message = refused([step("a"), step("b", after=["a", "ghost"])])
    assert "'b'" in message and "'ghost'" in message


def test_a_duplicate_id_is_refused_naming_it() -> None:
    message = refused([step("a"), step("twice"), step("twice", kind="Other")])
    assert "'twice'" in message


@pytest.mark.parametrize(
    ("step_id", "shown"),
    [("", "''"), ("a b", "'a b'"), ("x" * 65, "x" * 65), ("é", "'é'"), (None, "None"), (7, "7")],
    ids=["empty", "space", "too-long", "non-ascii", "missing", "number"],
)
def test_a_bad_step_id_is_refused_naming_the_step(step_id: Any, shown: str) -> None:
    raw: dict[str, Any] = {"kind": "CallAction"}
    if step_id is not None:
        raw["id"] = step_id
    message = refused([step("ok"), raw])
    assert "params.steps[1]" in message
    assert shown in message


def test_ids_of_letters_digits_dash_and_underscore_are_valid() -> None:
    ids = ["a", "A-1_b", "x" * 64, "0"]
    assert [s.id for s in parse_flow([step(i) for i in ids], None, limits=LIMITS)] == ids


@pytest.mark.parametrize("kind", [None, "", "a b", 5], ids=["missing", "empty", "space", "int"])
def test_a_missing_or_bad_kind_is_refused_naming_the_step(kind: Any) -> None:
    raw: dict[str, Any] = {"id": "nokind"}
    if kind is not None:
        raw["kind"] = kind
    message = refused([raw])
    assert "'nokind'" in message and "kind" in message


@pytest.mark.parametrize("raw", ["a", 5, None, ["a"]], ids=["str", "int", "null", "list"])
def test_a_step_that_is_not_an_object_is_refused_naming_its_index(raw: Any) -> None:
    message = refused([step("a"), raw])
    assert "params.steps[1]" in message and "object" in message


def test_unknown_step_fields_are_refused_naming_them() -> None:
    message = refused([step("a"), step("b", colour="red", depends=["a"])])
    assert "params.steps[1]" in message
    assert "colour" in message and "depends" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("after", "a"),
        ("after", [1]),
        ("after", [["a"]]),
        ("maxAttempts", 0),
        ("maxAttempts", 101),
        ("maxAttempts", -1),
        ("maxAttempts", "3"),
        ("maxAttempts", True),
        ("maxAttempts", 2.5),
        ("maxAttempts", None),
        ("timeoutSeconds", 0),
        ("timeoutSeconds", -1),
        ("timeoutSeconds", "10"),
        ("timeoutSeconds", True),
        ("continueOnError", "yes"),
        ("continueOnError", 1),
        ("continueOnError", None),
        ("params", ["a"]),
        ("params", "x"),
        ("executorId", "a b"),
        ("executorId", 5),
        ("targetId", 5),
        ("title", ["t"]),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_step_and_field(field: str, value: Any) -> None:
    message = refused([step("a"), step("bad", **{field: value})])
    assert "'bad'" in message
    assert field in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("after", ""), ("after", {}), ("after", 0), ("params", []), ("params", ""), ("params", 0)],
)
def test_a_falsy_value_of_the_wrong_type_is_refused_too(field: str, value: Any) -> None:
    message = refused([step("bad", **{field: value})])
    assert "'bad'" in message and field in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("maxAttempts", 1),
        ("maxAttempts", 100),
        ("timeoutSeconds", 0.5),
        ("timeoutSeconds", 30),
        ("timeoutSeconds", None),
        ("continueOnError", False),
        ("executorId", "gpu-pool"),
        ("executorId", None),
        ("after", None),
        ("after", []),
        ("params", None),
    ],
)
def test_boundary_values_of_step_fields_are_accepted(field: str, value: Any) -> None:
    parse_flow([step("a", **{field: value})], None, limits=LIMITS)


@pytest.mark.parametrize("mode", ["zigzag", "", "Sequential", 1, ["parallel"]])
def test_an_unknown_mode_is_refused_naming_it(mode: Any) -> None:
    message = refused([step("a")], mode)
    assert "params.mode" in message and repr(mode) in message


@pytest.mark.parametrize("raw_steps", [{"a": step("a")}, "a", None, 3, step("a")])
def test_steps_that_are_not_a_list_are_refused(raw_steps: Any) -> None:
    assert "params.steps" in refused(raw_steps)


# --- limits ------------------------------------------------------------------------------


def test_more_steps_than_the_limit_are_refused() -> None:
    small = Limits(max_steps=3)
    assert len(parse_flow([step(f"s{i}") for i in range(3)], None, limits=small)) == 3
    message = refused([step(f"s{i}") for i in range(4)], limits=small)
    assert "3" in message and "4" in message


def test_nesting_up_to_the_limit_is_accepted() -> None:
    (outer,) = parse_flow(nested(2), None, limits=Limits(max_depth=2))
    assert outer.id == "l2" and outer.kind == "Flow"


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    message = refused(nested(3), limits=Limits(max_depth=2))
    assert "nest" in message and "2" in message
    assert parse_flow(nested(3), None, limits=Limits(max_depth=3))


def test_the_depth_counts_from_the_level_given() -> None:
    parse_flow([step("a")], None, limits=Limits(max_depth=2), depth=2)
    with pytest.raises(ValidationFailed, match="nest"):
        parse_flow([step("a")], None, limits=Limits(max_depth=2), depth=3)


def test_nesting_deeper_than_the_limit_is_refused_naming_the_step() -> None:
    message = refused(nested(3), limits=Limits(max_depth=2))
    assert "'l2'" in message or "'l3'" in message, message


def test_a_nested_inline_flow_with_a_cycle_is_refused_naming_a_step_on_it() -> None:
    inner = [step("x", after=["y"]), step("y", after=["x"])]
    message = refused([step("first"), step("sub", kind="Flow", params={"steps": inner})])
    assert "cycle" in message and ("'x'" in message or "'y'" in message)


def test_a_nested_inline_flow_is_checked_with_its_own_mode() -> None:
    inner = {"steps": [step("x")], "mode": "zigzag"}
    assert "zigzag" in refused([step("sub", kind="Flow", params=inner)])


def test_a_non_flow_step_with_params_steps_is_not_parsed_as_a_flow() -> None:
    params = {"steps": "anything"}
    (parsed,) = parse_flow([step("a", params=params)], None, limits=LIMITS)
    assert parsed.params == params


# --- references --------------------------------------------------------------------------


def test_input_refs_are_accepted_anywhere_in_the_input() -> None:
    value = {
        "whole": {"$ref": "input"},
        "list": [1, {"$ref": "input.a"}, [{"deep": {"$ref": "input.a.b.0"}}]],
        "obj": {"x": {"y": {"$ref": "input.z"}}},
    }
    (parsed,) = parse_flow([step("a", input=value)], None, limits=LIMITS)
    assert parsed.input == value


def test_a_ref_to_a_step_this_one_runs_directly_after_is_accepted() -> None:
    raw = [step("x"), step("y", after=["x"], input={"v": {"$ref": "steps.x.output.id"}})]
    parse_flow(raw, None, limits=LIMITS)


def test_a_ref_to_a_step_this_one_runs_after_transitively_is_accepted() -> None:
    raw = [
        step("x"),
        step("m", after=["x"]),
        step("y", after=["m"], input=[{"$ref": "steps.x.output"}]),
    ]
    parse_flow(raw, None, limits=LIMITS)


def test_in_sequential_mode_a_ref_to_any_earlier_step_is_accepted() -> None:
    raw = [step("x"), step("m"), step("y", input={"a": {"$ref": "steps.x.output"}})]
    parse_flow(raw, "sequential", limits=LIMITS)
    assert "'y'" in refused(raw, "parallel")


@pytest.mark.parametrize(
    ("raw", "mode"),
    [
        ([step("x"), step("y", input={"$ref": "steps.x.output"})], "parallel"),
        ([step("x"), step("y", input={"$ref": "steps.ghost.output"})], "parallel"),
        ([step("y", input={"$ref": "steps.x.output"}), step("x")], "sequential"),
        ([step("x"), step("y", after=["x"], input={"$ref": "steps.y.output"})], None),
        (
            [step("x"), step("z"), step("y", after=["z"], input={"$ref": "steps.x.output"})],
            None,
        ),
    ],
    ids=["parallel", "unknown", "later", "itself", "other-branch"],
)
def test_a_ref_to_a_step_this_one_does_not_run_after_is_refused(
    raw: list[dict[str, Any]], mode: str | None
) -> None:
    message = refused(raw, mode)
    assert "'y'" in message and "does not run after" in message


@pytest.mark.parametrize(
    "ref", ["output.a", "inputs.a", "steps.x", "steps.x.result", "", "$input.a", "env.HOME"]
)
def test_a_ref_that_starts_with_something_else_is_refused(ref: str) -> None:
    raw = [step("x"), step("y", after=["x"], input={"deep": [{"$ref": ref}]})]
    message = refused(raw)
    assert "'y'" in message and repr(ref) in message


def test_refs_in_finds_every_ref() -> None:
    value = {
        "a": {"$ref": "input.a"},
        "b": [{"$ref": "steps.x.output"}, {"c": {"$ref": "input.a"}}],
        "d": {"$ref": 5},
        "e": {"$ref": "input.e", "other": {"$ref": "input.f"}},
        "g": "plain",
    }
    assert Counter(refs_in(value)) == Counter(["input.a", "steps.x.output", "input.a", "input.f"])
    assert refs_in({"$ref": "input"}) == ["input"]
    assert refs_in([1, "two", None]) == []
    assert refs_in(None) == []


def test_resolve_refs_replaces_input_and_step_output_refs() -> None:
    flow_input = {"user": {"name": "ada"}, "items": ["p", "q", "r"]}
    outputs = {"a": {"user": {"id": 42}}, "b": [10, 20]}
    value = {
        "name": {"$ref": "input.user.name"},
        "second": {"$ref": "input.items.1"},
        "all": {"$ref": "input"},
        "uid": {"$ref": "steps.a.output.user.id"},
        "whole": {"$ref": "steps.b.output"},
        "list": [{"$ref": "steps.b.output.0"}, "literal", {"k": {"$ref": "input.items.2"}}],
        "kept": 7,
    }
    assert resolve_refs(value, flow_input=flow_input, outputs=outputs) == {
        "name": "ada",
        "second": "q",
        "all": flow_input,
        "uid": 42,
        "whole": [10, 20],
        "list": [10, "literal", {"k": "r"}],
        "kept": 7,
    }


@pytest.mark.parametrize(
    "ref",
    [
        "input.missing",
        "input.user.name.first",
        "input.items.9",
        "input.items.-1",
        "input.items.x",
        "steps.a.output.nope",
        "steps.failed.output",
        "steps.failed.output.x",
    ],
)
def test_resolve_refs_gives_none_for_a_missing_path(ref: str) -> None:
    flow_input = {"user": {"name": "ada"}, "items": ["p"]}
    outputs = {"a": {"user": {"id": 42}}}
    resolved = resolve_refs({"v": {"$ref": ref}}, flow_input=flow_input, outputs=outputs)
    assert resolved == {"v": None}


def test_resolve_refs_leaves_values_without_refs_as_they_are() -> None:
    value = {"a": [1, {"b": "c"}], "$ref": "input.a", "d": None}
    assert resolve_refs(value, flow_input={"a": 1}, outputs={}) == {
        "a": [1, {"b": "c"}],
        "$ref": "input.a",
        "d": None,
    }


def test_a_ten_thousand_step_sequential_flow_with_refs_to_the_previous_step_parses() -> None:
    # A guard against quadratic validation: no timing assertion, but the suite's
    # timeout catches a blow-up.
    n = 10_000
    raw = [step("s0", input={"$ref": "input.seed"})] + [
        step(f"s{i}", input={"prev": {"$ref": f"steps.s{i - 1}.output"}}) for i in range(1, n)
    ]
    steps = parse_flow(raw, "sequential", limits=LIMITS)
    assert len(steps) == n
    assert steps[0].after == ()
    assert steps[-1].after == (f"s{n - 2}",)
    assert all(s.after == (f"s{i}",) for i, s in enumerate(steps[1:]))


def test_step_json_round_trips() -> None:
    full = Step(
        id="fetch",
        kind="CallAction",
        after=("a", "b"),
        target_id="http/get",
        input={"url": {"$ref": "input.url"}},
        params={"verb": "GET"},
        executor_id="gpu",
        continue_on_error=True,
        max_attempts=5,
        timeout_seconds=1.5,
        title="Fetch",
    )
    bare = Step(id="b", kind="default", after=())
    for original in (full, bare):
        wire = original.to_json()
        assert Step.from_json(wire) == original
        assert Step.from_json(wire).to_json() == wire
    assert full.to_json() == {
        "id": "fetch",
        "kind": "CallAction",
        "after": ["a", "b"],
        "targetId": "http/get",
        "input": {"url": {"$ref": "input.url"}},
        "params": {"verb": "GET"},
        "executorId": "gpu",
        "continueOnError": True,
        "maxAttempts": 5,
        "timeoutSeconds": 1.5,
        "title": "Fetch",
    }


def test_parsed_steps_round_trip_through_their_wire_form() -> None:
    raw = [step("a", maxAttempts=2), step("b", after=["a"], input={"$ref": "steps.a.output"})]
    steps = parse_flow(raw, None, limits=LIMITS)
    wire = [s.to_json() for s in steps]
    assert [Step.from_json(w) for w in wire] == steps
    assert parse_flow(wire, None, limits=LIMITS) == steps
