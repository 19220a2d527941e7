//! Dify's Service API for DSL apps: `/workflows/run` (and a published
//! version's `/workflows/{workflow_id}/run`), `/workflows/run/{id}`,
//! `/workflows/tasks/{task_id}/stop`, `/workflows/logs`, chatflow
//! (`advanced-chat`) answers through `/chat-messages`, and a conversation's
//! variables. Event names, fields and order follow Dify's workflow and
//! advanced-chat task pipelines: `workflow_started`, `node_started`,
//! `node_finished`, `text_chunk` (workflow) or `message` (chatflow),
//! `workflow_finished`, then `message_end` (chatflow); a failed run adds
//! `error` after `workflow_finished`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::body::{self, Body};
use super::dify::{query, required_query_user, required_user, UserArg};
use super::error::ApiError;
use super::events::{self, Source, StreamLimits};
use super::stall::StallFlag;
use super::{ApiState, Caller};
use crate::engine::workflow::{Event, NodeExecution, NodeStatus, RunStatus, WorkflowMode};
use crate::engine::{AppDefinition, AppMode};
use crate::service::workflow::{node_status, run_status, FlowEnd, FlowEvent, WorkflowRequest, WorkflowRun};
use crate::store::{ConversationVariable, WorkflowLogFilter, WorkflowRunRecord, WorkflowRunStatus};

/// Whether `rest` (the path after `/v1/`) is one of this module's routes.
pub fn is_route(rest: &[String]) -> bool {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    matches!(
        r.as_slice(),
        ["workflows", "run"]
            | ["workflows", _, "run"]
            | ["workflows", "run", _]
            | ["workflows", "tasks", _, "stop"]
            | ["workflows", "logs"]
            | ["conversations", _, "variables"]
            | ["conversations", _, "variables", _]
    )
}

pub async fn route(state: &Arc<ApiState>, caller: Caller, rest: &[String], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let Caller { app, user: forced } = caller;
    let forced = forced.as_deref();
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = req.method().clone();
    match (r.as_slice(), &m) {
        (["workflows", "run"], &Method::POST) => {
            require_workflow(&app)?;
            run(state, app, None, forced, req).await
        }
        (["workflows", "run", id], &Method::GET) => {
            require_workflow(&app)?;
            let rec = state.service.workflow_run(&app, id).await?;
            Ok(body::json(StatusCode::OK, &run_detail(&rec)))
        }
        (["workflows", "tasks", task, "stop"], &Method::POST) => {
            require_workflow(&app)?;
            let b: UserBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let user = required_user(forced, b.user)?;
            state.service.stop(&app.id, &user, task);
            Ok(body::json(StatusCode::OK, &json!({"result": "success"})))
        }
        (["workflows", "logs"], &Method::GET) => {
            require_workflow(&app)?;
            logs(state, &app, query(&req)).await
        }
        (["workflows", workflow_id, "run"], &Method::POST) => {
            require_workflow(&app)?;
            let id = (*workflow_id).to_owned();
            run(state, app, Some(id), forced, req).await
        }
        (["conversations", id, "variables"], &Method::GET) => {
            require_chatflow(&app)?;
            let q = query(&req);
            let user = required_query_user(forced, &q)?;
            let vars = state.service.conversation_variables(&app, &user, id).await?;
            let data: Vec<Value> = vars.iter().map(variable_json).collect();
            Ok(body::json(StatusCode::OK, &json!({"limit": data.len().max(1), "has_more": false, "data": data})))
        }
        (["conversations", id, "variables", var], &Method::PUT) => {
            require_chatflow(&app)?;
            let b: VariableBody = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let user = required_user(forced, b.user)?;
            let value = b.value.ok_or_else(|| ApiError::InvalidParam("value is required".into()))?;
            let v = state.service.update_conversation_variable(&app, &user, id, var, value).await?;
            Ok(body::json(StatusCode::OK, &variable_json(&v)))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// A workflow route on another kind of app: Dify's `NotWorkflowAppError`.
fn require_workflow(app: &AppDefinition) -> Result<(), ApiError> {
    match app.mode {
        AppMode::Workflow => Ok(()),
        AppMode::Chat | AppMode::Completion | AppMode::AdvancedChat => Err(ApiError::NotWorkflowApp),
    }
}

fn require_chatflow(app: &AppDefinition) -> Result<(), ApiError> {
    match app.mode {
        AppMode::AdvancedChat => Ok(()),
        AppMode::Chat | AppMode::Completion | AppMode::Workflow => Err(ApiError::NotChatApp),
    }
}

#[derive(Deserialize)]
struct UserBody {
    #[serde(default)]
    user: UserArg,
}

#[derive(Deserialize)]
struct VariableBody {
    value: Option<Value>,
    #[serde(default)]
    user: UserArg,
}

/// The body of `/workflows/run` and of a chatflow's `/chat-messages`.
/// Unknown fields are ignored, as Dify does.
#[derive(Deserialize)]
pub(super) struct RunBody {
    inputs: Option<Map<String, Value>>,
    response_mode: Option<String>,
    #[serde(default)]
    user: UserArg,
    query: Option<String>,
    conversation_id: Option<String>,
    files: Option<Vec<Value>>,
}

async fn run(
    state: &Arc<ApiState>,
    app: Arc<AppDefinition>,
    workflow_id: Option<String>,
    forced: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let stall = req.extensions().get::<StallFlag>().cloned().unwrap_or_default();
    let (req, streaming) = run_request(body::read_json(req.into_body(), state.limits.max_body_bytes).await?, workflow_id, false, forced)?;
    start(state, app, req, streaming, stall).await
}

/// A chatflow's `/chat-messages`.
pub async fn chat_message(
    state: &Arc<ApiState>,
    app: Arc<AppDefinition>,
    forced: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let stall = req.extensions().get::<StallFlag>().cloned().unwrap_or_default();
    let (req, streaming) = run_request(body::read_json(req.into_body(), state.limits.max_body_bytes).await?, None, true, forced)?;
    start(state, app, req, streaming, stall).await
}

/// The request of `/workflows/run` (`workflow_id`: of
/// `/workflows/{id}/run`) or of a chatflow's `/chat-messages` (`chatflow`,
/// which needs a query) from its JSON body, and whether it streams; every
/// wrong field is `invalid_param`.
pub(crate) fn run_request(
    body: Value,
    workflow_id: Option<String>,
    chatflow: bool,
    forced: Option<&str>,
) -> Result<(WorkflowRequest, bool), ApiError> {
    let b: RunBody = body::typed(body)?;
    if chatflow && b.query.is_none() {
        return Err(ApiError::InvalidParam("query is required".into()));
    }
    let user = required_user(forced, b.user)?;
    let streaming = match b.response_mode.as_deref() {
        None | Some("blocking") => false,
        Some("streaming") => true,
        Some(other) => return Err(ApiError::InvalidParam(format!("response_mode must be blocking or streaming, not {other:?}"))),
    };
    let conversation_id = b.conversation_id.filter(|c| !c.is_empty());
    if let Some(c) = &conversation_id {
        if uuid::Uuid::parse_str(c).is_err() {
            return Err(ApiError::InvalidParam(format!("conversation_id {c:?} is not a valid uuid")));
        }
    }
    let req = WorkflowRequest {
        user,
        inputs: b.inputs.unwrap_or_default(),
        query: b.query,
        conversation_id,
        files: b.files.unwrap_or_default(),
        workflow_id,
    };
    Ok((req, streaming))
}

async fn start(
    state: &Arc<ApiState>,
    app: Arc<AppDefinition>,
    req: WorkflowRequest,
    streaming: bool,
    stall: StallFlag,
) -> Result<Response<Body>, ApiError> {
    let run = state.service.start_workflow(Arc::clone(&app), req).await?;
    let source = FlowSource::new(run);
    if streaming {
        let limits = StreamLimits {
            ping: state.limits.sse_ping_interval,
            deadline: state.limits.request_timeout,
            slow_client: state.limits.slow_client_timeout,
        };
        Ok(events::stream(source, limits, stall))
    } else {
        source.blocking().await
    }
}

/// A workflow run's events as Dify's SSE chunks.
struct FlowSource {
    run: WorkflowRun,
    /// Node executions that ended `exception` (handled by their error strategy).
    exceptions: u32,
    /// Iteration and loop nodes running now, by node id.
    containers: HashMap<String, Container>,
}

/// A running iteration or loop: Dify reports it with `iteration_*` or
/// `loop_*` events instead of `node_*`, and a `*_next` event per pass.
struct Container {
    /// `iteration` or `loop`.
    kind: &'static str,
    exec_id: String,
    title: String,
    /// The passes whose `*_next` was sent (parallel passes interleave).
    passes: std::collections::BTreeSet<u32>,
}

/// Whether a node type is a container Dify reports with its own events.
fn container_kind(node_type: &str) -> Option<&'static str> {
    match node_type {
        "iteration" => Some("iteration"),
        "loop" => Some("loop"),
        _ => None,
    }
}

impl FlowSource {
    fn new(run: WorkflowRun) -> Self {
        FlowSource { run, exceptions: 0, containers: HashMap::new() }
    }

    /// A node's start: `iteration_started`/`loop_started` for a container,
    /// else `node_started`, preceded by `*_next` when it opens a new pass.
    fn node_started(&mut self, n: &NodeExecution) -> Vec<Bytes> {
        if let Some(kind) = container_kind(&n.node_type) {
            let c = Container { kind, exec_id: n.id.clone(), title: n.title.clone(), passes: Default::default() };
            self.containers.insert(n.node_id.clone(), c);
            return vec![self.node(&format!("{kind}_started"), n, false)];
        }
        let mut out = Vec::new();
        if let Some((owner, pass)) = &n.parent {
            if let Some(c) = self.containers.get_mut(owner).filter(|c| !c.passes.contains(pass)) {
                c.passes.insert(*pass);
                let data = json!({"id": c.exec_id, "node_id": owner, "node_type": c.kind, "title": c.title, "index": pass,
                                  "created_at": secs(n.created_at), "extras": {}});
                let event = format!("{}_next", c.kind);
                out.push(self.with_data(&event, data));
            }
        }
        out.push(self.node("node_started", n, false));
        out
    }

    /// A node's end: `iteration_completed`/`loop_completed` for a container.
    fn finished_node(&mut self, n: &NodeExecution) -> Bytes {
        if n.status == NodeStatus::Exception {
            self.exceptions += 1;
        }
        match container_kind(&n.node_type) {
            Some(kind) => {
                let passes = self.containers.remove(&n.node_id).map_or(0, |c| c.passes.len());
                let mut data = self.node_data(n, true);
                data["steps"] = json!(passes);
                self.with_data(&format!("{kind}_completed"), data)
            }
            None => self.node("node_finished", n, true),
        }
    }

    fn chatflow(&self) -> bool {
        self.run.mode == WorkflowMode::AdvancedChat
    }

    /// Fields every event carries.
    fn base(&self, event: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("event".into(), json!(event));
        m.insert("task_id".into(), json!(self.run.task_id));
        m.insert("workflow_run_id".into(), json!(self.run.workflow_run_id));
        if self.chatflow() {
            m.insert("conversation_id".into(), json!(self.run.conversation_id));
            m.insert("message_id".into(), json!(self.run.message_id));
            m.insert("created_at".into(), json!(self.run.created_at));
        }
        m
    }

    fn with_data(&self, event: &str, data: Value) -> Bytes {
        let mut m = self.base(event);
        m.insert("data".into(), data);
        body::sse_data(&Value::Object(m))
    }

    fn started(&self) -> Bytes {
        self.with_data(
            "workflow_started",
            json!({"id": self.run.workflow_run_id, "workflow_id": self.run.workflow_id, "sequence_number": 1,
                   "inputs": self.run.inputs, "created_at": self.run.created_at}),
        )
    }

    fn text(&self, text: &str, selector: &[String]) -> Bytes {
        if self.chatflow() {
            let mut m = self.base("message");
            m.insert("id".into(), json!(self.run.message_id));
            m.insert("answer".into(), json!(text));
            m.insert("from_variable_selector".into(), json!(selector));
            body::sse_data(&Value::Object(m))
        } else {
            self.with_data("text_chunk", json!({"text": text, "from_variable_selector": selector}))
        }
    }

    fn finished(&self, end: &FlowEnd) -> Vec<Bytes> {
        let o = &end.outcome;
        let mut out = vec![self.with_data(
            "workflow_finished",
            json!({"id": self.run.workflow_run_id, "workflow_id": self.run.workflow_id, "sequence_number": 1,
                   "status": run_status(o.status), "outputs": o.outputs, "error": o.error,
                   "elapsed_time": end.elapsed.as_secs_f64(), "total_tokens": o.total_tokens, "total_steps": o.total_steps,
                   "created_at": self.run.created_at, "finished_at": end.finished_at, "exceptions_count": self.exceptions, "files": []}),
        )];
        if o.status == RunStatus::Failed {
            let message = o.error.clone().unwrap_or_else(|| "the workflow failed".into());
            out.extend(self.fail(&ApiError::WorkflowFailed(message)));
        } else if self.chatflow() {
            let mut m = self.base("message_end");
            m.remove("workflow_run_id");
            m.insert("id".into(), json!(self.run.message_id));
            m.insert(
                "metadata".into(),
                json!({"usage": usage(o.total_tokens, end.elapsed.as_secs_f64()), "retriever_resources": o.retriever_resources}),
            );
            m.insert("files".into(), json!([]));
            out.push(body::sse_data(&Value::Object(m)));
        }
        out
    }

    fn error_chunk(&self, status: u16, code: &str, message: &str) -> Bytes {
        let mut m = self.base("error");
        m.insert("status".into(), json!(status));
        m.insert("code".into(), json!(code));
        m.insert("message".into(), json!(message));
        body::sse_data(&Value::Object(m))
    }

    fn node(&self, event: &str, n: &NodeExecution, finished: bool) -> Bytes {
        self.with_data(event, self.node_data(n, finished))
    }

    /// A node execution's `data`, as Dify's node (and iteration/loop) events carry it.
    fn node_data(&self, n: &NodeExecution, finished: bool) -> Value {
        let mut d = json!({
            "id": n.id, "node_id": n.node_id, "node_type": n.node_type, "title": n.title, "index": n.index,
            "predecessor_node_id": n.predecessor_node_id, "inputs": n.inputs, "created_at": secs(n.created_at),
            "extras": {}, "iteration_id": null, "loop_id": null, "parallel_run_id": null,
        });
        if let (Some((owner, index)), Some(o)) = (&n.parent, d.as_object_mut()) {
            // A body node names its container as Dify does: iteration_* or loop_*.
            let kind = self.containers.get(owner).map_or("iteration", |c| c.kind);
            o.insert(format!("{kind}_id"), json!(owner));
            o.insert(format!("{kind}_index"), json!(index));
        }
        if finished {
            if let Some(o) = d.as_object_mut() {
                o.insert("process_data".into(), json!(n.process_data));
                o.insert("outputs".into(), json!(n.outputs));
                o.insert("status".into(), json!(node_status(n.status)));
                o.insert("error".into(), json!(n.error));
                o.insert("elapsed_time".into(), json!(n.elapsed.as_secs_f64()));
                o.insert("execution_metadata".into(), json!({"total_tokens": n.tokens, "total_price": "0", "currency": "USD"}));
                o.insert("finished_at".into(), json!(n.finished_at.map(secs)));
                o.insert("files".into(), json!([]));
            }
        }
        d
    }

    /// Waits for the end of the run and answers in one piece, as Dify's
    /// blocking converters: a workflow's run record, a chatflow's message.
    async fn blocking(mut self) -> Result<Response<Body>, ApiError> {
        while let Some(ev) = self.run.events.recv().await {
            match ev {
                FlowEvent::Engine(_) => {}
                FlowEvent::Finished(end) => return Ok(self.blocking_answer(&end)),
            }
        }
        Err(ApiError::RunVanished)
    }

    fn blocking_answer(&self, end: &FlowEnd) -> Response<Body> {
        let o = &end.outcome;
        if self.chatflow() {
            if o.status == RunStatus::Failed {
                let message = o.error.clone().unwrap_or_else(|| "the workflow failed".into());
                return body::dify_error(&ApiError::WorkflowFailed(message));
            }
            return body::json(
                StatusCode::OK,
                &json!({"event": "message", "task_id": self.run.task_id, "id": self.run.message_id, "message_id": self.run.message_id,
                        "conversation_id": self.run.conversation_id, "mode": "advanced-chat", "answer": o.answer,
                        "metadata": {"usage": usage(o.total_tokens, end.elapsed.as_secs_f64()), "retriever_resources": o.retriever_resources},
                        "created_at": self.run.created_at}),
            );
        }
        body::json(
            StatusCode::OK,
            &json!({"task_id": self.run.task_id, "workflow_run_id": self.run.workflow_run_id,
                    "data": {"id": self.run.workflow_run_id, "workflow_id": self.run.workflow_id, "status": run_status(o.status),
                             "outputs": o.outputs, "error": o.error, "elapsed_time": end.elapsed.as_secs_f64(),
                             "total_tokens": o.total_tokens, "total_steps": o.total_steps,
                             "created_at": self.run.created_at, "finished_at": end.finished_at}}),
        )
    }
}

impl Source for FlowSource {
    fn task_id(&self) -> String {
        self.run.task_id.clone()
    }

    fn open(&mut self) -> Vec<Bytes> {
        vec![self.started()]
    }

    async fn next(&mut self) -> (Vec<Bytes>, bool) {
        match self.run.events.recv().await {
            Some(FlowEvent::Engine(Event::NodeStarted(n))) => (self.node_started(&n), false),
            Some(FlowEvent::Engine(Event::NodeFinished(n))) => (vec![self.finished_node(&n)], false),
            Some(FlowEvent::Engine(Event::TextChunk { text, from_variable_selector })) => {
                (vec![self.text(&text, &from_variable_selector)], false)
            }
            Some(FlowEvent::Finished(end)) => (self.finished(&end), true),
            None => (self.fail(&ApiError::RunVanished), true),
        }
    }

    fn fail(&self, e: &ApiError) -> Vec<Bytes> {
        let m = e.mapped();
        vec![self.error_chunk(m.status.as_u16(), m.code, &m.message)]
    }

    fn ping(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b"event: ping\n\n"))
    }

    fn abandon(self, reason: String) {
        self.run.abandon(reason);
    }
}

fn secs(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn usage(total_tokens: u64, latency: f64) -> Value {
    json!({"prompt_tokens": 0, "completion_tokens": total_tokens, "total_tokens": total_tokens,
           "total_price": "0", "currency": "USD", "latency": latency})
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// `GET /workflows/run/{id}`, as Dify's `WorkflowRunDetailApi`.
fn run_detail(r: &WorkflowRunRecord) -> Value {
    json!({"id": r.id, "workflow_id": r.workflow_id, "status": r.status.as_str(), "inputs": parse_json(&r.inputs_json),
           "outputs": r.outputs_json.as_deref().map(parse_json), "error": r.error, "total_steps": r.total_steps,
           "total_tokens": r.total_tokens, "created_at": r.created_at, "finished_at": r.finished_at,
           "elapsed_time": r.elapsed_secs})
}

/// `GET /workflows/logs` with Dify's filters and paging.
async fn logs(state: &ApiState, app: &AppDefinition, q: HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let page = match q.get("page") {
        None => 1,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=99_999).contains(p))
            .ok_or_else(|| ApiError::InvalidParam(format!("page must be an integer from 1 to 99999, not {s:?}")))?,
    };
    let limit = match q.get("limit") {
        None => 20,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::InvalidParam(format!("limit must be an integer from 1 to 100, not {s:?}")))?,
    };
    let status = match q.get("status").map(String::as_str) {
        None | Some("") => None,
        Some("succeeded") => Some(WorkflowRunStatus::Succeeded),
        Some("failed") => Some(WorkflowRunStatus::Failed),
        Some("stopped") => Some(WorkflowRunStatus::Stopped),
        Some("partial-succeeded") => Some(WorkflowRunStatus::PartialSucceeded),
        Some(other) => {
            return Err(ApiError::InvalidParam(format!("status must be succeeded, failed, stopped or partial-succeeded, not {other:?}")))
        }
    };
    let time = |key: &str| -> Result<Option<i64>, ApiError> {
        match q.get(key).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => parse_time(s)
                .map(Some)
                .ok_or_else(|| ApiError::InvalidParam(format!("{key} must be an ISO 8601 time or unix seconds, not {s:?}"))),
        }
    };
    let filter = WorkflowLogFilter {
        status,
        keyword: q.get("keyword").filter(|s| !s.is_empty()).cloned(),
        user: q.get("created_by_end_user_session_id").filter(|s| !s.is_empty()).cloned(),
        created_after: time("created_at__after")?,
        created_before: time("created_at__before")?,
        page,
        limit,
    };
    let (runs, total) = state.service.workflow_logs(app, filter).await?;
    let data: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({"id": r.id, "workflow_run": {"id": r.id, "version": r.app_version.to_string(), "status": r.status.as_str(),
                   "error": r.error, "elapsed_time": r.elapsed_secs, "total_tokens": r.total_tokens, "total_steps": r.total_steps,
                   "created_at": r.created_at, "finished_at": r.finished_at},
                   "created_from": "service-api", "created_by_role": "end_user", "created_by_account": null,
                   "created_by_end_user": {"id": r.user, "type": "service_api", "is_anonymous": false, "session_id": r.user},
                   "created_at": r.created_at})
        })
        .collect();
    let has_more = u64::from(page) * u64::from(limit) < total;
    Ok(body::json(StatusCode::OK, &json!({"page": page, "limit": limit, "total": total, "has_more": has_more, "data": data})))
}

/// Unix seconds, or an ISO 8601 UTC time `YYYY-MM-DDTHH:MM:SS[Z|+00:00]`
/// (Dify's filters take ISO times).
fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let s = s.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = s.split_once('T').or_else(|| s.split_once(' ')).unwrap_or((s, "00:00:00"));
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.split('.').next().and_then(|x| x.parse::<i64>().ok()));
    let (h, mi, sec) = (t.next()??, t.next().flatten().unwrap_or(0), t.next().flatten().unwrap_or(0));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

fn variable_json(v: &ConversationVariable) -> Value {
    json!({"id": v.id, "name": v.name, "value_type": v.value_type, "value": parse_json(&v.value_json),
           "description": v.description, "created_at": v.created_at, "updated_at": v.updated_at})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_and_unix_seconds_parse() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1970-01-02T00:00:00Z"), Some(86_400));
        assert_eq!(parse_time("2024-03-01T12:30:00+00:00"), Some(1_709_296_200));
        assert_eq!(parse_time("2024-03-01"), Some(1_709_251_200));
        assert_eq!(parse_time("2024-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn workflow_routes_are_recognised() {
        let r = |p: &str| is_route(&p.split('/').map(str::to_owned).collect::<Vec<_>>());
        for p in [
            "workflows/run",
            "workflows/abc/run",
            "workflows/run/abc",
            "workflows/tasks/t/stop",
            "workflows/logs",
            "conversations/c/variables",
            "conversations/c/variables/v",
        ] {
            assert!(r(p), "{p}");
        }
        for p in ["workflows", "workflows/tasks/t", "conversations/c/vars"] {
            assert!(!r(p), "{p}");
        }
    }
}
