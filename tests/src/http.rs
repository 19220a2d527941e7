//! A deliberately small, blocking HTTP/1.1 client over TCP (plain, or TLS
//! trusting a test CA: [`crate::tls`]) or a unix socket for the end-to-end tests: one connection per request (`Connection:
//! close`), JSON helpers, raw byte requests (for malformed input), and
//! responses that can be read incrementally (for SSE). It decodes chunked
//! and `Content-Length` bodies itself, so what a test sees is exactly what
//! the daemon sent. Owns no knowledge of Dify beyond the bearer header.
//!
//! It is deliberately not `edgeai_common::UnixClient` (hyper): these tests
//! send bytes no conforming client would write (bad framing, oversized
//! heads, invalid UTF-8), stall or drop a reader mid-body, and check the
//! framing itself, all of which a client library hides or refuses. Admin
//! calls go through `UnixClient` ([`crate::admin`]); SSE decoding is
//! `edgeai_common::sse`'s ([`crate::sse`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How long a read may block before the test fails instead of hanging.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// HTTPS: TLS to `addr`, trusting only the CA certificates in the PEM file `ca`.
    Tls {
        addr: SocketAddr,
        ca: PathBuf,
    },
}

/// One connection, TCP or unix.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    pub fn connect(target: &Target, timeout: Duration) -> std::io::Result<Conn> {
        let conn = match target {
            Target::Tcp(addr) => Conn::Tcp(TcpStream::connect_timeout(addr, Duration::from_secs(10))?),
            Target::Unix(path) => Conn::Unix(UnixStream::connect(path)?),
            Target::Tls { addr, ca } => return Conn::connect_tls(*addr, crate::tls::client_config(ca), timeout),
        };
        match &conn {
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                s.set_nodelay(true)?;
            }
            Conn::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
            }
            // Set up in `connect_tls`.
            Conn::Tls(_) => {}
        }
        Ok(conn)
    }

    /// Connects to `addr` and completes a TLS handshake with `config`,
    /// naming the server by its IP address; a refused handshake is the error.
    pub fn connect_tls(addr: SocketAddr, config: std::sync::Arc<rustls::ClientConfig>, timeout: Duration) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let session = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(session, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Conn::Tls(Box::new(stream)))
    }

    /// The certificate the server presented (DER), on a TLS connection.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self {
            Conn::Tls(s) => crate::tls::peer_certificate(&s.conn),
            Conn::Tcp(_) | Conn::Unix(_) => None,
        }
    }

    /// Closes both directions now (the client "goes away").
    pub fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Tls(s) => s.sock.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (showing the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("response {} is not JSON ({e}): {:?}", self.status, self.text()))
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect_json(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text());
        self.json()
    }

    /// Asserts a Dify error: the HTTP status, and a body `{code, message,
    /// status}` with this code and the same status. Returns the body.
    #[track_caller]
    pub fn expect_dify_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text());
        let v = self.json();
        assert_eq!(v["code"], code, "unexpected Dify code in {v}");
        assert_eq!(v["status"], status, "body status differs from the HTTP status in {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "error without a message: {v}");
        v
    }
}

/// A response whose headers are read and whose body is read on demand.
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: BodyReader,
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The next decoded piece of the body, `None` at its end.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.body.next_chunk()
    }

    /// Reads the rest of the body.
    pub fn finish(mut self) -> std::io::Result<Response> {
        let mut body = Vec::new();
        while let Some(c) = self.body.next_chunk()? {
            body.extend_from_slice(&c);
        }
        Ok(Response { status: self.status, headers: self.headers, body })
    }

    /// Closes the connection without reading further.
    pub fn close(self) {
        self.body.reader.get_ref().shutdown();
    }

    /// Reads the body as Server-Sent Events.
    pub fn into_sse(self) -> crate::sse::SseReader {
        crate::sse::SseReader::new(self)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

enum Framing {
    Chunked { done: bool },
    Length(u64),
    UntilEof { done: bool },
}

struct BodyReader {
    reader: BufReader<Conn>,
    framing: Framing,
}

impl BodyReader {
    fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        match &mut self.framing {
            Framing::Length(0) | Framing::Chunked { done: true } | Framing::UntilEof { done: true } => Ok(None),
            Framing::Length(left) => {
                let mut buf = vec![0u8; (*left).min(64 * 1024) as usize];
                let n = self.reader.read(&mut buf)?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("body ended {left} bytes early")));
                }
                *left -= n as u64;
                buf.truncate(n);
                Ok(Some(buf))
            }
            Framing::UntilEof { done } => {
                let mut buf = vec![0u8; 64 * 1024];
                let n = self.reader.read(&mut buf)?;
                if n == 0 {
                    *done = true;
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(buf))
            }
            Framing::Chunked { done } => {
                let line = read_line(&mut self.reader)?;
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !read_line(&mut self.reader)?.is_empty() {}
                    *done = true;
                    return Ok(None);
                }
                let mut buf = vec![0u8; size];
                self.reader.read_exact(&mut buf)?;
                let crlf = read_line(&mut self.reader)?;
                if !crlf.is_empty() {
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk not followed by CRLF"));
                }
                Ok(Some(buf))
            }
        }
    }
}

/// One CRLF- (or LF-) terminated line without its terminator; EOF is an error.
fn read_line(r: &mut BufReader<Conn>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-response"));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "non-UTF-8 header line"))
}

/// Reads the status line and headers from `conn`.
fn read_head(conn: Conn, no_body: bool) -> std::io::Result<Streaming> {
    let mut reader = BufReader::new(conn);
    let status_line = read_line(&mut reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {status_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status line {status_line:?}")));
    }
    let status: u16 = code.parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad status {code:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let framing = if no_body || status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else if header(&headers, "transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked { done: false }
    } else if let Some(len) = header(&headers, "content-length") {
        Framing::Length(
            len.parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad content-length {len:?}")))?,
        )
    } else {
        Framing::UntilEof { done: false }
    };
    Ok(Streaming { status, headers, body: BodyReader { reader, framing } })
}

/// Sends `bytes` on an open connection (such as one from
/// [`Conn::connect_tls`]) and reads the whole response.
pub fn exchange(mut conn: Conn, bytes: &[u8]) -> std::io::Result<Response> {
    conn.write_all(bytes)?;
    conn.flush()?;
    read_head(conn, false)?.finish()
}

/// A client for one daemon endpoint, with an optional API key.
#[derive(Debug, Clone)]
pub struct Client {
    pub target: Target,
    pub key: Option<String>,
    pub timeout: Duration,
}

impl Client {
    pub fn new(target: Target) -> Client {
        Client { target, key: None, timeout: DEFAULT_TIMEOUT }
    }

    /// The same client sending `Authorization: Bearer <key>`.
    pub fn with_key(&self, key: &str) -> Client {
        Client { key: Some(key.to_owned()), ..self.clone() }
    }

    /// The same client without an `Authorization` header.
    pub fn without_key(&self) -> Client {
        Client { key: None, ..self.clone() }
    }

    /// Builds the request bytes: method, path, Host, Connection: close, the
    /// key, the extra headers, and Content-Length/Type for a body.
    pub fn request_bytes(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(k) = &self.key {
            head.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
                head.push_str("Content-Type: application/json\r\n");
            }
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
                head.push_str(&format!("Content-Length: {}\r\n", b.len()));
            }
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        bytes
    }

    /// Sends `bytes` as they are and returns the response once its headers
    /// are in. A failed write is ignored when the daemon already answered
    /// (it may refuse a request before reading all of it).
    pub fn send_raw_streaming(&self, bytes: &[u8], no_body: bool) -> std::io::Result<Streaming> {
        let mut conn = Conn::connect(&self.target, self.timeout)?;
        let written = conn.write_all(bytes).and_then(|()| conn.flush());
        match read_head(conn, no_body) {
            Ok(s) => Ok(s),
            Err(e) => Err(written.err().unwrap_or(e)),
        }
    }

    /// Sends a request and returns once the response headers are in.
    pub fn open(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Streaming {
        let bytes = self.request_bytes(method, path, headers, body);
        self.send_raw_streaming(&bytes, method == "HEAD").unwrap_or_else(|e| panic!("{method} {path} to {:?} failed: {e}", self.target))
    }

    /// Sends a request and reads the whole response.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
        self.open(method, path, headers, body).finish().unwrap_or_else(|e| panic!("reading the answer to {method} {path} failed: {e}"))
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, &[], Some(body.to_string().as_bytes()))
    }

    pub fn delete_json(&self, path: &str, body: &Value) -> Response {
        self.request("DELETE", path, &[], Some(body.to_string().as_bytes()))
    }

    /// POSTs JSON and returns the response with its body unread (for SSE).
    pub fn post_json_streaming(&self, path: &str, body: &Value) -> Streaming {
        self.open("POST", path, &[], Some(body.to_string().as_bytes()))
    }
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
