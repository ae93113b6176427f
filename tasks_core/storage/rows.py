"""The rows of the lifecycle's statements and of task reads, read straight
from the driver.

Every status move returns the rows it changed (``RETURNING t.*``: some 30
columns). Through SQLAlchemy's result, each run of such a statement builds
its column metadata anew (the driver's description of every column, then
SQLAlchemy's key map over it), and that costs more than the statement's own
round trip on a worker's or an API process's CPU. :func:`driver_rows` runs
the same statement on the same pooled connection, in the same transaction
(or autocommit), through psycopg's cursor, and reads plain tuples with
their column names, learned once per statement text.

What SQLAlchemy's execute gives beside the result is kept: outside
autocommit the statement begins the connection's transaction as an execute
would (so its commit or rollback covers it), the engine's cursor-execute events see it (statement
counters), and a driver error is raised as SQLAlchemy's ``DBAPIError`` of
the same class, with a lost connection invalidated and marked when it was
the first statement of its checkout (see ``storage.db``), so that every
caller's error handling and retries are unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Connection, TextClause
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError

from tasks_core.storage.db import ran_on
from tasks_core.storage.errors import mark_before_any_statement
from tasks_core.task import TaskRecord

Rows = tuple[tuple[str, ...], list[tuple[Any, ...]]]


def tasks_of(conn: Connection, stmt: TextClause, values: Mapping[str, Any]) -> list[TaskRecord]:
    """The tasks a statement returns (``RETURNING t.*``, ``SELECT t.*``)."""
    names, rows = driver_rows(conn, stmt, values)
    read = TaskRecord.reader(names)
    return [read(row) for row in rows]


@dataclass(slots=True)
class _DriverForm:
    """A statement as psycopg takes it, and the names of its result columns."""

    sql: str
    json_params: frozenset[str]
    names: tuple[str, ...] = field(default=())

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        # A JSONB parameter of None is SQL NULL, as SQLAlchemy's JSONB(none_as_null) binds it.
        return {
            name: Jsonb(value) if name in self.json_params and value is not None else value
            for name, value in values.items()
        }


_forms: dict[tuple[str, str], _DriverForm] = {}
_forms_lock = threading.Lock()


def _form(conn: Connection, stmt: TextClause) -> _DriverForm:
    key = (conn.dialect.name, stmt.text)
    found = _forms.get(key)
    if found is None:
        compiled = stmt.compile(dialect=conn.dialect)
        json_params = frozenset(
            name for name, bind in compiled.binds.items() if isinstance(bind.type, JSONB)
        )
        with _forms_lock:
            found = _forms.setdefault(key, _DriverForm(compiled.string, json_params))
    return found


def driver_rows(conn: Connection, stmt: TextClause, values: Mapping[str, Any]) -> Rows:
    """Run ``stmt`` on ``conn``; its column names and rows (tuples)."""
    form = _form(conn, stmt)
    params = form.params(values)
    dbapi = conn.connection.dbapi_connection
    assert isinstance(dbapi, psycopg.Connection), "the engines are psycopg's"
    if not dbapi.autocommit and not conn.in_transaction():
        conn.begin()  # as an execute would: the commit or rollback of ``conn`` covers it
    cursor = dbapi.cursor()
    try:
        conn.dispatch.before_cursor_execute(conn, cursor, form.sql, params, None, False)
        try:
            cursor.execute(form.sql, params)
            rows = cursor.fetchall() if cursor.pgresult and cursor.pgresult.nfields else []
        except psycopg.Error as exc:
            raise _translated(conn, exc, form, params, cursor) from exc
        conn.dispatch.after_cursor_execute(conn, cursor, form.sql, params, None, False)
        return _names(form, cursor), rows
    finally:
        cursor.close()


def _names(form: _DriverForm, cursor: psycopg.Cursor[Any]) -> tuple[str, ...]:
    """The result's column names: learned on a statement's first run, and
    again whenever its width changes (a column added to the table)."""
    result = cursor.pgresult
    width = result.nfields if result is not None else 0
    if len(form.names) != width:
        form.names = tuple(column.name for column in cursor.description or ())
    return form.names


def _translated(
    conn: Connection,
    exc: psycopg.Error,
    form: _DriverForm,
    params: Sequence[Any] | Mapping[str, Any],
    cursor: psycopg.Cursor[Any],
) -> DBAPIError:
    """``exc`` as SQLAlchemy raises it from an execute, with what its
    ``handle_error`` and invalidation would have done."""
    driver: Any = (exc, cursor)  # psycopg's own types, which the dialect's hints do not name
    lost = conn.dialect.is_disconnect(driver[0], conn.connection.dbapi_connection, driver[1])
    error = DBAPIError.instance(
        form.sql,
        params,
        exc,
        psycopg.Error,
        connection_invalidated=lost,
        dialect=conn.dialect,
    )
    assert isinstance(error, DBAPIError), "a driver error is a DBAPIError"
    if lost:
        if not ran_on(conn):
            mark_before_any_statement(error)
        conn.invalidate(exc)
    return error
