"""``Store.statement()`` runs in autocommit, and its connection goes back to
the pool in transaction mode: a transaction taken after it on the same pooled
connection is one transaction, also when the statement's connection broke
(its error is the one the caller sees) or was left inside a transaction
(it is dropped, not pooled in autocommit).
Each check asks PostgreSQL for the transaction id twice: one transaction has
one, while in autocommit each statement is a transaction of its own."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from tasks_core.settings import Settings
from tasks_core.storage.db import make_engine
from tasks_core.store import Store

XACT_ID = text("SELECT pg_current_xact_id()::text")


@pytest.fixture
def one_connection(settings: Settings, store: Store) -> Iterator[Store]:
    """A store whose pool holds one connection, so that each checkout takes
    the connection the last one gave back."""
    changed = settings.model_copy(update={"db_pool_size": 1, "db_pool_overflow": 0})
    engine = make_engine(changed.database_url, changed)
    try:
        yield Store(engine=engine, publisher=store.publisher, settings=changed)
    finally:
        engine.dispose()


def _in_one_transaction(conn: Connection) -> bool:
    """Whether a second statement on ``conn`` runs in the first one's transaction."""
    return bool(conn.execute(XACT_ID).scalar_one() == conn.execute(XACT_ID).scalar_one())


def test_a_statement_runs_in_autocommit_and_a_transaction_after_it_does_not(
    one_connection: Store,
) -> None:
    with one_connection.statement() as conn:
        assert not _in_one_transaction(conn)
        assert conn.connection.driver_connection.autocommit is True
    with one_connection.transaction() as conn:
        assert _in_one_transaction(conn)
    with one_connection.statement() as conn:  # and back again
        assert not _in_one_transaction(conn)


def test_a_broken_statement_connection_is_dropped_not_pooled_in_autocommit(
    one_connection: Store, store: Store
) -> None:
    with one_connection.statement() as conn:
        broken = conn.connection.driver_connection
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with store.statement() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            conn.execute(text("SELECT 1"))
        assert isinstance(raised.value.orig, psycopg.OperationalError)
    assert broken.closed

    with one_connection.transaction() as conn:
        assert conn.connection.driver_connection is not broken
        assert _in_one_transaction(conn)


def test_a_statement_connection_left_in_a_transaction_is_dropped(one_connection: Store) -> None:
    with one_connection.statement() as conn:
        left = conn.connection.driver_connection
        conn.exec_driver_sql("BEGIN")  # begun by hand, never ended
        conn.execute(XACT_ID)
    assert left.closed  # not pooled in autocommit

    with one_connection.transaction() as conn:
        assert conn.connection.driver_connection is not left
        assert _in_one_transaction(conn)
