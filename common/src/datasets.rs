//! JSON shapes of Dify's Knowledge API (`/v1/datasets…`, and the same routes
//! under `/admin/v1/datasets…` on the unix socket), as far as `edgeaictl
//! datasets` reads them. Answers carry many more fields (Dify's
//! `fields/*_fields.py`); serde ignores those.
//!
//! Owns: the serde types only. Must not: know HTTP paths or the daemon's
//! records; the daemon's `api/datasets/wire.rs` writes these shapes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A page of a list: `{data, has_more, limit, total, page}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub limit: u32,
    pub total: u64,
    pub page: u32,
}

/// A dataset (Dify's `DatasetDetailResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `high_quality` (embeddings) or `economy` (keywords only).
    pub indexing_technique: Option<String>,
    pub document_count: u64,
    pub word_count: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// The embedding model the dataset's vectors come from, once it has any.
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// The dataset's retrieval settings with Dify's defaults filled in.
    #[serde(default)]
    pub retrieval_model_dict: Option<Value>,
}

/// Body of `POST /datasets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateDataset {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `high_quality` or `economy`.
    pub indexing_technique: String,
}

/// A document as listed (Dify's `DocumentResponse`); a `create-by-*`
/// answer holds one too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub name: String,
    /// `waiting`, `parsing`, `splitting`, `indexing`, `completed`, `error`, `paused`.
    pub indexing_status: String,
    /// `queuing`, `indexing`, `available`, `disabled`, `error`, `paused`.
    pub display_status: String,
    pub enabled: bool,
    pub word_count: u64,
    pub tokens: u64,
    #[serde(default)]
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// `GET .../documents/{id}`, as far as the list does not say it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentDetail {
    pub id: String,
    pub segment_count: u64,
}

/// Answer of `create-by-text`/`create-by-file`: the document, waiting, and
/// the batch whose `indexing-status` follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedDocument {
    pub document: Document,
    pub batch: String,
}

/// One document of `GET .../documents/{batch}/indexing-status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexingStatus {
    pub id: String,
    pub indexing_status: String,
    #[serde(default)]
    pub error: Option<String>,
    pub completed_segments: u64,
    pub total_segments: u64,
}

impl IndexingStatus {
    /// `completed` or `error`: nothing more will happen to it.
    pub fn is_final(&self) -> bool {
        matches!(self.indexing_status.as_str(), "completed" | "error")
    }
}

/// `GET .../documents/{batch}/indexing-status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexingStatusList {
    pub data: Vec<IndexingStatus>,
}

/// Body of `POST .../retrieve`; without `retrieval_model` the dataset's own applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrieveRequest {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrieval_model: Option<Value>,
}

/// Answer of `POST .../retrieve`, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrieveResponse {
    pub records: Vec<RetrieveRecord>,
}

/// One hit (Dify's `HitTestingRecord`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrieveRecord {
    pub segment: HitSegment,
    #[serde(default)]
    pub score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HitSegment {
    pub id: String,
    pub position: i64,
    pub content: String,
    pub document: HitDocument,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HitDocument {
    pub id: String,
    pub name: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn reads_difys_shapes_ignoring_other_fields() {
        let page: Page<Dataset> = serde_json::from_str(
            r#"{"data":[{"id":"d1","name":"Manuals","description":"","provider":"vendor","indexing_technique":"high_quality",
            "document_count":2,"word_count":900,"created_at":1700000000,"embedding_model":null,"tags":[],
            "retrieval_model_dict":{"search_method":"semantic_search","top_k":2}}],"has_more":false,"limit":20,"total":1,"page":1}"#,
        )
        .unwrap();
        assert_eq!(page.data[0].name, "Manuals");
        assert_eq!(page.data[0].retrieval_model_dict.as_ref().unwrap()["top_k"], 2);
        let hits: RetrieveResponse = serde_json::from_str(
            r#"{"query":{"content":"q"},"records":[{"segment":{"id":"s1","position":3,"document_id":"x","content":"Reset the PLC",
            "document":{"id":"x","name":"plc-alarms.md","doc_type":null}},"score":0.83,"child_chunks":[]}]}"#,
        )
        .unwrap();
        assert_eq!(hits.records[0].segment.document.name, "plc-alarms.md");
        assert_eq!(hits.records[0].score, Some(0.83));
    }

    #[test]
    fn requests_leave_out_what_is_not_given() {
        let r = RetrieveRequest { query: "q".into(), retrieval_model: None };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"query":"q"}"#);
        let c = CreateDataset { name: "n".into(), description: None, indexing_technique: "economy".into() };
        assert_eq!(serde_json::to_string(&c).unwrap(), r#"{"name":"n","indexing_technique":"economy"}"#);
    }

    #[test]
    fn only_completed_and_error_are_final() {
        let s =
            |st: &str| IndexingStatus { id: "d".into(), indexing_status: st.into(), error: None, completed_segments: 0, total_segments: 0 };
        assert!(s("completed").is_final() && s("error").is_final());
        assert!(!s("waiting").is_final() && !s("indexing").is_final() && !s("paused").is_final());
    }
}
