"""Prepared statements: the create path's statements are prepared on the
server from their second run on a pooled connection (DB_PREPARE_THRESHOLD=1),
and never with DB_PREPARE_THRESHOLD=0 (for transaction-pooling proxies)."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, text

from tasks_core.records import Caller
from tasks_core.settings import Settings
from tasks_core.storage.db import make_engine
from tasks_core.store import Store
from tasks_core.task import TaskSpec
from tasks_core.usecases.create import create_task
from tests.support.api import issue_key
from tests.support.figures import report


def _prepared_after_creates(store: Store, engine: Engine, creates: int) -> list[str]:
    """The statements prepared on the one pooled connection after ``creates`` creates."""
    _, key_id, org_id = issue_key(engine, "acme")
    caller = Caller(organization_id=uuid.UUID(org_id), key_id=uuid.UUID(key_id))
    for _ in range(creates):
        create_task(store, caller, TaskSpec(kind="default"))
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT statement FROM pg_prepared_statements")).scalars())


def _one_connection(settings: Settings, **overrides: object) -> Engine:
    changed = settings.model_copy(update={"db_pool_size": 1, "db_pool_overflow": 0, **overrides})
    return make_engine(changed.database_url, changed)


def test_the_create_path_is_prepared_on_a_pooled_connection(
    settings: Settings, store: Store
) -> None:
    engine = _one_connection(settings)
    try:
        mine = Store(engine=engine, publisher=store.publisher, settings=settings)
        prepared = _prepared_after_creates(mine, engine, creates=2)
    finally:
        engine.dispose()
    inserts = [sql for sql in prepared if "INSERT INTO tasks" in sql]
    assert inserts, prepared
    report(
        f"prepared statements: threshold=1 creates=2 prepared={len(prepared)} "
        f"task_insert_prepared={len(inserts)}"
    )


def test_db_prepare_threshold_zero_prepares_nothing(settings: Settings, store: Store) -> None:
    engine = _one_connection(settings, db_prepare_threshold=0)
    try:
        mine = Store(engine=engine, publisher=store.publisher, settings=settings)
        assert _prepared_after_creates(mine, engine, creates=7) == []
    finally:
        engine.dispose()


def test_db_prepare_threshold_reads_none_as_off() -> None:
    assert Settings(db_prepare_threshold="none").db_prepare_threshold == 0  # type: ignore[arg-type]
