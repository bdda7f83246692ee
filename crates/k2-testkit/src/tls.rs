//! The throw-away certificate authority of the tests (`tests/tls/`): a server on
//! loopback presents its certificate, and a client trusting `ca.pem` accepts it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;

/// The directory of the test authority (`ca.pem`) and its server certificate and key.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/tls")
}

/// A server configuration presenting the test authority's certificate (ring provider).
pub fn server_config() -> rustls::ServerConfig {
    let dir = dir();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("the test server certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("the test server certificate");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("server.key"))
        .expect("the test server key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the test certificate matches its key")
}

/// A TLS terminator (stunnel, named by `K2_TEST_STUNNEL`) on a free loopback port,
/// presenting the test authority's server certificate and passing each connection on, in
/// clear, to `127.0.0.1:backend`. With `client_ca`, it requires a client certificate that
/// authority signed (`client-ca.pem`). Killed when dropped.
pub struct Terminator {
    pub port: u16,
    _dir: crate::services::DirGuard,
    _process: crate::services::Owned,
}

impl Terminator {
    /// None when `K2_TEST_STUNNEL` is not set outside CI.
    pub fn start(port: u16, backend: u16, require_client_certificate: bool) -> Option<Terminator> {
        let bin = crate::services::service("K2_TEST_STUNNEL")?;
        let dir = std::env::temp_dir().join(crate::unique("k2-stunnel"));
        std::fs::create_dir_all(&dir).expect("a directory for stunnel");
        let tls = self::dir().canonicalize().expect("tests/tls");
        let mut config = format!(
            "foreground = yes\npid =\noutput = {}\n[kafka]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend}\ncert = {}\nkey = {}\n",
            dir.join("stunnel.log").display(),
            tls.join("server.pem").display(),
            tls.join("server.key").display(),
        );
        if require_client_certificate {
            config.push_str(&format!(
                "CAfile = {}\nverify = 2\n",
                tls.join("client-ca.pem").display()
            ));
        }
        let file = dir.join("stunnel.conf");
        std::fs::write(&file, config).expect("stunnel's configuration");
        let mut cmd = std::process::Command::new(bin);
        cmd.arg(&file);
        let process =
            crate::services::start_listening(cmd, port, &dir.join("stdout.log"), "stunnel");
        Some(Terminator {
            port,
            _dir: crate::services::DirGuard(dir),
            _process: process,
        })
    }
}
