//! What the handlers share: the configuration, the keys and rate limiters, the query gate
//! and runtime, the engine and the answer cache, and the shutdown signal streams watch.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use k2_lake::LakeTable;
use k2_lake::query::{Pin, QueryEngine, Receipt};
use tokio_util::sync::CancellationToken;

use crate::Backends;
use crate::cache::{AnswerCache, Kept};
use crate::config::ApiConfig;
use crate::failure::Failure;
use crate::keys::Keys;
use crate::limits::{QueryGate, RateLimiter, Refused, run_query};

pub struct ApiState {
    pub config: ApiConfig,
    pub keys: Keys,
    pub limiter: RateLimiter,
    pub ip_limiter: RateLimiter,
    gate: QueryGate,
    pub runtime: tokio::runtime::Handle,
    pub engine: Arc<QueryEngine>,
    pub backends: Backends,
    pub started: Instant,
    answers: AnswerCache,
    /// Slots of streamed replays.
    pub replays: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the server begins to shut down (streams end then).
    pub stop: CancellationToken,
}

impl ApiState {
    pub fn new(
        config: ApiConfig,
        keys: Keys,
        backends: Backends,
        runtime: tokio::runtime::Handle,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let mut gate = QueryGate::new(
            config.max_concurrent_queries,
            config.max_queued,
            config.queue_timeout,
        );
        if let Some(d) = &backends.degradation {
            gate = gate.reporting_to(d.pressure.clone());
        }
        Arc::new(ApiState {
            replays: Arc::new(tokio::sync::Semaphore::new(config.max_replays)),
            stop,
            gate,
            engine: backends.engine.clone(),
            answers: AnswerCache::new(config.cache_mb.saturating_mul(1 << 20)),
            config,
            keys,
            limiter: RateLimiter::default(),
            ip_limiter: RateLimiter::default(),
            runtime,
            backends,
            started: Instant::now(),
        })
    }

    /// Runs `work` on the query runtime behind the gate.
    pub async fn query<T, F>(&self, work: impl FnOnce(Arc<QueryEngine>) -> F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let permit = self.gate.enter().await.map_err(|r| match r {
            Refused::QueueFull => {
                Failure::busy("too many queries are running and waiting; retry shortly", 1)
            }
            Refused::Waited(d) => Failure::busy(
                format!(
                    "no query slot became free within {:.1}s; retry shortly",
                    d.as_secs_f64()
                ),
                1,
            ),
        })?;
        run_query(&self.runtime, permit, work(self.engine.clone()))
            .await
            .unwrap_or_else(|| Err(Failure::internal("the query task ended unexpectedly")))
    }

    /// Answers `question` with `work` at the table's current snapshot (or at `pinned`),
    /// from memory when the same question was answered at the same snapshot (see
    /// [`AnswerCache`]). `weigh` estimates an answer's bytes.
    pub async fn answer<T, F>(
        &self,
        table: LakeTable,
        pin: Pin,
        question: String,
        weigh: impl FnOnce(&T) -> usize,
        work: impl FnOnce(Arc<QueryEngine>, Option<i64>) -> F,
    ) -> Result<(Arc<Kept<T>>, Receipt), Failure>
    where
        T: Send + Sync + 'static,
        F: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        // Table metadata is cached by the engine, so this is cheap; it runs on the query
        // runtime, where the engine's I/O belongs.
        let engine = self.engine.clone();
        let (_, receipt) = self
            .runtime
            .spawn(async move { engine.pin(table, &pin).await })
            .await
            .map_err(|_| Failure::internal("the snapshot lookup ended unexpectedly"))??;
        let snapshot = receipt.snapshot_id;
        let key = format!("{}|{question}@{snapshot:?}", table.name());
        if self.answers.enabled()
            && let Some(hit) = self.answers.get::<Kept<T>>(&key).await
        {
            return Ok((hit, receipt));
        }
        let value = Arc::new(Kept::new(
            self.query(move |engine| work(engine, snapshot)).await?,
        ));
        if self.answers.enabled() {
            // Its JSON encoding, kept once asked for, is about as large again.
            self.answers
                .put(key, value.clone(), 2 * weigh(&value.value))
                .await;
        }
        Ok((value, receipt))
    }
}
