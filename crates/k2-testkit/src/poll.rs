//! Waiting for a condition with a deadline. Tests poll what they wait for instead of
//! sleeping for a guessed time: they pass as soon as the condition holds and fail with a
//! message naming what never happened.

use std::time::{Duration, Instant};

/// How often a condition is checked.
const EVERY: Duration = Duration::from_millis(20);

/// Checks `done` until it gives a value; panics naming `what` once `within` has passed.
pub fn until<T>(within: Duration, what: &str, done: impl FnMut() -> Option<T>) -> T {
    until_explained(within, done, || what.to_string())
}

/// [`until`], the failure described by `explain` when it happens (say, with a log's
/// contents at that moment).
pub fn until_explained<T>(
    within: Duration,
    mut done: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = done() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{}: not within {within:?}", explain());
        }
        std::thread::sleep(EVERY);
    }
}

/// [`until`] for a condition that is a plain yes or no.
pub fn until_true(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    until(within, what, || done().then_some(()))
}

/// [`until`] for async code: `done` is awaited on each check, and the wait between checks
/// yields to the runtime.
pub async fn until_async<T, F: Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut done: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = done().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_the_value_once_there_and_names_what_never_came() {
        let mut n = 0;
        let got = until(Duration::from_secs(5), "three calls", || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, 3);
        let failed = std::panic::catch_unwind(|| {
            until_true(Duration::from_millis(50), "the impossible", || false)
        });
        let message = failed.unwrap_err();
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("the impossible"), "{text}");
    }
}
