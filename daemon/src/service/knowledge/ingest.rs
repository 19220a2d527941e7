//! The ingestion task: takes queued document ids one at a time and walks
//! each document through Dify's steps — parsing (text out of the file),
//! splitting (chunks by its process rule), indexing (segments inserted
//! invisible, embedded in batches, vectors appended durably), then makes
//! segments and document visible in one transaction. A failure puts the
//! document in `error` with the reason; a document deleted meanwhile is
//! dropped and its vectors forgotten.

use std::sync::{PoisonError, Weak};

use tokio::sync::mpsc;

use super::{lock, map_extract, Knowledge, KnowledgeError};
use crate::knowledge::chunk::{self, ProcessRule};
use crate::knowledge::extract::{self, Kind};
use crate::knowledge::{DocumentRecord, DocumentSource, IndexingTechnique};
use crate::store::DocumentStep;

/// Runs until the service is dropped or the queue closes.
pub(super) async fn run(k: Weak<Knowledge>, mut rx: mpsc::Receiver<(String, String)>) {
    while let Some((dataset_id, doc_id)) = rx.recv().await {
        let Some(k) = k.upgrade() else { return };
        if lock(&k.cancelled).remove(&doc_id) {
            continue;
        }
        let started = std::time::Instant::now();
        let result = k.index_document(&dataset_id, &doc_id).await;
        // A delete that came while it was indexed has done its work.
        lock(&k.cancelled).remove(&doc_id);
        match result {
            Ok(Some(n)) => {
                tracing::info!(document = %doc_id, segments = n, elapsed_ms = started.elapsed().as_millis() as u64, "document indexed")
            }
            Ok(None) => tracing::info!(document = %doc_id, "document deleted while indexing; dropped"),
            Err(KnowledgeError::DocumentNotFound | KnowledgeError::DatasetNotFound) => {
                tracing::info!(document = %doc_id, "document deleted while indexing; dropped");
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(document = %doc_id, error = %reason, "document indexing failed");
                if let Err(e) = k.store.set_document_step(&doc_id, DocumentStep::Error(reason)).await {
                    tracing::error!(document = %doc_id, error = %e, "could not record a document's failure");
                }
            }
        }
    }
}

impl Knowledge {
    /// Indexes one document; `Ok(None)` when it was deleted meanwhile.
    async fn index_document(&self, dataset_id: &str, doc_id: &str) -> Result<Option<usize>, KnowledgeError> {
        let doc = self.document(dataset_id, doc_id).await?;
        let dataset = self.dataset(dataset_id).await?;
        let path = self.source_path(&doc.dataset_id, doc_id);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) => {
                return Err(KnowledgeError::Internal(format!(
                    "the document's source {} is unreadable ({e}); upload it again",
                    path.display()
                )))
            }
        };
        self.store.set_document_step(doc_id, DocumentStep::Parsing).await?;
        let text = self.extract_text(&doc, bytes).await?;
        self.store.set_document_step(doc_id, DocumentStep::Splitting).await?;
        let rule = ProcessRule::parse(serde_json::from_str(&doc.process_rule).ok().as_ref())
            .map_err(|e| KnowledgeError::InvalidParam(e.to_string()))?;
        let counter = self.embedder.clone();
        let chunks = tokio::task::spawn_blocking(move || {
            let count = |s: &str| match &counter {
                Some(e) => e.count_tokens(s),
                None => s.chars().count().div_ceil(2),
            };
            chunk::chunk(&text, &rule, &count)
        })
        .await
        .map_err(|e| KnowledgeError::Internal(format!("chunking: {e}")))?;
        if chunks.is_empty() {
            return Err(KnowledgeError::InvalidParam("the document has no text to index".into()));
        }
        // A re-index (update-by-*, or a restart mid-way) starts clean.
        let old = self.store.reset_document_segments(doc_id).await?;
        self.forget_vectors(&doc.dataset_id, old).await?;
        let segments: Vec<_> = chunks.into_iter().map(|c| self.new_segment(c.content, String::new(), Vec::new())).collect();
        let texts: Vec<String> = segments.iter().map(|s| s.content.clone()).collect();
        self.store.set_document_step(doc_id, DocumentStep::Indexing).await?;
        let rowids: Vec<_> = self.store.insert_segments(doc_id, segments).await?.into_iter().map(|s| s.rowid).collect();
        if dataset.indexing_technique == IndexingTechnique::HighQuality {
            let batch = self.settings.embed_batch.max(1);
            for (i, (ids, texts)) in rowids.chunks(batch).zip(texts.chunks(batch)).enumerate() {
                if self.is_cancelled(doc_id) {
                    self.forget_vectors(&doc.dataset_id, rowids[..i * batch].to_vec()).await?;
                    return Ok(None);
                }
                let fresh = self.dataset(&doc.dataset_id).await?;
                self.embed_segments(&fresh, ids, texts.to_vec()).await?;
                self.store.set_document_progress(doc_id, (i * batch + ids.len()) as i64).await?;
                fail::fail_point!("knowledge-embed-batch");
            }
        }
        match self.store.complete_document(doc_id, &rowids).await {
            Ok(_) => {
                self.compact_if_due(&doc.dataset_id);
                Ok(Some(rowids.len()))
            }
            Err(e) => {
                self.forget_vectors(&doc.dataset_id, rowids).await?;
                Err(e.into())
            }
        }
    }

    fn is_cancelled(&self, doc_id: &str) -> bool {
        self.cancelled.lock().unwrap_or_else(PoisonError::into_inner).contains(doc_id)
    }

    /// The text of a document: as given, or extracted from its file off the runtime.
    async fn extract_text(&self, doc: &DocumentRecord, bytes: Vec<u8>) -> Result<String, KnowledgeError> {
        let kind = match &doc.source {
            DocumentSource::Text => Kind::Txt,
            DocumentSource::File { name, .. } => extract::detect(name, &bytes).map_err(map_extract)?,
        };
        let max = self.settings.max_text_chars;
        tokio::task::spawn_blocking(move || extract::extract(kind, &bytes, max))
            .await
            .map_err(|e| KnowledgeError::Internal(format!("extracting text: {e}")))?
            .map_err(|e| KnowledgeError::InvalidParam(e.to_string()))
    }
}
