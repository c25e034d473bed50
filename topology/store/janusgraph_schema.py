"""Schema and index management for the JanusGraph stores, run when a store opens.

The server runs with ``schema.default=none``: every label and property key must exist before it is
used. :func:`ensure_schema` sends one constant Groovy script (the only script the stores send) with
the wanted schema as a bound value; the script creates whatever is missing in one management
transaction. Indexes created together with their keys are usable at once; an index added later
over existing keys is registered and reindexed before the script returns.

Layer graphs (``network``, ``ipc``, ``trace``) — see :mod:`topology.store.janusgraph_layer`:

* ``node`` vertices (``name``, ``gran``), composite index ``node_by_name``;
* ``pair`` vertices, one per (granularity, source, target): ``pkey``, ``src``, ``tgt``, ``gran``,
  the latest window's kinds and apps (``sk``, ``tk``, ``sa``, ``ta``), and ``info`` (JSON of
  source, target and kinds: what answers need, in one property read); composite indexes
  ``pair_by_key`` and ``pair_by_gran``; edges ``node -calls-> pair -callee-> node``;
* window edges ``w60``/``w3600``/``w86400``: self-loops on their pair with ``ws`` (window start)
  and ``st`` (EdgeStats JSON); a vertex-centric index ``<label>_by_ws`` (range scans per pair)
  and a composite edge index ``<label>_ws`` (all windows of one start: roll-ups, retention);
* ``slot`` vertices, one per stored (window seconds, start) (``slk``, ``sw``, ``ss``); ``pend``
  marks hours/days whose finer windows changed since their last roll-up, ``pver`` is a random
  token renewed by every mark so a roll-up clears only the mark it read;
* one ``meta`` vertex (``mkey``, ``mval``): the clock of the last roll-up.

Catalog graph (``catalog``) — see :mod:`topology.store.janusgraph_catalog`.
"""

from __future__ import annotations

from typing import Any

from topology.store.janusgraph_pool import GremlinPool, GremlinQueryError

WINDOW_LABELS: dict[int, str] = {60: "w60", 3600: "w3600", 86400: "w86400"}

_ENSURE = """
def graph = g.getGraph()
def types = [String: String.class, Long: Long.class, Integer: Integer.class, Double: Double.class,
             Boolean: Boolean.class]
def created = []
def m = graph.openManagement()
try {
  spec['keys'].each { k ->
    if (!m.containsPropertyKey(k[0])) {
      m.makePropertyKey(k[0]).dataType(types[k[1]]).make()
      created << k[0]
    }
  }
  spec['vertexLabels'].each { l ->
    if (!m.containsVertexLabel(l)) { m.makeVertexLabel(l).make(); created << l }
  }
  spec['edgeLabels'].each { l ->
    if (!m.containsEdgeLabel(l)) { m.makeEdgeLabel(l).make(); created << l }
  }
  spec['composite'].each { c ->
    if (!m.containsGraphIndex(c[0])) {
      def onVertices = c[1] == 'vertex'
      def b = m.buildIndex(c[0], onVertices ? Vertex.class : Edge.class)
      c[2].each { b.addKey(m.getPropertyKey(it)) }
      b.indexOnly(onVertices ? m.getVertexLabel(c[3]) : m.getEdgeLabel(c[3]))
      b.buildCompositeIndex()
      created << c[0]
    }
  }
  spec['vertexCentric'].each { v ->
    def label = m.getEdgeLabel(v[1])
    if (m.getRelationIndex(label, v[0]) == null) {
      m.buildEdgeIndex(label, v[0], Direction.valueOf(v[2]), v[3] == 'desc' ? Order.desc : Order.asc,
                       m.getPropertyKey(v[4]))
      created << v[0]
    }
  }
  m.commit()
} catch (e) { if (m.isOpen()) { m.rollback() }; throw e }  // a failed commit closed it: keep its error
// An index added over keys that already existed starts INSTALLED: register it, then reindex.
def pending = []
m = graph.openManagement()
spec['composite'].each { c ->
  def idx = m.getGraphIndex(c[0])
  if (idx.getIndexStatus(idx.getFieldKeys()[0]) != SchemaStatus.ENABLED) { pending << c[0] }
}
m.rollback()
pending.each { name ->
  m = graph.openManagement()
  def idx = m.getGraphIndex(name)
  if (idx.getIndexStatus(idx.getFieldKeys()[0]) == SchemaStatus.INSTALLED) {
    m.updateIndex(idx, SchemaAction.REGISTER_INDEX).get()
    m.commit()
    ManagementSystem.awaitGraphIndexStatus(graph, name).status(SchemaStatus.REGISTERED).call()
  } else { m.rollback() }
  m = graph.openManagement()
  m.updateIndex(m.getGraphIndex(name), SchemaAction.REINDEX).get()
  m.commit()
}
created + pending
"""


def _spec(
    keys: list[tuple[str, str]],
    vertex_labels: list[str],
    edge_labels: list[str],
    composite: list[tuple[str, str, list[str], str]],
    vertex_centric: list[tuple[str, str, str, str, str]],
) -> dict[str, Any]:
    return {
        "keys": [list(k) for k in keys],
        "vertexLabels": vertex_labels,
        "edgeLabels": edge_labels,
        "composite": [[n, kind, ks, label] for n, kind, ks, label in composite],
        "vertexCentric": [list(v) for v in vertex_centric],
    }


def layer_spec() -> dict[str, Any]:
    labels = list(WINDOW_LABELS.values())
    return _spec(
        keys=[
            ("name", "String"), ("gran", "String"), ("pkey", "String"), ("src", "String"),
            ("tgt", "String"), ("info", "String"), ("sk", "String"), ("tk", "String"), ("sa", "String"),
            ("ta", "String"),
            ("ws", "Long"), ("st", "String"), ("slk", "String"), ("sw", "Integer"), ("ss", "Long"),
            ("pend", "Boolean"), ("pver", "Long"), ("mkey", "String"), ("mval", "String"),
        ],
        vertex_labels=["node", "pair", "slot", "meta"],
        edge_labels=["calls", "callee", *labels],
        composite=[
            ("node_by_name", "vertex", ["name"], "node"),
            ("pair_by_key", "vertex", ["pkey"], "pair"),
            ("pair_by_gran", "vertex", ["gran"], "pair"),
            ("slot_by_key", "vertex", ["slk"], "slot"),
            ("slot_by_sw", "vertex", ["sw"], "slot"),
            ("meta_by_key", "vertex", ["mkey"], "meta"),
            *[(f"{lab}_ws", "edge", ["ws"], lab) for lab in labels],
        ],
        vertex_centric=[(f"{lab}_by_ws", lab, "OUT", "asc", "ws") for lab in labels],
    )


def catalog_spec() -> dict[str, Any]:
    return _spec(
        keys=[
            ("cname", "String"), ("data", "String"), ("tier", "Integer"), ("domain", "String"),
            ("team", "String"), ("kkey", "String"), ("kname", "String"), ("kgran", "String"),
            ("kind", "String"), ("app", "String"), ("layers", "String"), ("first", "Double"),
            ("last", "Double"), ("at", "Double"), ("hs", "String"), ("hr", "String"), ("tid", "String"),
            ("tstart", "Double"), ("info", "Boolean"), ("cid", "String"), ("cdata", "String"),
            ("hkey", "String"), ("xid", "String"), ("xdata", "String"), ("xstart", "Double"),
            ("pkey", "String"), ("paddr", "String"), ("pstart", "Double"), ("pdata", "String"),
        ],
        vertex_labels=["svc", "known", "trace", "tracestore", "kept", "plse"],
        edge_labels=["health", "took", "change", "keeps"],
        composite=[
            ("svc_by_name", "vertex", ["cname"], "svc"),
            ("svc_with_info", "vertex", ["info"], "svc"),
            ("known_by_key", "vertex", ["kkey"], "known"),
            ("known_by_gran", "vertex", ["kgran"], "known"),
            ("trace_by_id", "vertex", ["tid"], "trace"),
            ("tracestore_by_key", "vertex", ["hkey"], "tracestore"),
            ("kept_by_id", "vertex", ["xid"], "kept"),
            ("plse_by_key", "vertex", ["pkey"], "plse"),
            ("plse_by_addr", "vertex", ["paddr"], "plse"),
        ],
        vertex_centric=[
            ("health_by_at", "health", "OUT", "desc", "at"),
            ("took_by_start", "took", "OUT", "desc", "tstart"),
            ("change_by_at", "change", "OUT", "desc", "at"),
            ("keeps_by_start", "keeps", "OUT", "desc", "xstart"),
        ],
    )


async def ensure_schema(pool: GremlinPool, spec: dict[str, Any]) -> list[str]:
    """Create what is missing of ``spec`` in the pool's graph; the names created or reindexed."""
    try:
        got = await pool.submit(_ENSURE, {"spec": spec})
    except GremlinQueryError:
        # Another process may have created the same schema element at the same moment: the
        # second run sees it and creates nothing.
        got = await pool.submit(_ENSURE, {"spec": spec})
    return [str(x) for x in got]
