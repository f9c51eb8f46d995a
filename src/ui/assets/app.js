// tracerd live view: fleet overview, node page (charts from the metric history, live log),
// effective configuration. Plain JavaScript, no dependencies; served from the binary.
'use strict';

const $ = (id) => document.getElementById(id);
const SEVERITIES = ['Debug', 'Info', 'Notice', 'Warning', 'Error', 'Critical', 'Alert', 'Emergency'];
const RANGES = [
  ['5 minutes', 300], ['15 minutes', 900], ['1 hour', 3600], ['6 hours', 21600],
  ['1 day', 86400], ['7 days', 604800], ['30 days', 2592000],
];
// RTView's panel set. `m` is the metric name after cardano-node's prefix; both the prefixed
// and the bare name match. `rate` charts the per-second rate of a counter.
const PANELS = [
  { group: 'Resources', title: 'CPU', m: 'Stat_cputicks_int', rate: true, unit: 'ticks/s' },
  { group: 'Resources', title: 'Memory (resident)', m: 'Mem_resident_int', unit: 'B' },
  { group: 'Resources', title: 'GC live bytes', m: 'RTS_gcLiveBytes_int', unit: 'B' },
  { group: 'Resources', title: 'GC major collections', m: 'RTS_gcMajorNum_int', rate: true, unit: '/s' },
  { group: 'Resources', title: 'GC minor collections', m: 'RTS_gcMinorNum_int', rate: true, unit: '/s' },
  { group: 'Resources', title: 'Threads', m: 'RTS_threads_int', unit: '' },
  { group: 'Chain', title: 'Chain density', m: 'density_real', unit: '' },
  { group: 'Chain', title: 'Slot', m: 'slotNum_int', unit: '' },
  { group: 'Chain', title: 'Block', m: 'blockNum_int', unit: '' },
  { group: 'Chain', title: 'Slot in epoch', m: 'slotInEpoch_int', unit: '' },
  { group: 'Chain', title: 'Epoch', m: 'epoch_int', unit: '' },
  { group: 'Transactions', title: 'Transactions processed', m: 'txsProcessedNum_int', unit: '' },
  { group: 'Transactions', title: 'Mempool bytes', m: 'mempoolBytes_int', unit: 'B' },
  { group: 'Transactions', title: 'Transactions in mempool', m: 'txsInMempool_int', unit: '' },
  { group: 'Forging', title: 'Blocks forged', m: 'Forge_forged_int', unit: '' },
  { group: 'Forging', title: 'Slots led', m: 'Forge_node_is_leader_int', unit: '' },
  { group: 'Forging', title: 'KES periods left', m: 'remainingKESPeriods_int', unit: '' },
  { group: 'tracerd', title: 'Trace objects received', q: 'rate(tracerd_trace_objects_received_total{node_name=~"SEL"}[1m])', unit: '/s' },
  { group: 'tracerd', title: 'Log bytes written', q: 'rate(tracerd_log_bytes_written_total{node_name=~"SEL"}[1m])', unit: 'B/s' },
];
const COLORS = ['c0', 'c1', 'c2', 'c3', 'c4', 'c5'];

const state = {
  fleet: null, retentionMs: 0, route: { view: 'overview' }, range: 900, zoom: null,
  compare: [], charts: [], log: null, paused: false, held: [], lastChartFetch: 0,
};

// ---------- helpers ----------
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function fmt(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const a = Math.abs(v);
  let s;
  if (unit === 'B' || unit === 'B/s') {
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']; let i = 0; let x = v;
    while (Math.abs(x) >= 1024 && i < u.length - 1) { x /= 1024; i++; }
    return (i ? x.toFixed(1) : String(Math.round(x))) + ' ' + u[i] + (unit === 'B/s' ? '/s' : '');
  }
  if (a >= 1e9) s = (v / 1e9).toFixed(2) + 'G'; else if (a >= 1e6) s = (v / 1e6).toFixed(2) + 'M';
  else if (a >= 1e4) s = (v / 1e3).toFixed(1) + 'k'; else if (Number.isInteger(v)) s = String(v);
  else s = v.toFixed(a < 1 ? 3 : 1);
  return unit ? s + ' ' + unit : s;
}
function duration(secs) {
  if (secs === null || secs === undefined) return '–';
  const d = Math.floor(secs / 86400), h = Math.floor(secs % 86400 / 3600), m = Math.floor(secs % 3600 / 60);
  if (d) return d + 'd ' + h + 'h'; if (h) return h + 'h ' + m + 'm'; return m + 'm ' + Math.floor(secs % 60) + 's';
}
function reEscape(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }
async function getJSON(url, headers) {
  const r = await fetch(url, { headers: headers || {} });
  const t = await r.text();
  if (!r.ok) throw new Error(t.trim() || r.status + ' ' + r.statusText);
  return JSON.parse(t);
}

// ---------- theme ----------
function applyTheme(t) {
  document.documentElement.dataset.theme = t;
  const b = $('theme');
  b.textContent = t === 'dark' ? 'Light theme' : 'Dark theme';
  b.setAttribute('aria-pressed', String(t === 'dark'));
}
function initTheme() {
  let t = null;
  try { t = localStorage.getItem('tracerd-theme'); } catch (e) { /* storage off */ }
  if (t !== 'dark' && t !== 'light') t = matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
  applyTheme(t);
  $('theme').addEventListener('click', () => {
    const n = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
    applyTheme(n);
    try { localStorage.setItem('tracerd-theme', n); } catch (e) { /* storage off */ }
  });
}

// ---------- fleet stream ----------
function connectFleet() {
  const es = new EventSource('/ui/api/fleet/stream');
  es.addEventListener('fleet', (ev) => {
    $('conn').textContent = 'live';
    $('conn').className = 'conn ok';
    state.fleet = JSON.parse(ev.data);
    renderFleet();
    if (state.route.view === 'node') onNodeTick();
  });
  es.onerror = () => { $('conn').textContent = 'reconnecting…'; $('conn').className = 'conn bad'; };
}

function cardFacts(n) {
  const rows = [
    ['Protocol', n.protocol + (n.nodeProtocol ? ' · ' + n.nodeProtocol : '')],
    ['Version', n.version ? n.version + (n.commit ? ' (' + n.commit.slice(0, 8) + ')' : '') : '–'],
    ['Uptime', duration(n.uptimeSecs)],
    ['Sync', n.syncPercent !== undefined ? fmt(n.syncPercent) + ' %' : '–'],
    ['Tip', 'slot ' + fmt(n.slot) + ' · block ' + fmt(n.block) + ' · epoch ' + fmt(n.epoch)],
    ['Peers', fmt(n.peers)],
  ];
  if (n.producer) {
    rows.push(['Forging', 'forged ' + fmt(n.forged) + ' · led ' + fmt(n.leader)]);
    rows.push(['KES left', fmt(n.kesRemaining) + (n.opcertExpiry !== undefined ? ' (expires at ' + fmt(n.opcertExpiry) + ')' : '')]);
  }
  rows.push(['RTT', n.rttMs === null || n.rttMs === undefined ? '–' : fmt(n.rttMs) + ' ms']);
  rows.push(['Objects/s', fmt(n.objectsPerSec)]);
  rows.push(['Bytes/s', fmt(n.bytesPerSec, 'B/s')]);
  rows.push(['Write backlog', n.writeBacklog === null || n.writeBacklog === undefined ? '–' : n.writeBacklog + ' batches']);
  return rows;
}

function renderFleet() {
  const f = state.fleet; if (!f) return;
  const nodes = f.nodes;
  $('node-count').textContent = '(' + nodes.filter((n) => n.connected).length + ' connected' +
    (nodes.some((n) => !n.connected) ? ', ' + nodes.filter((n) => !n.connected).length + ' recently gone' : '') + ')';
  $('empty').hidden = nodes.length > 0;
  const box = $('cards');
  const keep = new Map();
  for (const c of box.children) keep.set(c.dataset.name, c);
  const order = [];
  for (const n of nodes) {
    let card = keep.get(n.name);
    if (!card) card = el('article', { class: 'card', 'data-name': n.name });
    keep.delete(n.name);
    card.dataset.slug = n.slug;
    card.dataset.stale = String(!!n.stale);
    card.dataset.connected = String(!!n.connected);
    const status = !n.connected ? 'disconnected' : n.stale ? 'stale' : 'live';
    const dl = el('dl');
    for (const [k, v] of cardFacts(n)) dl.append(el('dt', { text: k }), el('dd', { text: v }));
    const sev = el('p', { class: 'sev', 'aria-label': 'Trace severity counts' });
    for (const s of SEVERITIES) {
      const c = (n.severities || {})[s] || 0;
      if (c) sev.append(el('span', { class: 'sev-' + s.toLowerCase(), title: s, text: s + ' ' + fmt(c) }), ' ');
    }
    if (!sev.childNodes.length) sev.append(el('span', { class: 'muted', text: 'no traces yet' }));
    const title = n.connected
      ? el('a', { href: '#/node/' + encodeURIComponent(n.slug), text: n.name })
      : el('span', { text: n.name });
    card.replaceChildren(
      el('h2', {}, title, ' ', el('span', { class: 'badge ' + status, text: status })),
      dl, sev);
    order.push(card);
  }
  box.replaceChildren(...order);
  if (state.route.view === 'config') fillNodeSelects();
}

// ---------- routing ----------
function route() {
  const h = location.hash || '#/';
  const m = h.match(/^#\/node\/([^/?]+)/);
  if (m) state.route = { view: 'node', slug: decodeURIComponent(m[1]) };
  else if (h.startsWith('#/config')) state.route = { view: 'config' };
  else state.route = { view: 'overview' };
  for (const v of ['overview', 'node', 'config']) $('view-' + v).hidden = state.route.view !== v;
  stopLog();
  if (state.route.view === 'node') openNode(); else if (state.route.view === 'config') openConfig();
  $('main').focus({ preventScroll: true });
}

// ---------- node page ----------
function nodeCard(slug) { return state.fleet && state.fleet.nodes.find((n) => n.slug === slug); }

function fillRange() {
  const sel = $('range'); sel.replaceChildren();
  const maxSecs = state.retentionMs ? state.retentionMs / 1000 : 86400;
  for (const [label, secs] of RANGES) {
    if (secs > maxSecs && secs !== 300) continue;
    sel.append(el('option', { value: secs, text: label, selected: secs === state.range }));
  }
  if (!RANGES.some(([, s]) => s === maxSecs) && maxSecs > 300) {
    sel.append(el('option', { value: maxSecs, text: 'retention (' + duration(maxSecs) + ')' }));
  }
}

function openNode() {
  const slug = state.route.slug;
  const card = nodeCard(slug);
  $('h-node').textContent = card ? card.name : slug;
  $('node-status').textContent = card ? (card.connected ? (card.stale ? 'stale' : 'live') + ' · ' + card.protocol + ' · ' + card.peer : 'disconnected') : '';
  state.zoom = null; $('zoom-reset').hidden = true;
  fillRange();
  const cmp = $('compare'); cmp.replaceChildren();
  for (const n of (state.fleet ? state.fleet.nodes : [])) {
    if (n.slug !== slug) cmp.append(el('option', { value: n.name, text: n.name, selected: state.compare.includes(n.name) }));
  }
  cmp.size = Math.min(4, Math.max(1, cmp.options.length));
  buildCharts();
  startLog();
}

function window_() {
  if (state.zoom) return state.zoom;
  const end = Date.now() / 1000;
  return [end - state.range, end];
}

function selectedNames() {
  const card = nodeCard(state.route.slug);
  const names = [card ? card.name : state.route.slug, ...state.compare];
  return [...new Set(names)];
}

function panelQuery(p, names) {
  const sel = names.map(reEscape).join('|').replace(/\\/g, '\\\\').replace(/"/g, '\\"');
  if (p.q) return p.q.replace('SEL', sel);
  const v = '{__name__=~"(cardano_node_metrics_)?' + p.m + '",node_name=~"' + sel + '"}';
  return p.rate ? 'rate(' + v + '[1m])' : v;
}

function buildCharts() {
  const box = $('charts'); box.replaceChildren();
  state.charts = [];
  let group = null;
  for (const p of PANELS) {
    if (p.group !== group) { group = p.group; box.append(el('h2', { class: 'group', text: group })); }
    const fig = el('figure', { class: 'chart', tabindex: '0', role: 'img', 'aria-label': p.title + ': loading' });
    const cap = el('figcaption', {}, el('strong', { text: p.title }), ' ', el('span', { class: 'now muted' }));
    const svg = svgEl('svg', { viewBox: '0 0 400 140', preserveAspectRatio: 'none', 'aria-hidden': 'true' });
    const legend = el('p', { class: 'legend' });
    fig.append(cap, svg, legend);
    box.append(fig);
    const chart = { p, fig, svg, legend, series: [], cursor: null };
    state.charts.push(chart);
    fig.addEventListener('keydown', (e) => chartKey(chart, e));
    attachZoom(chart);
  }
  refreshCharts(true);
}

async function refreshCharts(full) {
  state.lastChartFetch = Date.now();
  const [start, end] = window_();
  const step = Math.max(1, Math.round((end - start) / 240));
  const names = selectedNames();
  await Promise.all(state.charts.map(async (c) => {
    const q = panelQuery(c.p, names);
    const url = '/ui/history/api/v1/query_range?query=' + encodeURIComponent(q) +
      '&start=' + start.toFixed(3) + '&end=' + end.toFixed(3) + '&step=' + step;
    try {
      const r = await getJSON(url);
      $('history-off').hidden = true;
      c.series = r.data.result.map((s) => ({
        name: s.metric.node_name || s.metric.__name__ || c.p.title,
        points: s.values.map(([t, v]) => [t, parseFloat(v)]).filter(([, v]) => Number.isFinite(v)),
      }));
    } catch (e) {
      if (full && /404/.test(String(e))) $('history-off').hidden = false;
      c.series = [];
      c.error = String(e.message || e);
    }
    drawChart(c, start, end);
  }));
}

function onNodeTick() {
  const card = nodeCard(state.route.slug);
  if (card) $('node-status').textContent = (card.connected ? (card.stale ? 'stale' : 'live') + ' · ' + card.protocol + ' · ' + card.peer : 'disconnected');
  // Live: the server's push drives a refresh of the visible window (no chart polls on its own).
  if (!state.zoom && Date.now() - state.lastChartFetch >= 5000) refreshCharts(false);
}

function drawChart(c, start, end) {
  const { svg, p } = c;
  svg.replaceChildren();
  const W = 400, H = 140, PAD = 4;
  let lo = Infinity, hi = -Infinity, n = 0;
  for (const s of c.series) for (const [, v] of s.points) { lo = Math.min(lo, v); hi = Math.max(hi, v); n++; }
  c.fig.dataset.points = String(n);
  if (!n) {
    const t = svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'nodata' });
    t.textContent = 'no data in this range';
    svg.append(t);
    c.fig.setAttribute('aria-label', p.title + ': no data in this range');
    c.fig.querySelector('.now').textContent = '';
    c.legend.replaceChildren();
    return;
  }
  if (lo === hi) { lo -= 1; hi += 1; }
  const x = (t) => PAD + (t - start) / (end - start) * (W - 2 * PAD);
  const y = (v) => H - PAD - (v - lo) / (hi - lo) * (H - 2 * PAD);
  svg.append(svgEl('line', { x1: 0, x2: W, y1: H - PAD, y2: H - PAD, class: 'axis' }));
  const hiT = svgEl('text', { x: 2, y: 11, class: 'tick' }); hiT.textContent = fmt(hi, p.unit);
  const loT = svgEl('text', { x: 2, y: H - 7, class: 'tick' }); loT.textContent = fmt(lo, p.unit);
  const now = [];
  c.legend.replaceChildren();
  c.series.forEach((s, i) => {
    const cls = COLORS[i % COLORS.length];
    const d = s.points.map(([t, v], j) => (j ? 'L' : 'M') + x(t).toFixed(1) + ' ' + y(v).toFixed(1)).join(' ');
    svg.append(svgEl('path', { d, class: 'line ' + cls, 'vector-effect': 'non-scaling-stroke' }));
    if (s.points.length === 1) {
      const [t, v] = s.points[0];
      svg.append(svgEl('circle', { cx: x(t), cy: y(v), r: 2.5, class: 'dot ' + cls }));
    }
    const last = s.points[s.points.length - 1];
    if (last) now.push(s.name + ' ' + fmt(last[1], p.unit));
    c.legend.append(el('span', { class: 'key ' + cls, text: s.name }), ' ');
  });
  svg.append(hiT, loT);
  if (c.cursor !== null) {
    const s = c.series[0]; const pt = s && s.points[Math.min(c.cursor, s.points.length - 1)];
    if (pt) {
      svg.append(svgEl('line', { x1: x(pt[0]), x2: x(pt[0]), y1: 0, y2: H, class: 'cursor' }));
      now.unshift('at ' + new Date(pt[0] * 1000).toLocaleTimeString() + ': ' + fmt(pt[1], p.unit));
    }
  }
  const text = now.join(' · ');
  c.fig.querySelector('.now').textContent = text;
  c.fig.setAttribute('aria-label', p.title + ', current value: ' + text);
}

// Keyboard on a focused chart: ←/→ move a cursor over the points, +/− zoom, 0 resets.
function chartKey(c, e) {
  const s = c.series[0];
  if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
    if (!s || !s.points.length) return;
    if (c.cursor === null) c.cursor = s.points.length - 1;
    c.cursor = Math.max(0, Math.min(s.points.length - 1, c.cursor + (e.key === 'ArrowLeft' ? -1 : 1)));
    const [st, en] = window_(); drawChart(c, st, en); e.preventDefault();
  } else if (e.key === '+' || e.key === '=') { zoomBy(0.5); e.preventDefault(); }
  else if (e.key === '-') { zoomBy(2); e.preventDefault(); }
  else if (e.key === '0') { resetZoom(); e.preventDefault(); }
  else if (e.key === 'Escape') { c.cursor = null; const [st, en] = window_(); drawChart(c, st, en); }
}

function setZoom(start, end) {
  const min = 30;
  if (end - start < min) { const mid = (start + end) / 2; start = mid - min / 2; end = mid + min / 2; }
  const now = Date.now() / 1000;
  if (end > now) { start -= end - now; end = now; }
  state.zoom = [start, end];
  $('zoom-reset').hidden = false;
  refreshCharts(false);
}
// A window that ends now keeps ending now (zooming in on the latest values); another zooms
// around its middle.
function zoomBy(f) {
  const [s, e] = window_();
  const now = Date.now() / 1000;
  if (now - e < (e - s) * 0.02 + 2) { setZoom(now - (e - s) * f, now); return; }
  const mid = (s + e) / 2, half = (e - s) * f / 2;
  setZoom(mid - half, mid + half);
}
function resetZoom() { state.zoom = null; $('zoom-reset').hidden = true; refreshCharts(false); }

// Drag across a chart to zoom into that span.
function attachZoom(c) {
  let from = null;
  const pos = (ev) => { const r = c.svg.getBoundingClientRect(); return Math.max(0, Math.min(1, (ev.clientX - r.left) / r.width)); };
  c.svg.addEventListener('pointerdown', (ev) => { from = pos(ev); });
  c.svg.addEventListener('pointerup', (ev) => {
    if (from === null) return;
    const to = pos(ev); const a = Math.min(from, to), b = Math.max(from, to); from = null;
    if (b - a < 0.02) return;
    const [s, e] = window_();
    setZoom(s + a * (e - s), s + b * (e - s));
  });
}

// ---------- live log ----------
const MAX_LOG_LINES = 500;
function stopLog() { if (state.log) { state.log.close(); state.log = null; } $('log').dataset.open = 'false'; }
function startLog() {
  stopLog();
  const slug = state.route.slug;
  const params = new URLSearchParams();
  if ($('log-sev').value) params.set('severity', $('log-sev').value);
  if ($('log-ns').value.trim()) params.set('namespace', $('log-ns').value.trim());
  const es = new EventSource('/api/nodes/' + encodeURIComponent(slug) + '/traces/stream?' + params);
  state.log = es; state.dropped = state.dropped || 0;
  es.onopen = () => { $('log').dataset.open = 'true'; };
  es.addEventListener('file', (ev) => { state.file = ev.data; $('log-file').textContent = ev.data; });
  es.addEventListener('dropped', (ev) => {
    const d = JSON.parse(ev.data); state.dropped += d.dropped; logState();
  });
  es.addEventListener('end', (ev) => { $('log-state').textContent = ev.data; });
  es.onmessage = (ev) => {
    if (state.paused) { state.held.push([ev.data, state.file]); if (state.held.length > MAX_LOG_LINES) { state.held.shift(); state.dropped++; } logState(); return; }
    appendLine(ev.data, state.file);
  };
  logState();
}
function logState() {
  const parts = [];
  if (state.paused) parts.push('paused, ' + state.held.length + ' lines held');
  if (state.dropped) parts.push(state.dropped + ' lines dropped (the view fell behind)');
  $('log-state').textContent = parts.join(' · ');
}
function appendLine(text, file) {
  let sev = '', ns = '';
  try { const o = JSON.parse(text); sev = o.sev || ''; ns = o.ns || ''; } catch (e) { /* shown as is */ }
  const box = $('log');
  const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  const row = el('div', { class: 'line sev-' + sev.toLowerCase(), 'data-sev': sev, 'data-ns': ns, title: file ? 'in ' + file : null },
    el('span', { class: 'ls', text: sev }), ' ', el('span', { class: 'ln', text: ns }), ' ', el('code', { text: text }));
  box.append(row);
  while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  applyLogFilter(row);
  if (stick) box.scrollTop = box.scrollHeight;
}
function applyLogFilter(only) {
  const min = SEVERITIES.indexOf($('log-sev').value);
  const ns = $('log-ns').value.trim();
  const rows = only ? [only] : $('log').children;
  for (const r of rows) {
    const i = SEVERITIES.indexOf(r.dataset.sev);
    r.hidden = (min > 0 && i >= 0 && i < min) || (ns !== '' && !ns.split(',').some((p) => r.dataset.ns.startsWith(p.trim())));
  }
}
function initLog() {
  $('log-sev').addEventListener('change', () => { applyLogFilter(); startLog(); });
  let t = null;
  $('log-ns').addEventListener('input', () => { clearTimeout(t); t = setTimeout(() => { applyLogFilter(); startLog(); }, 300); });
  $('log-pause').addEventListener('click', () => {
    state.paused = !state.paused;
    $('log-pause').textContent = state.paused ? 'Resume' : 'Pause';
    $('log-pause').setAttribute('aria-pressed', String(state.paused));
    if (!state.paused) { for (const [l, f] of state.held) appendLine(l, f); state.held = []; }
    logState();
  });
  $('log-clear').addEventListener('click', () => { $('log').replaceChildren(); state.held = []; state.dropped = 0; logState(); });
  $('log-copy').addEventListener('click', () => { if (state.file && navigator.clipboard) navigator.clipboard.writeText(state.file); });
}

// ---------- configuration ----------
function fillNodeSelects() {
  const names = state.fleet ? state.fleet.nodes.filter((n) => n.connected) : [];
  for (const id of ['cfg-node', 'diff-a', 'diff-b']) {
    const sel = $(id); const cur = sel.value;
    if (sel.options.length === names.length && [...sel.options].every((o, i) => o.value === names[i].slug)) continue;
    sel.replaceChildren(...names.map((n) => el('option', { value: n.slug, text: n.name })));
    if (cur) sel.value = cur;
  }
  if ($('diff-b').selectedIndex === 0 && names.length > 1 && !$('diff-b').dataset.touched) $('diff-b').selectedIndex = 1;
}
async function openConfig() {
  try {
    const r = await fetch('/ui/api/config?format=yaml');
    $('own-config').textContent = await r.text();
  } catch (e) { $('own-config').textContent = String(e); }
  fillNodeSelects();
  showNodeConfig();
}
async function showNodeConfig() {
  const slug = $('cfg-node').value;
  if (!slug) { $('node-config').textContent = 'No connected node.'; return; }
  const url = '/api/nodes/' + encodeURIComponent(slug) + '/tracer-config';
  const r = await fetch(url, { headers: { Accept: 'application/yaml' } });
  const text = await r.text();
  $('node-config').textContent = text;
  const a = $('cfg-download');
  a.hidden = !r.ok;
  a.href = URL.createObjectURL(new Blob([text], { type: 'application/yaml' }));
  a.setAttribute('download', slug + '-tracer-config.yaml');
}
async function showDiff() {
  const a = $('diff-a').value, b = $('diff-b').value, box = $('diff');
  try {
    const d = await getJSON('/api/tracer-configs/diff?a=' + encodeURIComponent(a) + '&b=' + encodeURIComponent(b));
    const t = el('table', {}, el('caption', { text: d.differences.length + ' keys differ, ' + d.equalKeys + ' equal' }),
      el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Key' }), el('th', { scope: 'col', text: d.a.node }), el('th', { scope: 'col', text: d.b.node }))));
    const tb = el('tbody');
    for (const x of d.differences) {
      tb.append(el('tr', {}, el('th', { scope: 'row', text: x.key.map((k) => k === '' ? '(root)' : k).join(' › ') }),
        el('td', { text: x.a === undefined ? '(absent)' : JSON.stringify(x.a) }),
        el('td', { text: x.b === undefined ? '(absent)' : JSON.stringify(x.b) })));
    }
    t.append(tb); box.replaceChildren(t);
  } catch (e) { box.replaceChildren(el('p', { class: 'warn', text: String(e.message || e) })); }
}

// ---------- start ----------
async function main() {
  initTheme();
  initLog();
  try { const f = await getJSON('/ui/api/fleet'); state.retentionMs = f.retentionMs || 0; state.fleet = f; renderFleet(); } catch (e) { /* the stream will tell */ }
  connectFleet();
  $('range').addEventListener('change', () => { state.range = +$('range').value; state.zoom = null; $('zoom-reset').hidden = true; refreshCharts(false); });
  $('zoom-in').addEventListener('click', () => zoomBy(0.5));
  $('zoom-out').addEventListener('click', () => zoomBy(2));
  $('zoom-reset').addEventListener('click', resetZoom);
  $('compare').addEventListener('change', () => { state.compare = [...$('compare').selectedOptions].map((o) => o.value); refreshCharts(false); });
  $('csv').addEventListener('click', (e) => {
    const rows = ['panel,node,time,value'];
    for (const c of state.charts) for (const s of c.series) for (const [t, v] of s.points) rows.push([JSON.stringify(c.p.title), JSON.stringify(s.name), new Date(t * 1000).toISOString(), v].join(','));
    e.currentTarget.href = URL.createObjectURL(new Blob([rows.join('\n') + '\n'], { type: 'text/csv' }));
    e.currentTarget.download = (state.route.slug || 'node') + '-charts.csv';
  });
  $('cfg-node').addEventListener('change', showNodeConfig);
  $('diff-b').addEventListener('change', () => { $('diff-b').dataset.touched = '1'; });
  $('diff-go').addEventListener('click', showDiff);
  window.addEventListener('hashchange', route);
  route();
  document.body.dataset.ready = 'true';
}
main();
