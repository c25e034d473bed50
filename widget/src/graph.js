// The data side of <service-topology>: GraphQL documents, fetching, and the flat graph the renderers
// draw ({nodes: Map name -> node, edges: Map "source->target" -> edge}).

export const LAYERS = ['NETWORK', 'IPC', 'TRACE'];
export const MODES = ['neighbourhood', 'blast-radius', 'root-cause', 'fleet'];
export const HEALTH_COLOURS = {
  HEALTHY: '#2e7d32',
  DEGRADED: '#f9a825',
  UNHEALTHY: '#c62828',
  UNKNOWN: '#8a8f98',
};
export const PAGE = 1000; // the server's largest page (TOPOLOGY_MAX_PAGE default)
export const MAX_FLEET_PAGES = 200;

const NODE = `name kind virtual tier domain owner { team email chat oncall } healthStatus(at: $at) { status reason }
  links { logs traces metrics }`;
const LAYER_EDGE = `layer protocol ports endpoints requests errors requestRate errorRate latencyP50 latencyP90
  latencyP99 intermediaries exemplarTraceIds connectionType health`;
const EDGE = `source target sourceKind targetKind layers perLayer { ${LAYER_EDGE} }`;
const ARGS = `$depth: Int!, $layers: [Layer!], $tier: [Int!], $domain: [String!], $at: DateTime, $window: Duration`;
const WALK = `depth: $depth, layers: $layers, tier: $tier, domain: $domain, at: $at, window: $window, first: ${PAGE}`;
const DEPS = `totalCount layers failedLayers { layer message }
  edges { node { depth via service { ${NODE} } edge { ${EDGE} } } }`;

export const NEIGHBOURHOOD = `query ServiceTopologyNeighbourhood($name: String!, ${ARGS}, $up: Boolean!, $down: Boolean!) {
  service(name: $name) { ${NODE}
    upstream(${WALK}) @include(if: $up) { ${DEPS} }
    downstream(${WALK}) @include(if: $down) { ${DEPS} }
  }
}`;

export const BLAST_RADIUS = `query ServiceTopologyBlastRadius($name: String!, $depth: Int, $layers: [Layer!], $tier: [Int!],
  $domain: [String!], $at: DateTime, $window: Duration) {
  service(name: $name) { ${NODE} }
  blastRadius(name: $name, depth: $depth, layers: $layers, tier: $tier, domain: $domain, at: $at, window: $window) {
    total countsByTier { tier count } unowned
    teams { team email chat oncall services }
    services(first: ${PAGE}) { edges { node { depth via service { ${NODE} } edge { ${EDGE} } } } }
  }
}`;

export const FLEET = `query ServiceTopologyFleet($layers: [Layer!], $tier: [Int!], $domain: [String!], $at: DateTime,
  $window: Duration, $after: String) {
  topology(layers: $layers, tier: $tier, domain: $domain, at: $at, window: $window, first: ${PAGE}, after: $after) {
    nodes { name kind tier domain healthStatus(at: $at) { status } }
    edges { source target sourceKind targetKind layers perLayer { layer requests errorRate requestRate health } }
    truncated pageInfo { endCursor hasNextPage }
  }
}`;

export const SUBSCRIPTION = `subscription ServiceTopologyChanges($service: String, $depth: Int, $layers: [Layer!]) {
  topologyChanges(service: $service, depth: $depth, layers: $layers) {
    at
    edgesAdded { ${EDGE} }
    edgesRemoved { source target }
    nodes { ${NODE.replace('(at: $at)', '')} }
  }
}`;

export const ROOT_CAUSE = `query ServiceTopologyRootCause($name: String!, $depth: Int, $layers: [Layer!], $at: DateTime,
  $window: Duration) {
  rootCause(name: $name, depth: $depth, layers: $layers, at: $at, window: $window, first: 5) {
    verdict candidates { rank score path service { name } }
  }
}`;

export const QUERY_FIELDS = `query ServiceTopologyFields { __type(name: "Query") { fields { name } } }`;

export const TRACE = `query ServiceTopologyTrace($id: String!) {
  trace(traceId: $id) { traceId spanCount truncated nodes { name kind } edges { source target calls errors durationMs } }
}`;

/** An edge the trace overlay draws where the map has none (it carries the trace's numbers, no layer's view). */
export function traceEdge(e) {
  return {
    id: edgeId(e.source, e.target), source: e.source, target: e.target, layers: ['TRACE'], perLayer: [],
    requests: e.calls, requestRate: 0, errorRate: e.calls ? e.errors / e.calls : 0,
    health: e.errors ? 'DEGRADED' : 'UNKNOWN', traceOnly: true,
  };
}

export class GraphQLError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code || 'ERROR';
  }
}

export async function post(endpoint, query, variables, signal, headers = {}) {
  const resp = await fetch(endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', ...headers },
    body: JSON.stringify({ query, variables }),
    signal,
    credentials: 'same-origin',
  });
  let body;
  try {
    body = await resp.json();
  } catch {
    throw new GraphQLError(`the server answered ${resp.status} without JSON`, 'HTTP');
  }
  if (!body.data && body.errors && body.errors.length) {
    const e = body.errors[0];
    throw new GraphQLError(e.message, (e.extensions && e.extensions.code) || 'ERROR');
  }
  return body;
}

export function edgeId(source, target) {
  return `${source}->${target}`;
}

export function emptyGraph() {
  return { nodes: new Map(), edges: new Map(), focus: null, truncated: false, extra: {} };
}

export function nodeFrom(svc, fallbackKind) {
  return {
    name: svc.name,
    kind: svc.kind || fallbackKind || 'UNKNOWN',
    virtual: svc.virtual ?? (svc.kind && svc.kind !== 'SERVICE'),
    tier: svc.tier ?? null,
    domain: svc.domain ?? null,
    owner: svc.owner || null,
    health: (svc.healthStatus && svc.healthStatus.status) || svc.health || 'UNKNOWN',
    reason: (svc.healthStatus && svc.healthStatus.reason) || null,
    links: svc.links || null,
    depth: svc.depth ?? null,
  };
}

export function edgeFrom(e) {
  const perLayer = e.perLayer || [];
  const requests = perLayer.reduce((n, l) => n + (l.requests || 0), 0);
  const rates = perLayer.map((l) => l.errorRate).filter((r) => typeof r === 'number');
  const health = worst(perLayer.map((l) => l.health));
  return {
    id: edgeId(e.source, e.target),
    source: e.source,
    target: e.target,
    sourceKind: e.sourceKind,
    targetKind: e.targetKind,
    layers: e.layers || perLayer.map((l) => l.layer),
    perLayer,
    requests,
    requestRate: perLayer.reduce((n, l) => n + (l.requestRate || 0), 0),
    errorRate: rates.length ? Math.max(...rates) : 0,
    health,
  };
}

const SEVERITY = { UNHEALTHY: 3, DEGRADED: 2, UNKNOWN: 1, HEALTHY: 0 };
export function worst(states) {
  let out = 'HEALTHY';
  for (const s of states) if (s && SEVERITY[s] > SEVERITY[out]) out = s;
  return states.length ? out : 'UNKNOWN';
}

export function isDegraded(health) {
  return health === 'DEGRADED' || health === 'UNHEALTHY';
}

function addNode(graph, node) {
  const old = graph.nodes.get(node.name);
  if (!old || (old.depth !== null && node.depth !== null && node.depth < old.depth)) graph.nodes.set(node.name, node);
}

function addEdge(graph, raw) {
  const e = edgeFrom(raw);
  graph.edges.set(e.id, e);
  for (const [name, kind] of [[e.source, e.sourceKind], [e.target, e.targetKind]]) {
    if (!graph.nodes.has(name)) graph.nodes.set(name, nodeFrom({ name, kind }));
  }
}

/** The graph of one neighbourhood answer (service { upstream downstream }). */
export function fromNeighbourhood(svc) {
  const g = emptyGraph();
  g.focus = svc.name;
  addNode(g, { ...nodeFrom(svc), depth: 0 });
  for (const field of ['upstream', 'downstream']) {
    const conn = svc[field];
    if (!conn) continue;
    for (const { node } of conn.edges) {
      addNode(g, { ...nodeFrom(node.service), depth: node.depth, side: field });
      addEdge(g, node.edge);
    }
    if (conn.totalCount > conn.edges.length) g.truncated = true;
  }
  return g;
}

export function fromBlastRadius(svc, radius) {
  const g = emptyGraph();
  g.focus = svc.name;
  addNode(g, { ...nodeFrom(svc), depth: 0 });
  for (const { node } of radius.services.edges) {
    addNode(g, { ...nodeFrom(node.service), depth: node.depth, side: 'downstream' });
    addEdge(g, node.edge);
  }
  g.truncated = radius.total > radius.services.edges.length;
  g.extra.blastRadius = { total: radius.total, teams: radius.teams, unowned: radius.unowned, countsByTier: radius.countsByTier };
  return g;
}

export function addFleetPage(g, page) {
  for (const n of page.nodes) if (!g.nodes.has(n.name)) g.nodes.set(n.name, nodeFrom(n));
  for (const e of page.edges) addEdge(g, e);
}

/** A host's own data ({nodes: [...], edges: [...]}, GraphQL-shaped) as a graph. */
export function fromPlain(data) {
  const g = emptyGraph();
  g.focus = data.focus || null;
  for (const n of data.nodes || []) g.nodes.set(n.name, nodeFrom(n));
  for (const e of data.edges || []) addEdge(g, e);
  return g;
}

/** Apply one topologyChanges payload to the graph in place; what changed, for the renderer. */
export function applyChange(g, change) {
  const added = [];
  const removed = [];
  const recoloured = [];
  for (const n of change.nodes || []) {
    const old = g.nodes.get(n.name);
    const fresh = nodeFrom(n);
    if (old) {
      if (old.health !== fresh.health) recoloured.push(n.name);
      Object.assign(old, { ...fresh, depth: old.depth, side: old.side });
    }
  }
  for (const raw of change.edgesAdded || []) {
    const id = edgeId(raw.source, raw.target);
    if (!g.edges.has(id)) added.push(id);
    addEdge(g, raw);
    for (const n of change.nodes || []) {
      if ((n.name === raw.source || n.name === raw.target) && !g.nodes.get(n.name).links) {
        Object.assign(g.nodes.get(n.name), nodeFrom(n));
      }
    }
  }
  for (const r of change.edgesRemoved || []) {
    const id = edgeId(r.source, r.target);
    if (g.edges.delete(id)) removed.push(id);
  }
  // A node left with no edge (and not the focus) goes with its last edge.
  const linked = new Set([g.focus]);
  for (const e of g.edges.values()) linked.add(e.source).add(e.target);
  for (const name of [...g.nodes.keys()]) if (!linked.has(name)) g.nodes.delete(name);
  return { added, removed, recoloured };
}
