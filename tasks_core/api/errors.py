"""Every error the API answers, as ``{"code", "message"}``; HTTP status chosen here once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from tasks_core import errors
from tasks_core.storage.errors import DatabaseFailure, classify, reason

log = logging.getLogger(__name__)

STATUS_OF: dict[type[errors.TasksError], int] = {
    errors.NotFound: 404,
    errors.InvalidTransition: 409,
    errors.Conflict: 409,
    errors.ImmutableField: 422,
    errors.ValidationFailed: 422,
    errors.Unauthorized: 401,
    errors.RateLimited: 429,
    errors.QuotaExceeded: 429,
    errors.ExecutorNotAllowed: 403,
    errors.Unavailable: 503,
}


# Database checks that guard rules a request can still break (e.g. through a
# timestamp the database sets itself), with what the caller should do.
CONSTRAINT_MESSAGES = {
    "ck_tasks_times": (
        "endedAt would be before startedAt (startedAt is set to now when a task enters "
        "running): send both startedAt and endedAt, or none"
    ),
}


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    """The one shape of every error body."""
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def describe_validation(details: Sequence[Any]) -> tuple[int, str, str]:
    """(status, code, message) of a request validation failure, naming the field."""
    first = details[0] if details else {}
    kind = first.get("type", "")
    loc = [p for p in first.get("loc", ()) if p not in ("body",)]
    # A list's item is named by its index: tasks[3].kind
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    where = where or "body"
    if kind == "json_invalid":
        return 400, "invalid_json", f"the request body is not valid JSON: {first.get('msg', '')}"
    if kind in ("model_attributes_type", "dict_type") and not loc:
        return (
            400,
            "invalid_json",
            "the request body must be a JSON object (send Content-Type: application/json)",
        )
    if kind == "missing" and not loc:
        return 400, "invalid_json", "the request needs a JSON body"
    if kind == "immutable_field":
        return 422, "immutable_field", str(first.get("msg"))
    if kind == "extra_forbidden":
        return (
            422,
            "unknown_field",
            f"unknown field '{where}': it is not part of this request",
        )
    if kind == "missing":
        return 422, "validation_error", f"{where} is required"
    more = f" (and {len(details) - 1} more problems)" if len(details) > 1 else ""
    return (
        422,
        "validation_error",
        f"{where}: {first.get('msg', 'invalid value')}{more}",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to ``{"code", "message"}``; nothing escapes as HTML or a bare 500."""

    @app.exception_handler(errors.TasksError)
    async def _domain(_: Request, exc: errors.TasksError) -> JSONResponse:
        status = next((s for cls, s in STATUS_OF.items() if isinstance(exc, cls)), 400)
        if isinstance(exc, errors.RateLimited | errors.QuotaExceeded):
            return error_response(
                429, exc.code, exc.message, **{"Retry-After": str(exc.retry_after)}
            )
        return error_response(status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = describe_validation(exc.errors())
        return error_response(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint; see /openapi.json for the API"
        return error_response(exc.status_code, code, message)

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
        message = CONSTRAINT_MESSAGES.get(constraint or "")
        if message is None:
            log.error("integrity error", exc_info=exc)
            return error_response(409, "conflict", "the change conflicts with stored data")
        return error_response(422, "validation_error", message)

    @app.exception_handler(PoolTimeout)
    async def _pool(_: Request, exc: PoolTimeout) -> JSONResponse:
        return error_response(503, "unavailable", "the database is busy; retry shortly")

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        return database_error(exc)

    @app.exception_handler(RecursionError)
    async def _deep(_: Request, exc: RecursionError) -> JSONResponse:
        return error_response(400, "invalid_json", "the JSON body is nested too deeply")

    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal", "internal error; it has been logged")


def database_error(exc: DBAPIError) -> JSONResponse:
    """A database error, told apart by :func:`tasks_core.storage.errors.classify`."""
    match classify(exc):
        case DatabaseFailure.OUTAGE:
            log.warning("database unavailable: %s", exc.orig)
            if exc.connection_invalidated:
                return error_response(503, "unavailable", "the database connection was lost; retry")
            return error_response(503, "unavailable", "the database is unavailable; retry shortly")
        case DatabaseFailure.COLLISION:
            return error_response(
                409, "conflict", "the change collided with a concurrent change; retry the request"
            )
        case DatabaseFailure.DATA:
            # PostgreSQL refused a value Python accepted (a \u0000 in text, a
            # number out of range, a value over jsonb's size limit...).
            return error_response(422, "invalid_value", f"a value can not be stored: {reason(exc)}")
        case _:
            log.error("database error", exc_info=exc)
            return error_response(500, "internal", "internal error; it has been logged")
