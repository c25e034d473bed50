"""One owner per embedded data directory: a second opener is refused with the holder's name."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

from topology.store.embedded import DataDirLocked, open_stores

_HOLD = textwrap.dedent(
    """
    import sys, time
    from topology.store.embedded import open_stores
    stores = open_stores(sys.argv[1])
    print("opened", flush=True)
    time.sleep(120)
    """
)


def _holder(data_dir: pathlib.Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(data_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "opened", line
    return proc


def _db_mtimes(directory: pathlib.Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir() if p.suffix == ".db"}


async def test_a_second_open_in_the_same_process_is_refused_until_the_first_closes(
    tmp_path: pathlib.Path,
) -> None:
    first = open_stores(tmp_path)
    with pytest.raises(DataDirLocked) as err:
        open_stores(tmp_path)
    assert f"pid {os.getpid()}" in str(err.value)
    assert str(tmp_path) in str(err.value)
    await first.close()
    again = open_stores(tmp_path)
    await again.close()


async def test_another_process_holding_the_directory_is_named_and_its_death_frees_it(
    tmp_path: pathlib.Path,
) -> None:
    proc = _holder(tmp_path)
    try:
        with pytest.raises(DataDirLocked) as err:
            open_stores(tmp_path)
        assert err.value.holder["pid"] == proc.pid
        assert f"in use by pid {proc.pid}" in str(err.value)
        assert "stop that process or choose another data directory" in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)  # no clean close: the kernel drops the lock with the process
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    stores = open_stores(tmp_path)  # the stale lock file is no obstacle
    await stores.close()


async def test_a_refused_open_leaves_the_holders_files_untouched(tmp_path: pathlib.Path) -> None:
    first = open_stores(tmp_path)
    before = _db_mtimes(tmp_path)
    with pytest.raises(DataDirLocked):
        open_stores(tmp_path)
    after = _db_mtimes(tmp_path)
    assert before == after
    await first.close()
