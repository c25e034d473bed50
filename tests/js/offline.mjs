// Debian's headless Chromium (playwright-core, no browser download) with every request that is not for
// loopback aborted and remembered in report.blocked: the pages under test must work offline.
import { chromium } from 'playwright-core';

export const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-proxy-server', // loopback directly, whatever proxy the environment names
];
// WebGL without a GPU: ANGLE on SwiftShader (software), which Chromium allows only when asked.
export const WEBGL_FLAGS = ['--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'];
const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

export function isLocal(url) {
  let u;
  try { u = new URL(url); } catch { return false; }
  if (u.protocol === 'data:' || u.protocol === 'blob:' || u.protocol === 'about:') return true;
  return LOCAL_HOSTS.has(u.hostname);
}

/** A persistent Chromium context in ``profile`` whose non-loopback requests and sockets are refused. */
export async function offlineContext(profile, executablePath, report, { args = CHROMIUM_FLAGS, viewport } = {}) {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args,
    viewport: viewport || { width: 1400, height: 860 },
    serviceWorkers: 'block',
  });
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.fallback();
    report.blocked.push(url);
    return route.abort('blockedbyclient');
  });
  await context.routeWebSocket(/.*/, (ws) => {
    if (isLocal(ws.url())) return ws.connectToServer();
    report.blocked.push(ws.url());
    return ws.close();
  });
  return context;
}
