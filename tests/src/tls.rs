//! Test certificates and the TLS side of the test client: a throwaway CA
//! (rcgen with ring), server certificates for `127.0.0.1` and `localhost`
//! (and client certificates) signed by it, written as PEM files with the key
//! readable by its owner only (as the daemon requires), and the rustls
//! client configuration that trusts only that CA, which [`crate::http`]
//! uses for `Target::Tls`. Knows nothing about the daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority that exists for one test.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// The certificate, DER (what a TLS client is shown).
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("a PEM certificate").as_ref().to_vec()
    }

    /// Writes the certificate (mode 0644) and the key (mode 0600), replacing
    /// what is there.
    pub fn write(&self, cert: &Path, key: &Path) {
        write_mode(cert, &self.cert_pem, 0o644);
        write_mode(key, &self.key_pem, 0o600);
    }
}

/// Writes `text` to `path` and sets its mode.
pub fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

impl TestCa {
    /// A new CA whose subject's common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("generating the CA key");
        let cert_pem = params.self_signed(&key).expect("self-signing the CA").pem();
        TestCa { params, key, cert_pem }
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) {
        write_mode(path, &self.cert_pem, 0o644);
    }

    /// A server certificate for `127.0.0.1` and `localhost` with this common
    /// name and serial number, signed by this CA.
    pub fn server(&self, common_name: &str, serial: u64) -> Issued {
        self.issue(vec!["127.0.0.1".into(), "localhost".into()], common_name, serial, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for mutual TLS) with this common name.
    pub fn client(&self, common_name: &str, serial: u64) -> Issued {
        self.issue(Vec::new(), common_name, serial, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: Vec<String>, common_name: &str, serial: u64, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("generating a key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signing the certificate");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// A rustls client configuration trusting only the CA certificates in the
/// PEM file `ca`, offering ALPN `http/1.1`.
pub fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    client_config_with(ca, None)
}

/// As [`client_config`], presenting `identity` (certificate and key PEM) when
/// the server asks for a client certificate.
pub fn client_config_with(ca: &Path, identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("reading {}: {e}", ca.display())) {
        roots.add(cert.expect("a PEM certificate")).expect("a CA certificate rustls accepts");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().expect("PEM certificate");
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("PEM key");
            builder.with_client_auth_cert(chain, key).expect("a usable client certificate")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The server certificate a TLS session was given (DER).
pub fn peer_certificate(conn: &rustls::ClientConnection) -> Option<Vec<u8>> {
    conn.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec())
}
