// <service-topology>: the embeddable topology map. A framework-free custom element (one ES module):
//
//   <script type="module" src="/widget/service-topology.js"></script>
//   <service-topology endpoint="/graphql" service="checkout-api" direction="both" depth="2"></service-topology>
//
// Attributes (all optional but `service` outside fleet mode):
//   endpoint   GraphQL URL (default /graphql on the page's origin)
//   service    the service in the middle; click another node to focus it
//   direction  upstream (what it calls) | downstream (what calls it) | both (default)
//   depth      hops (default 2)
//   layers     comma-separated NETWORK,IPC,TRACE asked from the server (default: all)
//   tier       comma-separated tiers; domain: comma-separated domains (services returned; the walk passes)
//   at         ISO 8601 instant to travel to (default: now); window: duration such as 15m
//   mode       neighbourhood (default) | blast-radius | root-cause | fleet
//   trace-id   a trace (32 hex digits) drawn over the map: its calls from Query.trace, highlighted, with
//              the calls the map does not have added; when the server has no Query.trace or no longer
//              keeps the trace, the edges whose exemplar trace ids name it
//   live       present: updates arrive over the topologyChanges subscription and are drawn in place
//   toolbar    "none" hides the layer toggles, degraded-only switch and time slider
//
// JavaScript API: element.refresh(), element.focusService(name), element.setData({nodes, edges, focus}),
// element.graph (the drawn {nodes, edges}), element.setLayerVisible(layer, on), element.degradedOnly,
// element.showVirtual (false collapses databases, queues, external hosts and users away),
// element.exportUrl(format), element.headers (e.g. {Authorization: 'Bearer …'}: sent with every request
// and in the subscription's connection_init). Events (bubbling, composed): node-select {detail: node}, edge-select
// {detail: edge}, topology-render {detail: {nodes, edges, renderer, ms}}, topology-error {detail: {message, code}},
// topology-live {detail: {state, change}}.
import {
  BLAST_RADIUS, FLEET, HEALTH_COLOURS, LAYERS, MAX_FLEET_PAGES, MODES, NEIGHBOURHOOD, QUERY_FIELDS, ROOT_CAUSE,
  SUBSCRIPTION, TRACE, edgeId,
  addFleetPage, applyChange, emptyGraph, fromBlastRadius, fromNeighbourhood, fromPlain, isDegraded, nodeFrom, post,
  traceEdge,
} from './graph.js';
import { LayeredRenderer, describeEdge } from './layered.js';
import { FleetRenderer, LARGE } from './fleet.js';
import { LiveSubscription } from './live.js';
import { CSS } from './style.js';

const ATTRIBUTES = ['endpoint', 'service', 'direction', 'depth', 'layers', 'tier', 'domain', 'at', 'window', 'mode',
  'trace-id', 'live', 'toolbar'];
const SLIDER_MINUTES = 24 * 60;

function list(value) {
  return value ? value.split(',').map((s) => s.trim()).filter(Boolean) : null;
}

function escapeHtml(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function fmt(n, digits = 1) {
  return n === null || n === undefined ? '–' : Number(n).toFixed(digits);
}

export class ServiceTopology extends HTMLElement {
  static get observedAttributes() { return ATTRIBUTES; }

  constructor() {
    super();
    this.attachShadow({ mode: 'open' });
    this.shadowRoot.innerHTML = `<style>${CSS}</style>
      <div class="toolbar" part="toolbar" role="toolbar" aria-label="Map controls">
        <span class="layers" role="group" aria-label="Layers">${LAYERS.map((l) => `<label><input type="checkbox"
          name="layer" value="${l}" checked> ${l}</label>`).join('')}</span>
        <label><input type="checkbox" name="degraded"> degraded only</label>
        <label title="databases, queues, external hosts, users: seen only from their peers"><input type="checkbox"
          name="virtual" checked> virtual nodes</label>
        <label class="time">time <input type="range" name="time" min="0" max="${SLIDER_MINUTES}" step="5" value="0"
          aria-label="Minutes before now"></label><output name="when">now</output>
        <span class="status" role="status" aria-live="polite"></span>
      </div>
      <div class="stage" part="stage"></div>
      <div class="tooltip" role="tooltip" hidden></div>
      <aside class="panel" part="panel" aria-live="polite" hidden></aside>
      <ul class="sr-only edges-list" aria-label="Calls drawn"></ul>`;
    this.$ = (sel) => this.shadowRoot.querySelector(sel);
    this.stage = this.$('.stage');
    this.data = emptyGraph();
    this.visibleLayers = new Set(LAYERS);
    this._degradedOnly = false;
    this._showVirtual = true;
    this.selected = null;
    this.renderer = null;
    this.generation = 0;
    this.queryFields = null;
    this.headers = {}; // sent with every request and in the WebSocket's connection_init (e.g. Authorization)
    this.handlers = {
      onNodeClick: (n) => this.onNodeClick(n),
      onEdgeClick: (e) => this.select({ edge: e }),
      onHover: (what, ev) => this.showTooltip(what, ev),
      onLeave: () => { this.$('.tooltip').hidden = true; },
      onEscape: () => this.select(null),
    };
    this.shadowRoot.addEventListener('change', (ev) => this.onControl(ev));
    this.$('input[name=time]').addEventListener('input', (ev) => { this.$('output[name=when]').textContent = this.sliderLabel(ev.target.value); });
  }

  // -- lifecycle -------------------------------------------------------------------------------------
  connectedCallback() {
    this.setAttribute('role', this.getAttribute('role') || 'region');
    if (!this.hasAttribute('aria-label')) this.setAttribute('aria-label', 'Service topology map');
    this.$('.toolbar').hidden = this.getAttribute('toolbar') === 'none';
    this.scheduleLoad();
  }

  disconnectedCallback() {
    this.stopLive();
    if (this.abort) this.abort.abort();
  }

  attributeChangedCallback(name, old, value) {
    if (old === value || !this.isConnected) return;
    if (name === 'toolbar') { this.$('.toolbar').hidden = value === 'none'; return; }
    if (name === 'trace-id') {
      // a load under way (or about to start) draws the overlay with its graph: drawing now would show
      // the trace over a map that is not there yet
      this.loadTrace().then(() => { if (!this.pending && !this.loading) this.redraw(); });
      return;
    }
    if (name === 'service' || name === 'mode' || name === 'direction') this.renderer && this.renderer.resetPositions();
    if (name === 'at') this.syncSlider();
    this.scheduleLoad();
  }

  scheduleLoad() {
    if (this.pending) return;
    this.pending = Promise.resolve().then(() => { this.pending = null; return this.refresh(); });
  }

  // -- attributes as properties ----------------------------------------------------------------------
  get endpoint() { return this.getAttribute('endpoint') || '/graphql'; }
  set endpoint(v) { this.setAttribute('endpoint', v); }
  get service() { return this.getAttribute('service'); }
  set service(v) { if (v) this.setAttribute('service', v); else this.removeAttribute('service'); }
  get direction() { const d = this.getAttribute('direction'); return ['upstream', 'downstream'].includes(d) ? d : 'both'; }
  set direction(v) { this.setAttribute('direction', v); }
  get depth() { const d = Number.parseInt(this.getAttribute('depth') || '2', 10); return Number.isFinite(d) && d > 0 ? d : 2; }
  set depth(v) { this.setAttribute('depth', String(v)); }
  get mode() { const m = this.getAttribute('mode'); return MODES.includes(m) ? m : 'neighbourhood'; }
  set mode(v) { this.setAttribute('mode', v); }
  get at() { return this.getAttribute('at'); }
  set at(v) { if (v) this.setAttribute('at', v); else this.removeAttribute('at'); }
  get live() { return this.hasAttribute('live'); }
  set live(v) { this.toggleAttribute('live', Boolean(v)); }
  get graph() { const v = this.visible(); return { nodes: v.nodes, edges: v.edges, focus: v.focus }; }
  get showVirtual() { return this._showVirtual; }
  set showVirtual(v) { this._showVirtual = Boolean(v); this.$('input[name=virtual]').checked = this._showVirtual; this.redraw(); }
  get degradedOnly() { return this._degradedOnly; }
  set degradedOnly(v) { this._degradedOnly = Boolean(v); this.$('input[name=degraded]').checked = this._degradedOnly; this.redraw(); }

  variables() {
    return {
      name: this.service,
      depth: this.depth,
      layers: list(this.getAttribute('layers')),
      tier: (list(this.getAttribute('tier')) || null)?.map(Number) ?? null,
      domain: list(this.getAttribute('domain')),
      at: this.at || null,
      window: this.getAttribute('window') || null,
    };
  }

  // -- loading ---------------------------------------------------------------------------------------
  async refresh() {
    const gen = ++this.generation;
    this.loading = true;
    try {
      await this.load(gen);
    } finally {
      if (gen === this.generation) this.loading = false;
    }
  }

  async load(gen) {
    if (this.abort) this.abort.abort();
    this.abort = new AbortController();
    const signal = this.abort.signal;
    const mode = this.mode;
    const vars = this.variables();
    this.status(mode === 'fleet' ? 'loading the fleet…' : `loading ${vars.name || ''}…`);
    try {
      let g;
      if (mode === 'fleet') {
        g = emptyGraph();
        let after = null;
        for (let page = 0; page < MAX_FLEET_PAGES; page++) {
          const { data } = await post(this.endpoint, FLEET, { layers: vars.layers, tier: vars.tier, domain: vars.domain,
            at: vars.at, window: vars.window, after }, signal, this.headers);
          addFleetPage(g, data.topology);
          if (!data.topology.pageInfo.hasNextPage) break;
          after = data.topology.pageInfo.endCursor;
          if (gen !== this.generation) return;
          this.status(`loading the fleet… ${g.nodes.size} services`);
        }
      } else {
        if (!vars.name) { this.status('no service chosen'); this.setGraph(emptyGraph()); return; }
        if (mode === 'blast-radius') {
          const { data } = await post(this.endpoint, BLAST_RADIUS, vars, signal, this.headers);
          if (!data.service || !data.blastRadius) return this.notFound(vars.name);
          g = fromBlastRadius(data.service, data.blastRadius);
        } else {
          // root-cause: where the trouble of a service comes from lies in what it calls.
          const dir = mode === 'root-cause' ? 'upstream' : this.direction;
          const { data } = await post(this.endpoint, NEIGHBOURHOOD, { ...vars, up: dir !== 'downstream', down: dir !== 'upstream' }, signal, this.headers);
          if (!data.service) return this.notFound(vars.name);
          g = fromNeighbourhood(data.service);
          if (mode === 'root-cause') await this.rankRootCause(g, signal);
        }
      }
      await this.loadTrace(signal);
      if (gen !== this.generation) return;
      this.setGraph(g);
      this.restartLive();
    } catch (e) {
      if (e.name === 'AbortError') return;
      this.status(`error: ${e.message}`);
      this.emit('topology-error', { message: e.message, code: e.code || 'NETWORK' });
    }
  }

  notFound(name) {
    this.setGraph(emptyGraph());
    this.status(`unknown service ${name}`);
    this.emit('topology-error', { message: `unknown service ${name}`, code: 'NOT_FOUND' });
  }

  /** Whether the server's Query has `field` (asked once). */
  async hasQueryField(field, signal) {
    if (!this.queryFields) {
      try {
        const { data } = await post(this.endpoint, QUERY_FIELDS, {}, signal, this.headers);
        this.queryFields = new Set(data.__type.fields.map((f) => f.name));
      } catch (e) {
        if (e.name === 'AbortError') throw e;
        this.queryFields = new Set();
      }
    }
    return this.queryFields.has(field);
  }

  /** The overlay of the `trace-id` attribute: the trace's calls from Query.trace (`source: 'trace'`), or,
   * when the server has no Query.trace or no longer keeps the trace, the exemplar edges (`'exemplars'`). */
  async loadTrace(signal) {
    const id = (this.getAttribute('trace-id') || '').trim();
    if (!id) { this.traceOverlay = null; return; }
    if (this.traceOverlay && this.traceOverlay.id === id) return;
    let overlay = { id, source: 'exemplars', edges: [], nodes: [] };
    try {
      if (await this.hasQueryField('trace', signal)) {
        const { data } = await post(this.endpoint, TRACE, { id }, signal, this.headers);
        if (data && data.trace) overlay = { id, source: 'trace', edges: data.trace.edges, nodes: data.trace.nodes, truncated: data.trace.truncated };
      }
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      this.emit('topology-error', { message: `trace ${id}: ${e.message}`, code: e.code || 'NETWORK' });
    }
    if ((this.getAttribute('trace-id') || '').trim() === id) this.traceOverlay = overlay;
  }

  /** The root-cause ranking, when the server has `rootCause`; otherwise degraded callees by depth. */
  async rankRootCause(g, signal) {
    if (await this.hasQueryField('rootCause', signal)) {
      const v = this.variables();
      const { data } = await post(this.endpoint, ROOT_CAUSE, { name: g.focus, depth: v.depth, layers: v.layers, at: v.at,
        window: v.window }, signal, this.headers);
      const rc = data.rootCause;
      if (rc) {
        const path = new Set();
        for (const c of rc.candidates) {
          for (let i = 1; i < c.path.length; i++) path.add(edgeId(c.path[i - 1], c.path[i])).add(edgeId(c.path[i], c.path[i - 1]));
        }
        g.extra.rootCause = { source: 'rootCause', verdict: rc.verdict, ranked: rc.candidates.map((c) => c.service.name), path };
        return;
      }
    }
    // Without Query.rootCause: the degraded services it calls, unhealthy first, deepest first.
    const ranked = [...g.nodes.values()].filter((n) => n.name !== g.focus && isDegraded(n.health))
      .sort((a, b) => (b.health === 'UNHEALTHY') - (a.health === 'UNHEALTHY') || (b.depth ?? 0) - (a.depth ?? 0));
    g.extra.rootCause = { source: 'health', ranked: ranked.map((n) => n.name), path: new Set() };
  }

  /** Draw a host's own data (GraphQL-shaped nodes and edges) instead of querying. */
  setData(data) {
    this.generation++;
    this.setGraph(fromPlain(data));
  }

  focusService(name) {
    this.service = name;
  }

  setLayerVisible(layer, on) {
    if (on) this.visibleLayers.add(layer); else this.visibleLayers.delete(layer);
    const box = this.$(`input[name=layer][value=${layer}]`);
    if (box) box.checked = Boolean(on);
    this.redraw();
  }

  exportUrl(format = 'json') {
    const u = new URL(this.endpoint, document.baseURI);
    u.pathname = u.pathname.replace(/\/graphql$/, '') + '/export';
    const v = this.variables();
    const p = new URLSearchParams({ format });
    if (this.mode !== 'fleet' && v.name) { p.set('service', v.name); p.set('direction', this.direction); p.set('depth', v.depth); }
    for (const k of ['layers', 'tier', 'domain']) if (this.getAttribute(k)) p.set(k, this.getAttribute(k));
    if (v.at) p.set('at', v.at);
    if (v.window) p.set('window', v.window);
    u.search = p.toString();
    return u.toString();
  }

  // -- drawing ---------------------------------------------------------------------------------------
  setGraph(g) {
    if (g.focus !== this.data.focus || !this.renderer) this.needFit = true; // same focus: the view stays put
    this.data = g;
    this.redraw();
  }

  visible() {
    const g = this.data;
    let edges = [...g.edges.values()].filter((e) => e.layers.some((l) => this.visibleLayers.has(l)));
    // Every node while every layer shows; with layers hidden, the nodes their edges still reach.
    let names = this.visibleLayers.size === LAYERS.length ? new Set(g.nodes.keys()) : new Set([g.focus].filter(Boolean));
    for (const e of edges) names.add(e.source).add(e.target);
    if (this._degradedOnly) {
      const bad = new Set([...g.nodes.values()].filter((n) => isDegraded(n.health)).map((n) => n.name));
      edges = edges.filter((e) => (bad.has(e.source) || bad.has(e.target)) || isDegraded(e.health) || e.errorRate > 0);
      names = new Set([g.focus, ...bad].filter(Boolean));
      for (const e of edges) names.add(e.source).add(e.target);
    }
    let nodes = [...names].map((n) => g.nodes.get(n)).filter(Boolean);
    if (!this._showVirtual) { // collapsed: virtual nodes and the calls to and from them go
      const real = (name) => name === g.focus || (g.nodes.get(name) || {}).kind === 'SERVICE';
      nodes = nodes.filter((n) => real(n.name));
      edges = edges.filter((e) => real(e.source) && real(e.target));
    }
    const t = this.traceOverlay;
    if (t && t.source === 'trace' && this.mode !== 'fleet') { // the trace's calls, drawn whatever the map has
      const have = new Set(edges.map((e) => e.id));
      const named = new Set(nodes.map((n) => n.name));
      for (const n of t.nodes) {
        if (!named.has(n.name)) { nodes.push(g.nodes.get(n.name) || nodeFrom(n)); named.add(n.name); }
      }
      for (const e of t.edges) {
        const id = edgeId(e.source, e.target);
        if (!have.has(id)) edges.push(g.edges.get(id) || traceEdge(e));
      }
    }
    return { nodes, edges, focus: g.focus };
  }

  /** Ids of the edges the `trace-id` overlay highlights, and the trace's numbers by edge id. */
  traceHighlight(edges) {
    const t = this.traceOverlay;
    const calls = new Map();
    if (!t) return { ids: new Set(), calls };
    if (t.source === 'trace') {
      for (const e of t.edges) calls.set(edgeId(e.source, e.target), e);
      return { ids: new Set(calls.keys()), calls };
    }
    return { ids: new Set(edges.filter((e) => e.perLayer.some((l) => (l.exemplarTraceIds || []).includes(t.id))).map((e) => e.id)), calls };
  }

  redraw() {
    const t0 = performance.now();
    const v = this.visible();
    const large = this.mode === 'fleet' || v.nodes.length > LARGE;
    const Kind = large ? FleetRenderer : LayeredRenderer;
    if (!(this.renderer instanceof Kind)) {
      if (this.renderer) this.renderer.destroy();
      this.needFit = true;
      this.renderer = new Kind(this.stage, this.handlers);
    }
    const trace = this.traceHighlight(v.edges);
    const highlight = new Set(trace.ids);
    for (const id of (this.data.extra.rootCause && this.data.extra.rootCause.path) || []) highlight.add(id);
    const ranked = new Set((this.data.extra.rootCause && this.data.extra.rootCause.ranked) || []);
    const degraded = v.nodes.filter((n) => isDegraded(n.health)).length;
    const label = this.mode === 'fleet'
      ? `Fleet map: ${v.nodes.length} services, ${v.edges.length} calls, ${degraded} degraded or unhealthy`
      : `Topology around ${v.focus || 'nothing'}: ${v.nodes.length} services, ${v.edges.length} calls, ${degraded} degraded or unhealthy`;
    const view = { ...v, visibleLayers: this.visibleLayers, selected: this.selected, highlight, ranked, label,
      lookup: (name) => this.data.nodes.get(name) };
    this.renderer.draw(view);
    this.describe(v, large, trace);
    this.renderPanel();
    const ms = performance.now() - t0;
    this.lastRender = { nodes: v.nodes.length, edges: v.edges.length, renderer: large ? 'webgl' : 'svg', ms };
    const t = this.traceOverlay;
    const traced = !t ? '' : t.source === 'trace'
      ? ` · trace ${t.id}: ${t.edges.length} calls${t.truncated ? ' (truncated)' : ''}`
      : ` · trace ${t.id}: not kept, ${trace.ids.size} calls by exemplars`;
    this.status(`${label}${this.data.truncated ? ' (truncated)' : ''}${traced}`);
    this.emit('topology-render', this.lastRender);
    if (!large && this.needFit) { this.renderer.fit(); this.needFit = false; }
  }

  /** A text description of the calls drawn, for screen readers (and tests); the calls of the trace
   * overlay say so (`data-trace` holds the trace id). */
  describe(v, large, trace) {
    const ul = this.$('.edges-list');
    ul.replaceChildren();
    if (large) return; // the canvas' label summarises; thousands of items help nobody
    const t = this.traceOverlay;
    for (const e of v.edges) {
      const li = document.createElement('li');
      li.dataset.edge = e.id;
      let text = e.traceOnly ? `${e.source} calls ${e.target}` : describeEdge(e, this.visibleLayers);
      if (t && trace.ids.has(e.id)) {
        li.dataset.trace = t.id;
        const c = trace.calls.get(e.id);
        text += c ? `; in trace ${t.id}: ${c.calls} ${c.calls === 1 ? 'call' : 'calls'}, ${c.errors} failed, ${fmt(c.durationMs, 1)} ms`
          : `; in trace ${t.id} (exemplar)`;
      }
      li.textContent = text;
      ul.appendChild(li);
    }
  }

  status(text) {
    this.$('.status').textContent = text;
  }

  // -- interaction -----------------------------------------------------------------------------------
  onControl(ev) {
    const t = ev.target;
    if (t.name === 'layer') this.setLayerVisible(t.value, t.checked);
    else if (t.name === 'degraded') this.degradedOnly = t.checked;
    else if (t.name === 'virtual') this.showVirtual = t.checked;
    else if (t.name === 'time') {
      const minutes = Number(t.value);
      this.at = minutes > 0 ? new Date(Date.now() - minutes * 60000).toISOString() : null;
    }
  }

  sliderLabel(minutes) {
    const m = Number(minutes);
    if (!m) return 'now';
    return m < 60 ? `${m} min ago` : `${Math.floor(m / 60)} h ${m % 60 ? `${m % 60} min ` : ''}ago`;
  }

  syncSlider() {
    const at = this.at ? Date.parse(this.at) : NaN;
    const minutes = Number.isFinite(at) ? Math.max(0, Math.round((Date.now() - at) / 60000)) : 0;
    this.$('input[name=time]').value = String(Math.min(SLIDER_MINUTES, minutes));
    this.$('output[name=when]').textContent = this.at ? `${this.sliderLabel(minutes)} (${this.at})` : 'now';
  }

  onNodeClick(n) {
    if (!n) return;
    const ok = this.emit('node-select', n, true);
    this.select({ node: n });
    if (ok && n.name !== this.service && this.mode !== 'fleet') this.focusService(n.name);
    else if (ok && this.mode === 'fleet') { this.mode = 'neighbourhood'; this.focusService(n.name); }
  }

  select(what) {
    this.selected = what && what.node ? what.node.name : null;
    this.selection = what;
    if (what && what.edge) this.emit('edge-select', what.edge);
    this.renderPanel();
  }

  renderPanel() {
    const panel = this.$('.panel');
    const parts = [];
    const br = this.data.extra.blastRadius;
    if (br) {
      parts.push(`<h3>Blast radius of ${escapeHtml(this.data.focus)}</h3><p>${br.total} services affected</p>
        <h4>Teams to notify</h4><ul class="teams">${br.teams.map((t) => `<li data-team="${escapeHtml(t.team)}"><b>${escapeHtml(t.team)}</b>
        ${t.email ? `<a href="mailto:${escapeHtml(t.email)}">${escapeHtml(t.email)}</a>` : ''} ${t.chat ? escapeHtml(t.chat) : ''}
        ${t.oncall ? `on call: ${escapeHtml(t.oncall)}` : ''} <small>(${t.services.length} services)</small></li>`).join('')}</ul>
        ${br.unowned.length ? `<p>Unowned: ${br.unowned.map(escapeHtml).join(', ')}</p>` : ''}`);
    }
    const rc = this.data.extra.rootCause;
    if (rc) {
      const verdict = rc.verdict ? `<p>verdict: <b class="verdict">${escapeHtml(rc.verdict)}</b> (rootCause)</p>` : '<p>by health (this server has no rootCause)</p>';
      parts.push(`<h3>Likely causes for ${escapeHtml(this.data.focus)}</h3>${verdict}${rc.ranked.length
        ? `<ol class="ranking">${rc.ranked.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ol>` : '<p>no candidate</p>'}`);
    }
    const sel = this.selection;
    if (sel && sel.node) {
      const n = this.data.nodes.get(sel.node.name) || sel.node;
      const links = n.links ? Object.entries(n.links).filter(([, u]) => u && /^https?:/.test(u)) : [];
      parts.push(`<h3 class="selected" data-selected="${escapeHtml(n.name)}">${escapeHtml(n.name)}</h3>
        <p>${escapeHtml(n.kind.toLowerCase())} · <span style="color:${HEALTH_COLOURS[n.health]}">${escapeHtml(n.health.toLowerCase())}</span>
        ${n.reason ? `(${escapeHtml(n.reason)})` : ''}${n.tier !== null ? ` · tier ${n.tier}` : ''}${n.domain ? ` · ${escapeHtml(n.domain)}` : ''}</p>
        ${n.owner ? `<p>Owner: <b>${escapeHtml(n.owner.team)}</b> ${n.owner.email ? `<a href="mailto:${escapeHtml(n.owner.email)}">${escapeHtml(n.owner.email)}</a>` : ''}
          ${n.owner.oncall ? ` on call: ${escapeHtml(n.owner.oncall)}` : ''}</p>` : ''}
        ${links.length ? `<p>${links.map(([k, u]) => `<a href="${escapeHtml(u)}" target="_blank" rel="noopener">${k}</a>`).join(' · ')}</p>` : ''}`);
    } else if (sel && sel.edge) {
      parts.push(`<h3>${escapeHtml(sel.edge.source)} → ${escapeHtml(sel.edge.target)}</h3>${this.layerTable(sel.edge)}`);
    }
    panel.innerHTML = parts.join('');
    panel.hidden = parts.length === 0;
  }

  layerTable(e) {
    const rows = e.perLayer.filter((l) => this.visibleLayers.has(l.layer)).map((l) => `<tr><th scope="row">${l.layer}</th>
      <td>${escapeHtml(l.protocol || '–')}</td><td>${fmt(l.requestRate, 2)}/s</td><td>${fmt((l.errorRate || 0) * 100, 2)}%</td>
      <td>${fmt(l.latencyP50, 1)} / ${fmt(l.latencyP99, 1)} ms</td>
      <td>${escapeHtml([...(l.endpoints || []).slice(0, 3), ...(l.ports || []).slice(0, 3)].join(', ') || '–')}</td>
      <td>${escapeHtml((l.intermediaries || []).join(', ') || '–')}</td></tr>`).join('');
    return `<table><thead><tr><th>layer</th><th>protocol</th><th>rate</th><th>errors</th><th>p50 / p99</th>
      <th>endpoints</th><th>via</th></tr></thead><tbody>${rows}</tbody></table>`;
  }

  showTooltip(what, ev) {
    const tip = this.$('.tooltip');
    if (what.node) {
      const n = what.node;
      tip.innerHTML = `<b>${escapeHtml(n.name)}</b><br>${escapeHtml(n.kind.toLowerCase())} · ${escapeHtml(n.health.toLowerCase())}
        ${n.owner ? `<br>owner ${escapeHtml(n.owner.team)}` : ''}`;
    } else {
      tip.innerHTML = `<b>${escapeHtml(what.edge.source)} → ${escapeHtml(what.edge.target)}</b>${this.layerTable(what.edge)}`;
    }
    const r = this.getBoundingClientRect();
    tip.style.left = `${Math.min(r.width - 320, Math.max(0, ev.clientX - r.left + 12))}px`;
    tip.style.top = `${ev.clientY - r.top + 12}px`;
    tip.hidden = false;
  }

  emit(name, detail, cancelable = false) {
    return this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true, cancelable }));
  }

  // -- live updates ----------------------------------------------------------------------------------
  restartLive() {
    this.stopLive();
    if (!this.live || this.at) return; // the past does not change
    const vars = this.mode === 'fleet' ? { service: null, depth: null, layers: list(this.getAttribute('layers')) }
      : { service: this.data.focus, depth: this.depth, layers: list(this.getAttribute('layers')) };
    this.subscription = new LiveSubscription(this.endpoint, SUBSCRIPTION, vars, this.headers,
      (data) => this.onChange(data.topologyChanges),
      (state, detail) => this.emit('topology-live', { state, detail }));
  }

  stopLive() {
    if (this.subscription) this.subscription.close();
    this.subscription = null;
  }

  onChange(change) {
    if (!change) return;
    const g = this.data;
    const diff = applyChange(g, change);
    if (this.renderer instanceof LayeredRenderer) {
      for (const id of diff.added) {
        const e = g.edges.get(id);
        if (this.renderer.positions.has(e.source)) this.renderer.placeNear(e.target, e.source, true);
        else if (this.renderer.positions.has(e.target)) this.renderer.placeNear(e.source, e.target, false);
      }
    }
    this.redraw();
    this.emit('topology-live', { state: 'change', change: diff });
  }
}

if (!customElements.get('service-topology')) customElements.define('service-topology', ServiceTopology);
