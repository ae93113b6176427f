"""The `tasks-core` commands operators run: migrate, keys, api."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tasks_core.devservers import EmbeddedPostgres, free_port
from tests.support.databases import create_database, drop_database
from tests.support.wait import wait_until


def tasks_core(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasks_core.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def empty_database(pg_server: EmbeddedPostgres) -> str:
    """A database with no schema at all."""
    name = "cli_test"
    drop_database(pg_server.url, name)
    create_database(pg_server.url, name)
    return pg_server.url_for(name)


def test_migrate_keys_and_api_work_together(empty_database: str, redis_url: str) -> None:
    # The revoke below must take effect at once: no key cache in the API.
    env = {"DATABASE_URL": empty_database, "REDIS_URL": redis_url, "KEY_CACHE_SECONDS": "0"}
    migrated = tasks_core("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert tasks_core("migrate", env=env).returncode == 0  # idempotent

    created = tasks_core("keys", "create", "--org", "acme", "--name", "ci", env=env)
    assert created.returncode == 0, created.stderr
    lines = created.stdout.strip().splitlines()
    key = lines[-1]  # the key is the last line
    key_id = next(line.split()[-1] for line in lines if line.startswith("key id:"))
    assert key.startswith("tk_") and len(key) > 40

    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "tasks_core.cli", "api", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_until(lambda: _ready(base), timeout=30, message="tasks-core api did not start")
        response = httpx.post(f"{base}/v1/tasks", json={"kind": "default"}, headers=headers)
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "queued"

        revoked = tasks_core("keys", "revoke", key_id, env=env)
        assert revoked.returncode == 0, revoked.stderr
        response = httpx.get(f"{base}/v1/tasks", headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)


def test_revoking_an_unknown_key_fails_with_a_message(database_url: str) -> None:
    result = tasks_core(
        "keys", "revoke", "01a2228c-411a-7292-9f74-1775d17d9cee", env={"DATABASE_URL": database_url}
    )
    assert result.returncode != 0
    assert "no API key" in result.stderr


def test_commands_that_need_a_database_say_so() -> None:
    result = tasks_core("migrate", env={"DATABASE_URL": ""})
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
