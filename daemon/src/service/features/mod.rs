//! App features beyond the chat turn, as Dify's Service API offers them:
//! uploaded files (bytes under `files.dir`, metadata in the store),
//! suggested questions after an answer (asked of the local model), and the
//! app's feedback list. Knows nothing of HTTP, multipart or JSON shapes.
//!
//! Calls that can be refused by a feature's own rules return an
//! [`Outcome`]: the outer error is the service failing (store, shutdown,
//! an unknown message), the inner one the feature refusing the request.

mod files;
mod suggested;

use std::path::PathBuf;

use super::{Service, ServiceError};
use crate::engine::AppDefinition;
use crate::store::AppFeedback;

pub use files::{check_upload, sweep_unfinished_uploads, Upload, UploadMeta};

/// Why a feature refused a request, or could not keep its bytes.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("Suggested Questions Is Disabled.")]
    SuggestionsDisabled,
    #[error("File size exceeded. The file is larger than {limit} bytes.")]
    FileTooLarge { limit: u64 },
    #[error("File type not allowed.")]
    UnsupportedFileType { reason: String },
    #[error("The specified filename does not exist.")]
    FilenameMissing,
    #[error("Filename contains invalid characters")]
    FilenameInvalid,
    #[error("The requested file was not found.")]
    FileNotFound { id: String },
    #[error("storing or reading the uploaded file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A service call that a feature may refuse: `Err` is the service failing,
/// `Ok(Err)` the feature refusing.
pub type Outcome<T> = Result<Result<T, FeatureError>, ServiceError>;

impl Service {
    /// Dify's `GET /app/feedbacks`: the feedbacks on the app's messages,
    /// newest first. `page` from 1, `limit` 1..=101.
    pub async fn app_feedbacks(&self, app: &AppDefinition, page: u32, limit: u32) -> Result<Vec<AppFeedback>, ServiceError> {
        Ok(self.store.list_app_feedbacks(&app.id, page, limit).await?)
    }
}
