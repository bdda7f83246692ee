// Pipeline health: each table's last commit and its age, the feeds and the writer's lag
// per partition as this process's /metrics says (the series the alerts read), and the
// trades table's snapshots to travel back to.

import { get } from './api.js';
import { age, el, show, table } from './dom.js';
import { parse } from './prom.js';
import { settled } from './quality.js';

const BREAKER = ['closed', 'half-open', 'open'];
const LEVELS = ['normal', 'soft', 'graceful', 'aggressive', 'halt'];

/** Refreshes the panel; `onTravel(snapshot)` is called when a snapshot is picked. */
export async function refreshPipeline(current, onTravel) {
  const [stats, metrics, snaps] = await Promise.allSettled([
    get('/v1/stats'),
    get('/metrics', {}, false),
    get('/v1/snapshots', { table: 'trades', limit: 50 }),
  ]);
  const now = Date.now() / 1000;
  const fresh = metrics.status === 'fulfilled' ? freshness(parse(metrics.value)) : new Map();
  show('tables', settled(stats, (a) =>
    table(a.data.tables, [
      'table',
      'rows',
      'snapshots',
      ['last commit', (r) => r.last_commit ?? 'never'],
      ['age', (r) => (r.last_commit ? age(now - Date.parse(r.last_commit) / 1000) : '')],
      ['freshness (mean per commit)', (r) => fresh.get(r.table.split('.').pop()) ?? ''],
    ]),
  ));
  show('feeds', settled(metrics, (text) => feeds(parse(text), now)));
  show('lag', settled(metrics, (text) => lag(parse(text))));
  const level = metrics.status === 'fulfilled' ? parse(metrics.value).get('k2_degradation_level') : null;
  const badge = document.getElementById('degradation');
  badge.hidden = !level;
  if (level) {
    const n = level[0].value;
    badge.textContent = `degradation: ${LEVELS[n] ?? n}`;
    badge.classList.toggle('alert', n > 0);
  }
  show('snapshots', settled(snaps, (a) => snapshots(a.data, current, onTravel)));
  return snaps.status === 'fulfilled' ? snaps.value.data : null;
}

/**
 * Per table, the mean of `k2_lake_freshness_seconds` (received → queryable, per commit) over
 * this process's commits.
 */
function freshness(m) {
  const sums = new Map((m.get('k2_lake_freshness_seconds_sum') ?? []).map((s) => [s.labels.table, s.value]));
  const out = new Map();
  for (const c of m.get('k2_lake_freshness_seconds_count') ?? []) {
    if (c.value > 0 && sums.has(c.labels.table)) {
      out.set(c.labels.table, `${age(sums.get(c.labels.table) / c.value)} over ${c.value} commits`);
    }
  }
  return out;
}

function feeds(m, now) {
  const byVenue = new Map();
  const take = (name, field, combine = (_, v) => v) => {
    for (const s of m.get(name) ?? []) {
      const venue = s.labels.venue;
      if (!venue) continue;
      const row = byVenue.get(venue) ?? { venue };
      row[field] = combine(row[field] ?? 0, s.value);
      byVenue.set(venue, row);
    }
  };
  take('k2_feed_connections_open', 'open');
  take('k2_feed_breaker_state', 'breaker');
  take('k2_feed_last_message_timestamp_seconds', 'last');
  take('k2_feed_failures_in_a_row', 'failures');
  take('k2_feed_records_total', 'records', (a, b) => a + b);
  return table(
    [...byVenue.values()],
    [
      'venue',
      ['state', (r) => el('span', { class: r.open > 0 ? 'ok' : 'alert' }, r.open > 0 ? 'connected' : 'down')],
      ['breaker', (r) => BREAKER[r.breaker] ?? ''],
      ['last message', (r) => (r.last ? `${age(now - r.last)} ago` : 'never')],
      ['failures in a row', (r) => r.failures ?? 0],
      ['records', (r) => r.records ?? 0],
    ],
    'no feed runs in this process (k2 up --feeds binance,kraken runs them here)',
  );
}

function lag(m) {
  const rows = (m.get('k2_log_consumer_lag_records') ?? [])
    .map((s) => ({ topic: s.labels.topic, partition: Number(s.labels.partition), behind: s.value }))
    .sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
  return table(rows, ['topic', 'partition', ['records behind', (r) => r.behind]], 'no lake writer runs in this process (k2 up runs one)');
}

function snapshots(list, current, onTravel) {
  return table(
    list,
    [
      ['committed', (r) => r.committed_at],
      ['snapshot', (r) => String(r.snapshot_id)],
      'operation',
      ['rows added', (r) => r.added_records],
      ['rows', (r) => r.total_records],
      'tags',
      [
        '',
        (r) => {
          const id = String(r.snapshot_id);
          return current === id || (r.tags && r.tags.split(',').includes(current))
            ? el('strong', {}, 'looking at it')
            : el('button', { type: 'button', onclick: () => onTravel(r.tags ? r.tags.split(',')[0] : id) }, 'as of this');
        },
      ],
    ],
    'no snapshot yet',
  );
}
