//! The OpenAI-compatible API, authorised by the same app keys:
//! `POST /v1/chat/completions` (blocking, and streaming as OpenAI SSE chunks
//! ending in `data: [DONE]`) and `GET /v1/models`. Stateless: nothing is
//! stored. Any `model` name is accepted and answered by the local model,
//! so clients written for a cloud model work unchanged. The run's events
//! are consumed by `events`; this module is OpenAI's [`Encoder`] for them.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, Body};
use super::error::ApiError;
use super::events::{self, Collected, Encoder, StreamLimits};
use super::stall::StallFlag;
use super::ApiState;
use crate::engine::AppDefinition;
use crate::model::{ChatMessage, FinishReason, Role, SamplingParams};
use crate::service::{OpenAiRequest, Usage};

#[derive(Deserialize)]
struct ChatCompletionBody {
    model: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<Stop>,
    seed: Option<u32>,
    n: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: Content,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

fn to_messages(wire: Vec<WireMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::InvalidParam("messages must not be empty".into()));
    }
    wire.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => return Err(ApiError::InvalidParam(format!("messages[{i}].role {other:?} is not supported"))),
            };
            let content = match m.content {
                Content::Text(t) => t,
                Content::Parts(parts) => {
                    let mut s = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => s.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::InvalidParam(format!(
                                    "messages[{i}]: content part {kind:?} is not supported (text only)"
                                )))
                            }
                        }
                    }
                    s
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

pub async fn chat_completions(state: &Arc<ApiState>, app: Arc<AppDefinition>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let stall = req.extensions().get::<StallFlag>().cloned().unwrap_or_default();
    let b: ChatCompletionBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
    if b.n.is_some_and(|n| n != 1) {
        return Err(ApiError::InvalidParam("n must be 1".into()));
    }
    let d = &app.completion_params;
    let temperature = b.temperature.unwrap_or(d.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::InvalidParam(format!("temperature {temperature} is outside 0..=2")));
    }
    let top_p = b.top_p.unwrap_or(d.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::InvalidParam(format!("top_p {top_p} is outside (0, 1]")));
    }
    let max_tokens = b.max_completion_tokens.or(b.max_tokens).unwrap_or(d.max_tokens);
    if max_tokens == 0 {
        return Err(ApiError::InvalidParam("max_tokens must be at least 1".into()));
    }
    let stop = match b.stop {
        None => d.stop.clone(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 {
        return Err(ApiError::InvalidParam("at most 4 stop sequences".into()));
    }
    let params = SamplingParams { temperature, top_p, top_k: d.top_k, max_tokens, seed: b.seed.or(d.seed), stop, grammar: None };
    let run = state.service.start_openai(&app, OpenAiRequest { messages: to_messages(b.messages)?, params }).await?;
    let _ = b.model;
    let enc = OpenAiEncoder { id: format!("chatcmpl-{}", run.task_id), created: run.created_at, model: state.model_name.clone() };
    if b.stream {
        let limits = StreamLimits {
            ping: state.limits.sse_ping_interval,
            deadline: state.limits.request_timeout,
            slow_client: state.limits.slow_client_timeout,
        };
        Ok(events::stream(events::Encoded { run, enc }, limits, stall))
    } else {
        events::blocking(run, enc).await
    }
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
    }
}

/// OpenAI's wire shapes of a run: `chat.completion`, or
/// `chat.completion.chunk`s ending in `data: [DONE]`.
struct OpenAiEncoder {
    id: String,
    created: i64,
    model: String,
}

impl OpenAiEncoder {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> bytes::Bytes {
        body::sse_data(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    }
}

impl Encoder for OpenAiEncoder {
    fn open(&self) -> Vec<bytes::Bytes> {
        vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
    }

    fn text(&self, text: &str) -> bytes::Bytes {
        self.chunk(json!({"content": text}), None)
    }

    fn end(&self, _usage: &Usage, finish: FinishReason) -> bytes::Bytes {
        self.chunk(json!({}), Some(finish_str(finish)))
    }

    fn error(&self, e: &ApiError) -> bytes::Bytes {
        let m = e.mapped();
        let kind = if m.status.is_server_error() { "server_error" } else { "invalid_request_error" };
        body::sse_data(&json!({"error": {"message": m.message, "type": kind, "code": m.code}}))
    }

    fn close(&self) -> Vec<bytes::Bytes> {
        vec![bytes::Bytes::from_static(b"data: [DONE]\n\n")]
    }

    fn blocking(&self, c: Collected) -> Response<Body> {
        let u = &c.usage;
        body::json(
            StatusCode::OK,
            &json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": c.answer}, "finish_reason": finish_str(c.finish)}],
                "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                          "total_tokens": u.prompt_tokens + u.completion_tokens},
            }),
        )
    }
}

pub fn models(state: &ApiState) -> Response<Body> {
    let created = 0;
    body::json(
        StatusCode::OK,
        &json!({"object": "list", "data": [{"id": state.model_name, "object": "model", "created": created, "owned_by": "edgeai"}]}),
    )
}
