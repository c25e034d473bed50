"""The I/O shell around bcc: load the program, drain the ring buffer, scan the connection table.

Draining reads the ring buffer's shared mapping in bulk (:mod:`agent.ringbuf`); the batch is one
numpy array, and nothing in the agent touches records one by one. (bcc's per-record callbacks are
the fallback where the mapping is refused.) Run :func:`agent.preflight.check` first: bcc's own
errors about privileges, tracefs or headers mislead.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from typing import Any

import numpy as np

from agent.btf import Btf, BtfError, CmdlineOffsets, NetnsOffsets, cmdline_offsets, netns_offsets
from agent.ledger import ConnArray
from agent.program import CONN, COUNTERS, KIND_CLOSE, ProgramConfig, source
from agent.ringbuf import RingReader

log = logging.getLogger("agent.tracer")


class Tracer:
    def __init__(self, config: ProgramConfig | None = None) -> None:
        from bcc import BPF  # type: ignore[import-untyped]  # Debian's python3-bpfcc (make agent-deps)

        netns: NetnsOffsets | None = None
        cmdline: CmdlineOffsets | None = None
        try:
            btf = Btf.from_kernel()
            netns, cmdline = netns_offsets(btf), cmdline_offsets(btf)
        except BtfError as e:
            log.warning("network namespaces and command lines from /proc only", extra={"reason": str(e)})
        self.netns_from_kernel = netns is not None
        self.bpf: Any = BPF(text=source(config or ProgramConfig(), netns, cmdline).encode())
        self._chunks: list[bytes] = []
        self._string_at = ctypes.string_at
        events = self.bpf[b"events"]
        self._reader: RingReader | None = None
        try:
            self._reader = RingReader(events.map_fd, (config or ProgramConfig()).ring_bytes, CONN.itemsize)
        except (OSError, ValueError) as e:  # no shared mapping: bcc's per-record callbacks instead
            log.warning("ring buffer read through bcc callbacks", extra={"reason": str(e)})
            events.open_ring_buffer(self._on_record)
        self._conns = self.bpf[b"conns"]
        self._counters = self.bpf[b"counters"]
        self._cmdlines = self.bpf[b"cmdlines"]

    def _on_record(self, _ctx: Any, data: Any, size: int) -> int:
        self._chunks.append(self._string_at(data, size))
        return 0

    def drain(self) -> ConnArray:
        """The close records written since the last drain."""
        if self._reader is not None:
            data = self._reader.read()
        else:
            self.bpf.ring_buffer_consume()
            data = b"".join(self._chunks)
            self._chunks.clear()
        if not data:
            return np.zeros(0, dtype=CONN)
        recs = np.frombuffer(data, dtype=CONN)
        closed: ConnArray = recs[recs["kind"] == KIND_CLOSE]
        return closed

    def table(self) -> ConnArray:
        """The kernel's table of open connections (a snapshot, read in batches)."""
        try:
            values = [bytes(v) for _, v in self._conns.items_lookup_batch()]
        except Exception:  # bcc raises a bare Exception when the kernel refuses batch lookups
            values = [bytes(v) for v in self._conns.values()]
        if not values:
            return np.zeros(0, dtype=CONN)
        return np.frombuffer(b"".join(values), dtype=CONN)

    def cmdline(self, pid: int) -> str | None:
        """The command line the kernel captured for ``pid`` (a process already gone), read once."""
        key = self._cmdlines.Key(pid)
        try:
            value = self._cmdlines[key]
        except KeyError:
            return None
        with contextlib.suppress(KeyError):
            del self._cmdlines[key]
        raw = bytes(value)[4 : 4 + value.len]  # struct cmd_t: u32 len, then the bytes
        return raw.rstrip(b"\x00").replace(b"\x00", b" ").decode("utf-8", "replace")

    def counters(self) -> dict[str, int]:
        """The kernel's counters (summed over CPUs), by name."""
        out = {}
        for i, name in enumerate(COUNTERS):
            per_cpu = self._counters[ctypes.c_int(i)]
            out[name] = int(sum(per_cpu))
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self.bpf.cleanup()
