"""How the service processes log: readable text, or one JSON object a line.

``LOG_FORMAT=json`` writes each record as one JSON object on one line, with
``time``, ``level``, ``logger`` and ``message``, the exception's traceback
as ``exception`` when there is one, and what is known of the run it belongs
to: ``task_id``, ``kind``, ``attempt``, ``worker`` and ``organization_id``
(set by the worker around each run, see :func:`run_context`). The default,
``text``, is one readable line per record.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("task_id", "kind", "attempt", "worker", "organization_id")

_run: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "tasks_core_run", default=None
)


@contextlib.contextmanager
def run_context(**fields: Any) -> Iterator[None]:
    """The records logged inside carry ``fields`` (the run's task, kind...)."""
    token = _run.set({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _run.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in (_run.get() or {}).items():
            line[name] = str(value) if not isinstance(value, int | float) else value
        for name in CONTEXT_FIELDS:  # given with the record (``extra=``) wins
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the root logger (and uvicorn's,
    which then write through it), in ``fmt`` (``text`` or ``json``)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": {"class": "logging.StreamHandler", "formatter": "main"}},
        "root": {"level": level.upper(), "handlers": ["main"]},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        }
        | {"alembic": {"level": "WARNING"}},
    }
