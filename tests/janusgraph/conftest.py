"""Fixtures for tests against the real JanusGraph Server (`make janusgraph` starts it).

The server is found through ``JANUSGRAPH_URL`` (default ``ws://127.0.0.1:18182/gremlin``). When it
does not answer, tests call ``tests.conftest.require(False, ...)``: skipped on a developer machine,
a failure with ``CI=true``.
"""

from __future__ import annotations

import concurrent.futures
import os

import pytest

from tests.conftest import require

DEFAULT_URL = "ws://127.0.0.1:18182/gremlin"
SOURCES = ("g_network", "g_ipc", "g_trace", "g_catalog")


def server_url() -> str:
    return os.environ.get("JANUSGRAPH_URL", DEFAULT_URL)


def _answers(url: str) -> str | None:
    """None when every traversal source answers a Gremlin request, else why not."""
    from gremlin_python.driver.client import Client

    client = Client(url, "g_network", pool_size=1)
    try:
        for source in SOURCES:
            got = client.submit(f"{source}.inject(1).count()").all().result(timeout=10)
            if got != [1]:
                return f"{source} answered {got!r}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    finally:
        client.close()
    return None


@pytest.fixture(scope="session")
def janusgraph_url() -> str:
    url = server_url()
    # gremlinpython runs a private event loop per connection: keep it off any running loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        why = pool.submit(_answers, url).result(timeout=60)
    require(why is None, f"JanusGraph server at {url} ({why})")
    return url
