// The WebGL renderer for large graphs (the fleet, or a neighbourhood past LARGE nodes): sigma.js over a
// graphology graph. First positions are computed at once (domains on a circle, each a sunflower of its
// services), then ForceAtlas2 refines them in a web worker for a bounded time, off the main thread.
// Positions are kept by name, so a redraw at another time moves nothing that was drawn before.
import Graph from 'graphology';
import Sigma from 'sigma';
import { EdgeArrowProgram, EdgeLineProgram, NodeCircleProgram, NodePointProgram } from 'sigma/rendering';
import FA2Layout from 'graphology-layout-forceatlas2/worker';
import { HEALTH_COLOURS, isDegraded } from './graph.js';
import { edgeColour } from './layered.js';

export const LARGE = 400; // more nodes than this: WebGL
export const HUGE = 3000; // more nodes (edges) than this: the cheap node (edge) program, hidden while moving

// sigma's settings by size. With software WebGL (no GPU: SwiftShader) a frame of the 10,000-service fleet
// costs 0.3-0.5 s to rasterise with sigma's point program against 1.1-1.4 s with its (instanced) circle
// program, and 0.7 s with plain lines against 2.2 s with arrows (docs/benchmarks.md): past HUGE the fleet
// is drawn with points and lines (direction then shows in a service's neighbourhood, a click away), and
// edges and labels are hidden while the camera moves.
export function tuning(nodes, edges) {
  return {
    nodeProgramClasses: { circle: nodes > HUGE ? NodePointProgram : NodeCircleProgram },
    edgeProgramClasses: { arrow: edges > HUGE ? EdgeLineProgram : EdgeArrowProgram },
    hideEdgesOnMove: edges > HUGE,
    hideLabelsOnMove: nodes > HUGE,
  };
}
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
    this.hideLayersOnMove = true; // see layersWhileMoving (the bench turns it off to compare)
  }

  // The node and edge programs sigma may use (the bench swaps them to compare their frame costs).
  static programs = { NodeCircleProgram, NodePointProgram, EdgeArrowProgram, EdgeLineProgram };

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
    // What the WebGL canvas holds (sigma draws the graphology graph): for tests and hosts.
    this.container.dataset.nodes = String(g.order);
    this.container.dataset.edges = String(g.size);
    const tuned = tuning(g.order, g.size);
    if (!this.sigma) {
      this.sigma = new Sigma(g, this.container, {
        ...tuned,
        defaultEdgeType: 'arrow',
        renderEdgeLabels: false,
        labelRenderedSizeThreshold: 8,
        labelDensity: 0.08,
        labelGridCellSize: 120,
        zIndex: true,
      });
      // sigma stacks seven canvases as large as the map (edges, edge labels, nodes, labels, hovers, hovered
      // nodes, mouse) and the browser composites every one each frame. Edge labels are never drawn here;
      // while the camera moves with edges and labels hidden, their layers are empty too: hiding them
      // leaves the compositor two. With software WebGL this is most of a moving frame (docs/benchmarks.md).
      this.sigma.getCanvases().edgeLabels.style.display = 'none';
      this.sigma.on('beforeRender', () => this.layersWhileMoving());
      this.sigma.on('clickNode', ({ node }) => this.handlers.onNodeClick(view.lookup(node)));
      this.sigma.on('enterNode', ({ node, event }) => this.handlers.onHover({ node: view.lookup(node) },
        { clientX: event.original.clientX, clientY: event.original.clientY }));
      this.sigma.on('leaveNode', () => this.handlers.onLeave());
    } else {
      for (const [key, value] of Object.entries(tuned)) {
        const now = this.sigma.getSetting(key);
        const same = typeof value === 'object' ? Object.keys(value).every((k) => now[k] === value[k]) : now === value;
        if (!same) this.sigma.setSetting(key, typeof value === 'object' ? { ...now, ...value } : value);
      }
      this.sigma.refresh();
    }
    this.lookup = view.lookup;
    const ms = performance.now() - t0;
    // Refine only what is new (first draw: everything), in a worker, for a bounded time.
    if (fresh.length && this.layoutMs > 0 && g.order > 1) this.runLayout();
    for (const name of fresh) this.positions.get(name).fresh = false;
    return ms;
  }

  layersWhileMoving() {
    const s = this.sigma;
    const m = s.getMouseCaptor();
    const moving = Boolean(s.getCamera().isAnimated() || m.isMoving || m.draggedEvents || m.currentWheelDirection);
    const hide = { edges: this.hideLayersOnMove && moving && s.getSetting('hideEdgesOnMove'),
      labels: this.hideLayersOnMove && moving && s.getSetting('hideLabelsOnMove') };
    const canvases = s.getCanvases();
    for (const [id, what] of [['edges', 'edges'], ['labels', 'labels'], ['hovers', 'labels'], ['hoverNodes', 'labels']]) {
      const visibility = hide[what] ? 'hidden' : '';
      if (canvases[id] && canvases[id].style.visibility !== visibility) canvases[id].style.visibility = visibility;
    }
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
