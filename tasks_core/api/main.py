"""The ASGI app for uvicorn (``tasks_core.api.main:app``), configured from the environment."""

from __future__ import annotations

from tasks_core.api.app import create_app

app = create_app()
