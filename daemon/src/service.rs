//! The service layer: what a chat, completion or OpenAI request does, written
//! once for every front end (HTTP today, D-Bus later). It resolves apps,
//! checks inputs, builds the prompt within the context budget, runs the
//! generation as a task of its own (so a vanished client never leaves a
//! message half-written), persists the outcome, and tracks in-flight runs
//! for stop and for the shutdown drain.
//! Knows nothing of HTTP or JSON wire shapes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, Notify};

use crate::engine::prompt::{build_messages, validate_inputs};
use crate::engine::{AppDefinition, AppMode};
use crate::model::{CancelFlag, ChatMessage, FinishReason, GenEvent, LocalModel, ModelError, ModelRuntime, Prompt, SamplingParams};
use crate::store::{self, MessageOutcome, MessageStatus, NewMessage, Store, StoreError};

/// Longest accepted query, in characters (the context is the real bound;
/// this stops a client from making us tokenise megabytes first).
pub const MAX_QUERY_CHARS: usize = 64 * 1024;
/// Longest `user` identifier.
pub const MAX_USER_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidParam(String),
    #[error("Conversation Not Exists.")]
    ConversationNotFound,
    /// `last_id` of a conversation page that does not exist.
    #[error("Last Conversation Not Exists.")]
    LastConversationNotFound,
    /// `first_id` of a message page that does not exist.
    #[error("First Message Not Exists.")]
    FirstMessageNotFound,
    #[error("Message Not Exists.")]
    MessageNotFound,
    #[error("app {0:?} does not exist")]
    AppNotFound(String),
    #[error("API key {0:?} does not exist")]
    KeyNotFound(String),
    #[error("app {id:?} is invalid: {problems}")]
    AppInvalid { id: String, problems: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(StoreError),
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e)
    }
}

/// Token counts and timing of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub latency: Duration,
    /// From the start of the run to its first text; `None` without text.
    pub first_token: Option<Duration>,
}

/// What a running generation tells its front end.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Text(String),
    /// The answer is complete (or was stopped) and is stored.
    End {
        usage: Usage,
        finish: FinishReason,
    },
    /// Generation failed; the message is stored with status error.
    Failed {
        message: String,
    },
}

/// A started run: ids for the client, and its events.
pub struct Run {
    pub task_id: String,
    pub message_id: String,
    pub conversation_id: Option<String>,
    pub created_at: i64,
    pub events: mpsc::Receiver<RunEvent>,
    /// Why the front end stopped listening, if it did (see [`Run::abandon`]).
    left: Arc<OnceLock<String>>,
}

impl Run {
    /// The front end stops listening: the run is cancelled and stored as
    /// stopped with `reason` (instead of "client disconnected").
    pub fn abandon(self, reason: String) {
        let _ = self.left.set(reason);
    }
}

/// A Dify chat or completion request after wire parsing.
pub struct AppRequest {
    pub user: String,
    pub query: String,
    pub inputs: Map<String, Value>,
    pub conversation_id: Option<String>,
}

/// An OpenAI chat completion request after wire parsing.
pub struct OpenAiRequest {
    pub messages: Vec<ChatMessage>,
    pub params: SamplingParams,
}

struct TaskEntry {
    app_id: String,
    user: String,
    cancel: CancelFlag,
}

/// Counts runs in flight; the drain waits for zero.
#[derive(Default)]
struct Inflight {
    count: AtomicU64,
    idle: Notify,
}

struct InflightGuard(Arc<Inflight>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

pub struct Service {
    pub store: Store,
    pub model: Arc<ModelRuntime>,
    apps: RwLock<HashMap<String, Arc<AppDefinition>>>,
    tasks: Arc<Mutex<HashMap<String, TaskEntry>>>,
    inflight: Arc<Inflight>,
    shutting_down: AtomicBool,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Service {
    pub fn new(store: Store, model: Arc<ModelRuntime>) -> Arc<Self> {
        Arc::new(Service {
            store,
            model,
            apps: RwLock::new(HashMap::new()),
            tasks: Arc::new(Mutex::new(HashMap::new())),
            inflight: Arc::new(Inflight::default()),
            shutting_down: AtomicBool::new(false),
        })
    }

    // ---- apps -------------------------------------------------------------

    /// Validates and stores an app (a new version if it changed) and makes
    /// it the active definition. Returns the stored version and whether it
    /// was new.
    pub async fn put_app(&self, app: AppDefinition, source: &str) -> Result<store::AppVersion, ServiceError> {
        let mut problems = app.validate();
        if let Some(m) = app.model.as_deref().filter(|m| *m != self.model.config.name) {
            problems.push(crate::engine::AppProblem {
                field: "model".into(),
                message: format!("{m:?} is not served here; this daemon serves {:?}", self.model.config.name),
            });
        }
        if !problems.is_empty() {
            let problems = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            return Err(ServiceError::AppInvalid { id: app.id, problems });
        }
        let json = serde_json::to_string(&app).map_err(|e| ServiceError::InvalidParam(e.to_string()))?;
        let v = self.store.put_app(&app.id, &app.name, app.mode.as_str(), &json, source).await?;
        if let Ok(mut apps) = self.apps.write() {
            apps.insert(app.id.clone(), Arc::new(app));
        }
        Ok(v)
    }

    /// Loads every stored app's active definition into memory.
    pub async fn load_apps(&self) -> Result<usize, ServiceError> {
        let stored = self.store.list_apps().await?;
        let mut map = HashMap::new();
        for s in stored {
            match serde_json::from_str::<AppDefinition>(&s.definition_json) {
                Ok(def) => {
                    map.insert(s.id.clone(), Arc::new(def));
                }
                Err(e) => {
                    tracing::error!(app = %s.id, version = s.version, error = %e, "stored app definition does not parse; app unavailable")
                }
            }
        }
        let n = map.len();
        if let Ok(mut apps) = self.apps.write() {
            *apps = map;
        }
        Ok(n)
    }

    pub fn app(&self, id: &str) -> Option<Arc<AppDefinition>> {
        self.apps.read().ok().and_then(|a| a.get(id).cloned())
    }

    // ---- conversations, messages, feedback ----------------------------------
    // Always scoped by app and user: another user's conversation is "not
    // found", exactly like an unknown one, as in Dify.

    pub async fn conversations(
        &self,
        app: &AppDefinition,
        user: &str,
        last_id: Option<&str>,
        limit: u32,
        sort: store::ConversationSort,
    ) -> Result<(Vec<store::Conversation>, bool), ServiceError> {
        // Only `last_id` can be missing here.
        self.store
            .list_conversations(&app.id, user, last_id, limit, sort)
            .await
            .map_err(not_found_as(ServiceError::LastConversationNotFound))
    }

    pub async fn delete_conversation(&self, app: &AppDefinition, user: &str, id: &str) -> Result<(), ServiceError> {
        self.store.delete_conversation(&app.id, user, id).await.map_err(not_found_as(ServiceError::ConversationNotFound))
    }

    /// Renames a conversation; `None` names it after its first question
    /// (Dify asks the model; a gateway spends no inference on it).
    pub async fn rename_conversation(
        &self,
        app: &AppDefinition,
        user: &str,
        id: &str,
        name: Option<String>,
    ) -> Result<store::Conversation, ServiceError> {
        let nf = || not_found_as(ServiceError::ConversationNotFound);
        let name = match name {
            Some(n) => n,
            None => {
                let (first, _) = self.store.list_messages(&app.id, user, id, None, 1).await.map_err(nf())?;
                // The page holds the newest message; the first question is
                // the oldest one, so page back to it when there are more.
                let mut oldest = first.first().cloned();
                let mut cursor = oldest.as_ref().map(|m| m.id.clone());
                while let Some(c) = cursor.take() {
                    let (page, _) = self.store.list_messages(&app.id, user, id, Some(&c), 100).await.map_err(nf())?;
                    if let Some(m) = page.first() {
                        cursor = Some(m.id.clone());
                        oldest = Some(m.clone());
                    }
                }
                conversation_name(oldest.map(|m| m.query).as_deref().unwrap_or(""))
            }
        };
        self.store.rename_conversation(&app.id, user, id, &name).await.map_err(nf())
    }

    pub async fn messages(
        &self,
        app: &AppDefinition,
        user: &str,
        conversation_id: &str,
        first_id: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<store::Message>, bool), ServiceError> {
        self.store.list_messages(&app.id, user, conversation_id, first_id, limit).await.map_err(|e| match e {
            StoreError::NotFound { what: "message", .. } => ServiceError::FirstMessageNotFound,
            other => not_found_as(ServiceError::ConversationNotFound)(other),
        })
    }

    pub async fn feedback(
        &self,
        app: &AppDefinition,
        user: &str,
        message_id: &str,
        rating: Option<store::Rating>,
        content: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.store.set_feedback(&app.id, user, message_id, rating, content).await.map_err(not_found_as(ServiceError::MessageNotFound))
    }

    // ---- API keys -----------------------------------------------------------

    /// A new key for an existing app: its info and the secret (shown once).
    pub async fn create_key(&self, app_id: &str) -> Result<(store::ApiKeyInfo, String), ServiceError> {
        self.require_app(app_id).await?;
        let (info, secret) = self.store.create_key(app_id).await?;
        tracing::info!(app = %info.app_id, key_id = %info.id, prefix = %info.prefix, "API key created");
        Ok((info, secret))
    }

    pub async fn keys(&self, app_id: Option<&str>) -> Result<Vec<store::ApiKeyInfo>, ServiceError> {
        if let Some(a) = app_id {
            self.require_app(a).await?;
        }
        Ok(self.store.list_keys(app_id).await?)
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<store::ApiKeyInfo, ServiceError> {
        let info = self.store.revoke_key(key_id).await.map_err(not_found_as(ServiceError::KeyNotFound(key_id.to_owned())))?;
        tracing::info!(app = %info.app_id, key_id = %info.id, "API key revoked");
        Ok(info)
    }

    async fn require_app(&self, app_id: &str) -> Result<store::StoredApp, ServiceError> {
        self.store.get_app(app_id).await?.ok_or_else(|| ServiceError::AppNotFound(app_id.to_owned()))
    }

    // ---- runs -------------------------------------------------------------

    /// Starts a Dify chat or completion turn for `app`.
    pub async fn start(&self, app: Arc<AppDefinition>, req: AppRequest) -> Result<Run, ServiceError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(ServiceError::ShuttingDown);
        }
        check_user(&req.user)?;
        if req.query.chars().count() > MAX_QUERY_CHARS {
            return Err(ServiceError::InvalidParam(format!("query is longer than {MAX_QUERY_CHARS} characters")));
        }
        if app.mode == AppMode::Chat && req.query.trim().is_empty() {
            return Err(ServiceError::InvalidParam("query is required".into()));
        }
        let conversation = match (&req.conversation_id, app.mode) {
            (Some(id), AppMode::Chat) => {
                Some(self.store.get_conversation(&app.id, &req.user, id).await.map_err(not_found_as(ServiceError::ConversationNotFound))?)
            }
            _ => None,
        };
        // A conversation keeps the inputs it started with, as in Dify.
        let inputs = match &conversation {
            Some(c) => serde_json::from_str(&c.inputs_json).unwrap_or_default(),
            None => validate_inputs(&app, &req.inputs).map_err(|e| ServiceError::InvalidParam(e.0))?,
        };
        let model = self.model.ready()?;
        let history = match &conversation {
            Some(c) => self.store.history(&c.id, app.history_turns).await?,
            None => Vec::new(),
        };
        let params = SamplingParams::from(&app.completion_params);
        let prompt =
            fit_prompt(Arc::clone(&model), Arc::clone(&app), inputs.clone(), history, req.query.clone(), params.max_tokens).await?;
        let cancel = CancelFlag::default();
        let gen = model.submit(prompt, params, cancel.clone())?;

        let conversation_id = match (conversation, app.mode) {
            (Some(c), _) => Some(c.id),
            (None, AppMode::Chat) => {
                let inputs_json = Value::Object(inputs.clone()).to_string();
                let c = self.store.create_conversation(&app.id, &req.user, &conversation_name(&req.query), &inputs_json).await;
                match c {
                    Ok(c) => Some(c.id),
                    Err(e) => {
                        cancel.cancel();
                        return Err(e.into());
                    }
                }
            }
            (None, AppMode::Completion) => None,
        };
        let task_id = new_id();
        let message_id = new_id();
        let begun = self
            .store
            .begin_message(NewMessage {
                id: message_id.clone(),
                app_id: app.id.clone(),
                conversation_id: conversation_id.clone(),
                user: req.user.clone(),
                task_id: task_id.clone(),
                query: req.query.clone(),
                inputs_json: Value::Object(inputs).to_string(),
            })
            .await;
        if let Err(e) = begun {
            cancel.cancel();
            return Err(e.into());
        }
        let (events, left) = self.spawn_run(
            model,
            task_id.clone(),
            app.id.clone(),
            req.user,
            cancel,
            gen,
            Some((message_id.clone(), conversation_id.clone())),
        );
        Ok(Run { task_id, message_id, conversation_id, created_at: now_secs(), events, left })
    }

    /// Starts an OpenAI-style completion: stateless, nothing stored.
    pub async fn start_openai(&self, app: &AppDefinition, req: OpenAiRequest) -> Result<Run, ServiceError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(ServiceError::ShuttingDown);
        }
        let model = self.model.ready()?;
        let msgs = req.messages;
        let m = Arc::clone(&model);
        let prompt = tokio::task::spawn_blocking(move || m.prompt(&msgs)).await.map_err(|e| ModelError::Inference(e.to_string()))??;
        let cancel = CancelFlag::default();
        let gen = model.submit(prompt, req.params, cancel.clone())?;
        let task_id = new_id();
        let (events, left) = self.spawn_run(model, task_id.clone(), app.id.clone(), String::new(), cancel, gen, None);
        Ok(Run { task_id: task_id.clone(), message_id: task_id, conversation_id: None, created_at: now_secs(), events, left })
    }

    /// Runs one generation to its end in a task of its own and returns the
    /// front end's event stream, and where the front end leaves its reason
    /// for abandoning it. `persist` carries (message_id, conversation).
    #[allow(clippy::too_many_arguments)]
    fn spawn_run(
        &self,
        model: Arc<LocalModel>,
        task_id: String,
        app_id: String,
        user: String,
        cancel: CancelFlag,
        mut gen: mpsc::Receiver<GenEvent>,
        persist: Option<(String, Option<String>)>,
    ) -> (mpsc::Receiver<RunEvent>, Arc<OnceLock<String>>) {
        let (tx, rx) = mpsc::channel(64);
        let left: Arc<OnceLock<String>> = Arc::default();
        let reason = Arc::clone(&left);
        if let Ok(mut t) = self.tasks.lock() {
            t.insert(task_id.clone(), TaskEntry { app_id, user, cancel: cancel.clone() });
        }
        self.inflight.count.fetch_add(1, Ordering::AcqRel);
        let guard = InflightGuard(Arc::clone(&self.inflight));
        let store = self.store.clone();
        let tasks = Arc::clone(&self.tasks);
        let started = Instant::now();
        tokio::spawn(async move {
            let _guard = guard;
            let mut answer = String::new();
            let mut client_gone = false;
            let mut outcome: Option<(FinishReason, u32, u32)> = None;
            let mut failure: Option<String> = None;
            let mut first_token: Option<Duration> = None;
            loop {
                let ev = tokio::select! {
                    ev = gen.recv() => match ev {
                        Some(ev) => ev,
                        None => break,
                    },
                    // The client went away before any text (e.g. while the
                    // job waited in the queue): cancel and free its place.
                    _ = tx.closed(), if !client_gone => {
                        client_gone = true;
                        cancel.cancel();
                        model.withdraw_cancelled();
                        continue;
                    }
                };
                match ev {
                    GenEvent::Started { .. } => {}
                    GenEvent::Text(t) => {
                        first_token.get_or_insert_with(|| started.elapsed());
                        answer.push_str(&t);
                        if !client_gone && tx.send(RunEvent::Text(t)).await.is_err() {
                            // The client went away: stop generating, keep what we have.
                            client_gone = true;
                            cancel.cancel();
                            model.withdraw_cancelled();
                        }
                    }
                    GenEvent::Done { reason, prompt_tokens, completion_tokens } => {
                        outcome = Some((reason, prompt_tokens, completion_tokens));
                    }
                    GenEvent::Failed(e) => failure = Some(e),
                }
            }
            let latency = started.elapsed();
            let (finish, prompt_tokens, completion_tokens) = outcome.unwrap_or((FinishReason::Cancelled, 0, 0));
            let (status, error) = match (&failure, finish, client_gone) {
                (Some(e), _, _) => (MessageStatus::Error, Some(e.clone())),
                (None, FinishReason::Cancelled, true) => {
                    (MessageStatus::Stopped, Some(reason.get().cloned().unwrap_or_else(|| "client disconnected".to_owned())))
                }
                (None, FinishReason::Cancelled, false) if outcome.is_none() => {
                    (MessageStatus::Error, Some("the inference thread ended the request without an answer".to_owned()))
                }
                (None, FinishReason::Cancelled, false) => (MessageStatus::Stopped, None),
                (None, _, _) => (MessageStatus::Normal, None),
            };
            if let Some((message_id, conversation_id)) = persist {
                let o = MessageOutcome {
                    answer: answer.clone(),
                    prompt_tokens,
                    completion_tokens,
                    latency_ms: latency.as_millis() as u64,
                    status,
                    error: error.clone(),
                };
                if let Err(e) = store.finish_message(&message_id, o).await {
                    tracing::error!(message_id = %message_id, error = %e, "could not store the finished message");
                }
                if let Some(c) = conversation_id {
                    if let Err(e) = store.touch_conversation(&c).await {
                        tracing::warn!(conversation_id = %c, error = %e, "could not update the conversation time");
                    }
                }
            }
            if let Ok(mut t) = tasks.lock() {
                t.remove(&task_id);
            }
            let last = match failure {
                Some(message) => RunEvent::Failed { message },
                None => RunEvent::End { usage: Usage { prompt_tokens, completion_tokens, latency, first_token }, finish },
            };
            let _ = tx.send(last).await;
            tracing::info!(task_id = %task_id, prompt_tokens, completion_tokens, latency_ms = latency.as_millis() as u64, status = ?status, error = error.as_deref().unwrap_or(""), "run finished");
        });
        (rx, left)
    }

    /// Dify's stop: cancels the task if it belongs to this app and user;
    /// unknown tasks are ignored, as in Dify.
    pub fn stop(&self, app_id: &str, user: &str, task_id: &str) {
        if let Ok(t) = self.tasks.lock() {
            if let Some(e) = t.get(task_id) {
                if e.app_id == app_id && e.user == user {
                    e.cancel.cancel();
                    tracing::info!(task_id, "run stopped by the client");
                }
            }
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.inflight.count.load(Ordering::Acquire)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Refuses new runs from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Waits until no run is in flight, or `deadline` passes; then cancels
    /// the stragglers and waits (briefly) for them to record their outcome.
    pub async fn drain(&self, deadline: Duration) -> u64 {
        let wait_idle = async {
            loop {
                let notified = self.inflight.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(deadline, wait_idle).await.is_ok() {
            return 0;
        }
        let left = self.in_flight();
        tracing::warn!(runs = left, "drain deadline passed; cancelling the remaining runs");
        if let Ok(t) = self.tasks.lock() {
            t.values().for_each(|e| e.cancel.cancel());
        }
        let settle = async {
            while self.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), settle).await;
        left
    }
}

fn check_user(user: &str) -> Result<(), ServiceError> {
    if user.trim().is_empty() {
        return Err(ServiceError::InvalidParam("user is required".into()));
    }
    if user.chars().count() > MAX_USER_CHARS {
        return Err(ServiceError::InvalidParam(format!("user is longer than {MAX_USER_CHARS} characters")));
    }
    Ok(())
}

fn not_found_as(e: ServiceError) -> impl FnOnce(StoreError) -> ServiceError {
    move |s| match s {
        StoreError::NotFound { .. } => e,
        other => ServiceError::Store(other),
    }
}

/// A conversation's name until renamed: the start of its first query.
fn conversation_name(query: &str) -> String {
    let q = query.trim();
    let mut name: String = q.chars().take(40).collect();
    if q.chars().count() > 40 {
        name.push('…');
    }
    if name.is_empty() {
        "New conversation".into()
    } else {
        name
    }
}

/// Renders and tokenises the turn, dropping the oldest history turns until
/// prompt plus answer fit one sequence (off the event loop).
async fn fit_prompt(
    model: Arc<LocalModel>,
    app: Arc<AppDefinition>,
    inputs: Map<String, Value>,
    history: Vec<(String, String)>,
    query: String,
    max_tokens: u32,
) -> Result<Prompt, ServiceError> {
    tokio::task::spawn_blocking(move || {
        let mut skip = 0;
        loop {
            let msgs = build_messages(&app, &inputs, &history[skip..], &query);
            let prompt = model.prompt(&msgs)?;
            match model.check_fits(&prompt, max_tokens) {
                Ok(()) => return Ok(prompt),
                Err(e) if skip >= history.len() => return Err(ServiceError::Model(e)),
                Err(_) => skip += 1,
            }
        }
    })
    .await
    .map_err(|e| ServiceError::Model(ModelError::Inference(format!("prompt task: {e}"))))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_must_be_present_and_bounded() {
        assert!(check_user("plc-7").is_ok());
        assert!(matches!(check_user("  "), Err(ServiceError::InvalidParam(m)) if m == "user is required"));
        let long = "u".repeat(MAX_USER_CHARS + 1);
        assert!(matches!(check_user(&long), Err(ServiceError::InvalidParam(m)) if m.contains("longer")));
    }

    #[test]
    fn conversations_are_named_after_the_first_question() {
        assert_eq!(conversation_name("  What is a PLC?  "), "What is a PLC?");
        assert_eq!(conversation_name(""), "New conversation");
        let long = "é".repeat(50);
        let name = conversation_name(&long);
        assert_eq!(name.chars().count(), 41, "40 characters and an ellipsis, cut on a character boundary");
        assert!(name.ends_with('…'));
    }

    #[test]
    fn a_missing_store_row_becomes_the_domain_error() {
        let e = not_found_as(ServiceError::MessageNotFound)(StoreError::NotFound { what: "message", id: "x".into() });
        assert!(matches!(e, ServiceError::MessageNotFound));
        let e = not_found_as(ServiceError::MessageNotFound)(StoreError::Busy);
        assert!(matches!(e, ServiceError::Store(StoreError::Busy)));
    }
}
