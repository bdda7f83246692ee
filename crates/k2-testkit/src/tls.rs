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
