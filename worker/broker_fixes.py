"""Guards around two failures of kombu's Redis transport on a lost broker.

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

The same read fails later for a message delivered before the loss whose run
ends after the reconnect: its ack (or reject) goes to the old channel, and the
``AttributeError`` raised in the worker's event loop ended the worker, with
exit code 0 (found by the Redis-restart reliability test, about one run in
ten). That ack can only remove the message from the old connection's
unacked index: with Redis restarted empty there is none; after a mere
disconnect kombu restores the message once its visibility timeout passes,
and the claim drops the duplicate of a task already ended. So it is logged
and forgotten, and the worker serves on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = logging.getLogger(__name__)

_original_restore_unacked: Callable[..., None] = kombu_redis.QoS.restore_unacked
_books_only_ack: Callable[..., None] = virtual.QoS.ack


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


def _dropped_when_lost(original: Callable[..., None], what: str) -> Callable[..., None]:
    """``original`` (the ack or the reject of a message), whose failure on a
    channel with no connection left is logged and the message forgotten; any
    other ``AttributeError`` is raised."""

    def guarded(self: Any, delivery_tag: str, *args: Any, **options: Any) -> None:
        try:
            original(self, delivery_tag, *args, **options)
        except AttributeError:
            if getattr(self.channel, "connection", None) is not None:
                raise
            _forget(self, delivery_tag, what)

    return guarded


_ack = _dropped_when_lost(kombu_redis.QoS.ack, "ack")
_reject = _dropped_when_lost(kombu_redis.QoS.reject, "reject")


def _forget(qos: Any, delivery_tag: str, what: str) -> None:
    """Take a message of a channel whose connection is gone out of its books
    (no broker call), logged."""
    log.warning(
        "broker connection gone: the %s of message %s is dropped; its task is in "
        "PostgreSQL, and a copy Redis still holds is dropped by the claim",
        what,
        delivery_tag,
    )
    _books_only_ack(qos, delivery_tag)


def install() -> None:
    """Apply the guards (idempotent)."""
    kombu_redis.QoS.restore_unacked = _restore_unacked  # type: ignore[method-assign]
    kombu_redis.QoS.ack = _ack  # type: ignore[method-assign]
    kombu_redis.QoS.reject = _reject  # type: ignore[method-assign]
