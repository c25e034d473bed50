"""Local attribution at capture time: pid -> process -> workload, through a chain of resolvers.

1. the workloads file's rules (:mod:`agent.workloads`), first match wins;
2. Kubernetes pods (:mod:`agent.kubernetes`), when pod metadata is configured;
3. otherwise the placeholder ``unattributed:<comm>``: reported, counted, never dropped silently.

Results are cached per (pid, comm), so a busy process costs one ``/proc`` read; a cached entry older
than ``revalidate_seconds`` is kept only if the pid still belongs to the same process (start time).
Processes that were gone when looked up are not cached (their pid may come back as another one).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.kubernetes import Pods
from agent.process import NetnsNames, Process, Processes
from agent.workloads import Rule, Workload

UNATTRIBUTED = "unattributed:"


@dataclass(frozen=True, slots=True)
class Attribution:
    workload: Workload
    source: str  # "rule", "pod" or "none"
    process: Process

    @property
    def attributed(self) -> bool:
        return self.source != "none"


class Attributor:
    def __init__(self, rules: Sequence[Rule] = (), pods: Pods | None = None,
                 processes: Processes | None = None, netns_names: NetnsNames | None = None,
                 capacity: int = 16_384, revalidate_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = list(rules)
        self.pods = pods
        self.processes = processes or Processes()
        self.netns_names = netns_names or NetnsNames()
        self.capacity = capacity
        self.revalidate_seconds = revalidate_seconds
        self.clock = clock
        self._cache: OrderedDict[tuple[int, str], tuple[Attribution, float]] = OrderedDict()
        self.unattributed_processes = 0

    def resolve(self, pid: int, comm: str, cgroup_id: int = 0, netns: int = 0) -> Attribution:
        key = (pid, comm)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None:
            a, checked = hit
            if now - checked < self.revalidate_seconds:
                self._cache.move_to_end(key)
                return a
            if self.processes.start_time(pid) == a.process.started:
                self._cache[key] = (a, now)
                self._cache.move_to_end(key)
                return a
            self.forget(pid)
        a = self.attribute(self.processes.get(pid, comm, cgroup_id, netns))
        if not a.attributed:
            self.unattributed_processes += 1
        if a.process.alive:
            self._cache[key] = (a, now)
            if len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        else:
            self.processes.forget(pid)
        return a

    def attribute(self, p: Process) -> Attribution:
        for rule in self.rules:
            w = rule.match(p, self.netns_names.name)
            if w is not None:
                return Attribution(w, "rule", p)
        if self.pods is not None:
            w = self.pods.resolve(p)
            if w is not None:
                return Attribution(w, "pod", p)
        return Attribution(Workload(f"{UNATTRIBUTED}{p.comm or 'unknown'}"), "none", p)

    def forget(self, pid: int) -> None:
        """Drop what is cached for ``pid`` (it exited; the number may come back as another program)."""
        for key in [k for k in self._cache if k[0] == pid]:
            del self._cache[key]
        self.processes.forget(pid)
