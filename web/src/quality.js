// Data quality: the completeness ledger per stream and its gaps (as of the snapshot looked
// at), and the dead letters by reason with each one a click away.

import { get } from './api.js';
import { $, el, show, table } from './dom.js';

const STREAM_COLUMNS = [
  ['table', (r) => r.table.replace(/^market_data\./, '')],
  'symbol',
  'session',
  ['first seq', (r) => r.first_sequence],
  ['last seq', (r) => r.last_sequence],
  'received',
  'gaps',
  ['late fills', (r) => r.late_fills],
  'missing',
  'lost',
  ['duplicates dropped', (r) => r.duplicates_dropped],
  ['repeated seq', (r) => r.sequence_duplicates],
  'resets',
];

/** Refreshes the panel; `view` is what the chart shows (exchange, symbol, snapshot). */
export async function refreshQuality(view, letterKind, onKind) {
  const pin = view.snapshot ? { snapshot: view.snapshot, table: 'trades' } : {};
  const [streams, gaps, letters] = await Promise.allSettled([
    get('/v1/quality/summary', { exchange: view.exchange, ...pin }),
    get('/v1/quality/gaps', { exchange: view.exchange, ...pin }),
    get('/v1/dead-letters', { kind: letterKind, limit: 50 }),
  ]);
  show('streams', settled(streams, (a) => {
    const t = table(a.data, STREAM_COLUMNS, `no sequenced streams on ${view.exchange}`);
    for (const [i, r] of a.data.entries()) {
      if (r.symbol === view.symbol) t.tBodies[0]?.rows[i]?.classList.add('current');
    }
    return t;
  }));
  show('gaps', settled(gaps, (a) =>
    a.data.length
      ? table(a.data, Object.keys(a.data[0]))
      : el('p', { class: 'empty' }, `no gap found on ${view.exchange}: every sequence arrived`),
  ));
  show('letters', settled(letters, (a) => deadLetters(a.data, letterKind, onKind)));
}

function deadLetters(d, kind, onKind) {
  const reasons = table(
    d.by_reason,
    [
      'stage',
      ['kind', (r) => el('a', { href: `#`, onclick: (e) => { e.preventDefault(); onKind(r.kind); } }, r.kind)],
      'count',
    ],
    'none: every record read was accepted',
  );
  const filter = kind
    ? el('p', {}, `Showing ${kind} only. `, el('a', { href: '#', onclick: (e) => { e.preventDefault(); onKind(''); } }, 'Show every kind'))
    : null;
  const list = d.letters.length
    ? table(d.letters, [
        ['id', (r) => el('a', { href: `/v1/dead-letters/${r.id}`, onclick: (e) => { e.preventDefault(); openLetter(r.id); } }, String(r.id))],
        ['rejected', (r) => r.rejected_at],
        'stage',
        'source',
        'kind',
        'reason',
      ])
    : null;
  return el('div', {}, el('p', {}, `${d.total.toLocaleString('en')} stored`), reasons, filter, list);
}

async function openLetter(id) {
  const dialog = $('letter');
  show('letter-body', el('p', {}, `Dead letter ${id} …`));
  dialog.showModal();
  try {
    const { data } = await get(`/v1/dead-letters/${id}`);
    show(
      'letter-body',
      el('h3', {}, `Dead letter ${data.id}`),
      el('dl', {}, Object.entries(data).filter(([k]) => k !== 'raw').map(([k, v]) => [el('dt', {}, k), el('dd', {}, String(v))])),
      el('h4', {}, 'Raw record'),
      el('pre', {}, data.raw),
    );
  } catch (e) {
    show('letter-body', el('p', { class: 'error' }, e.message));
  }
}

/** The answer drawn by `draw`, or what went wrong in its place. */
export function settled(result, draw) {
  return result.status === 'fulfilled'
    ? draw(result.value)
    : el('p', { class: 'error' }, result.reason.message);
}
