//! K2's integrity machinery: state machines free of I/O (tested exhaustively, run
//! anywhere), and their shared form in Redis for several writers.
//!
//! - [`sequence`] — per-stream sequence tracking: in order, gaps (with a ledger of what is
//!   missing), late fills, duplicates, session resets, too old.
//! - [`shared`] — sequence tracking and dedup claims in Redis (Lua scripts), with
//!   [`redis`], a small pipelining RESP client.
//! - [`resilience`] — retry backoff with jitter, and circuit breakers.
//! - [`dedup`] — exact dedup by message id: a Bloom filter in front of a bounded,
//!   time-windowed set.

pub mod dedup;
pub mod redis;
pub mod resilience;
pub mod sequence;
pub mod shared;

pub use dedup::{DedupConfig, DedupStats, Deduplicator};
pub use resilience::{BreakerConfig, BreakerState, CircuitBreaker, Jitter, RetryPolicy};

pub use sequence::{
    Event, GapRange, SequenceConfig, SequenceTracker, StreamId, StreamStats, StreamTracker,
};
pub use shared::{RedisDedup, RedisSequenceTracker};
