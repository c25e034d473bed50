// Drives GraphiQL in Debian's headless Chromium (playwright-core, no browser download) and checks
// that a query run from the page returns the expected text, with every non-loopback request blocked.
//
//   node tests/js/graphiql.mjs --url http://127.0.0.1:8080/graphql --query '{ service(name: "a") { name } }' \
//        --expect a --screenshot /tmp/graphiql.png
//
// Prints one JSON report on stdout: {ok, error, querySource, response, requests, blocked, consoleErrors,
// pageErrors, screenshot}. Exit code 0 only when the page rendered, the query ran, the result pane
// contains every --expect text, and no request tried to leave the machine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { offlineContext } from './offline.mjs';

const EDITOR = '.graphiql-query-editor .CodeMirror';
const RUN_BUTTON = '.graphiql-execute-button';
const RESPONSE = '.graphiql-response';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    query: { type: 'string' },
    expect: { type: 'string', multiple: true, default: [] },
    screenshot: { type: 'string' },
    timeout: { type: 'string', default: '15000' },
    chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
  },
});

async function run(report) {
  if (!opt.url || !opt.query || !opt.screenshot) throw new Error('need --url, --query and --screenshot');
  const timeout = Number(opt.timeout);
  const profile = mkdtempSync(join(tmpdir(), 'graphiql-chromium-'));
  let context;
  let page;
  try {
    // Everything not on loopback is aborted and remembered: the page must work offline.
    context = await offlineContext(profile, opt.chromium, report);
    // The result pane's text: GraphiQL 3 keeps it in a CodeMirror 5 instance.
    await context.addInitScript(() => {
      window.readPane = (sel) => {
        const pane = document.querySelector(sel);
        const cm = pane && pane.querySelector('.CodeMirror');
        return cm && cm.CodeMirror ? cm.CodeMirror.getValue() : (pane ? pane.innerText : '');
      };
    });
    page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(timeout);
    page.on('request', (req) => report.requests.push(req.url()));
    page.on('console', (msg) => { if (msg.type() === 'error') report.consoleErrors.push(msg.text()); });
    page.on('pageerror', (err) => report.pageErrors.push(String(err && err.message ? err.message : err)));

    // Strawberry's page reads the initial query from `?q=`. (Not `?query=`: a GET with `query` is a
    // GraphQL-over-HTTP request and answers JSON instead of the page.)
    // encodeURIComponent, not URLSearchParams: the page decodes with decodeURIComponent, which keeps '+'.
    const target = new URL(opt.url);
    target.search = `?q=${encodeURIComponent(opt.query)}`;
    const resp = await page.goto(target.toString(), { waitUntil: 'load' });
    if (!resp || !resp.ok()) throw new Error(`GET ${opt.url} answered ${resp ? resp.status() : 'nothing'}`);

    await page.waitForSelector(EDITOR, { state: 'visible' });
    report.querySource = await page.evaluate(([sel, query]) => {
      const cm = document.querySelector(sel).CodeMirror;
      if (cm.getValue().trim() === query.trim()) return 'url';
      cm.setValue(query); // the page ignored the URL parameters: type it into the editor instead
      return 'editor';
    }, [EDITOR, opt.query]);

    await page.click(RUN_BUTTON);
    // Wait for an answer in the result pane, then check it: a wrong answer fails at once.
    await page.waitForFunction((sel) => /"(data|errors)"/.test(readPane(sel)), RESPONSE);
    const text = await page.evaluate((sel) => readPane(sel), RESPONSE);
    try { report.response = JSON.parse(text); } catch { report.response = text; }
    const missing = opt.expect.filter((w) => !text.includes(w));
    if (missing.length) throw new Error(`the result pane lacks ${missing.map((m) => JSON.stringify(m)).join(', ')}`);
    await page.screenshot({ path: opt.screenshot });
    report.screenshot = opt.screenshot;
  } catch (err) {
    // Keep a picture of the failure next to the wanted screenshot, for whoever reads the report.
    const failed = opt.screenshot.replace(/(\.png)?$/, '-failed.png');
    if (page && (await page.screenshot({ path: failed }).then(() => true, () => false))) report.failedScreenshot = failed;
    throw err;
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

const report = {
  ok: false, error: null, querySource: null, response: null,
  requests: [], blocked: [], consoleErrors: [], pageErrors: [], screenshot: null, failedScreenshot: null,
};
try {
  await run(report);
  if (report.blocked.length) throw new Error(`requests tried to leave the machine: ${report.blocked.join(' ')}`);
  report.ok = true;
} catch (err) {
  report.error = String(err && err.message ? err.message : err);
}
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(report.ok ? 0 : 1);
