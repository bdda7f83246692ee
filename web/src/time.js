// Exchange time: a trading day is the exchange's own calendar day. The zones are those of
// k2_model::exchange::time_zone (crypto venues and unknown ones trade on UTC days).

const ZONES = {
  ASX: 'Australia/Sydney',
  NYSE: 'America/New_York',
  NASDAQ: 'America/New_York',
  LSE: 'Europe/London',
};

export const zoneOf = (exchange) => ZONES[exchange] ?? 'UTC';

const parts = (date, zone) =>
  Object.fromEntries(
    new Intl.DateTimeFormat('en-GB', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    })
      .formatToParts(date)
      .map((p) => [p.type, p.value]),
  );

/** The trading day (YYYY-MM-DD) of an instant on an exchange. */
export function tradingDay(iso, exchange) {
  const p = parts(new Date(iso), zoneOf(exchange));
  return `${p.year}-${p.month}-${p.day}`;
}

/** Wall-clock time on the exchange, `HH:MM:SS`. */
export function wallTime(iso, exchange) {
  const p = parts(new Date(iso), zoneOf(exchange));
  return `${p.hour}:${p.minute}:${p.second}`;
}

/**
 * Seconds for the chart's axis: the exchange's wall clock written as if it were UTC, so
 * the axis reads exchange time (the chart library draws UTC only).
 */
export function chartSeconds(iso, exchange) {
  const d = new Date(iso);
  const p = parts(d, zoneOf(exchange));
  return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) / 1000;
}
