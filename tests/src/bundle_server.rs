//! A small real HTTP/1.1 file server for the update download tests: it
//! serves one bundle at `/edgeai.bundle` with a strong ETag and byte ranges
//! (`Range: bytes=N-`, honoured unless `If-Range` names another ETag), a
//! redirect to it at `/moved`, 404 elsewhere, optionally over TLS (rustls),
//! one request per connection. It misbehaves on request at the byte level,
//! which the daemon must survive: cut a response after N body bytes (the
//! head announced them all), or answer a status instead. It records every
//! request. Not a mock of our code: the daemon talks real HTTP to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The bundle's ETag.
pub const ETAG: &str = "\"bundle-v1\"";

/// What the next requests for the bundle get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// The bytes asked for.
    Serve,
    /// The head of a full answer, then only this many body bytes, then the connection closes.
    Cut(usize),
    /// This status and a short body.
    Status(u16),
}

/// One request the server read.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

struct Shared {
    bundle: Arc<Vec<u8>>,
    /// Acts for the next bundle requests, in order; then `default`.
    script: Vec<Act>,
    default: Act,
    seen: Vec<Seen>,
}

pub struct BundleServer {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl BundleServer {
    /// Serves `bundle` over plain HTTP on 127.0.0.1.
    pub fn start(bundle: Vec<u8>) -> BundleServer {
        Self::start_with(bundle, None)
    }

    /// Serves `bundle` over TLS with this server certificate (from [`crate::tls::TestCa::server`]).
    pub fn start_tls(bundle: Vec<u8>, cert: &crate::tls::Issued) -> BundleServer {
        let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().expect("PEM certificate");
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("PEM key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a usable server certificate");
        Self::start_with(bundle, Some(Arc::new(config)))
    }

    fn start_with(bundle: Vec<u8>, tls: Option<Arc<rustls::ServerConfig>>) -> BundleServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the bundle server");
        let addr = listener.local_addr().expect("its address");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let shared = Arc::new(Mutex::new(Shared { bundle: Arc::new(bundle), script: Vec::new(), default: Act::Serve, seen: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, tls_on) = (Arc::clone(&shared), Arc::clone(&stop), tls.is_some());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (s, tls) = (Arc::clone(&s), tls.clone());
                        std::thread::spawn(move || serve_connection(conn, tls, &s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => panic!("bundle server accept: {e}"),
                }
            }
        });
        BundleServer { addr, tls: tls_on, shared, stop }
    }

    /// The URL of `path` on this server (`/edgeai.bundle` is the bundle).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// The next bundle requests get these, in order; then `default`.
    pub fn script(&self, acts: &[Act], default: Act) {
        let mut s = self.shared.lock().expect("bundle server state");
        s.script = acts.to_vec();
        s.default = default;
    }

    /// Every request read so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().expect("bundle server state").seen.clone()
    }
}

impl Drop for BundleServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_connection(conn: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, shared: &Mutex<Shared>) {
    conn.set_nonblocking(false).expect("blocking connection");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    match tls {
        None => serve(conn, shared),
        Some(config) => {
            let Ok(session) = rustls::ServerConnection::new(config) else { return };
            serve(rustls::StreamOwned::new(session, conn), shared)
        }
    }
}

/// Reads one request head and answers it.
fn serve(mut stream: impl Read + Write, shared: &Mutex<Shared>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) if head.len() < 16 << 10 => head.push(byte[0]),
            // A client that went away, a failed TLS handshake, a head too long.
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let path = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("").to_owned();
    let header = |name: &str| {
        text.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let seen = Seen { path: path.clone(), range: header("range"), if_range: header("if-range") };
    let (act, bundle) = {
        let mut s = shared.lock().expect("bundle server state");
        s.seen.push(seen.clone());
        let act = if path == "/edgeai.bundle" && !s.script.is_empty() { s.script.remove(0) } else { s.default };
        (act, Arc::clone(&s.bundle))
    };
    let reply = match path.as_str() {
        "/edgeai.bundle" => answer(act, &bundle, &seen),
        "/moved" => head_only(302, &[("Location", "/edgeai.bundle".into())]),
        _ => head_only(404, &[]),
    };
    let _ = stream.write_all(&reply);
    let _ = stream.flush();
}

/// The bytes of the answer to a bundle request.
fn answer(act: Act, bundle: &[u8], seen: &Seen) -> Vec<u8> {
    if let Act::Status(code) = act {
        return head_only(code, &[]);
    }
    let from = seen
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| seen.if_range.as_deref().is_none_or(|v| v == ETAG));
    let (status, start) = match from {
        Some(n) if n >= bundle.len() => return head_only(416, &[("Content-Range", format!("bytes */{}", bundle.len()))]),
        Some(n) => (206, n),
        None => (200, 0),
    };
    let body = &bundle[start..];
    let mut headers = vec![("ETag", ETAG.to_owned()), ("Accept-Ranges", "bytes".into())];
    if status == 206 {
        headers.push(("Content-Range", format!("bytes {start}-{}/{}", bundle.len() - 1, bundle.len())));
    }
    let mut out = head(status, body.len(), &headers);
    let sent = match act {
        Act::Cut(n) => &body[..n.min(body.len())],
        _ => body,
    };
    out.extend_from_slice(sent);
    out
}

fn head_only(status: u16, headers: &[(&str, String)]) -> Vec<u8> {
    let body = format!("status {status}\n");
    let mut out = head(status, body.len(), headers);
    out.extend_from_slice(body.as_bytes());
    out
}

fn head(status: u16, len: usize, headers: &[(&str, String)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} Test\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A signing key trusted by `trust` and a bundle of the built edgeaid as
/// version `version` for this machine's default `compatible`, signed with
/// it, under a temporary directory: what an update server would hold.
pub struct SignedBundle {
    work: tempfile::TempDir,
    /// The trust directory (`update.trust_dir`) holding the key's public half.
    pub trust: std::path::PathBuf,
    /// The signed bundle.
    pub path: std::path::PathBuf,
}

impl SignedBundle {
    pub fn new(version: &str) -> SignedBundle {
        let work = tempfile::tempdir().expect("tempdir");
        let trust = work.path().join("trust.d");
        std::fs::create_dir(&trust).expect("trust dir");
        let key = work.path().join("release-key");
        edgeaictl(&["keys", "gen-signing", "--out", utf8(&key)]);
        std::fs::copy(work.path().join("release-key.pub"), trust.join("release.pub")).expect("trusting the key");
        let path = work.path().join("edgeai.bundle");
        let b = SignedBundle { work, trust, path };
        b.another(version, &b.path);
        b
    }

    /// Another bundle of the built edgeaid as `version` at `out`, signed with the same key.
    pub fn another(&self, version: &str, out: &std::path::Path) {
        let key = self.work.path().join("release-key");
        let compatible = format!("edgeai-{}", std::env::consts::ARCH);
        let bin = crate::paths::edgeaid();
        edgeaictl(&["bundle", "create", "--version", version, "--compatible", &compatible, "--binary", utf8(&bin), utf8(out)]);
        edgeaictl(&["bundle", "sign", "--key", utf8(&key), utf8(out)]);
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("reading the bundle")
    }
}

fn utf8(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs edgeaictl offline (no daemon), asserting success.
fn edgeaictl(args: &[&str]) {
    let out = std::process::Command::new(crate::paths::edgeaictl()).args(args).output().expect("running edgeaictl");
    assert!(out.status.success(), "edgeaictl {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}
