"""Progress: a bar redrawn in place on a terminal, a log line every so often elsewhere."""

from __future__ import annotations

import io
import logging

import pytest

from service.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_redrawn() -> None:
    out, clock = Terminal(), Clock()
    bar = Progress("history", 30, "min", stream=out, clock=clock)
    for done in range(1, 31):
        clock.now += 1.0
        bar.update(done)
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 31 and text.count("\n") == 1 and text.endswith("\n")
    frames = text.rstrip("\n").split("\r")[1:]
    assert frames[0].startswith("history [#") and " 1/30 min  eta 29s" in frames[0]
    assert frames[-1].startswith("history [" + "#" * 30 + "] 100%  30/30 min")


def test_elsewhere_a_log_line_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    out, clock = io.StringIO(), Clock()
    bar = Progress("simulate", 100, "min", stream=out, every=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="topology.progress"):
        for done in range(1, 101):
            clock.now += 1.0  # 100 s in all: one line per 10 s
            bar.update(done)
        bar.close()
    assert out.getvalue() == ""
    lines = [r for r in caplog.records if r.getMessage() == "progress"]
    assert [r.__dict__["done"] for r in lines] == [10.0 * i for i in range(1, 11)]
    assert lines[0].__dict__["percent"] == 10 and lines[0].__dict__["eta_s"] == 90
    assert {r.__dict__["task"] for r in lines} == {"simulate"}
