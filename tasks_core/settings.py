"""Configuration, read once from the environment.

Every setting has an environment variable of the same name in upper case
(``DATABASE_URL``, ``MAX_BODY_BYTES`` ...). The README's configuration table
lists them; keep the two in step.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings of the API, the CLI and (later) the workers."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str = Field(
        default="",
        description="PostgreSQL URL, e.g. postgresql://user:pass@host:5432/db.",
    )
    redis_url: str = Field(
        default="", description="Redis URL of the broker, e.g. redis://host:6379/0."
    )
    db_pool_size: int = Field(
        default=10, ge=1, description="Pooled PostgreSQL connections per process."
    )
    db_pool_overflow: int = Field(
        default=10, ge=0, description="Extra connections allowed above the pool."
    )
    db_statement_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description="Server-side timeout of one SQL statement (0 = none).",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest accepted request body."
    )
    list_limit_max: int = Field(default=500, ge=1, description="Largest `limit` of GET /v1/tasks.")
    list_limit_default: int = Field(
        default=50, ge=1, description="`limit` of GET /v1/tasks when not given."
    )
    depth_max: int = Field(default=5, ge=1, description="Largest `depth` of GET /v1/tasks/{id}.")
    children_max: int = Field(
        default=1000,
        ge=1,
        description="Most children nested per task in one GET response.",
    )
    queue_prefix: str = Field(default="tasks", description="First segment of every queue name.")
    log_level: str = Field(default="INFO", description="Log level of the service processes.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read from the environment on first use)."""
    return Settings()
