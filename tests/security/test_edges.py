"""Smaller edges: requests without a valid key are rate-limited per client
address, and ``tasks-core dev`` writes its key file private from the start."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from tasks_core import dev
from tasks_core.api.app import create_app
from tasks_core.storage.keys import revoke_key
from tasks_core.store import Store
from tests.support.api import OrgClient, error_of, issue_key
from tests.support.figures import report

LIMIT = 5

# What a client without a valid key may send: every one must count.
BAD_AUTH: list[dict[str, str]] = [
    {},  # missing
    {"Authorization": "Basic dXNlcjpwYXNz"},  # malformed (not a bearer token)
    {"Authorization": "Bearer "},  # empty
    {"Authorization": f"Bearer tc_{uuid.uuid4().hex}"},  # unknown
]


@pytest.fixture
def from_address(engine: Engine, store: Store) -> Iterator[Callable[..., TestClient]]:
    """Clients of an app limited to ``LIMIT`` refused requests a minute per
    address, each from a client address of its own choosing."""
    settings = store.settings.model_copy(update={"unauthenticated_rate_limit_per_minute": LIMIT})
    app = create_app(store=Store(engine=engine, publisher=store.publisher, settings=settings))
    with ExitStack() as stack:

        def make(address: str, **overrides: Any) -> TestClient:
            if overrides:
                changed = settings.model_copy(update=overrides)
                limited = create_app(
                    store=Store(engine=engine, publisher=store.publisher, settings=changed)
                )
            else:
                limited = app
            client = TestClient(limited, raise_server_exceptions=False, client=(address, 40000))
            return stack.enter_context(client)

        yield make


def _statements(engine: Engine) -> list[str]:
    """Every SQL statement the engine runs from now on."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    return seen


def test_requests_without_a_valid_key_are_limited_per_address(
    from_address: Callable[..., TestClient], engine: Engine, acme: OrgClient
) -> None:
    stranger = from_address("203.0.113.7")
    revoked, revoked_id, _ = issue_key(engine, "acme")
    with engine.begin() as conn:
        revoke_key(conn, uuid.UUID(revoked_id))
    kinds = [*BAD_AUTH, {"Authorization": f"Bearer {revoked}"}]
    answers = [stranger.get("/v1/tasks", headers=kinds[i % len(kinds)]) for i in range(LIMIT)]
    assert [a.status_code for a in answers] == [401] * LIMIT
    refused = 0
    for headers in kinds:
        message = error_of(stranger.get("/v1/tasks", headers=headers), 429, "rate_limited")
        assert "without a valid API key" in message
        refused += 1
    over = stranger.get("/v1/tasks")
    assert int(over.headers["Retry-After"]) >= 1
    # Another address is not limited, nor is a valid key from the limited address.
    assert from_address("198.51.100.9").get("/v1/tasks").status_code == 401
    assert stranger.get("/v1/tasks", headers=acme.headers).status_code == 200
    report(f"unauthenticated limit: limit={LIMIT} refused_401={LIMIT} limited_429={refused + 1}")


def test_the_count_is_in_redis_and_a_forwarded_header_is_not_trusted(
    from_address: Callable[..., TestClient], redis_url: str
) -> None:
    stranger = from_address("203.0.113.8")
    for i in range(LIMIT):
        forged = {"X-Forwarded-For": f"10.0.0.{i}"}  # a client's claim, not its address
        assert stranger.get("/v1/tasks", headers=forged).status_code == 401
    answer = stranger.get("/v1/tasks", headers={"X-Forwarded-For": "10.9.9.9"})
    error_of(answer, 429, "rate_limited")
    with redis.Redis.from_url(redis_url) as client:
        counters = [k.decode() for k in client.scan_iter("ratelimit:anon:*")]
    assert [c.rsplit(":", 1)[0] for c in counters] == ["ratelimit:anon:203.0.113.8"]


def test_a_refused_key_costs_no_more_sql_than_one_lookup(
    from_address: Callable[..., TestClient], engine: Engine
) -> None:
    stranger = from_address("203.0.113.9")
    seen = _statements(engine)
    stranger.get("/v1/tasks")
    missing = len(seen)
    stranger.get("/v1/tasks", headers={"Authorization": "Bearer tc_unknown"})
    unknown = len(seen) - missing
    assert (missing, unknown) == (0, 1), seen


def test_the_limit_fails_open_when_redis_is_down(from_address: Callable[..., TestClient]) -> None:
    stranger = from_address("203.0.113.10", redis_url="redis://127.0.0.1:1/0")
    answers = [stranger.get("/v1/tasks").status_code for _ in range(LIMIT + 2)]
    assert answers == [401] * (LIMIT + 2)


def test_zero_turns_the_limit_off(from_address: Callable[..., TestClient]) -> None:
    stranger = from_address("203.0.113.11", unauthenticated_rate_limit_per_minute=0)
    answers = [stranger.get("/v1/tasks").status_code for _ in range(LIMIT + 2)]
    assert answers == [401] * (LIMIT + 2)


# --- the dev key file ----------------------------------------------------------------------


def test_the_key_file_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", recording_open)
    key_file = tmp_path / "api-key"
    dev.write_private(key_file, "secret\n")
    assert len(opened) == 1
    _, flags, mode = opened[0]
    # Created by this call (never an existing file), readable by its owner only.
    assert flags & os.O_CREAT and flags & os.O_EXCL and mode == 0o600
    assert key_file.read_text() == "secret\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_new_dev_key_replaces_a_readable_file_with_a_private_one(
    tmp_path: Path, engine: Engine
) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("tc_an_old_revoked_key\n")
    key_file.chmod(0o644)
    secret = dev.ensure_dev_key(engine, key_file)
    assert key_file.read_text().strip() == secret
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["api-key"]  # no temporary file left
