//! Retries and circuit breakers, as pure state machines (the caller owns the clock and
//! the sleeping, so they test without waiting).
//!
//! - [`RetryPolicy`]: exponential backoff with jitter and a bound on attempts. The delay
//!   before attempt `n + 1` is drawn uniformly from `[d/2, d]` with `d = base · 2^(n-1)`
//!   capped at `max_delay` ("equal jitter": never a burst of synchronized retries, never
//!   a near-zero wait).
//! - [`CircuitBreaker`]: closed → open after `failure_threshold` consecutive failures; open
//!   refuses calls for `open_for`; then half-open lets one trial through, which closes it
//!   on success or opens it again on failure.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often and how patiently to retry a retryable failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based), jittered with `rng`; None when
    /// no attempt is left.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let exp = self
            .base
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(20));
        let full = exp.min(self.max_delay);
        let half = full / 2;
        let spread = (full - half).as_micros() as u64;
        Some(half + Duration::from_micros(rng.u64(0..=spread)))
    }
}

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// For a gauge: 0 closed, 1 half-open, 2 open.
    pub fn level(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// Breaker tuning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before a trial.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(2),
        }
    }
}

/// One dependency's breaker. Every method returns the new state when it changed.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: BreakerState::Closed,
            failures: 0,
            opened_at: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go through now: `Ok` (possibly moving open → half-open), or
    /// `Err(wait)` until the breaker lets a trial through.
    pub fn permit(&mut self, now: Instant) -> Result<Option<BreakerState>, Duration> {
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => Ok(None),
            BreakerState::Open => {
                let since = now.saturating_duration_since(self.opened_at.unwrap_or(now));
                if since >= self.config.open_for {
                    self.state = BreakerState::HalfOpen;
                    Ok(Some(BreakerState::HalfOpen))
                } else {
                    Err(self.config.open_for - since)
                }
            }
        }
    }

    pub fn success(&mut self) -> Option<BreakerState> {
        self.failures = 0;
        self.opened_at = None;
        (self.state != BreakerState::Closed).then(|| {
            self.state = BreakerState::Closed;
            BreakerState::Closed
        })
    }

    pub fn failure(&mut self, now: Instant) -> Option<BreakerState> {
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.failures >= self.config.failure_threshold,
            BreakerState::Open => false,
        };
        open.then(|| {
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
            BreakerState::Open
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_bounded() {
        let p = RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let mut j = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let d1 = p.delay(1, &mut j).unwrap();
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3, &mut j).unwrap();
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d5 = p.delay(5, &mut j).unwrap();
            assert!(d5 >= Duration::from_millis(250) && d5 <= Duration::from_millis(500));
        }
        assert_eq!(p.delay(6, &mut j), None, "six attempts in all");
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| p.delay(2, &mut j).unwrap()).collect();
        assert!(spread.len() > 10, "delays are jittered");
    }

    #[test]
    fn breaker_opens_trials_and_closes() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_millis(1000),
        });
        assert_eq!(b.failure(s(0)), None);
        assert_eq!(b.success(), None, "a success resets the count");
        assert_eq!(b.failure(s(1)), None);
        assert_eq!(b.failure(s(2)), None);
        assert_eq!(b.failure(s(3)), Some(BreakerState::Open));
        assert_eq!(b.permit(s(500)), Err(Duration::from_millis(503)));
        assert_eq!(b.permit(s(1003)), Ok(Some(BreakerState::HalfOpen)));
        assert_eq!(
            b.failure(s(1100)),
            Some(BreakerState::Open),
            "a failed trial opens again at once"
        );
        assert!(b.permit(s(1200)).is_err());
        assert_eq!(b.permit(s(2100)), Ok(Some(BreakerState::HalfOpen)));
        assert_eq!(b.success(), Some(BreakerState::Closed));
        assert_eq!(b.permit(s(2101)), Ok(None));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
