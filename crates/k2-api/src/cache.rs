//! Answers kept by the snapshot they were computed from.
//!
//! An Iceberg snapshot never changes, so an answer is a pure function of the question and
//! the snapshot of the table it read: kept under both, it is exactly what running the
//! query again would give. A commit makes a new snapshot, so later requests miss and
//! compute afresh; answers of old snapshots age out. Bounded by an estimate of the bytes
//! held (moka's weighted cache: recency and frequency decide what goes).

use std::any::Any;
use std::sync::{Arc, OnceLock};

use crate::metrics;

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

type Held = (Arc<dyn Any + Send + Sync>, u32);

pub struct AnswerCache {
    capacity: u64,
    held: moka::future::Cache<String, Held>,
}

impl AnswerCache {
    /// Holds answers up to about `capacity` bytes (0: holds nothing).
    pub fn new(capacity: u64) -> Self {
        AnswerCache {
            capacity,
            held: moka::future::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_key: &String, (_, bytes): &Held| *bytes)
                .build(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub async fn get<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        let value = self
            .held
            .get(key)
            .await
            .and_then(|(v, _)| v.downcast::<T>().ok());
        metrics::cache_lookup(value.is_some());
        value
    }

    /// Keeps `value` (of about `bytes`) under `key`; an answer larger than a quarter of
    /// the capacity is not kept.
    pub async fn put<T: Send + Sync + 'static>(&self, key: String, value: Arc<T>, bytes: usize) {
        let bytes = bytes.saturating_add(key.len() + 64);
        if bytes as u64 > self.capacity / 4 {
            return;
        }
        let weight = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.held.insert(key, (value, weight)).await;
        self.held.run_pending_tasks().await;
        metrics::cache_bytes(self.held.weighted_size());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_come_back_by_key_and_type_within_the_bound() {
        let cache = AnswerCache::new(10_000);
        cache.put("a".into(), Arc::new(7u64), 100).await;
        assert_eq!(cache.get::<u64>("a").await.as_deref(), Some(&7));
        // Another type under the key is a miss, never a wrong answer.
        assert!(cache.get::<String>("a").await.is_none());
        // Over a quarter of the capacity: not kept.
        cache.put("big".into(), Arc::new(1u64), 5_000).await;
        assert!(cache.get::<u64>("big").await.is_none());
        // Many answers stay within the capacity.
        for i in 0..100 {
            cache.put(format!("k{i}"), Arc::new(i), 1_000).await;
        }
        assert!(cache.held.weighted_size() <= 10_000);
        assert!(!AnswerCache::new(0).enabled());
    }
}
