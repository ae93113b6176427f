"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tasks_core.api.auth import StoreDep
from tasks_core.api.errors import error_response
from tasks_core.api.schemas import ErrorResponse
from tasks_core.storage.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Process is up")
def healthz() -> dict[str, str]:
    """Answers while the process serves requests; checks nothing else."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Database and broker reachable",
    responses={503: {"model": ErrorResponse, "description": "PostgreSQL or Redis unreachable"}},
)
def readyz(*, store: StoreDep) -> JSONResponse:
    """200 when PostgreSQL and Redis both answer, 503 naming the one that does not."""
    down = []
    try:
        with store.statement() as conn:
            ping(conn)
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        down.append("database")
    if not store.publisher.ping():
        down.append("redis")
    if down:
        return error_response(503, "unavailable", f"not reachable: {', '.join(down)}")
    return JSONResponse({"status": "ready"})
