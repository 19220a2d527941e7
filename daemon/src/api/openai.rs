//! The OpenAI-compatible API, authorised by the same app keys:
//! `POST /v1/chat/completions` (blocking, and streaming as OpenAI SSE chunks
//! ending in `data: [DONE]`) and `GET /v1/models`. Stateless: nothing is
//! stored. Any `model` name is accepted and answered by the local model,
//! so clients written for a cloud model work unchanged.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, Body};
use super::error::ApiError;
use super::ApiState;
use crate::engine::AppDefinition;
use crate::model::{ChatMessage, FinishReason, Role, SamplingParams};
use crate::service::{OpenAiRequest, Run, RunEvent};

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
    let params = SamplingParams { temperature, top_p, top_k: d.top_k, max_tokens, seed: b.seed.or(d.seed), stop };
    let run = state.service.start_openai(&app, OpenAiRequest { messages: to_messages(b.messages)?, params }).await?;
    let model = state.model_name.clone();
    let _ = b.model;
    if b.stream {
        Ok(stream(state, model, run))
    } else {
        blocking(model, run).await
    }
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
    }
}

async fn blocking(model: String, mut run: Run) -> Result<Response<Body>, ApiError> {
    let mut text = String::new();
    while let Some(ev) = run.events.recv().await {
        match ev {
            RunEvent::Text(t) => text.push_str(&t),
            RunEvent::End { usage, finish } => {
                return Ok(body::json(
                    StatusCode::OK,
                    &json!({
                        "id": format!("chatcmpl-{}", run.task_id), "object": "chat.completion", "created": run.created_at, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_str(finish)}],
                        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                                  "total_tokens": usage.prompt_tokens + usage.completion_tokens},
                    }),
                ));
            }
            RunEvent::Failed { message } => return Err(crate::model::ModelError::Inference(message).into()),
        }
    }
    Err(crate::model::ModelError::ThreadGone.into())
}

fn chunk(run_id: &str, created: i64, model: &str, delta: Value, finish: Option<&str>) -> bytes::Bytes {
    body::sse_data(&json!({
        "id": format!("chatcmpl-{run_id}"), "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }))
}

fn stream(state: &Arc<ApiState>, model: String, mut run: Run) -> Response<Body> {
    let (tx, resp) = body::sse_response();
    let deadline = tokio::time::Instant::now() + state.limits.request_timeout;
    tokio::spawn(async move {
        let (id, created) = (run.task_id.clone(), run.created_at);
        if tx.send(chunk(&id, created, &model, json!({"role": "assistant", "content": ""}), None)).await.is_err() {
            return;
        }
        loop {
            let c = tokio::select! {
                ev = run.events.recv() => match ev {
                    Some(RunEvent::Text(t)) => chunk(&id, created, &model, json!({"content": t}), None),
                    Some(RunEvent::End { finish, .. }) => {
                        let _ = tx.send(chunk(&id, created, &model, json!({}), Some(finish_str(finish)))).await;
                        break;
                    }
                    Some(RunEvent::Failed { message }) => {
                        let _ = tx.send(body::sse_data(&json!({"error": {"message": message, "type": "server_error", "code": "completion_request_error"}}))).await;
                        break;
                    }
                    None => break,
                },
                // The client is gone: dropping the run's events cancels it.
                _ = tx.closed() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = tx.send(body::sse_data(&json!({"error": {"message": "the stream exceeded server.request_timeout_secs", "type": "server_error", "code": "request_timeout"}}))).await;
                    break;
                }
            };
            if tx.send(c).await.is_err() {
                return;
            }
        }
        let _ = tx.send(bytes::Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    resp
}

pub fn models(state: &ApiState) -> Response<Body> {
    let created = 0;
    body::json(
        StatusCode::OK,
        &json!({"object": "list", "data": [{"id": state.model_name, "object": "model", "created": created, "owned_by": "edgeai"}]}),
    )
}
