"""Celery workers that run tasks by ``executorId`` and ``kind``.

``celery -A worker worker -Q tasks.default`` finds the app here, as
``worker.app``; it is built on that first use, so importing ``worker.registry``
to register handlers loads no Celery.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from worker.celery_app import get_app

        return get_app()
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
