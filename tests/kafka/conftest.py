"""Fixtures for tests against the real Kafka broker (``make kafka`` starts it).

The broker is found through ``KAFKA_BOOTSTRAP`` (default ``127.0.0.1:19092``, the port
``docker/kafka/dev.sh`` uses). When it does not answer, tests call
:func:`tests.conftest.require`, which skips locally and fails with ``CI=true``.

Every test works on its own topics (unique names), so tests never see each other's records and
can run against a broker that other tests or a developer are using at the same time.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from tests.conftest import require

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"

TopicFactory = Callable[..., Awaitable[str]]


def bootstrap_address() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)


async def broker_answers(bootstrap: str, wait: float = 5.0) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within ``wait`` seconds."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(wait * 1000))
    try:
        await asyncio.wait_for(admin.start(), wait)
        await asyncio.wait_for(admin.list_topics(), wait)
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


def unique_name(label: str) -> str:
    """A topic-safe unique name: ``t-<label>-<8 hex>`` (label cut to Kafka's allowed characters)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")[:80] or "topic"
    return f"t-{clean}-{uuid.uuid4().hex[:8]}"


async def create_topics(bootstrap: str, names: dict[str, int], config: dict[str, str] | None = None) -> None:
    """Create topics ``{name: partitions}`` (replication factor 1) and wait until they have leaders."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, p, 1, topic_configs=dict(config or {})) for n, p in names.items()], timeout_ms=10_000
        )
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    if not names:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.delete_topics(names, timeout_ms=10_000)
    except KafkaError:
        pass  # best effort: unique names never collide with later tests
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of a broker that answers; skips (or fails in CI) otherwise."""
    addr = bootstrap_address()
    require(asyncio.run(broker_answers(addr)), f"Kafka broker at {addr}")
    return addr


@pytest.fixture
def topic_label(request: pytest.FixtureRequest) -> str:
    """A prefix for this test's topics and consumer groups: ``t-<test name>-<random>``."""
    return unique_name(request.node.name)


@pytest.fixture
async def new_topic(kafka_bootstrap: str, topic_label: str) -> AsyncIterator[TopicFactory]:
    """``await new_topic("orders", partitions=3)`` creates a unique topic; all are deleted afterwards."""
    created: list[str] = []

    async def make(label: str = "topic", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{topic_label}.{label}"
        await create_topics(kafka_bootstrap, {name: partitions}, config)
        created.append(name)
        return name

    yield make
    await delete_topics(kafka_bootstrap, created)
