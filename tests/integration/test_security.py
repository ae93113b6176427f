"""Security: organizations never reach each other's data, keys are never kept or
logged in plain text, expired and revoked keys are refused, and the per-key
rate limit holds on the real Redis (shared by every API process, failing open).

Key basics (missing, wrong and revoked keys on every endpoint) are in
test_api_auth.py; this file does not repeat them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from tasks_core.api.app import create_app
from tasks_core.api.ratelimit import WINDOW_SECONDS
from tasks_core.devservers import free_port
from tasks_core.publisher import CeleryPublisher
from tasks_core.settings import Settings
from tasks_core.storage.keys import create_key, ensure_organization, revoke_key
from tasks_core.store import Store
from tests.support.api import OrgClient, error_of, issue_key
from tests.support.wait import wait_until

# --- cross-organization access ------------------------------------------------

# (method, path, JSON body, expectation); "{name}" anywhere is filled from the
# ids fixture: acme's task, its child and its state, and globex's own task.
# "404": refused exactly as a missing id would be. "own": a list holding only
# globex's own task. "empty": a list with nothing in it.
CROSS_ORG: list[tuple[str, str, Any, str]] = [
    ("GET", "/v1/tasks/{task}", None, "404"),
    ("GET", "/v1/tasks/{task}?depth=2", None, "404"),
    ("PUT", "/v1/tasks/{task}", {"title": "stolen", "description": "x"}, "404"),
    ("PUT", "/v1/tasks/{task}", {"status": "cancelled"}, "404"),
    ("POST", "/v1/tasks/{task}/cancel", None, "404"),
    ("POST", "/v1/tasks/{child}/cancel", None, "404"),
    ("GET", "/v1/tasks/{task}/events", None, "404"),
    ("GET", "/v1/states/{state}", None, "404"),
    ("POST", "/v1/tasks", {"kind": "default", "parentId": "{task}"}, "404"),
    ("PUT", "/v1/tasks/{own}", {"parentId": "{task}"}, "404"),
    ("GET", "/v1/tasks", None, "own"),
    ("GET", "/v1/tasks?parentId={task}", None, "empty"),
    ("GET", "/v1/tasks?kind=secret-kind", None, "empty"),
]


def fill(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with every ``{name}`` in its strings replaced by ``ids[name]``."""
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


@pytest.fixture
def ids(acme: OrgClient, globex: OrgClient) -> dict[str, str]:
    """A stateful acme task with a child and a state; one task of globex's own."""
    state = acme.post("/v1/states", json={"name": "acme-secrets", "variables": {"a": 1}})
    assert state.status_code == 201, state.text
    task = acme.create(title="mine", kind="secret-kind", stateful=True)
    child = acme.create(title="child", parentId=task["id"])
    own = globex.create(title="globex's own")
    return {"task": task["id"], "child": child["id"], "state": state.json()["id"], "own": own["id"]}


def snapshot(acme: OrgClient, engine: Engine, ids: dict[str, str]) -> dict[str, Any]:
    """Everything a cross-org request could change: acme's view of its data and
    the row counts of every table a request writes."""
    with engine.connect() as conn:
        counts = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("tasks", "task_events", "states", "organizations", "api_keys")
        }
    return {
        "task": acme.get(f"/v1/tasks/{ids['task']}", params={"depth": 2}).json(),
        "events": acme.get(f"/v1/tasks/{ids['task']}/events").json(),
        "child_events": acme.get(f"/v1/tasks/{ids['child']}/events").json(),
        "state": acme.get(f"/v1/states/{ids['state']}").json(),
        "list": acme.get("/v1/tasks").json(),
        "counts": counts,
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "expect"),
    CROSS_ORG,
    ids=[f"{m} {p} {e}" + (f" {sorted(b)}" if b else "") for m, p, b, e in CROSS_ORG],
)
def test_another_orgs_ids_are_not_found_and_nothing_changes(
    http: TestClient,
    engine: Engine,
    acme: OrgClient,
    globex: OrgClient,
    ids: dict[str, str],
    method: str,
    path: str,
    body: Any,
    expect: str,
) -> None:
    """Every endpoint that takes an id or lists: globex reaching for acme's data."""
    before = snapshot(acme, engine, ids)
    response = http.request(method, fill(path, ids), json=fill(body, ids), headers=globex.headers)
    if expect == "404":
        message = error_of(response, 404, "not_found")
        assert "mine" not in response.text and "acme" not in message
    else:
        assert response.status_code == 200, response.text
        listed = [item["id"] for item in response.json()["items"]]
        assert listed == ([ids["own"]] if expect == "own" else [])
    assert snapshot(acme, engine, ids) == before


# --- keys are never kept or logged in plain text -----------------------------


def test_api_keys_table_holds_only_the_digest(engine: Engine) -> None:
    secrets = [issue_key(engine, "acme")[0], issue_key(engine, "globex")[0]]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_keys")).mappings().all()
        # The whole row as PostgreSQL renders it: also covers columns added later.
        as_text = conn.execute(text("SELECT t::text FROM api_keys AS t")).scalars().all()
    assert len(rows) == len(secrets)
    digests = {bytes(row["key_hash"]) for row in rows}
    assert digests == {hashlib.sha256(s.encode()).digest() for s in secrets}
    for secret in secrets:
        for row in rows:
            for column, value in row.items():
                stored = bytes(value) if isinstance(value, bytes | memoryview) else str(value)
                if isinstance(stored, bytes):
                    assert secret.encode() not in stored, column
                else:
                    assert secret not in stored, column
        assert not any(secret in line for line in as_text)
        # The hex form of the secret's bytes is not stored either.
        assert not any(secret.encode().hex() in line for line in as_text)


def test_keys_never_appear_in_logs(
    http: TestClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """At DEBUG every logger, SQLAlchemy's statements and parameters included,
    sees a key issued, used for create/get/list/events/states, and a wrong key."""
    caplog.set_level(logging.DEBUG)
    # SQLAlchemy pins its own logger at WARNING on import; open it up too.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    secret, key_id, org_id = issue_key(engine, "acme")
    client = OrgClient(http=http, key=secret, key_id=key_id, organization_id=org_id)
    task = client.create(title="logged")
    assert client.get(f"/v1/tasks/{task['id']}").status_code == 200
    assert client.put(f"/v1/tasks/{task['id']}", json={"title": "t"}).status_code == 200
    assert client.get("/v1/tasks").status_code == 200
    assert client.get(f"/v1/tasks/{task['id']}/events").status_code == 200
    assert client.post("/v1/states", json={"name": "s"}).status_code == 201
    wrong = "tk_" + uuid.uuid4().hex + "wrong"
    error_of(
        http.get("/v1/tasks", headers={"Authorization": f"Bearer {wrong}"}), 401, "unauthorized"
    )

    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records), (
        "SQL was not logged: the check below would prove nothing"
    )
    for presented in (secret, wrong):
        assert presented not in caplog.text
        for record in caplog.records:
            assert presented not in record.getMessage(), record.name
            assert presented not in repr(record.args), record.name


# --- expired and revoked keys ------------------------------------------------


def _key(engine: Engine, organization: str, expires_at: datetime | None) -> tuple[str, str]:
    """(secret, key id) of a new key with the given expiry."""
    with engine.begin() as conn:
        issued = create_key(
            conn, ensure_organization(conn, organization), name="t", expires_at=expires_at
        )
    return issued.secret, str(issued.id)


# An expiry moved earlier in the database takes effect at once only without
# the key cache (KEY_CACHE_SECONDS=0).
@pytest.mark.parametrize("settings", [{"key_cache_seconds": 0}], indirect=True)
def test_expired_key_is_401_and_expiry_is_checked_on_every_request(
    http: TestClient, engine: Engine
) -> None:
    now = datetime.now(UTC)
    expired, _ = _key(engine, "acme", now - timedelta(seconds=1))
    valid, valid_id = _key(engine, "acme", now + timedelta(hours=1))
    for secret, status in ((expired, 401), (valid, 200)):
        response = http.get("/v1/tasks", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == status, response.text
    error_of(
        http.post(
            "/v1/tasks", json={"kind": "default"}, headers={"Authorization": f"Bearer {expired}"}
        ),
        401,
        "unauthorized",
    )
    # Without the cache a valid key stops working the moment it expires.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": valid_id},
        )
    error_of(
        http.get("/v1/tasks", headers={"Authorization": f"Bearer {valid}"}), 401, "unauthorized"
    )


def _cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tasks_core.cli", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_creates_a_key_that_expires_in_n_days(
    http: TestClient, engine: Engine, database_url: str
) -> None:
    before = datetime.now(UTC)
    result = _cli(
        "keys", "create", "--org", "acme", "--expires-in-days", "7", database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    secret = lines[-1]  # still the last line
    key_id = next(line.split()[-1] for line in lines if line.startswith("key id:"))
    assert any(line.startswith("expires at: ") for line in lines), lines
    with engine.connect() as conn:
        expires_at = conn.execute(
            text("SELECT expires_at FROM api_keys WHERE id = :id"), {"id": key_id}
        ).scalar_one()
    expected = before + timedelta(days=7)
    assert expected - timedelta(seconds=5) <= expires_at <= expected + timedelta(seconds=60)
    assert http.get("/v1/tasks", headers={"Authorization": f"Bearer {secret}"}).status_code == 200

    for bad in ("0", "-1", "soon"):
        refused = _cli(
            "keys", "create", "--org", "acme", "--expires-in-days", bad, database_url=database_url
        )
        assert refused.returncode != 0 and "--expires-in-days" in refused.stderr, refused.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar_one() == 1


# --- rate limiting -------------------------------------------------------------


def _fresh_window(margin: float = 3.0) -> int:
    """Wait, if needed, so that at least ``margin`` seconds of the current window
    remain (a test's requests must not straddle two windows); its start."""
    wait_until(
        lambda: WINDOW_SECONDS - time.time() % WINDOW_SECONDS >= margin,
        timeout=margin + 1,
        interval=0.05,
        message="no fresh rate-limit window",
    )
    return int(time.time() // WINDOW_SECONDS) * WINDOW_SECONDS


@pytest.fixture
def app_with(
    engine: Engine, database_url: str, redis_url: str
) -> Iterator[Callable[..., TestClient]]:
    """Start the real app with a rate limit (and optionally another Redis URL for
    the limiter; the broker stays the test Redis)."""
    with ExitStack() as stack:

        def start(limit: int, limiter_redis_url: str | None = None) -> TestClient:
            settings = Settings(
                database_url=database_url,
                redis_url=limiter_redis_url or redis_url,
                rate_limit_per_minute=limit,
            )
            publisher = CeleryPublisher(redis_url)
            stack.callback(publisher.close)
            store = Store(engine=engine, publisher=publisher, settings=settings)
            client = TestClient(create_app(store=store), raise_server_exceptions=False)
            return stack.enter_context(client)

        yield start


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_rate_limit_refuses_the_request_after_the_limit_per_key(
    app_with: Callable[..., TestClient], engine: Engine, redis_client: redis.Redis
) -> None:
    http = app_with(3)
    limited, limited_id, _ = issue_key(engine, "acme")
    same_org, _, _ = issue_key(engine, "acme")
    other_org, _, _ = issue_key(engine, "globex")
    window = _fresh_window()

    for _ in range(3):
        assert http.get("/v1/tasks", headers=_bearer(limited)).status_code == 200
    fourth = http.post("/v1/tasks", json={"kind": "default"}, headers=_bearer(limited))
    error_of(fourth, 429, "rate_limited")
    retry_after = int(fourth.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert retry_after <= math.ceil(window + WINDOW_SECONDS - time.time()) + 1
    assert http.get("/v1/tasks", headers=_bearer(limited)).status_code == 429  # stays limited

    # Other keys, of the same organization or another, have their own count.
    for secret in (same_org, other_org):
        for _ in range(3):
            assert http.get("/v1/tasks", headers=_bearer(secret)).status_code == 200
    with engine.connect() as conn:  # the refused POST created nothing
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 0

    counter = f"ratelimit:{limited_id}:{window}"
    assert int(redis_client.get(counter) or 0) == 5
    assert 0 < redis_client.ttl(counter) <= WINDOW_SECONDS


def test_rate_limit_is_shared_through_redis(
    app_with: Callable[..., TestClient], engine: Engine, redis_client: redis.Redis
) -> None:
    """Two API processes (two apps here) count into the same Redis key; hits
    recorded by any other process count too."""
    first, second = app_with(3), app_with(3)
    secret, key_id, _ = issue_key(engine, "acme")
    window = _fresh_window()
    assert first.get("/v1/tasks", headers=_bearer(secret)).status_code == 200
    assert second.get("/v1/tasks", headers=_bearer(secret)).status_code == 200
    redis_client.incr(f"ratelimit:{key_id}:{window}")  # a third process's request
    error_of(second.get("/v1/tasks", headers=_bearer(secret)), 429, "rate_limited")
    error_of(first.get("/v1/tasks", headers=_bearer(secret)), 429, "rate_limited")


def test_limit_zero_is_unlimited_and_touches_no_redis_key(
    http: TestClient, acme: OrgClient, redis_client: redis.Redis
) -> None:
    for _ in range(30):
        assert acme.get("/v1/tasks").status_code == 200
    counters = redis_client.keys("ratelimit:*")
    assert [k for k in counters if not k.startswith(b"ratelimit:anon:")] == []


def test_refused_keys_are_401_not_429_and_use_no_allowance(
    app_with: Callable[..., TestClient], engine: Engine, redis_client: redis.Redis
) -> None:
    """Authentication comes first: revoked, expired and unknown keys are 401
    however often they are tried (below the per-address limit of refused
    requests), and never create a key's counter."""
    http = app_with(1)
    revoked, revoked_id, _ = issue_key(engine, "acme")
    with engine.begin() as conn:
        revoke_key(conn, uuid.UUID(revoked_id))
    expired, _ = _key(engine, "acme", datetime.now(UTC) - timedelta(minutes=1))
    for secret in (revoked, expired, "tk_unknown"):
        for _ in range(3):
            error_of(http.get("/v1/tasks", headers=_bearer(secret)), 401, "unauthorized")
    counters = redis_client.keys("ratelimit:*")
    assert [k for k in counters if not k.startswith(b"ratelimit:anon:")] == []


def test_rate_limiter_fails_open_when_redis_is_down(
    app_with: Callable[..., TestClient], engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A limiter that can not reach Redis lets requests through and warns once
    (then stays out of the way for a few seconds instead of timing out each time)."""
    http = app_with(1, limiter_redis_url=f"redis://127.0.0.1:{free_port()}/0")
    secret, _, _ = issue_key(engine, "acme")
    caplog.set_level(logging.WARNING, logger="tasks_core.api.ratelimit")
    started = time.monotonic()
    for _ in range(5):
        assert http.get("/v1/tasks", headers=_bearer(secret)).status_code == 200
    assert time.monotonic() - started < 5
    warnings = [r for r in caplog.records if r.name == "tasks_core.api.ratelimit"]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "Redis" in warnings[0].getMessage()
