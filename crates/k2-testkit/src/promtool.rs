//! Prometheus's own checker over a `/metrics` answer: every metric has HELP text, names
//! and units follow Prometheus's conventions.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::services::service;

/// Asserts that `promtool check metrics` (found through `K2_TEST_PROMTOOL`) finds nothing
/// to say about `exposition`.
pub fn assert_clean(exposition: &str) {
    let Some(promtool) = service("K2_TEST_PROMTOOL") else {
        return;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {promtool}: {e}"));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(exposition.as_bytes())
        .expect("promtool reads the exposition");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\nof:\n{exposition}"
    );
}
