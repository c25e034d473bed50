"""Types of the native OTLP spans decoder (topology/wire/native/spans, Rust, built by setuptools-rust)."""

LAYOUT: int
