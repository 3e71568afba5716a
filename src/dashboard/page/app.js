// The pgmux dashboard: reads /api/* every second and redraws. Text goes into the page with
// textContent only (query text and error messages come from outside).
'use strict';

const EVERY_MS = 1000;
const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);
let updates = 0;

// --- formatting ---------------------------------------------------------------------------
const int = (n) => (n === null || n === undefined ? '' : Math.round(n).toLocaleString('en-US'));
function us(n) {
  if (n === null || n === undefined) return '';
  if (n < 1000) return n + ' µs';
  if (n < 1e6) return (n / 1e3).toFixed(n < 1e4 ? 2 : 1) + ' ms';
  return (n / 1e6).toFixed(2) + ' s';
}
function bytes(n) {
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
  return n.toFixed(1) + ' ' + units[i];
}
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + Math.floor(s % 60) + 's';
}

// --- DOM helpers -----------------------------------------------------------------------------
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
// A cell: shown text, the raw value in data-v, its API field name in data-k.
function cell(key, value, shown, cls) {
  const td = el('td', shown === undefined ? value : shown, cls);
  td.dataset.k = key;
  td.dataset.v = value === null || value === undefined ? '' : String(value);
  return td;
}
function badge(text, kind) {
  const b = el('span', text, 'badge' + (kind ? ' ' + kind : ''));
  return b;
}
function fill(tableId, rows, columns) {
  const body = document.querySelector('#' + tableId + ' tbody');
  const fresh = document.createElement('tbody');
  for (const r of rows) fresh.appendChild(r);
  if (!rows.length) {
    const tr = el('tr');
    const td = el('td', 'none', 'none');
    td.colSpan = columns;
    tr.appendChild(td);
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

// --- charts: inline SVG polylines, newest at the right ---------------------------------------
function chart(title, t, lines, fmt, spanSecs) {
  const box = el('div', null, 'chart');
  const W = 300, H = 64;
  let max = 0;
  for (const l of lines) for (const v of l.values) if (v > max) max = v;
  const top = max > 0 ? max * 1.1 : 1;
  const now = t.length ? t[t.length - 1] : 0;
  // A minute at least, the whole ring at most: a young ring is not squeezed to the right.
  spanSecs = Math.min(spanSecs, Math.max(60, t.length ? now - t[0] : 0));
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  lines.forEach((l, i) => {
    const pts = l.values.map((v, j) => {
      const x = W - ((now - t[j]) / spanSecs) * W;
      const y = H - 2 - (v / top) * (H - 4);
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    const p = document.createElementNS(SVG, 'polyline');
    p.setAttribute('points', pts.join(' '));
    p.setAttribute('class', 's' + i);
    svg.appendChild(p);
  });
  const label = document.createElementNS(SVG, 'text');
  label.setAttribute('x', '3');
  label.setAttribute('y', '10');
  label.textContent = 'max ' + fmt(max);
  svg.appendChild(label);
  box.appendChild(el('div', title, 'title'));
  box.appendChild(svg);
  const legend = el('div', null, 'legend');
  lines.forEach((l, i) => {
    const last = l.values.length ? l.values[l.values.length - 1] : null;
    legend.appendChild(el('span', '— ' + l.name + ' ' + (last === null ? '' : fmt(last)), 's' + i));
  });
  box.appendChild(legend);
  return box;
}

function poolCard(p, spanSecs) {
  const h = p.history;
  const card = el('div', null, 'card');
  card.dataset.pool = p.database + '/' + p.user;
  card.appendChild(el('h3', p.database + ' / ' + p.user));
  const charts = el('div', null, 'charts');
  charts.appendChild(chart('clients', h.t, [
    { name: 'active', values: h.cl_active }, { name: 'waiting', values: h.cl_waiting }], int, spanSecs));
  charts.appendChild(chart('servers', h.t, [
    { name: 'active', values: h.sv_active }, { name: 'idle', values: h.sv_idle },
    { name: 'used', values: h.sv_used }], int, spanSecs));
  charts.appendChild(chart('transactions per second', h.t, [{ name: 'TPS', values: h.tps }], int, spanSecs));
  charts.appendChild(chart('transaction latency and wait', h.t, [
    { name: 'p50', values: h.xact_p50_us }, { name: 'p95', values: h.xact_p95_us },
    { name: 'p99', values: h.xact_p99_us }, { name: 'wait', values: h.wait_us }], us, spanSecs));
  card.appendChild(charts);
  return card;
}

// --- sections --------------------------------------------------------------------------------
function summary(s) {
  $('version').textContent = s.version;
  $('sample-seconds').textContent = s.sample_seconds;
  const dl = $('summary');
  dl.replaceChildren();
  const item = (k, v, key) => {
    const d = el('div');
    d.appendChild(el('dt', k));
    const dd = el('dd', v);
    dd.dataset.k = key;
    d.appendChild(dd);
    dl.appendChild(d);
  };
  item('uptime', duration(s.uptime_seconds), 'uptime_seconds');
  item('clients', int(s.clients), 'clients');
  item('pools', int(s.pools), 'pools');
  item('servers', int(s.servers), 'servers');
  item('reloads', s.reloads_ok + ' ok, ' + s.reloads_failed + ' failed', 'reloads');
  item('state', s.draining ? 'draining' : s.paused ? 'paused' : 'running', 'state');
}

function pools(data, spanSecs) {
  const rows = data.pools.map((p) => {
    const tr = el('tr');
    tr.dataset.pool = p.database + '/' + p.user;
    tr.appendChild(cell('database', p.database));
    tr.appendChild(cell('user', p.user));
    tr.appendChild(cell('pool_mode', p.pool_mode, undefined, 'text'));
    const state = cell('state', p.disabled ? 'disabled' : p.paused ? 'paused' : 'active', '', 'text');
    state.appendChild(badge(state.dataset.v, p.disabled ? 'bad' : p.paused ? 'warn' : ''));
    tr.appendChild(state);
    for (const k of ['cl_active', 'cl_waiting', 'sv_active', 'sv_idle', 'sv_used', 'pool_size']) {
      tr.appendChild(cell(k, p[k], int(p[k])));
    }
    tr.appendChild(cell('maxwait_us', p.maxwait_us, us(p.maxwait_us)));
    tr.appendChild(cell('tps', p.tps, p.tps < 10 ? p.tps.toFixed(1) : int(p.tps)));
    tr.appendChild(cell('wait_us', p.wait_us, us(p.wait_us)));
    for (const k of ['xact_p50_us', 'xact_p95_us', 'xact_p99_us', 'query_p99_us']) {
      tr.appendChild(cell(k, p[k], us(p[k])));
    }
    return tr;
  });
  fill('pools', rows, 17);
  const charted = data.pools.filter((p) => p.history && p.history.t.length);
  $('pools-note').textContent = data.pools_total + ' pools' +
    (data.truncated ? ', the first ' + data.pools.length + ' listed' : '');
  $('charts').replaceChildren(...charted.map((p) => poolCard(p, spanSecs)));
}

function replicas(data, spanSecs) {
  const rows = data.replicas.map((r) => {
    const tr = el('tr');
    tr.dataset.replica = r.database + '/' + r.host + ':' + r.port;
    tr.appendChild(cell('database', r.database));
    tr.appendChild(cell('address', r.host + ':' + r.port));
    tr.appendChild(cell('role', r.role));
    const state = cell('state', r.state, '');
    state.appendChild(badge(r.state, r.state === 'ok' ? '' : r.state === 'down' ? 'bad' : 'warn'));
    tr.appendChild(state);
    tr.appendChild(cell('lag_bytes', r.lag_bytes, bytes(r.lag_bytes)));
    tr.appendChild(cell('lag_seconds', r.lag_seconds, r.lag_seconds.toFixed(3)));
    tr.appendChild(cell('reads_served', r.reads_served, int(r.reads_served)));
    const ago = r.last_check_seconds_ago;
    tr.appendChild(cell('last_check_seconds_ago', ago, ago === null ? 'never' : ago.toFixed(1) + ' s ago'));
    tr.appendChild(cell('excluded_reason', r.excluded_reason, undefined, 'text'));
    return tr;
  });
  fill('replicas', rows, 9);
  const cards = data.replicas.filter((r) => r.history && r.history.t.length).map((r) => {
    const card = el('div', null, 'card');
    card.appendChild(el('h3', r.database + ' — ' + r.host + ':' + r.port));
    const charts = el('div', null, 'charts');
    charts.appendChild(chart('lag, bytes', r.history.t, [{ name: 'bytes', values: r.history.lag_bytes }], bytes, spanSecs));
    charts.appendChild(chart('lag, seconds', r.history.t, [{ name: 'seconds', values: r.history.lag_seconds }],
      (v) => v.toFixed(3) + ' s', spanSecs));
    card.appendChild(charts);
    return card;
  });
  $('replica-charts').replaceChildren(...cards);
}

function breakers(data) {
  const rows = data.breakers.map((b) => {
    const tr = el('tr');
    tr.appendChild(cell('address', b.host + ':' + b.port));
    tr.appendChild(cell('role', b.role, undefined, 'text'));
    const state = cell('state', b.state, '', 'text');
    state.appendChild(badge(b.state, b.state === 'closed' ? '' : b.state === 'open' ? 'bad' : 'warn'));
    tr.appendChild(state);
    tr.appendChild(cell('consecutive_failures', b.consecutive_failures));
    const next = b.next_probe_in_seconds;
    tr.appendChild(cell('next_probe_in_seconds', next,
      next === null ? '' : next <= 0 ? 'due' : 'in ' + next.toFixed(1) + ' s'));
    tr.appendChild(cell('opened_at', b.opened_at));
    tr.appendChild(cell('refused_clients', b.refused_clients, int(b.refused_clients)));
    tr.appendChild(cell('last_error', b.last_error, undefined, 'text'));
    return tr;
  });
  fill('breakers', rows, 8);
}

function slow(data) {
  const rows = data.slow_queries.map((q) => {
    const tr = el('tr');
    tr.appendChild(cell('database', q.database));
    tr.appendChild(cell('user', q.user));
    tr.appendChild(cell('query', q.query, undefined, 'query'));
    tr.appendChild(cell('count', q.count, int(q.count)));
    tr.appendChild(cell('mean_us', q.mean_us, us(q.mean_us)));
    tr.appendChild(cell('max_us', q.max_us, us(q.max_us)));
    tr.appendChild(cell('last_seen', q.last_seen));
    return tr;
  });
  fill('slow', rows, 7);
  $('slow-note').textContent = data.total > data.slow_queries.length
    ? 'the ' + data.slow_queries.length + ' slowest of ' + data.total : '';
}

// --- the loop --------------------------------------------------------------------------------
function problem(what) {
  const box = $('errors');
  box.dataset.count = String(Number(box.dataset.count) + 1);
  box.textContent = what;
  box.hidden = false;
  console.error('pgmux dashboard: ' + what);
}
window.addEventListener('error', (e) => problem(String(e.message)));
window.addEventListener('unhandledrejection', (e) => problem(String(e.reason)));

async function api(name) {
  const r = await fetch('/api/' + name, { cache: 'no-store', credentials: 'same-origin' });
  if (!r.ok) throw new Error('/api/' + name + ': HTTP ' + r.status);
  return r.json();
}

async function refresh() {
  try {
    const [s, p, r, b, q] = await Promise.all(
      ['summary', 'pools', 'replicas', 'breakers', 'slow_queries'].map(api));
    const spanSecs = s.sample_seconds * s.history_samples;
    summary(s);
    pools(p, spanSecs);
    replicas(r, spanSecs);
    breakers(b);
    slow(q);
    updates += 1;
    const u = $('updated');
    u.dataset.updates = String(updates);
    u.textContent = new Date().toLocaleTimeString('en-GB') + ' (' + s.now + ')';
    $('errors').hidden = true;
  } catch (e) {
    problem(e && e.message ? e.message : String(e));
  } finally {
    setTimeout(refresh, EVERY_MS);
  }
}

refresh();
