// Drives the <service-topology> widget and the /map page in Debian's headless Chromium (playwright-core,
// no browser download), every request that is not for loopback aborted and remembered.
//
//   node tests/js/widget.mjs --base http://127.0.0.1:8080 --scenario embed --out /tmp/shots
//
// Scenarios (each collects facts into one JSON report on stdout; the Python tests hold the truth):
//   embed   a plain page with only the module and the element: what is drawn, layer toggles, degraded
//           only, keyboard, click to focus, the time slider (positions before/after)
//   trace   the trace overlay: trace-id=--trace drawn from Query.trace, an id not kept, no trace
//   live    an open widget with `live`; prints {"ready": true} once subscribed, then waits for --expect-node
//   map     /map: search suggestions, an action, the shareable URL restored in a new page
//   shots   screenshots of a synthetic 50-node neighbourhood and 10,000-service fleet (setData)
//   bench   render times of a 200-node neighbourhood (the fleet's: `fleet --frames` against a real server)
//   fleet   the fleet as the server has it (mode="fleet", endpoint /graphql): what the WebGL canvas holds,
//           how long loading and drawing took, a screenshot (--shot); with --frames, frame rates and costs
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CHROMIUM_FLAGS, WEBGL_FLAGS, offlineContext } from './offline.mjs';

const { values: opt } = parseArgs({
  options: {
    base: { type: 'string' },
    scenario: { type: 'string' },
    out: { type: 'string', default: tmpdir() },
    service: { type: 'string', default: 'checkout-api' },
    'expect-node': { type: 'string' },
    within: { type: 'string', default: '5000' },
    timeout: { type: 'string', default: '20000' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
    window: { type: 'string' },
    shot: { type: 'string' },
    frames: { type: 'boolean', default: false },
    trace: { type: 'string' },
  },
});

/** A page of our own at the server's origin holding only the module and the element. */
function embedPage(attrs, style = 'height: 640px; width: 1200px') {
  const a = Object.entries(attrs).map(([k, v]) => (v === true ? k : `${k}="${v}"`)).join(' ');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>embed</title>
<script type="module" src="/widget/service-topology.js"></script></head>
<body style="margin:0"><service-topology id="map" ${a} style="${style}"></service-topology></body></html>`;
}

// In the page: facts about what the widget drew.
const SNAPSHOT = () => {
  const el = document.getElementById('map');
  const root = el.shadowRoot;
  const nodes = [...root.querySelectorAll('g[data-node]')].map((g) => ({
    name: g.dataset.node, kind: g.dataset.kind, health: g.dataset.health, label: g.getAttribute('aria-label'),
    fill: g.querySelector('rect.health').getAttribute('fill'), transform: g.getAttribute('transform'),
    focus: g.classList.contains('focus'),
  })).sort((x, y) => x.name.localeCompare(y.name));
  const edges = [...root.querySelectorAll('g[data-edge]')].map((g) => ({
    id: g.dataset.edge, layers: g.dataset.layers.split(' ').filter(Boolean), errorRate: Number(g.dataset.errorRate),
  })).sort((x, y) => x.id.localeCompare(y.id));
  const described = [...root.querySelectorAll('.edges-list li')].map((li) => li.textContent);
  const svg = root.querySelector('svg.layered');
  const canvas = root.querySelector('.fleet');
  return { nodes, edges, described, label: (svg || canvas)?.getAttribute('aria-label') ?? null,
    service: el.getAttribute('service'), at: el.getAttribute('at'), status: root.querySelector('.status').textContent,
    panel: root.querySelector('.panel').hidden ? null : root.querySelector('.panel').textContent.replace(/\s+/g, ' ').trim(),
    lastRender: el.lastRender || null,
    ranking: [...root.querySelectorAll('.panel .ranking li')].map((li) => li.textContent),
    verdict: root.querySelector('.panel .verdict')?.textContent ?? null,
    ranked: [...root.querySelectorAll('g[data-node].ranked')].map((g) => g.dataset.node).sort() };
};

// In the page: resolve at the next topology-render (or topology-error) of the widget.
const ARM = () => {
  const el = document.getElementById('map');
  window.__next = new Promise((resolve) => {
    const done = (ev) => { el.removeEventListener('topology-render', done); el.removeEventListener('topology-error', done); resolve({ type: ev.type, detail: ev.detail }); };
    el.addEventListener('topology-render', done);
    el.addEventListener('topology-error', done);
  });
};

async function rendered(page, action) {
  await page.evaluate(ARM);
  await action();
  return page.evaluate(() => window.__next);
}

async function open(context, report, path, html) {
  const page = await context.newPage();
  page.setDefaultTimeout(Number(opt.timeout));
  page.on('request', (req) => report.requests.push(req.url()));
  page.on('console', (msg) => { if (msg.type() === 'error') report.consoleErrors.push(msg.text()); });
  page.on('pageerror', (err) => report.pageErrors.push(String(err && err.message ? err.message : err)));
  const url = new URL(path, opt.base).toString();
  if (html) await page.route(url, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: html }));
  const resp = await page.goto(url, { waitUntil: 'load' });
  if (!resp || !resp.ok()) throw new Error(`GET ${url} answered ${resp ? resp.status() : 'nothing'}`);
  return page;
}

async function firstRender(page) {
  // The element may have drawn before we listen: wait for its lastRender instead of an event.
  await page.waitForFunction(() => {
    const el = document.getElementById('map');
    return el && el.lastRender && !/loading/.test(el.shadowRoot.querySelector('.status').textContent);
  });
}

// -- scenarios ----------------------------------------------------------------------------------------
const scenarios = {
  async embed(context, report) {
    const page = await open(context, report, '/__test__/embed.html',
      embedPage({ endpoint: '/graphql', service: opt.service, direction: 'both', depth: 2 }));
    await page.evaluate(() => { window.selected = []; document.addEventListener('node-select', (e) => window.selected.push(e.detail.name)); });
    await firstRender(page);
    report.initial = await page.evaluate(SNAPSHOT);

    // Keyboard: the focused service takes Tab focus; ArrowRight goes to something it calls.
    await page.locator('#map').evaluate((el) => el.shadowRoot.querySelector('g[data-node][tabindex="0"]').focus());
    report.keyboardStart = await page.evaluate(() => document.getElementById('map').shadowRoot.activeElement?.dataset.node);
    await page.keyboard.press('ArrowRight');
    report.keyboardRight = await page.evaluate(() => document.getElementById('map').shadowRoot.activeElement?.dataset.node);

    // Layer toggles hide the edges no visible layer saw.
    await rendered(page, () => page.locator('#map input[name=layer][value=NETWORK]').uncheck());
    report.withoutNetwork = await page.evaluate(SNAPSHOT);
    await rendered(page, () => page.locator('#map input[name=layer][value=NETWORK]').check());
    await rendered(page, () => page.locator('#map input[name=degraded]').check());
    report.degradedOnly = await page.evaluate(SNAPSHOT);
    await rendered(page, () => page.locator('#map input[name=degraded]').uncheck());
    await rendered(page, () => page.locator('#map input[name=virtual]').uncheck());
    report.withoutVirtual = await page.evaluate(SNAPSHOT);
    await rendered(page, () => page.locator('#map input[name=virtual]').check());

    // Time travel: an hour ago nothing was seen; back to now, everything in the same place.
    const before = await page.evaluate(SNAPSHOT);
    await rendered(page, () => page.locator('#map input[name=time]').evaluate((s) => { s.value = '60'; s.dispatchEvent(new Event('change', { bubbles: true })); }));
    report.hourAgo = await page.evaluate(SNAPSHOT);
    await rendered(page, () => page.locator('#map input[name=time]').evaluate((s) => { s.value = '0'; s.dispatchEvent(new Event('change', { bubbles: true })); }));
    report.backToNow = await page.evaluate(SNAPSHOT);
    report.beforeTravel = before;
    await page.screenshot({ path: join(opt.out, 'widget-embed.png') });

    // Click to focus: the neighbourhood of the clicked service is loaded.
    await rendered(page, () => page.locator('#map g[data-node="inventory-api"]').click());
    report.clicked = await page.evaluate(SNAPSHOT);
    report.selected = await page.evaluate(() => window.selected);

    // Blast radius: the teams to notify.
    await rendered(page, () => page.evaluate(() => { const el = document.getElementById('map'); el.setAttribute('mode', 'blast-radius'); el.setAttribute('service', 'payments-svc'); }));
    report.blastRadius = await page.evaluate(SNAPSHOT);
    report.exportUrl = await page.evaluate(() => document.getElementById('map').exportUrl('dot'));

    // Root cause: the server's rootCause ranking, highlighted.
    await rendered(page, () => page.evaluate(() => { const el = document.getElementById('map'); el.setAttribute('mode', 'root-cause'); el.setAttribute('service', 'checkout-api'); }));
    report.rootCause = await page.evaluate(SNAPSHOT);
  },

  async trace(context, report) {
    // The trace overlay: `trace-id` (--trace) over checkout-api's neighbourhood, then an id the server
    // does not keep (the exemplar fallback), then no trace.
    const page = await open(context, report, '/__test__/trace.html',
      embedPage({ endpoint: '/graphql', service: opt.service, direction: 'both', depth: 2, 'trace-id': opt.trace }));
    await firstRender(page);
    await page.waitForFunction(() => /trace /.test(document.getElementById('map').shadowRoot.querySelector('.status').textContent));
    const overlay = () => {
      const root = document.getElementById('map').shadowRoot;
      return {
        highlighted: [...root.querySelectorAll('g[data-edge].highlight')].map((g) => g.dataset.edge).sort(),
        traced: [...root.querySelectorAll('.edges-list li[data-trace]')].map((li) => ({ edge: li.dataset.edge, trace: li.dataset.trace, text: li.textContent }))
          .sort((x, y) => x.edge.localeCompare(y.edge)),
      };
    };
    report.withTrace = { ...(await page.evaluate(SNAPSHOT)), ...(await page.evaluate(overlay)) };
    await page.screenshot({ path: join(opt.out, 'widget-trace.png') });
    await rendered(page, () => page.evaluate(() => document.getElementById('map').setAttribute('trace-id', '0123456789abcdef0123456789abcdef')));
    report.notKept = { ...(await page.evaluate(SNAPSHOT)), ...(await page.evaluate(overlay)) };
    await rendered(page, () => page.evaluate(() => document.getElementById('map').removeAttribute('trace-id')));
    report.noTrace = { ...(await page.evaluate(SNAPSHOT)), ...(await page.evaluate(overlay)) };
  },

  async live(context, report) {
    const page = await open(context, report, '/__test__/live.html',
      embedPage({ endpoint: '/graphql', service: opt.service, direction: 'both', depth: 2, live: true }));
    await page.evaluate(() => {
      window.liveStates = [];
      document.getElementById('map').addEventListener('topology-live', (e) => window.liveStates.push(e.detail.state));
    });
    await firstRender(page);
    await page.waitForFunction(() => window.liveStates.includes('open'));
    report.initial = await page.evaluate(SNAPSHOT);
    const positions = Object.fromEntries(report.initial.nodes.map((n) => [n.name, n.transform]));
    process.stdout.write(JSON.stringify({ ready: true }) + '\n');
    const t0 = Date.now();
    await page.waitForFunction((name) => !!document.getElementById('map').shadowRoot.querySelector(`g[data-node="${name}"]`),
      opt['expect-node'], { timeout: Number(opt.within) });
    report.appearedAfterMs = Date.now() - t0;
    report.after = await page.evaluate(SNAPSHOT);
    report.moved = report.after.nodes.filter((n) => positions[n.name] && positions[n.name] !== n.transform).map((n) => n.name);
    report.liveStates = await page.evaluate(() => window.liveStates);
    await page.screenshot({ path: join(opt.out, 'widget-live.png') });
  },

  async map(context, report) {
    const page = await open(context, report, '/map');
    await page.locator('#search').fill(opt.service.slice(0, 3));
    await page.waitForFunction(() => document.querySelectorAll('#suggestions option').length > 0);
    report.suggestions = await page.evaluate(() => [...document.querySelectorAll('#suggestions option')].map((o) => o.value));
    await page.locator('#search').fill(opt.service);
    await page.locator('#search').press('Enter');
    await page.waitForFunction((s) => document.getElementById('map').data.focus === s, opt.service);
    await page.locator('button[data-action="blast-radius"]').click();
    await page.waitForFunction(() => { const el = document.getElementById('map'); return el.data.extra.blastRadius && el.lastRender; });
    report.afterAction = await page.evaluate(SNAPSHOT);
    report.url = page.url();
    const again = await open(context, report, report.url);
    await again.waitForFunction(() => { const el = document.getElementById('map'); return el.data.extra.blastRadius && el.lastRender; });
    report.restored = await again.evaluate(SNAPSHOT);
    report.exportLinks = await again.evaluate(() => [...document.querySelectorAll('a[data-format]')].map((a) => a.href));
    await again.screenshot({ path: join(opt.out, 'map.png') });
  },

  async shots(context, report) {
    const page = await open(context, report, '/__test__/shots.html', embedPage({ toolbar: 'none' }, 'height: 800px; width: 1400px'));
    await page.addScriptTag({ content: SYNTHETIC });
    await firstRender(page);
    const hood = await rendered(page, () => page.evaluate(() => document.getElementById('map').setData(window.synthetic.neighbourhood(50, 7))));
    report.neighbourhood = { ...hood.detail, label: (await page.evaluate(SNAPSHOT)).label };
    await page.screenshot({ path: join(opt.out, 'widget-neighbourhood-50.png') });
    const fleet = await open(context, report, '/__test__/fleet.html', embedPage({ mode: 'fleet', toolbar: 'none' }, 'height: 900px; width: 1400px'));
    await fleet.addScriptTag({ content: SYNTHETIC });
    await firstRender(fleet); // the server's own (small) fleet first; then the synthetic one replaces it
    const drawn = await rendered(fleet, () => fleet.evaluate(() => document.getElementById('map').setData(window.synthetic.fleet(10000, 3))));
    await fleet.waitForTimeout(4500); // the worker's layout runs for a bounded time (4 s)
    report.fleet = { ...drawn.detail, label: (await fleet.evaluate(SNAPSHOT)).label };
    await fleet.screenshot({ path: join(opt.out, 'widget-fleet-10000.png') });
  },

  async fleet(context, report) {
    const attrs = { endpoint: '/graphql', mode: 'fleet', toolbar: 'none' };
    if (opt.window) attrs.window = opt.window;
    const t0 = Date.now();
    const page = await open(context, report, '/__test__/fleet-server.html', embedPage(attrs, 'height: 900px; width: 1400px'));
    await page.evaluate(() => {
      // the time of the first topology-render and of two animation frames after it (painted)
      window.__drawn = new Promise((resolve) => document.getElementById('map').addEventListener('topology-render', (ev) => {
        const at = performance.now();
        requestAnimationFrame(() => requestAnimationFrame(() => resolve({ at, paintedAt: performance.now(), ...ev.detail })));
      }, { once: true }));
    });
    const drawn = await page.evaluate(() => window.__drawn);
    report.loadedMs = Date.now() - t0; // navigation to painted: module, every page of Query.topology, drawing
    report.fleet = await page.evaluate(([drawn]) => {
      const el = document.getElementById('map');
      const canvas = el.shadowRoot.querySelector('.fleet');
      // the data has arrived when the last answer of /graphql has (its response end)
      const answers = performance.getEntriesByType('resource').filter((r) => new URL(r.name).pathname === '/graphql');
      const arrived = Math.max(...answers.map((r) => r.responseEnd));
      return { ...drawn, pages: answers.length, arrivedAt: arrived, paintedMs: drawn.paintedAt - arrived,
        label: canvas.getAttribute('aria-label'), drawnNodes: Number(canvas.dataset.nodes), drawnEdges: Number(canvas.dataset.edges),
        status: el.shadowRoot.querySelector('.status').textContent, truncated: !!el.data.truncated };
    }, [drawn]);
    await page.waitForTimeout(4500); // the worker's layout runs for a bounded time (4 s)
    if (opt.shot) await page.screenshot({ path: join(opt.out, opt.shot) });
    if (opt.frames) report.frames = await page.evaluate(FRAMES);
  },

  async bench(context, report) {
    // "Drawn" = from setData (the data has arrived) until two animation frames later (painted).
    // The fleet is timed from a server holding a simulated fleet (scenario fleet, bench/widget_render.py).
    const page = await open(context, report, '/__test__/bench.html', embedPage({ toolbar: 'none' }, 'height: 900px; width: 1400px'));
    await page.addScriptTag({ content: SYNTHETIC });
    await firstRender(page);
    report.webgl = await page.evaluate(() => { const c = document.createElement('canvas'); const gl = c.getContext('webgl2') || c.getContext('webgl');
      const dbg = gl && gl.getExtension('WEBGL_debug_renderer_info'); return gl ? (dbg ? gl.getParameter(dbg.UNMASKED_RENDERER_WEBGL) : 'webgl') : null; });
    const drawn = (kind, n, seed, mode) => page.evaluate(async ([kind, n, seed, mode]) => {
      const el = document.getElementById('map');
      el.renderer?.resetPositions();
      if (mode) el.setAttribute('mode', mode); else el.removeAttribute('mode');
      await new Promise((r) => setTimeout(r, 50));
      const data = window.synthetic[kind](n, seed);
      const t0 = performance.now();
      el.setData(data);
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      return { paintedMs: performance.now() - t0, ...el.lastRender };
    }, [kind, n, seed, mode]);
    report.neighbourhood200 = [];
    for (let i = 0; i < 7; i++) report.neighbourhood200.push(await drawn('neighbourhood', 200, i + 1, null));
  },
};

// In the page, the fleet drawn: what a frame costs while the camera moves. A camera animation (sigma's
// own, as a drag's inertia or a wheel zoom runs) redraws at every animation frame; the frames it gets per
// second are what a person sees. Per frame: sigma's render() on the main thread (JavaScript: WebGL calls
// queued), then a 1-pixel readPixels that waits until the GPU process has rasterised them (SwiftShader
// here).
const FRAMES = async () => {
  const el = document.getElementById('map');
  const s = el.renderer.sigma;
  const P = el.renderer.constructor.programs;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const rafRate = (ms, work) => new Promise((resolve) => {
    let n = 0; const t0 = performance.now();
    const step = (now) => { n++; if (work) work(n); if (now - t0 < ms) requestAnimationFrame(step); else resolve((n * 1000) / (now - t0)); };
    requestAnimationFrame(step);
  });
  const sync = (gl) => gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
  const out = { settings: { hideEdgesOnMove: s.getSetting('hideEdgesOnMove'), hideLabelsOnMove: s.getSetting('hideLabelsOnMove'),
    pixelRatio: s.pixelRatio, node: s.getSetting('nodeProgramClasses').circle === P.NodePointProgram ? 'point' : 'circle',
    edge: s.getSetting('edgeProgramClasses').arrow === P.EdgeLineProgram ? 'line' : 'arrow' }, runs: [] };
  const camera = s.getCamera();
  const before = { node: s.getSetting('nodeProgramClasses'), edge: s.getSetting('edgeProgramClasses') };
  // Floors: the page idle; visible canvases as large as sigma's (WebGL ones made as sigma makes its own,
  // without antialiasing), cleared every frame: one WebGL canvas, then 3 WebGL and 4 2D ones (sigma's
  // seven layers).
  const layer = (kind) => {
    const l = document.createElement('canvas');
    l.width = 1400; l.height = 900; l.style.cssText = 'position:fixed;left:0;top:0;width:1400px;height:900px;pointer-events:none';
    document.body.appendChild(l);
    return kind === 'webgl' ? l.getContext('webgl2', { antialias: false, preserveDrawingBuffer: false }) : l.getContext('2d');
  };
  const paint = (x, n) => {
    if (x.clear) { x.clearColor(0, 0, (n % 10) / 40, 0.1); x.clear(x.COLOR_BUFFER_BIT); } else { x.clearRect(0, 0, 1400, 900); x.fillRect(n % 50, 0, 2, 2); }
  };
  await sleep(500);
  out.idleFps = await rafRate(2000);
  for (const [name, kinds] of [['oneWebglFps', ['webgl']], ['sevenLayersFps', ['webgl', 'webgl', 'webgl', '2d', '2d', '2d', '2d']]]) {
    const layers = kinds.map(layer);
    out[name] = await rafRate(2000, (n) => layers.forEach((x) => paint(x, n)));
    layers.forEach((x) => x.canvas.remove());
  }
  // Then sigma's moving frames, each variant in turn, twice: its circle program with all seven layers
  // shown (the widget before), its point program likewise, the widget now (points, the empty layers hidden
  // while moving), and a node program that draws nothing with the empty layers hidden (the floor of
  // sigma's frame).
  class NoNodes extends P.NodePointProgram { drawWebGL() {} }
  const programs = { 'circle, 7 layers': [P.NodeCircleProgram, false], 'point, 7 layers': [P.NodePointProgram, false],
    'point, empty layers hidden (the widget)': [P.NodePointProgram, true], 'no node, empty layers hidden': [NoNodes, true] };
  for (const name of [...Object.keys(programs), ...Object.keys(programs)]) {
    const [cls, hide] = programs[name];
    el.renderer.hideLayersOnMove = hide;
    s.setSetting('nodeProgramClasses', { ...before.node, circle: cls });
    camera.setState({ x: 0.5, y: 0.5, ratio: 1, angle: 0 });
    await sleep(300);
    const render = s.render;
    const js = [];
    s.render = function timed() { const t = performance.now(); render.call(s); js.push(performance.now() - t); return s; };
    const t0 = performance.now();
    await camera.animate({ ratio: 0.35, x: 0.6, y: 0.45 }, { duration: 1500 });
    await camera.animate({ ratio: 1, x: 0.5, y: 0.5 }, { duration: 1500 });
    const fps = (js.length * 1000) / (performance.now() - t0);
    // The same moving frames, each waited for until rasterised (sync), for 2 s.
    const raster = [];
    const gl = s.webGLContexts.nodes;
    s.render = function synced() { const t = performance.now(); render.call(s); sync(gl); raster.push(performance.now() - t); return s; };
    await camera.animate({ ratio: 0.5 }, { duration: 2000 });
    s.render = render;
    out.runs.push({ node: name, fps, frames: js.length, jsMs: med(js), movingFrameMs: med(raster), syncedFrames: raster.length });
  }
  s.setSetting('nodeProgramClasses', before.node);
  el.renderer.hideLayersOnMove = true;
  // A still frame (edges and labels too, as drawn when the camera stops), waited for likewise, with each
  // edge program: arrows (line and head) and plain lines.
  out.stillFrameMs = {};
  for (const [name, cls] of [['arrow', P.EdgeArrowProgram], ['line', P.EdgeLineProgram]]) {
    s.setSetting('edgeProgramClasses', { ...before.edge, arrow: cls });
    const still = [];
    for (let i = 0; i < 3; i++) { const t = performance.now(); s.render(); sync(s.webGLContexts.edges); sync(s.webGLContexts.nodes); still.push(performance.now() - t); }
    out.stillFrameMs[name] = med(still);
  }
  s.setSetting('edgeProgramClasses', before.edge);
  camera.setState({ x: 0.5, y: 0.5, ratio: 1, angle: 0 });
  return out;
};

// A deterministic synthetic topology (domains, tiers, databases, a few degraded services, error rates).
const SYNTHETIC = `
window.synthetic = (() => {
  function rng(seed) { let s = seed >>> 0 || 1; return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 4294967296); }
  const KINDS = ['SERVICE', 'SERVICE', 'SERVICE', 'SERVICE', 'SERVICE', 'SERVICE', 'DATABASE', 'MESSAGING', 'EXTERNAL'];
  const HEALTH = ['HEALTHY', 'HEALTHY', 'HEALTHY', 'HEALTHY', 'HEALTHY', 'HEALTHY', 'HEALTHY', 'DEGRADED', 'UNHEALTHY', 'UNKNOWN'];
  const DOMAINS = ['payments', 'storefront', 'supply', 'identity', 'search', 'shipping', 'ads', 'data'];
  function node(i, r) {
    const kind = i === 0 ? 'SERVICE' : KINDS[Math.floor(r() * KINDS.length)];
    return { name: (kind === 'SERVICE' ? 'svc-' : kind.toLowerCase().slice(0, 3) + '-') + String(i).padStart(4, '0'),
      kind, tier: kind === 'SERVICE' ? Math.floor(r() * 4) : null, domain: DOMAINS[Math.floor(r() * DOMAINS.length)],
      healthStatus: { status: HEALTH[Math.floor(r() * HEALTH.length)] }, owner: { team: 'team-' + (i % 12) } };
  }
  function edge(a, b, r) {
    const layers = r() < 0.6 ? ['IPC', 'NETWORK'] : r() < 0.5 ? ['TRACE'] : ['NETWORK'];
    const err = r() < 0.15 ? r() * 0.08 : 0;
    return { source: a.name, target: b.name, sourceKind: a.kind, targetKind: b.kind, layers,
      perLayer: layers.map((l) => ({ layer: l, protocol: 'http', requests: Math.floor(r() * 1e5), errors: 0,
        requestRate: r() * 300, errorRate: err, latencyP50: r() * 20, latencyP99: r() * 200, health: err > 0.05 ? 'DEGRADED' : 'HEALTHY' })) };
  }
  // A neighbourhood: callers on the left, the focus, callees in levels to the right.
  function neighbourhood(n, seed) {
    const r = rng(seed); const nodes = [node(0, r)]; const edges = []; const levels = [[nodes[0]]];
    for (let i = 1; i < n; i++) {
      const nd = node(i, r); nodes.push(nd);
      const up = r() < 0.3;
      const lv = 1 + Math.floor(r() * Math.min(4, levels.length));
      const from = levels[lv - 1][Math.floor(r() * levels[lv - 1].length)];
      if (up) edges.push(edge({ ...nd, kind: 'SERVICE' }, from, r)); else edges.push(edge(from, nd, r));
      if (nd.kind === 'SERVICE' && !up) (levels[lv] ||= []).push(nd);
    }
    nodes.forEach((x) => { if (edges.some((e) => e.source === x.name && x.kind !== 'SERVICE')) x.kind = 'SERVICE'; });
    return { focus: nodes[0].name, nodes, edges };
  }
  function fleet(n, seed) {
    const r = rng(seed); const nodes = []; const edges = [];
    for (let i = 0; i < n; i++) nodes.push(node(i, r));
    for (let i = 1; i < n; i++) {
      if (nodes[i].kind !== 'SERVICE') { const a = nodes[Math.floor(r() * i)]; if (a.kind === 'SERVICE') edges.push(edge(a, nodes[i], r)); continue; }
      const calls = 1 + Math.floor(r() * 3);
      for (let c = 0; c < calls; c++) { const b = nodes[Math.floor(r() * i)]; if (b !== nodes[i]) edges.push(edge(nodes[i], b, r)); }
    }
    return { nodes, edges };
  }
  return { neighbourhood, fleet };
})();
`;

async function run(report) {
  if (!opt.base || !scenarios[opt.scenario]) throw new Error(`need --base and --scenario (${Object.keys(scenarios).join('|')})`);
  const profile = mkdtempSync(join(tmpdir(), 'widget-chromium-'));
  let context;
  try {
    // The embedding page is fulfilled by the test at the server's origin, which Chromium's Local Network
    // Access checks do not count as loopback: they would refuse its WebSocket to the loopback server.
    const args = [...CHROMIUM_FLAGS.filter((f) => f !== '--disable-gpu'), ...WEBGL_FLAGS,
      '--disable-features=LocalNetworkAccessChecks'];
    context = await offlineContext(profile, opt.chromium, report, { args, viewport: { width: 1440, height: 960 } });
    await scenarios[opt.scenario](context, report);
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

const report = { ok: false, error: null, requests: [], blocked: [], consoleErrors: [], pageErrors: [] };
try {
  await run(report);
  if (report.blocked.length) throw new Error(`requests tried to leave the machine: ${report.blocked.join(' ')}`);
  report.ok = true;
} catch (err) {
  report.error = String(err && err.stack ? err.stack : err);
}
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(report.ok ? 0 : 1);
