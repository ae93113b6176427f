"""The lifecycle's rows read straight from the driver (tasks_core/storage/rows.py):
the same records as through SQLAlchemy's result, in the same transaction, with
the same errors."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError, DBAPIError, OperationalError

from tasks_core.lifecycle.sql import records
from tasks_core.status import Status
from tasks_core.storage.db import statement
from tasks_core.storage.errors import DatabaseFailure, classify, is_stale_connection
from tasks_core.storage.rows import driver_rows
from tasks_core.store import Store
from tasks_core.task import TaskRecord
from tasks_core.worker_protocol import claim_task
from tests.support.api import OrgClient

POOL = "driver-rows"  # no worker serves it
BY_ID = statement("SELECT * FROM tasks WHERE id = ANY(ARRAY(SELECT CAST(j AS uuid) FROM "
                  "jsonb_array_elements_text(:ids) AS j))", "ids")  # fmt: skip


def test_records_read_from_the_driver_equal_those_read_through_sqlalchemy(
    acme: OrgClient, store: Store
) -> None:
    made = [acme.create(kind="default", executorId=POOL, input={"n": i}) for i in range(3)]
    ids = [uuid.UUID(m["id"]) for m in made]
    run = claim_task(store, ids[0], worker="driver:1")
    assert run is not None and run.status is Status.RUNNING and run.attempt == 1
    with store.statement() as conn:
        fast = records(conn, BY_ID, {"ids": [str(i) for i in ids]})
        slow = [
            TaskRecord.from_row(r)
            for r in conn.execute(BY_ID, {"ids": [str(i) for i in ids]}).mappings()
        ]
    assert sorted(fast, key=lambda t: t.id) == sorted(slow, key=lambda t: t.id)
    assert {t.input["n"] for t in fast if t.input} == {0, 1, 2}


def test_a_none_json_parameter_is_sql_null(store: Store) -> None:
    stmt = statement("SELECT CAST(:v AS jsonb) IS NULL AS missing, :w AS plain", "v")
    with store.statement() as conn:
        names, rows = driver_rows(conn, stmt, {"v": None, "w": "x"})
        _, given = driver_rows(conn, stmt, {"v": {"a": [1]}, "w": "y"})
    assert names == ("missing", "plain")
    assert rows == [(True, "x")] and given == [(False, "y")]


def test_a_statement_in_a_transaction_is_rolled_back_with_it(acme: OrgClient, store: Store) -> None:
    task = acme.create(kind="default", executorId=POOL)
    flip = statement("UPDATE tasks SET title = 'changed' WHERE id = CAST(:id AS uuid) RETURNING *")
    with pytest.raises(RuntimeError), store.transaction() as conn:
        assert records(conn, flip, {"id": task["id"]})[0].title == "changed"
        raise RuntimeError("roll back")
    with store.statement() as conn:
        (kept,) = records(conn, BY_ID, {"ids": [task["id"]]})
    assert kept.title != "changed"


def test_a_commit_as_you_go_connection_commits_what_it_ran(
    acme: OrgClient, engine: Engine, store: Store
) -> None:
    task = acme.create(kind="default", executorId=POOL)
    flip = statement("UPDATE tasks SET title = 'kept' WHERE id = CAST(:id AS uuid) RETURNING *")
    with engine.connect() as conn:
        records(conn, flip, {"id": task["id"]})
        assert conn.in_transaction()
        conn.commit()
    with store.statement() as conn:
        (kept,) = records(conn, BY_ID, {"ids": [task["id"]]})
    assert kept.title == "kept"


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(store: Store) -> None:
    with store.statement() as conn, pytest.raises(DataError) as refused:
        driver_rows(conn, statement("SELECT CAST(:v AS int)"), {"v": "not a number"})
    assert isinstance(refused.value, DBAPIError)
    assert classify(refused.value) is DatabaseFailure.DATA


def test_a_connection_lost_before_its_first_statement_is_marked_stale(
    engine: Engine, store: Store
) -> None:
    with engine.connect() as conn:
        backend = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend})
            other.commit()
        with pytest.raises(OperationalError) as lost:
            driver_rows(conn, statement("SELECT 1 AS one"), {})
        assert conn.invalidated
    assert is_stale_connection(lost.value)
    assert classify(lost.value) is DatabaseFailure.OUTAGE
    # The store's retry takes a fresh connection for such work.
    assert store.at_once(lambda c: driver_rows(c, statement("SELECT 1 AS one"), {}))[1] == [(1,)]


def test_column_names_follow_a_table_that_gains_a_column(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE widening (a int)"))
        conn.execute(text("INSERT INTO widening VALUES (1)"))
    stmt = statement("SELECT * FROM widening")
    try:
        with engine.connect() as conn:
            assert driver_rows(conn, stmt, {}) == (("a",), [(1,)])
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE widening ADD COLUMN b text DEFAULT 'x'"))
        engine.dispose()  # fresh connections: a prepared plan keeps its old columns
        with engine.connect() as conn:
            assert driver_rows(conn, stmt, {}) == (("a", "b"), [(1, "x")])
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE widening"))
