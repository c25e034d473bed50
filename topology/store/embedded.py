"""The embedded store (the default backend): SQLite files on local disk, answered from memory.

``open_stores(data_dir)`` creates ``data_dir`` and opens four physically separate databases:
``network.db``, ``ipc.db``, ``trace.db`` (one :class:`~topology.store.base.LayerStore` each) and
``catalog.db`` (the :class:`~topology.store.base.CatalogStore`). Everything persists: reopening
the directory gives the same answers. See ``embedded_layer.py`` for storage and memory layout.
"""

from __future__ import annotations

import pathlib

from topology.model import ALL_LAYERS, Layer
from topology.store.base import LayerStore, Stores
from topology.store.embedded_catalog import EmbeddedCatalogStore
from topology.store.embedded_layer import DEFAULT_HOT_MINUTES, EmbeddedLayerStore
from topology.store.embedded_lock import DataDirLocked, DirectoryLock
from topology.timewindow import Retention

__all__ = ["DataDirLocked", "EmbeddedCatalogStore", "EmbeddedLayerStore", "layer_file", "open_stores"]


def layer_file(layer: Layer) -> str:
    return f"{layer.value.lower()}.db"


_DEFAULT_RETENTION = Retention()


def open_stores(
    data_dir: str | pathlib.Path,
    retention: Retention = _DEFAULT_RETENTION,
    hot_minutes: int = DEFAULT_HOT_MINUTES,
) -> Stores:
    """Open (creating if needed) the embedded stores in ``data_dir``, which this process then owns
    until the stores close (a second opener gets :class:`DataDirLocked` naming the holder).

    ``hot_minutes``: how many recent minute windows per edge are held in memory for fast stats
    (0: none, every stats look-up reads SQLite).
    """
    root = pathlib.Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(root).acquire()  # raises DataDirLocked naming the holder
    layers: dict[Layer, LayerStore] = {}
    try:
        for layer in ALL_LAYERS:
            layers[layer] = EmbeddedLayerStore(root / layer_file(layer), layer, retention, hot_minutes)
        catalog = EmbeddedCatalogStore(root / "catalog.db", retention)
    except BaseException:
        for s in layers.values():
            assert isinstance(s, EmbeddedLayerStore)
            s.close_now()
        lock.release()
        raise
    return Stores(layers=layers, catalog=catalog, on_close=lock.release)
