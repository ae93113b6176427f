"""The built-in ``Flow`` kind: a run of a flow, its steps as child tasks.

Starting a Flow stores its steps and spawns the first ones; it then waits
(`waiting`) and ends when its steps do, through the fan-in that runs with
each step's outcome (``tasks_core.lifecycle.flow_engine``). A Flow's steps come
from ``params.steps`` (with ``params.mode``) or from a flow registered in
code under the Flow's ``targetId`` (``@flow`` of ``worker.registry``)::

    from worker.registry import flow

    @flow("onboarding")
    def onboarding(ctx):
        return [{"id": "account", "kind": "CallAction", "targetId": "users/create",
                 "input": {"$ref": "input.user"}},
                {"id": "welcome", "kind": "CallAction", "targetId": "mail/send",
                 "after": ["account"], "input": {"$ref": "steps.account.output"}}]
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import DBAPIError

from tasks_core.errors import ValidationFailed
from tasks_core.flow_definitions import Limits, Step, parse_flow
from tasks_core.status import Status
from tasks_core.storage.errors import DatabaseFailure, classify, reason
from tasks_core.storage.tasks import Ancestry, ancestry
from tasks_core.store import Store
from tasks_core.task import MAX_TREE_DEPTH, TaskRecord
from tasks_core.worker_protocol import Outcome, finish_task, start_flow_run
from worker.context import TaskContext
from worker.registry import registry

log = logging.getLogger(__name__)

FLOW_NOT_FOUND = "flow_not_found"
INVALID_FLOW = "invalid_flow"


def run_flow(store: Store, task: TaskRecord, *, worker: str) -> TaskRecord | None:
    """Start a claimed Flow, or fail it when its definition is unusable."""
    try:
        steps = definition(store, task)
    except ValidationFailed as exc:
        failure = Outcome(status=Status.FAILED, errors=[{"code": exc.code, "message": exc.message}])
        return finish_task(store, task, failure, worker=worker)
    try:
        started = start_flow_run(store, task, steps, worker=worker)
    except DBAPIError as exc:
        if classify(exc) is not DatabaseFailure.DATA:
            raise
        # A registered flow built steps PostgreSQL can not store: final, not retried.
        message = f"the database refused the Flow's steps: {reason(exc)}"
        failure = Outcome(status=Status.FAILED, errors=[{"code": INVALID_FLOW, "message": message}])
        return finish_task(store, task, failure, worker=worker)
    if started is not None:
        log.info("flow %s %s with %d steps", task.id, started.status.value, len(steps))
    return started


def definition(store: Store, task: TaskRecord) -> list[Step]:
    """The Flow's steps, validated; ValidationFailed (with a code) when unusable."""
    limits = Limits(
        max_steps=store.settings.flow_max_steps, max_depth=store.settings.flow_max_depth
    )
    place = _place(store, task)
    if place.depth >= MAX_TREE_DEPTH:
        raise ValidationFailed(
            f"the Flow is {place.depth} levels deep in its task tree; its steps would pass "
            f"the limit of {MAX_TREE_DEPTH} levels",
            code=INVALID_FLOW,
        )
    depth = 1 + place.flows
    if "steps" in task.params:
        raw, mode = task.params["steps"], task.params.get("mode")
    elif task.target_id in registry.flows:
        raw, mode = _built(task, store)
    else:
        raise ValidationFailed(
            f"no flow {task.target_id!r} is registered on this worker and the Flow has "
            "no params.steps",
            code=FLOW_NOT_FOUND,
        )
    try:
        return parse_flow(raw, mode, limits=limits, depth=depth)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.message, code=INVALID_FLOW) from None


def _built(task: TaskRecord, store: Store) -> tuple[Any, Any]:
    assert task.target_id is not None
    ctx = TaskContext(task, store=store, logger=logging.getLogger(f"flows.{task.target_id}"))
    built = registry.flows[task.target_id](ctx)
    if isinstance(built, dict):
        return built.get("steps"), built.get("mode")
    return built, task.params.get("mode")


def _place(store: Store, task: TaskRecord) -> Ancestry:
    """Where the Flow stands in its tree; a root Flow needs no query."""
    if task.parent_id is None:
        return Ancestry(depth=1, flows=0, ancestors=frozenset())
    with store.statement() as conn:
        return ancestry(conn, task.id)
