// The live dashboard: snapshots from /dashboard/stream (Server-Sent
// Events), drawn with uPlot. The operations token comes from the URL's
// fragment (#token=...), which browsers never send to a server; EventSource
// cannot set headers, so the stream gets it as ?access_token=.
(function () {
  'use strict';

  const state = { charts: {}, snapshots: 0, last: null, status: 'connecting' };
  window.storefrontDashboard = state;

  const $ = (id) => document.getElementById(id);
  const COLORS = ['#2b6cb0', '#dd6b20', '#38a169', '#805ad5', '#d53f8c'];

  function token() {
    const fromHash = new URLSearchParams(location.hash.replace(/^#/, '')).get('token');
    if (fromHash) {
      sessionStorage.setItem('storefront-dashboard-token', fromHash);
      history.replaceState(null, '', location.pathname);
      return fromHash;
    }
    return sessionStorage.getItem('storefront-dashboard-token');
  }

  function setStatus(kind, text) {
    state.status = kind;
    const el = $('status');
    el.className = 'status ' + kind;
    el.textContent = text;
  }

  function showMessage(text) {
    const el = $('message');
    el.textContent = text;
    el.hidden = !text;
  }

  const secs = (t) => Date.parse(t) / 1000;
  const fmtInt = (n) => (n == null ? '–' : Math.round(n).toLocaleString('en-US'));

  function fmtDuration(s) {
    if (s == null) return 'none';
    if (s < 120) return Math.round(s) + ' s';
    if (s < 7200) return Math.round(s / 60) + ' min';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  }

  function width(el) {
    return Math.max(320, el.clientWidth - 4);
  }

  // Create a chart on first use, else give it new data.
  function draw(key, series, data, opts) {
    const el = $('chart-' + key);
    const existing = state.charts[key];
    const sameShape = existing && existing.series.length === series.length + 1 &&
      series.every((s, i) => existing.series[i + 1].label === s.label);
    if (sameShape) {
      existing.setData(data);
      return;
    }
    if (existing) {
      existing.destroy();
    }
    el.textContent = '';
    state.charts[key] = new uPlot(Object.assign({
      width: width(el),
      height: 240,
      series: [{}].concat(series),
      axes: [{}, { size: 60 }],
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
    }, opts || {}), data, el);
  }

  function line(label, i, extra) {
    return Object.assign({ label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: false } }, extra || {});
  }

  function render(snap) {
    state.snapshots += 1;
    state.last = snap;

    // orders per minute
    const om = snap.orders_per_minute;
    draw('orders', [line('orders', 0, { fill: 'rgba(43,108,176,0.12)' })],
      [om.map((p) => secs(p.time)), om.map((p) => p.value)]);

    // revenue per hour, one series per currency
    const times = [...new Set(snap.revenue_per_hour.map((p) => p.time))].sort();
    const currencies = [...new Set(snap.revenue_per_hour.map((p) => p.currency))].sort();
    const byKey = new Map(snap.revenue_per_hour.map((p) => [p.time + '|' + p.currency, p.revenue]));
    draw('revenue', currencies.map((c, i) => line(c, i)),
      [times.map(secs)].concat(currencies.map((c) => times.map((t) => byKey.get(t + '|' + c) ?? null))));

    // page views per hour
    const pv = snap.page_views_per_hour;
    draw('views', [line('page views', 2)], [pv.map((p) => secs(p.time)), pv.map((p) => p.value)]);

    // the funnel: views, carts and orders per day on one logarithmic axis
    // (each step is a fraction of the one before; a day without any is a gap)
    const f = snap.funnel;
    const pos = (v) => (v > 0 ? v : null);
    draw('funnel', [line('views', 0), line('carts', 1), line('orders', 2)],
      [f.map((d) => secs(d.time)), f.map((d) => pos(d.views)), f.map((d) => pos(d.carts)), f.map((d) => pos(d.orders))], {
        scales: { y: { distr: 3 } },
        axes: [{}, { size: 72 }],
      });
    const tv = f.reduce((a, d) => a + d.views, 0);
    const tc = f.reduce((a, d) => a + d.carts, 0);
    const to = f.reduce((a, d) => a + d.orders, 0);
    $('funnel-rates').textContent = tv ? `· ${(100 * tc / tv).toFixed(1)}% view → cart, ${tc ? (100 * to / tc).toFixed(1) : '–'}% cart → order` : '';

    // gauges
    const p = snap.pipeline;
    $('g-holds').textContent = fmtInt(p.pending_holds);
    $('g-queue').textContent = fmtInt(p.relay_queue);
    $('g-queue-note').textContent = p.oldest_queued_at
      ? 'oldest queued ' + fmtDuration((Date.now() - Date.parse(p.oldest_queued_at)) / 1000) + ' ago'
      : 'events waiting for the relay';
    $('g-lag').textContent = fmtDuration(p.rollup_lag_seconds);
    $('g-orders').textContent = fmtInt(om.reduce((a, x) => a + x.value, 0));
    $('g-delivery').textContent = 'event delivery: ' + p.delivery + (p.relay_running ? ' (relay running)' : '');
    $('updated').textContent = new Date(snap.generated_at).toLocaleTimeString();
  }

  async function start() {
    const t = token();
    if (!t) {
      setStatus('error', 'no token');
      showMessage('Open this page as /dashboard#token=<operations token> (storefront-gateway token --role operations).');
      return;
    }
    // a first snapshot (and a clear message for a bad token: EventSource cannot tell)
    const r = await fetch('/dashboard/data', { headers: { Authorization: 'Bearer ' + t } });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      setStatus('error', 'refused');
      showMessage(`The gateway refused the token (${r.status}): ${body.message || r.statusText}.`);
      return;
    }
    render(await r.json());
    const es = new EventSource('/dashboard/stream?access_token=' + encodeURIComponent(t));
    es.addEventListener('open', () => setStatus('live', 'live'));
    es.addEventListener('snapshot', (e) => {
      setStatus('live', 'live');
      render(JSON.parse(e.data));
    });
    es.addEventListener('error', () => setStatus('connecting', es.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…'));
    window.addEventListener('resize', () => {
      for (const [key, c] of Object.entries(state.charts)) {
        c.setSize({ width: width($('chart-' + key)), height: 240 });
      }
    });
  }

  start().catch((e) => {
    setStatus('error', 'error');
    showMessage('The dashboard failed to start: ' + e.message);
  });
})();
