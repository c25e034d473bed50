"""What has been reported of each open connection, so that every byte is reported exactly once.

A connection that closes within one reporting interval is reported once, by its close record
(totals from the kernel): scans leave connections younger than ``min_age`` alone, so a short
connection is never one record from a scan plus one from its close. A longer one is also reported by
the interval scans of the kernel's connection table: each scan reports the bytes since the previous
report, and the close record then carries only what is left. The kernel always hands over running
totals; the deltas are taken here, so a close racing with a scan can neither lose nor double a byte.

A connection is identified by (socket address, start time): the kernel reuses socket addresses.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ConnArray = npt.NDArray[np.void]  # agent.program.CONN records


class Ledger:
    def __init__(self) -> None:
        # (sk, start_ns) -> (sent, received, reported until ns, scans since last seen open)
        self._reported: dict[tuple[int, int], list[int]] = {}

    def __len__(self) -> int:
        return len(self._reported)

    def closed(self, events: ConnArray) -> ConnArray:
        """Close records with only the bytes not reported yet, starting where the last report ended."""
        if not self._reported or not len(events):
            return events
        out = events.copy()
        sks, starts = out["sk"].tolist(), out["start_ns"].tolist()
        for i, key in enumerate(zip(sks, starts, strict=True)):
            prev = self._reported.pop(key, None)
            if prev is not None:
                out["sent"][i] -= prev[0]
                out["received"][i] -= prev[1]
                out["start_ns"][i] = max(starts[i], prev[2])
        return out

    def scan(self, conns: ConnArray, now_ns: int, min_age_ns: int = 0) -> ConnArray:
        """Interval records for the open, established connections of a table scan that started at
        least ``min_age_ns`` ago: a connection's first scan reports it (even idle), later scans report
        it when it moved bytes."""
        est = conns[(conns["established"] == 1) & (conns["start_ns"] <= max(0, now_ns - min_age_ns))]
        keep = np.zeros(len(est), dtype=bool)
        out = est.copy()
        seen: set[tuple[int, int]] = set()
        sent, received, last = est["sent"].tolist(), est["received"].tolist(), est["last_ns"].tolist()
        for i, key in enumerate(zip(est["sk"].tolist(), est["start_ns"].tolist(), strict=True)):
            seen.add(key)
            prev = self._reported.get(key)
            if prev is not None:
                prev[3] = 0
                if sent[i] == prev[0] and received[i] == prev[1]:
                    prev[2] = now_ns  # nothing moved until now: the next bytes come after it
                    continue
                out["sent"][i] -= prev[0]
                out["received"][i] -= prev[1]
                out["start_ns"][i] = prev[2]
            keep[i] = True
            start = int(out["start_ns"][i])
            out["end_ns"][i] = max(start, last[i])
            self._reported[key] = [sent[i], received[i], now_ns, 0]
        # A connection missing from a scan closed; its close record pops it. One missing twice had its
        # close record lost (counted in the kernel): forget it.
        for key in [k for k, v in self._reported.items() if k not in seen]:
            entry = self._reported[key]
            entry[3] += 1
            if entry[3] > 1:
                del self._reported[key]
        live: ConnArray = out[keep]
        return live
