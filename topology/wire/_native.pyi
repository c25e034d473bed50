"""Types of the native OTLP decoders (topology/wire/native, Rust, built by setuptools-rust)."""

LAYOUT: int
