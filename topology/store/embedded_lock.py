"""One owner per embedded data directory.

The embedded store keeps an in-memory index of what it wrote, so a second process writing the same
SQLite files would leave both with a wrong picture (and interleave their windows). ``open_stores``
therefore takes an exclusive ``flock`` on ``<data_dir>/LOCK`` and keeps it until the stores close.
The lock file says who holds it (pid, host, command line, since when), so the second process can
name the holder in its error. ``flock`` locks die with their process: a crashed owner leaves a
stale file behind but no stale lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import socket
import sys
import time
from typing import Any

from topology.store.base import StoreError

__all__ = ["DataDirLocked", "DirectoryLock"]

LOCK_FILE = "LOCK"


class DataDirLocked(StoreError):
    """Another process (or another open in this one) holds the data directory."""

    def __init__(self, directory: pathlib.Path, holder: dict[str, Any]) -> None:
        who = f"pid {holder.get('pid', '?')}"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("command"):
            who += f" ({holder['command']})"
        if isinstance(holder.get("since"), (int, float)):
            who += f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['since']))}"
        super().__init__(
            f"the data directory {directory} is in use by {who}; stop that process or choose another "
            f"data directory"
        )
        self.directory = directory
        self.holder = holder


class DirectoryLock:
    """An exclusive, non-blocking lock on a directory, released by :meth:`release` or process exit."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirLocked(self.directory, holder) from None
        except BaseException:
            os.close(fd)
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
            "since": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the holder's details go with the lock
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        doc = json.loads(raw.decode("utf-8")) if raw else {}
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
