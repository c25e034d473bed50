"""Stage 3 (every layer): merge edge partials into complete windows and add edge health.

Input: :class:`EdgePartial` records of any layer. Output: :class:`EdgeWindow` records, one per
(edge, window), which the stores *upsert* (a window replaces the stored one with the same key).

* Partials of the same edge, window and :class:`Side` are added (``EdgeStats.merge``); the sides
  CLIENT, SERVER and PAIR are then combined with ``EdgeStats.merge_max``, so traffic reported by
  both of its ends is counted once.
* A window is emitted when its end is at or before the watermark. Partials that arrive later for
  an emitted window, within ``grace_seconds`` after its end, re-open it: the next flush emits the
  whole window again (kept in memory), so the store's replace-on-upsert stays correct.
* Later partials (the window is forgotten: what it held is in the store only) *merge*: while the
  window starts less than ``late_seconds`` before the watermark (the store's retention of minute
  windows; 0 turns merging off), they gather in a late part of their own that :meth:`take_late`
  hands out once, to be added to the stored window (:meth:`LayerStore.merge_windows`), never to
  replace it: the earlier part stays and nothing is counted twice (``late_merged`` counts them).
  Older partials are dropped and counted (``late_dropped``: reason ``too_late`` on ``/metrics``).
  A late part is the late traffic alone, sides combined as above: traffic whose one end reported
  in time and whose other end reported late is counted from both (NETWORK, IPC; TRACE pairs are
  one observation). Windows ending at or before ``floor`` are only ever merged (a stage started over
  a store that may hold them: :meth:`Pipeline.resume`).
* Partials in finer windows than ``window_seconds`` (a divisor of it) fall into the window that
  holds their start; partials of coarser or misaligned windows are dropped and counted.

Provisional windows (``flush(..., provisional=True)``, for freshness): windows still open are
emitted as they stand so far, and the complete window replaces them when it closes. Only *new* edges
are emitted provisionally (not emitted in this window or the window before): that is what makes a
new edge visible, while an edge already stored for the previous window is emitted once, complete,
when its window closes. Later versions of a provisional window are held back and emitted at most
every ``refresh_seconds`` of event time, so a busy layer does not rewrite open windows each time
more partials come. A version equal to the one last emitted for its window (a provisional window
that closes as it was emitted, a refresh that found nothing new) is not emitted again: the stored
one stands (``unchanged`` counts them; the version emitted last is not checkpointed, so a restored
stage emits its next version of each window). The bookkeeping of a window is dropped once the window
after it has closed; it is part of the state, so a restored stage goes on as if it had never stopped
(but for that). The in-process
pipeline and the Kafka stage-3 worker both follow these rules through this class.

Edge health (``EdgeStats.health``):

* with request counts (IPC, TRACE): error rate >= 5% UNHEALTHY, >= 1% DEGRADED, else HEALTHY;
* without (NETWORK): UNKNOWN, because bytes and connections say nothing about success;
* if the target service was UNHEALTHY at any instant of the window (its :class:`HealthBook`
  events; a CLUSTER target is looked up by its own name, then by its app), the edge is at least
  DEGRADED: calls into a failing service are at risk even when this edge saw no errors;
* a health value already carried by the partials is kept if it is worse.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable
from typing import Any

from topology.catalog import HealthState
from topology.health import HealthBook
from topology.model import EdgeKey, EdgePartial, EdgeWindow, Granularity, NodeKind, Side
from topology.stats import EdgeStats

UNHEALTHY_ERROR_RATE = 0.05
DEGRADED_ERROR_RATE = 0.01
REFRESH_SECONDS = 30.0  # a provisional window's later versions are emitted at most this often

_RANK = {"UNKNOWN": 0, "HEALTHY": 1, "DEGRADED": 2, "UNHEALTHY": 3}
_SIDE_ORDER = (Side.CLIENT, Side.SERVER, Side.PAIR)


class _Slot:
    """One edge in one window: the stats of each side, node facts, and emission state."""

    __slots__ = ("dirty", "emitted", "last", "provisional", "sides", "source_app", "source_kind",
                 "target_app", "target_kind")

    def __init__(self, p: EdgePartial) -> None:
        self.sides: dict[Side, EdgeStats] = {}
        self.source_kind, self.target_kind = p.source_kind, p.target_kind
        self.source_app, self.target_app = p.source_app, p.target_app
        self.emitted = False
        self.dirty = True
        self.provisional = False  # emitted while its window was still open
        self.last: EdgeWindow | None = None  # the version emitted last (None after a restore)

    def add(self, p: EdgePartial) -> None:
        cur = self.sides.get(p.side)
        self.sides[p.side] = p.stats if cur is None else cur.merge(p.stats)
        # A node seen as a real service by one observer is a service (virtual kinds are guesses).
        if p.source_kind is NodeKind.SERVICE:
            self.source_kind = NodeKind.SERVICE
        if p.target_kind is NodeKind.SERVICE:
            self.target_kind = NodeKind.SERVICE
        self.source_app = self.source_app or p.source_app
        self.target_app = self.target_app or p.target_app

    def stats(self) -> EdgeStats:
        merged: EdgeStats | None = None
        for side in _SIDE_ORDER:
            s = self.sides.get(side)
            if s is not None:
                merged = s if merged is None else merged.merge_max(s)
        assert merged is not None  # a slot is created with its first partial
        return merged


class FinalStage:
    """Merges partials into windows, with lateness handling and health (see the module docstring)."""

    def __init__(
        self, window_seconds: int = 60, grace_seconds: int = 120, health: HealthBook | None = None,
        refresh_seconds: float = REFRESH_SECONDS, late_seconds: float = 0.0,
    ) -> None:
        if window_seconds <= 0 or grace_seconds < 0 or refresh_seconds < 0 or not late_seconds >= 0:
            raise ValueError("window_seconds must be positive, grace, refresh and late seconds not negative")
        self.window_seconds = window_seconds
        self.grace_seconds = grace_seconds
        self.late_seconds = float(late_seconds)
        self._late: dict[int, dict[EdgeKey, _Slot]] = {}  # window -> late parts not taken yet
        self.floor = -math.inf  # windows ending at or before it may be stored already: merged only
        self.health = health
        self.refresh_seconds = refresh_seconds
        self._reset_provisional()
        self._windows: dict[int, dict[EdgeKey, _Slot]] = {}
        self._watermark = float("-inf")
        self.counters: dict[str, int] = {
            "partials": 0,
            "windows_emitted": 0,
            "re_emitted": 0,
            "late_accepted": 0,
            "late_dropped": 0,
            "late_merged": 0,
            "bad_window": 0,
            "provisional_emitted": 0,
            "unchanged": 0,  # versions not emitted: equal to the version emitted last (stored as it is)
        }

    def _reset_provisional(self) -> None:
        self._written: dict[int, set[EdgeKey]] = {}  # window -> edges emitted (provisional or complete)
        # newer versions of provisional windows, built when released (None: from the slot)
        self._held: dict[tuple[EdgeKey, int], EdgeWindow | None] = {}
        self._refreshed = -math.inf  # watermark of the last release of held versions

    @property
    def open_windows(self) -> list[int]:
        """Starts of the windows held in memory (not yet emitted, or within grace)."""
        return sorted(self._windows)

    def add(self, partials: Iterable[EdgePartial]) -> None:
        ws = self.window_seconds
        counters = self.counters
        for p in partials:
            counters["partials"] += 1
            pws = p.window_seconds
            if pws <= 0 or pws > ws or ws % pws or p.window_start % pws:
                counters["bad_window"] += 1
                continue
            w = p.window_start - p.window_start % ws
            if w + ws <= self.floor:
                self._add_late(p, w)
                continue
            if w + ws <= self._watermark:
                if w + ws + self.grace_seconds <= self._watermark:
                    self._add_late(p, w)
                    continue
                counters["late_accepted"] += 1
            slots = self._windows.get(w)
            if slots is None:
                slots = self._windows[w] = {}
            slot = slots.get(p.key)
            if slot is None:
                slot = slots[p.key] = _Slot(p)
            slot.add(p)
            slot.dirty = True

    def _add_late(self, p: EdgePartial, w: int) -> None:
        """A partial of a window past its grace: into the window's late part, or dropped (too late)."""
        if w + self.late_seconds <= self._watermark:
            self.counters["late_dropped"] += 1
            return
        self.counters["late_merged"] += 1
        slots = self._late.setdefault(w, {})
        slot = slots.get(p.key)
        if slot is None:
            slot = slots[p.key] = _Slot(p)
        slot.add(p)

    def take_late(self) -> list[EdgeWindow]:
        """The late parts gathered since the last call: windows to *add* to the stored ones (a store's
        ``merge_windows``), each handed out once."""
        out = [self._window(key, w, slot) for w, slots in sorted(self._late.items())
               for key, slot in slots.items()]
        self._late.clear()
        return out

    def flush(self, watermark: float, provisional: bool = False) -> list[EdgeWindow]:
        """Windows that end at or before ``watermark``: new ones, and emitted ones that late data changed.

        With ``provisional``, windows still open also emit new edges as they stand so far (see the
        module docstring): a store that replaces windows by key shows a new edge within one flush,
        and the complete window replaces the provisional one when it closes.
        """
        out, early = self._flush(watermark, provisional)
        complete = len(out)
        self._forget(watermark)
        if provisional and self._held and watermark - self._refreshed >= self.refresh_seconds:
            out.extend(self._release())
            self._held.clear()
            self._refreshed = watermark
        self.counters["windows_emitted"] += complete - early
        self.counters["provisional_emitted"] += early + len(out) - complete
        return out

    def _forget(self, watermark: float) -> None:
        """Drop the provisional bookkeeping of windows that closed (their complete version went out)."""
        ws = self.window_seconds
        for w in [w for w in self._written if w + 2 * ws <= watermark]:  # the next window's "before"
            del self._written[w]
        if any(w + ws <= watermark for _, w in self._held):
            self._held = {k: v for k, v in self._held.items() if k[1] + ws > watermark}

    def _flush(self, watermark: float, provisional: bool) -> tuple[list[EdgeWindow], int]:
        """Closed windows that are new or changed; with ``provisional``, then the new edges of open ones
        (their later versions are held: :meth:`_hold`), and how many of those."""
        if watermark > self._watermark:
            self._watermark = watermark
        ws = self.window_seconds
        written = self._written
        out: list[EdgeWindow] = []
        early = 0
        for w in sorted(self._windows):
            slots = self._windows[w]
            if w + ws > watermark:
                if not provisional:
                    break
                early += self._hold(w, slots, out)
                continue
            for key, slot in slots.items():
                if not slot.dirty and not slot.provisional:
                    continue
                slot.provisional = False
                win = self._window(key, w, slot)
                written.setdefault(w, set()).add(key)
                slot.dirty = False
                if win == slot.last:  # the version emitted last (provisionally): stored as it is
                    self._unchanged()
                    slot.emitted = True
                    continue
                slot.last = win
                out.append(win)
                if slot.emitted:
                    self.counters["re_emitted"] += 1
                slot.emitted = True
            if w + ws + self.grace_seconds <= watermark:
                del self._windows[w]
        return out, early

    def _unchanged(self) -> None:
        """A version equal to the one emitted last was not emitted (a stage restored from a checkpoint
        made before this counter existed starts it)."""
        self.counters["unchanged"] = self.counters.get("unchanged", 0) + 1

    def _hold(self, w: int, slots: dict[EdgeKey, _Slot], out: list[EdgeWindow]) -> int:
        """The changed edges of the open window ``w``: a new edge (not emitted in this window or the
        one before) goes to ``out`` at once; a later version of it is held for the refresh; an edge
        known from the window before waits for the close. Nothing is built for what is not emitted now
        (a held version is built when it is released, from the slot as it then stands). Returns how
        many went to ``out``."""
        early = 0
        seen = self._written.setdefault(w, set())
        before = self._written.get(w - self.window_seconds, ())
        held = self._held
        for key, slot in slots.items():
            if not slot.dirty:
                continue
            slot.dirty, slot.provisional = False, True
            if key in seen:
                if key not in before and (key, w) not in held:
                    held[(key, w)] = None
            else:
                seen.add(key)
                if key not in before:
                    win = slot.last = self._window(key, w, slot)
                    out.append(win)
                    early += 1
        return early

    def _release(self) -> list[EdgeWindow]:
        """The held versions, built from their slots as they stand now (a version restored from a
        checkpoint of an older release is kept if its slot is gone)."""
        out = []
        for (key, w), win in self._held.items():
            slot = self._windows.get(w, {}).get(key)
            if slot is not None:
                built = self._window(key, w, slot)
                if built == slot.last:
                    self._unchanged()
                    continue
                out.append(built)
                slot.last = built
            elif win is not None:
                out.append(win)
        return out

    def _window(self, key: EdgeKey, w: int, slot: _Slot) -> EdgeWindow:
        stats = slot.stats()
        health = self.edge_health(stats, key, slot.target_app, w)
        if _RANK.get(stats.health, 0) > _RANK[health]:
            health = stats.health
        if health != stats.health:
            stats = _with_health(stats, health)
        return EdgeWindow(key, w, self.window_seconds, stats, slot.source_kind, slot.target_kind,
                          slot.source_app, slot.target_app)

    def edge_health(self, stats: EdgeStats, key: EdgeKey, target_app: str | None, w: int) -> str:
        """Health of one edge window from its error rate and the target's health events."""
        health = "UNKNOWN"
        if stats.requests > 0:
            rate = stats.errors / stats.requests
            health = ("UNHEALTHY" if rate >= UNHEALTHY_ERROR_RATE
                      else "DEGRADED" if rate >= DEGRADED_ERROR_RATE else "HEALTHY")
        if self.health is not None and _RANK[health] < _RANK["DEGRADED"]:
            end = w + self.window_seconds
            worst = self.health.worst_during(key.target, w, end)
            if worst is None and key.granularity is Granularity.CLUSTER and target_app:
                worst = self.health.worst_during(target_app, w, end)
            if worst is HealthState.UNHEALTHY:
                health = "DEGRADED"
        return health


#: EdgeStats' fields but its health, last, in order: a copy with another health in one constructor call
#: (``dataclasses.replace`` looks the fields up on every call: a third of stage 3's flush for TRACE)
_BUT_HEALTH = operator.attrgetter(*[f.name for f in dataclasses.fields(EdgeStats) if f.name != "health"])
assert [f.name for f in dataclasses.fields(EdgeStats)][-1] == "health"


def _with_health(stats: EdgeStats, health: str) -> EdgeStats:
    values: tuple[Any, ...] = _BUT_HEALTH(stats)
    return EdgeStats(*values, health)  # type: ignore[call-arg]  # (EdgeStats' fields, in order)
