//! Datasets provisioned from a directory (`dev.demo_dataset_dir`): the
//! dataset named after the directory is created if missing, and every file
//! of a supported type that it does not hold yet (by file name) is queued
//! for indexing. Running it again adds only new files.

use std::path::Path;

use super::{DocumentContent, Knowledge, KnowledgeError, NewDataset, Page};
use crate::knowledge::IndexingTechnique;

/// What a seeding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    pub dataset_id: String,
    pub dataset_name: String,
    /// Files queued now.
    pub queued: usize,
    /// Files the dataset already held.
    pub present: usize,
}

impl Knowledge {
    /// Seeds the dataset named after `dir` from its files (see the module doc).
    pub async fn seed_dir(&self, dir: &Path) -> Result<Seeded, KnowledgeError> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| KnowledgeError::InvalidParam(format!("{}: not a directory name", dir.display())))?;
        let dataset = match self.find_dataset(&name).await? {
            Some(d) => d,
            None => {
                let technique = if self.embedder.is_some() { IndexingTechnique::HighQuality } else { IndexingTechnique::Economy };
                self.create_dataset(NewDataset {
                    name: name.clone(),
                    description: format!("Seeded from {}", dir.display()),
                    indexing_technique: technique,
                    retrieval_model: None,
                })
                .await?
            }
        };
        let mut present = std::collections::HashSet::new();
        let mut page = 1;
        loop {
            let p = self.list_documents(&dataset.id, Page { page, limit: 100 }, None).await?;
            present.extend(p.data.into_iter().map(|d| d.name));
            if !p.has_more {
                break;
            }
            page += 1;
        }
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| KnowledgeError::InvalidParam(format!("{}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        files.sort();
        let mut seeded = Seeded { dataset_id: dataset.id.clone(), dataset_name: name, queued: 0, present: 0 };
        for path in files {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
            if present.contains(&file_name) {
                seeded.present += 1;
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| KnowledgeError::InvalidParam(format!("{}: {e}", path.display())))?;
            let rule = serde_json::json!({"mode": "custom", "rules": {
                "pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": true}, {"id": "remove_urls_emails", "enabled": false}],
                "segmentation": {"separator": "\n\n", "max_tokens": 200, "chunk_overlap": 0}}});
            match self.add_document(&dataset.id, DocumentContent::File { name: file_name, bytes: bytes.into() }, Some(rule), None).await {
                Ok(_) => seeded.queued += 1,
                Err(KnowledgeError::UnsupportedFileType(_)) => {
                    tracing::info!(file = %path.display(), "seed: skipping a file of an unsupported type")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(seeded)
    }

    /// The dataset with exactly this name, if any.
    pub async fn find_dataset(&self, name: &str) -> Result<Option<crate::knowledge::DatasetRecord>, KnowledgeError> {
        let (found, _) = self.store.list_datasets(1, 100, Some(name)).await?;
        Ok(found.into_iter().find(|d| d.name == name))
    }
}
