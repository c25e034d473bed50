"""Types of the native OTLP metrics decoder (topology/wire/native/metrics, Rust, built by setuptools-rust).

topology/wire/metric_columns.py documents the columns and wraps them."""

LAYOUT: int
POINT_BYTES: int

_Metric = tuple[str, str, int, int, int, int]

def decode(data: bytes) -> tuple[bytes, bytes, list[bytes], list[_Metric], list[bytes], bytes, list[bytes]]:
    """(points, buckets, resources, metrics, keys, key_metric, bounds); ValueError if prost refuses."""

_Row = tuple[int, int, int, int, float, float, float, int, int, tuple[int, ...], int, int, tuple[int, ...],
             list[tuple[int, list[int], list[int], int, float]] | None]

class IpcCore:
    """The IPC stage 1's per-point work (topology/stages/ipc.py IpcStage1 drives it)."""

    def __init__(self, window_seconds: int, max_series: int, names: dict[str, float], units: dict[str, float],
                 bottom: int, top: int, collide: bool = False) -> None: ...
    def add(self, data: bytes, handler: object) -> None:
        """ValueError if prost refuses the request (nothing added then)."""
    def flush(self, watermark: float) -> list[_Row]:
        """Per finished accumulator with calls: (window, group, requests, errors, latency sum, first, last,
        protocol, lowest bucket, dense counts, zero count, their total, endpoints, exponential parts or
        None)."""
    def counters(self) -> dict[str, int]: ...
    def dump(self) -> bytes: ...
    @staticmethod
    def load(data: bytes) -> IpcCore: ...
    def __len__(self) -> int: ...
