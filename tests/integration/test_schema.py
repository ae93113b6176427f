"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from tasks_core.devservers import EmbeddedPostgres
from tasks_core.migrate import alembic_config, current_revision
from tasks_core.storage.tables import Base
from tests.support.databases import create_database, drop_database


def test_migrated_schema_equals_the_orm_metadata(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_migrations_started_at_once_run_one_after_another(pg_server: EmbeddedPostgres) -> None:
    """Several ``tasks-core migrate`` processes at once on an empty database
    (replicas of a Job, init containers): one migrates, the others wait for
    it and find the schema at head."""
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    create_database(pg_server.url, name)
    url = pg_server.url_for(name)
    env = {**os.environ, "DATABASE_URL": url}
    command = [sys.executable, "-m", "tasks_core.cli", "migrate"]
    try:
        runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE) for _ in range(4)]
        failed = [run.stderr.read().decode()[-500:] for run in runs if run.wait(60) != 0]  # type: ignore[union-attr]
        assert failed == []  # none tripped over the tables another was creating
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert current_revision(url) == head
    finally:
        drop_database(pg_server.url, name)


def test_every_table_is_created_by_migrations(engine: Engine, database_url: str) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"tasks", "task_events", "states", "organizations", "api_keys"} <= tables
    assert current_revision(database_url) is not None


# Filter of GET /v1/tasks -> (SQL condition, the index that must serve it).
LIST_FILTERS = {
    "": ("", "ix_tasks_org_id"),
    "status": ("status = 'queued'", "ix_tasks_org_status_id"),
    "kind": ("kind = 'default'", "ix_tasks_org_kind_id"),
    "executorId": ("executor_id = 'pool'", "ix_tasks_org_executor_id"),
    "parentId": ("parent_id = '01a2228c-411a-7292-9f74-1775d17d9cee'", "ix_tasks_parent_id"),
    "appId": ("app_id = 'app'", "ix_tasks_org_app_id"),
    "targetId": ("target_id = 't'", "ix_tasks_org_target_id"),
}


@pytest.mark.parametrize("name", sorted(LIST_FILTERS))
def test_each_list_filter_is_served_by_its_own_index(engine: Engine, name: str) -> None:
    """Every filter of GET /v1/tasks is a range scan of an index made for it,
    in id order (no sort), so a page costs the same at a million rows."""
    condition, index = LIST_FILTERS[name]
    where = "organization_id = '01a2228c-411a-7292-9f74-1775d17d9cee'"
    where += f" AND {condition}" if condition else ""
    with engine.begin() as conn:
        # An empty table would be scanned sequentially; plan as for a large one.
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("SET LOCAL enable_bitmapscan = off"))
        plan = "\n".join(
            conn.execute(
                text(f"EXPLAIN SELECT * FROM tasks WHERE {where} ORDER BY id DESC LIMIT 51")
            ).scalars()
        )
    assert f"Index Scan Backward using {index}" in plan, plan
    assert "Sort" not in plan, plan
