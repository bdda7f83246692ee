//! The services tests use, all on 127.0.0.1.
//!
//! Shared ones are started by the test script and named by `K2_TEST_…` variables
//! ([`service`]). A test that stops, restarts or freezes a service starts its own
//! ([`Broker`], [`RedisServer`]), so no other test running beside it is disturbed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::poll;

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

/// A free TCP port on loopback (free when asked: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Waits until something listens on `port`; panics with `log`'s contents if nothing does
/// within 30 s.
fn wait_listening(port: u16, what: &str, log: &Path) {
    poll::until_explained(
        Duration::from_secs(30),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        || {
            format!(
                "{what} (log {}: {})",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
    );
}

/// Starts `cmd` with its output appended to `log` and waits until it listens on `port`.
pub(crate) fn start_listening(mut cmd: Command, port: u16, log_path: &Path, what: &str) -> Owned {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|e| panic!("{what}'s log {}: {e}", log_path.display()));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("a second handle on the log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts: {e}"));
    wait_listening(port, &format!("{what} listening"), log_path);
    Owned(Some(child))
}

/// A process of a test's own, killed when dropped.
pub(crate) struct Owned(pub(crate) Option<Child>);

impl Owned {
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.0.as_ref().expect("the process is running");
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(
            rc,
            0,
            "signal {signal}: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Kafka-protocol broker (tansu) of one test's own, on a free loopback port. `durable`
/// stores in SQLite under the test's directory, so the broker keeps its topics across a
/// restart; otherwise in memory (tansu's SQLite engine serves fetches several times
/// slower). `K2_TEST_TANSU` names the binary (the test script builds it once).
pub struct Broker {
    bin: PathBuf,
    storage: &'static str,
    dir: PathBuf,
    port: u16,
    /// The port clients are told to connect to (a TLS terminator's in front of it), when
    /// not the broker's own.
    advertised: Option<u16>,
    /// Clients must authenticate (SASL SCRAM, with the users made by [`Broker::with_users`]).
    authentication: bool,
    process: Owned,
}

impl Broker {
    /// None when `K2_TEST_TANSU` is not set outside CI (see [`service`]).
    pub fn start(dir: &Path, durable: bool) -> Option<Broker> {
        let bin = PathBuf::from(service("K2_TEST_TANSU")?);
        let mut broker = Broker {
            bin,
            storage: if durable {
                "sqlite://tansu.db"
            } else {
                "memory://tansu/"
            },
            dir: dir.to_path_buf(),
            port: free_port(),
            advertised: None,
            authentication: false,
            process: Owned(None),
        };
        broker.up();
        Some(broker)
    }

    /// A broker in memory that tells clients to connect to `advertised` (a TLS terminator
    /// in front of it), not to its own port.
    pub fn advertising(dir: &Path, advertised: u16) -> Option<Broker> {
        let mut broker = Broker::start(dir, false)?;
        broker.down();
        broker.advertised = Some(advertised);
        broker.up();
        Some(broker)
    }

    /// A durable broker that requires SASL SCRAM authentication, knowing `users` (name,
    /// password) for SCRAM-SHA-256 and SCRAM-SHA-512. The users are made through the
    /// broker's own admin API while it is still open, then it restarts requiring them.
    pub fn with_users(dir: &Path, users: &[(&str, &str)]) -> Option<Broker> {
        let mut broker = Broker::start(dir, true)?;
        for (name, password) in users {
            for mechanism in ["scram256", "scram512"] {
                let out = Command::new(&broker.bin)
                    .current_dir(&broker.dir)
                    .args(["user", "create", "--mechanism", mechanism])
                    .args(["--broker", &format!("tcp://{}", broker.bootstrap())])
                    .args([name, password])
                    .output()
                    .expect("tansu user create runs");
                assert!(
                    out.status.success(),
                    "tansu user create {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        broker.down();
        broker.authentication = true;
        broker.up();
        Some(broker)
    }

    /// Starts the broker (again, after [`down`](Self::down)) and waits until it listens.
    pub fn up(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .args(["broker", "--storage-engine", self.storage])
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &advertised]);
        if self.authentication {
            cmd.arg("--authentication");
        }
        self.process = start_listening(cmd, self.port, &self.dir.join("broker.log"), "the broker");
    }

    /// Kills the broker (SIGKILL: an outage, not a clean stop).
    pub fn down(&mut self) {
        self.process.kill();
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What points a `k2` process at this broker.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("K2_LOG__BACKEND", "kafka".into()),
            ("K2_LOG__KAFKA__BOOTSTRAP_SERVERS", self.bootstrap()),
        ]
    }
}

/// A Redis of one test's own (`redis-server` from the system), on a free loopback port,
/// which the test may freeze and thaw: a frozen Redis keeps its connections open and
/// answers nothing, as a Redis stuck in a long command or a paused VM does.
pub struct RedisServer {
    port: u16,
    _dir: DirGuard,
    process: Owned,
}

/// A directory removed when dropped.
pub(crate) struct DirGuard(pub(crate) PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RedisServer {
    /// None when `redis-server` is missing outside CI (the test script installs it).
    pub fn start() -> Option<RedisServer> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("redis-server must be installed in CI (scripts/test installs it)");
            }
            eprintln!("redis-server not found: tests that need it are skipped");
            return None;
        }
        let dir = std::env::temp_dir().join(crate::unique("k2-redis"));
        std::fs::create_dir_all(&dir).expect("a directory for Redis");
        let port = free_port();
        let log = dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--logfile")
            .arg(&log)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = RedisServer {
            port,
            _dir: DirGuard(dir),
            process: Owned(Some(child)),
        };
        wait_listening(port, "Redis listening", &log);
        Some(server)
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server's process (SIGSTOP): it answers nothing until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.process.signal(libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.process.signal(libc::SIGCONT);
    }
}
