//! The knowledge service: datasets, documents, segments and retrieval,
//! written once for every front end. It owns the ingestion queue (a bounded
//! channel and one background task: extract → chunk → embed → write
//! vectors → make the segments visible in one transaction), the per-dataset
//! vector indexes, and hybrid scoring (vector and full-text scores
//! combined with the request's weights).
//! Knows nothing of HTTP or JSON wire shapes.
//!
//! SKELETON (contract between the API layer and this service; bodies are
//! filled in by the knowledge service work before this lands).

use std::sync::Arc;

use crate::knowledge::{DatasetRecord, DocumentRecord, Hit, IndexingTechnique, RetrievalSettings, SegmentRecord};

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
    #[error("dataset {dataset:?} was embedded with {stored} but the loaded embedding model is {loaded}; re-index it")]
    EmbeddingModelMismatch { dataset: String, stored: String, loaded: String },
    /// 429: the ingestion queue is full.
    #[error("too many documents are waiting to be indexed ({0}); retry later")]
    QueueFull(usize),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
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
    Text { name: String, text: String },
    /// An uploaded file: its client-given name (only its last path
    /// component is kept) and its bytes.
    File { name: String, bytes: bytes::Bytes },
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

/// The knowledge service; one per daemon, shared by every front end.
pub struct Knowledge {
    _private: (),
}

impl Knowledge {
    pub async fn create_dataset(&self, _new: NewDataset) -> Result<DatasetRecord, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn list_datasets(&self, _page: Page, _keyword: Option<String>) -> Result<Paged<DatasetRecord>, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn dataset(&self, _id: &str) -> Result<DatasetRecord, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn update_dataset(&self, _id: &str, _patch: DatasetPatch) -> Result<DatasetRecord, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn delete_dataset(&self, _id: &str) -> Result<(), KnowledgeError> {
        todo!("knowledge service")
    }
    /// Adds a document (or replaces `replace`'s content) and queues it for
    /// indexing; returns it in `waiting` at once.
    pub async fn add_document(
        &self,
        _dataset_id: &str,
        _content: DocumentContent,
        _process_rule: Option<serde_json::Value>,
        _replace: Option<&str>,
    ) -> Result<DocumentRecord, KnowledgeError> {
        todo!("knowledge service")
    }
    /// Renames a document without re-indexing (`update-by-text` with a name only).
    pub async fn rename_document(&self, _dataset_id: &str, _document_id: &str, _name: String) -> Result<DocumentRecord, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn list_documents(
        &self,
        _dataset_id: &str,
        _page: Page,
        _keyword: Option<String>,
    ) -> Result<Paged<DocumentRecord>, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn document(&self, _dataset_id: &str, _document_id: &str) -> Result<DocumentRecord, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn delete_document(&self, _dataset_id: &str, _document_id: &str) -> Result<(), KnowledgeError> {
        todo!("knowledge service")
    }
    /// The documents of one `create-by-*` batch, for `indexing-status`.
    pub async fn batch_status(&self, _dataset_id: &str, _batch: &str) -> Result<Vec<DocumentRecord>, KnowledgeError> {
        todo!("knowledge service")
    }
    /// Enables or disables documents (`PATCH .../documents/status/{enable|disable}`).
    pub async fn set_documents_enabled(&self, _dataset_id: &str, _ids: &[String], _enabled: bool) -> Result<(), KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn list_segments(
        &self,
        _dataset_id: &str,
        _document_id: &str,
        _page: Page,
        _keyword: Option<String>,
    ) -> Result<Paged<SegmentRecord>, KnowledgeError> {
        todo!("knowledge service")
    }
    /// One segment of a document (`GET .../segments/{id}`).
    /// ADDED by the API work (H5): Dify's "Get Chunk".
    pub async fn segment(&self, _dataset_id: &str, _document_id: &str, _segment_id: &str) -> Result<SegmentRecord, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn add_segments(&self, _dataset_id: &str, _document_id: &str, _segments: Vec<SegmentInput>) -> Result<Vec<SegmentRecord>, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn update_segment(
        &self,
        _dataset_id: &str,
        _document_id: &str,
        _segment_id: &str,
        _input: SegmentInput,
    ) -> Result<SegmentRecord, KnowledgeError> {
        todo!("knowledge service")
    }
    pub async fn delete_segment(&self, _dataset_id: &str, _document_id: &str, _segment_id: &str) -> Result<(), KnowledgeError> {
        todo!("knowledge service")
    }
    /// Searches datasets; hits sorted by score, best first.
    pub async fn retrieve(&self, _dataset_ids: &[String], _query: &str, _settings: &RetrievalSettings) -> Result<Vec<Hit>, KnowledgeError> {
        todo!("knowledge service")
    }
    /// Embeds texts for `POST /v1/embeddings`: vectors and the token count.
    pub async fn embed(&self, _texts: Vec<String>) -> Result<(Vec<Vec<f32>>, u64, String), KnowledgeError> {
        todo!("knowledge service")
    }
    /// Parses Dify's `retrieval_model` object (JSON) into settings,
    /// `InvalidParam` naming the bad field.
    pub fn retrieval_settings(_value: &serde_json::Value) -> Result<RetrievalSettings, KnowledgeError> {
        todo!("knowledge service")
    }
}

/// Held by the service; `None` while the knowledge service is being built.
pub type KnowledgeHandle = Option<Arc<Knowledge>>;
