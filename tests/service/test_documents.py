"""Parsed documents are kept by query text; texts that do not parse are never kept and keep their code."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import parse

from service.documents import DocumentCache
from tests.service.conftest import Client


def codes(out: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in out["errors"]]


async def test_a_parse_error_keeps_its_code_every_time(client: Client) -> None:
    for _ in range(3):
        assert codes(await client.query("{ service(name: ")) == ["GRAPHQL_PARSE_FAILED"]
    ok = '{ service(name: "api") { name } }'
    for _ in range(3):
        assert await client.data(ok) == {"service": {"name": "api"}}


async def test_a_cached_document_still_obeys_validation_and_variables(client: Client) -> None:
    q = "query($n: String!) { service(name: $n) { name } }"
    assert await client.data(q, {"n": "api"}) == {"service": {"name": "api"}}
    unknown = await client.query(q, {"n": "nope"})  # a cached document with other variables
    assert unknown["data"] == {"service": None} and codes(unknown) == ["NOT_FOUND"]
    bad = "{ service(name: \"api\") { nosuchfield } }"
    for _ in range(2):
        assert codes(await client.query(bad)) == ["GRAPHQL_VALIDATION_FAILED"]


def test_the_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    cache = DocumentCache(2)
    keys = [cache.key(q, {"max_tokens": 10}) for q in ("{ a }", "{ b }", "{ c }")]
    for k in keys[:2]:
        cache.put(k, parse(k[0]))
    assert cache.get(keys[0]) is not None  # a is now the most recently used
    cache.put(keys[2], parse(keys[2][0]))
    assert len(cache) == 2
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    assert cache.get(cache.key("{ a }", {"max_tokens": 11})) is None  # other parse options: another key
    with pytest.raises(ValueError):
        DocumentCache(0)
