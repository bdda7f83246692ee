//! S3-compatible storage for the tests: the shared server the test script starts (named by
//! `K2_TEST_S3_…` variables), and a server of a test's own that it may stop and start
//! again. Both are `s3s-fs` (a real S3 server over a directory, checking SigV4
//! signatures), built once by the test script and named by `K2_TEST_S3S`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::services::{DirGuard, Owned, free_port, service, start_listening};

/// The credentials every test server is started with.
pub const ACCESS_KEY_ID: &str = "k2test";
pub const SECRET_ACCESS_KEY: &str = "k2test-secret-key";

/// A place in a bucket: `s3://BUCKET/PREFIX` on the server at `endpoint`.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
}

impl Bucket {
    /// A fresh prefix of the bucket on the test script's server (`K2_TEST_S3_ENDPOINT`,
    /// `K2_TEST_S3_BUCKET`); None when a developer runs the tests without it (outside CI).
    pub fn shared() -> Option<Bucket> {
        let endpoint = service("K2_TEST_S3_ENDPOINT")?;
        let bucket = std::env::var("K2_TEST_S3_BUCKET").unwrap_or_else(|_| "k2-test".into());
        Some(Bucket {
            endpoint,
            bucket,
            prefix: crate::unique("lake"),
        })
    }

    /// [`shared`](Self::shared), for a suite the environment put on S3: it must be there.
    pub fn from_env() -> Bucket {
        Self::shared()
            .expect("K2_TEST_WAREHOUSE=s3 needs K2_TEST_S3_ENDPOINT (scripts/test sets it)")
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// What puts a `k2` process's warehouse here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("K2_WAREHOUSE__URI", self.uri()),
            ("K2_WAREHOUSE__S3__ENDPOINT", self.endpoint.clone()),
            ("K2_WAREHOUSE__S3__ACCESS_KEY_ID", ACCESS_KEY_ID.into()),
            (
                "K2_WAREHOUSE__S3__SECRET_ACCESS_KEY",
                SECRET_ACCESS_KEY.into(),
            ),
            ("K2_WAREHOUSE__S3__PATH_STYLE", "true".into()),
        ]
    }
}

/// An S3 server of one test's own, on a free loopback port, over a directory that outlives
/// a stop: [`down`](Self::down) is an outage (SIGKILL), [`up`](Self::up) brings the same
/// objects back on the same port.
pub struct S3Server {
    bin: PathBuf,
    port: u16,
    dir: DirGuard,
    process: Owned,
}

impl S3Server {
    /// None when `K2_TEST_S3S` is not set outside CI. The server has one bucket, `bucket`.
    pub fn start(bucket: &str) -> Option<S3Server> {
        let bin = PathBuf::from(service("K2_TEST_S3S")?);
        let dir = std::env::temp_dir().join(crate::unique("k2-s3"));
        std::fs::create_dir_all(dir.join("root").join(bucket)).expect("the server's directory");
        let mut server = S3Server {
            bin,
            port: free_port(),
            dir: DirGuard(dir),
            process: Owned(None),
        };
        server.up();
        Some(server)
    }

    /// Starts the server (again, after [`down`](Self::down)) and waits until it listens.
    pub fn up(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                ACCESS_KEY_ID,
                "--secret-key",
                SECRET_ACCESS_KEY,
            ])
            .arg(self.root());
        self.process = start_listening(cmd, self.port, &self.dir.0.join("s3.log"), "the S3 server");
    }

    /// Kills the server (SIGKILL: an outage, not a clean stop).
    pub fn down(&mut self) {
        self.process.kill();
    }

    /// The directory the server keeps its buckets in (one folder each).
    pub fn root(&self) -> PathBuf {
        self.dir.0.join("root")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A fresh prefix of `bucket` on this server.
    pub fn bucket(&self, bucket: &str) -> Bucket {
        Bucket {
            endpoint: self.endpoint(),
            bucket: bucket.into(),
            prefix: crate::unique("lake"),
        }
    }

    /// The files of the objects under `prefix` of `bucket`, as the server stores them.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.root().join(bucket).join(prefix), &mut out);
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}
