"""Serving the API with uvicorn, in one process or several (``tasks-core api``).

Why not plain ``uvicorn.run`` for several processes: its supervisor binds the
listening socket itself with ``proto`` 0, and asyncio turns ``TCP_NODELAY``
on for an accepted connection only when the socket says ``IPPROTO_TCP``
(uvicorn issue #3149). Without it every answer on a keep-alive connection
waits for the client's delayed ACK, about 40 ms on Linux. One process is not
affected: asyncio builds that listener from ``getaddrinfo`` (proto 6).
So the supervisor here gets a listener that names its protocol; the rest is
uvicorn's own: its config, its worker processes and their supervision.
(uvicorn 0.55 binds with ``IPPROTO_TCP`` itself; the releases before it that
``pyproject.toml`` admits do not.)

Every process serves with httptools and uvloop (both dependencies), named
here rather than left to uvicorn's "auto", which would fall back to h11 and
asyncio without a word: in Python, h11's parser and asyncio's loop were most
of a keep-alive create's time in the API process (py-spy); with these one
client's creates per second rose by 1.3-1.7x.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

APP = "tasks_core.api.main:app"
# uvicorn's options for every way the API is served (``tasks-core api`` and ``dev``).
FAST: dict[str, Any] = {"http": "httptools", "loop": "uvloop"}


class _Config(uvicorn.Config):
    """uvicorn's config, whose TCP listener says it is TCP."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return sock
        # The same descriptor (still inheritable), under a socket object whose
        # proto is IPPROTO_TCP: the worker processes rebuild it with that proto
        # and asyncio then sets TCP_NODELAY on each connection they accept.
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())


def serve(*, host: str, port: int, workers: int, log_config: dict[str, Any]) -> None:
    """Serve the API on ``host:port`` with ``workers`` processes, each
    logging as ``log_config`` says (``tasks_core.logs``)."""
    if workers <= 1:
        uvicorn.run(APP, host=host, port=port, log_config=log_config, **FAST)
        return
    config = _Config(APP, host=host, port=port, workers=workers, log_config=log_config, **FAST)
    # Ctrl-C stops the supervisor and its processes, quietly (as uvicorn.run does).
    with contextlib.suppress(KeyboardInterrupt):
        Multiprocess(config, sockets=[config.bind_socket()]).run()
