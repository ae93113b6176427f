"""Pooled connections that PostgreSQL closed (failover, proxy restart, idle
timeout, ``pg_terminate_backend``) never fail a request while the database is
up: each is found closed at checkout and replaced before a statement is sent,
and work whose first statement still finds its connection lost is run once
more on a fresh one (never work that had run a statement). That a database
really down is still answered ``503 unavailable`` is proven by
``tests/reliability/test_postgres_outage.py``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import OperationalError

from tasks_core.storage.db import drop_if_closed
from tasks_core.store import Store
from tests.support.api import OrgClient
from tests.support.figures import report
from tests.support.wait import wait_until

WARM = 6
REQUESTS = 20


def _backends(admin: psycopg.Connection) -> list[int]:
    """The service's sessions on this test's database (not the admin's own)."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return [int(r[0]) for r in rows]


def _warm(acme: OrgClient, engine: Engine) -> str:
    """Concurrent requests, so that the pool holds several connections; the
    id of a task to read afterwards."""
    task = acme.create()
    with ThreadPoolExecutor(WARM) as pool:
        answers = list(
            pool.map(lambda _: acme.get(f"/v1/tasks/{task['id']}").status_code, range(4 * WARM))
        )
    assert set(answers) == {200}
    assert engine.pool.checkedin() >= 2, engine.pool.status()  # type: ignore[attr-defined]
    return str(task["id"])


def test_requests_after_every_backend_was_terminated_all_succeed(
    acme: OrgClient, engine: Engine, database_url: str
) -> None:
    task_id = _warm(acme, engine)
    with psycopg.connect(database_url, autocommit=True) as admin:
        victims = _backends(admin)
        assert len(victims) >= 2
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [victims])
        wait_until(
            lambda: not set(victims) & set(_backends(admin)),
            timeout=10,
            message="the terminated sessions did not go away",
        )

        def request(i: int) -> int:
            if i % 2:
                return acme.post("/v1/tasks", json={"kind": "default"}).status_code
            return acme.get(f"/v1/tasks/{task_id}").status_code

        with ThreadPoolExecutor(WARM) as pool:
            answers = list(pool.map(request, range(REQUESTS)))
    failed = sum(1 for a in answers if a not in (200, 201))
    report(
        f"stale connections: backends_terminated={len(victims)} "
        f"requests_after={len(answers)} failed={failed}"
    )
    assert failed == 0, answers


def _terminate_all(admin: psycopg.Connection) -> int:
    victims = _backends(admin)
    admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [victims])
    wait_until(lambda: not set(victims) & set(_backends(admin)), timeout=10)
    return len(victims)


def test_work_whose_first_statement_finds_its_connection_lost_runs_once_more(
    store: Store, engine: Engine, database_url: str
) -> None:
    # Without the checkout's look (a connection that dies just after it, or
    # gives no sign): the Store replaces it when the first statement fails.
    event.remove(engine, "checkout", drop_if_closed)
    runs: list[int] = []

    def work(conn: Connection) -> int:
        runs.append(1)
        return int(conn.execute(text("SELECT 1")).scalar_one())

    store.at_once(work)
    with psycopg.connect(database_url, autocommit=True) as admin:
        assert _terminate_all(admin) >= 1
        assert store.at_once(work) == 1 and len(runs) == 3  # the lost try, then a fresh one

        def half_done(conn: Connection) -> None:
            runs.append(1)
            conn.execute(text("SELECT 1"))
            _terminate_all(admin)  # lost after a statement ran: not safe to run again
            conn.execute(text("SELECT 1"))

        with pytest.raises(OperationalError):
            store.atomic(half_done)
    assert len(runs) == 4
