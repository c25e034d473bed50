"""Fixtures of the broker-free stage-spec tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from topology.store.base import Stores
from topology.store.embedded import open_stores


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    """Empty embedded stores for the terminal specs (stage 3, meta) to write to."""
    s = open_stores(tmp_path / "store")
    yield s
    await s.close()
