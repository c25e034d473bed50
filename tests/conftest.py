"""Shared test helpers.

Real components (Kafka, JanusGraph, Chromium, the npm gateway, bcc) are started by `make test`.
A test that needs one calls :func:`require`: on a developer's machine a missing component skips
the test with the reason; with ``CI=true`` it fails instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, what: str) -> None:
    """Skip (developer machine) or fail (CI) when a real component is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI=true forbids skipping it", pytrace=False)
    pytest.skip(f"{what} is missing (run `make test`, which starts it)")
