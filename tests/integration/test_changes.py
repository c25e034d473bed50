"""Change events end to end: POST /ingest/changes into the embedded store, Service.changes over GraphQL."""

from __future__ import annotations

import json
import pathlib
import time
from datetime import UTC, datetime

from service.runtime import Runtime
from tests.integration.asgi import ingest_client
from topology.store.embedded import open_stores


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


async def test_posted_changes_are_listed_newest_first_within_the_range(tmp_path: pathlib.Path) -> None:
    stores = open_stores(tmp_path / "store")
    runtime = Runtime(stores, tmp_path)
    now = time.time()
    events = [
        {"service": "checkout", "kind": "DEPLOY", "at": now - 3600, "version": "v1", "author": "ci",
         "description": "deployed v1", "link": "https://ci/1"},
        {"service": "checkout", "kind": "CONFIG", "at": now - 1800, "description": "timeout 2s -> 1s"},
        {"service": "checkout", "kind": "DEPLOY", "at": now - 600, "version": "v2"},
        {"service": "payments", "kind": "SCALING", "at": now - 300},
        {"service": "checkout", "kind": "INFRA", "at": now - 3 * 86400},
    ]
    try:
        async with ingest_client(stores, runtime) as c:
            hdr = {"content-type": "application/json"}
            r = await c.post("/ingest/catalog", content=json.dumps([{"name": "checkout"}]), headers=hdr)
            assert r.status_code == 200, r.text
            r = await c.post("/ingest/changes", content=json.dumps(events), headers=hdr)
            assert r.json() == {"accepted": 5}
            r = await c.post("/ingest/changes", content=json.dumps(events[:1]), headers=hdr)  # again: once
            assert r.status_code == 200
            bad = await c.post("/ingest/changes", content=b'[{"service": "x", "kind": "REBOOT", "at": 1e9}]',
                               headers=hdr)
            assert bad.status_code == 400 and bad.json()["error"].startswith("schema: change event record 0")
            assert "REBOOT" in bad.json()["error"]

            async def changes(args: str) -> list[dict[str, object]]:
                fields = "kind at version author description link"
                q = f'{{ service(name: "checkout") {{ changes{args} {{ {fields} }} }} }}'
                got = (await c.post("/graphql", json={"query": q})).json()
                assert "errors" not in got, got
                return list(got["data"]["service"]["changes"])

            day = await changes("")  # default: the last day
            assert [(x["kind"], x["version"]) for x in day] == [("DEPLOY", "v2"), ("CONFIG", None),
                                                                ("DEPLOY", "v1")]
            assert day[2] == {"kind": "DEPLOY", "at": iso(now - 3600), "version": "v1", "author": "ci",
                              "description": "deployed v1", "link": "https://ci/1"}
            assert [x["kind"] for x in await changes(f'(from: "{iso(now - 4 * 86400)}")')][-1] == "INFRA"
            assert len(await changes(f'(from: "{iso(now - 2000)}", to: "{iso(now - 1000)}")')) == 1
            assert [x["version"] for x in await changes("(first: 1)")] == ["v2"]
            q = (f'{{ service(name: "checkout") {{ changes(from: "{iso(now)}", to: "{iso(now - 60)}") '
                 '{ kind } } }')
            err = (await c.post("/graphql", json={"query": q})).json()
            assert err["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    finally:
        await stores.close()
