"""Federation: ``_service { sdl }``, ``_entities`` (batched: one look-up per kind of data for many
representations), and the SDL file at the repository root."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Any

from tests.service.conftest import CONFIG, Client, client_for
from topology.store.base import Stores

ROOT = pathlib.Path(__file__).resolve().parents[2]


class CountingCatalog:
    """The real catalog store, counting the calls of each method (a thin wrapper, not a fake)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: dict[str, list[list[str]]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            first = args[0] if args else None
            self.calls.setdefault(name, []).append(sorted(first) if isinstance(first, list) else [])
            return await attr(*args, **kwargs)

        return call


ENTITIES = """query($r: [_Any!]!) { _entities(representations: $r) {
  ... on Service { name tier owner { team } kind layers } } }"""


async def test_entities_resolve_a_batch_with_one_lookup(stores: Stores) -> None:
    counting = CountingCatalog(stores.catalog)
    wrapped = Stores(layers=stores.layers, catalog=counting)  # type: ignore[arg-type]
    names = ["api", "orders", "nope", "orders-db", "catalog-only", "ledger"]
    async with client_for(wrapped, CONFIG) as http:
        out = await Client(http).data(ENTITIES, {"r": [{"__typename": "Service", "name": n} for n in names]})
    got = out["_entities"]
    assert [None if e is None else e["name"] for e in got] == ["api", "orders", None, "orders-db",
                                                                  "catalog-only", "ledger"]
    assert got[0] == {"name": "api", "tier": 1, "owner": {"team": "core"}, "kind": "SERVICE",
                      "layers": ["NETWORK", "IPC", "TRACE"]}
    assert got[3] == {"name": "orders-db", "tier": None, "owner": None, "kind": "DATABASE",
                      "layers": ["NETWORK"]}
    assert got[4]["layers"] == []
    # one catalog look-up and one node-registry look-up for all six names, fields included
    assert counting.calls["services"] == [sorted(names)]
    assert counting.calls["known_nodes"] == [sorted(names)]


async def test_service_sdl_declares_the_entity(client: Client) -> None:
    sdl = (await client.data("{ _service { sdl } }"))["_service"]["sdl"]
    assert 'type Service @key(fields: "name")' in sdl
    assert "federation/v2.9" in sdl
    assert "type PageInfo @shareable" in sdl
    assert "_entities" not in sdl.split("type Query")[0]  # the entity union comes after, from the library


def test_schema_file_is_the_printed_schema() -> None:
    from service.schema import schema

    on_disk = (ROOT / "schema.graphql").read_text(encoding="utf-8")
    assert on_disk == schema.as_str() + "\n", "regenerate it: python -m service.schema > schema.graphql"


def test_schema_module_prints_the_file() -> None:
    out = subprocess.run([sys.executable, "-m", "service.schema"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout == (ROOT / "schema.graphql").read_text(encoding="utf-8")


def test_schema_with_other_limits_has_the_same_sdl() -> None:
    from dataclasses import replace

    from service.config import ServiceConfig
    from service.schema import build_schema, schema

    assert build_schema(replace(ServiceConfig(), max_depth=3, max_aliases=2)).as_str() == schema.as_str()
