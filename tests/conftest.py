"""Fixtures of every test ring.

The servers are real PostgreSQL and Redis (tasks_core.devservers), started
lazily: once per session, by the first test that asks for one, directly or
through ``database_url`` / ``redis_url``. Unit tests ask for none, so they
never start a server.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
import redis

from tasks_core.devservers import EmbeddedPostgres, EmbeddedRedis
from tests.support.databases import TEMPLATE_DATABASE, create_database, drop_database, seal_template
from tests.support.figures import FIGURE, take_pending


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """A directory for server data, removed at the end of the session."""
    # Not pytest's tmp_path: pytest keeps /tmp/pytest-of-<user> at mode 0700,
    # which the PostgreSQL system user (we run as root) cannot traverse.
    path = Path(tempfile.mkdtemp(prefix="tasks-core-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(servers_dir: Path) -> Iterator[EmbeddedPostgres]:
    """The session's PostgreSQL server (durability off, for speed)."""
    server = EmbeddedPostgres(servers_dir / "pg", fast_unsafe=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(servers_dir: Path) -> Iterator[EmbeddedRedis]:
    """The session's Redis server."""
    server = EmbeddedRedis(servers_dir / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def template_db(pg_server: EmbeddedPostgres) -> str:
    """Name of a database migrated to the latest schema, which test databases copy."""
    from tasks_core.migrate import upgrade

    create_database(pg_server.url, TEMPLATE_DATABASE)
    upgrade(pg_server.url_for(TEMPLATE_DATABASE))
    seal_template(pg_server.url, TEMPLATE_DATABASE)
    return TEMPLATE_DATABASE


@pytest.fixture
def database_url(pg_server: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """URL of a fresh, migrated database of this test's own, dropped after it."""
    name = f"test_{uuid.uuid4().hex}"
    create_database(pg_server.url, name, template=template_db)
    yield pg_server.url_for(name)
    drop_database(pg_server.url, name)


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's Redis server (database 0), emptied for this test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


# The figures that reached this process's reports, in the order they came.
_FIGURES: list[str] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Hand the figures of this phase of the test on with its report."""
    report = yield
    report.user_properties.extend((FIGURE, line) for line in take_pending())
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep the figures of a report, from this process or a test process."""
    _FIGURES.extend(value for name, value in report.user_properties if name == FIGURE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the figures fault and scale tests measured (see tests/support/figures.py)."""
    if _FIGURES:
        terminalreporter.section("figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
