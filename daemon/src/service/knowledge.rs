//! The knowledge service: datasets, documents, segments and retrieval,
//! written once for every front end. It owns the ingestion queue (a bounded
//! channel and one background task: extract → chunk → embed → write
//! vectors → make the segments visible in one transaction), the per-dataset
//! vector indexes, and hybrid scoring (vector and full-text scores
//! combined with the request's weights).
//! Knows nothing of HTTP or JSON wire shapes.
//!
//! Visibility: a document's segments are inserted `indexing`, their vectors
//! appended to the dataset's vector files, and only then are segments and
//! document flipped to `completed` in one transaction; search returns only
//! completed segments of enabled documents, so a crash mid-way leaves
//! nothing half-visible. Each document's source (text or file bytes) is
//! kept under `<dir>/<dataset>/sources/<document>` so an interrupted
//! document is indexed again at the next start.

mod ingest;
pub mod search;
mod seed;

pub use seed::Seeded;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::mpsc;

use crate::config::KnowledgeSettings;
use crate::knowledge::chunk::ProcessRule;
use crate::knowledge::extract::{self, ExtractError};
use crate::knowledge::vectors::VectorIndex;
use crate::knowledge::{
    DatasetRecord, DocumentRecord, DocumentSource, Hit, IndexingStatus, IndexingTechnique, RetrievalSettings, SearchMethod, SegmentId,
    SegmentRecord,
};
use crate::model::embed::{EmbedError, EmbedKind, Embeddings};
use crate::store::{DatasetChanges, DocumentStep, NewDatasetRow, NewDocumentRow, NewSegment, SegmentChanges, Store, StoreError};

/// What a knowledge call can fail with. Each maps to one Dify error in
/// `api/error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    /// 400 `invalid_param`.
    #[error("{0}")]
    InvalidParam(String),
    /// 404 `not_found`: "Dataset not found." and friends.
    #[error("Dataset not found.")]
    DatasetNotFound,
    #[error("Document not found.")]
    DocumentNotFound,
    #[error("Segment not found.")]
    SegmentNotFound,
    /// 409 `dataset_name_duplicate`.
    #[error("The dataset name already exists. Please modify your dataset name.")]
    DatasetNameDuplicate,
    /// 415 `unsupported_file_type`.
    #[error("File type not allowed: {0}")]
    UnsupportedFileType(String),
    /// 413 `file_too_large`.
    #[error("File size exceeded. {size} > {limit}")]
    FileTooLarge { size: u64, limit: u64 },
    /// 400 `empty_file` (Dify's "File is empty.").
    #[error("File is empty.")]
    EmptyFile,
    /// 400 `document_indexing`: the document is being indexed.
    #[error("The document is being processed and cannot be edited.")]
    DocumentIndexing,
    /// 400 `dataset_in_use`: an app still uses the dataset.
    #[error("The dataset is being used by some apps. Please remove the dataset from the apps before deleting it.")]
    DatasetInUse,
    /// 400 `high_quality_dataset_only` / 503 when no embedding model runs.
    #[error("no embedding model is available: {0}")]
    EmbeddingUnavailable(String),
    /// The dataset's vectors come from another model than the one loaded;
    /// a re-index is needed (`edgeaictl datasets reindex`).
    #[error("dataset {dataset:?} was embedded with {stored} but the loaded embedding model is {loaded}; re-index it: edgeaictl datasets reindex {dataset}")]
    EmbeddingModelMismatch { dataset: String, stored: String, loaded: String },
    /// 429: the ingestion queue is full.
    #[error("too many documents are waiting to be indexed ({0}); retry later")]
    QueueFull(usize),
    /// 429: the embedder's queue is full.
    #[error("the embedding model is busy; retry later")]
    EmbedderBusy,
    #[error(transparent)]
    Store(crate::store::StoreError),
    /// A vector file or the embedder failed (500).
    #[error("{0}")]
    Internal(String),
}

/// A new dataset (`POST /datasets`).
#[derive(Debug, Clone)]
pub struct NewDataset {
    pub name: String,
    pub description: String,
    pub indexing_technique: IndexingTechnique,
    /// Dify's `retrieval_model` object (JSON text), validated.
    pub retrieval_model: Option<String>,
}

/// Changes to a dataset (`PATCH /datasets/{id}`); `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct DatasetPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub indexing_technique: Option<IndexingTechnique>,
    pub retrieval_model: Option<String>,
}

/// The content of a document to add or replace.
#[derive(Debug, Clone)]
pub enum DocumentContent {
    Text {
        name: String,
        text: String,
    },
    /// An uploaded file: its client-given name (only its last path
    /// component is kept) and its bytes.
    File {
        name: String,
        bytes: bytes::Bytes,
    },
}

/// A page request: 1-based page, limit 1..=100.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: u32,
    pub limit: u32,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub data: Vec<T>,
    pub total: i64,
    pub has_more: bool,
    pub page: u32,
    pub limit: u32,
}

/// A segment to add or the new values of one (`None` keeps a field).
#[derive(Debug, Clone, Default)]
pub struct SegmentInput {
    pub content: Option<String>,
    pub answer: Option<String>,
    pub keywords: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// Datasets the update health gate's retrieval check searches.
const SELF_TEST_DATASETS: u32 = 8;

/// The knowledge service; one per daemon, shared by every front end.
pub struct Knowledge {
    store: Store,
    embedder: Option<Arc<Embeddings>>,
    settings: KnowledgeSettings,
    /// Open vector indexes by dataset id.
    indexes: Mutex<HashMap<String, Arc<RwLock<VectorIndex>>>>,
    /// Documents (dataset id, document id) waiting for the ingestion task.
    queue: mpsc::Sender<(String, String)>,
    /// Documents deleted while queued or indexing: the task drops them.
    cancelled: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A file name as kept: its last path component, without control characters.
fn base_name(name: &str) -> Result<String, KnowledgeError> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        return Err(KnowledgeError::InvalidParam(format!("file name {name:?} has no usable last component")));
    }
    Ok(clean.chars().take(200).collect())
}

impl Knowledge {
    /// Starts the service and its ingestion task; documents a crash left
    /// half-indexed are queued again.
    pub async fn start(store: Store, embedder: Option<Arc<Embeddings>>, settings: KnowledgeSettings) -> Result<Arc<Self>, KnowledgeError> {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let k = Arc::new(Knowledge {
            store,
            embedder,
            settings,
            indexes: Mutex::new(HashMap::new()),
            queue: tx,
            cancelled: Mutex::new(HashSet::new()),
        });
        let resume = k.store.documents_to_resume().await?;
        tokio::spawn(ingest::run(Arc::downgrade(&k), rx));
        for doc in resume {
            tracing::info!(document = %doc.id, dataset = %doc.dataset_id, status = ?doc.status, "indexing a document a restart interrupted");
            if k.queue.try_send((doc.dataset_id.clone(), doc.id.clone())).is_err() {
                k.store
                    .set_document_step(&doc.id, DocumentStep::Error("the ingestion queue was full at start; upload it again".into()))
                    .await?;
            }
        }
        Ok(k)
    }

    /// The largest document file accepted (`knowledge.max_file_bytes`).
    pub fn max_file_bytes(&self) -> u64 {
        self.settings.max_file_bytes
    }

    /// How long ago the embedding thread last showed progress (for the
    /// watchdog), `None` without an embedding model.
    pub fn embedder_heartbeat_age(&self) -> Option<std::time::Duration> {
        self.embedder.as_deref().and_then(Embeddings::heartbeat_age)
    }

    /// The embedder, if one runs (shared with annotation replies).
    pub fn loaded_embedder(&self) -> Option<&Arc<Embeddings>> {
        self.embedder.as_ref()
    }

    /// The knowledge directory (`knowledge.dir`).
    pub fn dir(&self) -> &std::path::Path {
        &self.settings.dir
    }

    /// The embedder's model id, if one runs.
    pub fn embedding_model(&self) -> Option<&str> {
        self.embedder.as_deref().map(Embeddings::model_id)
    }

    pub async fn create_dataset(&self, new: NewDataset) -> Result<DatasetRecord, KnowledgeError> {
        check_name(&new.name)?;
        if new.indexing_technique == IndexingTechnique::HighQuality && self.embedder.is_none() {
            return Err(KnowledgeError::EmbeddingUnavailable("indexing_technique high_quality needs [embedding]; use economy".into()));
        }
        let row = NewDatasetRow {
            name: new.name.trim().to_owned(),
            description: new.description,
            indexing_technique: new.indexing_technique,
            retrieval_model: new.retrieval_model,
        };
        Ok(self.store.create_dataset(row).await?)
    }

    pub async fn list_datasets(&self, page: Page, keyword: Option<String>) -> Result<Paged<DatasetRecord>, KnowledgeError> {
        let (data, total) = self.store.list_datasets(page.page, page.limit, keyword.as_deref()).await?;
        Ok(paged(data, total, page))
    }

    pub async fn dataset(&self, id: &str) -> Result<DatasetRecord, KnowledgeError> {
        Ok(self.store.get_dataset(id).await?)
    }

    pub async fn update_dataset(&self, id: &str, patch: DatasetPatch) -> Result<DatasetRecord, KnowledgeError> {
        if let Some(n) = &patch.name {
            check_name(n)?;
        }
        if patch.indexing_technique == Some(IndexingTechnique::HighQuality) && self.embedder.is_none() {
            return Err(KnowledgeError::EmbeddingUnavailable("indexing_technique high_quality needs [embedding]".into()));
        }
        let changes = DatasetChanges {
            name: patch.name.map(|n| n.trim().to_owned()),
            description: patch.description,
            indexing_technique: patch.indexing_technique,
            retrieval_model: patch.retrieval_model,
        };
        Ok(self.store.update_dataset(id, changes).await?)
    }

    pub async fn delete_dataset(&self, id: &str) -> Result<(), KnowledgeError> {
        let pending: Vec<String> = self.list_all_documents(id).await?.into_iter().filter(|d| unfinished(d.status)).map(|d| d.id).collect();
        self.store.delete_dataset(id).await?;
        lock(&self.cancelled).extend(pending);
        lock(&self.indexes).remove(id);
        let dir = self.dataset_dir(id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dataset = id, dir = %dir.display(), error = %e, "could not remove a deleted dataset's files");
            }
        }
        Ok(())
    }

    /// Adds a document (or replaces `replace`'s content) and queues it for
    /// indexing; returns it in `waiting` at once.
    pub async fn add_document(
        &self,
        dataset_id: &str,
        content: DocumentContent,
        process_rule: Option<serde_json::Value>,
        replace: Option<&str>,
    ) -> Result<DocumentRecord, KnowledgeError> {
        let dataset = self.dataset(dataset_id).await?;
        let rule = ProcessRule::parse(process_rule.as_ref()).map_err(|e| KnowledgeError::InvalidParam(e.to_string()))?;
        let rule_json = rule.to_value().to_string();
        let (name, source, bytes) = match content {
            DocumentContent::Text { name, text } => {
                if name.trim().is_empty() {
                    return Err(KnowledgeError::InvalidParam("name is required".into()));
                }
                if text.trim().is_empty() {
                    return Err(KnowledgeError::InvalidParam("text is required".into()));
                }
                (name, DocumentSource::Text, bytes::Bytes::from(text))
            }
            DocumentContent::File { name, bytes } => {
                let name = base_name(&name)?;
                if bytes.is_empty() {
                    return Err(KnowledgeError::EmptyFile);
                }
                if bytes.len() as u64 > self.settings.max_file_bytes {
                    return Err(KnowledgeError::FileTooLarge { size: bytes.len() as u64, limit: self.settings.max_file_bytes });
                }
                let kind = extract::detect(&name, &bytes).map_err(map_extract)?;
                let source = DocumentSource::File { name: name.clone(), kind: kind.as_str().to_owned(), size: bytes.len() as i64 };
                (name, source, bytes)
            }
        };
        if dataset.indexing_technique == IndexingTechnique::HighQuality {
            self.check_model(&dataset)?;
        }
        let permit = self.queue.clone().try_reserve_owned().map_err(|_| KnowledgeError::QueueFull(self.settings.queue))?;
        let tmp = self.write_source_tmp(dataset_id, &bytes).await?;
        let row = NewDocumentRow { name, source, batch: new_batch(), process_rule: rule_json };
        let doc = match replace {
            None => self.store.insert_document(dataset_id, row).await.map(|d| (d, Vec::new())),
            Some(doc_id) => match self.document(dataset_id, doc_id).await {
                Ok(old) if matches!(old.status, IndexingStatus::Parsing | IndexingStatus::Splitting | IndexingStatus::Indexing) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(KnowledgeError::DocumentIndexing);
                }
                Ok(_) => self.store.replace_document(dataset_id, doc_id, row).await,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e);
                }
            },
        };
        let (doc, old_rowids) = match doc {
            Ok(d) => d,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e.into());
            }
        };
        self.forget_vectors(dataset_id, old_rowids).await?;
        let path = self.source_path(dataset_id, &doc.id);
        tokio::fs::rename(&tmp, &path).await.map_err(|e| KnowledgeError::Internal(format!("{}: {e}", path.display())))?;
        lock(&self.cancelled).remove(&doc.id);
        permit.send((dataset_id.to_owned(), doc.id.clone()));
        tracing::info!(dataset = dataset_id, document = %doc.id, name = %doc.name, bytes = bytes.len(), "document queued for indexing");
        Ok(doc)
    }

    /// Renames a document without re-indexing (`update-by-text` with a name only).
    pub async fn rename_document(&self, dataset_id: &str, document_id: &str, name: String) -> Result<DocumentRecord, KnowledgeError> {
        if name.trim().is_empty() {
            return Err(KnowledgeError::InvalidParam("name must not be empty".into()));
        }
        Ok(self.store.rename_document(dataset_id, document_id, &name).await?)
    }

    pub async fn list_documents(
        &self,
        dataset_id: &str,
        page: Page,
        keyword: Option<String>,
    ) -> Result<Paged<DocumentRecord>, KnowledgeError> {
        self.dataset(dataset_id).await?;
        let (data, total) = self.store.list_documents(dataset_id, page.page, page.limit, keyword.as_deref()).await?;
        Ok(paged(data, total, page))
    }

    pub async fn document(&self, dataset_id: &str, document_id: &str) -> Result<DocumentRecord, KnowledgeError> {
        Ok(self.store.get_document(dataset_id, document_id).await?)
    }

    pub async fn delete_document(&self, dataset_id: &str, document_id: &str) -> Result<(), KnowledgeError> {
        let doc = self.document(dataset_id, document_id).await?;
        // Only a document still queued or being indexed has a task to stop
        // (the task takes its id out of the set again).
        if unfinished(doc.status) {
            lock(&self.cancelled).insert(document_id.to_owned());
        }
        let rowids = self.store.delete_document(dataset_id, document_id).await?;
        self.forget_vectors(dataset_id, rowids).await?;
        let _ = tokio::fs::remove_file(self.source_path(dataset_id, document_id)).await;
        Ok(())
    }

    /// The documents of one `create-by-*` batch, for `indexing-status`.
    pub async fn batch_status(&self, dataset_id: &str, batch: &str) -> Result<Vec<DocumentRecord>, KnowledgeError> {
        self.dataset(dataset_id).await?;
        let docs = self.store.documents_by_batch(dataset_id, batch).await?;
        if docs.is_empty() {
            return Err(KnowledgeError::DocumentNotFound);
        }
        Ok(docs)
    }

    /// Enables or disables documents (`PATCH .../documents/status/{enable|disable}`).
    pub async fn set_documents_enabled(&self, dataset_id: &str, ids: &[String], enabled: bool) -> Result<(), KnowledgeError> {
        self.store.set_documents_enabled(dataset_id, ids, enabled).await?;
        Ok(())
    }

    pub async fn list_segments(
        &self,
        dataset_id: &str,
        document_id: &str,
        page: Page,
        keyword: Option<String>,
    ) -> Result<Paged<SegmentRecord>, KnowledgeError> {
        let (data, total) = self.store.list_segments(dataset_id, document_id, page.page, page.limit, keyword.as_deref()).await?;
        Ok(paged(data, total, page))
    }

    /// Adds segments written by hand; they are embedded before this returns.
    pub async fn add_segments(
        &self,
        dataset_id: &str,
        document_id: &str,
        segments: Vec<SegmentInput>,
    ) -> Result<Vec<SegmentRecord>, KnowledgeError> {
        let dataset = self.dataset(dataset_id).await?;
        let doc = self.document(dataset_id, document_id).await?;
        if doc.status != IndexingStatus::Completed {
            return Err(KnowledgeError::DocumentIndexing);
        }
        let mut chunks = Vec::with_capacity(segments.len());
        for (i, s) in segments.into_iter().enumerate() {
            let content = s
                .content
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| KnowledgeError::InvalidParam(format!("segments[{i}].content is required")))?;
            chunks.push(self.new_segment(content, s.answer.unwrap_or_default(), s.keywords.unwrap_or_default()));
        }
        if chunks.is_empty() {
            return Err(KnowledgeError::InvalidParam("segments must not be empty".into()));
        }
        let texts: Vec<String> = chunks.iter().map(|c| c.content.clone()).collect();
        let inserted = self.store.insert_segments(document_id, chunks).await?;
        let rowids: Vec<SegmentId> = inserted.iter().map(|s| s.rowid).collect();
        if let Err(e) = self.embed_segments(&dataset, &rowids, texts).await {
            for s in &inserted {
                let _ = self.store.delete_segment(dataset_id, document_id, &s.id).await;
            }
            return Err(e);
        }
        self.store.complete_document(document_id, &rowids).await?;
        let mut out = Vec::with_capacity(inserted.len());
        for s in inserted {
            out.push(self.store.get_segment(dataset_id, document_id, &s.id).await?);
        }
        Ok(out)
    }

    /// Changes a segment; new content is embedded again before this returns.
    pub async fn update_segment(
        &self,
        dataset_id: &str,
        document_id: &str,
        segment_id: &str,
        input: SegmentInput,
    ) -> Result<SegmentRecord, KnowledgeError> {
        let dataset = self.dataset(dataset_id).await?;
        self.document(dataset_id, document_id).await?;
        let seg = self.segment(dataset_id, document_id, segment_id).await?;
        if let Some(c) = &input.content {
            if c.trim().is_empty() {
                return Err(KnowledgeError::InvalidParam("segment.content must not be empty".into()));
            }
            if *c != seg.content {
                self.embed_segments(&dataset, &[seg.rowid], vec![c.clone()]).await?;
            }
        }
        let changes = SegmentChanges {
            tokens: input.content.as_deref().map(|c| self.count_tokens(c) as i64),
            word_count: input.content.as_deref().map(|c| c.chars().count() as i64),
            content: input.content,
            answer: input.answer,
            keywords: input.keywords,
            enabled: input.enabled,
        };
        Ok(self.store.update_segment(dataset_id, document_id, segment_id, changes).await?)
    }

    pub async fn delete_segment(&self, dataset_id: &str, document_id: &str, segment_id: &str) -> Result<(), KnowledgeError> {
        let rowid = self.store.delete_segment(dataset_id, document_id, segment_id).await?;
        self.forget_vectors(dataset_id, vec![rowid]).await
    }

    /// One segment of a document (`GET .../segments/{id}`, Dify's "Get Chunk").
    pub async fn segment(&self, dataset_id: &str, document_id: &str, segment_id: &str) -> Result<SegmentRecord, KnowledgeError> {
        Ok(self.store.get_segment(dataset_id, document_id, segment_id).await?)
    }

    /// Searches datasets; hits sorted by score, best first.
    pub async fn retrieve(&self, dataset_ids: &[String], query: &str, settings: &RetrievalSettings) -> Result<Vec<Hit>, KnowledgeError> {
        let query = query.trim();
        if query.is_empty() {
            return Err(KnowledgeError::InvalidParam("query is required".into()));
        }
        let mut datasets = Vec::with_capacity(dataset_ids.len());
        for id in dataset_ids {
            datasets.push(self.dataset(id).await?);
        }
        let wants_vectors = matches!(settings.method, SearchMethod::SemanticSearch | SearchMethod::HybridSearch);
        let wants_words = !matches!(settings.method, SearchMethod::SemanticSearch);
        let pool = settings.top_k * 4 + 16;
        let mut vector: Vec<(SegmentId, f32)> = Vec::new();
        let mut words_from: Vec<String> = Vec::new();
        let mut query_vec: Option<Vec<f32>> = None;
        for d in &datasets {
            // An economy dataset has no vectors: it is searched by words
            // whatever the method (as Dify's keyword index).
            let semantic = wants_vectors && d.indexing_technique == IndexingTechnique::HighQuality;
            if wants_words || !semantic {
                words_from.push(d.id.clone());
            }
            if !semantic || d.embedding_model.is_none() {
                continue;
            }
            self.check_model(d)?;
            if query_vec.is_none() {
                query_vec = Some(self.embed_one(query, EmbedKind::Query).await?);
            }
            let q = query_vec.clone().unwrap_or_default();
            let index = self.index(&d.id, q.len()).await?;
            let found = tokio::task::spawn_blocking(move || index.read().unwrap_or_else(PoisonError::into_inner).search(&q, pool))
                .await
                .map_err(|e| KnowledgeError::Internal(format!("vector search: {e}")))?;
            vector.extend(found);
        }
        let words: Vec<(SegmentId, f32)> = if words_from.is_empty() {
            Vec::new()
        } else {
            self.store.fulltext_search(&words_from, query, pool).await?.into_iter().map(|h| (h.segment, h.score)).collect()
        };
        let method_for_fuse = if vector.is_empty() && !wants_words { SearchMethod::FullTextSearch } else { settings.method };
        let fused = search::fuse(&RetrievalSettings { method: method_for_fuse, ..settings.clone() }, &vector, &words);
        let ids: Vec<SegmentId> = fused.iter().map(|(id, _)| *id).collect();
        let found = self.store.segments_by_rowids(&ids).await?;
        let by_id: HashMap<SegmentId, _> =
            found.into_iter().map(|v| (v.segment.rowid, (v.segment, v.document_name, v.dataset_name))).collect();
        let mut by_id = by_id;
        let mut hits = Vec::with_capacity(settings.top_k);
        for (id, score) in fused {
            if let Some((segment, document_name, dataset_name)) = by_id.remove(&id) {
                hits.push(Hit { segment, document_name, dataset_name, score });
                if hits.len() == settings.top_k {
                    break;
                }
            }
        }
        let hit_ids: Vec<SegmentId> = hits.iter().map(|h| h.segment.rowid).collect();
        if !hit_ids.is_empty() {
            if let Err(e) = self.store.increment_hit_count(&hit_ids).await {
                tracing::warn!(error = %e, "could not count segment hits");
            }
        }
        Ok(hits)
    }

    /// Embeds texts for `POST /v1/embeddings`: vectors, the token count and the model id.
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, u64, String), KnowledgeError> {
        let e = self.embedder()?;
        let tokens = texts.iter().map(|t| e.count_tokens(t) as u64).sum();
        let vectors = e.embed(texts, EmbedKind::Raw).await.map_err(map_embed)?;
        Ok((vectors, tokens, e.model_id().to_owned()))
    }

    /// Parses Dify's `retrieval_model` object (JSON) into settings,
    /// `InvalidParam` naming the bad field.
    pub fn retrieval_settings(value: &serde_json::Value) -> Result<RetrievalSettings, KnowledgeError> {
        search::parse_retrieval_model(value)
    }

    /// Indexes every document of a dataset again with the loaded embedding
    /// model (after the model changed): its vectors are dropped, its model
    /// forgotten, and each document queued from its kept source. Returns
    /// the documents queued. A document being indexed refuses it.
    pub async fn reindex(&self, dataset_id: &str) -> Result<Vec<DocumentRecord>, KnowledgeError> {
        let dataset = self.dataset(dataset_id).await?;
        if dataset.indexing_technique == IndexingTechnique::HighQuality {
            self.embedder()?;
        }
        let docs = self.list_all_documents(dataset_id).await?;
        if docs.iter().any(|d| unfinished(d.status)) {
            return Err(KnowledgeError::DocumentIndexing);
        }
        if self.queue.capacity() < docs.len() {
            return Err(KnowledgeError::QueueFull(self.settings.queue));
        }
        lock(&self.indexes).remove(dataset_id);
        let dir = self.dataset_dir(dataset_id).join("vectors");
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(KnowledgeError::Internal(format!("{}: {e}", dir.display())));
            }
        }
        self.store.clear_embedding_model(dataset_id).await?;
        let mut queued = Vec::with_capacity(docs.len());
        for d in docs {
            let row =
                NewDocumentRow { name: d.name.clone(), source: d.source.clone(), batch: new_batch(), process_rule: d.process_rule.clone() };
            let (doc, _) = self.store.replace_document(dataset_id, &d.id, row).await?;
            self.queue.try_send((dataset_id.to_owned(), doc.id.clone())).map_err(|_| KnowledgeError::QueueFull(self.settings.queue))?;
            queued.push(doc);
        }
        tracing::info!(
            dataset = dataset_id,
            documents = queued.len(),
            model = self.embedding_model().unwrap_or("none"),
            "dataset queued for re-indexing"
        );
        Ok(queued)
    }

    // --- helpers shared with the ingestion task ---

    /// Every document of a dataset.
    async fn list_all_documents(&self, dataset_id: &str) -> Result<Vec<DocumentRecord>, KnowledgeError> {
        let mut out = Vec::new();
        let mut page = 1;
        loop {
            let (data, total) = self.store.list_documents(dataset_id, page, 100, None).await?;
            let n = data.len();
            out.extend(data);
            if n == 0 || i64::from(page) * 100 >= total {
                return Ok(out);
            }
            page += 1;
        }
    }

    fn embedder(&self) -> Result<&Arc<Embeddings>, KnowledgeError> {
        self.embedder.as_ref().ok_or_else(|| KnowledgeError::EmbeddingUnavailable("no embedding model is configured ([embedding])".into()))
    }

    fn count_tokens(&self, text: &str) -> usize {
        match &self.embedder {
            Some(e) => e.count_tokens(text),
            // Without a tokenizer: about 4 bytes a token (English), 1 a character (CJK).
            None => text.chars().map(|c| if c.is_ascii() { 1 } else { 4 }).sum::<usize>().div_ceil(4),
        }
    }

    fn new_segment(&self, content: String, answer: String, keywords: Vec<String>) -> NewSegment {
        let tokens = self.count_tokens(&content) as i64;
        let word_count = content.chars().count() as i64;
        NewSegment { content, answer, keywords, tokens, word_count }
    }

    /// The update health gate's retrieval check: the first
    /// [`SELF_TEST_DATASETS`] datasets are searched as a retrieval would,
    /// by words, and by vectors where they have them (the query embedded by
    /// the loaded model, the dataset's index opened and searched). Hits are
    /// not counted: it writes nothing. A dataset whose vectors were made by
    /// another embedding model is skipped (it needs a re-index whatever
    /// version runs) and said so. Without datasets, a loaded embedder still
    /// embeds the query. The summary says what was searched.
    pub async fn self_test(&self) -> Result<String, KnowledgeError> {
        const QUERY: &str = "edgeai update self-test";
        let (datasets, total) = self.store.list_datasets(1, SELF_TEST_DATASETS, None).await?;
        if datasets.is_empty() {
            return match &self.embedder {
                Some(_) => {
                    let v = self.embed_one(QUERY, EmbedKind::Query).await?;
                    Ok(format!("retrieval: no datasets; the embedding model gave a {}-wide vector", v.len()))
                }
                None => Ok("retrieval: no datasets and no embedding model, nothing to search".to_owned()),
            };
        }
        let ids: Vec<String> = datasets.iter().map(|d| d.id.clone()).collect();
        let words = self.store.fulltext_search(&ids, QUERY, 4).await?;
        let (mut by_vectors, mut vector_hits, mut skipped) = (0usize, 0usize, Vec::new());
        let mut query_vec: Option<Vec<f32>> = None;
        for d in &datasets {
            if d.indexing_technique != IndexingTechnique::HighQuality || d.embedding_model.is_none() {
                continue;
            }
            match self.check_model(d) {
                Ok(()) => {}
                Err(e @ KnowledgeError::EmbeddingModelMismatch { .. }) => {
                    skipped.push(e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            }
            let q = match &query_vec {
                Some(q) => q.clone(),
                None => query_vec.insert(self.embed_one(QUERY, EmbedKind::Query).await?).clone(),
            };
            let index = self.index(&d.id, q.len()).await?;
            let found = tokio::task::spawn_blocking(move || index.read().unwrap_or_else(PoisonError::into_inner).search(&q, 4))
                .await
                .map_err(|e| KnowledgeError::Internal(format!("vector search: {e}")))?;
            by_vectors += 1;
            vector_hits += found.len();
        }
        let mut summary = format!(
            "retrieval searched {} of {total} datasets: by words ({} hits), {by_vectors} by vectors ({vector_hits} hits)",
            datasets.len(),
            words.len()
        );
        if !skipped.is_empty() {
            summary.push_str(&format!("; skipped: {}", skipped.join("; ")));
        }
        Ok(summary)
    }

    /// The stored model must be the loaded one, else a re-index is needed.
    fn check_model(&self, d: &DatasetRecord) -> Result<(), KnowledgeError> {
        let loaded = self.embedder()?.model_id();
        match &d.embedding_model {
            Some(stored) if stored != loaded => {
                Err(KnowledgeError::EmbeddingModelMismatch { dataset: d.name.clone(), stored: stored.clone(), loaded: loaded.to_owned() })
            }
            _ => Ok(()),
        }
    }

    async fn embed_one(&self, text: &str, kind: EmbedKind) -> Result<Vec<f32>, KnowledgeError> {
        let mut v = self.embedder()?.embed(vec![text.to_owned()], kind).await.map_err(map_embed)?;
        v.pop().ok_or_else(|| KnowledgeError::Internal("the embedder returned no vector".into()))
    }

    /// Embeds segment texts and appends their vectors (durable on return);
    /// records the dataset's model on its first vectors.
    async fn embed_segments(&self, d: &DatasetRecord, rowids: &[SegmentId], texts: Vec<String>) -> Result<(), KnowledgeError> {
        if d.indexing_technique != IndexingTechnique::HighQuality {
            return Ok(());
        }
        self.check_model(d)?;
        let e = Arc::clone(self.embedder()?);
        let vectors = e.embed(texts, EmbedKind::Passage).await.map_err(map_embed)?;
        let dims = vectors.first().map_or(0, Vec::len);
        if d.embedding_model.is_none() {
            self.store.set_embedding_model(&d.id, e.model_id(), dims as u32).await?;
        }
        let items: Vec<(SegmentId, Vec<f32>)> = rowids.iter().copied().zip(vectors).collect();
        let index = self.index(&d.id, dims).await?;
        tokio::task::spawn_blocking(move || index.write().unwrap_or_else(PoisonError::into_inner).append(&items))
            .await
            .map_err(|e| KnowledgeError::Internal(format!("vector append: {e}")))?
            .map_err(|e| KnowledgeError::Internal(e.to_string()))
    }

    /// Tombstones vectors of segments that are gone (durable on return),
    /// and compacts the dataset's files in the background when tombstones
    /// pile up.
    async fn forget_vectors(&self, dataset_id: &str, rowids: Vec<SegmentId>) -> Result<(), KnowledgeError> {
        if rowids.is_empty() || !self.dataset_dir(dataset_id).join("vectors").exists() {
            return Ok(());
        }
        let Some(dims) = self.dataset(dataset_id).await?.embedding_dims else { return Ok(()) };
        let index = self.index(dataset_id, dims as usize).await?;
        let ix = Arc::clone(&index);
        let compact = tokio::task::spawn_blocking(move || {
            let mut ix = ix.write().unwrap_or_else(PoisonError::into_inner);
            ix.delete(&rowids)?;
            Ok::<bool, crate::knowledge::vectors::VectorError>(ix.should_compact())
        })
        .await
        .map_err(|e| KnowledgeError::Internal(format!("vector delete: {e}")))?
        .map_err(|e| KnowledgeError::Internal(e.to_string()))?;
        if compact {
            // In the background: the tombstones already hide the vectors.
            compact_in_background(dataset_id, index);
        }
        Ok(())
    }

    /// Compacts a dataset's vector files in the background when they call
    /// for it (many files after an ingestion, or many tombstones).
    fn compact_if_due(&self, dataset_id: &str) {
        let Some(index) = lock(&self.indexes).get(dataset_id).cloned() else { return };
        let due = index.read().unwrap_or_else(PoisonError::into_inner).should_compact();
        if due {
            compact_in_background(dataset_id, index);
        }
    }

    /// The dataset's vector index (of vectors `dims` wide), opened once.
    async fn index(&self, dataset_id: &str, dims: usize) -> Result<Arc<RwLock<VectorIndex>>, KnowledgeError> {
        if let Some(ix) = lock(&self.indexes).get(dataset_id) {
            return Ok(Arc::clone(ix));
        }
        let dir = self.dataset_dir(dataset_id).join("vectors");
        let ix = tokio::task::spawn_blocking(move || VectorIndex::open(&dir, dims))
            .await
            .map_err(|e| KnowledgeError::Internal(format!("opening vectors: {e}")))?
            .map_err(|e| KnowledgeError::Internal(e.to_string()))?;
        let ix = Arc::new(RwLock::new(ix));
        Ok(Arc::clone(lock(&self.indexes).entry(dataset_id.to_owned()).or_insert(ix)))
    }

    fn dataset_dir(&self, dataset_id: &str) -> PathBuf {
        self.settings.dir.join(dataset_id)
    }

    fn source_path(&self, dataset_id: &str, document_id: &str) -> PathBuf {
        self.dataset_dir(dataset_id).join("sources").join(document_id)
    }

    /// Writes a document's source to a temporary file (fsynced) in its
    /// dataset's `sources/`; the caller renames it to the document id.
    async fn write_source_tmp(&self, dataset_id: &str, bytes: &bytes::Bytes) -> Result<PathBuf, KnowledgeError> {
        let dir = self.dataset_dir(dataset_id).join("sources");
        let path = dir.join(format!(".{}.part", uuid::Uuid::new_v4()));
        let bytes = bytes.clone();
        let p = path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(&dir)?;
            let mut f = std::fs::File::create(&p)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .await
        .map_err(|e| KnowledgeError::Internal(format!("writing a document source: {e}")))?
        .map_err(|e| KnowledgeError::Internal(format!("{}: {e}", path.display())))?;
        Ok(path)
    }
}

impl From<StoreError> for KnowledgeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what: "dataset", .. } => KnowledgeError::DatasetNotFound,
            StoreError::NotFound { what: "document", .. } => KnowledgeError::DocumentNotFound,
            StoreError::NotFound { what: "segment", .. } => KnowledgeError::SegmentNotFound,
            StoreError::DuplicateName { .. } => KnowledgeError::DatasetNameDuplicate,
            other => KnowledgeError::Store(other),
        }
    }
}

/// A batch id as Dify makes them: `YYYYMMDDhhmmss` (UTC) and six random digits.
fn new_batch() -> String {
    let stamp: String =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().chars().filter(char::is_ascii_digit).collect();
    format!("{stamp}{:06}", rand::random::<u32>() % 1_000_000)
}

/// Rewrites a dataset's vector files into one, dropping tombstones, on a
/// blocking thread. It holds the dataset's write lock while it runs (about
/// 1 s per 100k vectors measured), so that dataset's searches wait meanwhile.
fn compact_in_background(dataset_id: &str, index: Arc<RwLock<VectorIndex>>) {
    let dataset = dataset_id.to_owned();
    tokio::task::spawn_blocking(move || match index.write().unwrap_or_else(PoisonError::into_inner).compact(&|_| true) {
        Ok(stats) => tracing::info!(dataset = %dataset, ?stats, "vector files compacted"),
        Err(e) => tracing::warn!(dataset = %dataset, error = %e, "vector compaction failed; the files stay as they were"),
    });
}

/// Still queued or being indexed.
fn unfinished(s: IndexingStatus) -> bool {
    matches!(s, IndexingStatus::Waiting | IndexingStatus::Parsing | IndexingStatus::Splitting | IndexingStatus::Indexing)
}

fn check_name(name: &str) -> Result<(), KnowledgeError> {
    let n = name.trim().chars().count();
    if n == 0 || n > 40 {
        return Err(KnowledgeError::InvalidParam("Name must be between 1 to 40 characters.".into()));
    }
    Ok(())
}

fn paged<T>(data: Vec<T>, total: i64, page: Page) -> Paged<T> {
    let has_more = i64::from(page.page) * i64::from(page.limit) < total;
    Paged { data, total, has_more, page: page.page, limit: page.limit }
}

fn map_extract(e: ExtractError) -> KnowledgeError {
    match e {
        ExtractError::Unsupported(ext) => KnowledgeError::UnsupportedFileType(ext),
        ExtractError::Empty => KnowledgeError::EmptyFile,
        other => KnowledgeError::InvalidParam(other.to_string()),
    }
}

fn map_embed(e: EmbedError) -> KnowledgeError {
    match &e {
        EmbedError::Busy { .. } => KnowledgeError::EmbedderBusy,
        EmbedError::EmptyText { .. } => KnowledgeError::InvalidParam(e.to_string()),
        EmbedError::Load { .. } | EmbedError::ThreadGone | EmbedError::Upstream(_) => KnowledgeError::EmbeddingUnavailable(e.to_string()),
        EmbedError::Inference(_) => KnowledgeError::Internal(format!("embedding: {e}")),
    }
}

impl Knowledge {
    /// A knowledge-retrieval node's search. `multiple`: every dataset at
    /// once, with the node's weights (hybrid) or else the first dataset's
    /// own `retrieval_model`; `single`: each dataset alone, and the one
    /// whose best hit scores highest answers.
    pub async fn node_search(
        &self,
        call: crate::engine::workflow::KnowledgeCall,
    ) -> Result<Vec<crate::engine::workflow::KnowledgeHit>, KnowledgeError> {
        let first = call.dataset_ids.first().ok_or_else(|| KnowledgeError::InvalidParam("no dataset to search".into()))?;
        let mut settings = match self.dataset(first).await?.retrieval_model.as_deref().map(serde_json::from_str::<serde_json::Value>) {
            Some(Ok(v)) => search::parse_retrieval_model(&v).unwrap_or_default(),
            _ => RetrievalSettings::default(),
        };
        if self.embedder.is_none() {
            settings.method = SearchMethod::FullTextSearch;
        }
        if let Some(w) = call.weights {
            settings.method = if self.embedder.is_some() { SearchMethod::HybridSearch } else { SearchMethod::FullTextSearch };
            settings.weights = w;
        }
        if let Some(k) = call.top_k {
            settings.top_k = k.clamp(1, search::MAX_TOP_K);
        }
        if call.score_threshold.is_some() {
            settings.score_threshold = call.score_threshold;
        }
        let hits = if call.single {
            let mut best: Option<Vec<Hit>> = None;
            for id in &call.dataset_ids {
                let hits = self.retrieve(std::slice::from_ref(id), &call.query, &settings).await?;
                let top = hits.first().map_or(f32::MIN, |h| h.score);
                if best.as_ref().is_none_or(|b| b.first().map_or(f32::MIN, |h| h.score) < top) {
                    best = Some(hits);
                }
            }
            best.unwrap_or_default()
        } else {
            self.retrieve(&call.dataset_ids, &call.query, &settings).await?
        };
        Ok(hits
            .into_iter()
            .map(|h| crate::engine::workflow::KnowledgeHit {
                dataset_id: h.segment.dataset_id.clone(),
                dataset_name: h.dataset_name,
                document_id: h.segment.document_id.clone(),
                document_name: h.document_name,
                data_source_type: "upload_file".into(),
                segment_id: h.segment.id.clone(),
                segment_position: h.segment.position,
                index_node_hash: h.segment.hash.clone(),
                content: h.segment.content,
                score: h.score,
                hit_count: h.segment.hit_count,
                word_count: h.segment.word_count,
            })
            .collect())
    }
}

impl Knowledge {
    /// How an imported DSL's dataset ids become local ones: every local
    /// dataset by its id and by its name, then each `OLD=NEW` of the
    /// import (NEW a local id or name). A NEW that names nothing is an error.
    pub async fn dataset_resolution(
        &self,
        mapping: &[(String, String)],
    ) -> Result<std::collections::BTreeMap<String, String>, KnowledgeError> {
        let mut out = std::collections::BTreeMap::new();
        let mut page = 1;
        loop {
            let (data, total) = self.store.list_datasets(page, 100, None).await?;
            let n = data.len();
            for d in data {
                out.insert(d.name.clone(), d.id.clone());
                out.insert(d.id.clone(), d.id);
            }
            if n == 0 || i64::from(page) * 100 >= total {
                break;
            }
            page += 1;
        }
        for (old, new) in mapping {
            let local = out.get(new).cloned().ok_or_else(|| {
                KnowledgeError::InvalidParam(format!("--dataset {old}={new}: no local dataset has the id or name {new:?}"))
            })?;
            out.insert(old.clone(), local);
        }
        Ok(out)
    }
}
