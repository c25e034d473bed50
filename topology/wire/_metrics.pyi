"""Types of the native OTLP metrics decoder (topology/wire/native/metrics, Rust, built by setuptools-rust)."""

LAYOUT: int
