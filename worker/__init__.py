"""Celery workers that run tasks by ``executorId`` and ``kind``.

``celery -A worker worker -Q tasks.default`` finds the app here.
"""

from __future__ import annotations

from worker.app import app

__all__ = ["app"]
