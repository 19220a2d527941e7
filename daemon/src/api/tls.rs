//! TLS on the TCP listener (`[server.tls]`, rustls with the `ring`
//! provider): reading the PEM certificate chain, private key and optional
//! client CAs into a server configuration (a bad file is an error naming
//! its key), the current configuration that SIGHUP swaps for new
//! connections while open ones keep theirs ([`Certs`]), and the handshake
//! of one accepted connection, bounded in time, its failures counted and
//! their log lines throttled ([`Certs::handshake`]). The unix
//! socket never uses TLS; the allowlist and connection limits are checked
//! at accept, before any of this.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::listen::Throttle;
use crate::config::{TlsSettings, TlsVersion};

/// Why `[server.tls]`'s files cannot be served; [`TlsError::key`] names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { key: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{} is readable by every user (mode {mode:04o}); chmod o-r it", path.display())]
    KeyReadable { path: PathBuf, mode: u32 },
    #[error("{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")", path.display())]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("{} is not a regular file of at most 1 MiB (a PEM file)", path.display())]
    NotPem { key: &'static str, path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, RSA or EC)", path.display())]
    NoKey { path: PathBuf },
    #[error("{} is not valid PEM: {message}", path.display())]
    Pem { key: &'static str, path: PathBuf, message: String },
    #[error("the private key in {} cannot be used: {source}", path.display())]
    BadKey { path: PathBuf, source: rustls::Error },
    #[error("the private key in {} does not match the certificate in {}", key_file.display(), cert_file.display())]
    Mismatch { key_file: PathBuf, cert_file: PathBuf },
    #[error("the certificate in {} cannot be used: {source}", path.display())]
    BadCertificate { path: PathBuf, source: rustls::Error },
    #[error("the CA certificates in {} cannot be used: {message}", path.display())]
    ClientCa { path: PathBuf, message: String },
    #[error("TLS {version}+ is not available: {source}")]
    Versions { version: &'static str, source: rustls::Error },
}

impl TlsError {
    /// The dotted config key of the file at fault.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. } | TlsError::NotPem { key, .. } | TlsError::NoCertificate { key, .. } | TlsError::Pem { key, .. } => {
                key
            }
            TlsError::KeyReadable { .. } | TlsError::NoKey { .. } | TlsError::BadKey { .. } | TlsError::Mismatch { .. } => KEY_FILE,
            TlsError::BadCertificate { .. } => CERT_FILE,
            TlsError::ClientCa { .. } => CLIENT_CA_FILE,
            TlsError::Versions { .. } => "server.tls.min_version",
        }
    }
}

const CERT_FILE: &str = "server.tls.cert_file";
const KEY_FILE: &str = "server.tls.key_file";
const CLIENT_CA_FILE: &str = "server.tls.client_ca_file";

/// Reads the files `s` names into a server configuration: the chain, a
/// private key that matches its first certificate, client CAs when set,
/// TLS 1.3 (and 1.2 unless `min_version` is 1.3), ALPN `http/1.1` (the
/// listener serves HTTP/1 only).
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(CERT_FILE, &s.cert_file)?;
    let key = private_key(&s.key_file)?;
    let versions: &[&rustls::SupportedProtocolVersion] = match s.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    // Only fails for a provider without these versions' suites; ring has them.
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|source| TlsError::Versions { version: s.min_version.as_str(), source })?;
    let builder = match &s.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |message: String| TlsError::ClientCa { path: path.clone(), message };
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(CLIENT_CA_FILE, path)? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|source| match source {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch { key_file: s.key_file.clone(), cert_file: s.cert_file.clone() },
        rustls::Error::General(_) => TlsError::BadKey { path: s.key_file.clone(), source },
        source => TlsError::BadCertificate { path: s.cert_file.clone(), source },
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every PEM certificate in `path`; none is an error.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem {
        key,
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { key, path: path.to_owned() });
    }
    Ok(certs)
}

/// Largest PEM file read: certificate chains and keys are a few KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// The content of a regular file of at most [`MAX_PEM_BYTES`] (a device or
/// a FIFO named by mistake must not block or fill the memory).
fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let read_error = |source| TlsError::Read { key, path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() || meta.len() > MAX_PEM_BYTES {
        return Err(TlsError::NotPem { key, path: path.to_owned() });
    }
    let mut pem = Vec::new();
    file.take(MAX_PEM_BYTES).read_to_end(&mut pem).map_err(read_error)?;
    Ok(pem)
}

/// The first private key in `path`, which must not be readable by every user.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let read_error = |source| TlsError::Read { key: KEY_FILE, path: path.to_owned(), source };
    let mode = std::fs::metadata(path).map_err(read_error)?.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(TlsError::KeyReadable { path: path.to_owned(), mode });
    }
    let pem = read_pem(KEY_FILE, path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey { path: path.to_owned() }),
        Err(e) => Err(TlsError::Pem { key: KEY_FILE, path: path.to_owned(), message: e.to_string() }),
    }
}

/// The configuration new TLS connections get; SIGHUP replaces it
/// ([`Certs::reload`]), connections already open keep the one they began with.
pub struct Certs {
    current: RwLock<Arc<ServerConfig>>,
    /// Failed handshakes are logged at most once per [`Throttle`] period,
    /// so a scan cannot flood the journal (each is counted in the metrics).
    failures_log: Mutex<Throttle>,
}

impl Certs {
    /// Reads the files `s` names.
    pub fn load(s: &TlsSettings) -> Result<Certs, TlsError> {
        Ok(Certs { current: RwLock::new(server_config(s)?), failures_log: Mutex::default() })
    }

    /// The configuration for a connection accepted now.
    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads the files again and, only when they are good, serves them to
    /// new connections; on an error the previous ones stay.
    pub fn reload(&self, s: &TlsSettings) -> Result<(), TlsError> {
        let new = server_config(s)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = new;
        Ok(())
    }

    /// Runs the server side of a TLS handshake on `io` with the current
    /// certificate, for at most `limit`; a failure or a stall is counted and
    /// logged with the peer (throttled), and the connection is then dropped (None).
    pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
        limit: Duration,
        peer: std::net::SocketAddr,
        metrics: &crate::telemetry::metrics::Metrics,
    ) -> Option<TlsStream<S>> {
        let outcome = tokio::time::timeout(limit, tokio_rustls::TlsAcceptor::from(self.current()).accept(io)).await;
        let reason = match &outcome {
            Ok(Ok(_)) => None,
            Ok(Err(_)) => Some("error"),
            Err(_) => Some("timeout"),
        };
        if let Some(reason) = reason {
            metrics.tls_handshake_failed(reason);
        }
        let also_failed = || self.failures_log.lock().unwrap_or_else(PoisonError::into_inner).due();
        match outcome {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                if let Some(also_failed) = also_failed() {
                    tracing::info!(client = %peer, error = %e, also_failed, "TLS handshake failed; connection closed");
                }
                None
            }
            Err(_) => {
                if let Some(also_failed) = also_failed() {
                    tracing::info!(
                        client = %peer,
                        timeout_secs = limit.as_secs(),
                        also_failed,
                        "TLS handshake not finished in time; connection closed"
                    );
                }
                None
            }
        }
    }
}
