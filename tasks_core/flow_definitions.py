"""Flow definitions: steps, their order, and references between them.

Pure (no I/O): the API validates inline definitions with it at create time,
and the worker normalises registered ones with it when a Flow starts.

A definition is a list of steps, each::

    {"id": "fetch", "kind": "CallAction", "targetId": "http/get",
     "input": {"url": {"$ref": "input.url"}}, "params": {}, "executorId": null,
     "after": ["login"], "continueOnError": false, "maxAttempts": 1,
     "timeoutSeconds": null, "title": null}

Without any ``after``, ``mode`` orders them: ``parallel`` (default, all at
once) or ``sequential`` (each after the previous one). With ``after``, they
form a graph. ``{"$ref": "input.a.b"}`` anywhere in a step's input stands for
a part of the Flow's input, ``{"$ref": "steps.<id>.output.a"}`` for a part of
an earlier step's output; both are resolved when the step's task is created.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks_core.errors import ValidationFailed
from tasks_core.json_sizes import cached, json_size, resolved_size
from tasks_core.queues import is_valid_name
from tasks_core.quotas import check_executor, check_timeout

FLOW_KIND = "Flow"
MODES = ("parallel", "sequential")
STEP_FIELDS = {
    "id",
    "kind",
    "targetId",
    "input",
    "params",
    "executorId",
    "after",
    "continueOnError",
    "maxAttempts",
    "timeoutSeconds",
    "title",
}
_STEP_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_REF = "$ref"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a Flow, with its dependencies made explicit."""

    id: str
    kind: str
    after: tuple[str, ...]
    target_id: str | None = None
    input: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    executor_id: str | None = None
    continue_on_error: bool = False
    max_attempts: int = 1
    timeout_seconds: float | None = None
    title: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The normalised wire form (stored with the running Flow)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "after": list(self.after),
            "targetId": self.target_id,
            "input": self.input,
            "params": self.params,
            "executorId": self.executor_id,
            "continueOnError": self.continue_on_error,
            "maxAttempts": self.max_attempts,
            "timeoutSeconds": self.timeout_seconds,
            "title": self.title,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step:
        """The inverse of :meth:`to_json` (data already validated)."""
        return cls(
            id=data["id"],
            kind=data["kind"],
            after=tuple(data.get("after") or ()),
            target_id=data.get("targetId"),
            input=data.get("input"),
            params=dict(data.get("params") or {}),
            executor_id=data.get("executorId"),
            continue_on_error=bool(data.get("continueOnError", False)),
            max_attempts=int(data.get("maxAttempts") or 1),
            timeout_seconds=data.get("timeoutSeconds"),
            title=data.get("title"),
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """How large and how deep a Flow may be."""

    max_steps: int = 10_000
    max_depth: int = 16
    max_input_bytes: int = 524_288  # of each step's input, once resolved
    # Longest timeoutSeconds of a step (None: any).
    max_timeout_seconds: float | None = None
    # The executorIds a step may name (None: any); see tasks_core.quotas.
    executors: frozenset[str] | None = None


def parse_flow(
    raw_steps: Any, mode: Any, *, limits: Limits, depth: int = 1, where: str = ""
) -> list[Step]:
    """Validate a definition and return its steps with explicit ``after`` lists.

    ``depth`` is the nesting level of this Flow (1 for a top-level one); inline
    definitions of nested Flow steps are checked too. Raises
    :class:`ValidationFailed` naming the offending step.
    """
    if depth > limits.max_depth:
        raise ValidationFailed(
            f"{where}: Flows may nest at most {limits.max_depth} deep, this one is {depth} deep"
        )
    if mode is None:
        mode = "parallel"
    if mode not in MODES:
        raise ValidationFailed(f"params.mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(raw_steps, list):
        raise ValidationFailed("params.steps must be a list of steps")
    if len(raw_steps) > limits.max_steps:
        raise ValidationFailed(
            f"a Flow may have at most {limits.max_steps} steps, this one has {len(raw_steps)}"
        )
    steps = [_parse_step(raw, index, limits) for index, raw in enumerate(raw_steps)]
    _check_ids(steps)
    if mode == "sequential" and not any(s.after for s in steps):
        steps = [_with_after(s, (steps[i - 1].id,) if i else ()) for i, s in enumerate(steps)]
    _check_graph(steps)
    _check_refs(steps)
    for step in steps:
        if step.kind == FLOW_KIND and "steps" in step.params:
            parse_flow(
                step.params["steps"],
                step.params.get("mode"),
                limits=limits,
                depth=depth + 1,
                where=f"{where} > step {step.id!r}" if where else f"step {step.id!r}",
            )
    return steps


def _parse_step(raw: Any, index: int, limits: Limits) -> Step:
    where = f"params.steps[{index}]"
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{where} must be an object")
    unknown = sorted(set(raw) - STEP_FIELDS)
    if unknown:
        raise ValidationFailed(f"{where} has unknown fields: {', '.join(unknown)}")
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not _STEP_ID.fullmatch(step_id):
        raise ValidationFailed(
            f"{where}.id must be 1 to 64 letters, digits, _ or -, not {step_id!r}"
        )
    where = f"step {step_id!r}"
    kind = raw.get("kind")
    if not isinstance(kind, str) or not is_valid_name(kind):
        raise ValidationFailed(f"{where}: kind is required and must be a plain name")
    after = raw.get("after")
    after = [] if after is None else after
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise ValidationFailed(f"{where}: after must be a list of step ids")
    params = raw.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ValidationFailed(f"{where}: params must be an object")
    executor = raw.get("executorId")
    if executor is not None and (not isinstance(executor, str) or not is_valid_name(executor)):
        raise ValidationFailed(f"{where}: executorId must be a plain name")
    check_executor(executor, limits.executors, where=f"{where}: ")
    attempts = raw.get("maxAttempts", 1)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
        raise ValidationFailed(f"{where}: maxAttempts must be an integer from 1 to 100")
    timeout = raw.get("timeoutSeconds")
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise ValidationFailed(f"{where}: timeoutSeconds must be a positive number")
    check_timeout(timeout, limits.max_timeout_seconds, where=f"{where}: ")
    continue_on_error = raw.get("continueOnError", False)
    if not isinstance(continue_on_error, bool):
        raise ValidationFailed(f"{where}: continueOnError must be true or false")
    for name in ("targetId", "title"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ValidationFailed(f"{where}: {name} must be a string")
    return Step(
        id=step_id,
        kind=kind,
        after=tuple(after),
        target_id=raw.get("targetId"),
        input=raw.get("input"),
        params=params,
        executor_id=executor,
        continue_on_error=continue_on_error,
        max_attempts=attempts,
        timeout_seconds=timeout,
        title=raw.get("title"),
    )


def _with_after(step: Step, after: tuple[str, ...]) -> Step:
    return Step(**{**{n: getattr(step, n) for n in Step.__slots__}, "after": after})


def _check_ids(steps: list[Step]) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            raise ValidationFailed(f"step id {step.id!r} is used twice")
        seen.add(step.id)
    for step in steps:
        for dep in step.after:
            if dep not in seen:
                raise ValidationFailed(f"step {step.id!r} runs after unknown step {dep!r}")
            if dep == step.id:
                raise ValidationFailed(f"step {step.id!r} runs after itself")


def _check_graph(steps: list[Step]) -> None:
    """Refuse cycles: steps a topological order can not reach are on or behind one."""
    ordered = set(_topological(steps))
    if len(ordered) != len(steps):
        cycle = _a_cycle(steps, {s.id for s in steps} - ordered)
        raise ValidationFailed(
            f"steps form a cycle: {' -> '.join(repr(s) for s in cycle)} (each runs after the next)"
        )


def _a_cycle(steps: list[Step], stuck: set[str]) -> list[str]:
    """One cycle among the steps Kahn's algorithm could not order: every one
    of them waits on another stuck step, so following those edges loops."""
    by_id = {s.id: s for s in steps}
    path: list[str] = []
    current = min(stuck)
    while current not in path:
        path.append(current)
        current = min(dep for dep in by_id[current].after if dep in stuck)
    return [*path[path.index(current) :], current]


def _upstream_bits(steps: list[Step]) -> tuple[dict[str, int], dict[str, int]]:
    """Each step's transitive dependencies as a bit set (a Python int, bit i =
    the step at index i): one OR per edge in topological order, so checking
    any reference is a bit test, even for 10,000-step chains."""
    index = {s.id: i for i, s in enumerate(steps)}
    by_id = {s.id: s for s in steps}
    upstream: dict[str, int] = {}
    for step_id in _topological(steps):
        bits = 0
        for dep in by_id[step_id].after:
            bits |= upstream[dep] | (1 << index[dep])
        upstream[step_id] = bits
    return upstream, index


def _topological(steps: list[Step]) -> list[str]:
    waiting = {s.id: len(set(s.after)) for s in steps}
    dependents: dict[str, list[str]] = {s.id: [] for s in steps}
    for step in steps:
        for dep in set(step.after):
            dependents[dep].append(step.id)
    order = [sid for sid, n in waiting.items() if n == 0]
    for current in order:  # grows while iterating: a breadth-first Kahn order
        for nxt in dependents[current]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                order.append(nxt)
    return order


def _check_refs(steps: list[Step]) -> None:
    """A step may refer only to the output of a step it runs after."""
    refs = [(step, ref) for step in steps for ref in refs_in(step.input)]
    if not refs:
        return
    upstream, index = (
        _upstream_bits(steps) if any(r.startswith("steps.") for _, r in refs) else ({}, {})
    )
    for step, ref in refs:
        parts = ref.split(".")
        if parts[0] == "input":
            continue
        if parts[0] != "steps" or len(parts) < 3 or parts[2] != "output":
            raise ValidationFailed(
                f"step {step.id!r}: reference {ref!r} must start with 'input' or "
                "'steps.<id>.output'"
            )
        target = parts[1]
        if target not in index or not upstream[step.id] >> index[target] & 1:
            raise ValidationFailed(
                f"step {step.id!r} refers to {ref!r} but does not run after step {target!r}"
            )


def refs_in(value: Any) -> list[str]:
    """Every ``{"$ref": ...}`` path inside a JSON value."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if set(item) == {_REF} and isinstance(item[_REF], str):
                found.append(item[_REF])
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def resolve_refs(value: Any, *, flow_input: Any, outputs: Mapping[str, Any]) -> Any:
    """``value`` with every reference replaced by what it points at (null when
    the path is missing: a key absent from an output, or a failed step's output)."""
    if isinstance(value, dict):
        if set(value) == {_REF} and isinstance(value[_REF], str):
            return _lookup(value[_REF], flow_input, outputs)
        return {
            k: resolve_refs(v, flow_input=flow_input, outputs=outputs) for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_refs(v, flow_input=flow_input, outputs=outputs) for v in value]
    return value


def input_sizes(flow_input: Any, outputs: Mapping[str, Any]) -> Callable[[Step], int]:
    """The size of a step's input once resolved against ``flow_input`` and
    ``outputs``, never built: each referenced value is measured once, for
    every step of the Flow asked about."""
    measure = cached(lambda ref: json_size(_lookup(ref, flow_input, outputs)))

    def size_of(step: Step) -> int:
        if not refs_in(step.input):  # literal: one pass of the encoder
            return json_size(step.input)
        return resolved_size(step.input, measure)

    return size_of


def too_large_input(step: Step, size: int, limit: int, *, at_least: bool = False) -> str:
    """Why a step's input is refused, naming the step and the size."""
    bound = "at least " if at_least else ""
    return f"step {step.id!r} input would be {bound}{size:,} bytes, over MAX_INPUT_BYTES {limit:,}"


def check_input_sizes(steps: list[Step], *, flow_input: Any, max_bytes: int) -> None:
    """Refuse at create time a step whose input must resolve over ``max_bytes``:
    its literal parts plus the Flow's input parts it refers to (each step's
    output counted as null, the least it can be). Raises ValidationFailed
    ``too_large``."""
    size_of = input_sizes(flow_input, {})
    for step in steps:
        size = size_of(step)
        if size > max_bytes:
            raise ValidationFailed(
                too_large_input(step, size, max_bytes, at_least=True), code="too_large"
            )


def _lookup(ref: str, flow_input: Any, outputs: Mapping[str, Any]) -> Any:
    parts = ref.split(".")
    if parts[0] == "input":
        current, rest = flow_input, parts[1:]
    else:
        current, rest = outputs.get(parts[1]), parts[3:]
    for part in rest:
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current
