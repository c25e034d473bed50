"""One SQLite database file of the embedded store: a writer and a reader connection, each on its own thread.

WAL mode lets the reader see the last committed state while the writer works; both run off the
event loop (``sqlite3`` releases the GIL inside SQLite), so a long write does not stall queries.
``synchronous=NORMAL``: a committed write survives a crash of the process; the last transactions
may be lost on power failure (the pipeline replays them: writes are idempotent).
"""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from topology.model import Layer
from topology.store.base import StoreUnavailable

T = TypeVar("T")


def connect(path: pathlib.Path, cache_mib: int = 16, page_size: int | None = None) -> sqlite3.Connection:
    """A connection with the store's settings; ``page_size`` applies only to a database being created
    (an existing file keeps its pages)."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if page_size is not None:
        conn.execute(f"PRAGMA page_size={int(page_size)}")  # before WAL mode and the first table
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA journal_size_limit=67108864")  # the WAL shrinks back to 64 MiB after checkpoints
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute(f"PRAGMA cache_size=-{cache_mib * 1024}")  # page cache, per connection
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class Database:
    """A SQLite file with schema ``schema`` (idempotent DDL), opened synchronously. ``page_size``: the
    page size of a new file (SQLite's default, 4 KB, if None)."""

    def __init__(
        self, path: pathlib.Path, schema: str, layer: Layer | None, page_size: int | None = None
    ) -> None:
        self.path = path
        self.layer = layer
        try:
            self.writer = connect(path, page_size=page_size)
            self.writer.executescript(schema)
            self.reader = connect(path)
        except sqlite3.Error as e:
            raise StoreUnavailable(layer, f"cannot open {path}: {e}") from e
        self._wpool = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-w-{path.stem}")
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix=f"sqlite-r-{path.stem}")
        self.closed = False

    def _check(self) -> None:
        if self.closed:
            raise StoreUnavailable(self.layer, f"{self.path.name} is closed")

    async def write(self, fn: Callable[[sqlite3.Connection], T], undo: Callable[[], None] | None = None) -> T:
        """Run ``fn`` inside one transaction on the writer thread; ``undo`` if it does not commit."""
        self._check()

        def run() -> T:
            conn = self.writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if undo is not None:
                    undo()
                raise
            return result

        try:
            return await asyncio.get_running_loop().run_in_executor(self._wpool, run)
        except sqlite3.OperationalError as e:  # disk full, I/O error, locked by another process...
            raise StoreUnavailable(self.layer, f"{self.path.name}: {e}") from e
        except RuntimeError as e:
            if self.closed:  # closed meanwhile: the pool refuses work
                raise StoreUnavailable(self.layer, f"{self.path.name} is closed") from e
            raise

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the reader connection (its own thread, a consistent snapshot per statement)."""
        self._check()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._rpool, fn, self.reader)
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(self.layer, f"{self.path.name}: {e}") from e
        except RuntimeError as e:
            if self.closed:
                raise StoreUnavailable(self.layer, f"{self.path.name} is closed") from e
            raise

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wpool.shutdown(wait=True)
        self._rpool.shutdown(wait=True)
        self.reader.close()
        self.writer.close()
