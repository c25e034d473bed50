// Reads exported graphs with the real consumers of their formats and reports what each one saw.
//
//   node tests/js/formats.mjs --cytoscape FILE --mermaid FILE
//
// Cytoscape.js (headless, in Node) loads the Cytoscape JSON; Mermaid renders the flowchart to SVG in
// Debian's headless Chromium (Mermaid needs a DOM). Prints {ok, error, cytoscape: {nodes, edges},
// mermaid: {nodes, edges}} with node ids/labels and edges as [source, target].
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import cytoscape from 'cytoscape';
import { offlineContext } from './offline.mjs';

const require = createRequire(import.meta.url);
const { values: opt } = parseArgs({
  options: {
    cytoscape: { type: 'string' },
    mermaid: { type: 'string' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
  },
});

function readCytoscape(file) {
  const cy = cytoscape({ headless: true, elements: JSON.parse(readFileSync(file, 'utf8')).elements });
  return {
    nodes: cy.nodes().map((n) => ({ id: n.id(), health: n.data('health'), kind: n.data('kind') })),
    edges: cy.edges().map((e) => [e.source().id(), e.target().id()]),
  };
}

async function readMermaid(file, report) {
  const profile = mkdtempSync(join(tmpdir(), 'mermaid-chromium-'));
  const context = await offlineContext(profile, opt.chromium, report);
  try {
    const page = await context.newPage();
    await page.setContent('<!doctype html><html><body><div id="out"></div></body></html>');
    await page.addScriptTag({ path: require.resolve('mermaid/dist/mermaid.min.js') });
    return await page.evaluate(async (text) => {
      window.mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });
      const { svg } = await window.mermaid.render('exported', text);
      const out = document.getElementById('out');
      out.innerHTML = svg;
      const labels = {};
      for (const g of out.querySelectorAll('g.node')) {
        const id = g.id.replace(/^(exported-)?flowchart-/, '').replace(/-\d+$/, '');
        labels[id] = g.textContent.trim();
      }
      const edges = [...out.querySelectorAll('path.flowchart-link')].map((p) => {
        const m = /^L_(.+?)_(.+?)_\d+$/.exec(p.id.replace(/^exported-/, ''));
        return m ? [labels[m[1]], labels[m[2]]] : [p.id];
      });
      return { nodes: Object.values(labels), edges };
    }, readFileSync(file, 'utf8'));
  } finally {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

const report = { ok: false, error: null, blocked: [] };
try {
  if (opt.cytoscape) report.cytoscape = readCytoscape(opt.cytoscape);
  if (opt.mermaid) report.mermaid = await readMermaid(opt.mermaid, report);
  report.ok = true;
} catch (err) {
  report.error = String(err && err.stack ? err.stack : err);
}
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(report.ok ? 0 : 1);
