"""Waiters woken together share one read; one woken later reads anew."""

from __future__ import annotations

import asyncio
from typing import Any

from tasks_core.usecases.wait import SharedReads


def test_waiters_woken_together_share_one_read_and_later_ones_read_again() -> None:
    reads: list[int] = []

    def read() -> Any:
        reads.append(1)
        return len(reads)

    async def scenario() -> tuple[list[Any], Any]:
        shared = SharedReads()
        woken_at = asyncio.get_running_loop().time()
        together = await asyncio.gather(*(shared.read(("t",), woken_at, read) for _ in range(200)))
        # Woken after the first read began: it must not take that read's state.
        late = asyncio.get_running_loop().time() + 1.0
        flight = asyncio.gather(
            shared.read(("t",), woken_at, read), shared.read(("t",), late, read)
        )
        return together, await flight

    together, (early, late) = asyncio.run(scenario())
    assert set(together) == {1}
    assert early != late and len(reads) == 3


def test_a_failed_read_fails_every_waiter_that_shared_it() -> None:
    def read() -> Any:
        raise RuntimeError("database gone")

    async def scenario() -> list[Any]:
        shared = SharedReads()
        now = asyncio.get_running_loop().time()
        calls = (shared.read(("t",), now, read) for _ in range(5))
        return await asyncio.gather(*calls, return_exceptions=True)

    assert all(isinstance(result, RuntimeError) for result in asyncio.run(scenario()))
