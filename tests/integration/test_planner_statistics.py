"""A table filled from empty faster than autovacuum analyzes it is analyzed by
the sweeper, and the plans the moves cached on it find tasks by key again.

psycopg prepares a statement on a pooled connection, and PostgreSQL keeps
the generic plan it makes for it until the table's statistics change. Made
while ``tasks`` is nearly empty, a claim's plan reaches its task by reading
the table whole; kept as the table grows, every claim scans it. Checked on
real PostgreSQL, with the plan each claim ran (``auto_explain``), autovacuum
off on the test's tables so that only the sweeper can analyze them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, make_url, text

from tasks_core.flow_definitions import Limits
from tasks_core.lifecycle.engine import apply
from tasks_core.lifecycle.moves import Claim, Create
from tasks_core.publisher import CeleryPublisher
from tasks_core.records import Caller
from tasks_core.recovery import TABLES_ANALYZED, refresh_statistics, sweep_once
from tasks_core.storage.db import make_engine
from tasks_core.storage.statistics import STALE_ROWS, TABLES, outgrown
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import new_task
from tests.support.api import issue_key
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

GROWN = 5 * STALE_ROWS


@pytest.fixture
def caller(engine: Engine) -> Caller:
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
    _, key_id, org_id = issue_key(engine, "acme")
    return Caller(organization_id=uuid.UUID(org_id), key_id=uuid.UUID(key_id))


@pytest.fixture
def worker_conn(engine: Engine) -> Iterator[Connection]:
    """One connection in autocommit, as a worker's: its plans stay cached."""
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


def create(engine: Engine, caller: Caller, count: int) -> list[uuid.UUID]:
    news = tuple(new_task(caller, TaskSpec(kind="default"), limits=Limits()) for _ in range(count))
    with engine.begin() as conn:
        created = apply(conn, Create(news, actor="system:test")).tasks
        conn.execute(text("SELECT pg_stat_force_next_flush()"))  # the counts, at commit
    return list(created)


def claim(conn: Connection, task_id: uuid.UUID) -> None:
    claimed = apply(conn, Claim((task_id,), worker="w:1", lease_seconds=30)).tasks
    assert list(claimed) == [task_id]


def explained(conn: Connection) -> list[str]:
    """From now on, the plan of each statement on ``conn`` is noted here."""
    driver = conn.connection.driver_connection
    assert driver is not None
    notes: list[str] = []
    driver.add_notice_handler(lambda notice: notes.append(notice.message_primary or ""))
    for setting in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = notice",
        "SET client_min_messages = notice",
    ):
        conn.exec_driver_sql(setting)
    return notes


def scans_tasks(plans: list[str]) -> bool:
    return any("Seq Scan on tasks " in line for plan in plans for line in plan.splitlines())


def test_a_table_grown_from_empty_is_analyzed_and_claims_reach_tasks_by_key_again(
    engine: Engine, store: Store, caller: Caller, worker_conn: Connection
) -> None:
    # Claims on a nearly empty table: their plan is made and cached then.
    for task_id in create(engine, caller, 12):
        claim(worker_conn, task_id)
    generic = worker_conn.execute(
        text("SELECT generic_plans FROM pg_prepared_statements WHERE statement LIKE '%running%'")
    ).scalar_one()
    assert generic > 0, "the claim runs a cached generic plan"
    create(engine, caller, GROWN)
    wait_until(lambda: "tasks" in outgrown(worker_conn), message="the counts reach the stats")
    plans = explained(worker_conn)

    (task_id,) = create(engine, caller, 1)
    claim(worker_conn, task_id)
    assert scans_tasks(plans), "the plan cached on the empty table scans the grown one"

    report = sweep_once(store)
    assert report[TABLES_ANALYZED] >= 1
    assert outgrown(worker_conn) == []
    plans.clear()
    (task_id,) = create(engine, caller, 1)
    claim(worker_conn, task_id)
    assert plans, "the claim's plan was noted"
    assert not scans_tasks(plans), "\n".join(plans)


def test_a_table_whose_statistics_keep_up_is_left_to_autovacuum(
    engine: Engine, store: Store, caller: Caller
) -> None:
    create(engine, caller, STALE_ROWS // 2)
    with engine.connect() as conn:
        wait_until(
            lambda: (
                conn.execute(
                    text("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'tasks'")
                ).scalar_one()
                > 0
            ),
            message="the counts reach the stats",
        )
    assert refresh_statistics(store) == {}, "a small table"

    create(engine, caller, GROWN)
    wait_until(lambda: refresh_statistics(store)[TABLES_ANALYZED] >= 1, message="analyzed")
    create(engine, caller, STALE_ROWS)  # grown, but not four times its statistics
    with engine.connect() as conn:
        assert outgrown(conn) == []
    assert refresh_statistics(store) == {}


@pytest.fixture
def limited_store(engine: Engine, store: Store) -> Iterator[Store]:
    """A store on a role that may read and write the tables, not analyze them."""
    role = f"limited_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'secret'"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        )
    url = make_url(store.settings.database_url).set(username=role, password="secret")
    limited = make_engine(url.render_as_string(hide_password=False), store.settings)
    publisher = CeleryPublisher(store.settings.redis_url)
    yield Store(engine=limited, publisher=publisher, settings=store.settings)
    publisher.close()
    limited.dispose()
    with engine.begin() as conn:
        conn.execute(text(f"DROP OWNED BY {role}"))
        conn.execute(text(f"DROP ROLE {role}"))


def test_a_role_that_may_not_analyze_is_told_once_and_left_to_autovacuum(
    engine: Engine, caller: Caller, limited_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    create(engine, caller, GROWN)
    with engine.connect() as conn:
        wait_until(lambda: "tasks" in outgrown(conn), message="the counts reach the stats")

    with caplog.at_level(logging.WARNING, logger="tasks_core.recovery"):
        assert refresh_statistics(limited_store) == {}
        assert refresh_statistics(limited_store) == {}
    told = [r for r in caplog.records if "may not ANALYZE tasks" in r.getMessage()]
    assert len(told) == 1, [r.getMessage() for r in caplog.records]
    with engine.connect() as conn:
        assert "tasks" in outgrown(conn), "nothing was analyzed"


def test_a_table_being_vacuumed_waits_for_the_next_pass(
    engine: Engine, store: Store, caller: Caller
) -> None:
    create(engine, caller, GROWN)
    with engine.connect() as conn:
        wait_until(lambda: "tasks" in outgrown(conn), message="the counts reach the stats")
    with engine.begin() as vacuum:  # holds the lock a VACUUM or ANALYZE holds
        vacuum.execute(text("LOCK TABLE tasks IN SHARE UPDATE EXCLUSIVE MODE"))
        refresh_statistics(store)  # does not wait past its lock timeout, nor fail
        with engine.connect() as conn:
            assert "tasks" in outgrown(conn), "tasks was left for the next pass"
    assert refresh_statistics(store)[TABLES_ANALYZED] == 1
    with engine.connect() as conn:
        assert outgrown(conn) == []
