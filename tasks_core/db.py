"""Connections to PostgreSQL: one pooled engine per process and database URL."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from tasks_core.settings import Settings, get_settings


def sqlalchemy_url(database_url: str) -> str:
    """``postgresql://...`` as given by operators, with the psycopg 3 driver named."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError(
        "DATABASE_URL must start with postgresql:// (e.g. postgresql://user:pass@host:5432/db)"
    )


def make_engine(database_url: str, settings: Settings | None = None) -> Engine:
    """A pooled engine. No pre-ping: it would cost a round trip per checkout;
    a broken connection is discarded by SQLAlchemy when it fails instead."""
    settings = settings or get_settings()
    options = f"-c statement_timeout={settings.db_statement_timeout_ms} -c timezone=UTC"
    return create_engine(
        sqlalchemy_url(database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_overflow,
        pool_recycle=1800,
        pool_timeout=10,
        connect_args={"options": options, "connect_timeout": 5},
    )


@lru_cache(maxsize=8)
def engine_for(database_url: str) -> Engine:
    """The process-wide engine of a database URL."""
    return make_engine(database_url)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded rows usable after commit (they are converted right after)."""
    return sessionmaker(engine, expire_on_commit=False)
