//! Dify's Service API (`/v1/...` with an app key): chat and completion
//! messages in blocking and streaming mode with Dify's SSE events, stop,
//! conversations, messages, feedback, and the app's parameters/info/meta.
//! Field names and event order follow Dify's public API reference.

use std::collections::HashMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::body::{self, Body};
use super::error::ApiError;
use super::ApiState;
use crate::engine::{AppDefinition, AppMode};
use crate::model::FinishReason;
use crate::service::{AppRequest, Run, RunEvent, Usage};
use crate::store::{Conversation, ConversationSort, Message, Rating};

/// Whether `rest` (the path after `/v1/`) is one of the Dify routes, so an
/// unknown path is a 404 before any key is checked.
pub fn is_route(rest: &[String]) -> bool {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    matches!(
        r.as_slice(),
        ["chat-messages"]
            | ["completion-messages"]
            | ["chat-messages", _, "stop"]
            | ["completion-messages", _, "stop"]
            | ["conversations"]
            | ["conversations", _]
            | ["conversations", _, "name"]
            | ["messages"]
            | ["messages", _, "feedbacks"]
            | ["parameters"]
            | ["info"]
            | ["meta"]
    )
}

pub async fn route(
    state: &Arc<ApiState>,
    app: Arc<AppDefinition>,
    rest: &[String],
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = req.method().clone();
    match (r.as_slice(), &m) {
        (["chat-messages"], &Method::POST) => send_message(state, app, req, AppMode::Chat).await,
        (["completion-messages"], &Method::POST) => send_message(state, app, req, AppMode::Completion).await,
        (["chat-messages", task, "stop"] | ["completion-messages", task, "stop"], &Method::POST) => {
            let b: UserBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let user = required_user(b.user)?;
            state.service.stop(&app.id, &user, task);
            Ok(body::json(StatusCode::OK, &json!({"result": "success"})))
        }
        (["conversations"], &Method::GET) => list_conversations(state, &app, query(&req)).await,
        (["conversations", id], &Method::DELETE) => {
            let b: UserBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let user = required_user(b.user)?;
            state.service.delete_conversation(&app, &user, id).await?;
            Ok(body::empty(StatusCode::NO_CONTENT))
        }
        (["conversations", id, "name"], &Method::POST) => {
            let b: RenameBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            rename(state, &app, id, b).await
        }
        (["messages"], &Method::GET) => list_messages(state, &app, query(&req)).await,
        (["messages", id, "feedbacks"], &Method::POST) => {
            let b: FeedbackBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let user = required_user(b.user)?;
            let rating = match b.rating.as_deref() {
                None | Some("null") => None,
                Some("like") => Some(Rating::Like),
                Some("dislike") => Some(Rating::Dislike),
                Some(other) => return Err(ApiError::InvalidParam(format!("rating must be like, dislike or null, not {other:?}"))),
            };
            state.service.feedback(&app, &user, id, rating, b.content.as_deref()).await?;
            Ok(body::json(StatusCode::OK, &json!({"result": "success"})))
        }
        (["parameters"], &Method::GET) => Ok(body::json(StatusCode::OK, &parameters(&app))),
        (["info"], &Method::GET) => Ok(body::json(
            StatusCode::OK,
            &json!({"name": app.name, "description": app.description, "tags": [], "mode": app.mode.as_str(), "author_name": ""}),
        )),
        (["meta"], &Method::GET) => Ok(body::json(StatusCode::OK, &json!({"tool_icons": {}}))),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Query-string parameters (percent-decoded; the last of a repeated key wins).
fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

#[derive(Deserialize)]
struct UserBody {
    user: Option<String>,
}

#[derive(Deserialize)]
struct RenameBody {
    name: Option<String>,
    #[serde(default)]
    auto_generate: bool,
    user: Option<String>,
}

#[derive(Deserialize)]
struct FeedbackBody {
    rating: Option<String>,
    user: Option<String>,
    content: Option<String>,
}

/// The body of chat-messages and completion-messages. Unknown fields are
/// ignored, as Dify does.
#[derive(Deserialize)]
struct MessageBody {
    query: Option<String>,
    inputs: Option<Map<String, Value>>,
    response_mode: Option<String>,
    user: Option<String>,
    conversation_id: Option<String>,
    files: Option<Vec<Value>>,
}

fn required_user(u: Option<String>) -> Result<String, ApiError> {
    match u {
        Some(u) if !u.trim().is_empty() => Ok(u),
        _ => Err(ApiError::InvalidParam("user is required".into())),
    }
}

async fn send_message(
    state: &Arc<ApiState>,
    app: Arc<AppDefinition>,
    req: Request<Incoming>,
    route: AppMode,
) -> Result<Response<Body>, ApiError> {
    if app.mode != route {
        return Err(ApiError::WrongAppMode { chat_route: route == AppMode::Chat });
    }
    let b: MessageBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
    let user = required_user(b.user)?;
    let streaming = match b.response_mode.as_deref() {
        None | Some("blocking") => false,
        Some("streaming") => true,
        Some(other) => return Err(ApiError::InvalidParam(format!("response_mode must be blocking or streaming, not {other:?}"))),
    };
    if b.files.as_ref().is_some_and(|f| !f.is_empty()) {
        return Err(ApiError::InvalidParam("file upload is not enabled for this app".into()));
    }
    let query = match (b.query, route) {
        (Some(q), _) => q,
        (None, AppMode::Chat) => return Err(ApiError::InvalidParam("query is required".into())),
        (None, AppMode::Completion) => String::new(),
    };
    let conversation_id = b.conversation_id.filter(|c| !c.is_empty());
    if let Some(c) = &conversation_id {
        if uuid::Uuid::parse_str(c).is_err() {
            return Err(ApiError::InvalidParam(format!("conversation_id {c:?} is not a valid uuid")));
        }
    }
    let req = AppRequest { user, query, inputs: b.inputs.unwrap_or_default(), conversation_id };
    let run = state.service.start(Arc::clone(&app), req).await?;
    if streaming {
        Ok(stream(state, app.mode, run))
    } else {
        blocking(app.mode, run).await
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens, "prompt_unit_price": "0", "prompt_price_unit": "0", "prompt_price": "0",
        "completion_tokens": u.completion_tokens, "completion_unit_price": "0", "completion_price_unit": "0", "completion_price": "0",
        "total_tokens": u.prompt_tokens + u.completion_tokens, "total_price": "0", "currency": "USD",
        "latency": u.latency.as_secs_f64(),
    })
}

/// Fields every event of a run carries.
fn base(event: &str, mode: AppMode, run: &RunIds) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("event".into(), json!(event));
    m.insert("task_id".into(), json!(run.task_id));
    m.insert("id".into(), json!(run.message_id));
    m.insert("message_id".into(), json!(run.message_id));
    if mode == AppMode::Chat {
        m.insert("conversation_id".into(), json!(run.conversation_id));
    }
    m.insert("created_at".into(), json!(run.created_at));
    m
}

struct RunIds {
    task_id: String,
    message_id: String,
    conversation_id: Option<String>,
    created_at: i64,
}

impl RunIds {
    fn of(run: &Run) -> Self {
        RunIds {
            task_id: run.task_id.clone(),
            message_id: run.message_id.clone(),
            conversation_id: run.conversation_id.clone(),
            created_at: run.created_at,
        }
    }
}

async fn blocking(mode: AppMode, mut run: Run) -> Result<Response<Body>, ApiError> {
    let ids = RunIds::of(&run);
    let mut answer = String::new();
    while let Some(ev) = run.events.recv().await {
        match ev {
            RunEvent::Text(t) => answer.push_str(&t),
            RunEvent::End { usage, .. } => {
                let mut m = base("message", mode, &ids);
                m.insert("mode".into(), json!(mode.as_str()));
                m.insert("answer".into(), json!(answer));
                m.insert("metadata".into(), json!({"usage": usage_json(&usage), "retriever_resources": []}));
                return Ok(body::json(StatusCode::OK, &Value::Object(m)));
            }
            RunEvent::Failed { message } => return Err(crate::model::ModelError::Inference(message).into()),
        }
    }
    Err(crate::model::ModelError::ThreadGone.into())
}

/// Streams Dify's events: `message` per piece of text, then `message_end`
/// (or `error`), with `event: ping` keep-alives. If the client goes away the
/// run's receiver is dropped, which stops generation.
fn stream(state: &Arc<ApiState>, mode: AppMode, mut run: Run) -> Response<Body> {
    let (tx, resp) = body::sse_response();
    let ids = RunIds::of(&run);
    let ping_every = state.limits.sse_ping_interval;
    let deadline = tokio::time::Instant::now() + state.limits.request_timeout;
    tokio::spawn(async move {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        loop {
            let chunk = tokio::select! {
                ev = run.events.recv() => match ev {
                    Some(RunEvent::Text(t)) => {
                        let mut m = base("message", mode, &ids);
                        m.insert("answer".into(), json!(t));
                        body::sse_data(&Value::Object(m))
                    }
                    Some(RunEvent::End { usage, finish }) => {
                        let mut m = base("message_end", mode, &ids);
                        m.insert("metadata".into(), json!({"usage": usage_json(&usage), "retriever_resources": []}));
                        m.insert("files".into(), Value::Null);
                        if finish == FinishReason::Cancelled {
                            tracing::debug!(task_id = %ids.task_id, "stream ended by stop");
                        }
                        let _ = tx.send(body::sse_data(&Value::Object(m))).await;
                        return;
                    }
                    Some(RunEvent::Failed { message }) => {
                        let _ = tx.send(error_event(&ids, 500, "completion_request_error", &message)).await;
                        return;
                    }
                    None => return,
                },
                _ = ping.tick() => bytes::Bytes::from_static(b"event: ping\n\n"),
                // The client is gone (hyper dropped the body): dropping the
                // run's events cancels it.
                _ = tx.closed() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = tx.send(error_event(&ids, 504, "request_timeout", "the stream exceeded server.request_timeout_secs")).await;
                    return;
                }
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    resp
}

fn error_event(ids: &RunIds, status: u16, code: &str, message: &str) -> bytes::Bytes {
    body::sse_data(
        &json!({"event": "error", "task_id": ids.task_id, "message_id": ids.message_id, "status": status, "code": code, "message": message}),
    )
}

fn parse_limit(q: &HashMap<String, String>, default: u32) -> Result<u32, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(s) => match s.parse::<u32>() {
            Ok(n @ 1..=100) => Ok(n),
            _ => Err(ApiError::InvalidParam(format!("limit must be an integer from 1 to 100, not {s:?}"))),
        },
    }
}

fn conversation_json(c: &Conversation, app: &AppDefinition) -> Value {
    let inputs: Value = serde_json::from_str(&c.inputs_json).unwrap_or_else(|_| json!({}));
    json!({"id": c.id, "name": c.name, "inputs": inputs, "status": "normal", "introduction": app.opening_statement,
           "created_at": c.created_at, "updated_at": c.updated_at})
}

async fn list_conversations(state: &ApiState, app: &AppDefinition, q: HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let user = required_user(q.get("user").cloned())?;
    let limit = parse_limit(&q, 20)?;
    let sort = match q.get("sort_by") {
        None => ConversationSort::UpdatedDesc,
        Some(s) => s.parse::<ConversationSort>().map_err(|_| {
            ApiError::InvalidParam(format!("sort_by must be one of created_at, -created_at, updated_at, -updated_at, not {s:?}"))
        })?,
    };
    let last_id = q.get("last_id").filter(|s| !s.is_empty());
    let (items, has_more) = state.service.conversations(app, &user, last_id.map(String::as_str), limit, sort).await?;
    let data: Vec<Value> = items.iter().map(|c| conversation_json(c, app)).collect();
    Ok(body::json(StatusCode::OK, &json!({"limit": limit, "has_more": has_more, "data": data})))
}

async fn rename(state: &ApiState, app: &AppDefinition, id: &str, b: RenameBody) -> Result<Response<Body>, ApiError> {
    let user = required_user(b.user)?;
    let name = if b.auto_generate {
        None
    } else {
        match b.name.map(|n| n.trim().to_owned()) {
            Some(n) if !n.is_empty() && n.chars().count() <= 255 => Some(n),
            Some(n) if !n.is_empty() => return Err(ApiError::InvalidParam("name is longer than 255 characters".into())),
            _ => return Err(ApiError::InvalidParam("name is required unless auto_generate is true".into())),
        }
    };
    let c = state.service.rename_conversation(app, &user, id, name).await?;
    Ok(body::json(StatusCode::OK, &conversation_json(&c, app)))
}

fn message_json(m: &Message) -> Value {
    let inputs: Value = serde_json::from_str(&m.inputs_json).unwrap_or_else(|_| json!({}));
    let feedback = m.feedback.as_ref().map(|f| json!({"rating": f.rating.as_str()}));
    json!({
        "id": m.id, "conversation_id": m.conversation_id, "parent_message_id": null, "inputs": inputs,
        "query": m.query, "answer": m.answer, "message_files": [], "feedback": feedback,
        "retriever_resources": [], "agent_thoughts": [], "created_at": m.created_at,
        "status": m.status.as_str(), "error": m.error,
    })
}

async fn list_messages(state: &ApiState, app: &AppDefinition, q: HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let user = required_user(q.get("user").cloned())?;
    let conversation_id =
        q.get("conversation_id").filter(|s| !s.is_empty()).ok_or_else(|| ApiError::InvalidParam("conversation_id is required".into()))?;
    let limit = parse_limit(&q, 20)?;
    let first_id = q.get("first_id").filter(|s| !s.is_empty());
    let (items, has_more) = state.service.messages(app, &user, conversation_id, first_id.map(String::as_str), limit).await?;
    let data: Vec<Value> = items.iter().map(message_json).collect();
    Ok(body::json(StatusCode::OK, &json!({"limit": limit, "has_more": has_more, "data": data})))
}

/// Dify's `/parameters`: the app's form and the features it has (all the
/// cloud-only features are reported disabled).
fn parameters(app: &AppDefinition) -> Value {
    let off = json!({"enabled": false});
    json!({
        "opening_statement": app.opening_statement,
        "suggested_questions": app.suggested_questions,
        "suggested_questions_after_answer": off,
        "speech_to_text": off,
        "text_to_speech": {"enabled": false, "voice": "", "language": ""},
        "retriever_resource": off,
        "annotation_reply": off,
        "more_like_this": off,
        "sensitive_word_avoidance": off,
        "user_input_form": app.user_input_form,
        "file_upload": {"image": {"enabled": false, "number_limits": 0, "transfer_methods": []}},
        "system_parameters": {"file_size_limit": 0, "image_file_size_limit": 0, "audio_file_size_limit": 0, "video_file_size_limit": 0, "workflow_file_upload_limit": 0},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(p: &str) -> bool {
        is_route(&p.split('/').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn known_routes_are_recognised_before_authentication() {
        for p in [
            "chat-messages",
            "completion-messages",
            "chat-messages/t/stop",
            "conversations",
            "conversations/c",
            "conversations/c/name",
            "messages",
            "messages/m/feedbacks",
            "parameters",
            "info",
            "meta",
        ] {
            assert!(route(p), "{p}");
        }
        for p in ["chat-messages/t", "conversations/c/messages", "workflows/run", "files/upload", "", "info/x"] {
            assert!(!route(p), "{p}");
        }
    }
}
