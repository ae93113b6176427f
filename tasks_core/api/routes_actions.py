"""``POST /v1/apps/actions/call``: the reference's way to run an action.

It creates a ``CallAction`` task whose ``targetId`` is the action, and with
``waitForResult`` (the default) answers once that task has ended, waiting as
``GET /v1/tasks/{id}?waitSeconds`` does, at most ``WAIT_SECONDS_MAX``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field, JsonValue
from starlette.concurrency import run_in_threadpool

from tasks_core.api.auth import CallerDep, StoreDep
from tasks_core.api.routes_tasks import ERRORS, IdempotencyKey, idempotency_of
from tasks_core.api.schemas import ShortText, TaskOut, WireModel, task_out
from tasks_core.records import Caller
from tasks_core.status import is_terminal
from tasks_core.store import Store
from tasks_core.task import TaskRecord, TaskSpec
from tasks_core.usecases.create import create_task_once
from tasks_core.usecases.wait import WAIT_SECONDS_MAX, TaskWaits

router = APIRouter(prefix="/v1/apps/actions", tags=["actions"], responses=ERRORS)


class ActionCall(WireModel):
    """Body of ``POST /v1/apps/actions/call``."""

    action_identifier: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="The action to run: a registered action's name (the task's targetId)."
    )
    input: JsonValue = Field(default=None, description="The action's input, any JSON value.")
    parent_task_id: ShortText | None = Field(default=None, description="A parent task.")
    wait_for_result: bool = Field(
        default=True,
        description=f"Answer once the task has ended (at most {WAIT_SECONDS_MAX:g} s); "
        "false: answer at once, the task queued.",
    )
    # The reference's, accepted for parity; a deployment here has no blueprints.
    blueprint_id: ShortText | None = None
    connection_id: ShortText | None = None
    flow_mode: ShortText | None = None


class ActionResult(WireModel):
    """The answer: the action's output (``data``) or first error, and its task."""

    data: JsonValue
    error: dict[str, Any] | None
    options: list[JsonValue]
    task: TaskOut


@router.post("/call", response_model=ActionResult, summary="Call an action")
async def call(
    *,
    request: Request,
    body: ActionCall,
    caller: CallerDep,
    store: StoreDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Run an action as a `CallAction` task. Answered 200 once the task has
    ended, 202 when it has not (`waitForResult` false, or still running after
    the longest wait): then wait on `GET /v1/tasks/{id}?waitSeconds`."""
    task = await _create(store, caller, body, idempotency_key)
    if body.wait_for_result and not is_terminal(task.status):
        waits: TaskWaits = request.app.state.task_waits
        tree = await waits.task_tree(store, caller, str(task.id), depth=0, seconds=WAIT_SECONDS_MAX)
        task = tree.task
    return JSONResponse(_result(task), status_code=200 if is_terminal(task.status) else 202)


async def _create(
    store: Store, caller: Caller, body: ActionCall, idempotency_key: str | None
) -> TaskRecord:
    spec = TaskSpec(
        kind="CallAction",
        target_id=body.action_identifier,
        input=body.input,
        parent_id=body.parent_task_id,
    )
    idempotency = idempotency_of(idempotency_key, body)
    task, _ = await run_in_threadpool(
        create_task_once, store, caller, spec, idempotency=idempotency
    )
    return task


def _result(task: TaskRecord) -> dict[str, Any]:
    out = task_out(task)
    errors = out.get("errors") or []
    return {
        "data": out.get("output"),
        "error": errors[0] if errors else None,
        "options": [],
        "task": out,
    }
