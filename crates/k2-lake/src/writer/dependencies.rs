//! The lake writer's dependencies (catalog, object storage, log, Redis), each behind a
//! retry policy and a circuit breaker, with what happens exported as metrics.
//!
//! A retryable failure is retried with jittered exponential backoff; the breaker opens
//! after consecutive failures and makes calls wait instead of hammering the dependency;
//! once the attempts are used up the call fails with [`LakeError::Exhausted`] and the
//! writer stops without committing, so a restart resumes from the last commit.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use k2_pipeline::{BreakerConfig, BreakerState, CircuitBreaker, RetryPolicy};

use super::options::{WriterOptions, WriterSummary};
use crate::error::{LakeError, Result};
use crate::metrics;

pub(super) struct Dependency {
    name: &'static str,
    breaker: CircuitBreaker,
    policy: RetryPolicy,
    jitter: fastrand::Rng,
    /// Breaker transitions, in order (for the run summary).
    pub transitions: Vec<BreakerState>,
    pub retries: u64,
}

impl Dependency {
    pub fn new(name: &'static str, policy: RetryPolicy, breaker: BreakerConfig) -> Self {
        metrics::breaker_state(name, BreakerState::Closed);
        Dependency {
            name,
            breaker: CircuitBreaker::new(breaker),
            policy,
            jitter: fastrand::Rng::new(),
            transitions: Vec::new(),
            retries: 0,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn publish(&mut self, change: Option<BreakerState>) {
        if let Some(state) = change {
            tracing::warn!(
                dependency = self.name,
                state = state.as_str(),
                "circuit breaker"
            );
            metrics::breaker_state(self.name, state);
            self.transitions.push(state);
        }
    }

    /// Waits until the breaker lets a call through.
    pub async fn permit(&mut self) {
        loop {
            match self.breaker.permit(Instant::now()) {
                Ok(change) => return self.publish(change),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    fn succeeded(&mut self) {
        let change = self.breaker.success();
        self.publish(change);
    }

    /// After failed attempt `attempt` of a call begun at `started`: the wait before the
    /// next attempt, or the error to stop with (not retryable, or attempts used up).
    fn failed(&mut self, error: LakeError, attempt: u32, started: Instant) -> Result<Duration> {
        if !error.is_retryable() {
            return Err(error);
        }
        metrics::dependency_failure(self.name);
        let change = self.breaker.failure(Instant::now());
        self.publish(change);
        match self.policy.delay(attempt, &mut self.jitter) {
            Some(delay) => {
                self.retries += 1;
                tracing::warn!(
                    dependency = self.name, attempt, delay_ms = delay.as_millis() as u64,
                    error = %error, "retrying"
                );
                Ok(delay)
            }
            None => Err(LakeError::Exhausted {
                dependency: self.name,
                attempts: attempt,
                seconds: started.elapsed().as_secs_f64(),
                last: Box::new(error),
            }),
        }
    }

    /// After attempt `attempt` of a call begun at `started`: the value, or `None` once the
    /// backoff before the next attempt has passed, or the error to stop with.
    pub async fn settle<T>(
        &mut self,
        outcome: Result<T>,
        attempt: u32,
        started: Instant,
    ) -> Result<Option<T>> {
        match outcome {
            Ok(v) => {
                self.succeeded();
                Ok(Some(v))
            }
            Err(e) => {
                let delay = self.failed(e, attempt, started)?;
                tokio::time::sleep(delay).await;
                Ok(None)
            }
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or runs out of attempts.
    pub async fn call<T, F, Fut>(&mut self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let started = Instant::now();
        for attempt in 1.. {
            self.permit().await;
            let outcome = op().await;
            if let Some(v) = self.settle(outcome, attempt, started).await? {
                return Ok(v);
            }
        }
        unreachable!("attempts are bounded by the retry policy")
    }

    /// [`Dependency::call`] for an operation that needs `target` mutably (a consumer
    /// polling, a state flushing), lent to each attempt in turn.
    pub async fn call_mut<S, T>(
        &mut self,
        target: &mut S,
        mut op: impl for<'a> FnMut(&'a mut S) -> Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>,
    ) -> Result<T> {
        let started = Instant::now();
        for attempt in 1.. {
            self.permit().await;
            let outcome = op(target).await;
            if let Some(v) = self.settle(outcome, attempt, started).await? {
                return Ok(v);
            }
        }
        unreachable!("attempts are bounded by the retry policy")
    }
}

/// The writer's dependencies, each behind retries and a circuit breaker. The catalog and
/// the object store go with a batch in flight (a `Flight`) and come back when it lands.
pub(super) struct Deps {
    pub commit: Option<CommitDeps>,
    pub log: Dependency,
    pub redis: Dependency,
}

pub(super) struct CommitDeps {
    pub catalog: Dependency,
    pub storage: Dependency,
}

impl Deps {
    pub fn new(options: &WriterOptions) -> Self {
        let dep = |name| Dependency::new(name, options.retry.clone(), options.breaker.clone());
        Deps {
            commit: Some(CommitDeps {
                catalog: dep("catalog"),
                storage: dep("storage"),
            }),
            log: dep("log"),
            redis: dep("redis"),
        }
    }

    /// The catalog, between batches (it travels with a batch in flight).
    pub fn catalog(&mut self) -> &mut Dependency {
        &mut self
            .commit
            .as_mut()
            .expect("the catalog is used only with no batch in flight")
            .catalog
    }

    /// Retries and breaker transitions so far; called with no batch in flight.
    pub fn report(&self, summary: &mut WriterSummary) {
        summary.retries.clear();
        summary.breaker_transitions.clear();
        let commit = self.commit.iter().flat_map(|c| [&c.catalog, &c.storage]);
        for d in commit.chain([&self.log, &self.redis]) {
            if d.retries > 0 {
                summary.retries.insert(d.name(), d.retries);
            }
            summary.breaker_transitions.extend(
                d.transitions
                    .iter()
                    .map(|s| format!("{}:{}", d.name(), s.as_str())),
            );
        }
    }
}
