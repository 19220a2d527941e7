//! HTTP/1.1 client for the daemon's unix socket: one connection per request,
//! JSON in and out, Dify error bodies turned into [`ClientError::Api`], and
//! SSE streams read incrementally through [`crate::sse`].
//!
//! Owns: connecting, request building (`Host: localhost`), response
//! classification and the optional time limits ([`UnixClient::with_timeout`]):
//! a whole JSON exchange must finish within the limit, a stream must answer
//! within it and then send each event (pings count) within it of the last.
//! Must not: know any endpoint beyond the path it is given, print anything,
//! or decide exit codes (that is `edgeaictl`'s job).

use crate::dify::StreamEvent;
use crate::sse::{self, SseError, SseReader};
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;

/// The content type of JSON bodies.
const JSON: &str = "application/json";

/// The piece of a file [`UnixClient::post_file`] reads and sends at a time.
const FILE_PIECE: usize = 64 << 10;

/// A request body read from a file piece by piece: at most `left` bytes (a
/// file that shrinks meanwhile ends the body early and the server sees a
/// short request; one that grows is cut at `left`).
struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: Vec<u8>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.left).unwrap_or(usize::MAX).min(this.buf.len());
        let mut rb = tokio::io::ReadBuf::new(&mut this.buf[..want]);
        match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut this.file), cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                this.left = 0;
                Poll::Ready(None)
            }
            Poll::Ready(Ok(())) => {
                let piece = Bytes::copy_from_slice(rb.filled());
                this.left -= piece.len() as u64;
                Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// Longest part of a non-JSON error body quoted in [`ClientError::Api`].
const MAX_QUOTED_BODY: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is missing, refuses connections or may not be opened by us.
    #[error("cannot connect to {}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    /// The daemon answered with a non-2xx status. `code` and `message` come
    /// from its Dify error body; for a body that is not one, `code` is the
    /// status reason in snake case and `message` the start of the body.
    #[error("{code}: {message}")]
    Api { status: u16, code: String, message: String },
    /// A 2xx answer whose body is not the expected JSON.
    #[error("cannot decode the answer to {request}")]
    Decode { request: String, source: serde_json::Error },
    /// The connection failed after connecting: reset, closed early, malformed HTTP.
    #[error("connection failed during {request}")]
    Io { request: String, source: hyper::Error },
    /// The path cannot be used as a request target.
    #[error("invalid request path {path:?}")]
    InvalidPath { path: String, source: http::Error },
    /// The request body could not be serialised.
    #[error("cannot encode the body of {request}")]
    Encode { request: String, source: serde_json::Error },
    /// A streaming request was answered with something other than `text/event-stream`.
    #[error("{request} answered {content_type:?} instead of an event stream")]
    NotEventStream { request: String, content_type: String },
    /// The event stream broke off or is malformed.
    #[error("event stream of {request} failed")]
    Stream { request: String, source: SseError },
    /// The daemon did not answer (or, on a stream, send its next event)
    /// within the client's time limit.
    #[error("{} did not answer {request} within {}", path.display(), seconds(*after))]
    Timeout { path: PathBuf, request: String, after: Duration },
}

/// `30s`, `1.5s`.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Client for one socket path; cheap to clone, connects per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixClient {
    path: PathBuf,
    /// `None`: wait as long as the daemon takes.
    timeout: Option<Duration>,
}

impl UnixClient {
    /// A client without a time limit.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UnixClient { path: path.into(), timeout: None }
    }

    /// The same client with a time limit: connecting plus a whole JSON
    /// exchange, connecting plus a stream's response head, and each gap
    /// between a stream's events must each stay within `timeout`, else
    /// [`ClientError::Timeout`].
    pub fn with_timeout(self, timeout: Duration) -> Self {
        UnixClient { timeout: Some(timeout), ..self }
    }

    /// The socket this client connects to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `GET path`, decoding a 2xx JSON body.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let request = describe(&Method::GET, path);
        self.limited(&request, async {
            let response = self.send(Method::GET, path, None).await?;
            decode_json(&request, response).await.map(|(_, body)| body)
        })
        .await
    }

    /// `POST path` with a JSON body, decoding a 2xx JSON answer.
    pub async fn post_json<B, T>(&self, path: &str, body: &B) -> Result<T, ClientError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        self.post_json_with_status(path, body).await.map(|(_, answer)| answer)
    }

    /// Like [`UnixClient::post_json`], also returning the 2xx status (an
    /// import answers 201 for a new version and 200 when nothing changed).
    pub async fn post_json_with_status<B, T>(&self, path: &str, body: &B) -> Result<(StatusCode, T), ClientError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let request = describe(&Method::POST, path);
        let bytes = serde_json::to_vec(body).map_err(|source| ClientError::Encode { request: request.clone(), source })?;
        self.limited(&request, async {
            let response = self.send(Method::POST, path, Some((JSON, bytes))).await?;
            decode_json(&request, response).await
        })
        .await
    }

    /// `POST path` with a ready-made body of `content_type` (a multipart
    /// form, say), decoding a 2xx JSON answer.
    pub async fn post_body<T: DeserializeOwned>(&self, path: &str, content_type: &str, body: Vec<u8>) -> Result<T, ClientError> {
        let request = describe(&Method::POST, path);
        self.limited(&request, async {
            let response = self.send(Method::POST, path, Some((content_type, body))).await?;
            decode_json(&request, response).await.map(|(_, answer)| answer)
        })
        .await
    }

    /// `POST path` with the file `file` (`len` bytes) as the body, read
    /// and sent in 64 KiB pieces, never whole in memory; decodes a 2xx
    /// JSON answer. The request says its `Content-Length`.
    pub async fn post_file<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        file: tokio::fs::File,
        len: u64,
    ) -> Result<T, ClientError> {
        let request = describe(&Method::POST, path);
        self.limited(&request, async {
            let req = Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(HOST, "localhost")
                .header(CONTENT_TYPE, content_type)
                .header(ACCEPT, JSON)
                .header(http::header::CONTENT_LENGTH, len)
                .body(FileBody { file, left: len, buf: vec![0; FILE_PIECE] })
                .map_err(|source| ClientError::InvalidPath { path: path.to_owned(), source })?;
            let response = self.exchange(request.clone(), req).await?;
            decode_json(&request, response).await.map(|(_, answer)| answer)
        })
        .await
    }

    /// `DELETE path`, expecting any 2xx (the body, if any, is discarded).
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        let request = describe(&Method::DELETE, path);
        self.limited(&request, async {
            let response = self.send(Method::DELETE, path, None).await?;
            read_body(&request, response.into_body()).await.map(drop)
        })
        .await
    }

    /// `DELETE path`, decoding a 2xx JSON answer.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let request = describe(&Method::DELETE, path);
        self.limited(&request, async {
            let response = self.send(Method::DELETE, path, None).await?;
            decode_json(&request, response).await.map(|(_, body)| body)
        })
        .await
    }

    /// `POST path` with a JSON body, answered by an SSE stream of Dify events.
    pub async fn post_stream<B>(&self, path: &str, body: &B) -> Result<EventStream, ClientError>
    where
        B: Serialize + ?Sized,
    {
        let request = describe(&Method::POST, path);
        let bytes = serde_json::to_vec(body).map_err(|source| ClientError::Encode { request: request.clone(), source })?;
        let response = self.limited(&request, self.send(Method::POST, path, Some((JSON, bytes)))).await?;
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("text/event-stream") {
            return Err(ClientError::NotEventStream { request, content_type });
        }
        let limit = self.timeout.map(|after| Limit { path: self.path.clone(), after });
        Ok(EventStream { reader: SseReader::new(response.into_body()), request, limit })
    }

    /// Runs `work` within the client's time limit, if it has one.
    async fn limited<T>(&self, request: &str, work: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
        match self.timeout {
            None => work.await,
            Some(after) => tokio::time::timeout(after, work)
                .await
                .unwrap_or_else(|_| Err(ClientError::Timeout { path: self.path.clone(), request: request.to_owned(), after })),
        }
    }

    /// Connects, sends one request (with a body of its content type, if
    /// any) and returns a 2xx response; a non-2xx one becomes [`ClientError::Api`].
    async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Response<Incoming>, ClientError> {
        let request_name = describe(&method, path);
        let mut builder = Request::builder().method(method).uri(path).header(HOST, "localhost");
        let body = match body {
            Some((JSON, bytes)) => {
                builder = builder.header(CONTENT_TYPE, JSON).header(ACCEPT, "application/json, text/event-stream");
                Full::new(Bytes::from(bytes))
            }
            Some((content_type, bytes)) => {
                builder = builder.header(CONTENT_TYPE, content_type).header(ACCEPT, JSON);
                Full::new(Bytes::from(bytes))
            }
            None => {
                builder = builder.header(ACCEPT, JSON);
                Full::new(Bytes::new())
            }
        };
        let request = builder.body(body).map_err(|source| ClientError::InvalidPath { path: path.to_owned(), source })?;
        self.exchange(request_name, request).await
    }

    /// Connects and sends `request`, returning a 2xx response; a non-2xx one
    /// becomes [`ClientError::Api`].
    async fn exchange<B>(&self, request_name: String, request: Request<B>) -> Result<Response<Incoming>, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = UnixStream::connect(&self.path).await.map_err(|source| ClientError::Connect { path: self.path.clone(), source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ClientError::Io { request: request_name.clone(), source })?;
        tokio::spawn(async move {
            // A connection error also fails the request or the body read,
            // where the caller sees it; nothing more to report here.
            let _ = connection.await;
        });
        let response = sender.send_request(request).await.map_err(|source| ClientError::Io { request: request_name.clone(), source })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = read_body(&request_name, response.into_body()).await?;
        Err(api_error(status, &body))
    }
}

impl UnixClient {
    /// `GET path` answered by a file, read chunk by chunk; the request asks
    /// for trailer fields (`TE: trailers`), which the daemon uses to say
    /// whether the file is complete ([`Download::trailer`]). The time limit
    /// applies to the head and to each gap between chunks.
    pub async fn download(&self, path: &str) -> Result<Download, ClientError> {
        let request_name = describe(&Method::GET, path);
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(HOST, "localhost")
            .header(http::header::TE, "trailers")
            .body(Full::new(Bytes::new()))
            .map_err(|source| ClientError::InvalidPath { path: path.to_owned(), source })?;
        let response = self.limited(&request_name, self.exchange(request_name.clone(), request)).await?;
        let limit = self.timeout.map(|after| Limit { path: self.path.clone(), after });
        Ok(Download { request: request_name, body: response.into_body(), limit, trailers: http::HeaderMap::new() })
    }
}

/// A file answer of [`UnixClient::download`].
#[derive(Debug)]
pub struct Download {
    request: String,
    body: Incoming,
    limit: Option<Limit>,
    trailers: http::HeaderMap,
}

impl Download {
    /// The next chunk, `Ok(None)` at the end of the body.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            let next = match &self.limit {
                None => self.body.frame().await,
                Some(Limit { path, after }) => match tokio::time::timeout(*after, self.body.frame()).await {
                    Ok(next) => next,
                    Err(_) => return Err(ClientError::Timeout { path: path.clone(), request: self.request.clone(), after: *after }),
                },
            };
            let frame = match next {
                None => return Ok(None),
                Some(Ok(frame)) => frame,
                Some(Err(source)) => return Err(ClientError::Io { request: self.request.clone(), source }),
            };
            match frame.into_data() {
                Ok(data) => return Ok(Some(data)),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.trailers.extend(trailers);
                    }
                }
            }
        }
    }

    /// A trailer field, once [`Download::next_chunk`] has returned `None`.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An SSE answer of [`UnixClient::post_stream`], read event by event.
#[derive(Debug)]
pub struct EventStream {
    request: String,
    reader: SseReader<Incoming>,
    /// The longest wait for the next event.
    limit: Option<Limit>,
}

#[derive(Debug)]
struct Limit {
    path: PathBuf,
    after: Duration,
}

/// One event of an [`EventStream`]: the raw `data:` payload and its parse.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub data: String,
    pub event: StreamEvent,
}

impl EventStream {
    /// The next event, `Ok(None)` when the daemon has ended the stream.
    /// An `error` event is returned as an event, not as an `Err`. Events
    /// without data (`event: ping`) are skipped, but restart the wait.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            let next = match &self.limit {
                None => self.reader.next_event().await,
                Some(Limit { path, after }) => match tokio::time::timeout(*after, self.reader.next_event()).await {
                    Ok(next) => next,
                    Err(_) => return Err(ClientError::Timeout { path: path.clone(), request: self.request.clone(), after: *after }),
                },
            };
            let data = match next {
                Ok(Some(sse::Event { data: Some(data), .. })) => data,
                Ok(Some(sse::Event { data: None, .. })) => continue,
                Ok(None) => return Ok(None),
                Err(source) => return Err(ClientError::Stream { request: self.request.clone(), source }),
            };
            let event = serde_json::from_str(&data).map_err(|source| ClientError::Decode { request: self.request.clone(), source })?;
            return Ok(Some(SseEvent { data, event }));
        }
    }
}

fn describe(method: &Method, path: &str) -> String {
    format!("{method} {path}")
}

async fn read_body(request: &str, body: Incoming) -> Result<Bytes, ClientError> {
    body.collect().await.map(|collected| collected.to_bytes()).map_err(|source| ClientError::Io { request: request.to_owned(), source })
}

async fn decode_json<T: DeserializeOwned>(request: &str, response: Response<Incoming>) -> Result<(StatusCode, T), ClientError> {
    let status = response.status();
    let bytes = read_body(request, response.into_body()).await?;
    let body = serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode { request: request.to_owned(), source })?;
    Ok((status, body))
}

/// Turns a non-2xx answer into [`ClientError::Api`], keeping the HTTP status
/// even when the body says otherwise or is not JSON at all.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(error) = serde_json::from_slice::<crate::admin::ErrorBody>(body) {
        return ClientError::Api { status: status.as_u16(), code: error.code, message: error.message };
    }
    let reason = status.canonical_reason().unwrap_or("unknown status");
    let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("HTTP {} {reason}", status.as_u16())
    } else {
        let quoted: String = text.chars().take(MAX_QUOTED_BODY).collect();
        let ellipsis = if quoted.len() < text.len() { "…" } else { "" };
        format!("HTTP {}: {quoted}{ellipsis}", status.as_u16())
    };
    ClientError::Api { status: status.as_u16(), code, message }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn api_error_uses_dify_body_but_http_status() {
        let err = api_error(StatusCode::NOT_FOUND, br#"{"code":"not_found","message":"no key k9","status":404}"#);
        assert!(matches!(err, ClientError::Api { status: 404, ref code, ref message }
            if code == "not_found" && message == "no key k9"));
        assert_eq!(err.to_string(), "not_found: no key k9");
    }

    #[test]
    fn api_error_from_non_json_body_keeps_status() {
        let err = api_error(StatusCode::BAD_GATEWAY, b"upstream died\n");
        assert!(
            matches!(err, ClientError::Api { status: 502, ref code, ref message }
            if code == "bad_gateway" && message == "HTTP 502: upstream died"),
            "{err:?}"
        );
        let err = api_error(StatusCode::FORBIDDEN, b"");
        assert!(
            matches!(err, ClientError::Api { status: 403, ref code, ref message }
            if code == "forbidden" && message == "HTTP 403 Forbidden"),
            "{err:?}"
        );
        let long = vec![b'x'; 1000];
        let ClientError::Api { message, .. } = api_error(StatusCode::INTERNAL_SERVER_ERROR, &long) else {
            panic!("not an Api error");
        };
        assert!(message.ends_with('…') && message.len() < 400, "{message}");
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.sock");
        let err = UnixClient::new(&path).get::<serde_json::Value>("/admin/v1/status").await.unwrap_err();
        match err {
            ClientError::Connect { path: p, source } => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn silent_daemon_is_a_timeout_naming_socket_and_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        // Connections queue in the backlog and are never answered.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let client = UnixClient::new(&path).with_timeout(Duration::from_millis(200));
        let err = client.get::<serde_json::Value>("/admin/v1/status").await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { ref request, .. } if request == "GET /admin/v1/status"), "{err:?}");
        assert_eq!(err.to_string(), format!("{} did not answer GET /admin/v1/status within 0.2s", path.display()));
        let err = client.post_stream("/v1/chat-messages", &serde_json::json!({})).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn bad_path_is_rejected_before_connecting() {
        let err = UnixClient::new("/nonexistent.sock").get::<serde_json::Value>("/a b").await.unwrap_err();
        assert!(matches!(err, ClientError::InvalidPath { ref path, .. } if path == "/a b"), "{err:?}");
    }
}
