//! Answers kept by the snapshot they were computed from.
//!
//! An Iceberg snapshot never changes, so an answer is a pure function of the question and
//! the snapshot of the table it read: kept under both, it is exactly what running the
//! query again would give. A commit makes a new snapshot, so later requests miss and
//! compute afresh; answers of old snapshots age out. Bounded by an estimate of the bytes
//! held; the least recently used answers go first.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A kept answer, and its JSON encoding once a request asked for it (a repeated question
/// then costs a copy of bytes, not an encoding).
pub struct Kept<T> {
    pub value: T,
    json: OnceLock<Vec<u8>>,
}

impl<T> Kept<T> {
    pub fn new(value: T) -> Self {
        Kept {
            value,
            json: OnceLock::new(),
        }
    }

    /// The answer's JSON, encoded by `encode` the first time.
    pub fn json<E>(&self, encode: impl FnOnce(&T) -> Result<Vec<u8>, E>) -> Result<&[u8], E> {
        if let Some(j) = self.json.get() {
            return Ok(j);
        }
        let j = encode(&self.value)?;
        Ok(self.json.get_or_init(|| j))
    }
}

pub struct AnswerCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
    clock: u64,
}

struct Entry {
    value: Arc<dyn Any + Send + Sync>,
    bytes: usize,
    used: u64,
}

impl AnswerCache {
    /// Holds answers up to about `capacity` bytes (0: holds nothing).
    pub fn new(capacity: usize) -> Self {
        AnswerCache {
            capacity,
            inner: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub fn get<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        let mut inner = self.inner.lock().expect("cache lock");
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(key)?;
        entry.used = now;
        let value = entry.value.clone().downcast::<T>().ok();
        metrics::counter!("k2_api_cache_total", "outcome" => if value.is_some() { "hit" } else { "miss" })
            .increment(1);
        value
    }

    /// Keeps `value` (of about `bytes`) under `key`; an answer larger than a quarter of
    /// the capacity is not kept.
    pub fn put<T: Send + Sync + 'static>(&self, key: String, value: Arc<T>, bytes: usize) {
        metrics::counter!("k2_api_cache_total", "outcome" => "miss").increment(1);
        let bytes = bytes + key.len() + 64;
        if bytes > self.capacity / 4 {
            return;
        }
        let mut inner = self.inner.lock().expect("cache lock");
        inner.clock += 1;
        let used = inner.clock;
        if let Some(old) = inner.entries.insert(key, Entry { value, bytes, used }) {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        if inner.bytes > self.capacity {
            // Down to 90 % in one pass, so eviction runs once per many inserts.
            let mut by_age: Vec<(u64, String)> = inner
                .entries
                .iter()
                .map(|(k, e)| (e.used, k.clone()))
                .collect();
            by_age.sort_unstable();
            let target = self.capacity / 10 * 9;
            for (_, k) in by_age {
                if inner.bytes <= target {
                    break;
                }
                if let Some(e) = inner.entries.remove(&k) {
                    inner.bytes -= e.bytes;
                }
            }
        }
        metrics::gauge!("k2_api_cache_bytes").set(inner.bytes as f64);
    }
}
