"""Turning what a handler did into an outcome, and deciding on retries.

Pure functions, no I/O: the runner decides once, then persists once.
"""

from __future__ import annotations

import json
import random
import traceback
from dataclasses import dataclass
from typing import Any

from tasks_core.status import Status
from tasks_core.worker_protocol import Outcome
from worker.errors import (
    INVALID_OUTPUT,
    OUTPUT_REJECTED,
    OUTPUT_TOO_LARGE,
    TIMEOUT,
    Cancelled,
    TaskError,
    TimedOut,
)

MAX_MESSAGE = 2000


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a run, and whether another attempt may follow."""

    outcome: Outcome
    retryable: bool


def from_result(result: Any, *, max_bytes: int | None = None) -> Decision:
    """A handler returned: its value is the output, if it is JSON (and, with
    ``max_bytes``, not larger than that)."""
    try:
        encoded = json.dumps(result, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return _failure(
            INVALID_OUTPUT,
            f"the handler returned a value that is not JSON ({type(result).__name__}): {exc}",
            retryable=False,
        )
    size = len(encoded.encode("utf-8"))
    if max_bytes is not None and size > max_bytes:
        return _failure(
            OUTPUT_TOO_LARGE,
            f"the handler returned {size} bytes of JSON; the limit is {max_bytes}",
            retryable=False,
        )
    return Decision(Outcome(status=Status.COMPLETED, output=result), retryable=False)


def from_exception(exc: BaseException, *, expose_traceback: bool = False) -> Decision:
    """A handler raised: a failure (or a cancel). The event log names the
    exception's type; its traceback (file paths, source lines, SQL text) is
    the worker's to log, and goes into the event log only with
    ``expose_traceback`` (``EXPOSE_TRACEBACKS``), since tenants read that log."""
    if isinstance(exc, Cancelled):
        return Decision(Outcome(status=Status.CANCELLED), retryable=False)
    if isinstance(exc, TimedOut):
        return timed_out()
    shown: dict[str, Any] = {"exception": type(exc).__name__}
    if expose_traceback:
        shown["traceback"] = "".join(traceback.format_exception(exc))
    if isinstance(exc, TaskError):
        return _failure(exc.code, exc.message, retryable=exc.retryable, shown=shown)
    return _failure(_code_of(exc), _message_of(exc), retryable=True, shown=shown)


def _message_of(exc: BaseException) -> str:
    """The exception's message, without the SQL a database error carries:
    SQLAlchemy adds the statement and its parameters to the driver's error
    (``exc.orig``), and the driver adds the server's ``LINE 1: ...`` context
    after the first line."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        first = (str(orig).splitlines() or [""])[0]
        return f"{type(orig).__name__}: {first}" if first else type(orig).__name__
    return str(exc) or type(exc).__name__


def timed_out(seconds: float | None = None) -> Decision:
    """The run passed its ``timeoutSeconds``."""
    limit = f" of {seconds:g} s" if seconds is not None else ""
    return _failure(TIMEOUT, f"the task ran longer than its timeout{limit}", retryable=True)


def rejected(reason: str) -> Decision:
    """PostgreSQL refused to store the outcome (a \\u0000 in a string, a number
    out of range, a value over its size limits): storing it again would fail
    again, so the task fails, not retried, without the refused values."""
    return _failure(
        OUTPUT_REJECTED,
        f"the database refused to store the task's outcome: {reason}",
        retryable=False,
    )


def failure(code: str, message: str, *, retryable: bool) -> Decision:
    """A failure decided by the worker itself (unknown kind, missing action...)."""
    return _failure(code, message, retryable=retryable)


def _failure(
    code: str, message: str, *, retryable: bool, shown: dict[str, Any] | None = None
) -> Decision:
    errors = [{"code": code, "message": message[:MAX_MESSAGE]}]
    detail = {"error": code, **(shown or {})}
    return Decision(Outcome(status=Status.FAILED, errors=errors, detail=detail), retryable)


def _code_of(exc: BaseException) -> str:
    """``ValueError`` -> ``value_error``: a stable code from the exception class."""
    name = type(exc).__name__
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def retry_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return (rng or random).uniform(0, ceiling)


def should_retry(decision: Decision, *, attempt: int, max_attempts: int) -> bool:
    """Another attempt follows a retryable failure while attempts are left."""
    return (
        decision.outcome.status is Status.FAILED and decision.retryable and attempt < max_attempts
    )
