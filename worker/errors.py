"""Errors a handler raises to end its task in a chosen way."""

from __future__ import annotations


class TaskError(Exception):
    """Raised by a handler to fail its task with an explicit ``code`` and ``message``.

    ``retryable=False`` makes the failure final even when attempts are left.
    """

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Cancelled(Exception):
    """Raised (by ``TaskContext.check_cancelled``) when the task was cancelled while running."""


class TimedOut(Exception):
    """Raised (by ``TaskContext.check_cancelled``) when the run passed its ``timeoutSeconds``."""


# Codes the worker itself gives to failures.
UNKNOWN_KIND = "unknown_kind"
ACTION_NOT_FOUND = "action_not_found"
INVALID_OUTPUT = "invalid_output"
OUTPUT_TOO_LARGE = "output_too_large"
OUTPUT_REJECTED = "output_rejected"
TIMEOUT = "timeout"
