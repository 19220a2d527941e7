//! The service layer: what a request does, written once for every front
//! end (HTTP today, D-Bus later). It resolves apps (the registry of served
//! apps), orchestrates a turn — the engine checks and renders it, the store
//! keeps the conversation and the pending message, the model runs it in a
//! run task (`run`) — and passes conversations, messages, feedback and keys
//! through to the store, scoped by app and user.
//! Knows nothing of HTTP or JSON wire shapes.

pub mod annotations;
pub mod backup;
mod cached;
pub mod code;
pub mod doctor;
pub mod export;
pub mod knowledge;
pub mod outbound;
pub mod restore;
mod run;
pub mod workflow;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::{Map, Value};

use crate::engine::{AppDefinition, AppMode, Turn, TurnError, TurnRequest};
use crate::model::{Admission, CancelFlag, ChatMessage, LocalModel, ModelError, ModelRuntime, Prompt, SamplingParams};
use crate::store::{self, NewMessage, Store, StoreError};
use run::{Persist, RunSpec, Runs};
pub use run::{Run, RunEvent, Usage};

pub mod features;

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
    /// A DSL the engine refuses, with every problem (one per line).
    #[error("the DSL cannot be imported:\n{}", .0.join("\n"))]
    DslInvalid(Vec<String>),
    /// A stored app that cannot be written back as DSL.
    #[error("app {app:?} cannot be exported: {reason}")]
    ExportFailed { app: String, reason: String },
    #[error("app {0:?} is not a workflow app")]
    NotWorkflowApp(String),
    #[error("app {app:?} has no version {version}")]
    AppVersionNotFound { app: String, version: u32 },
    #[error("Workflow {0:?} not found.")]
    WorkflowNotFound(String),
    #[error("Workflow run {0:?} not found.")]
    WorkflowRunNotFound(String),
    #[error("Conversation variable {0:?} not found.")]
    ConversationVariableNotFound(String),
    /// A model name the daemon does not have (LoadModel, UnloadModel).
    #[error("no model {name:?}; the chat model is {chat:?} (edgeaictl models list)")]
    ModelNotFound { name: String, chat: String },
    #[error("app {id:?} is invalid: {problems}")]
    AppInvalid { id: String, problems: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    /// New generations are refused under memory pressure.
    #[error(transparent)]
    Governor(#[from] crate::governor::pressure::GovernorError),
    #[error(transparent)]
    Store(StoreError),
    /// The app's knowledge search failed (an app with datasets).
    #[error(transparent)]
    Knowledge(Box<knowledge::KnowledgeError>),
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// Stored state the daemon cannot use (a bug or a damaged store).
    #[error("stored {what} is unusable: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e)
    }
}

impl From<TurnError> for ServiceError {
    fn from(e: TurnError) -> Self {
        match e {
            TurnError::Invalid(m) => ServiceError::InvalidParam(m),
            TurnError::Model(m) => ServiceError::Model(m),
        }
    }
}

/// The model as `status` reports it.
pub struct ModelReport {
    pub status: crate::model::RuntimeStatus,
    pub config: crate::model::RuntimeConfig,
    /// Inference threads in use now.
    pub threads: u32,
    /// Places taken in the admission queue (0 without a loaded model).
    pub queued: usize,
    /// Those places by app (apps holding none are left out).
    pub queued_by_app: Vec<(Arc<str>, usize)>,
}

/// What an API key opens.
pub enum KeyLookup {
    /// No such key, or it was revoked.
    Unknown,
    /// The key's app is not served (removed from the config, or its
    /// stored definition does not parse).
    AppNotServed,
    App(Arc<AppDefinition>),
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

/// A served app: its active definition with that version's number and
/// workflow id, replaced together, so a run never pairs a graph with
/// another version's number.
#[derive(Clone)]
pub(crate) struct Served {
    pub def: Arc<AppDefinition>,
    pub version: u32,
    pub workflow_id: String,
}

pub struct Service {
    store: Store,
    model: Arc<ModelRuntime>,
    apps: RwLock<HashMap<String, Served>>,
    /// Serialises changes to the app set (admin import, config at start and
    /// on SIGHUP), so the store and the registry never disagree.
    apps_change: tokio::sync::Mutex<()>,
    runs: Arc<Runs>,
    shutting_down: AtomicBool,
    /// Model mapping, upstream, outbound HTTP and limits of workflow runs.
    workflows: workflow::WorkflowRuntime,
    /// Knowledge bases, once started (after the store and the embedder).
    knowledge: std::sync::OnceLock<Arc<knowledge::Knowledge>>,
    /// Annotation replies, attached with the knowledge service (its embedder).
    annotations: std::sync::OnceLock<Arc<annotations::Annotations>>,
    /// The memory governor, asked before each new generation.
    governor: std::sync::OnceLock<Arc<crate::governor::pressure::Governor>>,
    /// The response cache, attached at start (see `cached`).
    cache: std::sync::OnceLock<Arc<crate::cache::ResponseCache>>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A new message, task, conversation or run id: a UUIDv7, time-ordered, so
/// the store's primary-key and conversation indexes grow at their end (with
/// random v4 ids every group commit dirtied a random page of each index per
/// row, which was most of a cache hit's cost).
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Service {
    /// Attaches the knowledge service (once, at start).
    pub fn set_knowledge(&self, k: Arc<knowledge::Knowledge>) {
        let a = annotations::Annotations::new(self.store.clone(), k.loaded_embedder().cloned(), k.dir().join("annotations"));
        let _ = self.annotations.set(a);
        if self.knowledge.set(k).is_err() {
            tracing::warn!("the knowledge service was attached twice; keeping the first");
        }
    }

    /// Attaches the memory governor (once, at start).
    pub fn set_governor(&self, g: Arc<crate::governor::pressure::Governor>) {
        if self.governor.set(g).is_err() {
            tracing::warn!("the memory governor was attached twice; keeping the first");
        }
    }

    /// The memory governor, when attached.
    pub fn governor(&self) -> Option<&Arc<crate::governor::pressure::Governor>> {
        self.governor.get()
    }

    /// Refuses a new generation (a chat, completion, OpenAI or workflow
    /// start) while the governor sheds; running ones are not affected.
    pub(crate) fn admit_new(&self) -> Result<(), ServiceError> {
        match self.governor.get() {
            Some(g) => Ok(g.admit_new()?),
            None => Ok(()),
        }
    }

    /// Annotation replies, when the knowledge service runs.
    pub fn annotations(&self) -> Option<&Arc<annotations::Annotations>> {
        self.annotations.get()
    }

    /// What runs workflow code nodes.
    pub fn code_status(&self) -> code::CodeStatus {
        self.workflows.code.status()
    }

    /// The knowledge service, when it runs.
    pub fn knowledge(&self) -> Option<&Arc<knowledge::Knowledge>> {
        self.knowledge.get()
    }

    pub fn new(store: Store, model: Arc<ModelRuntime>, workflows: workflow::WorkflowRuntime) -> Arc<Self> {
        Arc::new(Service {
            workflows,
            store,
            model,
            apps: RwLock::new(HashMap::new()),
            apps_change: tokio::sync::Mutex::new(()),
            runs: Arc::new(Runs::default()),
            shutting_down: AtomicBool::new(false),
            knowledge: std::sync::OnceLock::new(),
            annotations: std::sync::OnceLock::new(),
            governor: std::sync::OnceLock::new(),
            cache: std::sync::OnceLock::new(),
        })
    }

    // ---- apps -------------------------------------------------------------

    /// Validates and stores an imported app (a new version if it changed)
    /// and makes it the active definition. Returns the stored version and
    /// whether it was new.
    pub async fn put_app(&self, app: AppDefinition, source: &str) -> Result<store::AppVersion, ServiceError> {
        let _change = self.apps_change.lock().await;
        self.store_app(app, source).await
    }

    /// Store first, then the registry, under `apps_change`.
    async fn store_app(&self, app: AppDefinition, source: &str) -> Result<store::AppVersion, ServiceError> {
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
        // Test builds: widen the window between the store and the registry.
        #[cfg(feature = "failpoints")]
        if let Some(d) = (|| {
            fail::fail_point!("app-stored", |ms| ms.and_then(|m| m.parse().ok()).map(std::time::Duration::from_millis));
            None
        })() {
            tokio::time::sleep(d).await;
        }
        let served = Served { def: Arc::new(app), version: v.version, workflow_id: v.workflow_id.clone() };
        let before = self.apps.write().unwrap_or_else(PoisonError::into_inner).insert(served.def.id.clone(), served).map(|s| s.version);
        self.cache_version_changed(&v.app_id, before, v.version);
        Ok(v)
    }

    /// Imports a Dify DSL document: every problem is reported at once and
    /// nothing is stored unless there is none. Returns the stored version
    /// and which model each node maps to.
    /// `datasets`: `OLD=NEW` pairs mapping the DSL's dataset ids to local
    /// datasets (id or name); local ids and names map to themselves.
    pub async fn import_dsl(
        &self,
        yaml: &str,
        id: Option<String>,
        name: Option<String>,
        datasets: &[(String, String)],
    ) -> Result<(store::AppVersion, Vec<workflow::ModelMapping>), ServiceError> {
        let datasets = match self.knowledge() {
            Some(k) => k.dataset_resolution(datasets).await.map_err(|e| ServiceError::InvalidParam(e.to_string()))?,
            None if datasets.is_empty() => Default::default(),
            None => return Err(ServiceError::InvalidParam("--dataset: knowledge bases are not available in this daemon".into())),
        };
        let opts = crate::engine::workflow::dsl::ImportOptions { id, name, caps: self.workflows.code.capabilities(), datasets };
        let app = crate::engine::workflow::dsl::import(yaml, &opts)
            .map_err(|problems| ServiceError::DslInvalid(problems.iter().map(ToString::to_string).collect()))?;
        let models = self.model_mappings(&app);
        let v = self.put_app(app, "import").await?;
        Ok((v, models))
    }

    /// Every stored version of an app, newest first.
    pub async fn app_versions(&self, id: &str) -> Result<Vec<store::AppVersionInfo>, ServiceError> {
        self.store.list_app_versions(id).await.map_err(not_found_as(ServiceError::AppNotFound(id.to_owned())))
    }

    /// Makes a stored version the active one, at once (a run in flight
    /// finishes on the version it started with).
    pub async fn activate_app_version(&self, id: &str, version: u32) -> Result<store::StoredApp, ServiceError> {
        let _change = self.apps_change.lock().await;
        let def = self.app_version(id, version).await?;
        let stored = self.store.activate_app_version(id, version).await?;
        let served = Served { def: Arc::new(def), version: stored.version, workflow_id: stored.workflow_id.clone() };
        let before = self.apps.write().unwrap_or_else(PoisonError::into_inner).insert(id.to_owned(), served).map(|s| s.version);
        self.cache_version_changed(id, before, stored.version);
        tracing::info!(app = %id, version, "app version activated");
        Ok(stored)
    }

    /// An app version (the active one by default) as Dify DSL YAML.
    pub async fn export_app(&self, id: &str, version: Option<u32>) -> Result<(u32, String), ServiceError> {
        let version = match version {
            Some(v) => v,
            None => self.require_app(id).await?.version,
        };
        let def = self.app_version(id, version).await?;
        let yaml = crate::engine::workflow::dsl::export(&def)
            .map_err(|e| ServiceError::ExportFailed { app: id.to_owned(), reason: e.to_string() })?;
        Ok((version, yaml))
    }

    async fn app_version(&self, id: &str, version: u32) -> Result<AppDefinition, ServiceError> {
        self.require_app(id).await?;
        let v = self
            .store
            .get_app_version(id, version)
            .await
            .map_err(not_found_as(ServiceError::AppVersionNotFound { app: id.to_owned(), version }))?;
        serde_json::from_str(&v.definition_json)
            .map_err(|e| ServiceError::Corrupt { what: "app version", reason: format!("{id} version {version}: {e}") })
    }

    /// Makes the served apps those of `config` plus every imported app:
    /// stores each config app (a new version if it changed), then reloads
    /// the registry from the store, leaving out apps that came from the
    /// config and are no longer in it (their data stays in the store).
    /// Used at start and on SIGHUP. Returns (apps served, config apps that
    /// changed); an invalid app is reported and the others still apply. If
    /// the served set cannot be read back from the store, that is the error
    /// and the registry keeps what it served before.
    pub async fn sync_config_apps(
        &self,
        config: Vec<AppDefinition>,
    ) -> Result<(usize, Vec<(String, Result<bool, ServiceError>)>), ServiceError> {
        let _change = self.apps_change.lock().await;
        let ids: HashSet<String> = config.iter().map(|a| a.id.clone()).collect();
        let mut results = Vec::with_capacity(config.len());
        for app in config {
            let id = app.id.clone();
            results.push((id, self.store_app(app, "config").await.map(|v| v.created)));
        }
        let served = self.load_apps(|s| s.source != "config" || ids.contains(&s.id)).await?;
        Ok((served, results))
    }

    /// Loads the active definition of every stored app that `serve` admits.
    async fn load_apps(&self, serve: impl Fn(&store::StoredApp) -> bool) -> Result<usize, ServiceError> {
        let stored = self.store.list_apps().await?;
        let mut map = HashMap::new();
        for s in stored {
            if !serve(&s) {
                tracing::info!(app = %s.id, "app no longer in the configuration; not served (its data is kept)");
                continue;
            }
            match serde_json::from_str::<AppDefinition>(&s.definition_json) {
                Ok(def) => {
                    map.insert(s.id.clone(), Served { def: Arc::new(def), version: s.version, workflow_id: s.workflow_id.clone() });
                }
                Err(e) => {
                    tracing::error!(app = %s.id, version = s.version, error = %e, "stored app definition does not parse; app unavailable")
                }
            }
        }
        let n = map.len();
        *self.apps.write().unwrap_or_else(PoisonError::into_inner) = map;
        Ok(n)
    }

    /// The app an API key opens. A dataset key opens no app: `Unknown`.
    pub async fn app_for_key(&self, token: &str) -> Result<KeyLookup, ServiceError> {
        Ok(match self.store.authenticate(token).await? {
            None => KeyLookup::Unknown,
            Some(key) => match key.scope {
                store::KeyScope::Datasets => KeyLookup::Unknown,
                store::KeyScope::App(app_id) => match self.app(&app_id) {
                    Some(app) => KeyLookup::App(app),
                    None => KeyLookup::AppNotServed,
                },
            },
        })
    }

    /// The dataset key `token` is, if it is one (an app key is `None`: it
    /// never opens the datasets API).
    pub async fn dataset_key(&self, token: &str) -> Result<Option<store::ApiKeyInfo>, ServiceError> {
        Ok(self.store.authenticate(token).await?.filter(|key| key.scope == store::KeyScope::Datasets))
    }

    /// Every stored app with its active version (served or not).
    pub async fn stored_apps(&self) -> Result<Vec<store::StoredApp>, ServiceError> {
        Ok(self.store.list_apps().await?)
    }

    /// One stored app with its active version.
    pub async fn stored_app(&self, id: &str) -> Result<store::StoredApp, ServiceError> {
        self.require_app(id).await
    }

    /// The chat model's runtime, for loading and unloading it (D-Bus).
    pub fn model_runtime(&self) -> &Arc<ModelRuntime> {
        &self.model
    }

    /// The model's configuration, load state and current thread count.
    pub fn model_report(&self) -> ModelReport {
        let config = self.model.config.clone();
        let ready = self.model.ready().ok();
        let threads = ready.as_ref().map_or(config.threads, |m| m.threads.load(Ordering::Relaxed));
        let queued = ready.as_ref().map_or(0, |m| m.queued());
        let queued_by_app = ready.as_ref().map_or_else(Vec::new, |m| m.queued_by_app());
        ModelReport { status: self.model.status(), config, threads, queued, queued_by_app }
    }

    /// The store, for the daemon's own start-up and shutdown.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether model calls can be served now, or why not.
    pub fn readiness(&self) -> Result<(), ModelError> {
        self.model.ready().map(drop)
    }

    pub fn app(&self, id: &str) -> Option<Arc<AppDefinition>> {
        self.apps.read().unwrap_or_else(PoisonError::into_inner).get(id).map(|s| Arc::clone(&s.def))
    }

    /// The served definition of an app with its version and workflow id.
    /// The served apps that search this dataset (a workflow's
    /// knowledge-retrieval node, or a chat app's `dataset_configs`), by id.
    pub fn apps_using_dataset(&self, dataset_id: &str) -> Vec<String> {
        let apps = self.apps.read().unwrap_or_else(PoisonError::into_inner);
        let uses = |s: &Served| {
            s.def.workflow.as_ref().is_some_and(|w| w.dataset_ids().iter().any(|d| d == dataset_id))
                || s.def.datasets.as_ref().is_some_and(|d| d.dataset_ids.iter().any(|d| d == dataset_id))
        };
        let mut out: Vec<String> = apps.iter().filter(|(_, s)| uses(s)).map(|(id, _)| id.clone()).collect();
        out.sort();
        out
    }

    pub(crate) fn served(&self, id: &str) -> Option<Served> {
        self.apps.read().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
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
        tracing::info!(app = app_id, key_id = %info.id, prefix = %info.prefix, "API key created");
        Ok((info, secret))
    }

    /// A new dataset key: its info and the secret (shown once).
    pub async fn create_dataset_key(&self) -> Result<(store::ApiKeyInfo, String), ServiceError> {
        let (info, secret) = self.store.create_dataset_key().await?;
        tracing::info!(key_id = %info.id, prefix = %info.prefix, "dataset API key created");
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
        tracing::info!(app = info.app_id(), kind = %info.kind(), key_id = %info.id, "API key revoked");
        Ok(info)
    }

    async fn require_app(&self, app_id: &str) -> Result<store::StoredApp, ServiceError> {
        self.store.get_app(app_id).await?.ok_or_else(|| ServiceError::AppNotFound(app_id.to_owned()))
    }

    // ---- runs -------------------------------------------------------------

    /// Starts a Dify chat or completion turn for `app`. Nothing is written
    /// unless the turn is valid and has a place in the admission queue; the
    /// message is recorded `pending` before the job is queued.
    pub async fn start(&self, app: Arc<AppDefinition>, req: AppRequest) -> Result<Run, ServiceError> {
        if self.is_shutting_down() {
            return Err(ServiceError::ShuttingDown);
        }
        crate::engine::turn::check_user(&req.user)?;
        let conversation = match (&req.conversation_id, app.mode) {
            (Some(id), AppMode::Chat) => {
                Some(self.store.get_conversation(&app.id, &req.user, id).await.map_err(not_found_as(ServiceError::ConversationNotFound))?)
            }
            _ => None,
        };
        // A conversation keeps the inputs it started with, as in Dify.
        let kept = match &conversation {
            Some(c) => Some(
                serde_json::from_str(&c.inputs_json)
                    .map_err(|e| ServiceError::Corrupt { what: "conversation inputs", reason: format!("conversation {}: {e}", c.id) })?,
            ),
            None => None,
        };
        let mut turn = Turn::new(Arc::clone(&app), TurnRequest { user: req.user, query: req.query, inputs: req.inputs }, kept)?;
        if app.mode == AppMode::Chat {
            if let Some(hit) = self.annotation_hit(&app.id, &turn.query).await {
                let (store, conversation_id) = (self.store.clone(), conversation.map(|c| c.id));
                return tokio::spawn(reply_from_annotation(store, app, turn, conversation_id, hit))
                    .await
                    .map_err(|e| ServiceError::Model(ModelError::Inference(format!("start task: {e}"))))?;
            }
        }
        let retriever_resources = self.app_knowledge(&app, &mut turn).await?;
        let probe = self.cache_probe(&app, &turn, conversation.as_ref().map(|c| c.id.as_str())).await?;
        if let Some(hit) = probe.hit {
            let (store, conversation_id) = (self.store.clone(), conversation.map(|c| c.id));
            return tokio::spawn(cached::reply_from_cache(store, app, turn, conversation_id, hit, retriever_resources))
                .await
                .map_err(|e| ServiceError::Model(ModelError::Inference(format!("start task: {e}"))))?;
        }
        // An annotation reply or a cache hit (above) costs no generation; a
        // new one is refused under memory pressure.
        self.admit_new()?;
        let model = self.model.ready()?;
        let history = match (probe.history, &conversation) {
            (Some(h), _) => h,
            (None, Some(c)) => self.store.history(&c.id, app.history_turns).await?,
            (None, None) => Vec::new(),
        };
        let (m, t) = (Arc::clone(&model), turn.clone());
        let (prompt, kept_turns) = tokio::task::spawn_blocking(move || t.prompt(&m, &history))
            .await
            .map_err(|e| ModelError::Inference(format!("prompt task: {e}")))??;
        let admission = model.admit(&app.id)?;
        // From the first write on, the work runs in a task of its own: a
        // client that leaves cannot drop it between the pending row and the
        // run task that finishes that row.
        let queued = Queued {
            app,
            turn,
            conversation_id: conversation.map(|c| c.id),
            prompt,
            admission,
            kept_turns,
            retriever_resources,
            fill: probe.fill,
        };
        let (store, runs) = (self.store.clone(), Arc::clone(&self.runs));
        tokio::spawn(record_and_queue(store, runs, model, queued))
            .await
            .map_err(|e| ServiceError::Model(ModelError::Inference(format!("start task: {e}"))))?
    }

    /// The curated annotation answering this query, if the app's replies
    /// are on and one matches. As in Dify, a failure to match is logged and
    /// the model answers.
    async fn annotation_hit(&self, app_id: &str, query: &str) -> Option<(store::AnnotationRecord, f32)> {
        match self.annotations()?.match_query(app_id, query).await {
            Ok(hit) => hit,
            Err(e) => {
                tracing::warn!(app = app_id, error = %crate::telemetry::chain(&e), "annotation reply matching failed; the model answers");
                None
            }
        }
    }

    /// The knowledge of a chat or completion app with datasets: its
    /// datasets searched with the query, the segments put in the turn's
    /// context, and returned as Dify's `retriever_resources`. Nothing for an
    /// app without datasets or an empty query.
    async fn app_knowledge(&self, app: &AppDefinition, turn: &mut Turn) -> Result<Vec<Value>, ServiceError> {
        let Some(d) = &app.datasets else { return Ok(Vec::new()) };
        if turn.query.trim().is_empty() {
            return Ok(Vec::new());
        }
        let k = self.knowledge().ok_or_else(|| ServiceError::InvalidParam("the app's knowledge bases are not available".into()))?;
        let call = crate::engine::workflow::KnowledgeCall {
            node_id: String::new(),
            dataset_ids: d.dataset_ids.clone(),
            query: turn.query.clone(),
            single: d.single,
            top_k: d.top_k,
            score_threshold: d.score_threshold,
            weights: d.weights,
        };
        let hits = k.node_search(call).await.map_err(|e| ServiceError::Knowledge(Box::new(e)))?;
        let mut context = String::new();
        let mut resources = Vec::with_capacity(hits.len());
        for (i, h) in hits.iter().enumerate() {
            context.push_str(&h.content);
            context.push('\n');
            let item = crate::engine::workflow::nodes::knowledge::result_item(i + 1, h);
            let mut r = crate::engine::workflow::nodes::knowledge::retriever_resource(
                item["metadata"].as_object().unwrap_or(&Map::new()),
                &h.content,
            );
            r["retriever_from"] = Value::String("api".into());
            resources.push(r);
        }
        tracing::debug!(app = %app.id, segments = hits.len(), "knowledge context");
        turn.context = (!hits.is_empty()).then_some(context);
        Ok(resources)
    }

    /// Starts an OpenAI-style completion: stateless, nothing stored.
    pub async fn start_openai(&self, app: &Arc<AppDefinition>, req: OpenAiRequest) -> Result<Run, ServiceError> {
        if self.is_shutting_down() {
            return Err(ServiceError::ShuttingDown);
        }
        let fill = match self.cache_probe_openai(app, &req.messages, &req.params) {
            cached::OpenAiProbe::Hit(run) => return Ok(run),
            cached::OpenAiProbe::Miss(fill) => fill,
        };
        // A hit (above) costs no generation; a new one is refused under
        // memory pressure.
        self.admit_new()?;
        let model = self.model.ready()?;
        let msgs = req.messages;
        let m = Arc::clone(&model);
        let prompt = tokio::task::spawn_blocking(move || m.prompt(&msgs)).await.map_err(|e| ModelError::Inference(e.to_string()))??;
        let admission = model.admit(&app.id)?;
        let cancel = CancelFlag::default();
        let gen = model.submit(admission, prompt, req.params, cancel.clone())?;
        let task_id = new_id();
        let cache = if fill.is_some() { crate::cache::Mark::Miss } else { crate::cache::Mark::Off };
        let spec = RunSpec { task_id: task_id.clone(), app_id: app.id.clone(), user: String::new(), persist: None, fill };
        let (events, left) = self.runs.spawn(self.store.clone(), model, spec, cancel, gen);
        Ok(Run {
            task_id: task_id.clone(),
            message_id: task_id,
            conversation_id: None,
            created_at: now_secs(),
            events,
            annotation: None,
            left,
            retriever_resources: Vec::new(),
            cache,
        })
    }

    /// Dify's stop: cancels the task if it belongs to this app and user
    /// (unknown tasks are ignored, as in Dify). A task still waiting in the
    /// admission queue leaves it at once, freeing its place.
    pub fn stop(&self, app_id: &str, user: &str, task_id: &str) {
        if self.runs.stop(app_id, user, task_id) {
            tracing::info!(task_id, "run stopped by the client");
            if let Ok(m) = self.model.ready() {
                m.withdraw_cancelled();
            }
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.runs.in_flight()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Refuses new runs from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Waits for the runs in flight until `deadline`, then cancels the
    /// stragglers (each records its outcome). Returns how many were cancelled.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> u64 {
        self.runs.drain(deadline).await
    }

    /// Stops every run now (a second stop signal): each is cancelled and
    /// records itself as stopped; waits up to `limit` for that.
    pub async fn abort_runs(&self, limit: std::time::Duration) -> u64 {
        let n = self.runs.in_flight();
        self.runs.cancel_all();
        self.runs.settle(limit).await;
        n
    }
}

/// A turn that passed every check and holds its admission place.
struct Queued {
    app: Arc<AppDefinition>,
    turn: Turn,
    /// The conversation it continues; `None` starts one (chat) or none (completion).
    conversation_id: Option<String>,
    prompt: Prompt,
    admission: Admission,
    kept_turns: usize,
    /// The knowledge segments the prompt carries (Dify's `retriever_resources`).
    retriever_resources: Vec<Value>,
    /// Where the answer is cached when it finishes normally.
    fill: Option<(Arc<crate::cache::ResponseCache>, crate::cache::CacheKey)>,
}

/// Records the conversation and the pending message, queues the job and
/// spawns its run. A failure after a new conversation was created removes
/// it again, so a refused turn leaves nothing behind.
async fn record_and_queue(store: Store, runs: Arc<Runs>, model: Arc<LocalModel>, q: Queued) -> Result<Run, ServiceError> {
    let Queued { app, turn, conversation_id, prompt, admission, kept_turns, retriever_resources, fill } = q;
    let (conversation_id, created) = match (conversation_id, app.mode) {
        (Some(c), _) => (Some(c), false),
        (None, AppMode::Chat) => {
            let inputs_json = Value::Object(turn.inputs.clone()).to_string();
            (Some(store.create_conversation(&app.id, &turn.user, &conversation_name(&turn.query), &inputs_json).await?.id), true)
        }
        (None, AppMode::Completion | AppMode::Workflow | AppMode::AdvancedChat) => (None, false),
    };
    let task_id = new_id();
    let message_id = new_id();
    let begun = store.begin_message(turn_message(&app, &turn, conversation_id.clone(), &task_id, &message_id)).await;
    if let Err(e) = begun {
        if let (true, Some(c)) = (created, &conversation_id) {
            if let Err(de) = store.delete_conversation(&app.id, &turn.user, c).await {
                tracing::warn!(conversation_id = %c, error = %crate::telemetry::chain(&de), "could not remove the conversation of a refused turn");
            }
        }
        return Err(e.into());
    }
    let cache = if fill.is_some() { crate::cache::Mark::Miss } else { crate::cache::Mark::Off };
    let cancel = CancelFlag::default();
    let gen = match model.submit(admission, prompt, turn.params.clone(), cancel.clone()) {
        Ok(g) => g,
        Err(e) => {
            // Only a stopped inference thread gets here; record it.
            let o = store::MessageOutcome {
                answer: String::new(),
                prompt_tokens: 0,
                completion_tokens: 0,
                latency_ms: 0,
                status: store::MessageStatus::Error,
                error: Some(e.to_string()),
            };
            if let Err(se) = store.finish_message(&message_id, o).await {
                tracing::error!(message_id = %message_id, error = %crate::telemetry::chain(&se), "could not record the failed submission");
            }
            return Err(e.into());
        }
    };
    tracing::info!(task_id = %task_id, message_id = %message_id, app = %app.id, history_turns = kept_turns, "run queued");
    let spec = RunSpec {
        task_id: task_id.clone(),
        app_id: app.id.clone(),
        user: turn.user,
        persist: Some(Persist { message_id: message_id.clone(), conversation_id: conversation_id.clone() }),
        fill,
    };
    let (events, left) = runs.spawn(store, model, spec, cancel, gen);
    Ok(Run { task_id, message_id, conversation_id, created_at: now_secs(), events, annotation: None, left, retriever_resources, cache })
}

/// Answers a chat turn with an annotation's curated answer, as Dify's
/// annotation reply: the conversation and the message are stored with that
/// answer (no model call), and the run's events are that answer and its end.
async fn reply_from_annotation(
    store: Store,
    app: Arc<AppDefinition>,
    turn: Turn,
    conversation_id: Option<String>,
    (annotation, score): (store::AnnotationRecord, f32),
) -> Result<Run, ServiceError> {
    let started = std::time::Instant::now();
    let conversation_id = match conversation_id {
        Some(c) => c,
        None => {
            let inputs_json = Value::Object(turn.inputs.clone()).to_string();
            store.create_conversation(&app.id, &turn.user, &conversation_name(&turn.query), &inputs_json).await?.id
        }
    };
    let (task_id, message_id) = (new_id(), new_id());
    store.begin_message(turn_message(&app, &turn, Some(conversation_id.clone()), &task_id, &message_id)).await?;
    let latency = started.elapsed();
    let o = store::MessageOutcome {
        answer: annotation.answer.clone(),
        prompt_tokens: 0,
        completion_tokens: 0,
        latency_ms: latency.as_millis() as u64,
        status: store::MessageStatus::Normal,
        error: None,
    };
    store.finish_message(&message_id, o).await?;
    if let Err(e) = store.touch_conversation(&conversation_id).await {
        tracing::warn!(conversation_id = %conversation_id, error = %crate::telemetry::chain(&e), "could not update the conversation time");
    }
    tracing::info!(task_id = %task_id, message_id = %message_id, app = %app.id, annotation = %annotation.id, score, "answered from an annotation");
    let (tx, events) = tokio::sync::mpsc::channel(2);
    let usage = Usage { latency, ..Usage::default() };
    // The channel has room for both events and nobody else holds it.
    let _ = tx.try_send(RunEvent::Text(annotation.answer));
    let _ = tx.try_send(RunEvent::End { usage, finish: crate::model::FinishReason::Stop });
    Ok(Run {
        task_id,
        message_id,
        conversation_id: Some(conversation_id),
        created_at: now_secs(),
        events,
        annotation: Some(annotation.id),
        left: Arc::default(),
        retriever_resources: Vec::new(),
        cache: crate::cache::Mark::Off,
    })
}

/// The message record of a turn of `app`.
pub(crate) fn turn_message(
    app: &AppDefinition,
    turn: &Turn,
    conversation_id: Option<String>,
    task_id: &str,
    message_id: &str,
) -> NewMessage {
    NewMessage {
        id: message_id.to_owned(),
        app_id: app.id.clone(),
        conversation_id,
        user: turn.user.clone(),
        task_id: task_id.to_owned(),
        query: turn.query.clone(),
        inputs_json: Value::Object(turn.inputs.clone()).to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn service(dir: &std::path::Path) -> Arc<Service> {
        let (store, _) = Store::open(&dir.join("s.db")).expect("store");
        let model = ModelRuntime::new(
            crate::model::RuntimeConfig {
                name: "m".into(),
                path: dir.join("none.gguf"),
                enabled: false,
                context_size: 512,
                kv_type_k: crate::config::KvType::Q8_0,
                kv_type_v: crate::config::KvType::Q8_0,
                slots: 1,
                threads: 1,
                adaptive_threads: false,
                batch_size: 32,
                step_budget: std::time::Duration::ZERO,
                prefix_dir: None,
                prefix_save: std::time::Duration::ZERO,
                queue_depth: 1,
                max_queued_per_app: 1,
                max_concurrent_per_app: 1,
                use_mlock: false,
                load_timeout: std::time::Duration::from_secs(1),
                chat_template: None,
            },
            Arc::default(),
        );
        let no_python = crate::config::CodeSettings { python: crate::config::PythonChoice::Off, ..Default::default() };
        let code = Arc::new(code::CodeRuntime::start(&no_python, Vec::new(), Arc::default()));
        let workflows =
            workflow::WorkflowRuntime::from_settings(&crate::config::Settings::default(), code).expect("default workflow settings");
        Service::new(store, model, workflows)
    }

    fn app(id: &str, pre_prompt: &str) -> AppDefinition {
        serde_json::from_value(serde_json::json!({"id": id, "name": id, "mode": "chat", "pre_prompt": pre_prompt})).expect("app")
    }

    /// An admin import racing a config reload: the import's store write is
    /// held back from the registry (fail point `app-stored`) while a reload
    /// runs; the served definition must still be the store's active one.
    #[cfg(feature = "failpoints")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_import_racing_a_reload_leaves_store_and_registry_equal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        svc.sync_config_apps(vec![app("x", "config 1")]).await.expect("synced");
        fail::cfg("app-stored", "1*return(300)").expect("fail point");
        let s = Arc::clone(&svc);
        let import = tokio::spawn(async move { s.put_app(app("x", "import"), "import").await.map(drop) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (_, results) = svc.sync_config_apps(vec![app("x", "config 2")]).await.expect("synced");
        import.await.expect("task").expect("import applied");
        fail::remove("app-stored");
        results.into_iter().for_each(|(_, r)| assert!(r.is_ok(), "{r:?}"));
        let stored: AppDefinition = serde_json::from_str(&svc.stored_app("x").await.expect("stored").definition_json).expect("parses");
        let served = svc.app("x").expect("served");
        assert_eq!(served.pre_prompt, stored.pre_prompt, "the registry serves another version than the store's active one");
    }

    /// An app key never opens the datasets API and a dataset key never an app.
    #[tokio::test]
    async fn app_and_dataset_keys_open_only_their_own_routes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        svc.sync_config_apps(vec![app("a", "A")]).await.expect("synced");
        let (_, app_key) = svc.create_key("a").await.expect("app key");
        let (info, dataset_key) = svc.create_dataset_key().await.expect("dataset key");
        assert!(matches!(svc.app_for_key(&app_key).await.expect("lookup"), KeyLookup::App(a) if a.id == "a"));
        assert!(matches!(svc.app_for_key(&dataset_key).await.expect("lookup"), KeyLookup::Unknown));
        assert_eq!(svc.dataset_key(&dataset_key).await.expect("lookup").map(|k| k.id), Some(info.id));
        assert_eq!(svc.dataset_key(&app_key).await.expect("lookup"), None);
    }

    #[tokio::test]
    async fn a_reload_drops_config_apps_no_longer_configured_but_keeps_imports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        svc.sync_config_apps(vec![app("a", "A"), app("b", "B")]).await.expect("synced");
        svc.put_app(app("imported", "I"), "import").await.expect("import");
        let (served, _) = svc.sync_config_apps(vec![app("a", "A2")]).await.expect("synced");
        assert_eq!(served, 2);
        assert!(svc.app("b").is_none(), "b was removed from the config");
        assert_eq!(svc.app("a").expect("a").pre_prompt, "A2");
        assert!(svc.app("imported").is_some(), "an imported app is not the config's to remove");
        // The store keeps b (its conversations stay).
        assert!(svc.stored_app("b").await.is_ok());
    }
}
