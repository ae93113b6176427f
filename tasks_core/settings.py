"""Configuration, read once from the environment.

Every setting has an environment variable of the same name in upper case
(``DATABASE_URL``, ``MAX_BODY_BYTES`` ...). The README's configuration table
lists them; keep the two in step.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks_core.linger import LINGER_SECONDS


class Settings(BaseSettings):
    """Settings of the API, the CLI, the workers and the sweeper."""

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
    db_prepare_threshold: int = Field(
        default=1,
        ge=0,
        description=(
            "A statement is prepared on the server once a pooled connection has run it this "
            "many times and reused from then on (0 = never; for a proxy in transaction "
            "pooling mode that does not keep prepared statements)."
        ),
    )
    db_statement_timeout_ms: int = Field(
        default=30_000,
        ge=0,
        description="Server-side timeout of one SQL statement (0 = none).",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest accepted request body."
    )
    batch_max: int = Field(
        default=1000,
        ge=1,
        description="Most tasks in one batch create (POST /v1/tasks/batch, create_tasks).",
    )
    max_input_bytes: int = Field(default=524_288, ge=1, description="Largest task `input` (JSON).")
    max_output_bytes: int = Field(
        default=524_288,
        ge=1,
        description="Largest task `output` (JSON), from the API or a handler.",
    )
    max_params_bytes: int = Field(
        default=1_048_576,
        ge=1,
        description="Largest task `params` (JSON), a Flow's steps included.",
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
    tree_nodes_max: int = Field(
        default=1000,
        ge=1,
        description=(
            "Most tasks nested in one GET /v1/tasks/{id} answer, at every depth together; "
            'past it the answer stops and says "truncated": true.'
        ),
    )
    list_page_bytes_max: int = Field(
        default=4_194_304,
        ge=1,
        description=(
            "A page of GET /v1/tasks stops early (with its nextCursor) before passing this "
            "many bytes of task JSON; it always holds at least one task."
        ),
    )
    queue_prefix: str = Field(default="tasks", description="First segment of every queue name.")
    log_level: str = Field(default="INFO", description="Log level of the service processes.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: a readable line per record; `json`: one JSON object per line, "
        "with task_id, kind, attempt, worker and organization_id where known.",
    )

    # Metrics
    metrics_enabled: bool = Field(
        default=True, description="Serve GET /metrics on the API (Prometheus text format)."
    )
    metrics_token: str | None = Field(
        default=None,
        description="When set, GET /metrics needs `Authorization: Bearer <token>`.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on which `tasks-core worker` serves /metrics (or --metrics-port).",
    )
    metrics_max_queues: int = Field(
        default=200,
        ge=1,
        description="Most queues the API's queue gauges name (those waiting longest).",
    )

    # Workers
    tasks_imports: str = Field(
        default="", description="Comma-separated modules the worker imports to register handlers."
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A running task's lease; renewed while its worker lives. After PostgreSQL "
        "was out of reach the sweeper recovers no expired lease until it has reached it this long.",
    )
    run_set_max: int = Field(
        default=32,
        ge=1,
        le=64,
        description="Most tasks of one queue a message names when they are published "
        "together (a batch, a Flow's steps); 1: a message per task.",
    )
    run_set_window_seconds: float = Field(
        default=0.02,
        gt=0,
        description="A worker claims at once as many tasks of a message as it expects to "
        "run in this time, and hands the rest of a slow message back to the queue.",
    )
    publish_linger_seconds: float = Field(
        default=LINGER_SECONDS,
        ge=0,
        le=1,
        description="A new task's message waits up to this long for others of its queue, "
        "to go with them as one run set, when the queue is behind; 0: never waits.",
    )
    worker_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How often a worker node writes its row in the worker registry; "
        "alive means a heartbeat within three intervals.",
    )
    heartbeat_seconds: float = Field(
        default=1.0, gt=0, description="How often a worker renews leases and checks for cancels."
    )
    cancel_grace_seconds: float = Field(
        default=5.0, ge=0, description="Time a handler has to stop after a cancel or timeout."
    )
    retry_base_seconds: float = Field(
        default=1.0, ge=0, description="First retry delay; doubles each attempt, with jitter."
    )
    retry_max_seconds: float = Field(default=300.0, ge=0, description="Longest retry delay.")
    sweep_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the sweeper looks for tasks to recover."
    )
    sweep_batch: int = Field(
        default=500, ge=1, description="Most tasks one sweep handles per kind."
    )
    republish_after_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A task `created`/`queued` this long without running is published again.",
    )
    republish_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Longest wait between two republishes of one task (the backoff doubles "
        "from REPUBLISH_AFTER_SECONDS up to this).",
    )
    unserved_timeout_seconds: float = Field(
        default=50.0,
        ge=0,
        description="A task waiting this long on a queue that no worker node heard from "
        "within as long lists fails with unknown_kind (0 = never). Keep it above "
        "WORKER_HEARTBEAT_SECONDS, and above a pool's cold start where pools scale to zero.",
    )
    recovery_max_failures: int = Field(
        default=5,
        ge=1,
        description="A task whose recovery by the sweeper fails this many times in a row "
        "fails with recovery_failed.",
    )
    outcome_retry_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a worker retries writing an outcome (or handing back a run it "
        "stopped for want of its lease) while PostgreSQL is down.",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, running tasks get this long to finish, then are handed back.",
    )
    expose_tracebacks: bool = Field(
        default=False,
        description=(
            "Put a failed handler's traceback into the task's event log; off, the log "
            "keeps the exception's type and message and the traceback goes to the worker's log."
        ),
    )
    flow_max_steps: int = Field(default=10_000, ge=1, description="Most steps in one Flow.")
    flow_max_depth: int = Field(default=16, ge=1, description="Deepest nesting of Flows.")
    visibility_timeout_seconds: int = Field(
        default=3600,
        ge=1,
        description="Redis redelivers a message not acknowledged in this time.",
    )
    max_timeout_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description=(
            "Longest `timeoutSeconds` a task may have (a create above it is 422); workers "
            "also stop any run at this age, whatever the task asked for."
        ),
    )
    default_timeout_seconds: float = Field(
        default=86_400.0,
        gt=0,
        description=(
            "Run time a worker allows a task created without `timeoutSeconds` (the task "
            "keeps showing null); capped by MAX_TIMEOUT_SECONDS."
        ),
    )
    max_open_tasks_per_org: int = Field(
        default=0,
        ge=0,
        description=(
            "Most tasks not yet finished (created, queued, running, waiting) one organization "
            "may have; a create over it is 429 quota_exceeded (0 = no limit)."
        ),
    )
    max_running_per_org: int = Field(
        default=0,
        ge=0,
        description=(
            "Most tasks of one organization running at once on one queue; the others wait "
            "their turn, queued (0 = no limit)."
        ),
    )
    rate_limit_per_minute: int = Field(
        default=0,
        ge=0,
        description=(
            "Requests per minute allowed to one API key, counted in Redis across every "
            "API process; over it is 429 rate_limited with Retry-After (0 = no limit)."
        ),
    )

    unauthenticated_rate_limit_per_minute: int = Field(
        default=600,
        ge=0,
        description=(
            "Requests per minute without a valid API key (missing, malformed, unknown, "
            "revoked) allowed from one client address, counted in Redis; over it is 429 "
            "rate_limited with Retry-After (0 = no limit)."
        ),
    )

    key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description=(
            "How long an API process reuses a valid API key's lookup (its organization and "
            "executor list) without asking PostgreSQL; a revoked key may still work this "
            "long in each API process (0 = look up every request)."
        ),
    )

    @field_validator("db_prepare_threshold", mode="before")
    @classmethod
    def _off_means_zero(cls, value: object) -> object:
        """``DB_PREPARE_THRESHOLD=none`` (or ``off``) reads as 0: never prepare."""
        if isinstance(value, str) and value.strip().lower() in {"none", "off"}:
            return 0
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read from the environment on first use)."""
    return Settings()
