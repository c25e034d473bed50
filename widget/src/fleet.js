// The WebGL renderer for large graphs (the fleet, or a neighbourhood past LARGE nodes): sigma.js over a
// graphology graph. First positions are computed at once (domains on a circle, each a sunflower of its
// services), then ForceAtlas2 refines them in a web worker for a bounded time, off the main thread.
// Positions are kept by name, so a redraw at another time moves nothing that was drawn before.
import Graph from 'graphology';
import Sigma from 'sigma';
import FA2Layout from 'graphology-layout-forceatlas2/worker';
import { HEALTH_COLOURS, isDegraded } from './graph.js';
import { edgeColour } from './layered.js';

export const LARGE = 400; // more nodes than this: WebGL
const GOLDEN = Math.PI * (3 - Math.sqrt(5));

export function seedPositions(nodes, known) {
  const byDomain = new Map();
  for (const n of nodes) {
    if (known.has(n.name)) continue;
    const d = n.domain || (n.kind !== 'SERVICE' ? `(${n.kind.toLowerCase()})` : '(none)');
    if (!byDomain.has(d)) byDomain.set(d, []);
    byDomain.get(d).push(n.name);
  }
  const domains = [...byDomain.keys()].sort();
  const total = Math.max(1, nodes.length);
  const ring = Math.sqrt(total) * 14;
  domains.forEach((d, i) => {
    const members = byDomain.get(d).sort();
    const a = (2 * Math.PI * i) / Math.max(1, domains.length);
    const cx = domains.length > 1 ? Math.cos(a) * ring : 0;
    const cy = domains.length > 1 ? Math.sin(a) * ring : 0;
    members.forEach((name, j) => {
      const r = 6 * Math.sqrt(j + 0.5);
      known.set(name, { x: cx + r * Math.cos(j * GOLDEN), y: cy + r * Math.sin(j * GOLDEN) });
    });
  });
}

export class FleetRenderer {
  constructor(host, handlers, options = {}) {
    this.host = host;
    this.handlers = handlers;
    this.positions = new Map();
    this.layoutMs = options.layoutMs ?? 4000;
    this.container = document.createElement('div');
    this.container.className = 'fleet';
    this.container.setAttribute('role', 'img');
    host.appendChild(this.container);
    this.graph = new Graph({ type: 'directed', multi: false, allowSelfLoops: true });
    this.sigma = null;
    this.fa2 = null;
  }

  resetPositions() {
    this.positions.clear();
  }

  draw(view) {
    const t0 = performance.now();
    this.stopLayout();
    seedPositions(view.nodes, this.positions);
    const g = this.graph;
    g.clear();
    const degree = new Map();
    for (const e of view.edges) {
      degree.set(e.source, (degree.get(e.source) || 0) + 1);
      degree.set(e.target, (degree.get(e.target) || 0) + 1);
    }
    const fresh = [];
    for (const n of view.nodes) {
      const p = this.positions.get(n.name);
      g.addNode(n.name, {
        x: p.x, y: p.y, label: n.name,
        size: Math.min(9, 1.5 + 0.8 * Math.sqrt(degree.get(n.name) || 0)) + (n.name === view.focus ? 4 : 0)
          + (isDegraded(n.health) ? 1 : 0),
        color: HEALTH_COLOURS[n.health] || HEALTH_COLOURS.UNKNOWN,
        forceLabel: n.name === view.focus, // other labels by sigma's density grid as one zooms in
        kind: n.kind,
      });
      if (p.fresh !== false) fresh.push(n.name);
    }
    for (const e of view.edges) {
      if (!g.hasNode(e.source) || !g.hasNode(e.target)) continue;
      g.mergeDirectedEdgeWithKey(e.id, e.source, e.target, {
        size: e.errorRate > 0 ? 1.2 : 0.5,
        color: e.errorRate > 0 ? edgeColour(e.errorRate) : '#b8bec8',
        type: 'arrow',
      });
    }
    this.container.setAttribute('aria-label', view.label);
    if (!this.sigma) {
      this.sigma = new Sigma(g, this.container, {
        defaultEdgeType: 'arrow',
        renderEdgeLabels: false,
        // Past a few thousand edges, panning and zooming show the nodes only until the camera stops
        // (software WebGL cannot redraw 15,000 arrows 30 times a second); labels likewise.
        hideEdgesOnMove: view.edges.length > 3000,
        hideLabelsOnMove: view.nodes.length > 3000,
        labelRenderedSizeThreshold: 8,
        labelDensity: 0.08,
        labelGridCellSize: 120,
        zIndex: true,
      });
      this.sigma.on('clickNode', ({ node }) => this.handlers.onNodeClick(view.lookup(node)));
      this.sigma.on('enterNode', ({ node, event }) => this.handlers.onHover({ node: view.lookup(node) },
        { clientX: event.original.clientX, clientY: event.original.clientY }));
      this.sigma.on('leaveNode', () => this.handlers.onLeave());
    } else {
      this.sigma.refresh();
    }
    this.lookup = view.lookup;
    const ms = performance.now() - t0;
    // Refine only what is new (first draw: everything), in a worker, for a bounded time.
    if (fresh.length && this.layoutMs > 0 && g.order > 1) this.runLayout();
    for (const name of fresh) this.positions.get(name).fresh = false;
    return ms;
  }

  runLayout() {
    this.fa2 = new FA2Layout(this.graph, {
      settings: { barnesHutOptimize: this.graph.order > 2000, gravity: 1, scalingRatio: 8, slowDown: 5 },
    });
    this.fa2.start();
    this.layoutTimer = setTimeout(() => this.stopLayout(), this.layoutMs);
  }

  stopLayout() {
    clearTimeout(this.layoutTimer);
    if (this.fa2) {
      this.fa2.kill();
      this.fa2 = null;
      this.graph.forEachNode((name, a) => {
        const p = this.positions.get(name);
        if (p) { p.x = a.x; p.y = a.y; }
      });
    }
  }

  destroy() {
    this.stopLayout();
    if (this.sigma) this.sigma.kill();
    this.container.remove();
  }
}
