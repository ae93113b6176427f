"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tasks_core.api import (
    metrics,
    routes_actions,
    routes_health,
    routes_queues,
    routes_states,
    routes_tasks,
)
from tasks_core.api.errors import install_error_handlers
from tasks_core.api.key_cache import KeyCache
from tasks_core.api.limits import BodyLimit
from tasks_core.settings import Settings, get_settings
from tasks_core.store import Store, store_from_settings
from tasks_core.usecases.wait import TaskWaits

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """The API; with no ``store`` given it connects to the configured servers at start-up."""
    settings = settings or (store.settings if store else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = store is None
        app.state.store = store or store_from_settings(settings)
        try:
            yield
        finally:
            await app.state.task_waits.close()
            if owned:
                app.state.store.dispose()

    app = FastAPI(
        title="tasks-core",
        version="0.1.0",
        summary="Durable tasks: PostgreSQL as the source of truth, Redis queues, Celery workers.",
        lifespan=lifespan,
    )
    if store is not None:
        app.state.store = store
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.task_waits = TaskWaits(settings.database_url)
    install_error_handlers(app)
    app.include_router(routes_tasks.router)
    app.include_router(routes_actions.router)
    app.include_router(routes_states.router)
    app.include_router(routes_queues.router)
    app.include_router(routes_health.router)
    app.include_router(metrics.router)
    # The dashboard: static files on the public API, no key needed to load them.
    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(metrics.RequestMetrics)  # outermost: every answer counts
    return app
