"""What the agent knows about a local process: read from ``/proc`` once per process, cached.

The kernel hands over a pid, the process name (``comm``), its cgroup v2 id and the socket's
network namespace. Everything else (command line, cgroup path) is read from ``/proc/<pid>``. A
process may exit before it is looked up: then the facts from the kernel are all there is: the
command line the BPF program captured at the process's first connection (``kernel_cmdline``), and
the cgroup path if another process of the same cgroup was read before (cgroup ids are remembered).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_NETNS_LINK = re.compile(r"net:\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    comm: str
    cmdline: str  # arguments joined by spaces; "" if the process was gone
    cgroup: str  # cgroup path ("/kubepods.slice/..."); "" if unknown
    netns: int  # network namespace inode; 0 if unknown
    alive: bool  # False: only the kernel's facts were available
    started: float | None = None  # epoch seconds (with pid, the identity of a process)


def read_cgroup(text: str) -> str:
    """The cgroup v2 path from ``/proc/<pid>/cgroup`` (the ``0::`` line), else the first path."""
    first = ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            return parts[2]
        first = first or parts[2]
    return first


class Processes:
    """pid -> :class:`Process`, bounded, with cgroup id -> path remembered for exited processes."""

    def __init__(self, proc: Path = _PROC, capacity: int = 16_384,
                 kernel_cmdline: Callable[[int], str | None] | None = None) -> None:
        self.proc = proc
        #: The command line the kernel kept for a process that exited before /proc was read.
        self.kernel_cmdline = kernel_cmdline
        self.capacity = capacity
        self._cache: OrderedDict[tuple[int, str], Process] = OrderedDict()
        self._cgroups: dict[int, str] = {}
        self.reads = 0
        self.gone = 0

    def get(self, pid: int, comm: str, cgroup_id: int = 0, netns: int = 0) -> Process:
        """The process ``pid`` whose kernel name is ``comm`` (a pid reused by another program differs)."""
        key = (pid, comm)
        p = self._cache.get(key)
        if p is not None:
            self._cache.move_to_end(key)
            return p
        p = self._read(pid, comm, cgroup_id, netns)
        self._cache[key] = p
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return p

    def forget(self, pid: int) -> None:
        for key in [k for k in self._cache if k[0] == pid]:
            del self._cache[key]

    def alive(self, pid: int) -> bool:
        return pid > 0 and (self.proc / str(pid)).exists()

    def _read(self, pid: int, comm: str, cgroup_id: int, netns: int) -> Process:
        self.reads += 1
        base = self.proc / str(pid)
        try:
            raw = (base / "cmdline").read_bytes()
            cgroup = read_cgroup((base / "cgroup").read_text())
            if not netns:
                m = _NETNS_LINK.match(os.readlink(base / "ns" / "net"))
                netns = int(m.group(1)) if m else 0
        except OSError:
            self.gone += 1
            cmdline = (self.kernel_cmdline(pid) if self.kernel_cmdline else None) or ""
            return Process(pid, comm, cmdline, self._cgroups.get(cgroup_id, ""), netns, False)
        if cgroup_id and cgroup:  # the kernel's id of this process's cgroup: remembered for exited ones
            self._cgroups.setdefault(cgroup_id, cgroup)
        if not raw and self.kernel_cmdline:
            # An empty command line: a process that has exited and waits to be reaped (its memory is
            # gone, its /proc directory not yet): a short-lived client read right after its close.
            gone = self.kernel_cmdline(pid)
            if gone:
                self.gone += 1
                return Process(pid, comm, gone, cgroup, netns, False)
        cmdline = raw.rstrip(b"\x00").replace(b"\x00", b" ").decode("utf-8", "replace")
        return Process(pid, comm, cmdline, cgroup, netns, True, self.start_time(pid))

    def start_time(self, pid: int) -> float | None:
        """When ``pid`` started (epoch seconds), or None if it is gone."""
        try:
            stat = (self.proc / str(pid) / "stat").read_text()
            boot = _boot_time(self.proc)
        except OSError:
            return None
        fields = stat[stat.rfind(")") + 2 :].split()
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _boot_time(proc: Path) -> float:
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


class NetnsNames:
    """Named network namespaces (``/run/netns/NAME``, as ``ip netns add`` makes them) by inode."""

    def __init__(self, directory: Path = Path("/run/netns")) -> None:
        self.directory = directory
        self._by_inode: dict[int, str] = {}

    def refresh(self) -> None:
        names: dict[int, str] = {}
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            entries = []
        for entry in entries:
            try:
                names[entry.stat().st_ino] = entry.name
            except OSError:
                continue
        self._by_inode = names

    def name(self, inode: int) -> str | None:
        if inode and inode not in self._by_inode:
            self.refresh()
        return self._by_inode.get(inode)
