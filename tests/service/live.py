"""A real uvicorn server in the test's event loop, on free loopback ports, for TLS and WebSocket tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, sockets: list[socket.socket] | None = None,
                  **options: Any) -> AsyncIterator[list[int]]:
    """Serve ``app`` on ``sockets`` (default: one free port) until the block ends; yields the ports."""
    socks = sockets or [free_socket()]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", log_config=None, lifespan="off",
                                           **options))
    task = asyncio.create_task(server.serve(sockets=socks))
    try:
        while not server.started:  # uvicorn exposes a flag, not an event
            if task.done():
                task.result()
                raise RuntimeError("the server stopped before it started")
            await asyncio.sleep(0.02)
        yield [s.getsockname()[1] for s in socks]
    finally:
        server.should_exit = True
        await task
        for s in socks:
            s.close()
