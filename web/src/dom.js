// Small DOM helpers: elements by id, tables from rows, text that is never HTML.

export const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/**
 * A table of `rows` with `columns`: each is a key, or [heading, row => cell] where a cell
 * is text or a node. `empty` is said when there are no rows.
 */
export function table(rows, columns, empty = 'none') {
  if (!rows.length) return el('p', { class: 'empty' }, empty);
  const cols = columns.map((c) => (Array.isArray(c) ? c : [c, (r) => r[c]]));
  return el(
    'table',
    { class: 'data' },
    el('thead', {}, el('tr', {}, cols.map(([h]) => el('th', {}, h)))),
    el('tbody', {}, rows.map((r) => el('tr', {}, cols.map(([, f]) => el('td', {}, fmt(f(r))))))),
  );
}

function fmt(v) {
  if (v === null || v === undefined) return '';
  if (v instanceof Node) return v;
  if (typeof v === 'number') return v.toLocaleString('en');
  return String(v);
}

/** Replaces what `id` shows. */
export function show(id, ...nodes) {
  $(id).replaceChildren(...nodes);
}

/** A duration in seconds as people say it. */
export function age(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '';
  const s = Math.max(0, seconds);
  if (s < 90) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} days`;
}
