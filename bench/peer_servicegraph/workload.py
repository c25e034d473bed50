"""The spans both systems are fed: the fleet simulator's OTLP span requests (as `topology simulate` makes
them), serialised before anything is timed, and the simulator's TRACE truth for each prefix of whole
minutes.

Every run re-stamps the requests so that the simulated hour starts at the run's own minute:
our server takes spans into one-minute windows by their time (those minutes behind the wall clock go the
late-data road, a different cost), the Collector pairs by wall-clock arrival and ignores span times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.peer_servicegraph.edges import Pair
from topology.model import Layer

MINUTE = 60


@dataclass
class Workload:
    start: float  # epoch seconds of the first simulated minute (a multiple of 60)
    minutes: int
    bodies: list[bytes] = field(default_factory=list)  # ExportTraceServiceRequest bytes, in order
    spans: list[int] = field(default_factory=list)  # spans in each body
    minute_of: list[int] = field(default_factory=list)  # the simulated minute each body belongs to
    truth: dict[int, set[Pair]] = field(default_factory=dict)  # TRACE truth of the first m minutes
    shift: float = 0.0  # seconds the bodies' span times are moved from ``start``

    @property
    def total_spans(self) -> int:
        return sum(self.spans)

    def prefix(self, max_spans: int | None) -> int:
        """Bodies in the longest prefix of whole minutes with at most ``max_spans`` spans (all: None)."""
        if max_spans is None:
            return len(self.bodies)
        total, cut = 0, 0
        for i, (s, m) in enumerate(zip(self.spans, self.minute_of, strict=True)):
            if i and m != self.minute_of[i - 1]:
                cut = i  # bodies [0, i) are whole minutes
            total += s
            if total > max_spans:
                return cut
        return len(self.bodies)

    def truth_for(self, bodies: int) -> set[Pair]:
        """TRACE truth of the minutes the first ``bodies`` bodies cover (a prefix of whole minutes)."""
        if bodies >= len(self.bodies):
            return self.truth[self.minutes]
        return self.truth[self.minute_of[bodies]]

    def restamp(self, start: float) -> float:
        """Move every span's times so the simulated hour starts at ``start`` (rounded down to a minute);
        returns the new start. CPU spent here is the bench's, before anything is timed."""
        new = float(int(start) // MINUTE * MINUTE)
        delta = int((new - self.start - self.shift) * 1e9)
        if delta:
            req = ExportTraceServiceRequest()
            for i, body in enumerate(self.bodies):
                req.ParseFromString(body)
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            s.start_time_unix_nano += delta
                            s.end_time_unix_nano += delta
                            for ev in s.events:
                                ev.time_unix_nano += delta
                self.bodies[i] = req.SerializeToString()
        self.shift = new - self.start
        return new


def generate(services: int, minutes: int, seed: int, step: float = 10.0,
             start: float | None = None) -> Workload:
    """Simulate ``minutes`` of a fleet of ``services`` (``topology simulate``'s simulator and defaults)
    and keep its span requests and the TRACE truth after each minute."""
    from topology.sim import SimConfig, Simulator, generate_fleet

    t0 = float(int(time.time() if start is None else start) // MINUTE * MINUTE)
    fleet = generate_fleet(services=services, seed=seed)
    sim = Simulator(fleet, seed=seed, start=t0, config=SimConfig())
    sim.initial_records()
    w = Workload(start=t0, minutes=minutes, truth={0: set()})
    req = ExportTraceServiceRequest()
    t = t0
    end = t0 + minutes * MINUTE
    while t < end - 1e-9:
        em = sim.step(t, step)
        m = int((t - t0) // MINUTE)
        for body in em.spans:
            req.ParseFromString(body)
            w.bodies.append(body)
            w.spans.append(sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans))
            w.minute_of.append(m)
        t += step
        done = int(round((t - t0) / MINUTE, 6)) if abs((t - t0) % MINUTE) < 1e-6 else None
        if done is not None:
            w.truth[done] = {(s, d) for s, d in sim.world.truth.pairs(Layer.TRACE, t0, t0 + done * MINUTE)}
    return w
