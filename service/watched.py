"""A file whose parsed contents follow the file: the token file and a JWKS file are read this way.

:attr:`WatchedFile.current` costs one ``stat`` and re-parses only when the file's inode, size or
modification time changed, so a file replaced with ``mv`` (atomic) takes effect on the next request.
The first read is strict (an error the caller reports before the server listens); a later file that
cannot be read or parsed keeps the previous contents and logs why, except a file that is gone: then
``empty`` is served (a revoked credential must not outlive its file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["WatchedFile"]

log = logging.getLogger("service.watched")

T = TypeVar("T")


class WatchedFile(Generic[T]):
    def __init__(self, path: str | os.PathLike[str], parse: Callable[[Path, bytes], T], empty: T,
                 what: str) -> None:
        """``parse(path, data)`` raises ValueError (or OSError) for contents it refuses; ``what``
        names the setting in messages (e.g. ``TOPOLOGY_TOKENS_FILE``)."""
        self.path = Path(path)
        self._parse = parse
        self._empty = empty
        self._what = what
        self._stamp: tuple[int, int, int] | None = None
        self._value = empty
        try:
            self._load()
        except (OSError, ValueError) as e:
            raise ValueError(f"{what}: {e}") from None

    @property
    def current(self) -> T:
        try:
            st = self.path.stat()
        except OSError as e:
            if self._stamp is not None:
                log.error("file unreadable; serving nothing from it until it is back",
                          extra={"setting": self._what, "path": str(self.path), "error": str(e)})
                self._stamp, self._value = None, self._empty
            return self._value
        if (st.st_ino, st.st_size, st.st_mtime_ns) != self._stamp:
            try:
                self._load()
            except (OSError, ValueError) as e:
                log.error("file not reloaded; keeping what it said before",
                          extra={"setting": self._what, "path": str(self.path), "error": str(e)})
                # Not retried on every request: the next change of the file is.
                self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        return self._value

    def _load(self) -> None:
        st = self.path.stat()
        self._value = self._parse(self.path, self.path.read_bytes())
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        log.info("file loaded", extra={"setting": self._what, "path": str(self.path)})
