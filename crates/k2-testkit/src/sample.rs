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

/// A copy of the directory `from` (files and folders) at `to`, for a test that changes it.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
