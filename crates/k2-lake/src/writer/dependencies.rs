//! The lake writer's dependencies (catalog, object storage, log, Redis), each behind a
//! retry policy and a circuit breaker, with what happens exported as metrics.
//!
//! A retryable failure is retried with jittered exponential backoff; the breaker opens
//! after consecutive failures and makes calls wait instead of hammering the dependency;
//! once the attempts are used up the call fails with [`LakeError::Exhausted`] and the
//! writer stops without committing, so a restart resumes from the last commit.
//!
//! Once the writer is told to stop, nothing more is waited for: a call's first attempt
//! still runs to its end (what is in hand may land), but a failure, a backoff, an open
//! breaker or a retry in flight ends it at once with [`LakeError::Stopped`], so a stop
//! during an outage takes moments, not the retry budget.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use k2_pipeline::{BreakerConfig, BreakerState, CircuitBreaker, RetryPolicy};
use tokio_util::sync::CancellationToken;

use super::options::{WriterOptions, WriterSummary};
use crate::error::{LakeError, Result};
use crate::metrics;

pub(super) struct Dependency {
    name: &'static str,
    breaker: CircuitBreaker,
    policy: RetryPolicy,
    jitter: fastrand::Rng,
    stop: CancellationToken,
    /// Breaker transitions, in order (for the run summary).
    pub transitions: Vec<BreakerState>,
    pub retries: u64,
}

impl Dependency {
    pub fn new(
        name: &'static str,
        policy: RetryPolicy,
        breaker: BreakerConfig,
        stop: CancellationToken,
    ) -> Self {
        metrics::breaker_state(name, BreakerState::Closed);
        Dependency {
            name,
            breaker: CircuitBreaker::new(breaker),
            policy,
            jitter: fastrand::Rng::new(),
            stop,
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

    /// Waits until the breaker lets a call through; once stopping, an open breaker lets
    /// one attempt through rather than waiting (`Err` is the breaker's last failure).
    pub async fn permit(&mut self) {
        loop {
            match self.breaker.permit(Instant::now()) {
                Ok(change) => return self.publish(change),
                Err(_) if self.stop.is_cancelled() => return,
                Err(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => return,
                    }
                }
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
        if self.stop.is_cancelled() {
            return Err(self.stopped(error));
        }
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
                let reason = e.to_string();
                let delay = self.failed(e, attempt, started)?;
                tokio::select! {
                    () = tokio::time::sleep(delay) => Ok(None),
                    // The next attempt is not waited for; the failure stands.
                    () = self.stop.cancelled() => Err(self.stopped(reason)),
                }
            }
        }
    }

    /// Attempt `attempt` of a call. The first attempt always runs to its end (a stop lets
    /// what is in hand land); a retry — the dependency is failing — is abandoned the
    /// moment the writer is told to stop.
    async fn attempt<T>(
        &self,
        attempt: u32,
        op: impl Future<Output = Result<T>>,
    ) -> Result<Result<T>> {
        if attempt == 1 {
            return Ok(op.await);
        }
        tokio::select! {
            outcome = op => Ok(outcome),
            () = self.stop.cancelled() => Err(self.stopped(format!(
                "attempt {attempt} abandoned"
            ))),
        }
    }

    fn stopped(&self, last: impl ToString) -> LakeError {
        LakeError::Stopped {
            dependency: self.name,
            last: last.to_string(),
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
            let outcome = self.attempt(attempt, op()).await?;
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
            let outcome = self.attempt(attempt, op(target)).await?;
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
    /// `stop` ends every wait for a retry or a breaker (see the module's notes).
    pub fn new(options: &WriterOptions, stop: &CancellationToken) -> Self {
        let dep = |name| {
            Dependency::new(
                name,
                options.retry.clone(),
                options.breaker.clone(),
                stop.clone(),
            )
        };
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
