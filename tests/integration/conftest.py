"""Fixtures of the API tests: the real app on a fresh database and the real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tasks_core.api.app import create_app
from tasks_core.publisher import CeleryPublisher
from tasks_core.settings import Settings
from tasks_core.storage.db import make_engine
from tasks_core.store import Store
from tests.support.api import OrgClient, issue_key


@pytest.fixture
def settings(request: pytest.FixtureRequest, database_url: str, redis_url: str) -> Settings:
    """Default settings pointed at this test's database and the test Redis; a
    test may change some with ``@pytest.mark.parametrize("settings",
    [{"key_cache_seconds": 0}], indirect=True)``."""
    overrides: dict[str, object] = getattr(request, "param", {})
    return Settings(database_url=database_url, redis_url=redis_url, **overrides)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.database_url, settings)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine, settings: Settings) -> Iterator[Store]:
    publisher = CeleryPublisher(settings.redis_url)
    yield Store(engine=engine, publisher=publisher, settings=settings)
    publisher.close()


@pytest.fixture
def http(store: Store) -> Iterator[TestClient]:
    """The real FastAPI app, served in-process, on the test's store."""
    with TestClient(create_app(store=store), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client_with(engine: Engine, store: Store) -> Iterator[Callable[..., OrgClient]]:
    """Make a client of ``acme`` on another app over the same database, its
    settings changed (``client_with(max_body_bytes=2048)``)."""
    with ExitStack() as stack:

        def make(**overrides: object) -> OrgClient:
            settings = store.settings.model_copy(update=overrides)
            publisher = store.publisher
            if settings.redis_url != store.settings.redis_url:
                publisher = CeleryPublisher(settings.redis_url)
                stack.callback(publisher.close)
            app = create_app(store=Store(engine=engine, publisher=publisher, settings=settings))
            http = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            secret, key_id, org_id = issue_key(engine, "acme")
            return OrgClient(http=http, key=secret, key_id=key_id, organization_id=org_id)

        yield make


@pytest.fixture
def org_client(http: TestClient, engine: Engine) -> Callable[[str], OrgClient]:
    """Make a client for a named organization (a new key each call)."""

    def make(organization: str) -> OrgClient:
        secret, key_id, org_id = issue_key(engine, organization)
        return OrgClient(http=http, key=secret, key_id=key_id, organization_id=org_id)

    return make


@pytest.fixture
def acme(org_client: Callable[[str], OrgClient]) -> OrgClient:
    """A client of the organization ``acme``."""
    return org_client("acme")


@pytest.fixture
def globex(org_client: Callable[[str], OrgClient]) -> OrgClient:
    """A client of another organization, ``globex``."""
    return org_client("globex")
