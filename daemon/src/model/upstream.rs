//! The upstream runtime: an OpenAI-compatible `/chat/completions` endpoint
//! (vLLM, llama-server, an inference cluster) as a second model runtime, and
//! its `/embeddings` endpoint as a second embedding model.
//!
//! Owns: building the streaming request, connect and read timeouts (the
//! read timeout is the longest gap between bytes of an answer), retries with
//! exponential backoff on connect errors, 429 and 5xx — only before the
//! answer started, never after a byte of it was forwarded — honouring
//! `Retry-After` up to [`MAX_RETRY_AFTER`], a circuit breaker, caps on the
//! answer's size and line length, and turning the SSE stream into
//! [`UpstreamEvent`]s. `http://` only: this build has no TLS.
//! Must not: choose between upstream and local (the service does, through
//! `[model_map]` and `upstream.fallback_local`), or know apps and DSLs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edgeai_common::sse::SseDecoder;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::Role;
use crate::config::UpstreamSettings;

/// The longest `Retry-After` honoured; a server asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Largest answer (all bytes of the event stream) read from upstream.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Longest line of the event stream.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Most bytes of an error answer's body quoted in [`UpstreamError::Status`].
const MAX_QUOTED_BODY: usize = 300;
/// Events buffered between the reader task and the caller.
const EVENTS: usize = 64;
/// How long the end of a body may take after `[DONE]` before the
/// connection is dropped instead of reused.
const DRAIN: Duration = Duration::from_secs(1);

/// Why a call could not start. Once [`Upstream::chat`] returned its
/// receiver, failures arrive as [`UpstreamEvent::Failed`] instead.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream is configured (upstream.url is empty)")]
    NotConfigured,
    #[error("cannot reach the upstream at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("the upstream at {url} answered {code}: {body}")]
    Status { url: String, code: u16, body: String },
    #[error("the upstream circuit is open until {} after {failures} consecutive failures", humantime::format_rfc3339_seconds(*until))]
    CircuitOpen { until: SystemTime, failures: u32 },
    #[error("the upstream circuit is half-open and its trial call is still running")]
    CircuitProbing,
    #[error("the upstream at {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("the request to the upstream at {url} failed")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("the upstream at {url} answered {content_type:?} instead of an event stream")]
    NotEventStream { url: String, content_type: String },
    #[error("cannot build the request to {url}: {reason}")]
    Invalid { url: String, reason: String },
    #[error("the upstream at {url} answered something that is not embeddings: {reason}")]
    BadEmbeddings { url: String, reason: String },
}

impl UpstreamError {
    /// Whether another attempt may help: connect errors, 429 and 5xx.
    fn retryable(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. } => true,
            UpstreamError::Status { code, .. } => *code == 429 || *code >= 500,
            UpstreamError::NotConfigured
            | UpstreamError::CircuitOpen { .. }
            | UpstreamError::CircuitProbing
            | UpstreamError::Timeout { .. }
            | UpstreamError::Request { .. }
            | UpstreamError::NotEventStream { .. }
            | UpstreamError::Invalid { .. }
            | UpstreamError::BadEmbeddings { .. } => false,
        }
    }

    /// Whether it says the upstream is unwell (counts for the breaker); a
    /// 4xx other than 429 is an answer from a working upstream.
    fn is_failure(&self) -> bool {
        match self {
            UpstreamError::Status { code, .. } => *code == 429 || *code >= 500,
            UpstreamError::Unreachable { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::Request { .. }
            | UpstreamError::NotEventStream { .. }
            | UpstreamError::BadEmbeddings { .. } => true,
            UpstreamError::NotConfigured
            | UpstreamError::CircuitOpen { .. }
            | UpstreamError::CircuitProbing
            | UpstreamError::Invalid { .. } => false,
        }
    }
}

/// One chat call.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    pub model: String,
    pub messages: Vec<(Role, String)>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<u32>,
    /// Sent as `response_format: {"type": "json_schema", ...}`.
    pub json_schema: Option<Value>,
}

/// What a call streams: any number of `Text`, then one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamEvent {
    Text(String),
    Done {
        prompt_tokens: u32,
        completion_tokens: u32,
        finish_reason: String,
    },
    /// The answer broke off; text already sent stays sent.
    Failed(String),
}

/// The breaker as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamStatus {
    /// `None`: no upstream configured.
    pub url: Option<String>,
    /// `"closed"`, `"open"` or `"half-open"`.
    pub circuit: &'static str,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// While open: when a trial call will be let through.
    pub open_until: Option<SystemTime>,
}

/// The upstream runtime; cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    settings: UpstreamSettings,
    /// `{url}/chat/completions`.
    endpoint: Option<Uri>,
    /// `{url}/embeddings`.
    embeddings: Option<Uri>,
    client: Client<HttpConnector, Full<Bytes>>,
    breaker: Mutex<Breaker>,
}

impl Upstream {
    /// The runtime for `settings` (whose `url` config already checked).
    pub fn new(settings: &UpstreamSettings) -> Upstream {
        let endpoint = settings.url.as_ref().and_then(|u| format!("{u}/chat/completions").parse::<Uri>().ok());
        let embeddings = settings.url.as_ref().and_then(|u| format!("{u}/embeddings").parse::<Uri>().ok());
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let inner = Inner { settings: settings.clone(), endpoint, embeddings, client, breaker: Mutex::new(Breaker::default()) };
        Upstream { inner: Arc::new(inner) }
    }

    /// The circuit and the last failure.
    pub fn status(&self) -> UpstreamStatus {
        let b = self.inner.breaker();
        let (circuit, open_until) = match b.circuit {
            Circuit::Closed => ("closed", None),
            Circuit::Open { wall, .. } => ("open", Some(wall)),
            Circuit::HalfOpen { .. } => ("half-open", None),
        };
        UpstreamStatus {
            url: self.inner.settings.url.clone(),
            circuit,
            consecutive_failures: b.failures,
            last_error: b.last_error.clone(),
            open_until,
        }
    }

    /// Starts a streaming chat call. `Err` when it could not start (the
    /// caller may fall back to the local model); afterwards the receiver
    /// gets the answer. Dropping the receiver cancels the call.
    pub async fn chat(&self, req: UpstreamRequest) -> Result<mpsc::Receiver<UpstreamEvent>, UpstreamError> {
        let endpoint = self.inner.endpoint.clone().ok_or(UpstreamError::NotConfigured)?;
        let ticket = Ticket::admit(&self.inner)?;
        let body = Bytes::from(payload(&req).to_string());
        let (response, ticket) = self.inner.send(&endpoint, body, Answer::EventStream, ticket).await?;
        let s = &self.inner.settings;
        let (tx, rx) = mpsc::channel(EVENTS);
        let read_timeout = s.read_timeout;
        tokio::spawn(async move {
            let mut body = response.into_body();
            let outcome = forward(&mut body, &tx, read_timeout).await;
            match outcome {
                Outcome::Done(event) => {
                    ticket.success();
                    let _ = tx.send(event).await;
                    drop(tx);
                    // Reading the body to its end returns the connection to the pool.
                    let _ = tokio::time::timeout(DRAIN, drain(&mut body)).await;
                }
                Outcome::Failed(reason) => {
                    tracing::warn!(url = %endpoint, %reason, "upstream answer failed");
                    ticket.failure(&reason);
                    let _ = tx.send(UpstreamEvent::Failed(reason)).await;
                }
                // The caller went away: neither success nor failure.
                Outcome::Abandoned => drop(ticket),
            }
        });
        Ok(rx)
    }
}

impl Upstream {
    /// Embeds `texts` with the upstream's `model` through `/embeddings`
    /// (OpenAI's shape), in order, as unit vectors. Retries and the breaker
    /// work as for chat calls; an answer that is not one vector per text of
    /// one width counts as a failure.
    pub async fn embed(&self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, UpstreamError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let endpoint = self.inner.embeddings.clone().ok_or(UpstreamError::NotConfigured)?;
        let ticket = Ticket::admit(&self.inner)?;
        let body = Bytes::from(json!({"model": model, "input": texts, "encoding_format": "float"}).to_string());
        let (response, ticket) = self.inner.send(&endpoint, body, Answer::Json, ticket).await?;
        let url = endpoint.to_string();
        let read = tokio::time::timeout(
            self.inner.settings.read_timeout,
            http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES).collect(),
        )
        .await;
        let parsed = match read {
            Err(_) => Err(format!("the answer did not arrive within {:?}", self.inner.settings.read_timeout)),
            Ok(Err(e)) => Err(format!("reading the answer: {e}")),
            Ok(Ok(body)) => embeddings(&body.to_bytes(), texts.len()),
        };
        match parsed {
            Ok(vectors) => {
                ticket.success();
                Ok(vectors)
            }
            Err(reason) => {
                tracing::warn!(url = %url, %reason, "upstream embeddings failed");
                ticket.failure(&reason);
                Err(UpstreamError::BadEmbeddings { url, reason })
            }
        }
    }
}

/// OpenAI's embeddings answer: `data[]` of `{index, embedding}`, one per
/// input, all of one width; returned in input order, normalised.
fn embeddings(body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, String> {
    #[derive(Deserialize)]
    struct Body {
        data: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        index: usize,
        embedding: Vec<f32>,
    }
    let answer: Body = serde_json::from_slice(body).map_err(|e| format!("not OpenAI's embeddings JSON: {e}"))?;
    if answer.data.len() != expected {
        return Err(format!("{} vectors for {expected} inputs", answer.data.len()));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
    let width = answer.data.first().map_or(0, |i| i.embedding.len());
    for item in answer.data {
        if item.embedding.len() != width || width == 0 {
            return Err(format!("vector {} has {} dimensions, the first has {width}", item.index, item.embedding.len()));
        }
        let norm = item.embedding.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(format!("vector {} has norm {norm}", item.index));
        }
        let slot = out.get_mut(item.index).ok_or_else(|| format!("index {} is out of range", item.index))?;
        if slot.is_some() {
            return Err(format!("index {} appears twice", item.index));
        }
        *slot = Some(item.embedding.iter().map(|x| (f64::from(*x) / norm) as f32).collect());
    }
    // Every slot is filled: as many distinct in-range indexes as inputs.
    Ok(out.into_iter().flatten().collect())
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("url", &self.inner.settings.url).finish_non_exhaustive()
    }
}

impl Inner {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// POSTs with retries (connect errors, 429, 5xx; exponential backoff or
    /// the server's `Retry-After`). A final error settles the ticket; a 2xx
    /// answer comes back with it, for the caller to settle once read.
    async fn send(
        &self,
        endpoint: &Uri,
        body: Bytes,
        answer: Answer,
        ticket: Ticket,
    ) -> Result<(hyper::Response<Incoming>, Ticket), UpstreamError> {
        let s = &self.settings;
        let mut attempt = 0u32;
        loop {
            let Refused { error, retry_after } = match self.attempt(endpoint, body.clone(), answer).await {
                Ok(response) => return Ok((response, ticket)),
                Err(refused) => refused,
            };
            if attempt < s.retries && error.retryable() {
                let backoff = s.retry_backoff.saturating_mul(1 << attempt.min(16));
                let wait = retry_after.map_or(backoff, |asked| backoff.max(asked.min(MAX_RETRY_AFTER)));
                tracing::info!(url = %endpoint, attempt = attempt + 1, %error, wait_ms = wait.as_millis() as u64, "upstream call failed, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            if error.is_failure() {
                ticket.failure(&error.to_string());
            } else {
                ticket.success();
            }
            tracing::warn!(url = %endpoint, attempts = attempt + 1, %error, "upstream call failed");
            return Err(error);
        }
    }

    /// One POST: a 2xx answer of the kind asked for, or why not.
    async fn attempt(&self, endpoint: &Uri, body: Bytes, answer: Answer) -> Result<hyper::Response<Incoming>, Refused> {
        let url = endpoint.to_string();
        let s = &self.settings;
        let accept = match answer {
            Answer::EventStream => "text/event-stream",
            Answer::Json => "application/json",
        };
        let mut request = Request::post(endpoint.clone()).header(CONTENT_TYPE, "application/json").header(ACCEPT, accept);
        if let Some(key) = &s.api_key {
            request = request.header(AUTHORIZATION, format!("Bearer {}", key.expose()));
        }
        let request =
            request.body(Full::new(body)).map_err(|e| Refused::from(UpstreamError::Invalid { url: url.clone(), reason: e.to_string() }))?;
        // Connecting is bounded by the connector; the head must follow within the read timeout.
        let head_within = s.connect_timeout + s.read_timeout;
        let response = match tokio::time::timeout(head_within, self.client.request(request)).await {
            Err(_) => return Err(UpstreamError::Timeout { url, after: head_within }.into()),
            Ok(Err(source)) if source.is_connect() => return Err(UpstreamError::Unreachable { url, source }.into()),
            Ok(Err(source)) => return Err(UpstreamError::Request { url, source }.into()),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            if answer == Answer::EventStream && !content_type.starts_with("text/event-stream") {
                return Err(UpstreamError::NotEventStream { url, content_type }.into());
            }
            return Ok(response);
        }
        let retry_after = (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
            .then(|| response.headers().get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs);
        let body = excerpt(response.into_body(), s.read_timeout).await;
        Err(Refused { error: UpstreamError::Status { url, code: status.as_u16(), body }, retry_after })
    }
}

/// What a call expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A streaming chat completion.
    EventStream,
    /// One JSON document (embeddings).
    Json,
}

/// A failed attempt, with the pause the server asked for (`Retry-After`).
struct Refused {
    error: UpstreamError,
    retry_after: Option<Duration>,
}

impl From<UpstreamError> for Refused {
    fn from(error: UpstreamError) -> Self {
        Refused { error, retry_after: None }
    }
}

/// The request body: OpenAI's streaming chat completion.
fn payload(req: &UpstreamRequest) -> Value {
    let messages: Vec<Value> = req.messages.iter().map(|(role, content)| json!({"role": role.as_str(), "content": content})).collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let fields = [
        ("temperature", req.temperature.map(Value::from)),
        ("top_p", req.top_p.map(Value::from)),
        ("max_tokens", req.max_tokens.map(Value::from)),
        ("seed", req.seed.map(Value::from)),
        ("stop", (!req.stop.is_empty()).then(|| Value::from(req.stop.clone()))),
        (
            "response_format",
            req.json_schema
                .as_ref()
                .map(|schema| json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}})),
        ),
    ];
    if let Some(map) = body.as_object_mut() {
        for (key, value) in fields {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
    }
    body
}

/// The start of an error answer's body, for the message.
async fn excerpt(mut body: Incoming, read_timeout: Duration) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_QUOTED_BODY {
        match tokio::time::timeout(read_timeout, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_QUOTED_BODY) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

enum Outcome {
    Done(UpstreamEvent),
    Failed(String),
    Abandoned,
}

/// One `data:` payload of OpenAI's stream.
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// Reads what follows `[DONE]` (normally just the body's end), a little at most.
async fn drain(body: &mut Incoming) {
    let mut left = MAX_QUOTED_BODY;
    while let Some(Ok(frame)) = body.frame().await {
        let len = frame.data_ref().map_or(0, Bytes::len);
        match left.checked_sub(len) {
            Some(l) => left = l,
            None => return,
        }
    }
}

/// Reads the event stream, sending text to `tx` as it arrives.
async fn forward(body: &mut Incoming, tx: &mpsc::Sender<UpstreamEvent>, read_timeout: Duration) -> Outcome {
    let mut decoder = SseDecoder::new();
    let mut total = 0usize;
    let mut line = 0usize;
    let mut finish_reason: Option<String> = None;
    let mut usage: Option<Usage> = None;
    let done = |finish_reason: Option<String>, usage: Option<Usage>| {
        let usage = usage.unwrap_or(Usage { prompt_tokens: 0, completion_tokens: 0 });
        Outcome::Done(UpstreamEvent::Done {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            finish_reason: finish_reason.unwrap_or_else(|| "stop".to_owned()),
        })
    };
    loop {
        let next = tokio::select! {
            // The caller went away: stop reading, which closes the connection
            // and so ends the generation upstream.
            () = tx.closed() => return Outcome::Abandoned,
            next = tokio::time::timeout(read_timeout, body.frame()) => next,
        };
        let frame = match next {
            Err(_) => return Outcome::Failed(format!("the upstream sent nothing for {read_timeout:?} in the middle of its answer")),
            Ok(Some(Err(e))) => return Outcome::Failed(format!("the upstream connection failed in the middle of the answer: {e}")),
            Ok(None) => {
                return match decoder.finish() {
                    Ok(_) if finish_reason.is_some() => done(finish_reason, usage),
                    _ => {
                        Outcome::Failed("the upstream stream ended before the answer was complete (no finish_reason and no [DONE])".into())
                    }
                };
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > MAX_RESPONSE_BYTES {
            return Outcome::Failed(format!("the upstream answer is larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        // The first piece continues the line of the previous frame; the last
        // one is carried into the next.
        for (i, piece) in data.split(|&b| b == b'\n' || b == b'\r').enumerate() {
            line = if i == 0 { line + piece.len() } else { piece.len() };
            if line > MAX_LINE_BYTES {
                return Outcome::Failed(format!("the upstream sent a line longer than {MAX_LINE_BYTES} bytes"));
            }
        }
        let events = match decoder.push(&data) {
            Ok(events) => events,
            Err(e) => return Outcome::Failed(format!("malformed event stream from the upstream: {e}")),
        };
        for event in events {
            let Some(data) = event.data else { continue };
            if data.trim() == "[DONE]" {
                return done(finish_reason, usage);
            }
            let chunk: Chunk = match serde_json::from_str(&data) {
                Ok(chunk) => chunk,
                Err(e) => return Outcome::Failed(format!("malformed chunk from the upstream ({e}): {}", quote(&data))),
            };
            if let Some(error) = chunk.error {
                let message = error.get("message").and_then(Value::as_str).map_or_else(|| error.to_string(), str::to_owned);
                return Outcome::Failed(format!("the upstream reported an error: {message}"));
            }
            usage = chunk.usage.or(usage);
            for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
                if let Some(reason) = choice.finish_reason {
                    finish_reason = Some(reason);
                }
                if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                    if tx.send(UpstreamEvent::Text(text)).await.is_err() {
                        return Outcome::Abandoned;
                    }
                }
            }
        }
    }
}

/// At most [`MAX_QUOTED_BODY`] characters of `s`.
fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_BODY) {
        Some((at, _)) => format!("{:?}…", &s[..at]),
        None => format!("{s:?}"),
    }
}

// ---------------------------------------------------------------- breaker

#[derive(Debug, Default)]
struct Breaker {
    circuit: Circuit,
    /// Consecutive failed calls.
    failures: u32,
    last_error: Option<String>,
}

#[derive(Debug, Default, Clone, Copy)]
enum Circuit {
    #[default]
    Closed,
    /// Calls fail at once until `until`.
    Open { until: Instant, wall: SystemTime },
    /// One trial call may run; `probing` while it does.
    HalfOpen { probing: bool },
}

/// A call admitted by the breaker; reports its outcome once. Dropped
/// without one (the caller went away), a trial call lets the next one try.
struct Ticket {
    inner: Arc<Inner>,
    probe: bool,
    settled: bool,
}

impl Ticket {
    fn admit(inner: &Arc<Inner>) -> Result<Ticket, UpstreamError> {
        let mut b = inner.breaker();
        let probe = match b.circuit {
            Circuit::Closed => false,
            Circuit::Open { until, wall } if Instant::now() < until => {
                return Err(UpstreamError::CircuitOpen { until: wall, failures: b.failures });
            }
            Circuit::Open { .. } | Circuit::HalfOpen { probing: false } => {
                tracing::info!("upstream circuit half-open: letting one call try");
                b.circuit = Circuit::HalfOpen { probing: true };
                true
            }
            Circuit::HalfOpen { probing: true } => return Err(UpstreamError::CircuitProbing),
        };
        Ok(Ticket { inner: Arc::clone(inner), probe, settled: false })
    }

    fn success(mut self) {
        self.settled = true;
        let mut b = self.inner.breaker();
        if !matches!(b.circuit, Circuit::Closed) {
            tracing::info!("upstream circuit closed");
        }
        b.circuit = Circuit::Closed;
        b.failures = 0;
    }

    fn failure(mut self, reason: &str) {
        self.settled = true;
        let s = &self.inner.settings;
        let mut b = self.inner.breaker();
        b.failures = b.failures.saturating_add(1);
        b.last_error = Some(reason.to_owned());
        if self.probe || b.failures >= s.breaker_failures {
            let until = Instant::now() + s.breaker_cooldown;
            let wall = SystemTime::now() + s.breaker_cooldown;
            tracing::warn!(failures = b.failures, cooldown_secs = s.breaker_cooldown.as_secs(), "upstream circuit open");
            b.circuit = Circuit::Open { until, wall };
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.settled || !self.probe {
            return;
        }
        let mut b = self.inner.breaker();
        if matches!(b.circuit, Circuit::HalfOpen { probing: true }) {
            b.circuit = Circuit::HalfOpen { probing: false };
        }
    }
}

#[cfg(test)]
mod tests;
