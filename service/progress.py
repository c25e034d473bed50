"""Progress of a long task: a bar on a terminal, a log line now and then otherwise.

``Progress("history", total=35, unit="min")`` then ``update(done)`` as the work moves and ``close()``
at the end. On a terminal (stderr is a TTY) one line is redrawn in place at most ten times a second;
elsewhere (a file, a container log) an INFO line ``progress`` with ``done``, ``total``, ``percent`` and
``eta_s`` is logged every ``every`` seconds, so logs stay a few lines long.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]

log = logging.getLogger("topology.progress")

_WIDTH = 30
_REDRAW = 0.1


class Progress:
    def __init__(self, what: str, total: float, unit: str, *, stream: TextIO | None = None,
                 every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.total = max(total, 1e-9)
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.clock = clock
        self.began = clock()
        self.shown = self.began
        self.done = 0.0

    def _eta(self) -> float | None:
        elapsed = self.clock() - self.began
        if self.done <= 0:
            return None
        return max(0.0, elapsed * (self.total - self.done) / self.done)

    def update(self, done: float) -> None:
        self.done = min(done, self.total)
        now = self.clock()
        if now - self.shown < (_REDRAW if self.tty else self.every):
            return
        self.shown = now
        if self.tty:
            self._draw()
        else:
            eta = self._eta()
            log.info("progress", extra={"task": self.what, "done": round(self.done, 1),
                                        "total": round(self.total, 1), "unit": self.unit,
                                        "percent": round(100 * self.done / self.total),
                                        "eta_s": None if eta is None else round(eta)})

    def _draw(self, end: str = "") -> None:
        part = self.done / self.total
        bar = "#" * round(part * _WIDTH)
        eta = self._eta()
        tail = "" if eta is None or end else f"  eta {eta:.0f}s"
        self.stream.write(f"\r{self.what} [{bar:<{_WIDTH}}] {part:4.0%}  {self.done:.0f}/{self.total:.0f} "
                          f"{self.unit}{tail}\033[K{end}")
        self.stream.flush()

    def close(self) -> None:
        self.done = self.total
        if self.tty:
            self._draw(end="\n")
