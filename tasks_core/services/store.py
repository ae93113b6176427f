"""The handles every service needs: the database, the broker and the settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from tasks_core.publisher import Publisher
from tasks_core.settings import Settings


@dataclass(frozen=True)
class Store:
    """Database engine, broker publisher and settings of one process."""

    engine: Engine
    publisher: Publisher
    settings: Settings

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection for work that is a single statement: it runs in
        autocommit, saving the BEGIN/COMMIT round trips of a transaction."""
        with self.engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction, committed on success."""
        with self.engine.begin() as conn:
            yield conn
