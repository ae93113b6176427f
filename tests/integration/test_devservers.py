"""The embedded servers: real PostgreSQL and Redis that start, stop, crash and come back.

Each test runs servers of its own, since it stops or kills them; the session
servers of conftest are checked through their fixtures only.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tasks_core.devservers import DevServerError, EmbeddedPostgres, EmbeddedRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch_dir(servers_dir: Path) -> Path:
    """A directory of this test's own, not yet created, where the PostgreSQL user can reach it."""
    return servers_dir / uuid.uuid4().hex


@pytest.fixture
def postgres(scratch_dir: Path) -> Iterator[EmbeddedPostgres]:
    """A stopped PostgreSQL of this test's own, durable settings; stopped after the test."""
    server = EmbeddedPostgres(scratch_dir / "pg")
    yield server
    server.stop()


@pytest.fixture
def own_redis(scratch_dir: Path) -> Iterator[EmbeddedRedis]:
    """A stopped Redis of this test's own; stopped again after the test."""
    server = EmbeddedRedis(scratch_dir / "redis")
    yield server
    server.stop()


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(statement.encode())
        return cursor.fetchall() if cursor.description else []


def postgres_pids(server: EmbeddedPostgres) -> set[int]:
    """The postmaster and every process it started that shows in pg_stat_activity."""
    assert server.pid is not None
    return {server.pid} | {pid for (pid,) in query(server.url, "SELECT pid FROM pg_stat_activity")}


def test_postgres_serves_on_loopback_tcp_only(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.url == f"postgresql://postgres@127.0.0.1:{pg_server.port}/postgres"
    settings = query(
        pg_server.url,
        "SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories'),"
        " current_setting('fsync'), current_setting('server_encoding')",
    )
    assert settings == [("127.0.0.1", "", "off", "UTF8")]


def test_postgres_keeps_tables_across_stop_and_start(postgres: EmbeddedPostgres) -> None:
    postgres.start()
    query(postgres.url, "CREATE TABLE kept (value int); INSERT INTO kept VALUES (7)")
    pids = postgres_pids(postgres)

    postgres.stop()

    assert not postgres.is_running()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "processes outlived stop()"
    # A new instance on the used data directory, as a second `tasks-core dev` would make.
    again = EmbeddedPostgres(postgres.data_dir)
    with again:
        assert query(again.url, "SELECT value FROM kept") == [(7,)]
    assert not again.is_running()


def test_postgres_comes_back_after_kill_with_committed_data(postgres: EmbeddedPostgres) -> None:
    postgres.start()
    query(postgres.url, "CREATE TABLE kept (value int); INSERT INTO kept VALUES (7)")
    session = psycopg.connect(postgres.url)

    postgres.kill()

    assert not postgres.is_running() and postgres.pid is None
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.url, connect_timeout=2)
    postgres.start()
    assert query(postgres.url, "SELECT value FROM kept") == [(7,)]


def test_postgres_start_and_stop_are_idempotent(postgres: EmbeddedPostgres) -> None:
    postgres.stop()
    postgres.start()
    postgres.start()
    assert query(postgres.url_for("template1"), "SELECT 1") == [(1,)]
    postgres.stop()
    postgres.stop()
    postgres.kill()
    assert not postgres.is_running()


def test_postgres_start_fails_with_the_log_when_the_port_is_taken(scratch_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = EmbeddedPostgres(scratch_dir / "pg", port=port, fast_unsafe=True)

        with pytest.raises(DevServerError, match="could not bind"):
            server.start()

    assert not server.is_running()


def test_redis_sets_and_gets(own_redis: EmbeddedRedis) -> None:
    own_redis.start()
    assert own_redis.is_running() and own_redis.pid is not None
    assert own_redis.url == f"redis://127.0.0.1:{own_redis.port}/0"
    with redis.Redis.from_url(own_redis.url, decode_responses=True) as client:
        client.set("task", "queued")
        assert client.get("task") == "queued"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}


def test_redis_comes_back_empty_after_kill(own_redis: EmbeddedRedis) -> None:
    own_redis.start()
    with redis.Redis.from_url(own_redis.url) as client:
        client.set("task", "queued")

    own_redis.kill()

    assert not own_redis.is_running()
    with redis.Redis.from_url(own_redis.url) as client, pytest.raises(redis.ConnectionError):
        client.ping()
    own_redis.start()
    with redis.Redis.from_url(own_redis.url) as client:
        assert client.dbsize() == 0


def test_redis_restarts_on_a_used_data_dir_without_leftovers(own_redis: EmbeddedRedis) -> None:
    own_redis.start()
    with redis.Redis.from_url(own_redis.url) as client:
        client.set("task", "queued")
    pid = own_redis.pid

    own_redis.stop()

    assert not own_redis.is_running()
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    assert not list(own_redis.data_dir.glob("*.rdb")) and not list(own_redis.data_dir.glob("*.aof"))
    with EmbeddedRedis(own_redis.data_dir) as again, redis.Redis.from_url(again.url) as client:
        assert client.dbsize() == 0


def test_redis_url_fixture_gives_an_empty_database(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("left", "behind")
