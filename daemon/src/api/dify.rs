//! Dify's Service API (`/v1/...` with an app key): chat and completion
//! messages in blocking and streaming mode with Dify's SSE events, stop,
//! conversations, messages, feedback, and the app's parameters/info/meta.
//! Field names, event order and errors follow Dify's service API controllers
//! and response converters. The run's events are consumed by `events`; this
//! module is Dify's [`Encoder`] for them.

use std::collections::HashMap;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::body::{self, Body};
use super::error::ApiError;
use super::events::{self, Collected, Encoder, StreamLimits};
use super::stall::StallFlag;
use super::{ApiState, Caller};
use crate::engine::{AppDefinition, AppMode};
use crate::model::FinishReason;
use crate::service::{AppRequest, Run, Usage};
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

pub async fn route(state: &Arc<ApiState>, caller: Caller, rest: &[String], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let Caller { app, user: forced } = caller;
    let forced = forced.as_deref();
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = req.method().clone();
    match (r.as_slice(), &m) {
        (["chat-messages"], &Method::POST) => send_message(state, app, forced, req, AppMode::Chat).await,
        (["completion-messages"], &Method::POST) => send_message(state, app, forced, req, AppMode::Completion).await,
        (["chat-messages", task, "stop"] | ["completion-messages", task, "stop"], &Method::POST) => {
            require_mode(&app, if r[0] == "chat-messages" { AppMode::Chat } else { AppMode::Completion })?;
            let b: UserBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let user = required_user(forced, b.user)?;
            state.service.stop(&app.id, &user, task);
            Ok(body::json(StatusCode::OK, &json!({"result": "success"})))
        }
        (["conversations"], &Method::GET) => {
            require_mode(&app, AppMode::Chat)?;
            list_conversations(state, &app, query(&req), forced).await
        }
        (["conversations", id], &Method::DELETE) => {
            require_mode(&app, AppMode::Chat)?;
            let b: UserBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let user = required_user(forced, b.user)?;
            state.service.delete_conversation(&app, &user, id).await?;
            Ok(body::empty(StatusCode::NO_CONTENT))
        }
        (["conversations", id, "name"], &Method::POST) => {
            require_mode(&app, AppMode::Chat)?;
            let b: RenameBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            rename(state, &app, id, b, forced).await
        }
        (["messages"], &Method::GET) => {
            require_mode(&app, AppMode::Chat)?;
            list_messages(state, &app, query(&req), forced).await
        }
        (["messages", id, "feedbacks"], &Method::POST) => {
            let b: FeedbackBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let user = required_user(forced, b.user)?;
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
pub(super) fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect()
}

/// Dify's `user`: any JSON scalar, stringified as Python's `str()` does;
/// `null`, `""`, `0` and `false` count as absent (Python's falsy values).
#[derive(Deserialize, Default)]
#[serde(untagged)]
pub(super) enum UserArg {
    #[default]
    Absent,
    Text(String),
    Number(serde_json::Number),
    Flag(bool),
}

impl UserArg {
    pub(super) fn value(self) -> Option<String> {
        match self {
            UserArg::Absent | UserArg::Flag(false) => None,
            UserArg::Text(s) if s.is_empty() => None,
            UserArg::Text(s) => Some(s),
            UserArg::Number(n) if n.as_f64() == Some(0.0) => None,
            UserArg::Number(n) => Some(n.to_string()),
            UserArg::Flag(true) => Some("True".to_owned()),
        }
    }
}

#[derive(Deserialize)]
struct UserBody {
    #[serde(default)]
    user: UserArg,
}

#[derive(Deserialize)]
struct RenameBody {
    name: Option<String>,
    #[serde(default)]
    auto_generate: bool,
    #[serde(default)]
    user: UserArg,
}

#[derive(Deserialize)]
struct FeedbackBody {
    rating: Option<String>,
    #[serde(default)]
    user: UserArg,
    content: Option<String>,
}

/// The body of chat-messages and completion-messages. Unknown fields are
/// ignored, as Dify does.
#[derive(Deserialize)]
struct MessageBody {
    query: Option<String>,
    inputs: Option<Map<String, Value>>,
    response_mode: Option<String>,
    #[serde(default)]
    user: UserArg,
    conversation_id: Option<String>,
    /// Accepted and ignored: no app here has file upload turned on, and Dify
    /// ignores files for such an app.
    #[serde(default, rename = "files")]
    _files: Option<Vec<Value>>,
}

/// Routes that need a `user` answer Dify's message without one. A user
/// `forced` by the caller's token replaces the body's.
pub(super) fn required_user(forced: Option<&str>, u: UserArg) -> Result<String, ApiError> {
    match forced {
        Some(f) => Ok(f.to_owned()),
        None => u.value().ok_or_else(|| ApiError::InvalidParam("Arg user must be provided.".into())),
    }
}

/// The user of a GET route: optional, as in Dify, which files requests
/// without one under this end user.
pub(super) const DEFAULT_USER: &str = "DEFAULT-USER";

/// A route that needs `user` in its query: Dify's message without one
/// (a `forced` user replaces the query's).
pub(super) fn required_query_user(forced: Option<&str>, q: &HashMap<String, String>) -> Result<String, ApiError> {
    match forced {
        Some(f) => Ok(f.to_owned()),
        None => q.get("user").filter(|u| !u.is_empty()).cloned().ok_or_else(|| ApiError::InvalidParam("Arg user must be provided.".into())),
    }
}

fn query_user(forced: Option<&str>, q: &HashMap<String, String>) -> String {
    match forced {
        Some(f) => f.to_owned(),
        None => q.get("user").filter(|u| !u.is_empty()).cloned().unwrap_or_else(|| DEFAULT_USER.to_owned()),
    }
}

/// Dify's answers for a route of the other kind of app: a completion route
/// on any other app is `app_unavailable`, a chat route on a completion or
/// workflow app is `not_chat_app`. Chat routes serve chat and advanced-chat
/// (chatflow) apps.
fn require_mode(app: &AppDefinition, route: AppMode) -> Result<(), ApiError> {
    let chat_route = match route {
        AppMode::Chat | AppMode::AdvancedChat => true,
        AppMode::Completion | AppMode::Workflow => false,
    };
    match (app.mode, chat_route) {
        (AppMode::Chat | AppMode::AdvancedChat, true) | (AppMode::Completion, false) => Ok(()),
        (AppMode::Chat | AppMode::AdvancedChat | AppMode::Workflow, false) => Err(ApiError::AppUnavailable),
        (AppMode::Completion | AppMode::Workflow, true) => Err(ApiError::NotChatApp),
    }
}

async fn send_message(
    state: &Arc<ApiState>,
    app: Arc<AppDefinition>,
    forced: Option<&str>,
    req: Request<Incoming>,
    route: AppMode,
) -> Result<Response<Body>, ApiError> {
    require_mode(&app, route)?;
    if app.mode == AppMode::AdvancedChat {
        return super::workflow::chat_message(state, app, forced, req).await;
    }
    let stall = req.extensions().get::<StallFlag>().cloned().unwrap_or_default();
    let (req, streaming) = message_request(body::read_json(req.into_body(), state.limits.max_body_bytes).await?, route, forced)?;
    let run = state.service.start(Arc::clone(&app), req).await?;
    let annotation = run.annotation.as_deref().map(|id| annotation_reply(id, &app.id));
    let cache = cache_metadata(&run.cache);
    let enc =
        DifyEncoder { mode: app.mode, ids: RunIds::of(&run), resources: Value::Array(run.retriever_resources.clone()), annotation, cache };
    if streaming {
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

/// The request of `/chat-messages` or `/completion-messages` (`route`) from
/// its JSON body, and whether it streams; every wrong field is
/// `invalid_param`.
pub(crate) fn message_request(body: Value, route: AppMode, forced: Option<&str>) -> Result<(AppRequest, bool), ApiError> {
    let b: MessageBody = body::typed(body)?;
    let user = required_user(forced, b.user)?;
    let streaming = match b.response_mode.as_deref() {
        None | Some("blocking") => false,
        Some("streaming") => true,
        Some(other) => return Err(ApiError::InvalidParam(format!("response_mode must be blocking or streaming, not {other:?}"))),
    };
    let query = match (b.query, route) {
        (Some(q), _) => q,
        (None, AppMode::Chat) => return Err(ApiError::InvalidParam("query is required".into())),
        (None, AppMode::Completion | AppMode::Workflow | AppMode::AdvancedChat) => String::new(),
    };
    let conversation_id = b.conversation_id.filter(|c| !c.is_empty());
    if let Some(c) = &conversation_id {
        if uuid::Uuid::parse_str(c).is_err() {
            return Err(ApiError::InvalidParam(format!("conversation_id {c:?} is not a valid uuid")));
        }
    }
    Ok((AppRequest { user, query, inputs: b.inputs.unwrap_or_default(), conversation_id }, streaming))
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens, "prompt_unit_price": "0", "prompt_price_unit": "0", "prompt_price": "0",
        "completion_tokens": u.completion_tokens, "completion_unit_price": "0", "completion_price_unit": "0", "completion_price": "0",
        "total_tokens": u.prompt_tokens + u.completion_tokens, "total_price": "0", "currency": "USD",
        "latency": u.latency.as_secs_f64(),
        "time_to_first_token": u.first_token.map(|t| t.as_secs_f64()),
        "time_to_generate": u.first_token.map(|t| u.latency.saturating_sub(t).as_secs_f64()),
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

/// Dify's wire shapes of a run: the chat or completion app's events and
/// blocking answer, as Dify's response converters write them.
struct DifyEncoder {
    mode: AppMode,
    ids: RunIds,
    /// The knowledge segments of the answer.
    resources: Value,
    /// `metadata.annotation_reply` when an annotation answered.
    annotation: Option<Value>,
    /// `metadata.cache` when the response cache answered.
    cache: Option<Value>,
}

impl DifyEncoder {
    fn metadata(&self, usage: &Usage) -> Value {
        let mut m = json!({"usage": usage_json(usage), "retriever_resources": self.resources});
        if let Some(a) = &self.annotation {
            m["annotation_reply"] = a.clone();
        }
        if let Some(c) = &self.cache {
            m["cache"] = c.clone();
        }
        m
    }
}

/// `metadata.cache` of an answer the response cache gave (this daemon's
/// addition; Dify has none).
fn cache_metadata(mark: &crate::cache::Mark) -> Option<Value> {
    match mark {
        crate::cache::Mark::Hit(h) => Some(match h.similarity {
            None => json!({"hit": true, "kind": "exact", "created_at": h.created_at}),
            Some(similarity) => json!({"hit": true, "kind": "semantic", "similarity": similarity, "created_at": h.created_at}),
        }),
        crate::cache::Mark::Off | crate::cache::Mark::Miss => None,
    }
}

/// Dify's `metadata.annotation_reply`. Dify names the console account that
/// wrote the annotation; there are no accounts here, so the account is the
/// app, named as Dify names a missing account.
fn annotation_reply(annotation_id: &str, app_id: &str) -> Value {
    json!({"id": annotation_id, "account": {"id": app_id, "name": "Dify user"}})
}

impl Encoder for DifyEncoder {
    fn text(&self, text: &str) -> bytes::Bytes {
        let mut m = base("message", self.mode, &self.ids);
        m.insert("answer".into(), json!(text));
        // Set only for workflow apps; Dify sends null for simple ones.
        m.insert("from_variable_selector".into(), Value::Null);
        body::sse_data(&Value::Object(m))
    }

    fn end(&self, usage: &Usage, finish: FinishReason) -> bytes::Bytes {
        let mut m = base("message_end", self.mode, &self.ids);
        m.insert("metadata".into(), self.metadata(usage));
        m.insert("files".into(), Value::Null);
        if finish == FinishReason::Cancelled {
            tracing::debug!(task_id = %self.ids.task_id, "stream ended by stop");
        }
        body::sse_data(&Value::Object(m))
    }

    /// Dify's `error` event: the run's ids and the error's status, code and
    /// message, as its `_error_to_stream_response`.
    fn error(&self, e: &ApiError) -> bytes::Bytes {
        let mapped = e.mapped();
        let mut m = Map::new();
        m.insert("event".into(), json!("error"));
        m.insert("task_id".into(), json!(self.ids.task_id));
        if self.mode == AppMode::Chat {
            m.insert("conversation_id".into(), json!(self.ids.conversation_id));
        }
        m.insert("message_id".into(), json!(self.ids.message_id));
        m.insert("created_at".into(), json!(self.ids.created_at));
        m.insert("status".into(), json!(mapped.status.as_u16()));
        m.insert("code".into(), json!(mapped.code));
        m.insert("message".into(), json!(mapped.message));
        body::sse_data(&Value::Object(m))
    }

    fn ping(&self) -> Option<bytes::Bytes> {
        Some(bytes::Bytes::from_static(b"event: ping\n\n"))
    }

    fn blocking(&self, c: Collected) -> Response<Body> {
        let mut m = base("message", self.mode, &self.ids);
        m.insert("mode".into(), json!(self.mode.as_str()));
        m.insert("answer".into(), json!(c.answer));
        m.insert("metadata".into(), self.metadata(&c.usage));
        body::json(StatusCode::OK, &Value::Object(m))
    }
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

async fn list_conversations(
    state: &ApiState,
    app: &AppDefinition,
    q: HashMap<String, String>,
    forced: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let user = query_user(forced, &q);
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

async fn rename(state: &ApiState, app: &AppDefinition, id: &str, b: RenameBody, forced: Option<&str>) -> Result<Response<Body>, ApiError> {
    let user = required_user(forced, b.user)?;
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

async fn list_messages(
    state: &ApiState,
    app: &AppDefinition,
    q: HashMap<String, String>,
    forced: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let user = query_user(forced, &q);
    let conversation_id =
        q.get("conversation_id").filter(|s| !s.is_empty()).ok_or_else(|| ApiError::InvalidParam("conversation_id is required".into()))?;
    let limit = parse_limit(&q, 20)?;
    let first_id = q.get("first_id").filter(|s| !s.is_empty());
    let (items, has_more) = state.service.messages(app, &user, conversation_id, first_id.map(String::as_str), limit).await?;
    let data: Vec<Value> = items.iter().map(message_json).collect();
    Ok(body::json(StatusCode::OK, &json!({"limit": limit, "has_more": has_more, "data": data})))
}

/// Dify's `/parameters`: the app's form and the features it has (all the
/// cloud-only features are reported disabled). A DSL app's form is its start
/// node's variables, and its features those of the DSL's `features`.
fn parameters(app: &AppDefinition) -> Value {
    let off = json!({"enabled": false});
    if let Some(w) = &app.workflow {
        let features = w.raw().get("features").cloned().unwrap_or_else(|| json!({}));
        let feature = |k: &str| features.get(k).cloned().unwrap_or_else(|| off.clone());
        let form: Vec<Value> = w
            .start_variables()
            .iter()
            .map(|v| {
                let mut spec = json!({"label": v.label, "variable": v.variable, "required": v.required, "options": v.options,
                                      "default": v.default.clone().unwrap_or(Value::String(String::new()))});
                if let (Some(max), Some(o)) = (v.max_length, spec.as_object_mut()) {
                    o.insert("max_length".into(), json!(max));
                }
                json!({ v.kind.clone(): spec })
            })
            .collect();
        return json!({
            "opening_statement": features.get("opening_statement").cloned().unwrap_or(json!("")),
            "suggested_questions": features.get("suggested_questions").cloned().unwrap_or(json!([])),
            "suggested_questions_after_answer": feature("suggested_questions_after_answer"),
            "speech_to_text": off,
            "text_to_speech": {"enabled": false, "voice": "", "language": ""},
            "retriever_resource": off,
            "annotation_reply": off,
            "more_like_this": off,
            "sensitive_word_avoidance": off,
            "user_input_form": form,
            "file_upload": feature("file_upload"),
            "system_parameters": {"file_size_limit": 0, "image_file_size_limit": 0, "audio_file_size_limit": 0, "video_file_size_limit": 0, "workflow_file_upload_limit": 0},
        });
    }
    json!({
        "opening_statement": app.opening_statement,
        "suggested_questions": app.suggested_questions,
        "suggested_questions_after_answer": {"enabled": app.suggested_questions_after_answer.enabled},
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

    fn encoder(mode: AppMode) -> DifyEncoder {
        let ids = RunIds { task_id: "t".into(), message_id: "m".into(), conversation_id: Some("c".into()), created_at: 7 };
        DifyEncoder { mode, ids, resources: json!([]), annotation: None, cache: None }
    }

    fn event(b: bytes::Bytes) -> Value {
        let text = String::from_utf8(b.to_vec()).unwrap();
        serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap()
    }

    #[test]
    fn a_failed_generation_is_difys_error_event() {
        let e: ApiError = crate::model::ModelError::Inference("decode failed".into()).into();
        let v = event(encoder(AppMode::Chat).error(&e));
        assert_eq!(
            v,
            json!({"event": "error", "task_id": "t", "conversation_id": "c", "message_id": "m", "created_at": 7,
                   "status": 400, "code": "completion_request_error", "message": "inference failed: decode failed"})
        );
        // A completion app has no conversation, as in Dify's completion converter.
        let v = event(encoder(AppMode::Completion).error(&e));
        assert!(v.get("conversation_id").is_none(), "{v}");
    }

    #[test]
    fn user_is_stringified_like_python_str() {
        let u = |v: Value| serde_json::from_value::<UserArg>(v).map(UserArg::value).ok();
        assert_eq!(u(json!("ann")), Some(Some("ann".into())));
        assert_eq!(u(json!(42)), Some(Some("42".into())));
        assert_eq!(u(json!(1.5)), Some(Some("1.5".into())));
        assert_eq!(u(json!(true)), Some(Some("True".into())));
        for falsy in [json!(null), json!(""), json!(0), json!(0.0), json!(false)] {
            assert_eq!(u(falsy.clone()), Some(None), "{falsy}");
        }
        assert_eq!(u(json!([1])), None, "a list is not a user");
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

    #[test]
    fn a_token_user_replaces_the_body_and_query_user() {
        let q: HashMap<String, String> = [("user".to_owned(), "bob".to_owned())].into();
        assert_eq!(required_user(Some("alice"), UserArg::Text("bob".into())).unwrap(), "alice");
        assert_eq!(required_user(Some("alice"), UserArg::Absent).unwrap(), "alice", "no body user needed with a token");
        assert_eq!(required_user(None, UserArg::Text("bob".into())).unwrap(), "bob");
        assert!(required_user(None, UserArg::Absent).is_err());
        assert_eq!(query_user(Some("alice"), &q), "alice");
        assert_eq!(query_user(None, &q), "bob");
        assert_eq!(required_query_user(Some("alice"), &HashMap::new()).unwrap(), "alice");
        let body = json!({"query": "hi", "user": "bob"});
        assert_eq!(message_request(body.clone(), AppMode::Chat, Some("alice")).unwrap().0.user, "alice");
        assert_eq!(message_request(body, AppMode::Chat, None).unwrap().0.user, "bob");
    }
}
