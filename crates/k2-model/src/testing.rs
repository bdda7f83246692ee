//! Support for K2's own tests across crates (not for applications).

/// The address of a service the test script started (named by the environment variable
/// `var`, e.g. `K2_TEST_REDIS_ADDR`), or `None` when a developer runs the tests without
/// it. In CI (`CI=true`) the service must be there: a missing one is a failure, never a
/// silently skipped test.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) => Some(value),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{var} must be set in CI (scripts/test sets it)")
        }
        Err(_) => {
            eprintln!("{var} not set: tests that need it are skipped (scripts/test runs them)");
            None
        }
    }
}
