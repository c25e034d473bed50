"""A stop never hangs: a shutdown that outlives ``SHUTDOWN_LIMIT`` dumps every thread's stack and
exits 1; a second signal stops the process at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

# The process stands in for a server whose shutdown is stuck: uvicorn has stopped and raised the
# signal again for our handler (what `signal.raise_signal` does here), then the shutdown never ends.
_STUCK = textwrap.dedent("""
    import signal, sys, threading, time
    import service.server as server
    server.SHUTDOWN_LIMIT = {limit}
    server._stop_gracefully()
    def stuck_in_shutdown():
        threading.Event().wait()
    threading.Thread(target=stuck_in_shutdown, name="stuck-worker").start()
    signal.raise_signal(signal.SIGINT)
    print("shutting down", flush=True)
    while True:
        time.sleep(0.05)
""")


def _run(limit: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _STUCK.format(limit=limit)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_stuck_shutdown_dumps_every_thread_and_exits_1() -> None:
    proc = _run(1.0)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (proc.returncode, err[-2000:])
    assert "shutting down" in out
    assert "Timeout" in err and "stuck_in_shutdown" in err, err[-2000:]  # faulthandler's dump, all threads


def test_a_second_signal_stops_at_once() -> None:
    proc = _run(3600.0)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "shutting down"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT
