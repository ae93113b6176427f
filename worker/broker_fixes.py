"""A guard around one failure of kombu's Redis transport on a lost broker.

When the connection to Redis drops while messages are unacknowledged (late
acks make that common under load), Celery closes the connection to reconnect;
closing the channel tries to restore those messages through a connection that
is already gone, and kombu raises ``AttributeError`` (its ``_connparams``
reads a closed connection's ``client``). Celery takes that for an
unrecoverable error and the worker stops consuming for good.

Restoring cannot succeed with Redis unreachable anyway, and it is not needed
here: the tasks of those messages are in PostgreSQL, and the sweeper
publishes them again (a duplicate is dropped by the guarded claim). So the
failed restore is logged and the reconnect goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

_original_restore_unacked: Callable[..., None] = kombu_redis.QoS.restore_unacked


def _restore_unacked(self: Any, client: Any = None) -> None:
    try:
        _original_restore_unacked(self, client)
    except AttributeError:
        log.warning(
            "broker connection gone: %d unacknowledged message(s) not restored; "
            "the sweeper publishes their tasks again",
            len(getattr(self, "_delivered", ())),
        )
        self._delivered.clear()


def install() -> None:
    """Apply the guard (idempotent)."""
    kombu_redis.QoS.restore_unacked = _restore_unacked  # type: ignore[method-assign]
