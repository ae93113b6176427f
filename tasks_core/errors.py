"""The error tree of the service.

Services raise these; the HTTP layer maps each class to a status code once
(``tasks_core.api.errors``). Every error carries a stable machine ``code`` and
a message a person can act on.
"""

from __future__ import annotations


class TasksError(Exception):
    """Base of every error the service reports to its callers."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(TasksError):
    """Raised when a task, state or key does not exist in the caller's organization."""

    code = "not_found"


class InvalidTransition(TasksError):
    """Raised when a status change is not in the table of allowed moves."""

    code = "invalid_transition"


class Conflict(TasksError):
    """Raised when a write lost a race (a version or a guard no longer matches)."""

    code = "conflict"


class ValidationFailed(TasksError):
    """Raised when a request is well-formed JSON but its values are not acceptable."""

    code = "validation_error"


class ImmutableField(ValidationFailed):
    """Raised when an update names a field that can not change after create."""

    code = "immutable_field"


class Unauthorized(TasksError):
    """Raised when a request has no API key, or a key that is unknown or revoked."""

    code = "unauthorized"


class RateLimited(TasksError):
    """Raised when an API key made more requests in the current window than allowed."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(TasksError):
    """Raised when an organization would hold more open tasks than MAX_OPEN_TASKS_PER_ORG."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ExecutorNotAllowed(TasksError):
    """Raised when a task names an executorId outside its organization's allow-list."""

    code = "executor_not_allowed"


class Unavailable(TasksError):
    """Raised when a server the service depends on (PostgreSQL, Redis) can not be reached."""

    code = "unavailable"
