"""The handles every service needs: the database, the broker and the settings."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from tasks_core.errors import Conflict
from tasks_core.publisher import CeleryPublisher, Publisher
from tasks_core.settings import Settings
from tasks_core.storage.db import in_autocommit, make_engine
from tasks_core.storage.errors import is_collision, is_stale_connection, is_unavailable

# is_unavailable is part of the Store's interface (the sweeper's recoveries use it).
__all__ = ["ATTEMPTS", "Store", "is_unavailable", "store_from_settings"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# A transaction that lost a deadlock or a serialization check is run again this
# many times in all before the caller is told.
ATTEMPTS = 4


@dataclass(frozen=True)
class Store:
    """Database engine, broker publisher and settings of one process."""

    engine: Engine
    publisher: Publisher
    settings: Settings
    # Commits without waiting for the WAL flush; None: use ``engine``.
    relaxed_engine: Engine | None = None

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown)."""
        self.engine.dispose()
        if self.relaxed_engine is not None:
            self.relaxed_engine.dispose()

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection for work that is a single statement: it runs in
        autocommit, saving the BEGIN/COMMIT round trips of a transaction."""
        with self.engine.connect() as conn, in_autocommit(conn):
            yield conn

    @contextmanager
    def relaxed_statement(self) -> Iterator[Connection]:
        """Like :meth:`statement`, for a write that a database crash may undo
        harmlessly: a claim (the task is then `queued` again and runs again, as
        after any crash; its fenced outcome can not be written twice), a lease
        renewal, or the `created` -> `queued` mark (the claim accepts both, and
        the sweeper publishes `created` tasks again). Not waiting for the WAL
        flush halves the commits a task waits on."""
        if self.relaxed_engine is None:
            with self.statement() as conn:
                yield conn
        else:
            with self.relaxed_engine.connect() as conn:  # in autocommit from its creation
                yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction, committed on success."""
        with self.engine.begin() as conn:
            yield conn

    def atomic(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction, committed on success; a collision
        with a concurrent writer runs it again (see :meth:`_retrying`)."""
        return self._retrying(self.transaction, work)

    def at_once(self, work: Callable[[Connection], T], *, relaxed: bool = False) -> T:
        """Run ``work``, one statement, in autocommit (``relaxed``: see
        :meth:`relaxed_statement`); a collision runs it again."""
        return self._retrying(self.relaxed_statement if relaxed else self.statement, work)

    @staticmethod
    def _retrying(
        connect: Callable[[], AbstractContextManager[Connection]], work: Callable[[Connection], T]
    ) -> T:
        """A deadlock or serialization failure rolls the work back and runs it
        again, a few times, after a short random pause: each is a collision with
        a concurrent writer, not an outage. Past the last try it is a
        :class:`Conflict`. A pooled connection found lost by the work's first
        statement (nothing of the work can have run) is replaced once."""
        collisions = 0
        reconnected = False
        while True:
            try:
                with connect() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if is_stale_connection(exc) and not reconnected:
                    log.info("a pooled connection was lost (%s); once more, fresh", exc.orig)
                    reconnected = True
                    continue
                if not is_collision(exc):
                    raise
                collisions += 1
                if collisions == ATTEMPTS:
                    raise Conflict(
                        "the change collided with concurrent changes to the same tasks "
                        f"{ATTEMPTS} times; retry the request"
                    ) from exc
                log.info("collided with a concurrent change (%s); trying again", exc.orig)
                # Back off, apart from the other writer.
                time.sleep(random.uniform(0, 0.01 * 2**collisions))


def store_from_settings(settings: Settings) -> Store:
    """Engine and publisher for the configured PostgreSQL and Redis."""
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError("DATABASE_URL and REDIS_URL must be set (or use `tasks-core dev`)")
    return Store(
        engine=make_engine(settings.database_url, settings),
        publisher=CeleryPublisher(
            settings.redis_url,
            run_set_max=settings.run_set_max,
            linger_seconds=settings.publish_linger_seconds,
        ),
        settings=settings,
        relaxed_engine=make_engine(settings.database_url, settings, synchronous_commit=False),
    )
