//! Annotation replies, as Dify's `AppAnnotationService` and
//! `AnnotationReplyFeature`: an app's curated question/answer pairs (CRUD,
//! scoped to the app), the enable/disable jobs, and matching a query
//! against the curated questions.
//!
//! Owns: the per-app vector index of the questions
//! (`<knowledge dir>/annotations/<app id>/`, keyed by the annotation's
//! rowid), kept in step with create/update/delete while replies are
//! enabled, and the table of enable/disable jobs (in memory, as Dify keeps
//! them in Redis). The store keeps annotations and settings; the knowledge
//! service's embedder embeds (no second copy of the model).
//! Knows nothing of HTTP or JSON wire shapes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::knowledge::vectors::VectorIndex;
use crate::model::embed::{EmbedError, EmbedKind, Embeddings};
use crate::store::{AnnotationRecord, AnnotationSettings, Store, StoreError};

/// Questions compared in full with a query's vector, best first.
const MATCH_CANDIDATES: usize = 4;

/// Jobs remembered before finished ones are forgotten.
const MAX_JOBS: usize = 256;

/// How many questions one embedding call carries while enabling.
const EMBED_BATCH: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    /// 400 `invalid_param`.
    #[error("{0}")]
    InvalidParam(String),
    /// 404: Dify's "Annotation not found".
    #[error("Annotation not found")]
    NotFound,
    /// 404: an enable/disable job this daemon does not know.
    #[error("The job is not exist.")]
    JobNotFound,
    /// 503 `provider_not_initialize`: no embedding model runs.
    #[error("no embedding model is available: {0}")]
    EmbeddingUnavailable(String),
    /// 429: the embedder's queue is full.
    #[error("the embedding model is busy; retry later")]
    EmbedderBusy,
    #[error(transparent)]
    Store(StoreError),
    /// A vector file or the embedder failed (500).
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for AnnotationError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what: "annotation", .. } => AnnotationError::NotFound,
            StoreError::InvalidArgument { field, reason } => AnnotationError::InvalidParam(format!("{field}: {reason}")),
            other => AnnotationError::Store(other),
        }
    }
}

/// A question or answer of only whitespace is refused: a question could
/// not be embedded (and would fail the whole enable job).
fn require_text(question: &str, answer: &str) -> Result<(), AnnotationError> {
    for (field, text) in [("question", question), ("answer", answer)] {
        if text.trim().is_empty() {
            return Err(AnnotationError::InvalidParam(format!("{field} is required")));
        }
    }
    Ok(())
}

fn map_embed(e: EmbedError) -> AnnotationError {
    match &e {
        EmbedError::Busy { .. } => AnnotationError::EmbedderBusy,
        EmbedError::EmptyText { .. } => AnnotationError::InvalidParam(e.to_string()),
        EmbedError::Load { .. } | EmbedError::ThreadGone | EmbedError::Upstream(_) => AnnotationError::EmbeddingUnavailable(e.to_string()),
        EmbedError::Inference(_) => AnnotationError::Internal(format!("embedding: {e}")),
    }
}

/// Which job: Dify's `{action}` of `/apps/annotation-reply/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyAction {
    Enable,
    Disable,
}

impl ReplyAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enable" => Some(ReplyAction::Enable),
            "disable" => Some(ReplyAction::Disable),
            _ => None,
        }
    }
}

/// A job's status, with Dify's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Waiting,
    Processing,
    Completed,
    Error(String),
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Error(_) => "error",
        }
    }
}

struct Job {
    action: ReplyAction,
    app_id: String,
    status: JobStatus,
}

/// The annotation service; one per daemon.
pub struct Annotations {
    store: Store,
    embedder: Option<Arc<Embeddings>>,
    /// `<knowledge dir>/annotations`.
    dir: PathBuf,
    indexes: Mutex<HashMap<String, Arc<RwLock<VectorIndex>>>>,
    jobs: Mutex<HashMap<String, Job>>,
    /// Serialises vector changes and settings changes, so a question
    /// written while a job rebuilds the index is not lost.
    changes: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn internal(what: &'static str) -> impl Fn(String) -> AnnotationError {
    move |e| AnnotationError::Internal(format!("{what}: {e}"))
}

impl Annotations {
    pub fn new(store: Store, embedder: Option<Arc<Embeddings>>, dir: PathBuf) -> Arc<Self> {
        Arc::new(Annotations {
            store,
            embedder,
            dir,
            indexes: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    fn embedder(&self) -> Result<&Arc<Embeddings>, AnnotationError> {
        self.embedder.as_ref().ok_or_else(|| AnnotationError::EmbeddingUnavailable("no embedding model is configured ([embedding])".into()))
    }

    // ---- CRUD -------------------------------------------------------------

    /// A page of the app's annotations (newest first) whose question or
    /// answer contains `keyword`, and how many match.
    pub async fn list(
        &self,
        app_id: &str,
        page: u32,
        limit: u32,
        keyword: Option<&str>,
    ) -> Result<(Vec<AnnotationRecord>, i64), AnnotationError> {
        Ok(self.store.list_annotations(app_id, page, limit, keyword).await?)
    }

    /// Adds an annotation; its question is embedded at once when replies are on.
    pub async fn create(&self, app_id: &str, question: &str, answer: &str) -> Result<AnnotationRecord, AnnotationError> {
        require_text(question, answer)?;
        let _changes = self.changes.lock().await;
        // Embedded first: a busy or missing model refuses the annotation before anything is stored.
        let vector = match self.enabled_settings(app_id).await? {
            Some(s) => Some(self.embed_questions(&s, vec![question.to_owned()]).await?),
            _ => None,
        };
        let a = self.store.create_annotation(app_id, question, answer).await?;
        if let Some(v) = vector {
            if let Err(e) = self.write_vectors(app_id, a.rowid, v).await {
                // The row must not outlive a failed vector: the question would never match.
                if let Err(de) = self.store.delete_annotation(app_id, &a.id).await {
                    tracing::warn!(annotation = %a.id, error = %crate::telemetry::chain(&de), "could not remove an annotation whose vector failed");
                }
                return Err(e);
            }
        }
        Ok(a)
    }

    /// Replaces an annotation's question and answer (its vector too, when replies are on).
    pub async fn update(&self, app_id: &str, id: &str, question: &str, answer: &str) -> Result<AnnotationRecord, AnnotationError> {
        require_text(question, answer)?;
        let _changes = self.changes.lock().await;
        let old = self.store.get_annotation(app_id, id).await?;
        // Embedded first: a busy or missing model refuses the change before anything is stored.
        let vector = match self.enabled_settings(app_id).await? {
            Some(s) if old.question != question => Some(self.embed_questions(&s, vec![question.to_owned()]).await?),
            _ => None,
        };
        let a = self.store.update_annotation(app_id, id, question, answer).await?;
        if let Some(v) = vector {
            self.write_vectors(app_id, a.rowid, v).await?;
        }
        Ok(a)
    }

    /// Deletes an annotation and its vector.
    pub async fn delete(&self, app_id: &str, id: &str) -> Result<(), AnnotationError> {
        let _changes = self.changes.lock().await;
        let rowid = self.store.delete_annotation(app_id, id).await?;
        // An index whose width is unknown here (no model, or an upstream
        // one not asked yet) is not opened: enabling rebuilds it, and a
        // stale vector matches nothing (its row is gone).
        if let (Some(dims), true) = (self.known_dims(app_id), self.dir.join(app_id).exists()) {
            let index = self.index(app_id, dims)?;
            tokio::task::spawn_blocking(move || {
                let mut ix = index.write().unwrap_or_else(PoisonError::into_inner);
                ix.delete(&[rowid])?;
                if ix.should_compact() {
                    ix.compact(&|_| true)?;
                }
                Ok::<(), crate::knowledge::vectors::VectorError>(())
            })
            .await
            .map_err(|e| internal("vector delete")(e.to_string()))?
            .map_err(|e| internal("vector delete")(e.to_string()))?;
        }
        Ok(())
    }

    // ---- enable / disable jobs -------------------------------------------

    /// Starts Dify's enable or disable job for an app; returns its id and
    /// status. Enabling needs the embedding model (checked before the job
    /// starts) and embeds every question of the app. A job of the same
    /// action still running for the app is answered instead of a new one.
    pub fn start_job(
        self: &Arc<Self>,
        app_id: &str,
        action: ReplyAction,
        score_threshold: f32,
    ) -> Result<(String, JobStatus), AnnotationError> {
        if !(0.0..=1.0).contains(&score_threshold) {
            return Err(AnnotationError::InvalidParam(format!("score_threshold must be from 0 to 1, not {score_threshold}")));
        }
        if action == ReplyAction::Enable {
            self.embedder()?;
        }
        let mut jobs = lock(&self.jobs);
        let running = jobs
            .iter()
            .find(|(_, j)| j.app_id == app_id && j.action == action && matches!(j.status, JobStatus::Waiting | JobStatus::Processing));
        if let Some((id, _)) = running {
            return Ok((id.clone(), JobStatus::Processing));
        }
        if jobs.len() >= MAX_JOBS {
            // Forget finished jobs (Dify's expire in Redis); running ones stay.
            jobs.retain(|_, j| matches!(j.status, JobStatus::Waiting | JobStatus::Processing));
        }
        let job_id = uuid::Uuid::new_v4().to_string();
        jobs.insert(job_id.clone(), Job { action, app_id: app_id.to_owned(), status: JobStatus::Waiting });
        drop(jobs);
        let (this, id, app) = (Arc::clone(self), job_id.clone(), app_id.to_owned());
        tokio::spawn(async move {
            this.set_job(&id, JobStatus::Processing);
            let result = match action {
                ReplyAction::Enable => this.enable(&app, score_threshold).await,
                ReplyAction::Disable => this.disable(&app).await,
            };
            let status = match result {
                Ok(()) => JobStatus::Completed,
                Err(e) => {
                    tracing::warn!(app = %app, job_id = %id, ?action, error = %crate::telemetry::chain(&e), "annotation reply job failed");
                    JobStatus::Error(e.to_string())
                }
            };
            tracing::info!(app = %app, job_id = %id, ?action, status = status.as_str(), "annotation reply job ended");
            this.set_job(&id, status);
        });
        Ok((job_id, JobStatus::Waiting))
    }

    /// A job's status; jobs of other apps or actions are not found.
    pub fn job(&self, app_id: &str, action: ReplyAction, job_id: &str) -> Result<JobStatus, AnnotationError> {
        match lock(&self.jobs).get(job_id) {
            Some(j) if j.app_id == app_id && j.action == action => Ok(j.status.clone()),
            _ => Err(AnnotationError::JobNotFound),
        }
    }

    fn set_job(&self, job_id: &str, status: JobStatus) {
        if let Some(j) = lock(&self.jobs).get_mut(job_id) {
            j.status = status;
        }
    }

    /// Rebuilds the app's question index from every annotation, then turns replies on.
    async fn enable(&self, app_id: &str, score_threshold: f32) -> Result<(), AnnotationError> {
        let _changes = self.changes.lock().await;
        let model = self.embedder()?.model_id().to_owned();
        self.drop_index(app_id).await?;
        let settings = AnnotationSettings {
            app_id: app_id.to_owned(),
            enabled: true,
            score_threshold,
            embedding_model: Some(model.clone()),
            updated_at: 0,
        };
        let mut page = 1;
        loop {
            let (batch, total) = self.store.list_annotations(app_id, page, 100, None).await?;
            for chunk in batch.chunks(EMBED_BATCH) {
                self.put_vectors(&settings, chunk).await?;
            }
            if batch.is_empty() || i64::from(page) * 100 >= total {
                break;
            }
            page += 1;
        }
        self.store.set_annotation_settings(app_id, true, score_threshold, Some(&model)).await?;
        Ok(())
    }

    /// Turns replies off (keeping the threshold) and removes the question index.
    async fn disable(&self, app_id: &str) -> Result<(), AnnotationError> {
        let _changes = self.changes.lock().await;
        let threshold = self.store.annotation_settings(app_id).await?.map_or(0.0, |s| s.score_threshold);
        self.store.set_annotation_settings(app_id, false, threshold, None).await?;
        self.drop_index(app_id).await
    }

    // ---- matching ---------------------------------------------------------

    /// The curated annotation answering `query`, with its similarity: when
    /// the app's replies are on and the best question's cosine similarity
    /// reaches the app's threshold. Counts the hit.
    pub async fn match_query(&self, app_id: &str, query: &str) -> Result<Option<(AnnotationRecord, f32)>, AnnotationError> {
        let Some(settings) = self.enabled_settings(app_id).await? else { return Ok(None) };
        let e = self.embedder()?;
        if settings.embedding_model.as_deref() != Some(e.model_id()) {
            tracing::warn!(app = app_id, stored = ?settings.embedding_model, loaded = e.model_id(), "annotation questions were embedded with another model; enable annotation replies again");
            return Ok(None);
        }
        if query.trim().is_empty() {
            return Ok(None);
        }
        let v = e.embed(vec![query.to_owned()], EmbedKind::Query).await.map_err(map_embed)?.pop();
        let v = v.ok_or_else(|| AnnotationError::Internal("the embedder returned no vector".into()))?;
        let found = self.match_vector(&settings, &v).await?;
        if let Some((a, _)) = &found {
            self.store.increment_annotation_hit(a.rowid).await?;
        }
        Ok(found)
    }

    /// The best annotation for an embedded query, if it reaches the threshold.
    async fn match_vector(&self, settings: &AnnotationSettings, v: &[f32]) -> Result<Option<(AnnotationRecord, f32)>, AnnotationError> {
        let index = self.index(&settings.app_id, v.len())?;
        // A few, in case the best is a vector whose row is gone.
        let hits = index.read().unwrap_or_else(PoisonError::into_inner).search_exact(v, MATCH_CANDIDATES);
        let above: Vec<(i64, f32)> = hits.iter().copied().filter(|(_, score)| *score >= settings.score_threshold).collect();
        if above.is_empty() {
            let best = hits.first().map(|(_, s)| *s);
            tracing::debug!(app = %settings.app_id, ?best, threshold = settings.score_threshold, "no annotation reaches the threshold");
            return Ok(None);
        }
        let rowids: Vec<i64> = above.iter().map(|(id, _)| *id).collect();
        let found = self.store.annotations_by_rowids(&settings.app_id, &rowids).await?.into_iter().next();
        Ok(found.and_then(|a| above.iter().find(|(id, _)| *id == a.rowid).map(|(_, score)| (a, *score))))
    }

    // ---- helpers ----------------------------------------------------------

    async fn enabled_settings(&self, app_id: &str) -> Result<Option<AnnotationSettings>, AnnotationError> {
        Ok(self.store.annotation_settings(app_id).await?.filter(|s| s.enabled))
    }

    /// Embeds the annotations' questions and writes them (an existing
    /// rowid's vector is replaced).
    async fn put_vectors(&self, settings: &AnnotationSettings, items: &[AnnotationRecord]) -> Result<(), AnnotationError> {
        if items.is_empty() {
            return Ok(());
        }
        let vectors = self.embed_questions(settings, items.iter().map(|a| a.question.clone()).collect()).await?;
        let pairs: Vec<(i64, Vec<f32>)> = items.iter().map(|a| a.rowid).zip(vectors).collect();
        self.append(&settings.app_id, pairs).await
    }

    /// Writes the one vector of `vectors` under `rowid`.
    async fn write_vectors(&self, app_id: &str, rowid: i64, mut vectors: Vec<Vec<f32>>) -> Result<(), AnnotationError> {
        let v = vectors.pop().ok_or_else(|| AnnotationError::Internal("the embedder returned no vector".into()))?;
        self.append(app_id, vec![(rowid, v)]).await
    }

    /// Embeds questions with the model replies were enabled with.
    async fn embed_questions(&self, settings: &AnnotationSettings, questions: Vec<String>) -> Result<Vec<Vec<f32>>, AnnotationError> {
        let e = self.embedder()?;
        if settings.embedding_model.as_deref() != Some(e.model_id()) {
            return Err(AnnotationError::EmbeddingUnavailable(format!(
                "annotation replies were enabled with {:?}, the loaded model is {}; enable them again",
                settings.embedding_model,
                e.model_id()
            )));
        }
        e.embed(questions, EmbedKind::Query).await.map_err(map_embed)
    }

    /// Writes vectors durably (an existing rowid's vector is replaced).
    async fn append(&self, app_id: &str, pairs: Vec<(i64, Vec<f32>)>) -> Result<(), AnnotationError> {
        let dims = pairs.first().map_or(0, |(_, v)| v.len());
        let index = self.index(app_id, dims)?;
        tokio::task::spawn_blocking(move || index.write().unwrap_or_else(PoisonError::into_inner).append(&pairs))
            .await
            .map_err(|e| internal("vector append")(e.to_string()))?
            .map_err(|e| internal("vector append")(e.to_string()))
    }

    /// The width of the app's question vectors, when known without embedding.
    fn known_dims(&self, app_id: &str) -> Option<usize> {
        if let Some(ix) = lock(&self.indexes).get(app_id) {
            return Some(ix.read().unwrap_or_else(PoisonError::into_inner).dims());
        }
        match self.embedder.as_deref()? {
            Embeddings::Local(e) => Some(e.dims()),
            Embeddings::Upstream(_) => None,
        }
    }

    /// The app's question index (opened, or created, with `dims`).
    fn index(&self, app_id: &str, dims: usize) -> Result<Arc<RwLock<VectorIndex>>, AnnotationError> {
        if let Some(ix) = lock(&self.indexes).get(app_id) {
            return Ok(Arc::clone(ix));
        }
        let ix = VectorIndex::open(&self.dir.join(app_id), dims).map_err(|e| internal("opening annotation vectors")(e.to_string()))?;
        let ix = Arc::new(RwLock::new(ix));
        Ok(Arc::clone(lock(&self.indexes).entry(app_id.to_owned()).or_insert(ix)))
    }

    async fn drop_index(&self, app_id: &str) -> Result<(), AnnotationError> {
        lock(&self.indexes).remove(app_id);
        let dir = self.dir.join(app_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AnnotationError::Internal(format!("{}: {e}", dir.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An annotation service without an embedder over a fresh store with
    /// apps `a1` and `a2`; vectors are written by hand (3 dims).
    async fn service() -> (Arc<Annotations>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(&dir.path().join("edgeai.db")).expect("store");
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        store.put_app("a2", "B", "chat", "{}", "config").await.expect("app");
        (Annotations::new(store, None, dir.path().join("annotations")), dir)
    }

    fn settings(app_id: &str, score_threshold: f32) -> AnnotationSettings {
        AnnotationSettings { app_id: app_id.into(), enabled: true, score_threshold, embedding_model: Some("m".into()), updated_at: 0 }
    }

    #[tokio::test]
    async fn the_best_question_answers_only_at_or_above_the_threshold_and_only_its_app() {
        let (a, _dir) = service().await;
        let reset = a.create("a1", "How do I clear the PLC alarm?", "Hold RESET for 3 s.").await.expect("create");
        let pump = a.create("a1", "Why does the pump hum?", "Check the impeller.").await.expect("create");
        let foreign = a.create("a2", "q", "another app's answer").await.expect("create");
        let index = a.index("a1", 3).expect("index");
        let items = vec![(reset.rowid, vec![1.0, 0.0, 0.0]), (pump.rowid, vec![0.0, 1.0, 0.0]), (foreign.rowid, vec![0.0, 0.0, 1.0])];
        index.write().expect("lock").append(&items).expect("append");

        // cos = 0.9 with the reset question, 0.436 with the pump one.
        let query = [0.9, 0.436, 0.0];
        let (hit, score) = a.match_vector(&settings("a1", 0.85), &query).await.expect("match").expect("a hit");
        assert_eq!((hit.id.as_str(), hit.answer.as_str()), (reset.id.as_str(), "Hold RESET for 3 s."));
        assert!((score - 0.9).abs() < 1e-4, "{score}");
        assert!(a.match_vector(&settings("a1", 0.9), &query).await.expect("match").is_some(), "the threshold itself matches");
        assert!(a.match_vector(&settings("a1", 0.95), &query).await.expect("match").is_none(), "below the threshold");
        // A vector of another app's annotation in this app's index answers nothing.
        assert!(a.match_vector(&settings("a1", 0.5), &[0.0, 0.0, 1.0]).await.expect("match").is_none());
    }

    #[tokio::test]
    async fn replies_off_match_nothing_and_enabling_needs_the_embedding_model() {
        let (a, _dir) = service().await;
        a.create("a1", "q", "a").await.expect("create");
        // Never enabled, then disabled: no match, no embedder needed.
        assert!(a.match_query("a1", "q").await.expect("off").is_none());
        let (job, status) = a.start_job("a1", ReplyAction::Disable, 0.7).expect("disable");
        assert_eq!(status, JobStatus::Waiting);
        let mut done = JobStatus::Waiting;
        for _ in 0..200 {
            done = a.job("a1", ReplyAction::Disable, &job).expect("job");
            if done == JobStatus::Completed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(done, JobStatus::Completed);
        let s = a.store.annotation_settings("a1").await.expect("settings").expect("set");
        assert!(!s.enabled);
        assert!(a.match_query("a1", "q").await.expect("off").is_none());
        // The job is this app's and this action's only.
        assert!(matches!(a.job("a2", ReplyAction::Disable, &job), Err(AnnotationError::JobNotFound)));
        assert!(matches!(a.job("a1", ReplyAction::Enable, &job), Err(AnnotationError::JobNotFound)));

        assert!(matches!(a.start_job("a1", ReplyAction::Enable, 0.8), Err(AnnotationError::EmbeddingUnavailable(_))));
        for bad in [-0.1, 1.1, f32::NAN] {
            assert!(matches!(a.start_job("a1", ReplyAction::Enable, bad), Err(AnnotationError::InvalidParam(_))), "{bad}");
        }
        // Enabled settings without the model: matching fails (the chat turn
        // logs it and the model answers).
        a.store.set_annotation_settings("a1", true, 0.8, Some("m")).await.expect("on");
        assert!(matches!(a.match_query("a1", "q").await, Err(AnnotationError::EmbeddingUnavailable(_))));
    }

    #[tokio::test]
    async fn crud_is_scoped_to_the_app_and_checks_its_input() {
        let (a, _dir) = service().await;
        let one = a.create("a1", "q1", "a1").await.expect("create");
        for err in [
            a.update("a2", &one.id, "q", "a").await.expect_err("other app"),
            a.delete("a2", &one.id).await.expect_err("other app"),
            a.update("a1", "00000000-0000-0000-0000-000000000000", "q", "a").await.expect_err("unknown"),
        ] {
            assert!(matches!(err, AnnotationError::NotFound), "{err:?}");
        }
        assert!(matches!(a.create("a1", "", "a").await, Err(AnnotationError::InvalidParam(_))));
        assert!(matches!(a.update("a1", &one.id, "q", "").await, Err(AnnotationError::InvalidParam(_))));
        assert!(matches!(a.create("a1", " \n\t", "a").await, Err(AnnotationError::InvalidParam(_))));
        assert!(matches!(a.update("a1", &one.id, "q", "  ").await, Err(AnnotationError::InvalidParam(_))));
        assert_eq!(a.store.get_annotation("a1", &one.id).await.expect("get").answer, "a1", "a refused update changes nothing");
        a.delete("a1", &one.id).await.expect("delete");
        assert_eq!(a.list("a1", 1, 20, None).await.expect("list").1, 0);
    }
}
