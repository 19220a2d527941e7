//! Workflow and chatflow runs (Dify DSL apps): checks a request against the
//! app's start node, records the run (and, for a chatflow, the conversation
//! and the pending message), runs the engine in a task of its own with this
//! daemon's [`Effects`] (the local model or the upstream endpoint, chosen by
//! `[model_map]`; http-request nodes through `outbound`; uploaded files),
//! forwards its events to the front end, and stores the outcome and every
//! node execution in one transaction when it ends, however it ends.
//! Knows nothing of HTTP or JSON wire shapes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use super::run::TaskStop;
use super::{new_id, not_found_as, now_secs, Service, ServiceError};
use crate::config::{FilesSettings, ModelMap, Target as ModelTarget};
use crate::engine::workflow::{
    self as wf, run as exec, BoxFuture, Effects, Event, HttpCall, HttpReply, LlmCall, LlmChunk, NodeExecution, NodeStatus, RunInput,
    RunOutcome, RunStatus, SysVars, WorkflowMode,
};
use crate::engine::{AppDefinition, AppMode};
use crate::model::upstream::{Upstream, UpstreamEvent, UpstreamRequest};
use crate::model::{CancelFlag, ChatMessage, FinishReason, GenEvent, ModelRuntime, SamplingParams};
use crate::store::{self, NewMessage, Store};

use super::outbound::Outbound;

/// What workflow runs need besides the store and the local model.
pub struct WorkflowRuntime {
    pub limits: wf::Limits,
    pub model_map: ModelMap,
    pub upstream: Option<Upstream>,
    pub fallback_local: bool,
    pub outbound: Outbound,
    pub files: FilesSettings,
    /// The code nodes' sandbox.
    pub code: Arc<super::code::CodeRuntime>,
    /// Compiled published versions by workflow id (versions are immutable),
    /// so `/workflows/{workflow_id}/run` does not compile per request.
    published: std::sync::Mutex<HashMap<String, Arc<wf::graph::Workflow>>>,
}

/// Most compiled published versions kept (the cache is emptied when full).
const PUBLISHED_CACHE: usize = 32;

impl WorkflowRuntime {
    /// From the configuration: limits, model map, upstream (when
    /// `upstream.url` is set), the http-request allowlist, uploads.
    pub fn from_settings(
        s: &crate::config::Settings,
        code: Arc<super::code::CodeRuntime>,
    ) -> Result<WorkflowRuntime, super::outbound::OutboundError> {
        Ok(WorkflowRuntime {
            limits: s.workflow.limits.clone(),
            model_map: s.model_map.clone(),
            upstream: s.upstream.url.is_some().then(|| Upstream::new(&s.upstream)),
            fallback_local: s.upstream.fallback_local,
            outbound: Outbound::new(&s.workflow.http_allow)?,
            files: s.files.clone(),
            code,
            published: std::sync::Mutex::default(),
        })
    }
}

/// A workflow (`/workflows/run`) or chatflow (`/chat-messages`) request
/// after wire parsing.
pub struct WorkflowRequest {
    pub user: String,
    pub inputs: Map<String, Value>,
    /// Chatflow: the user's query.
    pub query: Option<String>,
    pub conversation_id: Option<String>,
    pub files: Vec<Value>,
    /// Run this published version (`/workflows/{workflow_id}/run`) instead of the active one.
    pub workflow_id: Option<String>,
}

/// What a running workflow tells its front end.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowEvent {
    Engine(Event),
    /// The run ended and is stored.
    Finished(FlowEnd),
}

/// The end of a run, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowEnd {
    pub outcome: RunOutcome,
    pub elapsed: Duration,
    pub finished_at: i64,
}

/// A started workflow run.
pub struct WorkflowRun {
    pub task_id: String,
    pub workflow_run_id: String,
    pub workflow_id: String,
    pub mode: WorkflowMode,
    /// Chatflow only.
    pub message_id: Option<String>,
    pub conversation_id: Option<String>,
    pub created_at: i64,
    /// The inputs the run started with (defaults applied).
    pub inputs: Map<String, Value>,
    pub events: mpsc::Receiver<FlowEvent>,
    left: Arc<OnceLock<String>>,
}

impl WorkflowRun {
    /// The front end stops listening: the run is stopped and stored as
    /// stopped with `reason`.
    pub fn abandon(self, reason: String) {
        let _ = self.left.set(reason);
    }
}

/// Which model a DSL model name maps to, for the import report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMapping {
    pub node_id: String,
    pub node_title: String,
    pub provider: String,
    pub name: String,
    /// `local:<model>` or `upstream:<model>`.
    pub target: String,
    /// The `[model_map]` entry that matched (`default` when none named it).
    pub rule: String,
}

impl Service {
    /// Which model each node of `app` would use.
    pub fn model_mappings(&self, app: &AppDefinition) -> Vec<ModelMapping> {
        let Some(w) = &app.workflow else {
            return Vec::new();
        };
        w.models()
            .into_iter()
            .map(|r| {
                let (target, rule) = self.workflows.model_map.resolve(&r.provider, &r.name);
                let target = match target {
                    ModelTarget::Local => format!("local:{}", self.model.config.name),
                    ModelTarget::Upstream { model } => format!("upstream:{model}"),
                };
                ModelMapping { node_id: r.node_id, node_title: r.node_title, provider: r.provider, name: r.name, target, rule }
            })
            .collect()
    }

    /// Starts a run of a workflow or chatflow app. Nothing is written unless
    /// the request is valid; from the first write on the work runs in a task
    /// of its own, which always stores the outcome.
    pub async fn start_workflow(self: &Arc<Self>, app: Arc<AppDefinition>, req: WorkflowRequest) -> Result<WorkflowRun, ServiceError> {
        if self.is_shutting_down() {
            return Err(ServiceError::ShuttingDown);
        }
        self.admit_new()?;
        crate::engine::turn::check_user(&req.user)?;
        let (workflow, workflow_id, version) = self.workflow_version(&app, req.workflow_id.as_deref()).await?;
        let mode = workflow.mode();
        let inputs = exec::check_inputs(&workflow, &req.inputs).map_err(|e| ServiceError::InvalidParam(e.to_string()))?;
        let query = match mode {
            WorkflowMode::AdvancedChat => {
                let q = req.query.unwrap_or_default();
                if q.trim().is_empty() {
                    return Err(ServiceError::InvalidParam("query is required".into()));
                }
                Some(q)
            }
            WorkflowMode::Workflow => None,
        };
        let conversation = match (&req.conversation_id, mode) {
            (Some(id), WorkflowMode::AdvancedChat) if !id.is_empty() => {
                Some(self.store.get_conversation(&app.id, &req.user, id).await.map_err(not_found_as(ServiceError::ConversationNotFound))?)
            }
            _ => None,
        };
        let (history, mut conversation_variables) = match &conversation {
            Some(c) => (self.store.history(&c.id, 50).await?, self.stored_conversation_variables(&c.id).await?),
            None => (Vec::new(), BTreeMap::new()),
        };
        for d in workflow.conversation_variables() {
            conversation_variables.entry(d.name.clone()).or_insert_with(|| d.value.clone());
        }
        let task_id = new_id();
        let workflow_run_id = new_id();
        // This turn counts too.
        let dialogue_count = match &conversation {
            Some(c) => self.store.count_messages(&c.id).await? + 1,
            None => 1,
        };
        let input = RunInput {
            inputs: inputs.clone(),
            sys: SysVars {
                query: query.clone(),
                user_id: req.user.clone(),
                conversation_id: conversation.as_ref().map(|c| c.id.clone()),
                dialogue_count,
                app_id: app.id.clone(),
                workflow_id: workflow_id.clone(),
                workflow_run_id: workflow_run_id.clone(),
                files: req.files,
            },
            conversation_variables,
            history,
        };
        let pending = Pending {
            app,
            workflow,
            version,
            workflow_id,
            task_id,
            workflow_run_id,
            user: req.user,
            query,
            conversation_id: conversation.map(|c| c.id),
            input,
        };
        let svc = Arc::clone(self);
        tokio::spawn(async move { svc.record_and_run(pending).await })
            .await
            .map_err(|e| ServiceError::Corrupt { what: "workflow start task", reason: e.to_string() })?
    }

    /// The workflow to run: the app's active one, or the stored version
    /// published as `workflow_id`.
    async fn workflow_version(
        &self,
        app: &AppDefinition,
        workflow_id: Option<&str>,
    ) -> Result<(Arc<wf::graph::Workflow>, String, u32), ServiceError> {
        let Some(requested) = workflow_id else {
            // The registry's active version, graph and number together (no
            // store read: an activation replaces all three at once).
            let served = self.served(&app.id).ok_or_else(|| ServiceError::AppNotFound(app.id.clone()))?;
            let w = served.def.workflow.clone().ok_or_else(|| ServiceError::NotWorkflowApp(app.id.clone()))?;
            return Ok((w, served.workflow_id, served.version));
        };
        let v = self
            .store
            .find_app_version_by_workflow_id(&app.id, requested)
            .await
            .map_err(not_found_as(ServiceError::WorkflowNotFound(requested.to_owned())))?;
        let cache = &self.workflows.published;
        if let Some(w) = cache.lock().unwrap_or_else(PoisonError::into_inner).get(&v.workflow_id) {
            return Ok((Arc::clone(w), v.workflow_id, v.version));
        }
        let def: AppDefinition = serde_json::from_str(&v.definition_json)
            .map_err(|e| ServiceError::Corrupt { what: "app version", reason: format!("{} version {}: {e}", app.id, v.version) })?;
        let w = def.workflow.ok_or_else(|| ServiceError::NotWorkflowApp(app.id.clone()))?;
        let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
        if c.len() >= PUBLISHED_CACHE {
            c.clear();
        }
        c.insert(v.workflow_id.clone(), Arc::clone(&w));
        Ok((w, v.workflow_id, v.version))
    }

    async fn stored_conversation_variables(&self, conversation_id: &str) -> Result<BTreeMap<String, Value>, ServiceError> {
        let mut out = BTreeMap::new();
        for v in self.store.conversation_variables(conversation_id).await? {
            let value = serde_json::from_str(&v.value_json)
                .map_err(|e| ServiceError::Corrupt { what: "conversation variable", reason: format!("{}: {e}", v.name) })?;
            out.insert(v.name, value);
        }
        Ok(out)
    }

    /// Records the run (and the chatflow's conversation and pending
    /// message), then spawns the run task.
    async fn record_and_run(self: Arc<Self>, p: Pending) -> Result<WorkflowRun, ServiceError> {
        let mode = p.workflow.mode();
        // Tracked from before the first write, so a drain that starts now
        // waits for this run (or stops it) instead of closing the store under it.
        let (stop_tx, stop_rx) = watch::channel(false);
        let guard = self.runs.register(&p.task_id, &p.app.id, &p.user, TaskStop::Watch(stop_tx.clone()));
        if self.is_shutting_down() {
            return Err(ServiceError::ShuttingDown);
        }
        // A chatflow's new conversation, its run and its pending message are
        // one write: it lands whole or not at all, so a refused start leaves
        // nothing behind to undo.
        let (conversation_id, new_conversation) = match (&p.conversation_id, mode) {
            (Some(c), _) => (Some(c.clone()), None),
            (None, WorkflowMode::AdvancedChat) => (Some(new_id()), Some(super::conversation_name(p.query.as_deref().unwrap_or("")))),
            (None, WorkflowMode::Workflow) => (None, None),
        };
        let created = new_conversation.is_some();
        let message_id = (mode == WorkflowMode::AdvancedChat).then(new_id);
        let inputs_json = Value::Object(p.input.inputs.clone()).to_string();
        let run_row = store::NewWorkflowRun {
            id: p.workflow_run_id.clone(),
            app_id: p.app.id.clone(),
            app_version: p.version,
            workflow_id: p.workflow_id.clone(),
            task_id: p.task_id.clone(),
            user: p.user.clone(),
            conversation_id: conversation_id.clone(),
            message_id: message_id.clone(),
            inputs_json: inputs_json.clone(),
            triggered_from: "app-run".into(),
        };
        match &message_id {
            None => self.store.begin_workflow_run(run_row).await?,
            Some(m) => {
                let message = NewMessage {
                    id: m.clone(),
                    app_id: p.app.id.clone(),
                    conversation_id: conversation_id.clone(),
                    user: p.user.clone(),
                    task_id: p.task_id.clone(),
                    query: p.query.clone().unwrap_or_default(),
                    inputs_json,
                };
                self.store.begin_chatflow_run(run_row, message, new_conversation).await?
            }
        }
        let (tx, rx) = mpsc::channel(64);
        let left: Arc<OnceLock<String>> = Arc::default();
        let mut input = p.input;
        input.sys.conversation_id = conversation_id.clone();
        let run = WorkflowRun {
            task_id: p.task_id.clone(),
            workflow_run_id: p.workflow_run_id.clone(),
            workflow_id: p.workflow_id.clone(),
            mode,
            message_id: message_id.clone(),
            conversation_id: conversation_id.clone(),
            created_at: now_secs(),
            inputs: input.inputs.clone(),
            events: rx,
            left: Arc::clone(&left),
        };
        let effects = Arc::new(ServiceEffects { svc: Arc::clone(&self), app: Arc::clone(&p.app) });
        let task = FlowTask {
            svc: Arc::clone(&self),
            workflow_run_id: p.workflow_run_id,
            task_id: p.task_id,
            message_id,
            conversation_id,
            tx,
            left,
            stop_tx,
            started: Instant::now(),
            workflow: Arc::clone(&p.workflow),
            initial_variables: (!created).then(|| input.conversation_variables.clone()),
        };
        tracing::info!(task_id = %task.task_id, workflow_run_id = %task.workflow_run_id, app = %p.app.id, version = p.version, "workflow run started");
        let limits = self.workflows.limits.clone();
        tokio::spawn(async move {
            let _guard = guard;
            task.drive(p.workflow, input, effects, limits, stop_rx).await;
        });
        Ok(run)
    }

    /// A stored workflow run of `app`, with its node executions.
    pub async fn workflow_run(&self, app: &AppDefinition, id: &str) -> Result<store::WorkflowRunRecord, ServiceError> {
        self.store.get_workflow_run(&app.id, id).await.map_err(not_found_as(ServiceError::WorkflowRunNotFound(id.to_owned())))
    }

    /// A page of `app`'s workflow runs, newest first, and the total.
    pub async fn workflow_logs(
        &self,
        app: &AppDefinition,
        filter: store::WorkflowLogFilter,
    ) -> Result<(Vec<store::WorkflowRunRecord>, u64), ServiceError> {
        Ok(self.store.list_workflow_runs(&app.id, filter).await?)
    }

    /// A conversation's variables (chatflow), scoped by app and user.
    pub async fn conversation_variables(
        &self,
        app: &AppDefinition,
        user: &str,
        conversation_id: &str,
    ) -> Result<Vec<store::ConversationVariable>, ServiceError> {
        self.store.get_conversation(&app.id, user, conversation_id).await.map_err(not_found_as(ServiceError::ConversationNotFound))?;
        Ok(self.store.conversation_variables(conversation_id).await?)
    }

    /// Sets one conversation variable; the value must have the declared type.
    pub async fn update_conversation_variable(
        &self,
        app: &AppDefinition,
        user: &str,
        conversation_id: &str,
        variable_id: &str,
        value: Value,
    ) -> Result<store::ConversationVariable, ServiceError> {
        let vars = self.conversation_variables(app, user, conversation_id).await?;
        let var =
            vars.iter().find(|v| v.id == variable_id).ok_or_else(|| ServiceError::ConversationVariableNotFound(variable_id.to_owned()))?;
        if !wf::vars::value_has_type(&value, &var.value_type) {
            return Err(ServiceError::InvalidParam(format!(
                "the value of {} must be of type {}, not {}",
                var.name,
                var.value_type,
                wf::vars::type_name_of(&value)
            )));
        }
        Ok(self.store.update_conversation_variable(conversation_id, variable_id, &value.to_string()).await?)
    }
}

/// A run that passed every check, before anything is written.
struct Pending {
    app: Arc<AppDefinition>,
    workflow: Arc<wf::graph::Workflow>,
    version: u32,
    workflow_id: String,
    task_id: String,
    workflow_run_id: String,
    user: String,
    query: Option<String>,
    conversation_id: Option<String>,
    input: RunInput,
}

/// One run task: drives the engine, forwards events, stores the outcome.
struct FlowTask {
    svc: Arc<Service>,
    workflow_run_id: String,
    task_id: String,
    message_id: Option<String>,
    conversation_id: Option<String>,
    tx: mpsc::Sender<FlowEvent>,
    left: Arc<OnceLock<String>>,
    stop_tx: watch::Sender<bool>,
    started: Instant,
    /// The version being run (its conversation variables' declared types).
    workflow: Arc<wf::graph::Workflow>,
    /// The variables an existing conversation started this run with (only
    /// the ones the run changed are written back, so a concurrent update of
    /// another variable is kept); `None` for a new conversation (all are written).
    initial_variables: Option<BTreeMap<String, Value>>,
}

impl FlowTask {
    async fn drive(
        self,
        workflow: Arc<wf::graph::Workflow>,
        input: RunInput,
        effects: Arc<ServiceEffects>,
        limits: wf::Limits,
        stop: watch::Receiver<bool>,
    ) {
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let engine = tokio::spawn(exec::execute(workflow, input, effects, limits, ev_tx, stop));
        let mut nodes: Vec<NodeExecution> = Vec::new();
        let mut client_gone = false;
        loop {
            let ev = tokio::select! {
                ev = ev_rx.recv() => match ev {
                    Some(ev) => ev,
                    None => break,
                },
                _ = self.tx.closed(), if !client_gone => {
                    client_gone = true;
                    let _ = self.stop_tx.send(true);
                    continue;
                }
            };
            if let Event::NodeFinished(n) = &ev {
                nodes.push(n.clone());
            }
            if !client_gone && self.tx.send(FlowEvent::Engine(ev)).await.is_err() {
                client_gone = true;
                let _ = self.stop_tx.send(true);
            }
        }
        let mut outcome = match engine.await {
            Ok(o) => o,
            Err(e) => RunOutcome {
                retriever_resources: Vec::new(),
                status: RunStatus::Failed,
                outputs: Map::new(),
                error: Some(format!("the workflow engine task ended abnormally: {e}")),
                answer: String::new(),
                total_tokens: 0,
                total_steps: nodes.len() as u32,
                conversation_variables: BTreeMap::new(),
            },
        };
        if client_gone && outcome.status == RunStatus::Stopped {
            // Why it stopped: the front end's reason (client gone, cut off as a slow reader, stream deadline).
            outcome.error = Some(self.left.get().cloned().unwrap_or_else(|| "client disconnected".to_owned()));
        }
        let elapsed = self.started.elapsed();
        let finished_at = now_secs();
        self.store_outcome(&outcome, &nodes, elapsed, finished_at).await;
        // The task is forgotten before the last event, so a stop that
        // follows the end finds nothing to cancel.
        self.svc.runs.finished(&self.task_id);
        tracing::info!(
            task_id = %self.task_id,
            workflow_run_id = %self.workflow_run_id,
            status = ?outcome.status,
            steps = outcome.total_steps,
            tokens = outcome.total_tokens,
            elapsed_ms = elapsed.as_millis() as u64,
            error = outcome.error.as_deref().unwrap_or(""),
            "workflow run finished"
        );
        if !client_gone {
            // Bounded, as for chat runs: the outcome is stored already.
            let end = FlowEvent::Finished(FlowEnd { outcome, elapsed, finished_at });
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tx.send(end)).await;
        }
    }

    async fn store_outcome(&self, o: &RunOutcome, nodes: &[NodeExecution], elapsed: Duration, finished_at: i64) {
        let store: &Store = &self.svc.store;
        let records = nodes.iter().map(node_record).collect();
        let run = store::WorkflowRunOutcome {
            status: match o.status {
                RunStatus::Succeeded => store::WorkflowRunStatus::Succeeded,
                RunStatus::Failed => store::WorkflowRunStatus::Failed,
                RunStatus::PartialSucceeded => store::WorkflowRunStatus::PartialSucceeded,
                RunStatus::Stopped => store::WorkflowRunStatus::Stopped,
            },
            outputs_json: Value::Object(o.outputs.clone()).to_string(),
            error: o.error.clone(),
            elapsed_secs: elapsed.as_secs_f64(),
            total_tokens: o.total_tokens,
            total_steps: o.total_steps,
            finished_at,
        };
        // The writes are independent: queued together, they share one group
        // commit instead of waiting for one each.
        let run_written = async {
            if let Err(e) = finish_run(store, &self.workflow_run_id, run, records).await {
                tracing::error!(workflow_run_id = %self.workflow_run_id, error = %crate::telemetry::chain(&e), "could not store the finished workflow run");
            }
        };
        let message_written = async {
            let Some(message_id) = &self.message_id else { return };
            let status = match o.status {
                RunStatus::Succeeded | RunStatus::PartialSucceeded => store::MessageStatus::Normal,
                RunStatus::Failed => store::MessageStatus::Error,
                RunStatus::Stopped => store::MessageStatus::Stopped,
            };
            let m = store::MessageOutcome {
                answer: o.answer.clone(),
                prompt_tokens: 0,
                completion_tokens: u32::try_from(o.total_tokens).unwrap_or(u32::MAX),
                latency_ms: elapsed.as_millis() as u64,
                status,
                error: o.error.clone(),
            };
            if let Err(e) = store.finish_message(message_id, m).await {
                tracing::error!(message_id = %message_id, error = %crate::telemetry::chain(&e), "could not store the finished chatflow message");
            }
        };
        let conversation = self.conversation_id.as_deref();
        let variables_written = async {
            let Some(c) = conversation else { return };
            let vars: Vec<_> = o
                .conversation_variables
                .iter()
                .filter(|(name, value)| self.initial_variables.as_ref().is_none_or(|initial| initial.get(*name) != Some(*value)))
                .map(|(name, value)| {
                    let declared = self.workflow.conversation_variables().iter().find(|d| &d.name == name);
                    let value_type = declared.map_or_else(|| wf::vars::type_name_of(value).to_owned(), |d| d.value_type.clone());
                    (name.clone(), value_type, value.to_string(), declared.map(|d| d.description.clone()).unwrap_or_default())
                })
                .collect();
            if !vars.is_empty() {
                if let Err(e) = store.set_conversation_variables(c, vars).await {
                    tracing::error!(conversation_id = %c, error = %crate::telemetry::chain(&e), "could not store the conversation variables");
                }
            }
        };
        let conversation_touched = async {
            let Some(c) = conversation else { return };
            if let Err(e) = store.touch_conversation(c).await {
                tracing::warn!(conversation_id = %c, error = %crate::telemetry::chain(&e), "could not update the conversation time");
            }
        };
        tokio::join!(run_written, message_written, variables_written, conversation_touched);
    }
}

/// Stores a run's outcome; a full write queue is waited out (briefly and
/// boundedly) rather than leaving the run `running` until the next start.
async fn finish_run(
    store: &Store,
    id: &str,
    outcome: store::WorkflowRunOutcome,
    nodes: Vec<store::NodeExecutionRecord>,
) -> Result<(), store::StoreError> {
    const TRIES: u32 = 50;
    for _ in 1..TRIES {
        match store.finish_workflow_run(id, outcome.clone(), nodes.clone()).await {
            Err(store::StoreError::Busy) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => return other,
        }
    }
    store.finish_workflow_run(id, outcome, nodes).await
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A node execution as the store keeps it.
fn node_record(n: &NodeExecution) -> store::NodeExecutionRecord {
    store::NodeExecutionRecord {
        id: n.id.clone(),
        index: n.index,
        node_id: n.node_id.clone(),
        node_type: n.node_type.clone(),
        title: n.title.clone(),
        predecessor_node_id: n.predecessor_node_id.clone(),
        inputs_json: Value::Object(n.inputs.clone()).to_string(),
        process_data_json: Value::Object(n.process_data.clone()).to_string(),
        outputs_json: Value::Object(n.outputs.clone()).to_string(),
        iteration_id: n.parent.as_ref().map(|p| p.0.clone()),
        iteration_index: n.parent.as_ref().map(|p| p.1),
        status: match n.status {
            NodeStatus::Succeeded => store::NodeExecutionStatus::Succeeded,
            NodeStatus::Failed | NodeStatus::Running => store::NodeExecutionStatus::Failed,
            NodeStatus::Exception => store::NodeExecutionStatus::Exception,
            NodeStatus::Stopped => store::NodeExecutionStatus::Stopped,
        },
        error: n.error.clone(),
        elapsed_secs: n.elapsed.as_secs_f64(),
        total_tokens: n.tokens,
        created_at: unix_secs(n.created_at),
        finished_at: n.finished_at.map(unix_secs).unwrap_or_else(now_secs),
    }
}

/// Dify's name of a node execution status.
pub fn node_status(s: NodeStatus) -> &'static str {
    match s {
        NodeStatus::Running => "running",
        NodeStatus::Succeeded => "succeeded",
        NodeStatus::Failed => "failed",
        NodeStatus::Exception => "exception",
        NodeStatus::Stopped => "stopped",
    }
}

/// Dify's name of a run status.
pub fn run_status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::PartialSucceeded => "partial-succeeded",
        RunStatus::Stopped => "stopped",
    }
}

/// The world as this daemon's workflows see it.
struct ServiceEffects {
    svc: Arc<Service>,
    app: Arc<AppDefinition>,
}

impl Effects for ServiceEffects {
    fn llm(&self, call: LlmCall) -> BoxFuture<'static, Result<mpsc::Receiver<LlmChunk>, String>> {
        let svc = Arc::clone(&self.svc);
        let app_id = self.app.id.clone();
        Box::pin(async move {
            let (target, rule) = svc.workflows.model_map.resolve(&call.provider, &call.model);
            match (target, &svc.workflows.upstream) {
                (ModelTarget::Upstream { model }, Some(up)) => match upstream_call(up, &model, &call).await {
                    Ok(rx) => Ok(rx),
                    Err(e) if svc.workflows.fallback_local => {
                        tracing::warn!(node_id = %call.node_id, rule = %rule, error = %e, "upstream model failed; answering with the local model");
                        local_call(&svc.model, &app_id, call).await
                    }
                    Err(e) => Err(e),
                },
                (ModelTarget::Upstream { .. }, None) => {
                    Err(format!("model {}/{} maps to the upstream ({rule}), but no [upstream] url is set", call.provider, call.model))
                }
                (ModelTarget::Local, _) => local_call(&svc.model, &app_id, call).await,
            }
        })
    }

    fn http(&self, call: HttpCall) -> BoxFuture<'static, Result<HttpReply, String>> {
        let svc = Arc::clone(&self.svc);
        Box::pin(async move { svc.workflows.outbound.send(call).await.map_err(|e| crate::telemetry::chain(&e).to_string()) })
    }

    fn knowledge(&self, call: wf::KnowledgeCall) -> BoxFuture<'static, Result<Vec<wf::KnowledgeHit>, String>> {
        let svc = Arc::clone(&self.svc);
        Box::pin(async move {
            let Some(k) = svc.knowledge() else { return Err("knowledge bases are not available in this daemon".into()) };
            k.node_search(call).await.map_err(|e| e.to_string())
        })
    }

    fn code(&self, call: wf::CodeCall) -> BoxFuture<'static, Result<Map<String, Value>, String>> {
        let svc = Arc::clone(&self.svc);
        Box::pin(async move { svc.workflows.code.run(call).await })
    }

    fn file(&self, upload_file_id: String) -> BoxFuture<'static, Result<wf::UploadedFile, String>> {
        let (svc, app) = (Arc::clone(&self.svc), Arc::clone(&self.app));
        Box::pin(async move {
            match svc.read_upload(&svc.workflows.files, &app, &upload_file_id).await {
                Ok(Ok((f, bytes))) => Ok((f.name, f.mime_type, bytes)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(crate::telemetry::chain(&e).to_string()),
            }
        })
    }
}

/// A model call on the local model: templated, admitted (the queue may be
/// full), queued; its events mapped to the engine's chunks. When the engine
/// drops the receiver, the generation is cancelled.
async fn local_call(runtime: &Arc<ModelRuntime>, app_id: &str, call: LlmCall) -> Result<mpsc::Receiver<LlmChunk>, String> {
    let model = runtime.ready().map_err(|e| e.to_string())?;
    let grammar = match &call.json_schema {
        // An empty schema: any JSON object (structured output always answers an object).
        Some(Value::Object(o)) if o.is_empty() => Some(crate::model::grammar::any_json_object_gbnf()),
        Some(schema) => Some(crate::model::grammar::json_schema_to_gbnf(schema).map_err(|e| format!("structured output schema: {e}"))?),
        None => None,
    };
    let messages: Vec<ChatMessage> = call
        .messages
        .iter()
        .map(|(role, text)| match role {
            wf::Role::System => ChatMessage::system(text.clone()),
            wf::Role::User => ChatMessage::user(text.clone()),
            wf::Role::Assistant => ChatMessage::assistant(text.clone()),
        })
        .collect();
    let m = Arc::clone(&model);
    let prompt = tokio::task::spawn_blocking(move || m.prompt(&messages))
        .await
        .map_err(|e| format!("prompt task: {e}"))?
        .map_err(|e| e.to_string())?;
    let params = SamplingParams {
        temperature: call.temperature.unwrap_or(0.7),
        top_p: call.top_p.unwrap_or(0.95),
        top_k: 40,
        max_tokens: call.max_tokens.unwrap_or(256),
        seed: call.seed,
        stop: call.stop.clone(),
        grammar,
    };
    let admission = model.admit(app_id).map_err(|e| e.to_string())?;
    let cancel = CancelFlag::default();
    let mut gen = model.submit(admission, prompt, params, cancel.clone()).map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = gen.recv() => ev,
                _ = tx.closed() => {
                    cancel.cancel();
                    model.withdraw_cancelled();
                    return;
                }
            };
            let chunk = match ev {
                Some(GenEvent::Started { .. }) => continue,
                Some(GenEvent::Text(t)) => LlmChunk::Text(t),
                Some(GenEvent::Done { reason, prompt_tokens, completion_tokens }) => {
                    let finish_reason = match reason {
                        FinishReason::Stop => "stop",
                        FinishReason::Length => "length",
                        FinishReason::Cancelled => "cancelled",
                    };
                    LlmChunk::Done { prompt_tokens, completion_tokens, finish_reason: finish_reason.to_owned() }
                }
                Some(GenEvent::Failed(e)) => LlmChunk::Failed(e),
                None => return,
            };
            if tx.send(chunk).await.is_err() {
                cancel.cancel();
                model.withdraw_cancelled();
                return;
            }
        }
    });
    Ok(rx)
}

/// A model call on the upstream endpoint, its events mapped to the engine's chunks.
async fn upstream_call(up: &Upstream, model: &str, call: &LlmCall) -> Result<mpsc::Receiver<LlmChunk>, String> {
    let req = UpstreamRequest {
        model: model.to_owned(),
        messages: call
            .messages
            .iter()
            .map(|(role, text)| {
                let r = match role {
                    wf::Role::System => crate::model::Role::System,
                    wf::Role::User => crate::model::Role::User,
                    wf::Role::Assistant => crate::model::Role::Assistant,
                };
                (r, text.clone())
            })
            .collect(),
        temperature: call.temperature,
        top_p: call.top_p,
        max_tokens: call.max_tokens,
        stop: call.stop.clone(),
        seed: call.seed,
        json_schema: call.json_schema.clone(),
    };
    let mut events = up.chat(req).await.map_err(|e| crate::telemetry::chain(&e).to_string())?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                // The engine stopped listening (stop, timeout): end the call now.
                _ = tx.closed() => return,
            };
            let Some(ev) = ev else { return };
            let chunk = match ev {
                UpstreamEvent::Text(t) => LlmChunk::Text(t),
                UpstreamEvent::Done { prompt_tokens, completion_tokens, finish_reason } => {
                    LlmChunk::Done { prompt_tokens, completion_tokens, finish_reason }
                }
                UpstreamEvent::Failed(e) => LlmChunk::Failed(e),
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Whether an app is run by the workflow engine.
pub fn is_workflow_mode(mode: AppMode) -> bool {
    matches!(mode, AppMode::Workflow | AppMode::AdvancedChat)
}
