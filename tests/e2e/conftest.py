"""End-to-end fixtures: the API in-process and real worker processes, per module.

Starting a Celery worker takes a couple of seconds, so each test module gets
one database, one queue prefix and one worker, shared by its tests; tests
stay independent by creating their own tasks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tasks_core.api.app import create_app
from tasks_core.devservers import EmbeddedPostgres, EmbeddedRedis
from tasks_core.publisher import CeleryPublisher
from tasks_core.settings import Settings
from tasks_core.storage.db import make_engine
from tasks_core.store import Store
from tests.bench.processes import ApiServer
from tests.support.api import OrgClient, issue_key
from tests.support.databases import create_database, drop_database
from tests.support.workers import WorkerProcess


@pytest.fixture(scope="module")
def e2e_settings(
    pg_server: EmbeddedPostgres, redis_server: EmbeddedRedis, template_db: str
) -> Iterator[Settings]:
    """A database and a queue prefix of this module's own."""
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    create_database(pg_server.url, name, template=template_db)
    yield Settings(
        database_url=pg_server.url_for(name),
        redis_url=redis_server.url,
        queue_prefix=name,
    )
    drop_database(pg_server.url, name)


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment of a worker process serving ``settings``."""
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "QUEUE_PREFIX": settings.queue_prefix,
    }


@pytest.fixture(scope="module")
def start_worker(e2e_settings: Settings) -> Iterator[Callable[..., WorkerProcess]]:
    """Start extra workers (``start_worker("--executor", "gpu")``); all stopped at module end."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess({**worker_env(e2e_settings), **(env or {})}, args)
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """The module's worker, serving every known kind without executor."""
    return start_worker("--concurrency", "2")


@pytest.fixture(scope="module")
def api(e2e_settings: Settings, worker: WorkerProcess) -> Iterator[ApiServer]:
    """A real ``tasks-core api`` process on this module's database, its worker running."""
    server = ApiServer(worker_env(e2e_settings)).start_serving()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def key(e2e_engine: Engine) -> str:
    """An API key of an organization of this module's own."""
    return issue_key(e2e_engine, f"org-{uuid.uuid4().hex[:8]}")[0]


@pytest.fixture(scope="module")
def e2e_engine(e2e_settings: Settings) -> Iterator[Engine]:
    engine = make_engine(e2e_settings.database_url, e2e_settings)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def e2e_store(e2e_engine: Engine, e2e_settings: Settings) -> Iterator[Store]:
    publisher = CeleryPublisher(e2e_settings.redis_url)
    yield Store(engine=e2e_engine, publisher=publisher, settings=e2e_settings)
    publisher.close()


@pytest.fixture(scope="module")
def e2e_http(e2e_store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(store=e2e_store), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def client(e2e_http: TestClient, e2e_engine: Engine) -> OrgClient:
    """A client of this module's organization."""
    secret, key_id, org_id = issue_key(e2e_engine, f"org-{uuid.uuid4().hex[:8]}")
    return OrgClient(http=e2e_http, key=secret, key_id=key_id, organization_id=org_id)
