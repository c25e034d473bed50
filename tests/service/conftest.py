"""Fixtures: the hand-built fleet (see fleet.py) in a fresh embedded store, and a GraphQL client."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.config import ServiceConfig
from tests.service.fleet import NOW, fill
from topology.store.base import Stores
from topology.store.embedded import open_stores


@pytest.fixture
async def stores(tmp_path: pathlib.Path) -> AsyncIterator[Stores]:
    s = open_stores(tmp_path / "store")
    await fill(s)
    yield s
    await s.close()


CONFIG = replace(ServiceConfig(), logs_url="https://logs.example/?q={service}",
                 metrics_url="https://metrics.example/d/svc?var-app={service}")


class Client:
    """POSTs GraphQL to the app; ``query`` returns the whole JSON answer."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def query(self, document: str, variables: dict[str, Any] | None = None,
                    operation: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": document, "variables": variables or {}}
        if operation:
            body["operationName"] = operation
        r = await self.http.post("/graphql", json=body)
        assert r.headers["content-type"].startswith("application/json"), r.text
        out: dict[str, Any] = r.json()
        return out

    async def data(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``data`` of an answer that must have no errors."""
        out = await self.query(document, variables)
        assert "errors" not in out, out["errors"]
        data: dict[str, Any] = out["data"]
        return data


def client_for(stores: Stores, config: ServiceConfig = CONFIG, **kwargs: Any) -> httpx.AsyncClient:
    app = create_app(stores, config, clock=lambda: NOW, **kwargs)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(stores: Stores) -> AsyncIterator[Client]:
    async with client_for(stores) as http:
        yield Client(http)
