//! The service's side of the response cache: which requests may use it,
//! their keys, and answering a hit like a real answer (a Dify turn stores
//! its conversation and message as the model's answer would be stored, and
//! streams the same events, with zero usage), operator stats and flush.
//! Knows nothing of HTTP or JSON wire shapes.

use std::sync::Arc;

use serde_json::Value;

use super::{conversation_name, new_id, now_secs, Run, RunEvent, Service, ServiceError, Usage};
use crate::cache::{CacheError, CacheKey, DifyParts, Hit, Mark, QueryEmbedding, ResponseCache};
use crate::engine::{AppDefinition, AppMode, Turn};
use crate::model::{ChatMessage, FinishReason, SamplingParams};
use crate::store::{self, Store};

/// What the cache said about a Dify turn.
#[derive(Default)]
pub(super) struct Probe {
    /// The key a cacheable miss fills when its run finishes.
    pub fill: Option<(Arc<ResponseCache>, CacheKey)>,
    pub hit: Option<Hit>,
    /// The conversation's history, read for the key (the prompt reuses it).
    pub history: Option<Vec<(String, String)>>,
}

/// What the cache said about an OpenAI chat completion.
pub(super) enum OpenAiProbe {
    /// Answered: a finished run.
    Hit(Run),
    /// The model answers; a cacheable miss carries the key its answer fills.
    Miss(Option<(Arc<ResponseCache>, CacheKey)>),
}

impl From<CacheError> for ServiceError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Store { source, .. } => ServiceError::Store(source),
        }
    }
}

impl Service {
    /// Attaches the response cache (once, at start, after the apps are
    /// served): loads its persisted entries of the versions served now.
    pub async fn set_cache(&self, cache: Arc<ResponseCache>) {
        let served = |id: &str| self.served(id).map(|s| s.version);
        match cache.load(served).await {
            Ok(n) => {
                tracing::info!(entries = n, max_bytes = cache.stats().max_bytes, ttl_secs = cache.ttl().as_secs(), "response cache loaded")
            }
            Err(e) => tracing::warn!(error = %crate::telemetry::chain(&e), "response cache not loaded from the store; starting empty"),
        }
        if self.cache.set(cache).is_err() {
            tracing::warn!("the response cache was attached twice; keeping the first");
        }
    }

    /// The response cache, when attached.
    pub fn cache(&self) -> Option<&Arc<ResponseCache>> {
        self.cache.get()
    }

    /// Drops every cached answer, or one app's (which must exist).
    pub async fn flush_cache(&self, app_id: Option<&str>) -> Result<u64, ServiceError> {
        if let Some(a) = app_id {
            self.require_app(a).await?;
        }
        match self.cache() {
            Some(c) => Ok(c.flush(app_id).await?),
            None => Ok(0),
        }
    }

    /// The app now serves `version` (an import, activation or reload).
    pub(super) fn cache_version_changed(&self, app_id: &str, before: Option<u32>, version: u32) {
        if before.is_some_and(|b| b != version) {
            if let Some(c) = self.cache() {
                c.app_version_changed(app_id, version);
            }
        }
    }

    /// The cache and the served version when `app`'s requests with
    /// `params` may be cached: the cache is on, `app` is the definition
    /// served now, and the request qualifies ([`ResponseCache::policy`]).
    fn cacheable(&self, app: &Arc<AppDefinition>, params: &SamplingParams) -> Option<(Arc<ResponseCache>, u32)> {
        let cache = self.cache()?;
        let served = self.served(&app.id).filter(|s| Arc::ptr_eq(&s.def, app))?;
        cache.policy(&app.id, params).then(|| (Arc::clone(cache), served.version))
    }

    /// Looks a Dify chat or completion turn up (after its knowledge search:
    /// the segments found are part of the key).
    pub(super) async fn cache_probe(
        &self,
        app: &Arc<AppDefinition>,
        turn: &Turn,
        conversation_id: Option<&str>,
    ) -> Result<Probe, ServiceError> {
        if !matches!(app.mode, AppMode::Chat | AppMode::Completion) {
            return Ok(Probe::default());
        }
        let Some((cache, version)) = self.cacheable(app, &turn.params) else { return Ok(Probe::default()) };
        let history = match conversation_id {
            Some(c) => self.store.history(c, app.history_turns).await?,
            None => Vec::new(),
        };
        let key = CacheKey::dify(&DifyParts {
            app_id: &app.id,
            app_version: version,
            model: &self.model.config.name,
            params: &turn.params,
            query: &turn.query,
            inputs: &turn.inputs,
            history: &history,
            context: turn.context.as_deref(),
        });
        let Some(mut key) = usable_key(&app.id, key) else { return Ok(Probe { history: Some(history), ..Probe::default() }) };
        let mut hit = cache.get(&key);
        if let (None, Some(threshold)) = (&hit, cache.semantic_threshold(&app.id)) {
            key.embedding = self.query_embedding(&app.id, &turn.query).await;
            hit = cache.get_similar(&key, threshold);
        }
        if hit.is_none() {
            cache.missed();
        }
        Ok(Probe { fill: hit.is_none().then_some((cache, key)), hit, history: Some(history) })
    }

    /// The normalised query's embedding for a semantic lookup, with the
    /// knowledge service's embedder; `None` (logged) when there is none or
    /// it fails: the exact-match cache still applies.
    async fn query_embedding(&self, app_id: &str, query: &str) -> Option<QueryEmbedding> {
        let q = crate::cache::key::normalise_query(query);
        let Some(e) = self.knowledge().and_then(|k| k.loaded_embedder()) else {
            tracing::debug!(app = app_id, "semantic cache: no embedding model; exact matches only");
            return None;
        };
        if q.is_empty() {
            return None;
        }
        match e.embed(vec![q], crate::model::embed::EmbedKind::Query).await {
            Ok(mut v) => v.pop().map(|vector| QueryEmbedding { model: e.model_id().to_owned(), vector }),
            Err(err) => {
                tracing::warn!(app = app_id, error = %crate::telemetry::chain(&err), "semantic cache: the query could not be embedded; exact matches only");
                None
            }
        }
    }

    /// Looks an OpenAI chat completion up: a hit as a finished run, else the
    /// key a cacheable miss fills.
    pub(super) fn cache_probe_openai(&self, app: &Arc<AppDefinition>, messages: &[ChatMessage], params: &SamplingParams) -> OpenAiProbe {
        let Some((cache, version)) = self.cacheable(app, params) else { return OpenAiProbe::Miss(None) };
        let key = CacheKey::openai(&app.id, version, &self.model.config.name, params, messages);
        let Some(key) = usable_key(&app.id, key) else { return OpenAiProbe::Miss(None) };
        match cache.get(&key) {
            None => {
                cache.missed();
                OpenAiProbe::Miss(Some((cache, key)))
            }
            Some(hit) => {
                let task_id = new_id();
                tracing::debug!(task_id = %task_id, app = %app.id, "answered from the response cache");
                OpenAiProbe::Hit(hit_run(task_id.clone(), task_id, None, hit, std::time::Duration::ZERO))
            }
        }
    }
}

/// The key, or `None` (logged) when it could not be written: the request
/// then goes to the model uncached.
fn usable_key(app_id: &str, key: Result<CacheKey, serde_json::Error>) -> Option<CacheKey> {
    key.map_err(|error| tracing::warn!(app = app_id, %error, "response cache: the request's key could not be written; answering uncached"))
        .ok()
}

/// A finished run whose events are the cached answer and its end.
fn hit_run(task_id: String, message_id: String, conversation_id: Option<String>, hit: Hit, latency: std::time::Duration) -> Run {
    let (tx, events) = tokio::sync::mpsc::channel(2);
    // The channel has room for both events and nobody else holds it.
    let _ = tx.try_send(RunEvent::Text(hit.answer.clone()));
    let _ = tx.try_send(RunEvent::End {
        usage: Usage { latency, ..Usage::default() },
        finish: if hit.truncated { FinishReason::Length } else { FinishReason::Stop },
    });
    Run {
        task_id,
        message_id,
        conversation_id,
        created_at: now_secs(),
        events,
        annotation: None,
        left: Arc::default(),
        retriever_resources: Vec::new(),
        cache: Mark::Hit(hit),
    }
}

/// Answers a Dify turn from the cache: the conversation (a chat's, new if
/// none) and the message are stored as a normal answer with zero tokens, in
/// one store write.
pub(super) async fn reply_from_cache(
    store: Store,
    app: Arc<AppDefinition>,
    turn: Turn,
    conversation_id: Option<String>,
    hit: Hit,
    retriever_resources: Vec<Value>,
) -> Result<Run, ServiceError> {
    let started = std::time::Instant::now();
    let (conversation_id, new_conversation) = match (conversation_id, app.mode) {
        (Some(c), _) => (Some(c), None),
        (None, AppMode::Chat) => (Some(new_id()), Some(conversation_name(&turn.query))),
        (None, AppMode::Completion | AppMode::Workflow | AppMode::AdvancedChat) => (None, None),
    };
    let (task_id, message_id) = (new_id(), new_id());
    let m = super::turn_message(&app, &turn, conversation_id.clone(), &task_id, &message_id);
    let o = store::MessageOutcome {
        answer: hit.answer.clone(),
        prompt_tokens: 0,
        completion_tokens: 0,
        latency_ms: started.elapsed().as_millis() as u64,
        status: store::MessageStatus::Normal,
        error: None,
    };
    store.record_answered(m, new_conversation, o).await?;
    let latency = started.elapsed();
    // DEBUG, not INFO: hits come thousands a second, and journald's rate
    // limit (10,000 lines per 30 s by default) would then drop the
    // daemon's warnings with them; the metrics and the message row count them.
    tracing::debug!(task_id = %task_id, message_id = %message_id, app = %app.id, similarity = ?hit.similarity, "answered from the response cache");
    let mut run = hit_run(task_id, message_id, conversation_id, hit, latency);
    run.retriever_resources = retriever_resources;
    Ok(run)
}
