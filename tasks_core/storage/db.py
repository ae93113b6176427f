"""Connections to PostgreSQL: one pooled engine per process and database URL."""

from __future__ import annotations

import select
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, TextClause, bindparam, create_engine, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError

from tasks_core.settings import Settings, get_settings
from tasks_core.status import Status
from tasks_core.storage.errors import mark_before_any_statement


def sqlalchemy_url(database_url: str) -> str:
    """``postgresql://...`` as given by operators, with the psycopg 3 driver named."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError(
        "DATABASE_URL must start with postgresql:// (e.g. postgresql://user:pass@host:5432/db)"
    )


def libpq_url(database_url: str) -> str:
    """``DATABASE_URL`` as psycopg connects to it directly (no driver name)."""
    return "postgresql://" + sqlalchemy_url(database_url)[len("postgresql+psycopg://") :]


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """``MAX_INPUT_BYTES`` and ``MAX_OUTPUT_BYTES``, for values the service
    builds itself inside a move: a Flow step's resolved input, a Flow's output."""

    max_input_bytes: int
    max_output_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> SizeLimits:
        return cls(settings.max_input_bytes, settings.max_output_bytes)


# The engine carries its settings' limits to every connection, as an
# execution option: moves are applied on a connection and see no settings.
_SIZE_LIMITS = "tasks_core_size_limits"


def size_limits(conn: Connection) -> SizeLimits:
    """The limits of the settings ``conn``'s engine was made with."""
    limits = conn.get_execution_options().get(_SIZE_LIMITS)
    return limits if isinstance(limits, SizeLimits) else SizeLimits.of(get_settings())


def make_engine(
    database_url: str, settings: Settings | None = None, *, synchronous_commit: bool = True
) -> Engine:
    """A pooled engine. No pre-ping: it would cost a round trip per checkout.
    Instead each checkout looks, without a round trip, whether the server has
    closed the connection while it sat in the pool (see :func:`drop_if_closed`).

    ``synchronous_commit=False`` makes an engine whose commits return before
    their WAL is flushed (no fsync wait), for writes that may be lost in a
    database crash without harm (see ``Store.relaxed_statement``); single
    statements only, in autocommit.

    Statements are prepared on the server once a connection has run them
    ``DB_PREPARE_THRESHOLD`` times (see :func:`_prepare_threshold`)."""
    settings = settings or get_settings()
    options = f"-c statement_timeout={settings.db_statement_timeout_ms} -c timezone=UTC"
    relaxed: dict[str, Any] = {}
    if not synchronous_commit:
        options += " -c synchronous_commit=off"
        # Only single statements run there: its connections stay in autocommit,
        # so a checkout neither sets nor resets a transaction mode.
        relaxed = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    engine = create_engine(
        sqlalchemy_url(database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_overflow,
        pool_recycle=1800,
        pool_timeout=10,
        connect_args={
            "options": options,
            "connect_timeout": 5,
            "prepare_threshold": _prepare_threshold(settings),
        },
        execution_options={_SIZE_LIMITS: SizeLimits.of(settings)},
        **relaxed,
    )
    event.listen(engine, "checkout", drop_if_closed)
    event.listen(engine, "checkout", _reset_count)
    event.listen(engine, "after_cursor_execute", _count_statement)
    event.listen(engine, "handle_error", _note_stale)
    return engine


def _prepare_threshold(settings: Settings) -> int | None:
    """psycopg's ``prepare_threshold``: a statement text run this many times on
    a connection is prepared there (parsed and planned once; later runs send
    only the name and the parameters), in the same round trip as its run.
    The hot statements (a create, a claim, an outcome) are the same texts
    every time, so 1 prepares them from their second run; one-off statements
    (migrations, ad hoc reads) are never prepared. A proxy in transaction
    pooling mode that does not keep prepared statements per client (PgBouncer
    before 1.21, or without ``max_prepared_statements``) needs 0: None, never.
    A rollback drops a connection's prepared statements (psycopg deallocates
    them); they are prepared again on their next runs."""
    threshold = settings.db_prepare_threshold
    return threshold if threshold > 0 else None


# In a connection's info: whether a statement ran on it since its checkout.
_RAN = "tasks_core_ran"


def _reset_count(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    record.info[_RAN] = False


def _count_statement(conn: Connection, *_: Any) -> None:
    conn.info[_RAN] = True


def ran_on(conn: Connection) -> bool:
    """Whether a statement ran on ``conn`` since it left the pool."""
    return bool(conn.info.get(_RAN))


def _note_stale(context: ExceptionContext) -> None:
    """A disconnect on the first statement of a checkout (the connection died
    after the checkout's look, or gave no sign of it): marked, so that the
    Store may run the work again (``storage.errors.is_stale_connection``)."""
    conn = context.connection
    if (
        context.is_disconnect
        and conn is not None
        and not ran_on(conn)
        and isinstance(context.sqlalchemy_exception, DBAPIError)
    ):
        mark_before_any_statement(context.sqlalchemy_exception)


@contextmanager
def in_autocommit(conn: Connection) -> Iterator[Connection]:
    """``conn``, a pooled connection just taken, in autocommit until it goes
    back to the pool (each statement commits itself: no BEGIN, no COMMIT).

    Switched on the driver's connection, not with SQLAlchemy's
    ``execution_options(isolation_level="AUTOCOMMIT")``: the switches are the
    same two (no round trip), but SQLAlchemy records and resets them as
    per-checkout characteristics, which cost a single-statement create 8% of
    its CPU (0.303 against 0.279 ms a create back to back, in alternating
    runs). A connection that can not be switched back (it broke, or was
    left inside a transaction or a statement) is dropped, never pooled in
    autocommit, where a later transaction's statements would each commit
    alone."""
    driver = conn.connection.driver_connection
    assert driver is not None, "a connection just taken is live"
    driver.autocommit = True
    try:
        yield conn
    finally:
        try:
            driver.autocommit = False
        except psycopg.Error:
            conn.invalidate()


def drop_if_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: a pooled connection the server has closed since it
    was last used (a restart or failover, a proxy's or the server's idle
    timeout, ``pg_terminate_backend``) is replaced by a fresh one before any
    statement is sent on it, so no request fails on it.

    An idle connection has nothing to read: the server sends nothing between
    queries but its farewell (a FATAL error, then end of file) or, rarely, a
    notice. Readable therefore means closed, or worth replacing anyway; one
    poll of the socket costs no round trip. Raising DisconnectionError makes
    the pool discard the connection and connect again (a database that is
    really down then fails the checkout, as before)."""
    if dbapi_connection.closed or dbapi_connection.broken:
        raise DisconnectionError("the pooled connection is closed")
    try:
        poller = select.poll()
        poller.register(dbapi_connection.pgconn.socket, select.POLLIN | select.POLLERR)
        ready = poller.poll(0)
    except Exception as exc:  # a socket that can not be polled is no socket to use
        raise DisconnectionError(f"the pooled connection can not be polled: {exc}") from exc
    if ready:
        raise DisconnectionError("the server closed the pooled connection")


def ping(conn: Connection) -> None:
    """Raise unless the database answers."""
    conn.execute(text("SELECT 1"))


def sql_list(statuses: Iterable[Status]) -> str:
    """Statuses as an SQL list, ``('created', 'queued')``, for guards taken from
    the table of moves."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


# JSON parameters: rows of a move, and id lists (see json_ids).
JSON = JSONB(none_as_null=True)


def statement(sql: str, *json_params: str) -> TextClause:
    """A statement whose ``json_params`` are bound as JSONB."""
    return text(sql).bindparams(*(bindparam(name, type_=JSON) for name in json_params))


def json_ids(param: str, sql_type: str = "uuid") -> str:
    """An array parameter, sent as JSON. PostgreSQL estimates a JSON array
    the same whatever its value, so a prepared statement settles on one plan;
    with a literal array each run would be planned again for its length."""
    return f"ARRAY(SELECT CAST(j AS {sql_type}) FROM jsonb_array_elements_text(:{param}) AS j)"


def as_ids(ids: Iterable[uuid.UUID]) -> list[str]:
    """Ids for a JSON array parameter (see :func:`json_ids`)."""
    return [str(i) for i in ids]
