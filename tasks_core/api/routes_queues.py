"""``GET /v1/workers`` and ``GET /v1/queues``: what serves which queue."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tasks_core.api.auth import CallerDep, StoreDep
from tasks_core.api.schemas import QueueListOut, QueueOut, WorkerListOut, WorkerOut
from tasks_core.usecases.queues import list_queues, list_workers

router = APIRouter(prefix="/v1", tags=["queues"])


@router.get("/workers", response_model=WorkerListOut, summary="List workers")
def workers(*, caller: CallerDep, store: StoreDep) -> JSONResponse:
    """Worker nodes heard from in the last hour that serve a queue the
    caller may use; `alive` is false once a node missed three heartbeats."""
    shown = set(WorkerOut.model_fields)
    items = [
        WorkerOut.model_validate({k: v for k, v in asdict(node).items() if k in shown}).model_dump(
            mode="json", by_alias=True
        )
        for node in list_workers(store, caller)
    ]
    return JSONResponse({"items": items})


@router.get("/queues", response_model=QueueListOut, summary="List queues")
def queues(*, caller: CallerDep, store: StoreDep) -> JSONResponse:
    """Every queue the caller's unfinished tasks use and every queue a live
    worker serves: the caller's own `waiting` and `running`, and the queue's
    `depth` and live `workers` (0: nothing runs its tasks)."""
    items = [
        QueueOut.model_validate(asdict(view)).model_dump(mode="json", by_alias=True)
        for view in list_queues(store, caller)
    ]
    return JSONResponse({"items": items})
