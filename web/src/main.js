// The page: asks for a key (kept for the tab), then shows a symbol's bars, daily summary
// and latest trades, the data-quality ledger and the pipeline's health. What it shows is in
// the link's fragment (`#symbol=BHP&exchange=ASX&interval=1m&from=…&to=…&snapshot=…`), so a
// view can be shared; a `key=` there is taken into the tab's storage and out of the link.

import './style.css';
import { ApiError, get, key } from './api.js';
import { BarChart } from './chart.js';
import { $, el, show, table } from './dom.js';
import { refreshPipeline } from './pipeline.js';
import { refreshQuality, settled } from './quality.js';
import { tradingDay, wallTime, zoneOf } from './time.js';

const VIEW_FIELDS = ['exchange', 'symbol', 'interval', 'from', 'to', 'snapshot'];
const INTERVALS = ['1m', '5m', '15m', '30m', '1h', '1d'];
const TRADES_EVERY_MS = 2000;
const PIPELINE_EVERY_MS = 5000;
const QUALITY_EVERY_MS = 10000;

const view = { exchange: 'ASX', symbol: '', interval: '5m', from: '', to: '', snapshot: '' };
let letterKind = '';
let chart = null;
let generation = 0;
let timers = {};

function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const k = params.get('key');
  if (k) key.set(k);
  for (const f of VIEW_FIELDS) {
    const v = params.get(f);
    if (v !== null) view[f] = f === 'exchange' || f === 'symbol' ? v.toUpperCase() : v;
  }
  if (!INTERVALS.includes(view.interval)) view.interval = '5m';
  markAsOf();
  writeFragment();
}

function markAsOf() {
  const badge = $('as-of');
  badge.hidden = !view.snapshot;
  badge.textContent = view.snapshot ? `as of ${view.snapshot}` : '';
}

/** The view in the address bar, never the key. */
function writeFragment() {
  const params = new URLSearchParams();
  for (const f of VIEW_FIELDS) if (view[f]) params.set(f, view[f]);
  const fragment = params.size ? `#${params}` : '';
  history.replaceState(null, '', `${location.pathname}${location.search}${fragment}`);
}

function status(text, isError = false) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', isError);
}

/** An error of the API: a refused key sends the user back to the key form. */
function failed(e) {
  if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
    key.forget();
    askKey(`That key is not accepted: ${e.message}`);
    return;
  }
  status(e.message, true);
}

function askKey(message = '') {
  for (const t of Object.values(timers)) clearTimeout(t);
  $('main').hidden = true;
  $('forget').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('key').focus();
}

async function start() {
  if (!key.get()) return askKey();
  $('login').hidden = true;
  $('main').hidden = false;
  $('forget').hidden = false;
  chart ??= new BarChart($('chart'));
  // A view the link names is drawn at once, the pickers filled meanwhile; the panels
  // follow the first chart, so they do not hold it up.
  const pickers = loadExchanges().then(loadSymbols);
  try {
    if (!view.symbol) await pickers;
    await Promise.all([loadChart(), pickers]);
  } catch (e) {
    failed(e);
  }
  pipelineLoop();
  qualityLoop();
}

async function loadExchanges() {
  // The exchanges with sequenced streams (the ledger knows each); the view's own besides.
  const { data } = await get('/v1/quality/summary');
  const names = new Set(data.map((r) => r.exchange));
  names.add(view.exchange);
  fill($('exchange'), [...names].sort(), view.exchange);
}

async function loadSymbols() {
  const { data } = await get('/v1/symbols', { exchange: view.exchange });
  if (!view.symbol) {
    view.symbol = data[0] ?? '';
    view.from = view.to = '';
  }
  // A symbol named by the link stays, even before its first trade is in the lake.
  const symbols = !view.symbol || data.includes(view.symbol) ? data : [...data, view.symbol].sort();
  fill($('symbol'), symbols, view.symbol);
}

function fill(select, values, chosen, label = (v) => v) {
  select.replaceChildren(...values.map((v) => el('option', { value: v }, label(v))));
  select.value = chosen;
}

/**
 * The bars, the summary of the range's last day and the latest trades of the view.
 * `refresh`: the same view again (live), drawn without moving the user's zoom.
 */
async function loadChart(refresh = false) {
  const g = ++generation;
  const { exchange, symbol, interval } = view;
  clearTimeout(timers.trades);
  if (!symbol) {
    show('chart-head', `No trades or quotes on ${exchange} yet.`);
    return;
  }
  const pin = view.snapshot ? { snapshot: view.snapshot } : {};
  if (!refresh) status(`Loading ${symbol} …`);
  try {
    if (!view.from || !view.to) {
      // The exchange's trading day of the symbol's latest trade.
      const latest = await get('/v1/trades/recent', { symbol, exchange, limit: 1 });
      const day = latest.data[0] ? tradingDay(latest.data[0].timestamp, exchange) : new Date().toISOString().slice(0, 10);
      view.from = view.from || day;
      view.to = view.to || day;
    }
    $('interval').value = interval;
    $('from').value = view.from;
    $('to').value = view.to;
    writeFragment();
    const bars = await get(`/v1/ohlcv/${interval}`, { symbol, exchange, start_date: view.from, end_date: view.to, ...pin });
    if (g !== generation) return;
    const drawn = chart.show(bars.data, exchange, !refresh);
    const asOf = view.snapshot ? ` as of snapshot ${view.snapshot}` : '';
    show('chart-head', el('strong', {}, `${symbol} · ${exchange}`), ` ${interval} bars, ${view.from} to ${view.to}, ${zoneOf(exchange)} time${asOf}: ${drawn.toLocaleString('en')} bars`);
    const lastDay = bars.data.some((b) => tradingDay(b.start, exchange) === view.to);
    const summary = lastDay ? await get(`/v1/summary/${symbol}/${view.to}`, { exchange, ...pin }) : null;
    if (g !== generation) return;
    showSummary(summary?.data, view.to);
    $('chart').dataset.shown = VIEW_FIELDS.map((f) => view[f]).join('|');
    if (!document.body.dataset.firstChartMs) document.body.dataset.firstChartMs = performance.now().toFixed(0);
    status(`${symbol}: ${drawn.toLocaleString('en')} bars${asOf}`);
  } catch (e) {
    if (g === generation) failed(e);
    return;
  }
  loadTrades(g);
}

function showSummary(s, day) {
  if (!s) {
    show('summary', el('p', { class: 'empty' }, `no trades on ${day}`));
    return;
  }
  const fields = [['date', 'Day'], ['open', 'Open'], ['high', 'High'], ['low', 'Low'], ['close', 'Close'], ['volume', 'Volume'], ['trade_count', 'Trades'], ['vwap', 'VWAP']];
  show('summary', el('dl', { class: 'summary' }, fields.map(([f, name]) => [el('dt', {}, name), el('dd', { dataset: { field: f } }, String(s[f]))])));
}

/** The latest trades; polled while the server merges the live tail (`k2 up`). */
async function loadTrades(g) {
  const { symbol, exchange } = view;
  let answer;
  try {
    answer = document.hidden ? null : await get('/v1/trades/recent', { symbol, exchange, limit: 15 });
  } catch (e) {
    answer = { error: e };
  }
  if (g !== generation) return;
  if (answer) {
    show('trades', settled(answer.error ? { status: 'rejected', reason: answer.error } : { status: 'fulfilled', value: answer }, (a) =>
      table(a.data, [
        ['day', (t) => tradingDay(t.timestamp, exchange)],
        ['time', (t) => wallTime(t.timestamp, exchange)],
        'price',
        'quantity',
        'side',
        ['seq', (t) => t.source_sequence],
      ], 'no trades yet'),
    ));
    $('live').hidden = !answer.live;
  }
  if (!answer || answer.live) timers.trades = setTimeout(() => loadTrades(g), TRADES_EVERY_MS);
}

async function pipelineLoop() {
  clearTimeout(timers.pipeline);
  if (!view.symbol) {
    // Nothing to chart yet: look again for the exchange's first symbol.
    try {
      await loadSymbols();
      if (view.symbol) loadChart();
    } catch (e) {
      failed(e);
    }
  } else if (!$('live').hidden && !view.snapshot) {
    // Under a live writer the bars grow with each commit.
    loadChart(true);
  }
  const snaps = await refreshPipeline(view.snapshot, travel);
  if (snaps) {
    const options = [''];
    const labels = { '': 'now (current snapshot)' };
    for (const s of snaps) {
      for (const tag of s.tags ? s.tags.split(',') : []) {
        options.push(tag);
        labels[tag] = `${tag} (tag, ${s.committed_at})`;
      }
      const id = String(s.snapshot_id);
      options.push(id);
      labels[id] = `${s.committed_at} · ${id}`;
    }
    if (view.snapshot && !options.includes(view.snapshot)) {
      options.push(view.snapshot);
      labels[view.snapshot] = view.snapshot;
    }
    fill($('snapshot'), options, view.snapshot, (v) => labels[v]);
  }
  timers.pipeline = setTimeout(pipelineLoop, PIPELINE_EVERY_MS);
}

async function qualityLoop() {
  clearTimeout(timers.quality);
  await refreshQuality(view, letterKind, (kind) => {
    letterKind = kind;
    qualityLoop();
  });
  timers.quality = setTimeout(qualityLoop, QUALITY_EVERY_MS);
}

/** Looks at the lake as of a snapshot (an id or a tag); '' is now. */
function travel(snapshot) {
  view.snapshot = snapshot;
  markAsOf();
  $('snapshot').value = snapshot;
  loadChart();
  qualityLoop();
  pipelineLoop();
}

function wire() {
  $('login').addEventListener('submit', async (e) => {
    e.preventDefault();
    key.set($('key').value.trim());
    $('key').value = '';
    try {
      await get('/v1/symbols', { exchange: view.exchange });
    } catch (err) {
      key.forget();
      askKey(err instanceof ApiError && (err.status === 401 || err.status === 403) ? 'That key is not accepted.' : err.message);
      return;
    }
    start();
  });
  $('forget').addEventListener('click', () => {
    key.forget();
    askKey();
  });
  $('exchange').addEventListener('change', async (e) => {
    view.exchange = e.target.value;
    view.symbol = '';
    try {
      await loadSymbols();
    } catch (err) {
      return failed(err);
    }
    loadChart();
    qualityLoop();
  });
  $('symbol').addEventListener('change', (e) => {
    view.symbol = e.target.value;
    view.from = view.to = '';
    loadChart();
    qualityLoop();
  });
  $('interval').addEventListener('change', (e) => {
    view.interval = e.target.value;
    loadChart();
  });
  for (const f of ['from', 'to']) {
    $(f).addEventListener('change', (e) => {
      view[f] = e.target.value;
      if (view.from && view.to && view.from > view.to) view[f === 'from' ? 'to' : 'from'] = view[f];
      loadChart();
    });
  }
  $('snapshot').addEventListener('change', (e) => travel(e.target.value));
  window.addEventListener('hashchange', () => {
    readFragment();
    if (key.get()) start();
  });
}

wire();
readFragment();
start();
