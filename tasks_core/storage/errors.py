"""What a database error means for the caller: one classification, used by
the Store's retries, the worker's outcome writes, the sweeper and the API.

PostgreSQL's SQLSTATE says it, not the driver's exception class: psycopg
raises a value too large for jsonb (``54000``, ``ProgramLimitExceeded``) as
an ``OperationalError``, the same class as a refused connection, yet only
the second heals by waiting.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tasks_core.errors import Conflict

# SQLSTATE classes (the first two characters) and codes, from PostgreSQL's
# "Appendix A. Error Codes".
_COLLISIONS = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_OUTAGE_CLASSES = frozenset({"08", "53", "57", "58"})  # connection, resources, shutdown, system
_DATA_CLASSES = frozenset({"22", "54"})  # data exception, program limit exceeded


class DatabaseFailure(StrEnum):
    """What kind of failure a database error is, and so what to do about it."""

    # The server is unreachable or going away: wait and try again (or 503).
    OUTAGE = "outage"
    # Lost a race with a concurrent writer: run the transaction again, a few times.
    COLLISION = "collision"
    # The server refused a value (too large, invalid): trying again can only fail again.
    DATA = "data"
    # Anything else (a bug, a constraint): not retried.
    OTHER = "other"


def classify(exc: BaseException) -> DatabaseFailure:
    """The kind of ``exc``, for any exception (non-database ones are OTHER)."""
    if isinstance(exc, PoolTimeout):
        return DatabaseFailure.OUTAGE
    if not isinstance(exc, DBAPIError):
        return DatabaseFailure.OTHER
    if exc.connection_invalidated:
        return DatabaseFailure.OUTAGE
    state = sqlstate(exc) or ""
    if state in _COLLISIONS:
        return DatabaseFailure.COLLISION
    # DataError without a code: the driver refused the value before sending
    # it (a NUL byte in a text parameter).
    if state[:2] in _DATA_CLASSES or isinstance(exc, DataError):
        return DatabaseFailure.DATA
    # No code: refused or lost before the server could answer. The driver's
    # other operational errors (a statement timeout, a lock not available)
    # pass with time too.
    if state[:2] in _OUTAGE_CLASSES or isinstance(exc, OperationalError | InterfaceError):
        return DatabaseFailure.OUTAGE
    return DatabaseFailure.OTHER


def is_unavailable(exc: BaseException) -> bool:
    """The database is out of reach or refuses work for now, whatever the
    statement touched: no connection, a server shutting down or out of
    resources, a pool exhausted, or collisions that kept coming back. Such a
    failure is nobody's data's fault (the sweeper blames no task for it); a
    statement timeout or a lock not available may be, and is not one."""
    if isinstance(exc, Conflict | PoolTimeout):
        return True
    failure = classify(exc)
    if failure is DatabaseFailure.COLLISION:
        return True
    if failure is not DatabaseFailure.OUTAGE:
        return False
    assert isinstance(exc, DBAPIError)
    state = sqlstate(exc)
    return exc.connection_invalidated or state is None or state.startswith(("08", "53", "57P"))


def out_of_reach(exc: BaseException) -> bool:
    """PostgreSQL itself could not be reached (refused, lost, shutting down,
    out of connections), as opposed to work it refused for now (collisions
    that kept coming back, this process's own pool exhausted): the workers
    are then as cut off as the caller."""
    return (
        is_unavailable(exc)
        and not isinstance(exc, Conflict | PoolTimeout)
        and classify(exc) is DatabaseFailure.OUTAGE
    )


def is_lock_timeout(exc: BaseException) -> bool:
    """A lock not had within ``lock_timeout`` (55P03): someone else holds it for now."""
    return isinstance(exc, DBAPIError) and sqlstate(exc) == "55P03"


def is_collision(exc: DBAPIError) -> bool:
    """A deadlock (40P01) or serialization failure (40001): worth running again."""
    return classify(exc) is DatabaseFailure.COLLISION


# Set on a disconnect error raised by the first statement of a checkout.
_BEFORE_ANY_STATEMENT = "tasks_core_before_any_statement"


def mark_before_any_statement(exc: DBAPIError) -> None:
    """Note that ``exc`` was raised by the first statement sent on its connection
    since it left the pool (see ``storage.db``)."""
    setattr(exc, _BEFORE_ANY_STATEMENT, True)


def is_stale_connection(exc: BaseException) -> bool:
    """A pooled connection found lost by the first statement sent on it: that
    statement, and so its transaction, can not have run, and running the
    work again on a fresh connection is safe."""
    return (
        isinstance(exc, DBAPIError)
        and exc.connection_invalidated
        and getattr(exc, _BEFORE_ANY_STATEMENT, False)
    )


def sqlstate(exc: DBAPIError) -> str | None:
    """PostgreSQL's error code of ``exc``, when the server sent one."""
    state = getattr(exc.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def reason(exc: BaseException) -> str:
    """The first line of the server's message, safe to show a caller."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    lines = str(cause).splitlines()
    return lines[0] if lines else type(cause).__name__
