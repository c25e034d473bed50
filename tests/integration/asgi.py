"""The real ASGI app with the embedded runtime's ingest routes, called in process (no socket)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from service.app import create_app
from service.config import ServiceConfig
from service.receiver import ingest_routes
from service.runtime import Runtime
from topology.store.base import Stores


@contextlib.asynccontextmanager
async def ingest_client(stores: Stores, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stores, ServiceConfig.from_env({}), runtime=runtime, extra_routes=ingest_routes(runtime))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client
