//! What K2's tests share. A dev-dependency of the other crates, never a dependency of the
//! product: nothing here ships in the binary.
//!
//! # Layout
//!
//! - [`services`] — the services the test script starts (found through `K2_TEST_…`
//!   variables), and servers a test starts for itself: a Kafka-protocol broker and a
//!   Redis it may freeze.
//! - [`s3`] — S3-compatible storage: the shared server's bucket, and a server of a
//!   test's own it may stop and start again.
//! - [`tls`] — the throw-away test certificate authority in `tests/tls/`.
//! - [`sample`] — the bundled ASX sample and the counts it must land as.
//! - [`poll`] — waiting for a condition with a deadline, never a bare sleep.
//! - [`promtool`] — Prometheus's checker over a `/metrics` answer.
//!
//! The exchange simulator and the synthetic data generator are product code (`k2 bench`
//! runs them), so they live in `k2-ingest`, not here.

pub mod poll;
pub mod promtool;
pub mod s3;
pub mod sample;
pub mod services;
pub mod tls;

/// A name no other test run uses (keys in a shared Redis, databases in a shared server).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:016x}", std::process::id(), fastrand::u64(..))
}
