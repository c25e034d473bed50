"""The native OTLP decoders (topology/wire/native) are built by the install. They are optional in
pyproject.toml so that an install without a Rust toolchain still works (on the Python decoders); CI
must not quietly run without them, so there a missing module fails."""

from __future__ import annotations

import importlib
import os

import pytest


@pytest.mark.parametrize("module", ["topology.wire._spans", "topology.wire._metrics"])
def test_the_native_decoder_is_built(module: str) -> None:
    try:
        native = importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"{module} is not built (is cargo on PATH for `make install`?)") from exc
        pytest.skip(f"{module} is not built: {exc}")
    assert isinstance(native.LAYOUT, int) and native.LAYOUT >= 1
