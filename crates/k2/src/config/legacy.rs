//! Keys of the previous release, accepted for one more: numeric durations with their unit
//! in the name (`writer.max_age_seconds = 10`) become typed durations
//! (`writer.max_age = "10s"`), and keys that no longer exist are ignored. Each use is
//! reported with what to write instead; a file giving both the old and the new key is an
//! error.

use std::time::Duration;

use anyhow::bail;

/// How an old key's number reads.
#[derive(Clone, Copy)]
enum Unit {
    Millis,
    Seconds,
    Hours,
}

/// What became of an old key.
#[derive(Clone, Copy)]
enum Fate {
    /// Renamed to this key, its number read in this unit.
    Duration(&'static str, Unit),
    /// Gone; the reason.
    Removed(&'static str),
}

use Fate::{Duration as D, Removed};
use Unit::{Hours, Millis, Seconds};

/// (section, old key, fate).
const KEYS: &[(&str, &str, Fate)] = &[
    ("writer", "max_age_seconds", D("max_age", Seconds)),
    ("writer", "retry_base_ms", D("retry_base", Millis)),
    ("writer", "retry_max_ms", D("retry_max", Millis)),
    ("writer", "breaker_open_ms", D("breaker_open", Millis)),
    (
        "writer",
        "snapshot_retention_hours",
        D("snapshot_retention", Hours),
    ),
    ("query", "timeout_seconds", D("timeout", Seconds)),
    (
        "query",
        "metadata_refresh_ms",
        D("metadata_refresh", Millis),
    ),
    ("dedup", "window_seconds", D("window", Seconds)),
    ("dedup", "bucket_seconds", D("bucket", Seconds)),
    ("dedup", "redis_lease_seconds", D("redis_lease", Seconds)),
    ("sequence", "reset_after_seconds", D("reset_after", Seconds)),
    ("feeds", "stale_after_seconds", D("stale_after", Seconds)),
    ("feeds", "ping_every_seconds", D("ping_every", Seconds)),
    ("feeds", "backoff_base_ms", D("backoff_base", Millis)),
    ("feeds", "backoff_max_ms", D("backoff_max", Millis)),
    ("feeds", "breaker_open_ms", D("breaker_open", Millis)),
    (
        "feeds",
        "healthy_after_seconds",
        D("healthy_after", Seconds),
    ),
    ("feeds", "rotate_after_hours", D("rotate_after", Hours)),
    ("api", "queue_timeout_ms", D("queue_timeout", Millis)),
    ("api", "tail_seconds", D("tail_age", Seconds)),
    (
        "api",
        "max_lookback_days",
        Removed("any range may be asked; query.timeout and query.memory_limit_mb bound a query"),
    ),
    (
        "api",
        "max_range_days",
        Removed("any range may be asked; query.timeout and query.memory_limit_mb bound a query"),
    ),
    ("log.kafka", "linger_ms", D("linger", Millis)),
    (
        "log.kafka",
        "delivery_timeout_ms",
        D("delivery_timeout", Millis),
    ),
    (
        "log.kafka",
        "request_timeout_ms",
        D("request_timeout", Millis),
    ),
    ("log.kafka", "fetch_wait_ms", D("fetch_wait", Millis)),
];

/// Rewrites the old keys in `table` to the new ones; returns one warning per key found.
pub fn upgrade(table: &mut toml::Table) -> anyhow::Result<Vec<String>> {
    let mut warnings = Vec::new();
    for &(section, old, fate) in KEYS {
        let Some(t) = section_mut(table, section) else {
            continue;
        };
        let Some(value) = t.remove(old) else {
            continue;
        };
        let (new, unit) = match fate {
            Removed(why) => {
                warnings.push(format!("{section}.{old} is no longer read ({why})"));
                continue;
            }
            D(new, unit) => (new, unit),
        };
        if t.contains_key(new) {
            bail!("{section}.{old} and {section}.{new} are both set: keep {section}.{new}");
        }
        let number = match value {
            toml::Value::Integer(i) => i as f64,
            toml::Value::Float(f) => f,
            other => bail!(
                "{section}.{old} must be a number, not {other}; better, write {section}.{new} as a duration"
            ),
        };
        let seconds = match unit {
            Millis => number / 1e3,
            Seconds => number,
            Hours => number * 3600.0,
        };
        let Ok(duration) = Duration::try_from_secs_f64(seconds) else {
            bail!("{section}.{old} must be a number of at least 0, not {number}");
        };
        let text = humantime::format_duration(duration).to_string();
        warnings.push(format!(
            "{section}.{old} is deprecated and read this release only: write {section}.{new} = \"{text}\""
        ));
        t.insert(new.to_string(), toml::Value::String(text));
    }
    Ok(warnings)
}

/// The table at a dotted `path`, if the configuration has it.
fn section_mut<'a>(table: &'a mut toml::Table, path: &str) -> Option<&'a mut toml::Table> {
    path.split('.')
        .try_fold(table, |t, key| t.get_mut(key)?.as_table_mut())
}
