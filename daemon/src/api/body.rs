//! Response bodies (whole JSON, or a stream fed by a channel for SSE), the
//! bounded request-body reader, and small response builders.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::ApiError;

pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A body whose chunks arrive on a bounded channel; ends when the sender is
/// dropped. When the client goes away hyper drops it, which closes the
/// channel and tells the producer.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// An SSE response and the sender that feeds it.
pub fn sse_response() -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel(32);
    let mut r = Response::new(ChannelBody { rx }.boxed());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (tx, r)
}

/// `data: {json}\n\n`
pub fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

pub fn json(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A whole text body of the given content type.
pub fn text(status: StatusCode, content_type: &'static str, text: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text)).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = status;
    r
}

/// Dify's error body `{code, message, status}`.
pub fn dify_error(e: &ApiError) -> Response<Body> {
    let m = e.mapped();
    let mut r = json(m.status, &serde_json::json!({"code": m.code, "message": m.message, "status": m.status.as_u16()}));
    add_retry_after(&mut r, m.retry_after);
    r
}

/// OpenAI's error body `{"error": {message, type, code}}`.
pub fn openai_error(e: &ApiError) -> Response<Body> {
    let m = e.mapped();
    let kind = if m.status.is_server_error() { "server_error" } else { "invalid_request_error" };
    let mut r = json(m.status, &serde_json::json!({"error": {"message": m.message, "type": kind, "code": m.code, "param": null}}));
    add_retry_after(&mut r, m.retry_after);
    r
}

/// Retry-After when the error has one; `WWW-Authenticate` on 401, as Dify.
fn add_retry_after(r: &mut Response<Body>, secs: Option<u32>) {
    if let Some(s) = secs {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if r.status() == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"api\""));
    }
}

/// Reads the whole request body up to `limit` bytes and parses it as a JSON
/// value: 413 over the limit, 400 `bad_request` for bytes that are not UTF-8
/// or not JSON. Type checks against the request shape come after, as 400
/// `invalid_param`.
pub async fn read_json(body: Incoming, limit: usize) -> Result<Value, ApiError> {
    // A Content-Length over the limit is refused before the body is read:
    // waiting for it would hold the connection until request_timeout_secs.
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let bytes = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::BodyRead(e.to_string())
        }
    })?;
    parse_json(&bytes.to_bytes())
}

/// Parses a whole request body as a JSON value: 400 `bad_request` for bytes
/// that are not UTF-8, for an empty body and for anything that is not JSON.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(ApiError::BadJson("the body is empty".into()));
    }
    serde_json::from_str(text).map_err(|e| ApiError::BadJson(e.to_string()))
}

/// Turns a JSON value into a request type; type errors are `invalid_param`.
pub fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::InvalidParam(e.to_string()))
}

/// A file download whose chunks arrive on a bounded channel, ended by
/// trailer fields that say whether it is complete: a body cut short by
/// an error cannot be told from a whole one otherwise. The client must
/// send `TE: trailers` (hyper sends no trailers without it) and the
/// response names the fields in its `Trailer` header.
pub struct DownloadBody {
    rx: mpsc::Receiver<Bytes>,
    trailers: Option<tokio::sync::oneshot::Receiver<http::HeaderMap>>,
}

impl HttpBody for DownloadBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = std::task::ready!(self.rx.poll_recv(cx)) {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(trailers) = self.trailers.as_mut() else { return Poll::Ready(None) };
        let fields = std::task::ready!(std::future::Future::poll(Pin::new(trailers), cx));
        self.trailers = None;
        // A producer that vanished without its trailers sends none: incomplete.
        Poll::Ready(fields.ok().map(|f| Ok(Frame::trailers(f))))
    }
}

/// A streamed download of `content_type` with the trailer fields `trailer`
/// (comma-separated names), the sender of its chunks and the sender of its
/// trailers (send them after the last chunk; dropping both ends the body).
pub fn download_response(
    content_type: &'static str,
    trailer: &'static str,
) -> (mpsc::Sender<Bytes>, tokio::sync::oneshot::Sender<http::HeaderMap>, Response<Body>) {
    let (tx, rx) = mpsc::channel(32);
    let (trailers_tx, trailers) = tokio::sync::oneshot::channel();
    let mut r = Response::new(DownloadBody { rx, trailers: Some(trailers) }.boxed());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::TRAILER, HeaderValue::from_static(trailer));
    (tx, trailers_tx, r)
}
