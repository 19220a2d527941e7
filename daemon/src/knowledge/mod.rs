//! Knowledge bases: datasets of documents cut into segments, embedded and
//! searched by meaning (vectors), by words (full text) or both (hybrid).
//!
//! Owns the domain types every layer shares (records of datasets,
//! documents and segments, retrieval settings and hits) and the pure parts:
//! text extraction from uploaded files (`extract`), chunking by Dify's
//! `process_rule` (`chunk`), and the memory-mapped vector files (`vectors`).
//! Must not touch: sockets (the `api` module), SQL (the `store` module
//! keeps the metadata and the full-text index), the model (the service
//! passes embeddings and a token counter in).

pub mod chunk;
pub mod extract;
pub mod vectors;

use serde::{Deserialize, Serialize};

/// A segment's key: its SQLite rowid, also its key in the vector files.
pub type SegmentId = i64;

/// How a dataset indexes: `high_quality` embeds every segment,
/// `economy` keeps only the full-text index (as in Dify).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexingTechnique {
    HighQuality,
    Economy,
}

/// Where a document's text progresses (Dify's `indexing_status` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexingStatus {
    Waiting,
    Parsing,
    Splitting,
    Indexing,
    Completed,
    Error,
    Paused,
}

/// A dataset as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRecord {
    /// UUID.
    pub id: String,
    pub name: String,
    pub description: String,
    pub indexing_technique: IndexingTechnique,
    /// Identity of the embedding model its vectors come from (e.g.
    /// `local:multilingual-e5-small@<sha256 prefix>`), `None` until the
    /// first document is embedded or for `economy`.
    pub embedding_model: Option<String>,
    pub embedding_dims: Option<u32>,
    /// Dify's `retrieval_model` object as given (JSON text), the default
    /// for `/retrieve` and for apps that do not say.
    pub retrieval_model: Option<String>,
    pub document_count: i64,
    pub word_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentSource {
    /// `create-by-text`.
    Text,
    /// `create-by-file`: the original file name and its detected type
    /// (`txt`, `markdown`, `html`, `csv`, `pdf`).
    File { name: String, kind: String, size: i64 },
}

/// A document as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    /// UUID.
    pub id: String,
    pub dataset_id: String,
    /// 1-based position in its dataset.
    pub position: i64,
    pub name: String,
    pub source: DocumentSource,
    /// The batch id `create-by-*` returned, for `indexing-status`.
    pub batch: String,
    /// Dify's `process_rule` as given (JSON text).
    pub process_rule: String,
    pub status: IndexingStatus,
    /// Why the document is in `error`.
    pub error: Option<String>,
    pub enabled: bool,
    pub word_count: i64,
    pub tokens: i64,
    /// Segments written / segments planned (for `indexing-status`).
    pub completed_segments: i64,
    pub total_segments: i64,
    pub created_at: i64,
    /// Unix seconds at each step, as Dify reports them.
    pub processing_started_at: Option<i64>,
    pub parsing_completed_at: Option<i64>,
    pub splitting_completed_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
}

/// A segment as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRecord {
    pub rowid: SegmentId,
    /// UUID (Dify's segment id and `index_node_id`).
    pub id: String,
    pub document_id: String,
    pub dataset_id: String,
    /// 1-based position in its document.
    pub position: i64,
    pub content: String,
    /// Q&A answer, empty for text segments.
    pub answer: String,
    pub keywords: Vec<String>,
    pub word_count: i64,
    pub tokens: i64,
    /// sha256 hex of the content (Dify's `index_node_hash`).
    pub hash: String,
    pub hit_count: i64,
    pub enabled: bool,
    /// `completed` once searchable; `indexing` while its vector is written.
    pub status: IndexingStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

/// How to search (Dify's `retrieval_model.search_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMethod {
    SemanticSearch,
    FullTextSearch,
    HybridSearch,
    /// Dify's older name for full-text search on `economy` datasets.
    KeywordSearch,
}

/// One search's settings, from `retrieval_model` or a knowledge-retrieval node.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalSettings {
    pub method: SearchMethod,
    pub top_k: usize,
    /// Hits scoring below are dropped (`score_threshold_enabled`).
    pub score_threshold: Option<f32>,
    /// Hybrid weights (vector, keyword), summing to 1.
    pub weights: (f32, f32),
}

/// One search result: a segment with its document and its score in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub segment: SegmentRecord,
    pub document_name: String,
    pub dataset_name: String,
    pub score: f32,
}
