"""The API key cache: a remembered key costs no SQL, a revoked key is refused
within KEY_CACHE_SECONDS, and unknown keys are never remembered."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from tasks_core.api.key_cache import KeyCache
from tasks_core.storage.keys import revoke_key, set_allowed_executors
from tests.support.api import OrgClient, error_of
from tests.support.figures import report
from tests.support.wait import wait_until


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL sent on ``engine`` inside the block."""
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        sent.append(sql)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _key_lookups(sent: list[str]) -> list[str]:
    return [sql for sql in sent if "api_keys" in sql]


def test_a_remembered_key_costs_no_statement(acme: OrgClient, engine: Engine) -> None:
    """The second request of a key sends no key lookup: one statement fewer
    than the first, and the organization's executor list comes with the key."""
    with engine.begin() as conn:
        set_allowed_executors(conn, "acme", ["gpu"])
    with statements(engine) as first:
        assert acme.create(executorId="gpu")["executorId"] == "gpu"
    with statements(engine) as second:
        assert acme.create(executorId="gpu")["executorId"] == "gpu"
    error_of(
        acme.post("/v1/tasks", json={"kind": "default", "executorId": "cpu"}),
        403,
        "executor_not_allowed",
    )
    assert len(_key_lookups(first)) == 1, first
    assert _key_lookups(second) == [], second
    assert len(second) == len(first) - 1
    report(
        f"key cache: statements_first_create={len(first)} "
        f"statements_cached_create={len(second)} key_lookups_cached=0"
    )


def test_a_revoked_key_is_refused_within_key_cache_seconds(
    client_with: Callable[..., OrgClient], engine: Engine
) -> None:
    client = client_with(key_cache_seconds=0.5)
    assert client.get("/v1/tasks").status_code == 200
    with engine.begin() as conn:
        revoke_key(conn, uuid.UUID(client.key_id))
    wait_until(
        lambda: client.get("/v1/tasks").status_code == 401,
        timeout=10,
        message="a revoked key still works past KEY_CACHE_SECONDS",
    )
    error_of(client.get("/v1/tasks"), 401, "unauthorized")


def test_a_remembered_key_works_until_its_entry_is_old(
    client_with: Callable[..., OrgClient], engine: Engine
) -> None:
    """The documented delay: within KEY_CACHE_SECONDS a revoked key is still
    served by the process that remembered it."""
    client = client_with(key_cache_seconds=600)
    assert client.get("/v1/tasks").status_code == 200
    with engine.begin() as conn:
        revoke_key(conn, uuid.UUID(client.key_id))
    assert client.get("/v1/tasks").status_code == 200


def test_unknown_keys_are_never_remembered(http: TestClient, engine: Engine) -> None:
    cache: KeyCache = http.app.state.key_cache  # type: ignore[attr-defined]
    with statements(engine) as sent:
        for n in range(20):
            response = http.get("/v1/tasks", headers={"Authorization": f"Bearer tk_unknown{n}"})
            error_of(response, 401, "unauthorized")
    assert len(cache) == 0
    assert len(_key_lookups(sent)) == 20


def test_keys_revoke_says_when_api_processes_refuse_the_key(
    database_url: str, acme: OrgClient
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "KEY_CACHE_SECONDS": "5"}
    result = subprocess.run(
        [sys.executable, "-m", "tasks_core.cli", "keys", "revoke", acme.key_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "within KEY_CACHE_SECONDS (5 s)" in result.stdout
