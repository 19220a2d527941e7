//! Fetching a bundle from an `http://` or `https://` URL for an install
//! (`POST /admin/v1/update/install?url=`, D-Bus `InstallUpdateFromUrl`,
//! `edgeaictl update install URL`). The bytes stream into
//! `update/download-<key>.part` beside the slots (never held in memory) and
//! a dropped connection resumes with `Range` (and `If-Range` when the server
//! named a strong validator): within one install up to [`MAX_STALLS`] tries
//! in a row that bring no byte, and across installs and restarts, since the
//! part file and its `download-<key>.json` stay until the bundle is complete.
//! Only one partial download is kept: starting another URL removes the
//! last one's. A complete download is renamed to the
//! `incoming-<uuid>.bundle` the install verifies and then removes, so a
//! bundle refused after its download is fetched whole again next time.
//!
//! Owns: the URL rules (http or https, no credentials in it, at most
//! [`MAX_URL_BYTES`]), one request per connection, redirects (at most
//! [`MAX_REDIRECTS`], never from https to http), what each status means,
//! TLS with the roots in `update.ca_file`, the connect and read timeouts,
//! and `update.max_bundle_bytes` and the free-space check as soon as the
//! length is known. Must not: verify or install bundles (the install does),
//! or know the admin API or D-Bus (they call [`fetch`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, LAST_MODIFIED, LOCATION};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{snapshot, UpdateError, Updates};

/// The longest URL accepted.
pub const MAX_URL_BYTES: usize = 2048;
/// Redirects followed in one install.
pub const MAX_REDIRECTS: u32 = 5;
/// Tries in a row that bring no new byte before the install gives up (the
/// bytes received so far are kept for the next install of the same URL).
pub const MAX_STALLS: u32 = 5;
/// How long a TCP connect plus the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest wait for the response head or between two pieces of the body.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The wait before the first retry; doubled per stall, at most [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// One download at a time: a second is refused (`update_busy`), as two
/// writers of one part file would interleave.
static DOWNLOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where a download stands, for Progress signals and logs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes of the bundle on disk (a resumed download starts above 0).
    pub received: AtomicU64,
    /// The bundle's length once a response announced it; 0 until then.
    pub total: AtomicU64,
}

/// A URL the download accepts, parsed.
#[derive(Debug, Clone)]
struct Target {
    uri: Uri,
    tls: bool,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Target, UpdateError> {
        let bad = |why: &str| UpdateError::BadUrl(format!("{}: {why}", shown(url)));
        if url.len() > MAX_URL_BYTES {
            return Err(UpdateError::BadUrl(format!("the URL is {} bytes long; at most {MAX_URL_BYTES}", url.len())));
        }
        let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(bad(&format!("the scheme {other:?} is not supported; use http:// or https://"))),
            None => return Err(bad("not an absolute URL; it must start with http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not accepted (they would end up in logs)"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target { uri, tls, host, port })
    }

    /// Where a `Location` header sends this request.
    fn redirect(&self, location: &str) -> Result<Target, String> {
        let next = if location.starts_with('/') && !location.starts_with("//") {
            let scheme = if self.tls { "https" } else { "http" };
            let authority = self.uri.authority().map_or("", |a| a.as_str());
            format!("{scheme}://{authority}{location}")
        } else {
            location.to_owned()
        };
        let target = Target::parse(&next).map_err(|e| format!("the server redirected to an unusable location: {e}"))?;
        if self.tls && !target.tls {
            return Err(format!("the server redirected from https to {}: refused", shown(&next)));
        }
        Ok(target)
    }
}

/// Refuses a URL the download would refuse, before anything starts.
pub fn check_url(url: &str) -> Result<(), UpdateError> {
    Target::parse(url).map(|_| ())
}

/// A URL as logs and messages show it: without its query (which may hold a
/// signed token) and without credentials.
pub fn shown(url: &str) -> String {
    let base = match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_owned(),
    };
    let Some((scheme, rest)) = base.split_once("://") else { return base };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => base,
    }
}

/// What is kept beside a part file, so a later install knows what it holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct PartInfo {
    url: String,
    /// A strong `ETag`, else `Last-Modified`: sent as `If-Range`.
    validator: Option<String>,
    total: Option<u64>,
}

/// The part file and its description for `url`.
fn part_paths(dir: &Path, url: &str) -> (PathBuf, PathBuf) {
    let key: String = Sha256::digest(url.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    let udir = snapshot::update_dir(dir);
    (udir.join(format!("download-{key}.part")), udir.join(format!("download-{key}.json")))
}

/// How one try ended, when it did not finish the download.
enum Retry {
    /// Worth another try (the connection dropped, a timeout, a 5xx).
    Again(String),
    /// Follow this redirect.
    Redirect(Target),
    /// Give up: the reason is final.
    Fatal(UpdateError),
}

/// The download in progress.
struct Part {
    url: String,
    path: PathBuf,
    info_path: PathBuf,
    info: PartInfo,
    file: tokio::fs::File,
    have: u64,
}

impl Part {
    async fn truncate(&mut self) -> Result<(), UpdateError> {
        self.file.set_len(0).await.map_err(|source| UpdateError::Io { what: "truncating", path: self.path.clone(), source })?;
        self.have = 0;
        self.info.validator = None;
        self.info.total = None;
        Ok(())
    }

    async fn save_info(&self) -> Result<(), UpdateError> {
        let text = serde_json::to_vec(&self.info).map_err(|e| UpdateError::Task(format!("encoding the download's description: {e}")))?;
        tokio::fs::write(&self.info_path, text).await.map_err(|source| UpdateError::Io {
            what: "writing",
            path: self.info_path.clone(),
            source,
        })
    }
}

/// Downloads the bundle at `url` into the update directory and returns the
/// complete file (`update/incoming-<uuid>.bundle`; the caller installs and
/// removes it). A failure keeps what was received for the next install of
/// the same URL, except a full disk, which removes it.
pub async fn fetch(updates: &Arc<Updates>, url: &str, progress: &Progress) -> Result<PathBuf, UpdateError> {
    let target = Target::parse(url)?;
    let settings = updates.settings().clone();
    let tls = if target.tls { Some(tls_config(&settings.ca_file)?) } else { None };
    let _one =
        DOWNLOADING.try_lock().map_err(|_| UpdateError::Busy("another bundle is being downloaded; wait for its install to end".into()))?;
    let mut part = open_part(&settings.dir, url).await?;
    progress.received.store(part.have, Ordering::Relaxed);
    progress.total.store(part.info.total.unwrap_or(0), Ordering::Relaxed);
    if part.have > 0 {
        tracing::info!(url = %shown(url), bytes = part.have, "update: resuming a download an earlier install did not finish");
    }
    let mut current = target;
    let (mut stalls, mut redirects) = (0u32, 0u32);
    let tls_for_redirects = tls.clone();
    loop {
        let before = part.have;
        let tls_now = if current.tls { tls_for_redirects.clone() } else { None };
        let tried = one_try(updates, &current, tls_now, &mut part, progress, &settings).await;
        match tried {
            Ok(()) => break,
            Err(Retry::Fatal(e)) => {
                // Nothing worth resuming: no byte, or a bundle that cannot fit.
                if part.have == 0 || matches!(e, UpdateError::NoSpace { .. } | UpdateError::TooLarge { .. }) {
                    remove_part(&part.path, &part.info_path).await;
                }
                return Err(e);
            }
            Err(Retry::Redirect(next)) => {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(UpdateError::Download { url: shown(url), reason: format!("more than {MAX_REDIRECTS} redirects") });
                }
                if next.tls && tls_for_redirects.is_none() {
                    return Err(UpdateError::Download {
                        url: shown(url),
                        reason: "the server redirected to https; install from the https URL itself".into(),
                    });
                }
                tracing::info!(url = %shown(url), to = %shown(&next.uri.to_string()), "update: download redirected");
                current = next;
            }
            Err(Retry::Again(reason)) => {
                stalls = if part.have > before { 1 } else { stalls + 1 };
                if stalls >= MAX_STALLS {
                    return Err(UpdateError::Download {
                        url: shown(url),
                        reason: format!(
                            "{reason} ({stalls} tries in a row without a new byte; the {} bytes received are kept and installing the same URL again resumes there)",
                            part.have
                        ),
                    });
                }
                let wait = BACKOFF.saturating_mul(1 << (stalls - 1).min(5)).min(MAX_BACKOFF);
                tracing::warn!(url = %shown(url), bytes = part.have, reason = %reason, retry_in_ms = wait.as_millis() as u64, "update: download interrupted; resuming");
                tokio::time::sleep(wait).await;
            }
        }
    }
    part.file.sync_all().await.map_err(|e| super::install::receive_write_error(&part.path, part.have, e))?;
    let incoming = super::install::incoming_path(&settings.dir);
    tokio::fs::rename(&part.path, &incoming).await.map_err(|source| UpdateError::Io {
        what: "renaming",
        path: part.path.clone(),
        source,
    })?;
    remove_file_quietly(&part.info_path).await;
    tracing::info!(url = %shown(url), bytes = part.have, "update: bundle downloaded");
    Ok(incoming)
}

/// The part file for `url`, resumed when the kept one is for the same URL;
/// any other download's leftovers are removed.
async fn open_part(dir: &Path, url: &str) -> Result<Part, UpdateError> {
    let (path, info_path) = part_paths(dir, url);
    let udir = snapshot::update_dir(dir);
    tokio::fs::create_dir_all(&udir).await.map_err(|source| UpdateError::Io { what: "creating", path: udir.clone(), source })?;
    let mut entries = tokio::fs::read_dir(&udir).await.map_err(|source| UpdateError::Io { what: "reading", path: udir.clone(), source })?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("download-") && p != path && p != info_path {
            tracing::info!(path = %p.display(), "update: removing another URL's unfinished download");
            remove_file_quietly(&p).await;
        }
    }
    let kept: Option<PartInfo> = tokio::fs::read(&info_path).await.ok().and_then(|b| serde_json::from_slice(&b).ok());
    let kept = kept.filter(|k| k.url == url);
    let recorded = kept.is_some();
    let info = kept.unwrap_or_else(|| PartInfo { url: url.to_owned(), validator: None, total: None });
    let mut file =
        tokio::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).await.map_err(|source| UpdateError::Io {
            what: "opening",
            path: path.clone(),
            source,
        })?;
    let mut have = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    // Bytes without their record (lost in a power cut before it reached the
    // disk) cannot be checked against the server's validator: start over.
    if have > 0 && (!recorded || info.total.is_some_and(|t| have > t)) {
        tracing::info!(path = %path.display(), bytes = have, recorded, "update: the kept download cannot be resumed; starting over");
        file.set_len(0).await.map_err(|source| UpdateError::Io { what: "truncating", path: path.clone(), source })?;
        have = 0;
    }
    file.flush().await.map_err(|source| UpdateError::Io { what: "opening", path: path.clone(), source })?;
    Ok(Part { url: url.to_owned(), path, info_path, info, file, have })
}

async fn remove_part(path: &Path, info: &Path) {
    remove_file_quietly(path).await;
    remove_file_quietly(info).await;
}

async fn remove_file_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "update: cannot remove a download file");
        }
    }
}

/// One request: the bytes from `part.have` on, appended to the part file.
async fn one_try(
    updates: &Updates,
    target: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    part: &mut Part,
    progress: &Progress,
    settings: &crate::config::UpdateSettings,
) -> Result<(), Retry> {
    let shown_url = shown(&part.url);
    let fatal = |reason: String| Retry::Fatal(UpdateError::Download { url: shown_url.clone(), reason });
    let mut req = Request::get(target.uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, target.uri.authority().map_or(target.host.as_str(), |a| a.as_str()))
        .header(http::header::USER_AGENT, concat!("edgeaid/", env!("CARGO_PKG_VERSION")))
        .header(http::header::ACCEPT_ENCODING, "identity");
    if part.have > 0 {
        req = req.header(http::header::RANGE, format!("bytes={}-", part.have));
        if let Some(v) = &part.info.validator {
            req = req.header(http::header::IF_RANGE, v.as_str());
        }
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| fatal(format!("cannot build the request: {e}")))?;
    let resp = send(target, tls, req).await.map_err(|e| match e {
        Refused::Transient(reason) => Retry::Again(reason),
        Refused::Certificate(reason) => fatal(reason),
    })?;
    let status = resp.status();
    let header = |name| resp.headers().get(name).and_then(|v: &http::HeaderValue| v.to_str().ok()).map(str::to_owned);
    let total = match status {
        StatusCode::OK => {
            if part.have > 0 {
                tracing::info!(url = %shown_url, bytes = part.have, "update: the server sent the whole bundle instead of the rest; starting over");
                part.truncate().await.map_err(Retry::Fatal)?;
            }
            header(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
        }
        StatusCode::PARTIAL_CONTENT => {
            let range = header(CONTENT_RANGE).unwrap_or_default();
            let Some((start, total)) = content_range(&range) else {
                return Err(fatal(format!("the server answered 206 with an unusable Content-Range {range:?}")));
            };
            if start != part.have {
                part.truncate().await.map_err(Retry::Fatal)?;
                return Err(Retry::Again(format!("the server resumed at byte {start}, not {}; starting over", part.have)));
            }
            total
        }
        StatusCode::RANGE_NOT_SATISFIABLE if part.have > 0 => {
            part.truncate().await.map_err(Retry::Fatal)?;
            return Err(Retry::Again("the server cannot resume at the bytes kept (416); starting over".into()));
        }
        s if s.is_redirection() => {
            let location = header(LOCATION).ok_or_else(|| fatal(format!("the server answered {s} without a Location")))?;
            return Err(target.redirect(&location).map(Retry::Redirect).unwrap_or_else(fatal));
        }
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT => {
            return Err(Retry::Again(format!("the server answered {s}")));
        }
        s => return Err(fatal(format!("the server answered {s}"))),
    };
    if let Some(total) = total {
        if total > settings.max_bundle_bytes {
            return Err(Retry::Fatal(UpdateError::TooLarge { limit: settings.max_bundle_bytes }));
        }
        // A full disk is found before the bytes are fetched.
        updates.check_receive_space(total).map_err(Retry::Fatal)?;
        progress.total.store(total, Ordering::Relaxed);
    }
    let validator = header(ETAG).filter(|e| !e.starts_with("W/")).or_else(|| header(LAST_MODIFIED));
    let info = PartInfo { url: part.url.clone(), validator, total };
    if info != part.info || part.have == 0 {
        part.info = info;
        part.save_info().await.map_err(Retry::Fatal)?;
    }
    let mut body: Incoming = resp.into_body();
    loop {
        let frame = match tokio::time::timeout(READ_TIMEOUT, body.frame()).await {
            Err(_) => {
                return Err(Retry::Again(format!("no byte for {}s after {} of the bundle's bytes", READ_TIMEOUT.as_secs(), part.have)))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Retry::Again(format!("the connection failed after {} bytes: {e}", part.have))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        let have = part.have + data.len() as u64;
        if have > settings.max_bundle_bytes {
            return Err(Retry::Fatal(UpdateError::TooLarge { limit: settings.max_bundle_bytes }));
        }
        if total.is_some_and(|t| have > t) {
            part.truncate().await.map_err(Retry::Fatal)?;
            return Err(Retry::Again("the server sent more bytes than it announced; starting over".into()));
        }
        part.file
            .write_all(&data)
            .await
            .map_err(|e| Retry::Fatal(super::install::receive_write_error(&part.path, total.unwrap_or(have), e)))?;
        part.have = have;
        progress.received.store(have, Ordering::Relaxed);
        super::kill_point_flushed("receive", &mut part.file).await;
    }
    part.file.flush().await.map_err(|e| Retry::Fatal(super::install::receive_write_error(&part.path, part.have, e)))?;
    match total {
        Some(t) if part.have < t => Err(Retry::Again(format!("the connection closed after {} of {t} bytes", part.have))),
        _ if part.have == 0 => Err(fatal("the server sent an empty body".into())),
        _ => Ok(()),
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`): the start and the total.
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end) = (start.trim().parse::<u64>().ok()?, end.trim().parse::<u64>().ok()?);
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok().filter(|t| *t > end)?),
    };
    Some((start, total))
}

/// Why a request got no answer.
enum Refused {
    /// The network or the server; another try may succeed.
    Transient(String),
    /// The server's certificate is not trusted: trying again cannot help.
    Certificate(String),
}

/// Connects (TLS when `tls` is given), sends `req` and waits for the head.
async fn send(
    target: &Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    req: Request<Empty<Bytes>>,
) -> Result<hyper::Response<Incoming>, Refused> {
    let addr = format!("{}:{}", target.host, target.port);
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Refused::Transient(format!("cannot connect to {addr}: {e}")))?;
        match tls {
            None => exchange(tcp, req).await.map_err(Refused::Transient),
            Some(cfg) => {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| Refused::Certificate(format!("{:?} is not a TLS server name: {e}", target.host)))?;
                let stream = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| {
                    let certificate = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<rustls::Error>())
                        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented));
                    let reason = format!("the TLS handshake with {addr} failed: {e}");
                    if certificate {
                        Refused::Certificate(format!("{reason} (update.ca_file must hold the CA that signed the server's certificate)"))
                    } else {
                        Refused::Transient(reason)
                    }
                })?;
                exchange(stream, req).await.map_err(Refused::Transient)
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT + READ_TIMEOUT, connect)
        .await
        .map_err(|_| Refused::Transient(format!("{addr} did not answer within {}s", (CONNECT_TIMEOUT + READ_TIMEOUT).as_secs())))?
}

async fn exchange<S>(stream: S, req: Request<Empty<Bytes>>) -> Result<hyper::Response<Incoming>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("the HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "update: download connection closed");
        }
    });
    sender.send_request(req).await.map_err(|e| format!("the request failed: {e}"))
}

/// A TLS client that trusts the certificates in `ca_file` (PEM).
fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, UpdateError> {
    let bad = |reason: String| UpdateError::BadUrl(format!("https needs update.ca_file ({}): {reason}", ca_file.display()));
    let pem = std::fs::read(ca_file).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("it holds no usable certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UpdateError::Task(format!("TLS client configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_anything_is_fetched() {
        for (url, says) in [
            ("ftp://h/b.bundle", "scheme \"ftp\""),
            ("/tmp/b.bundle", "not an absolute URL"),
            ("http://user:pw@h/b", "credentials"),
            ("not a url at all", "not a URL"),
        ] {
            let e = Target::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        let long = format!("http://h/{}", "a".repeat(MAX_URL_BYTES));
        assert!(Target::parse(&long).unwrap_err().to_string().contains("at most"));
        let t = Target::parse("https://[::1]:8443/b?x=1").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "::1", 8443));
        assert_eq!(Target::parse("http://gw.local/b").unwrap().port, 80);
    }

    #[test]
    fn redirects_resolve_and_never_drop_tls() {
        let t = Target::parse("https://a.example/x/b.bundle").unwrap();
        assert_eq!(t.redirect("/y/c.bundle").unwrap().uri.to_string(), "https://a.example/y/c.bundle");
        assert_eq!(t.redirect("https://b.example/c").unwrap().host, "b.example");
        assert!(t.redirect("http://b.example/c").unwrap_err().contains("from https"));
        assert!(t.redirect("ftp://b.example/c").unwrap_err().contains("unusable location"));
    }

    #[test]
    fn content_ranges_are_read_strictly() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 0-9/*"), Some((0, None)));
        for bad in ["bytes 5-1/10", "bytes 0-9/9", "items 0-9/10", "bytes x-9/10", ""] {
            assert_eq!(content_range(bad), None, "{bad}");
        }
    }

    /// A kept part resumes only with the record of what it is; bytes whose
    /// record is missing or names another URL start over.
    #[tokio::test]
    async fn a_part_resumes_only_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let url = "http://h/b.bundle";
        let (path, info_path) = part_paths(dir.path(), url);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(open_part(dir.path(), url).await.unwrap().have, 0, "no record: started over");
        std::fs::write(&path, b"12345").unwrap();
        let record = |u: &str, total| serde_json::to_vec(&PartInfo { url: u.into(), validator: Some("\"v1\"".into()), total }).unwrap();
        std::fs::write(&info_path, record("http://other/b.bundle", Some(10))).unwrap();
        assert_eq!(open_part(dir.path(), url).await.unwrap().have, 0, "another URL's record: started over");
        std::fs::write(&path, b"12345").unwrap();
        std::fs::write(&info_path, record(url, Some(4))).unwrap();
        assert_eq!(open_part(dir.path(), url).await.unwrap().have, 0, "more bytes than the total: started over");
        std::fs::write(&path, b"12345").unwrap();
        std::fs::write(&info_path, record(url, Some(10))).unwrap();
        let part = open_part(dir.path(), url).await.unwrap();
        assert_eq!((part.have, part.info.validator.as_deref()), (5, Some("\"v1\"")));
    }

    #[test]
    fn a_query_is_not_shown() {
        assert_eq!(shown("https://h/b.bundle?sig=secret"), "https://h/b.bundle?…");
        assert_eq!(shown("http://h/b"), "http://h/b");
        assert_eq!(shown("http://u:pw@h/b@c"), "http://***@h/b@c");
    }
}
