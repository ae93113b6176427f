"""``/v1/tasks``: create, read, update, list, cancel, and the event log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from tasks_core.api.auth import CallerDep, StoreDep
from tasks_core.api.direct_route import direct_post
from tasks_core.api.schemas import (
    ErrorResponse,
    EventPageOut,
    TaskBatchCreate,
    TaskBatchOut,
    TaskCreate,
    TaskOut,
    TaskPageOut,
    TaskTreeOut,
    TaskUpdate,
    event_out,
    task_out,
)
from tasks_core.errors import ValidationFailed
from tasks_core.status import Status
from tasks_core.storage.idempotency import request_digest
from tasks_core.usecases.cancel import cancel_task
from tasks_core.usecases.create import (
    Idempotency,
    create_task_soon,
    create_tasks_once,
)
from tasks_core.usecases.read import list_page, task_events
from tasks_core.usecases.update import update_task
from tasks_core.usecases.wait import WAIT_SECONDS_MAX, TaskWaits

TaskIdPath = Annotated[str, Path(alias="taskId", description="The task's id.")]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 409, 413, 422, 429, 503)
}

router = APIRouter(prefix="/v1/tasks", tags=["tasks"], responses=ERRORS)


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe create: the same key and body within 24 hours answer "
        "the first task(s) (header Idempotent-Replayed: true); another body is 409.",
    ),
]


def idempotency_of(key: str | None, body: BaseModel) -> Idempotency | None:
    """The ``Idempotency-Key`` of a create, bound to the digest of its body."""
    if key is None:
        return None
    digest = request_digest(body.model_dump(mode="json", exclude_unset=True))
    return Idempotency(key=key, digest=digest)


def _replayed(replayed: bool) -> dict[str, str] | None:
    return {"Idempotent-Replayed": "true"} if replayed else None


# The creates are served by DirectRoute: the same declarations, without
# FastAPI's per-request solving of them (see ``api.direct_route``).
@direct_post(router, "", status_code=201, response_model=TaskOut, summary="Create task")
async def create(
    *,
    body: TaskCreate,
    caller: CallerDep,
    store: StoreDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create a task. A task created with status `created` (the default) is
    published on its queue and answered as `queued`; any other status makes a
    record of work done elsewhere, never published."""
    # Async: the create is sent from the event loop in a set with the
    # caller's others in flight (usecases.create.create_task_soon).
    idempotency = idempotency_of(idempotency_key, body)
    task, replayed = await create_task_soon(store, caller, body.to_spec(), idempotency=idempotency)
    return JSONResponse(task_out(task), status_code=201, headers=_replayed(replayed))


@direct_post(router, "/batch", status_code=201, response_model=TaskBatchOut, summary="Create tasks")
def create_batch(
    *,
    body: TaskBatchCreate,
    caller: CallerDep,
    store: StoreDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Create 1 to BATCH_MAX tasks at once, answered in the order sent. All or
    nothing: one bad task is a 422 naming it (`tasks[3].kind ...`) and none is
    stored. One transaction and one broker round trip for the whole batch; an
    `Idempotency-Key` covers the whole batch."""
    idempotency = idempotency_of(idempotency_key, body)
    specs = [task.to_spec() for task in body.tasks]
    tasks, replayed = create_tasks_once(store, caller, specs, idempotency=idempotency)
    return JSONResponse(
        {"tasks": [task_out(t) for t in tasks]}, status_code=201, headers=_replayed(replayed)
    )


@router.api_route("/batch", methods=["GET", "PUT"], include_in_schema=False)
def batch_other_methods() -> None:
    """Only POST is served at /batch; without this route `/{taskId}` would
    take a GET or PUT of it and answer that no task is named 'batch'."""
    raise HTTPException(405, "only POST is allowed on /v1/tasks/batch", headers={"Allow": "POST"})


@router.get("/{taskId}", response_model=TaskTreeOut, summary="Get task")
async def get(
    *,
    request: Request,
    task_id: TaskIdPath,
    caller: CallerDep,
    store: StoreDep,
    depth: Annotated[
        int, Query(ge=0, description="Levels of children to nest (max DEPTH_MAX).")
    ] = 1,
    wait_seconds: Annotated[
        float | None,
        Query(
            alias="waitSeconds",
            ge=0,
            le=WAIT_SECONDS_MAX,
            description="Answer as soon as the task has ended, or after this many seconds "
            f"(at most {WAIT_SECONDS_MAX:g}) with the task as it is then.",
        ),
    ] = None,
) -> JSONResponse:
    """A task with `depth` levels of children nested (oldest first), at most
    TREE_NODES_MAX in all; `"truncated": true` says some were left out. With
    `waitSeconds`, a long poll: the answer comes when the task ends."""
    if depth > store.settings.depth_max:
        raise ValidationFailed(f"depth must be at most {store.settings.depth_max}")
    waits: TaskWaits = request.app.state.task_waits
    tree = await waits.task_tree(store, caller, task_id, depth=depth, seconds=wait_seconds)
    body = task_out(tree.task)
    if tree.truncated:
        body["truncated"] = True
    return JSONResponse(body)


@router.put("/{taskId}", response_model=TaskOut, summary="Update task")
def update(
    *,
    task_id: TaskIdPath,
    body: Annotated[TaskUpdate, Body()],
    caller: CallerDep,
    store: StoreDep,
) -> JSONResponse:
    """Change the fields sent; `kind, appId, targetId, stateId, authorId,
    organizationId` can not change. A status change must be an allowed move
    (409 `invalid_transition` otherwise)."""
    task = update_task(store, caller, task_id, body.changes())
    return JSONResponse(task_out(task))


@router.get("", response_model=TaskPageOut, summary="List tasks")
def list_(
    *,
    caller: CallerDep,
    store: StoreDep,
    status: Status | None = None,
    kind: Annotated[str | None, Query(max_length=256)] = None,
    executor_id: Annotated[str | None, Query(alias="executorId", max_length=256)] = None,
    parent_id: Annotated[str | None, Query(alias="parentId", max_length=256)] = None,
    app_id: Annotated[str | None, Query(alias="appId", max_length=256)] = None,
    target_id: Annotated[str | None, Query(alias="targetId", max_length=256)] = None,
    limit: Annotated[int | None, Query(ge=1, description="Page size (max LIST_LIMIT_MAX).")] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    """The caller's tasks, newest first; `nextCursor` fetches the next page."""
    given = {
        "status": status.value if status else None,
        "kind": kind,
        "executor_id": executor_id,
        "parent_id": parent_id,
        "app_id": app_id,
        "target_id": target_id,
    }
    filters = {name: value for name, value in given.items() if value is not None}
    if limit is not None and limit > store.settings.list_limit_max:
        raise ValidationFailed(f"limit must be at most {store.settings.list_limit_max}")
    page_size = limit or store.settings.list_limit_default
    page = list_page(store, caller, filters=filters, cursor=cursor, limit=page_size)
    return JSONResponse(
        {"items": [task_out(t) for t in page.items], "nextCursor": page.next_cursor}
    )


@router.post("/{taskId}/cancel", response_model=TaskOut, summary="Cancel task")
def cancel(*, task_id: TaskIdPath, caller: CallerDep, store: StoreDep) -> JSONResponse:
    """Cancel the task and every non-terminal descendant."""
    return JSONResponse(task_out(cancel_task(store, caller, task_id)))


@router.get("/{taskId}/events", response_model=EventPageOut, summary="Task event log")
def events(
    *,
    task_id: TaskIdPath,
    caller: CallerDep,
    store: StoreDep,
    after: Annotated[int, Query(ge=0, description="Only events with a larger id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> JSONResponse:
    """Every creation, status change and update of the task, oldest first."""
    items = task_events(store, caller, task_id, after=after, limit=limit)
    return JSONResponse({"items": [event_out(e) for e in items]})
