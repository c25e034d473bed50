"""Types of the native OTLP metrics decoder (topology/wire/native/metrics, Rust, built by setuptools-rust).

topology/wire/metric_columns.py documents the columns and wraps them."""

LAYOUT: int
POINT_BYTES: int

_Metric = tuple[str, str, int, int, int, int]

def decode(
    data: bytes, index: SeriesIndex | None = None
) -> tuple[bytes, bytes, list[bytes], list[_Metric], list[bytes], bytes, list[bytes]]:
    """(points, buckets, resources, metrics, keys, key_metric, bounds); ValueError if prost refuses."""

class SeriesIndex:
    """Series numbers by series key, kept across requests (see metric_columns.raw_columns)."""

    def __init__(self, names: list[str]) -> None: ...
    def insert(self, key: bytes, number: int) -> None: ...
    def forget(self, key: bytes) -> None: ...
    def __len__(self) -> int: ...
