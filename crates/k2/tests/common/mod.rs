//! Helpers shared by the test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use k2_testkit::sample::{QUOTES, TRADES};

pub fn sample() -> PathBuf {
    k2_testkit::sample::dir()
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
