//! A minimal HTTP/1 client for the bench: GET a status, POST a Dify
//! blocking chat message (did the response cache answer it?), and POST a
//! Dify streaming chat message (or an OpenAI streaming chat completion)
//! while timestamping every SSE event as its bytes arrive. One connection per request (TCP_NODELAY), no pooling.
//! Owns the client-side timing; knows nothing of how the daemon is started.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use edgeai_common::sse::{Event, SseDecoder};
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1 connection to `addr` (TCP_NODELAY).
pub(super) async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// GET `path`; the status code.
pub async fn get_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut sender = connect(addr).await?;
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .context("building the request")?;
    let resp = sender.send_request(req).await.with_context(|| format!("GET {path}"))?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// Client-side view of one streaming answer.
#[derive(Debug, Clone)]
pub struct StreamRun {
    /// Just before the request was written.
    pub sent: Instant,
    /// Arrival of the first and the last `message` event.
    pub first_message: Instant,
    pub last_message: Instant,
    /// Arrival of `message_end`.
    pub end: Instant,
    pub message_events: usize,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub answer: String,
}

impl StreamRun {
    pub fn ttft_s(&self) -> f64 {
        (self.first_message - self.sent).as_secs_f64()
    }
    pub fn e2e_s(&self) -> f64 {
        (self.end - self.sent).as_secs_f64()
    }
    /// `(completion_tokens - 1)` decode steps between the first and the last
    /// `message` event; `None` with fewer than two tokens.
    pub fn gen_tok_s(&self) -> Option<f64> {
        let span = (self.last_message - self.first_message).as_secs_f64();
        (self.completion_tokens >= 2 && span > 0.0).then(|| (self.completion_tokens - 1) as f64 / span)
    }
}

#[derive(Default)]
struct Seen {
    first: Option<Instant>,
    last: Option<Instant>,
    end: Option<Instant>,
    n: usize,
    answer: String,
    usage: Option<Value>,
}

/// Applies one SSE event (decoded by the shared `edgeai_common::sse`
/// decoder) whose last bytes arrived at `at`.
fn on_event(ev: &Event, at: Instant, seen: &mut Seen) -> Result<()> {
    let Some(data) = ev.data.as_deref() else { return Ok(()) };
    let v: Value = serde_json::from_str(data).with_context(|| format!("SSE data is not JSON: {data}"))?;
    match v.get("event").and_then(Value::as_str) {
        Some("message") => {
            seen.first.get_or_insert(at);
            seen.last = Some(at);
            seen.n += 1;
            seen.answer.push_str(v.get("answer").and_then(Value::as_str).unwrap_or_default());
        }
        Some("message_end") => {
            seen.end = Some(at);
            seen.usage = v.pointer("/metadata/usage").cloned();
        }
        Some("error") => bail!("error event: {v}"),
        _ => {}
    }
    Ok(())
}

/// `POST /v1/chat-messages` of a new conversation (no `conversation_id`).
fn chat_request(addr: SocketAddr, key: &str, user: &str, query: &str, mode: &str) -> Result<Request<Full<Bytes>>> {
    let body = json!({"inputs": {}, "query": query, "response_mode": mode, "user": user}).to_string();
    Request::builder()
        .method(Method::POST)
        .uri("/v1/chat-messages")
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .context("building the request")
}

/// POSTs a streaming chat message (a new conversation each time) and reads
/// the stream up to `message_end`.
pub async fn chat_stream(addr: SocketAddr, key: &str, user: &str, query: &str) -> Result<StreamRun> {
    let mut sender = connect(addr).await?;
    let req = chat_request(addr, key, user, query, "streaming")?;
    let sent = Instant::now();
    let resp = sender.send_request(req).await.context("POST /v1/chat-messages")?;
    let status = resp.status();
    let mut incoming = resp.into_body();
    if !status.is_success() {
        let text = incoming.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).unwrap_or_default();
        bail!("POST /v1/chat-messages answered {status}: {text}");
    }
    let mut decoder = SseDecoder::new();
    let mut seen = Seen::default();
    while seen.end.is_none() {
        let Some(frame) = incoming.frame().await else { break };
        let at = Instant::now();
        let frame = frame.context("reading the SSE stream")?;
        let Ok(data) = frame.into_data() else { continue };
        for ev in decoder.push(&data).context("decoding the SSE stream")? {
            on_event(&ev, at, &mut seen)?;
        }
    }
    let end = seen.end.ok_or_else(|| anyhow!("the stream ended without message_end"))?;
    let usage = seen.usage.ok_or_else(|| anyhow!("message_end without metadata.usage"))?;
    let count = |k: &str| usage.get(k).and_then(Value::as_u64).ok_or_else(|| anyhow!("metadata.usage.{k} missing: {usage}"));
    let (first, last) = match (seen.first, seen.last) {
        (Some(f), Some(l)) => (f, l),
        _ => bail!("the stream had no message event"),
    };
    Ok(StreamRun {
        sent,
        first_message: first,
        last_message: last,
        end,
        message_events: seen.n,
        prompt_tokens: count("prompt_tokens")?,
        completion_tokens: count("completion_tokens")?,
        answer: seen.answer,
    })
}

/// Client-side view of one blocking chat message.
#[derive(Debug, Clone)]
pub struct BlockingRun {
    /// Just before the request was written.
    pub sent: Instant,
    /// When the whole answer had arrived.
    pub done: Instant,
    /// `metadata.cache.hit`: the response cache answered (absent on a miss).
    pub cache_hit: bool,
}

impl BlockingRun {
    pub fn latency_s(&self) -> f64 {
        (self.done - self.sent).as_secs_f64()
    }
}

/// POSTs a blocking chat message (a new conversation each time) and reads
/// whether the response cache answered it.
pub async fn chat_blocking(addr: SocketAddr, key: &str, user: &str, query: &str) -> Result<BlockingRun> {
    let mut sender = connect(addr).await?;
    let req = chat_request(addr, key, user, query, "blocking")?;
    let sent = Instant::now();
    let resp = sender.send_request(req).await.context("POST /v1/chat-messages")?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await.context("reading the answer")?.to_bytes();
    let done = Instant::now();
    if !status.is_success() {
        bail!("POST /v1/chat-messages answered {status}: {}", String::from_utf8_lossy(&bytes));
    }
    let v: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("the answer is not JSON: {}", String::from_utf8_lossy(&bytes)))?;
    Ok(BlockingRun { sent, done, cache_hit: cache_hit(&v)? })
}

/// `metadata.cache.hit` of a blocking answer: `false` without
/// `metadata.cache` (a miss); an answer without `metadata` is an error.
fn cache_hit(answer: &Value) -> Result<bool> {
    let meta = answer.get("metadata").ok_or_else(|| anyhow!("an answer without metadata: {answer}"))?;
    match meta.get("cache") {
        None => Ok(false),
        Some(c) => c.get("hit").and_then(Value::as_bool).ok_or_else(|| anyhow!("metadata.cache without a boolean hit: {c}")),
    }
}

/// Client-side view of one OpenAI streaming chat completion.
#[derive(Debug, Clone)]
pub struct ChunkRun {
    /// Just before the request was written.
    pub sent: Instant,
    /// Arrival of every chunk with text in its delta.
    pub texts: Vec<Instant>,
}

impl ChunkRun {
    /// Seconds from sending to the first text; `None` without text.
    pub fn ttft_s(&self) -> Option<f64> {
        self.texts.first().map(|t| (*t - self.sent).as_secs_f64())
    }
}

/// POSTs `body` (stream forced on) to `/v1/chat/completions` and reads the
/// chunks up to `[DONE]`, timestamping those that carry text. `seen` gets
/// each timestamp as it arrives, so a caller that aborts the task still
/// knows how far the stream got.
pub async fn openai_stream(
    addr: SocketAddr,
    key: &str,
    mut body: Value,
    seen: Option<std::sync::Arc<std::sync::Mutex<Vec<Instant>>>>,
) -> Result<ChunkRun> {
    body["stream"] = json!(true);
    let mut sender = connect(addr).await?;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .context("building the request")?;
    let sent = Instant::now();
    let resp = sender.send_request(req).await.context("POST /v1/chat/completions")?;
    let status = resp.status();
    let mut incoming = resp.into_body();
    if !status.is_success() {
        let text = incoming.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).unwrap_or_default();
        bail!("POST /v1/chat/completions answered {status}: {text}");
    }
    let mut decoder = SseDecoder::new();
    let mut texts = Vec::new();
    loop {
        let Some(frame) = incoming.frame().await else { bail!("the stream ended without [DONE]") };
        let at = Instant::now();
        let Ok(data) = frame.context("reading the SSE stream")?.into_data() else { continue };
        for ev in decoder.push(&data).context("decoding the SSE stream")? {
            let Some(data) = ev.data.as_deref() else { continue };
            if data == "[DONE]" {
                return Ok(ChunkRun { sent, texts });
            }
            let v: Value = serde_json::from_str(data).with_context(|| format!("SSE data is not JSON: {data}"))?;
            if v.get("error").is_some() {
                bail!("error chunk: {v}");
            }
            if v.pointer("/choices/0/delta/content").and_then(Value::as_str).is_some_and(|t| !t.is_empty()) {
                texts.push(at);
                if let Some(seen) = &seen {
                    seen.lock().map_err(|_| anyhow!("poisoned"))?.push(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: &str) -> Event {
        Event { event: None, data: Some(json.to_owned()) }
    }

    #[test]
    fn messages_are_counted_and_pings_ignored() {
        let at = Instant::now();
        let mut seen = Seen::default();
        let mut decoder = SseDecoder::new();
        let events = decoder
            .push(b"data: {\"event\": \"message\", \"answer\": \"Hel\"}\n\nevent: ping\n\ndata: {\"event\": \"mess")
            .expect("decoded");
        for ev in &events {
            on_event(ev, at, &mut seen).expect("valid events");
        }
        assert_eq!((seen.n, seen.answer.as_str()), (1, "Hel"));
        let end = data(r#"{"event": "message_end", "metadata": {"usage": {"prompt_tokens": 5, "completion_tokens": 2}}}"#);
        on_event(&end, at, &mut seen).expect("message_end");
        assert!(seen.end.is_some());
        assert_eq!(seen.usage.and_then(|u| u["completion_tokens"].as_u64()), Some(2));
    }

    #[test]
    fn error_events_and_bad_data_are_errors() {
        let at = Instant::now();
        let mut seen = Seen::default();
        let err = on_event(&data(r#"{"event": "error", "code": "completion_request_error"}"#), at, &mut seen).unwrap_err();
        assert!(err.to_string().contains("completion_request_error"), "{err}");
        assert!(on_event(&data("not json"), at, &mut seen).is_err());
    }

    #[test]
    fn cache_marks_are_read_and_bad_ones_named() {
        let hit = json!({"answer": "a", "metadata": {"usage": {}, "cache": {"hit": true, "kind": "exact"}}});
        assert!(cache_hit(&hit).expect("a hit"));
        assert!(!cache_hit(&json!({"answer": "a", "metadata": {"usage": {}}})).expect("a miss"));
        assert!(cache_hit(&json!({"answer": "a"})).unwrap_err().to_string().contains("without metadata"));
        let odd = cache_hit(&json!({"metadata": {"cache": {"hit": "yes"}}})).unwrap_err();
        assert!(odd.to_string().contains("without a boolean hit"), "{odd}");
    }

    #[test]
    fn rates_need_two_tokens() {
        let t0 = Instant::now();
        let run = |tokens: u64, span_ms: u64| StreamRun {
            sent: t0,
            first_message: t0 + std::time::Duration::from_millis(50),
            last_message: t0 + std::time::Duration::from_millis(50 + span_ms),
            end: t0 + std::time::Duration::from_millis(60 + span_ms),
            message_events: tokens as usize,
            prompt_tokens: 10,
            completion_tokens: tokens,
            answer: String::new(),
        };
        let r = run(11, 100).gen_tok_s().expect("rate");
        assert!((r - 100.0).abs() < 1e-6, "{r}");
        assert_eq!(run(1, 0).gen_tok_s(), None);
        assert!((run(11, 100).ttft_s() - 0.05).abs() < 1e-9);
    }
}
