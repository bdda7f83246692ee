//! The one stop signal of the process, and the bound on how long a stop may take.
//!
//! The first SIGINT or SIGTERM cancels the process's stop token: services (feeds, the
//! writer, the servers) end their waits at once and land what they hold; an interactive
//! command (a query, a replay) is interrupted where it stands. Whatever a command is
//! doing, the process is gone `stop_grace` after the signal (exit status 1, one line
//! saying what was left unfinished); a second signal ends it at once.

use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

static STOP: OnceLock<CancellationToken> = OnceLock::new();
static SIGNAL: OnceLock<&'static str> = OnceLock::new();

/// The process's stop token, cancelled at the first SIGINT or SIGTERM once [`install`]ed
/// (a token nothing cancels before that, as in unit tests of a command's parts).
pub fn stop() -> CancellationToken {
    STOP.get_or_init(CancellationToken::new).clone()
}

/// The signal that stopped the process, once one has.
pub fn received() -> Option<&'static str> {
    SIGNAL.get().copied()
}

/// Listens for SIGINT/SIGTERM (call once, before the command starts): the first cancels
/// [`stop`] and starts a watchdog that ends the process `grace` later if it is still
/// running; a second ends it at once. The listening runs on a thread of its own, so a
/// command whose work keeps every runtime thread busy (a long query) still hears it.
pub fn install(grace: Duration) {
    let stop = stop();
    let listening = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the signal thread's runtime");
    let mut signals = listening.block_on(async { Signals::new() });
    std::thread::Builder::new()
        .name("k2-signals".into())
        .spawn(move || {
            listening.block_on(async move {
                let name = signals.next().await;
                let _ = SIGNAL.set(name);
                tracing::info!(signal = name, "shutdown requested");
                stop.cancel();
                std::thread::spawn(move || {
                    std::thread::sleep(grace);
                    eprintln!(
                        "k2: still running {} after {name}; exiting with the work in hand unfinished",
                        humantime::format_duration(grace)
                    );
                    std::process::exit(1);
                });
                let again = signals.next().await;
                eprintln!("k2: a second {again}; exiting at once");
                std::process::exit(130);
            })
        })
        .expect("the signal thread");
}

/// SIGINT and SIGTERM, listened for from creation on (the default action, death, no
/// longer applies).
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                int: signal(SignalKind::interrupt()).expect("a SIGINT handler"),
                term: signal(SignalKind::terminate()).expect("a SIGTERM handler"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGINT or SIGTERM, by name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => "SIGINT",
                _ = self.term.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// `work`, unless the stop signal comes first (then `None`, and `work` is dropped): for
/// the waits before a service has anything in hand, such as opening a log whose brokers
/// do not answer.
pub async fn unless_stopped<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    let stop = stop();
    tokio::select! {
        v = work => Some(v),
        () = stop.cancelled() => None,
    }
}

/// What a run-until-stopped service returns when the stop came while it was still
/// opening its stores: a clean stop, said on standard error.
pub fn stopped_before_start(what: &str) -> std::process::ExitCode {
    eprintln!(
        "{what}: stopped by {} before it started",
        received().unwrap_or("a stop signal")
    );
    std::process::ExitCode::SUCCESS
}
