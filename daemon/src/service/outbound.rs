//! The http-request node's client: one HTTP/1.1 exchange to a destination
//! the allowlist (`workflow.http_allow`) permits.
//!
//! Owns: parsing the allowlist ([`Rule`]), resolving the host, checking
//! every resolved address, connecting to a checked address (never to a
//! re-resolved one, so DNS rebinding cannot escape the list), the connect
//! and read timeouts and the response size cap. Redirects are not followed:
//! a 3xx is the node's answer. `http://` only: this build has no TLS.
//! Must not: template, authorise or retry requests (the node does), or know
//! the engine's run state.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::engine::workflow::{HttpCall, HttpReply};

/// Everything an outbound exchange can fail with.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("workflow.http_allow entry {rule:?}: {reason}")]
    InvalidRule { rule: String, reason: String },
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("https is not supported in this build: {url}")]
    Https { url: String },
    #[error("invalid method {method:?}")]
    InvalidMethod { method: String },
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("resolving {host} took longer than {after:?}")]
    ResolveTimeout { host: String, after: Duration },
    #[error("destination {host} ({ip}) is not in workflow.http_allow")]
    NotAllowed { host: String, ip: IpAddr },
    #[error("cannot connect to {host} ({addr})")]
    Connect {
        host: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {host} took longer than {after:?}")]
    ConnectTimeout { host: String, after: Duration },
    #[error("{url} sent nothing for {after:?}")]
    ReadTimeout { url: String, after: Duration },
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("HTTP exchange with {url} failed")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
}

/// One `workflow.http_allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A host name, lower case, without a trailing dot: allows that name.
    Host(String),
    /// `*.plant.lan`, stored as `.plant.lan`: allows every name below it.
    Below(String),
    /// An address block; a bare IP is a block of one.
    Net { addr: IpAddr, prefix: u8 },
}

impl Rule {
    /// Parses an entry: `"plc.local"`, `"*.plant.lan"`, `"10.1.2.3"`,
    /// `"10.0.0.0/8"`, `"::1/128"`. The message says what is wrong.
    pub fn parse(s: &str) -> Result<Rule, String> {
        if let Some((addr, prefix)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: {addr:?} is not an IP address (CIDR is ADDRESS/PREFIX)"))?;
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix.parse::<u8>() {
                Ok(p) if p <= bits => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 ..= {bits}")),
            };
            if network(addr, prefix) != addr {
                return Err(format!("{s:?} has bits set after the prefix; did you mean \"{}/{prefix}\"?", network(addr, prefix)));
            }
            return Ok(Rule::Net { addr, prefix });
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            let prefix = if addr.is_ipv4() { 32 } else { 128 };
            return Ok(Rule::Net { addr, prefix });
        }
        let (below, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if !is_host_name(&name) {
            return Err(format!(
                "{s:?} is not a host name (\"plc.local\"), a wildcard (\"*.plant.lan\"), an IP address or a CIDR (\"10.0.0.0/8\")"
            ));
        }
        Ok(if below { Rule::Below(format!(".{name}")) } else { Rule::Host(name) })
    }

    /// True when this entry allows the host name `host` (lower case, no trailing dot).
    fn allows_name(&self, host: &str) -> bool {
        match self {
            Rule::Host(name) => host == name,
            Rule::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            Rule::Net { .. } => false,
        }
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        match self {
            Rule::Net { addr, prefix } => addr.is_ipv4() == ip.is_ipv4() && network(ip, *prefix) == *addr,
            Rule::Host(_) | Rule::Below(_) => false,
        }
    }
}

/// `ip` with every bit after the first `prefix` cleared.
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1 to 63 bytes, at most 253 in all.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The http-request node's client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbound {
    rules: Arc<[Rule]>,
}

impl Outbound {
    /// A client allowing the destinations in `allow` (`workflow.http_allow`).
    pub fn new(allow: &[String]) -> Result<Outbound, OutboundError> {
        let rules = allow
            .iter()
            .map(|s| Rule::parse(s).map_err(|reason| OutboundError::InvalidRule { rule: s.clone(), reason }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outbound { rules: rules.into() })
    }

    /// One exchange: the reply whatever its status (3xx included), or why
    /// there is none.
    pub async fn send(&self, call: HttpCall) -> Result<HttpReply, OutboundError> {
        let target = Target::parse(&call.url)?;
        let method = Method::from_bytes(call.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| OutboundError::InvalidMethod { method: call.method.clone() })?;
        let addrs = self.checked_addresses(&target, call.connect_timeout).await?;
        let stream = connect(&target.host, &addrs, call.connect_timeout).await?;
        let url = call.url.clone();
        let http_error = |source| OutboundError::Http { url: url.clone(), source };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http_error)?;
        // Ends with this exchange, whichever way it ends.
        let conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "outbound connection ended with an error");
            }
        }));

        let mut request = Request::builder().method(method).uri(target.origin_form.clone());
        let mut has_host = false;
        for (name, value) in &call.headers {
            let invalid = |reason: String| OutboundError::InvalidHeader { name: name.clone(), reason };
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
            // The body's framing is hyper's to set, from the body itself.
            if header == CONTENT_LENGTH || header == TRANSFER_ENCODING {
                continue;
            }
            has_host |= header == HOST;
            request = request.header(header, value);
        }
        if !has_host {
            request = request.header(HOST, target.host_header.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(call.body.unwrap_or_default())))
            .map_err(|e| OutboundError::InvalidUrl { url: call.url.clone(), reason: e.to_string() })?;

        let read_timeout = || OutboundError::ReadTimeout { url: call.url.clone(), after: call.read_timeout };
        let response =
            tokio::time::timeout(call.read_timeout, sender.send_request(request)).await.map_err(|_| read_timeout())?.map_err(http_error)?;
        let limit = call.max_response_bytes;
        let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(OutboundError::TooLarge { limit });
        }
        let status = response.status().as_u16();
        let headers =
            response.headers().iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        loop {
            let frame = tokio::time::timeout(call.read_timeout, body.frame()).await.map_err(|_| read_timeout())?;
            let Some(frame) = frame else { break };
            if let Ok(data) = frame.map_err(http_error)?.into_data() {
                if bytes.len() + data.len() > limit {
                    return Err(OutboundError::TooLarge { limit });
                }
                bytes.extend_from_slice(&data);
            }
        }
        drop(conn);
        tracing::debug!(node_id = %call.node_id, host = %target.host, status, bytes = bytes.len(), "http-request answered");
        Ok(HttpReply { status, headers, body: bytes })
    }

    /// The addresses of `target`, each allowed; any address outside the
    /// list refuses the whole request.
    async fn checked_addresses(&self, target: &Target, timeout: Duration) -> Result<Vec<SocketAddr>, OutboundError> {
        let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => {
                let host = &target.host;
                let lookup = tokio::net::lookup_host((host.as_str(), target.port));
                let resolved = tokio::time::timeout(timeout, lookup)
                    .await
                    .map_err(|_| OutboundError::ResolveTimeout { host: host.clone(), after: timeout })?
                    .map_err(|source| OutboundError::Resolve { host: host.clone(), source })?;
                resolved.collect()
            }
        };
        if addrs.is_empty() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses");
            return Err(OutboundError::Resolve { host: target.host.clone(), source });
        }
        let name = target.host.to_ascii_lowercase();
        let name = name.strip_suffix('.').unwrap_or(&name);
        let name_allowed = self.rules.iter().any(|r| r.allows_name(name));
        for addr in &addrs {
            let ip = addr.ip().to_canonical();
            if !name_allowed && !self.rules.iter().any(|r| r.allows_ip(ip)) {
                tracing::info!(host = %target.host, %ip, "http-request destination refused by workflow.http_allow");
                return Err(OutboundError::NotAllowed { host: target.host.clone(), ip });
            }
        }
        Ok(addrs)
    }
}

/// The parts of an `http://` URL the exchange needs.
struct Target {
    /// Without IPv6 brackets.
    host: String,
    port: u16,
    /// `host[:port]` as the URL wrote it.
    host_header: String,
    /// Path and query.
    origin_form: Uri,
}

impl Target {
    fn parse(url: &str) -> Result<Target, OutboundError> {
        let invalid = |reason: &str| OutboundError::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => {}
            Some("https") => return Err(OutboundError::Https { url: url.to_owned() }),
            Some(_) => return Err(invalid("only http:// URLs are supported")),
            None => return Err(invalid("not an absolute http:// URL")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user credentials in the URL are not supported; use the node's authorization"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let origin_form = path.parse::<Uri>().map_err(|e| invalid(&e.to_string()))?;
        Ok(Target { host, port: authority.port_u16().unwrap_or(80), host_header: authority.as_str().to_owned(), origin_form })
    }
}

/// Connects to the first of `addrs` that answers, all within `timeout`.
async fn connect(host: &str, addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, OutboundError> {
    let attempt = async {
        let mut last = None;
        for &addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(source) => last = Some(OutboundError::Connect { host: host.to_owned(), addr, source }),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(OutboundError::ConnectTimeout { host: host.to_owned(), after: timeout }),
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(Some(e))) => Err(e),
        // `checked_addresses` never returns an empty list.
        Ok(Err(None)) => {
            Err(OutboundError::Resolve { host: host.to_owned(), source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses") })
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
