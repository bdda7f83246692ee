//! K2's integrity machinery: state machines free of I/O, tested exhaustively and run
//! anywhere. Their shared form in Redis lives beside its user, the lake writer
//! (`k2_lake::integrity`).
//!
//! # Layout
//!
//! - [`sequence`] — per-stream sequence tracking: in order, gaps (with a ledger of what is
//!   missing), late fills, duplicates, session resets, too old.
//! - [`gap_ledger`] — each stream's completeness ledger: every gap from found to filled or
//!   given up, and its sessions.
//! - [`resilience`] — retry backoff with jitter, and circuit breakers.
//! - [`dedup`] — exact dedup by message id: a Bloom filter in front of a bounded,
//!   time-windowed set.
//! - [`degradation`] — the levels of work given up under pressure, with hysteresis, and
//!   the pressure a process's parts share.

pub mod dedup;
pub mod degradation;
pub mod gap_ledger;
pub mod resilience;
pub mod sequence;

pub use dedup::{DedupConfig, DedupStats, Deduplicator};
pub use degradation::{Governor, GovernorConfig, Level, Pressure, Signals, Thresholds, Transition};
pub use gap_ledger::{GapEntry, GapLedger, GapStatus, Session};
pub use resilience::{BreakerConfig, BreakerState, CircuitBreaker, RetryPolicy};

pub use sequence::{
    Event, GapRange, SequenceConfig, SequenceTracker, StreamId, StreamStats, StreamTracker,
};
