//! Rate limits (a token bucket per key or client address) and the query gate (bounded
//! concurrency with a bounded, time-limited queue).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;

/// Buckets kept before idle ones (full again) are dropped: bounds memory under many addresses.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The outcome of one request against its bucket, with what the RateLimit headers say.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
    /// Seconds until the next request would pass (when refused).
    pub retry_after_s: u64,
    pub rate_per_second: f64,
}

/// Token buckets by name: `burst` tokens, refilled at `rate` per second.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn check(&self, name: &str, rate: f64, burst: u32) -> Decision {
        let now = Instant::now();
        let burst_f = f64::from(burst.max(1));
        let rate = rate.max(1e-6);
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(name) {
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst_f);
        }
        let bucket = buckets.entry(name.to_string()).or_insert(Bucket {
            tokens: burst_f,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst_f);
        bucket.at = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        Decision {
            allowed,
            limit: burst.max(1),
            remaining: bucket.tokens.floor() as u32,
            reset_s: ((burst_f - bucket.tokens) / rate).ceil() as u64,
            retry_after_s: if allowed {
                0
            } else {
                ((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64
            },
            rate_per_second: rate,
        }
    }
}

/// Why the gate refused a query.
#[derive(Debug)]
pub enum Refused {
    /// The queue is full.
    QueueFull,
    /// Waited the whole queue timeout.
    Waited(Duration),
}

/// At most `running` queries at once; up to `queued` more wait, each at most `wait`.
pub struct QueryGate {
    permits: std::sync::Arc<Semaphore>,
    waiting: AtomicUsize,
    queued: usize,
    wait: Duration,
    /// Told how full the queue is, for the degradation level.
    pressure: Option<std::sync::Arc<k2_pipeline::Pressure>>,
}

impl QueryGate {
    pub fn new(running: usize, queued: usize, wait: Duration) -> QueryGate {
        QueryGate {
            permits: std::sync::Arc::new(Semaphore::new(running.max(1))),
            waiting: AtomicUsize::new(0),
            queued,
            wait,
            pressure: None,
        }
    }

    /// The gate that tells `pressure` how full its queue is.
    pub fn reporting_to(mut self, pressure: std::sync::Arc<k2_pipeline::Pressure>) -> Self {
        pressure.report_api_queue(0, self.queued as u64);
        self.pressure = Some(pressure);
        self
    }

    fn report(&self, waiting: usize) {
        if let Some(p) = &self.pressure {
            p.report_api_queue(waiting as u64, self.queued as u64);
        }
    }

    /// A slot, now or after waiting in the queue.
    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, Refused> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::query_shed("queue_full");
            return Err(Refused::QueueFull);
        }
        metrics::queries_queued(1.0);
        self.report(self.waiting.load(Ordering::Acquire));
        let waited = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
        let now_waiting = self.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::queries_queued(-1.0);
        self.report(now_waiting);
        match waited {
            Ok(Ok(p)) => Ok(p),
            _ => {
                metrics::query_shed("queue_timeout");
                Err(Refused::Waited(self.wait))
            }
        }
    }
}

/// Runs `work` on the query runtime while holding a gate slot; the work is cancelled when the
/// caller goes away (a dropped request drops its query).
pub async fn run_query<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    permit: OwnedSemaphorePermit,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    /// Counts a running query until its task ends or is aborted.
    struct Running(#[allow(dead_code)] OwnedSemaphorePermit);
    impl Drop for Running {
        fn drop(&mut self) {
            metrics::queries_running(-1.0);
        }
    }
    metrics::queries_running(1.0);
    let running = Running(permit);
    let mut handle = AbortOnDrop(runtime.spawn(async move {
        let _running = running;
        work.await
    }));
    (&mut handle.0).await.ok()
}
