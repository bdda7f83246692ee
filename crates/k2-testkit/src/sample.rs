//! The bundled ASX sample (real trades and quotes of 10–14 March 2014, see its README)
//! and what it must land as.

use std::path::{Path, PathBuf};

/// Trade rows the sample lands as: the BHP, RIO, … files plus the rows of the extra files
/// the ingest accepts (each malformed line is a dead letter instead).
pub const TRADES: u64 = 91_631 + 232 + 11;
/// Quote rows the sample lands as.
pub const QUOTES: u64 = 77_849 + 549 + 60;

/// The sample's directory in the repository.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/asx-2014-03")
}
