// The layered (left to right by call depth) SVG renderer for neighbourhoods, laid out with dagre.
// Positions are kept by name across redraws: a node seen before keeps its place, a new one is placed
// where dagre puts it, moved down until it overlaps nothing.
import dagre from '@dagrejs/dagre';
import { HEALTH_COLOURS, isDegraded } from './graph.js';

const SVG = 'http://www.w3.org/2000/svg';
export const NODE_W = 168;
export const NODE_H = 38;
const GAP = 14;

const KIND_GLYPH = {
  SERVICE: '', DATABASE: 'DB', MESSAGING: 'MQ', EXTERNAL: 'EXT', UNINSTRUMENTED: '?', USER: 'USER', UNKNOWN: '?',
};

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

export function edgeColour(errorRate) {
  if (!(errorRate > 0)) return '#6b7280';
  if (errorRate < 0.01) return '#d97706';
  return '#dc2626';
}

export function edgeDash(layers) {
  if (layers.includes('IPC') || layers.length > 1) return null; // solid: seen by the kernel's calls
  if (layers.includes('NETWORK')) return '6 4';
  return '2 4'; // TRACE only
}

export function edgeWidth(requestRate) {
  return Math.min(6, 1.2 + Math.log10(1 + (requestRate || 0)));
}

function shortName(name) {
  return name.length > 22 ? `${name.slice(0, 20)}…` : name;
}

export function describeNode(n) {
  const parts = [n.name, n.kind.toLowerCase(), n.health.toLowerCase()];
  if (n.tier !== null && n.tier !== undefined) parts.push(`tier ${n.tier}`);
  if (n.owner) parts.push(`owned by ${n.owner.team}`);
  return parts.join(', ');
}

export function describeEdge(e, visibleLayers) {
  const layers = e.layers.filter((l) => visibleLayers.has(l));
  const pct = (e.errorRate * 100).toFixed(e.errorRate && e.errorRate < 0.01 ? 2 : 1);
  return `${e.source} calls ${e.target} (${layers.join(', ')}), error rate ${pct}%`;
}

export class LayeredRenderer {
  constructor(host, handlers) {
    this.host = host; // a div in the shadow root
    this.handlers = handlers; // {onNodeClick, onEdgeClick, onHover, onLeave}
    this.positions = new Map();
    this.svg = el('svg', { class: 'layered', role: 'group', 'aria-roledescription': 'topology graph' });
    this.defs = el('defs', {}, this.svg);
    for (const [id, colour] of [['arrow', '#6b7280'], ['arrow-warn', '#d97706'], ['arrow-err', '#dc2626']]) {
      const m = el('marker', { id, viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 9, markerHeight: 9,
        markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' }, this.defs);
      el('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: colour }, m);
    }
    this.viewport = el('g', { class: 'viewport' }, this.svg);
    this.edgeLayer = el('g', { class: 'edges' }, this.viewport);
    this.nodeLayer = el('g', { class: 'nodes' }, this.viewport);
    host.appendChild(this.svg);
    this.view = { x: 0, y: 0, k: 1 };
    this.installPanZoom();
  }

  resetPositions() {
    this.positions.clear();
  }

  installPanZoom() {
    let drag = null;
    this.svg.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      const k = Math.min(4, Math.max(0.1, this.view.k * (ev.deltaY < 0 ? 1.1 : 1 / 1.1)));
      const r = this.svg.getBoundingClientRect();
      const px = ev.clientX - r.left;
      const py = ev.clientY - r.top;
      this.view.x = px - ((px - this.view.x) * k) / this.view.k;
      this.view.y = py - ((py - this.view.y) * k) / this.view.k;
      this.view.k = k;
      this.applyView();
    }, { passive: false });
    this.svg.addEventListener('pointerdown', (ev) => {
      if (ev.target.closest('[data-node]')) return;
      drag = { x: ev.clientX, y: ev.clientY, vx: this.view.x, vy: this.view.y };
    });
    window.addEventListener('pointermove', (ev) => {
      if (!drag) return;
      this.view.x = drag.vx + ev.clientX - drag.x;
      this.view.y = drag.vy + ev.clientY - drag.y;
      this.applyView();
    });
    window.addEventListener('pointerup', () => { drag = null; });
  }

  applyView() {
    this.viewport.setAttribute('transform', `translate(${this.view.x},${this.view.y}) scale(${this.view.k})`);
  }

  fit() {
    const r = this.svg.getBoundingClientRect();
    if (!r.width || !this.positions.size) return;
    let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
    for (const name of this.drawn || []) {
      const p = this.positions.get(name);
      if (!p) continue;
      x0 = Math.min(x0, p.x - NODE_W / 2); x1 = Math.max(x1, p.x + NODE_W / 2);
      y0 = Math.min(y0, p.y - NODE_H / 2); y1 = Math.max(y1, p.y + NODE_H / 2);
    }
    if (!Number.isFinite(x0)) return;
    const pad = 24;
    const k = Math.min(1.4, (r.width - 2 * pad) / (x1 - x0 || 1), (r.height - 2 * pad) / (y1 - y0 || 1));
    this.view = { k, x: (r.width - (x1 - x0) * k) / 2 - x0 * k, y: (r.height - (y1 - y0) * k) / 2 - y0 * k };
    this.applyView();
  }

  /** Positions for every node of ``nodes``: kept ones stay, new ones from dagre without overlaps. */
  layout(nodes, edges) {
    const fresh = nodes.filter((n) => !this.positions.has(n.name));
    if (!fresh.length) return;
    const g = new dagre.graphlib.Graph();
    // dagre's default ranker (network simplex) grows steeply with size (a 2,000-node DAG took 114 s,
    // longest-path 2.4 s: docs/design graphql.md); past 150 nodes rank by longest path.
    const ranker = nodes.length > 150 ? 'longest-path' : 'network-simplex';
    g.setGraph({ rankdir: 'LR', nodesep: 18, ranksep: 70, marginx: 10, marginy: 10, ranker });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of nodes) g.setNode(n.name, { width: NODE_W, height: NODE_H });
    for (const e of edges) if (e.source !== e.target) g.setEdge(e.source, e.target);
    dagre.layout(g);
    const kept = nodes.length - fresh.length;
    for (const n of fresh) {
      const p = g.node(n.name);
      let y = p.y;
      if (kept) {
        while (this.overlaps(p.x, y, n.name)) y += NODE_H + GAP;
      }
      this.positions.set(n.name, { x: p.x, y });
    }
  }

  overlaps(x, y, self) {
    for (const [name, p] of this.positions) {
      if (name !== self && Math.abs(p.x - x) < NODE_W + GAP && Math.abs(p.y - y) < NODE_H + GAP) return true;
    }
    return false;
  }

  /** Place a node arriving live next to a neighbour that is already drawn (no relayout). */
  placeNear(name, neighbour, right) {
    if (this.positions.has(name)) return;
    const p = this.positions.get(neighbour) || { x: 0, y: 0 };
    const x = p.x + (right ? 1 : -1) * (NODE_W + 70);
    let y = p.y;
    while (this.overlaps(x, y, name)) y += NODE_H + GAP;
    this.positions.set(name, { x, y });
  }

  draw(view) {
    // view: {nodes: [...], edges: [...], focus, visibleLayers: Set, selected, highlight: Set of edge ids,
    //        ranked: Map name -> rank}
    const t0 = performance.now();
    this.layout(view.nodes, view.edges);
    this.edgeLayer.replaceChildren();
    this.nodeLayer.replaceChildren();
    this.drawn = view.nodes.map((n) => n.name);
    this.svg.setAttribute('aria-label', view.label);
    for (const e of view.edges) this.drawEdge(e, view);
    for (const n of view.nodes) this.drawNode(n, view);
    this.rovingIndex(view.selected || view.focus);
    return performance.now() - t0;
  }

  drawEdge(e, view) {
    const a = this.positions.get(e.source);
    const b = this.positions.get(e.target);
    if (!a || !b) return;
    const g = el('g', {
      class: 'edge', 'data-edge': e.id, 'data-source': e.source, 'data-target': e.target,
      'data-layers': e.layers.filter((l) => view.visibleLayers.has(l)).join(' '),
      'data-error-rate': e.errorRate, 'data-health': e.health,
    }, this.edgeLayer);
    if (view.highlight && view.highlight.has(e.id)) g.classList.add('highlight');
    const x1 = a.x + NODE_W / 2; const y1 = a.y;
    const x2 = b.x - NODE_W / 2; const y2 = b.y;
    let d;
    if (x2 > x1 + 10) {
      const mx = (x1 + x2) / 2;
      d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
    } else { // a call back to the left (a cycle): loop under the nodes
      const low = Math.max(a.y, b.y) + NODE_H;
      d = `M ${x1} ${y1} C ${x1 + 60} ${low}, ${x2 - 60} ${low}, ${x2} ${y2}`;
    }
    const colour = edgeColour(e.errorRate);
    const marker = colour === '#dc2626' ? 'arrow-err' : colour === '#d97706' ? 'arrow-warn' : 'arrow';
    el('path', { class: 'hit', d, stroke: 'transparent', 'stroke-width': 12, fill: 'none' }, g);
    el('path', { class: 'line', d, stroke: colour, 'stroke-width': edgeWidth(e.requestRate), fill: 'none',
      'stroke-dasharray': edgeDash(e.layers.filter((l) => view.visibleLayers.has(l))),
      'marker-end': `url(#${marker})` }, g);
    const title = el('title', {}, g);
    title.textContent = describeEdge(e, view.visibleLayers);
    g.addEventListener('pointerenter', (ev) => this.handlers.onHover({ edge: e }, ev));
    g.addEventListener('pointerleave', () => this.handlers.onLeave());
    g.addEventListener('click', () => this.handlers.onEdgeClick(e));
  }

  drawNode(n, view) {
    const p = this.positions.get(n.name);
    const fill = HEALTH_COLOURS[n.health] || HEALTH_COLOURS.UNKNOWN;
    const g = el('g', {
      class: `node kind-${n.kind.toLowerCase()}`, 'data-node': n.name, 'data-kind': n.kind, 'data-health': n.health,
      transform: `translate(${p.x - NODE_W / 2},${p.y - NODE_H / 2})`, role: 'button', tabindex: -1,
      'aria-label': describeNode(n),
    }, this.nodeLayer);
    if (n.name === view.focus) g.classList.add('focus');
    if (n.name === view.selected) g.setAttribute('aria-pressed', 'true');
    if (view.ranked && view.ranked.has(n.name)) g.classList.add('ranked');
    const shape = {
      SERVICE: { rx: 8, dash: null },
      DATABASE: { rx: 18, dash: null },
      MESSAGING: { rx: 2, dash: null },
      EXTERNAL: { rx: 8, dash: '5 3' },
      UNINSTRUMENTED: { rx: 8, dash: '2 3' },
      USER: { rx: 19, dash: null },
      UNKNOWN: { rx: 8, dash: '2 3' },
    }[n.kind] || { rx: 8, dash: null };
    el('rect', { class: 'shape', width: NODE_W, height: NODE_H, rx: shape.rx, fill, 'fill-opacity': 0.18,
      stroke: fill, 'stroke-width': n.name === view.focus ? 3 : 1.6, 'stroke-dasharray': shape.dash }, g);
    el('rect', { class: 'health', width: 6, height: NODE_H - 8, x: 5, y: 4, rx: 3, fill }, g);
    const glyph = KIND_GLYPH[n.kind] || '';
    if (glyph) {
      const t = el('text', { x: NODE_W - 8, y: 14, 'text-anchor': 'end', class: 'glyph' }, g);
      t.textContent = glyph;
    }
    const label = el('text', { x: 18, y: n.tier !== null || n.domain ? 17 : 24, class: 'label' }, g);
    label.textContent = shortName(n.name);
    if (n.tier !== null || n.domain) {
      const sub = el('text', { x: 18, y: 31, class: 'sub' }, g);
      sub.textContent = [n.tier !== null ? `tier ${n.tier}` : null, n.domain].filter(Boolean).join(' · ');
    }
    if (isDegraded(n.health)) g.classList.add('degraded');
    g.addEventListener('pointerenter', (ev) => this.handlers.onHover({ node: n }, ev));
    g.addEventListener('pointerleave', () => this.handlers.onLeave());
    g.addEventListener('click', () => this.handlers.onNodeClick(n));
    g.addEventListener('keydown', (ev) => this.onKey(ev, n, view));
  }

  rovingIndex(name) {
    const nodes = [...this.nodeLayer.querySelectorAll('[data-node]')];
    const target = nodes.find((g) => g.dataset.node === name) || nodes[0];
    if (target) target.setAttribute('tabindex', '0');
  }

  /** Arrow keys walk the graph: right to a callee, left to a caller, up/down within the column. */
  onKey(ev, n, view) {
    const p = this.positions.get(n.name);
    let next = null;
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      this.handlers.onNodeClick(n);
      return;
    }
    if (ev.key === 'ArrowRight' || ev.key === 'ArrowLeft') {
      const right = ev.key === 'ArrowRight';
      const cands = view.edges.filter((e) => (right ? e.source === n.name : e.target === n.name))
        .map((e) => (right ? e.target : e.source));
      next = nearest(cands, p, this.positions);
    } else if (ev.key === 'ArrowUp' || ev.key === 'ArrowDown') {
      const down = ev.key === 'ArrowDown';
      const column = view.nodes.map((m) => m.name).filter((m) => {
        const q = this.positions.get(m);
        return m !== n.name && q && Math.abs(q.x - p.x) < NODE_W / 2 && (down ? q.y > p.y : q.y < p.y);
      });
      next = nearest(column, p, this.positions);
    } else if (ev.key === 'Escape') {
      this.handlers.onEscape();
      return;
    } else {
      return;
    }
    ev.preventDefault();
    if (next) this.focusNode(next);
  }

  focusNode(name) {
    for (const g of this.nodeLayer.querySelectorAll('[data-node]')) {
      const me = g.dataset.node === name;
      g.setAttribute('tabindex', me ? '0' : '-1');
      if (me) g.focus();
    }
  }

  destroy() {
    this.svg.remove();
  }
}

function nearest(names, p, positions) {
  let best = null; let bestD = Infinity;
  for (const m of names) {
    const q = positions.get(m);
    if (!q) continue;
    const d = Math.hypot(q.x - p.x, q.y - p.y);
    if (d < bestD) { bestD = d; best = m; }
  }
  return best;
}
