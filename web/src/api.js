// The API as the page asks it: every `/v1` question carries the key kept in the tab's
// session storage. A key in the link's fragment (`#key=…`) is moved there and taken out of
// the address bar; fragments never reach the server.

const KEY = 'k2.api-key';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (k) => sessionStorage.setItem(KEY, k),
  forget: () => sessionStorage.removeItem(KEY),
};

/** GET `path` with `params` (unset ones left out); the answer's JSON. */
export async function get(path, params = {}, withKey = true) {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') query.set(k, v);
  }
  const url = query.size ? `${path}?${query}` : path;
  const headers = { Accept: 'application/json' };
  if (withKey) headers['X-API-Key'] = key.get() ?? '';
  let response;
  try {
    response = await fetch(url, { headers, signal: AbortSignal.timeout(30000) });
  } catch (e) {
    throw new ApiError(0, `${path}: no answer (${e.message})`);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = body.error.message;
    } catch {
      // the status line says enough
    }
    throw new ApiError(response.status, `${path}: ${message}`);
  }
  const text = await response.text();
  return path === '/metrics' ? text : JSON.parse(text, exactIntegers);
}

/**
 * Integers beyond 2^53 (snapshot ids) kept as their digits: a JavaScript number would round
 * them to another snapshot's id. Needs the reviver's source text (Chromium 114, Firefox
 * 135, Safari 18.4); older browsers get numbers.
 */
function exactIntegers(_key, value, context) {
  if (typeof value === 'number' && !Number.isSafeInteger(value) && context?.source && /^-?\d+$/.test(context.source)) {
    return context.source;
  }
  return value;
}
