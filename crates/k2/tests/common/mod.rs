//! Helpers shared by the test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const TRADES: u64 = 91_631 + 232 + 11;
pub const QUOTES: u64 = 77_849 + 549 + 60;

pub fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/asx-2014-03")
}

pub fn k2(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2"));
    cmd.arg("--data-dir")
        .arg(data)
        .env_remove("K2_CONFIG")
        .env("K2_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("k2 runs");
    assert!(
        out.status.success(),
        "k2 failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
