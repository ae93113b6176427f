"""Alembic environment: online migrations only, against ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from tasks_core.storage.tables import Base

target_metadata = Base.metadata

# Held for the migration's transaction: migrators started at once (a Job and
# an init container, replicas of one) run one after another, and the later
# ones find the schema at head. Any fixed key; this one spells "tasks".
MIGRATION_LOCK = 0x7461736B73


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
    engine.dispose()


run_migrations_online()
