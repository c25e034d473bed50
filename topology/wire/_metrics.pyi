"""Types of the native OTLP metrics decoder (topology/wire/native/metrics, Rust, built by setuptools-rust).

topology/wire/metric_columns.py documents the columns and wraps them."""

LAYOUT: int
POINT_BYTES: int

_Metric = tuple[str, str, int, int, int, int]

def decode(data: bytes) -> tuple[bytes, bytes, list[bytes], list[_Metric], list[bytes], bytes, list[bytes]]:
    """(points, buckets, resources, metrics, keys, key_metric, bounds); ValueError if prost refuses."""
