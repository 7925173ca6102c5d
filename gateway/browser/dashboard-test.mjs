// The dashboard in a real browser: Debian's chromium, headless, driven by
// playwright-core (no browser is downloaded). Against a gateway on a store
// with demo data it checks that
//   - the page goes live (first snapshot, then the event stream),
//   - every chart is drawn with data points (and pixels on its canvas),
//     the demo data's charts with non-zero values,
//   - the console shows no error and no request fails,
//   - orders placed through the API show up in the orders-per-minute
//     chart within a few seconds,
// and saves screenshots. Run by scripts/gateway.sh (gateway_browser_test):
//   GATEWAY_URL=http://127.0.0.1:28831 OPS_TOKEN=... SHOTS_DIR=target/gateway-browser \
//   CHROMIUM=/usr/bin/chromium node browser/dashboard-test.mjs

import { chromium } from 'playwright-core';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.env.GATEWAY_URL;
const opsToken = process.env.OPS_TOKEN;
const shots = process.env.SHOTS_DIR || '.';
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const ORDERS = 5;
const MOVE_WITHIN_MS = 10_000;

if (!base || !opsToken) {
  console.error('GATEWAY_URL and OPS_TOKEN must be set');
  process.exit(2);
}

const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.error('FAIL: ' + msg);
};
const log = (msg) => console.log('  ' + msg);

async function api(path, { method = 'GET', token, body, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = 'Bearer ' + token;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const r = await fetch(base + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: r.status, json };
}

const userDataDir = await mkdtemp(join(tmpdir(), 'storefront-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1400, height: 1050 },
});

let closing = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error') fail(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => fail(`uncaught error in the page: ${e.message}`));
  page.on('requestfailed', (r) => {
    if (!closing) fail(`request failed: ${r.url().split('?')[0]} (${r.failure()?.errorText})`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) fail(`HTTP ${r.status()} for ${r.url().split('?')[0]}`);
  });

  console.log(`opening ${base}/dashboard`);
  await page.goto(`${base}/dashboard#token=${opsToken}`, { waitUntil: 'load' });
  try {
    await page.waitForFunction(
      () => window.storefrontDashboard && window.storefrontDashboard.status === 'live' && window.storefrontDashboard.snapshots >= 1,
      null,
      { timeout: 30_000 },
    );
  } catch (e) {
    const shown = await page.evaluate(() => ({
      status: document.getElementById('status').textContent,
      message: document.getElementById('message').textContent,
    }));
    await page.screenshot({ path: join(shots, 'dashboard-not-live.png'), fullPage: true });
    throw new Error(`the dashboard did not go live: status "${shown.status}", message "${shown.message}"`);
  }
  log('live: first snapshot drawn, event stream open');

  // every chart: data points, and pixels on its canvas
  const charts = await page.evaluate(() => {
    const out = {};
    for (const [key, u] of Object.entries(window.storefrontDashboard.charts)) {
      const ctx = u.ctx;
      const { width, height } = ctx.canvas;
      const px = ctx.getImageData(0, 0, width, height).data;
      let painted = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) painted += 1;
      const values = u.data.slice(1).flat().filter((v) => v != null);
      out[key] = {
        series: u.series.length - 1,
        points: u.data[0].length,
        nonZero: values.filter((v) => v > 0).length,
        painted,
        width,
        height,
      };
    }
    return out;
  });
  for (const key of ['orders', 'revenue', 'views', 'funnel']) {
    const c = charts[key];
    if (!c) {
      fail(`chart ${key} was not drawn`);
      continue;
    }
    log(`chart ${key}: ${c.series} series, ${c.points} points, ${c.nonZero} non-zero values, ${c.painted} painted pixels`);
    if (c.points < 2) fail(`chart ${key} has ${c.points} data points`);
    if (c.series < 1) fail(`chart ${key} has no series`);
    if (c.painted < 500) fail(`chart ${key}'s canvas is (nearly) blank`);
  }
  // the demo data fills these (orders per minute covers the last hour,
  // which the demo data need not reach: orders placed below fill it)
  for (const key of ['revenue', 'views', 'funnel']) {
    if (charts[key] && charts[key].nonZero === 0) fail(`chart ${key} shows only zeros on the demo data`);
  }
  const gauges = await page.evaluate(() => ['g-holds', 'g-queue', 'g-lag', 'g-orders'].map((id) => document.getElementById(id).textContent));
  log(`gauges: pending holds ${gauges[0]}, relay queue ${gauges[1]}, rollup lag ${gauges[2]}, orders last hour ${gauges[3]}`);
  if (gauges.some((g) => g === '–' || g === '')) fail('a gauge shows no value');
  await page.screenshot({ path: join(shots, 'dashboard.png'), fullPage: true });
  log(`screenshot ${join(shots, 'dashboard.png')}`);

  // place orders through the API as the demo customer
  const login = await api('/auth/login', { method: 'POST', body: { email: 'demo@storefront.test', password: 'storefront-demo' } });
  if (login.status !== 200) throw new Error(`login failed: ${login.status} ${JSON.stringify(login.json)}`);
  const customer = login.json.token;
  const catalog = await api('/products?limit=100');
  const skus = catalog.json.items.filter((p) => p.available >= 10).map((p) => p.sku);
  if (skus.length < ORDERS) throw new Error(`only ${skus.length} SKUs with stock in the first catalog page`);
  const startMinute = Math.floor(Date.now() / 60000) * 60;
  const counted = () => page.evaluate((from) => {
    const u = window.storefrontDashboard.charts.orders;
    let n = 0;
    u.data[0].forEach((t, i) => {
      if (t >= from) n += u.data[1][i] || 0;
    });
    return n;
  }, startMinute);
  const before = await counted();
  for (let i = 0; i < ORDERS; i += 1) {
    const r = await api('/orders', { method: 'POST', token: customer, body: { items: [{ sku: skus[i], qty: 1 }] } });
    if (r.status !== 201) fail(`placing order ${i + 1}: ${r.status} ${JSON.stringify(r.json)}`);
  }
  const placedAt = Date.now();
  log(`placed ${ORDERS} orders through the API`);

  // the orders-per-minute chart must show them, in the buckets from the
  // minute they were placed
  let seen = (await counted()) - before;
  while (seen < ORDERS && Date.now() - placedAt < MOVE_WITHIN_MS) {
    await page.waitForTimeout(100);
    seen = (await counted()) - before;
  }
  const took = Date.now() - placedAt;
  if (seen < ORDERS) {
    fail(`the orders-per-minute chart shows ${seen} of ${ORDERS} new orders after ${took} ms`);
  } else {
    log(`orders-per-minute chart moved by ${seen} orders, ${took} ms after the last one was placed`);
  }
  await page.screenshot({ path: join(shots, 'dashboard-after-orders.png'), fullPage: true });
  log(`screenshot ${join(shots, 'dashboard-after-orders.png')}`);
  await writeFile(join(shots, 'report.json'), JSON.stringify({ charts, gauges, moved_after_ms: took, failures }, null, 2));
} catch (e) {
  fail(e.stack || String(e));
} finally {
  closing = true;
  await context.close();
  await rm(userDataDir, { recursive: true, force: true });
}

if (failures.length) {
  console.error(`${failures.length} failure(s)`);
  process.exit(1);
}
console.log('browser test passed');
