"""``GET /export``: the graph of a selection as DOT, Mermaid, Cytoscape.js JSON, GraphML or JSON.

The selection arguments are those of the queries: ``service`` (none: the whole graph, paged through
``Query.topology``), ``direction`` (``upstream`` = what it calls, ``downstream`` = what calls it, or
``both``), ``depth``, ``layers``, ``tier``, ``domain`` (comma-separated lists), ``at`` and ``window``.
The graph is read by running the schema's own queries in-process, so an export answers what GraphQL
answers (same checks, same errors). A refused selection is a 400, an unknown service a 404, both with
the GraphQL error shape (``{"errors": [{"message", "extensions": {"code"}}]}``).

The JSON format (``service-topology/v1``)::

    {"format": "service-topology/v1",
     "selection": {"service": "api", "direction": "both", "depth": 2, "layers": null, "tier": null,
                   "domain": null, "at": null, "window": null},
     "nodes": [{"name", "kind", "tier", "domain", "team", "health", "depth"}],   # depth: hops from service
     "edges": [{"source", "target", "layers", "requests", "errorRate",
                "perLayer": [{"layer", "protocol", "requests", "errors", "requestRate", "errorRate",
                              "latencyP50", "latencyP99"}]}],
     "truncated": false}                        # true when the server's page limits cut the graph
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry import Schema

__all__ = ["FORMATS", "ExportError", "Graph", "Selection", "export_endpoint", "fetch_export", "read_graph",
           "render"]

MAX_PAGES = 50  # whole-graph exports: at most this many pages of Query.topology
DIRECTIONS = ("upstream", "downstream", "both")
HEALTH_FILL = {"HEALTHY": ("#d7ead8", "#2e7d32"), "DEGRADED": ("#fdf0cf", "#b7791f"),
               "UNHEALTHY": ("#f6d5d5", "#c62828"), "UNKNOWN": ("#eceef1", "#8a8f98")}


class ExportError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Selection:
    service: str | None = None
    direction: str = "both"
    depth: int = 2
    layers: list[str] | None = None
    tier: list[int] | None = None
    domain: list[str] | None = None
    at: str | None = None
    window: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Selection:
        def items(name: str) -> list[str] | None:
            text = params.get(name)
            return [p.strip() for p in text.split(",") if p.strip()] if text else None

        direction = params.get("direction", "both").lower()
        if direction not in DIRECTIONS:
            raise ExportError(400, "BAD_USER_INPUT", f"direction must be one of {', '.join(DIRECTIONS)}, "
                                                     f"got {direction[:40]!r}")
        try:
            depth = int(params.get("depth", "2"))
            tier = [int(t) for t in items("tier") or []] or None
        except ValueError:
            raise ExportError(400, "BAD_USER_INPUT", "depth and tier must be integers") from None
        layers = [x.upper() for x in items("layers") or []] or None
        return cls(params.get("service") or None, direction, depth, layers, tier, items("domain"),
                   params.get("at") or None, params.get("window") or None)

    def variables(self) -> dict[str, Any]:
        return {"layers": self.layers, "tier": self.tier, "domain": self.domain, "at": self.at,
                "window": self.window}


@dataclass
class Node:
    name: str
    kind: str = "UNKNOWN"
    tier: int | None = None
    domain: str | None = None
    team: str | None = None
    health: str = "UNKNOWN"
    depth: int | None = None


@dataclass
class Edge:
    source: str
    target: str
    layers: list[str]
    requests: int
    errorRate: float  # camelCase: the JSON format's field names
    perLayer: list[dict[str, Any]]


@dataclass
class Graph:
    selection: Selection
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str], Edge] = field(default_factory=dict)
    truncated: bool = False

    def add_node(self, svc: Mapping[str, Any], depth: int | None = None) -> None:
        old = self.nodes.get(svc["name"])
        if old is not None and (old.depth is None or depth is None or old.depth <= depth):
            if old.kind == "UNKNOWN" and svc.get("kind"):
                old.kind = svc["kind"]
            return
        health = svc.get("healthStatus") or {}
        owner = svc.get("owner") or {}
        self.nodes[svc["name"]] = Node(svc["name"], svc.get("kind") or "UNKNOWN", svc.get("tier"),
                                       svc.get("domain"), owner.get("team"), health.get("status", "UNKNOWN"),
                                       depth)

    def add_edge(self, e: Mapping[str, Any]) -> None:
        per = [dict(p) for p in e["perLayer"]]
        rates = [p["errorRate"] for p in per if p.get("errorRate") is not None]
        self.edges[(e["source"], e["target"])] = Edge(
            e["source"], e["target"], list(e["layers"]), sum(int(p.get("requests") or 0) for p in per),
            max(rates, default=0.0), per)
        for end, kind in ((e["source"], e["sourceKind"]), (e["target"], e["targetKind"])):
            if end not in self.nodes:
                self.nodes[end] = Node(end, kind)


NODE = "name kind tier domain owner { team } healthStatus { status }"
EDGE = ("source target sourceKind targetKind layers perLayer { layer protocol requests errors requestRate "
        "errorRate latencyP50 latencyP99 }")
ARGS = ("$layers: [Layer!], $tier: [Int!], $domain: [String!], $at: DateTime, $window: Duration")
PASS = "layers: $layers, tier: $tier, domain: $domain, at: $at, window: $window"
WALK = f"totalCount edges {{ node {{ depth service {{ {NODE} }} edge {{ {EDGE} }} }} }}"
NEIGHBOURHOOD = f"""query Export($name: String!, $depth: Int!, $first: Int!, $up: Boolean!, $down: Boolean!,
  {ARGS}) {{
  service(name: $name) {{ {NODE}
    upstream(depth: $depth, first: $first, {PASS}) @include(if: $up) {{ {WALK} }}
    downstream(depth: $depth, first: $first, {PASS}) @include(if: $down) {{ {WALK} }}
  }}
}}"""
WHOLE = f"""query ExportAll($first: Int!, $after: String, {ARGS}) {{
  topology(first: $first, after: $after, {PASS}) {{
    nodes {{ {NODE} }} edges {{ {EDGE} }} pageInfo {{ hasNextPage endCursor }}
  }}
}}"""


async def _run(schema: Schema, context: Any, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    result = await schema.execute(query, variable_values=variables, context_value=context)
    if result.errors:
        err = result.errors[0]
        code = str((err.extensions or {}).get("code", "INTERNAL_SERVER_ERROR"))
        status = {"BAD_USER_INPUT": 400, "NOT_FOUND": 404, "GRAPHQL_VALIDATION_FAILED": 400,
                  "UNAVAILABLE": 503, "TIMEOUT": 503}.get(code, 500)
        if result.data is None or status != 404:
            raise ExportError(status, code, err.message)
    return result.data or {}


async def read_graph(schema: Schema, context: Any, sel: Selection, page: int) -> Graph:
    """The graph of ``sel``, read through the schema with ``context`` (pages of ``page`` edges)."""
    graph = Graph(sel)
    if sel.service is None:
        after = None
        for _ in range(MAX_PAGES):
            data = await _run(schema, context, WHOLE, {**sel.variables(), "first": page, "after": after})
            topo = data["topology"]
            for n in topo["nodes"]:
                graph.add_node(n)
            for e in topo["edges"]:
                graph.add_edge(e)
            if not topo["pageInfo"]["hasNextPage"]:
                return graph
            after = topo["pageInfo"]["endCursor"]
        graph.truncated = True
        return graph
    data = await _run(schema, context, NEIGHBOURHOOD, {
        **sel.variables(), "name": sel.service, "depth": sel.depth, "first": page,
        "up": sel.direction != "downstream", "down": sel.direction != "upstream"})
    svc = data.get("service")
    if svc is None:
        raise ExportError(404, "NOT_FOUND", f"no service named {sel.service!r}")
    graph.add_node(svc, 0)
    for side in ("upstream", "downstream"):
        conn = svc.get(side)
        if not conn:
            continue
        for item in conn["edges"]:
            graph.add_node(item["node"]["service"], item["node"]["depth"])
            graph.add_edge(item["node"]["edge"])
        graph.truncated |= conn["totalCount"] > len(conn["edges"])
    return graph


# -- formats ------------------------------------------------------------------------------------------
def to_json(g: Graph) -> str:
    return json.dumps({
        "format": "service-topology/v1",
        "selection": asdict(g.selection),
        "nodes": [asdict(n) for n in sorted(g.nodes.values(), key=lambda n: n.name)],
        "edges": [asdict(e) for _, e in sorted(g.edges.items())],
        "truncated": g.truncated,
    }, indent=2) + "\n"


def _dot_string(text: str) -> str:
    """A DOT quoted string shown as ``text`` (labels are escStrings: backslashes escaped too)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


DOT_SHAPES = {"DATABASE": "cylinder", "MESSAGING": "hexagon", "EXTERNAL": "component", "USER": "ellipse",
              "UNINSTRUMENTED": "box", "UNKNOWN": "box", "SERVICE": "box"}


def _edge_colour(rate: float) -> str:
    return "#dc2626" if rate >= 0.01 else "#d97706" if rate > 0 else "#6b7280"


def _edge_style(layers: list[str]) -> str:
    if "IPC" in layers or len(layers) > 1:
        return "solid"
    return "dashed" if "NETWORK" in layers else "dotted"


def to_dot(g: Graph) -> str:
    """Node ids are n0, n1, ... in name order (any name is safe in a label, not every one in an id)."""
    ids = {name: f"n{i}" for i, name in enumerate(sorted(g.nodes))}
    lines = ["digraph topology {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for name in sorted(g.nodes):
        n = g.nodes[name]
        fill, line = HEALTH_FILL.get(n.health, HEALTH_FILL["UNKNOWN"])
        style = '"rounded,filled,dashed"' if n.kind in ("EXTERNAL", "UNINSTRUMENTED") else '"rounded,filled"'
        lines.append(f"  {ids[name]} [label={_dot_string(name)}, shape={DOT_SHAPES.get(n.kind, 'box')}, "
                     f'style={style}, fillcolor="{fill}", color="{line}", '
                     f"tooltip={_dot_string(f'{n.kind} {n.health}')}];")
    for (src, dst), e in sorted(g.edges.items()):
        lines.append(f"  {ids[src]} -> {ids[dst]} [label={_dot_string(','.join(e.layers))}, "
                     f'color="{_edge_colour(e.errorRate)}", style={_edge_style(e.layers)}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


MERMAID_SHAPES = {"DATABASE": ('[("', '")]'), "MESSAGING": ('{{"', '"}}'), "EXTERNAL": ('>"', '"]'),
                  "USER": ('(("', '"))')}


def _mermaid_text(text: str) -> str:
    return re.sub(r'["<>]', lambda m: {'"': "#quot;", "<": "#lt;", ">": "#gt;"}[m.group()], text)


def to_mermaid(g: Graph) -> str:
    ids = {name: f"n{i}" for i, name in enumerate(sorted(g.nodes))}
    lines = ["flowchart LR"]
    for name in sorted(g.nodes):
        n = g.nodes[name]
        left, right = MERMAID_SHAPES.get(n.kind, ('["', '"]'))
        lines.append(f"  {ids[name]}{left}{_mermaid_text(name)}{right}:::{n.health.lower()}")
    styles = []
    for i, ((src, dst), e) in enumerate(sorted(g.edges.items())):
        arrow = "-->" if _edge_style(e.layers) == "solid" else "-.->"
        lines.append(f'  {ids[src]} {arrow}|"{",".join(e.layers)}"| {ids[dst]}')
        if e.errorRate > 0:
            styles.append(f"  linkStyle {i} stroke:{_edge_colour(e.errorRate)}")
    for health, (fill, line) in HEALTH_FILL.items():
        lines.append(f"  classDef {health.lower()} fill:{fill},stroke:{line}")
    return "\n".join(lines + styles) + "\n"


def to_cytoscape(g: Graph) -> str:
    nodes = [{"data": {"id": n.name, "label": n.name, "kind": n.kind, "health": n.health, "tier": n.tier,
                       "domain": n.domain, "team": n.team, "depth": n.depth}}
             for n in sorted(g.nodes.values(), key=lambda n: n.name)]
    edges = [{"data": {"id": f"{s}->{t}", "source": s, "target": t, "layers": e.layers,
                       "requests": e.requests, "errorRate": e.errorRate}}
             for (s, t), e in sorted(g.edges.items())]
    return json.dumps({"elements": {"nodes": nodes, "edges": edges}}, indent=2) + "\n"


GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"
NODE_KEYS = (("kind", "string"), ("health", "string"), ("tier", "int"), ("domain", "string"),
             ("team", "string"), ("depth", "int"))
EDGE_KEYS = (("layers", "string"), ("requests", "long"), ("errorRate", "double"))


def to_graphml(g: Graph) -> str:
    root = ET.Element("graphml", xmlns=GRAPHML_NS)
    for scope, keys in (("node", NODE_KEYS), ("edge", EDGE_KEYS)):
        for name, kind in keys:
            ET.SubElement(root, "key", {"id": f"{scope[0]}_{name}", "for": scope, "attr.name": name,
                                        "attr.type": kind})
    graph = ET.SubElement(root, "graph", id="topology", edgedefault="directed")
    for n in sorted(g.nodes.values(), key=lambda n: n.name):
        el = ET.SubElement(graph, "node", id=n.name)
        for name, _ in NODE_KEYS:
            value = getattr(n, name)
            if value is not None:
                ET.SubElement(el, "data", key=f"n_{name}").text = str(value)
    for (s, t), e in sorted(g.edges.items()):
        el = ET.SubElement(graph, "edge", id=f"{s}->{t}", source=s, target=t)
        values = (("layers", ",".join(e.layers)), ("requests", e.requests), ("errorRate", e.errorRate))
        for name, value in values:
            ET.SubElement(el, "data", key=f"e_{name}").text = str(value)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


FORMATS: dict[str, tuple[Callable[[Graph], str], str, str]] = {
    "dot": (to_dot, "text/vnd.graphviz; charset=utf-8", "gv"),
    "mermaid": (to_mermaid, "text/vnd.mermaid; charset=utf-8", "mmd"),
    "cytoscape": (to_cytoscape, "application/json", "cyjs"),
    "graphml": (to_graphml, "application/graphml+xml; charset=utf-8", "graphml"),
    "json": (to_json, "application/json", "json"),
}


def render(g: Graph, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ExportError(400, "BAD_USER_INPUT",
                          f"format must be one of {', '.join(FORMATS)}, got {fmt[:40]!r}")
    return FORMATS[fmt][0](g)


def export_endpoint(schema: Schema, context_for: Callable[[Request], Awaitable[Any]], page: int
                    ) -> Callable[[Request], Awaitable[Response]]:
    """The ``GET /export`` handler over ``schema``; ``context_for`` makes a request's GraphQL context."""

    async def export(request: Request) -> Response:
        params = request.query_params
        fmt = params.get("format", "json").lower()
        try:
            if fmt not in FORMATS:
                render(Graph(Selection()), fmt)  # raises the 400
            sel = Selection.from_params(params)
            graph = await read_graph(schema, await context_for(request), sel, page)
            body = render(graph, fmt)
        except ExportError as e:
            return JSONResponse({"errors": [{"message": e.message, "extensions": {"code": e.code}}]},
                                status_code=e.status)
        _, media, ext = FORMATS[fmt]
        name = re.sub(r"[^A-Za-z0-9._-]", "_", sel.service or "topology")
        return Response(body, media_type=media,
                        headers={"content-disposition": f'inline; filename="{name}.{ext}"',
                                 "topology-truncated": "true" if graph.truncated else "false"})

    return export


def fetch_export(base_url: str, params: Mapping[str, str], token: str | None) -> Any:
    """The answer (an ``httpx.Response``, status 200) of the server's ``GET /export``; a server that
    cannot be reached or refuses is :class:`service.simulate.Unreachable`, with its message."""
    from service.client import request
    from service.simulate import Unreachable

    r = request("GET", base_url, "/export", token, params=params)
    if r.status_code != 200:
        try:
            message = r.json()["errors"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            message = r.text.strip()[:200]
        raise Unreachable(f"the server refused the export ({r.status_code}): {message}")
    return r


def run_export(settings: Any, out: Any) -> int:
    """``topology export``: GET the server's ``/export`` and write the answer (``settings``:
    :class:`service.settings.ExportSettings`); a refusal is a one-line error, exit 1."""
    params = {k: str(v) for k, v in (
        ("format", settings.format), ("service", settings.service), ("direction", settings.direction),
        ("depth", settings.depth), ("layers", settings.layers), ("tier", settings.tier),
        ("domain", settings.domain), ("at", settings.at), ("window", settings.window)) if v is not None}
    r = fetch_export(settings.url, params, settings.token)
    if settings.output:
        with open(settings.output, "w", encoding="utf-8") as f:
            f.write(r.text)
    else:
        out.write(r.text)
    if r.headers.get("topology-truncated") == "true":
        import logging

        logging.getLogger("topology.export").warning("the export is truncated by the server's page limits")
    return 0
