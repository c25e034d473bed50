"""The workloads file (``--workloads FILE``): rules that name the workload a local process belongs to.

A JSON list of rules, tried in order, first match wins. Each rule has exactly one matcher and an
``app`` (plus an optional ``cluster``, the deployment)::

    [
      {"comm": "nginx", "app": "edge-proxy"},
      {"cmdline": "--service=(?P<svc>[a-z-]+)", "app": "{svc}", "cluster": "{svc}-prod"},
      {"cgroup": "/system.slice/(?P<unit>[a-z-]+)\\.service", "app": "{unit}"},
      {"netns": "blue", "app": "blue-api"}
    ]

* ``comm``: the kernel's process name, exactly (at most 15 characters, as the kernel keeps it);
* ``cmdline``: a regular expression searched in the command line (arguments joined by spaces);
* ``cgroup``: a regular expression searched in the cgroup v2 path;
* ``netns``: a named network namespace (``/run/netns/NAME``), or its inode number.

``app`` and ``cluster`` may use ``{group}`` for named groups of the matcher's expression. A rule
whose names come out empty does not match. Errors name the rule and say what is wrong.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.process import Process

MATCHERS = ("comm", "cmdline", "cgroup", "netns")


class WorkloadsError(ValueError):
    """The workloads file cannot be used; the message names the rule and the problem."""


@dataclass(frozen=True, slots=True)
class Workload:
    app: str
    cluster: str = ""


@dataclass(frozen=True, slots=True)
class Rule:
    matcher: str
    pattern: str
    app: str
    cluster: str
    regex: re.Pattern[str] | None

    def match(self, p: Process, netns_name: Callable[[int], str | None]) -> Workload | None:
        groups: dict[str, str] = {}
        if self.matcher == "comm":
            if p.comm != self.pattern:
                return None
        elif self.matcher == "netns":
            if not p.netns or self.pattern not in (str(p.netns), netns_name(p.netns)):
                return None
        else:
            assert self.regex is not None
            m = self.regex.search(p.cmdline if self.matcher == "cmdline" else p.cgroup)
            if m is None:
                return None
            groups = {k: v or "" for k, v in m.groupdict().items()}
        app = self.app.format_map(groups)
        if not app:
            return None
        return Workload(app, self.cluster.format_map(groups))


def parse_rules(doc: Any, source: str = "workloads file") -> list[Rule]:
    if not isinstance(doc, list):
        raise WorkloadsError(f"{source}: expected a JSON list of rules")
    return [_rule(i, r, source) for i, r in enumerate(doc)]


def load_rules(path: str | Path) -> list[Rule]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise WorkloadsError(f"cannot read the workloads file {path}: {e.strerror}") from e
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise WorkloadsError(f"the workloads file {path} is not JSON: {e}") from e
    return parse_rules(doc, str(path))


def _rule(i: int, r: Any, source: str) -> Rule:
    where = f"{source}, rule {i}"
    if not isinstance(r, dict):
        raise WorkloadsError(f"{where}: a rule is a JSON object")
    unknown = set(r) - set(MATCHERS) - {"app", "cluster"}
    if unknown:
        raise WorkloadsError(f"{where}: unknown keys {sorted(unknown)} (allowed: {', '.join(MATCHERS)}, "
                             "app, cluster)")
    keys = [k for k in MATCHERS if k in r]
    if len(keys) != 1:
        raise WorkloadsError(f"{where}: needs exactly one of {', '.join(MATCHERS)} (has {keys or 'none'})")
    matcher = keys[0]
    pattern = r[matcher]
    if matcher == "netns" and isinstance(pattern, int) and not isinstance(pattern, bool):
        pattern = str(pattern)
    if not isinstance(pattern, str) or not pattern:
        raise WorkloadsError(f"{where}: {matcher!r} must be a non-empty string")
    app, cluster = r.get("app"), r.get("cluster", "")
    if not isinstance(app, str) or not app:
        raise WorkloadsError(f"{where}: needs a non-empty string 'app'")
    if not isinstance(cluster, str):
        raise WorkloadsError(f"{where}: 'cluster' must be a string")
    regex = None
    groups: Sequence[str] = ()
    if matcher in ("cmdline", "cgroup"):
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise WorkloadsError(f"{where}: {matcher!r} is not a valid regular expression: {e}") from e
        groups = tuple(regex.groupindex)
    for name, template in (("app", app), ("cluster", cluster)):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        except ValueError as e:
            raise WorkloadsError(f"{where}: {name!r} is not a valid template: {e}") from e
        missing = [f for f in fields if f not in groups]
        if missing:
            raise WorkloadsError(f"{where}: {name!r} uses {{{missing[0]}}}, which is not a named group of "
                                 f"the {matcher!r} expression")
    return Rule(matcher, pattern, app, cluster, regex)
