"""Waking whoever waits for a task to end: PostgreSQL LISTEN, one connection a process.

Migration 0010's trigger NOTIFYs ``tasks_ended`` with a task's id when a
move ends it, delivered when that move commits, whichever process made it
(a worker, the sweeper, a cancel). An API process keeps one listening
connection, opened on its first wait, and wakes each waiter of that id:
many waiters cost no connection each, and hold none while they wait.

A waiter listens before it reads the task, so an end committed after the
read always wakes it. When the listening connection is lost, every waiter
is woken: it listens anew (one new connection for all of them), then reads
the task again, so an end that came while no one listened is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg

from tasks_core.storage.db import libpq_url

log = logging.getLogger(__name__)

CHANNEL = "tasks_ended"  # as migration 0010's trigger names it


class Wake(asyncio.Event):
    """Set when the task ends; ``at`` is when the news came (the loop's clock)."""

    at: float = 0.0

    def wake(self) -> None:
        self.at = asyncio.get_running_loop().time()
        self.set()


class EndListener:
    """One process's LISTEN on ``tasks_ended``, fanned out to its waiters."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url  # read at the first wait: an app may start without one
        self._waiters: defaultdict[str, set[Wake]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None
        self._listening: asyncio.Future[None] | None = None
        self._start = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def watch(self, task_id: str) -> AsyncIterator[Wake]:
        """An event set when ``task_id`` ends (or the listener is lost), from
        the moment this returns: read the task after entering."""
        woken = Wake()
        self._waiters[task_id].add(woken)
        try:
            await self.listening()
            yield woken
        finally:
            waiting = self._waiters.get(task_id)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._waiters[task_id]

    async def listening(self) -> None:
        """Return once this process LISTENs, connecting again after a loss.
        A waiter woken by a loss calls it before it waits again, then reads."""
        async with self._start:
            if self._reader is None or self._reader.done():
                self._listening = asyncio.get_running_loop().create_future()
                self._reader = asyncio.create_task(self._read(self._listening))
            listening = self._listening
        assert listening is not None
        await asyncio.shield(listening)

    async def _read(self, listening: asyncio.Future[None]) -> None:
        try:
            conninfo = libpq_url(self._database_url)
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                listening.set_result(None)
                async for notice in conn.notifies():
                    self._wake(notice.payload)
        except (psycopg.Error, OSError, ValueError) as exc:
            log.warning("task-end listener lost (%s); waiters read their tasks again", exc)
            if not listening.done():
                listening.set_exception(exc)
            self._wake_all()

    def _wake(self, task_id: str) -> None:
        for woken in self._waiters.get(task_id, ()):
            woken.wake()

    def _wake_all(self) -> None:
        for waiting in self._waiters.values():
            for woken in waiting:
                woken.wake()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error, OSError):
                await self._reader
            self._reader = None
