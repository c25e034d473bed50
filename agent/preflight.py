"""Checks before loading anything: one message that says what is missing and how to fix it.

bcc's own failures mislead: without privileges it reports "Need super-user privileges" or an
"incomplete definition of type 'struct tracepoint__sock__...'", without tracefs the latter too,
without headers "Unable to find kernel headers". The agent checks, in order:

1. privileges: root, or the capabilities CAP_BPF and CAP_PERFMON (effective);
2. tracefs mounted (``/sys/kernel/tracing``, or the older ``/sys/kernel/debug/tracing``);
3. kernel headers at ``/lib/modules/$(uname -r)/build`` (bcc compiles the program against them);
4. the tracepoints the program attaches to;
5. Debian's bcc bindings importable.

Every problem found is listed, each with its fix (``make agent-deps`` prepares 2, 3 and 5).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.program import TRACEPOINTS

CAP_PERFMON = 38
CAP_BPF = 39
TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))


class PreflightError(RuntimeError):
    """The agent cannot load its BPF program here; ``str()`` is the message for the user."""


@dataclass(frozen=True, slots=True)
class Environment:
    """What the checks look at (tests replace parts of it)."""

    proc_status: Path = Path("/proc/self/status")
    mountinfo: Path = Path("/proc/self/mountinfo")
    tracefs: tuple[Path, ...] = TRACEFS
    modules: Path = Path("/lib/modules")
    release: str = os.uname().release
    bcc_module: str = "bcc"


def effective_caps(status_text: str) -> int:
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def tracefs_mounts(env: Environment) -> list[Path]:
    """Mount points of tracefs among the expected ones, from the mount table (readable by anyone)."""
    try:
        lines = env.mountinfo.read_text().splitlines()
    except OSError:
        return []
    points = set()
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields = pre.split()
        if post.split()[:1] == ["tracefs"] and len(fields) > 4:
            points.add(Path(fields[4]))
    return [p for p in env.tracefs if p in points]


def problems(env: Environment | None = None) -> list[str]:
    env = env or Environment()
    out: list[str] = []
    try:
        caps = effective_caps(env.proc_status.read_text())
    except OSError:
        caps = 0
    missing = [name for bit, name in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"))
               if not caps >> bit & 1]
    if missing and os.geteuid() != 0:
        out.append(f"not enough privileges: running as uid {os.geteuid()} without {' and '.join(missing)}; "
                   "run the agent as root, or grant it CAP_BPF and CAP_PERFMON (with read access to "
                   "tracefs), e.g. `sudo topology agent ...`")
    elif missing:
        out.append(f"not enough privileges: root, but {' and '.join(missing)} are not effective "
                   "(a restricted container?); grant CAP_BPF and CAP_PERFMON")
    mounted = tracefs_mounts(env)
    tracefs = next((p for p in mounted if os.access(p / "events", os.R_OK | os.X_OK)), None)
    if not mounted:
        out.append(f"tracefs is not mounted (looked for it at {', '.join(str(p) for p in env.tracefs)}); "
                   "mount it with `mount -t tracefs nodev /sys/kernel/tracing` or run `make agent-deps`")
    elif tracefs is None:
        out.append(f"tracefs at {mounted[0]} is not readable by uid {os.geteuid()}; run the agent as root "
                   "or give it read access to tracefs")
    headers = env.modules / env.release / "build"
    if not (headers / "include").is_dir():
        out.append(f"kernel headers not found at {headers}; install linux-headers-amd64 and link it there "
                   "(`make agent-deps` does both)")
    if tracefs is not None:
        absent = [tp for tp in TRACEPOINTS if not (tracefs / "events" / tp / "format").exists()]
        if absent:
            out.append(f"tracepoints missing from this kernel: {', '.join(absent)} "
                       "(sock_send_length and sock_recv_length need Linux 6.3 or later)")
    if importlib.util.find_spec(env.bcc_module) is None:
        out.append("the bcc Python bindings are not importable; install python3-bpfcc and make them "
                   "visible to this Python (`make agent-deps` adds a .pth file to the venv)")
    return out


def check(env: Environment | None = None) -> None:
    """Raise :class:`PreflightError` listing every problem, or return if the agent can load."""
    found = problems(env)
    if found:
        raise PreflightError(message(found))


def message(found: Iterable[str]) -> str:
    lines = list(found)
    return "topology agent cannot start:\n" + "\n".join(f"  - {p}" for p in lines)
