"""The agent says what is missing, in one message, before bcc can mislead: run for real without
privileges (setpriv), without tracefs (a private mount namespace) and without headers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.preflight import Environment, problems
from tests.agent.conftest import ROOT
from tests.conftest import require

pytestmark = pytest.mark.bpf

AGENT = [sys.executable, "-m", "agent", "--http", "http://127.0.0.1:9"]
TOPOLOGY_AGENT = [sys.executable, "-m", "service.cli", "agent", "--http", "http://127.0.0.1:9"]


def run(prefix: list[str], command: list[str] = AGENT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def root_tools() -> None:
    require(os.geteuid() == 0, "root (to drop privileges and make mount namespaces)")
    require(bool(shutil.which("setpriv")) and bool(shutil.which("unshare")), "setpriv and unshare")


@pytest.mark.parametrize("command", [AGENT, TOPOLOGY_AGENT], ids=["python -m agent", "topology agent"])
def test_unprivileged(command: list[str]) -> None:
    root_tools()
    # CAP_DAC_READ_SEARCH (ambient) only so that uid 65534 can read the checkout and its venv wherever
    # they are (a clone under a 0700 directory); the agent's check is about CAP_BPF and CAP_PERFMON.
    r = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search"], command)
    assert r.returncode == 3, r.stderr
    assert r.stderr.startswith("topology agent cannot start:\n")
    assert "not enough privileges: running as uid 65534 without CAP_BPF and CAP_PERFMON; run the agent as " \
           "root, or grant it CAP_BPF and CAP_PERFMON" in r.stderr
    assert "Traceback" not in r.stderr and "incomplete definition" not in r.stderr


def test_without_tracefs() -> None:
    root_tools()
    require(any((p / "events").is_dir() for p in (Path("/sys/kernel/tracing"),)), "tracefs (make agent-deps)")
    script = ("umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; "
              "exec \"$@\"")
    r = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"])
    assert r.returncode == 3, r.stderr
    assert ("tracefs is not mounted (looked for it at /sys/kernel/tracing, /sys/kernel/debug/tracing); "
            "mount it with `mount -t tracefs nodev /sys/kernel/tracing` or run `make agent-deps`") in r.stderr
    assert "not enough privileges" not in r.stderr
    assert (Path("/sys/kernel/tracing") / "events").is_dir(), "the host's tracefs must stay mounted"


def test_without_headers() -> None:
    root_tools()
    script = "mount -t tmpfs none /lib/modules && exec \"$@\""
    r = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"])
    assert r.returncode == 3, r.stderr
    assert f"kernel headers not found at /lib/modules/{os.uname().release}/build; install " \
           "linux-headers-amd64 and link it there (`make agent-deps` does both)" in r.stderr


def test_everything_missing_is_listed_at_once(tmp_path: Path) -> None:
    env = Environment(proc_status=tmp_path / "status", mountinfo=tmp_path / "mountinfo",
                      tracefs=(tmp_path / "tracing",), modules=tmp_path, release="9.9.9",
                      bcc_module="no_such_bcc_module")
    (tmp_path / "status").write_text("Name:\tx\nCapEff:\t0000000000000000\n")
    (tmp_path / "mountinfo").write_text("")
    found = problems(env)
    if os.geteuid() == 0:  # root without the capabilities: said as such
        assert found[0].startswith("not enough privileges: root, but CAP_BPF and CAP_PERFMON are not "
                                   "effective")
    assert [p.split(" ")[0] for p in found[1:]] == ["tracefs", "kernel", "the"]
    assert "python3-bpfcc" in found[-1]
