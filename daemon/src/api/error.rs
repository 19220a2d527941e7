//! Every error the HTTP API can return, and the one exhaustive mapping from
//! error to status code, Dify error code and message. A new variant does not
//! compile until someone decides its status here.

use http::StatusCode;

use crate::governor::pressure::{GovernorError, RETRY_AFTER_SECS};
use crate::model::ModelError;
use crate::service::annotations::AnnotationError;
use crate::service::backup::BackupError;
use crate::service::export::ExportError;
use crate::service::features::FeatureError;
use crate::service::knowledge::KnowledgeError;
use crate::service::ServiceError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Authorization header must be provided and start with 'Bearer'")]
    MissingKey,
    #[error("Authorization scheme must be 'Bearer'")]
    NotBearer,
    #[error("Access token is invalid")]
    InvalidKey,
    /// The key's app is no longer served (removed, or its stored definition
    /// is unusable): Dify's 403 from `validate_app_token`.
    #[error("The app no longer exists.")]
    AppGone,
    #[error("The app's API service has been disabled.")]
    ApiDisabled,
    #[error("the admin API is only for root or the configured admin group")]
    NotAdmin,
    #[error("The requested URL was not found on the server.")]
    NoRoute,
    #[error("The method is not allowed for the requested URL.")]
    MethodNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body is not valid UTF-8")]
    NotUtf8,
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("App unavailable, please check your app configurations.")]
    AppUnavailable,
    /// A chat route on a completion app (Dify's `NotChatAppError`).
    #[error("Please check if your app mode matches the right API route.")]
    NotChatApp,
    /// A workflow route on another kind of app (Dify's `NotWorkflowAppError`).
    #[error("Please check if your app mode matches the right API route.")]
    NotWorkflowApp,
    /// A chatflow run failed (blocking mode; streaming reports it in events).
    #[error("{0}")]
    WorkflowFailed(String),
    /// A run task ended without its last event (a bug; the log has it).
    #[error("the run ended without an outcome")]
    RunVanished,
    #[error("{0}")]
    NotFound(String),
    #[error("the request took longer than {secs} s")]
    Timeout { secs: u64 },
    /// Over `server.client_requests_per_minute` or `server.key_requests_per_minute`.
    #[error("too many requests from this {}; retry in {} s", .0.scope.as_str(), .0.retry_after_secs)]
    RateLimited(super::ratelimit::Limited),
    #[error("failed reading the request body: {0}")]
    BodyRead(String),
    #[error("encoding the response: {0}")]
    Encode(String),
    // Dify's file and feature routes (api/dify_features.rs).
    #[error("Please upload your file.")]
    NoFileUploaded,
    #[error("Only one file is allowed.")]
    TooManyFiles,
    #[error(transparent)]
    Feature(#[from] FeatureError),
    // Dify's Knowledge API (api/datasets.rs) and /v1/embeddings.
    /// The knowledge service is not running (not configured, or starting).
    #[error("Knowledge base is not available")]
    KnowledgeUnavailable,
    /// Dify's `InvalidActionError` (documents status actions).
    #[error("{0}")]
    InvalidAction(String),
    /// Dify's `InvalidMetadataError` (`metadata` of a document).
    #[error("{0}")]
    InvalidMetadata(String),
    #[error(transparent)]
    Knowledge(#[from] KnowledgeError),
    // Dify's annotation reply routes (api/annotations.rs).
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    // The log export (api/admin.rs, `GET /admin/v1/export/logs`).
    #[error(transparent)]
    Export(#[from] ExportError),
    // The backup snapshot (api/admin.rs, `GET /admin/v1/backup`).
    #[error(transparent)]
    Backup(#[from] BackupError),
    // JWT bearer tokens (api/jwt.rs): each reason its own variant, 401
    // unless said otherwise; messages never echo the token.
    /// Not a usable JWT: bad shape or encoding, a claim missing or wrong.
    #[error("Access token is invalid: {reason}")]
    TokenInvalid { reason: String },
    #[error("Access token has expired")]
    TokenExpired,
    /// `nbf` is later than now (plus the leeway).
    #[error("Access token is not valid yet")]
    TokenNotYetValid,
    #[error("Access token is for another audience")]
    TokenAudience,
    /// No `[[auth.jwt]]` issuer has the token's `iss`.
    #[error("Access token is from an unknown issuer")]
    TokenIssuer,
    /// The issuer's key set has no key with the token's `kid`.
    #[error("Access token names an unknown key (kid)")]
    TokenUnknownKid,
    /// `alg` not in the issuer's `algorithms`, `none`, or not the key's kind.
    #[error("Access token algorithm {alg} is not allowed")]
    TokenAlgorithm { alg: String },
    #[error("Access token signature is invalid")]
    TokenSignature,
    /// The app claim names no served app (403, as an API key of a gone app).
    #[error("The app the access token names is not served.")]
    TokenAppNotServed,
    // The A/B slot controls (api/admin.rs, `/admin/v1/update`).
    #[error(transparent)]
    Update(#[from] crate::update::UpdateError),
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        ApiError::Service(ServiceError::Model(e))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Service(ServiceError::Store(e))
    }
}

/// Status, Dify code, client-facing message, and a Retry-After (seconds).
pub struct Mapped {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn mapped(&self) -> Mapped {
        use StatusCode as S;
        let m = |status, code, message: String| Mapped { status, code, message, retry_after: None };
        let busy = |code, message: String, secs| Mapped { status: S::SERVICE_UNAVAILABLE, code, message, retry_after: Some(secs) };
        match self {
            ApiError::MissingKey | ApiError::NotBearer | ApiError::InvalidKey => m(S::UNAUTHORIZED, "unauthorized", self.to_string()),
            ApiError::AppGone | ApiError::ApiDisabled | ApiError::TokenAppNotServed => m(S::FORBIDDEN, "forbidden", self.to_string()),
            ApiError::TokenInvalid { .. }
            | ApiError::TokenExpired
            | ApiError::TokenNotYetValid
            | ApiError::TokenAudience
            | ApiError::TokenIssuer
            | ApiError::TokenUnknownKid
            | ApiError::TokenAlgorithm { .. }
            | ApiError::TokenSignature => m(S::UNAUTHORIZED, "unauthorized", self.to_string()),
            ApiError::NotAdmin => m(S::FORBIDDEN, "forbidden", self.to_string()),
            ApiError::NoRoute => m(S::NOT_FOUND, "not_found", self.to_string()),
            ApiError::MethodNotAllowed => m(S::METHOD_NOT_ALLOWED, "method_not_allowed", self.to_string()),
            ApiError::BodyTooLarge { .. } => m(S::PAYLOAD_TOO_LARGE, "request_entity_too_large", self.to_string()),
            ApiError::NotUtf8 | ApiError::BadJson(_) | ApiError::BodyRead(_) => m(S::BAD_REQUEST, "bad_request", self.to_string()),
            ApiError::InvalidParam(_) => m(S::BAD_REQUEST, "invalid_param", self.to_string()),
            ApiError::AppUnavailable => m(S::BAD_REQUEST, "app_unavailable", self.to_string()),
            ApiError::NotChatApp => m(S::BAD_REQUEST, "not_chat_app", self.to_string()),
            ApiError::NotWorkflowApp => m(S::BAD_REQUEST, "not_workflow_app", self.to_string()),
            ApiError::WorkflowFailed(_) => m(S::BAD_REQUEST, "completion_request_error", self.to_string()),
            ApiError::RunVanished => m(S::INTERNAL_SERVER_ERROR, "internal_server_error", self.to_string()),
            ApiError::NotFound(_) => m(S::NOT_FOUND, "not_found", self.to_string()),
            ApiError::Timeout { .. } => m(S::GATEWAY_TIMEOUT, "request_timeout", self.to_string()),
            ApiError::RateLimited(l) => Mapped {
                status: S::TOO_MANY_REQUESTS,
                code: "too_many_requests",
                message: self.to_string(),
                retry_after: Some(l.retry_after_secs),
            },
            ApiError::Encode(_) => m(S::INTERNAL_SERVER_ERROR, "internal_server_error", self.to_string()),
            ApiError::NoFileUploaded => m(S::BAD_REQUEST, "no_file_uploaded", self.to_string()),
            ApiError::TooManyFiles => m(S::BAD_REQUEST, "too_many_files", self.to_string()),
            ApiError::Feature(f) => match f {
                // Dify's service API raises werkzeug's BadRequest here (its newest
                // main answers 403 app_suggested_questions_after_answer_disabled).
                FeatureError::SuggestionsDisabled => m(S::BAD_REQUEST, "bad_request", f.to_string()),
                FeatureError::FileTooLarge { .. } => m(S::PAYLOAD_TOO_LARGE, "file_too_large", f.to_string()),
                FeatureError::UnsupportedFileType { .. } => m(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_file_type", f.to_string()),
                // Dify raises werkzeug's FilenameNotExistsError: its code is the class name.
                FeatureError::FilenameMissing => m(S::BAD_REQUEST, "filename_not_exists_error", f.to_string()),
                FeatureError::FilenameInvalid => m(S::BAD_REQUEST, "invalid_param", f.to_string()),
                FeatureError::FileNotFound { .. } => m(S::NOT_FOUND, "file_not_found", f.to_string()),
                FeatureError::Io { .. } => {
                    m(S::INTERNAL_SERVER_ERROR, "internal_server_error", "internal error storing the file; see the daemon log".into())
                }
            },
            ApiError::KnowledgeUnavailable => busy("provider_not_initialize", self.to_string(), 5),
            ApiError::InvalidAction(_) => m(S::BAD_REQUEST, "invalid_action", self.to_string()),
            ApiError::InvalidMetadata(_) => m(S::BAD_REQUEST, "invalid_metadata", self.to_string()),
            ApiError::Knowledge(k) => knowledge_mapped(k),
            ApiError::Annotation(a) => match a {
                AnnotationError::InvalidParam(_) => m(S::BAD_REQUEST, "invalid_param", a.to_string()),
                AnnotationError::NotFound | AnnotationError::JobNotFound => m(S::NOT_FOUND, "not_found", a.to_string()),
                AnnotationError::EmbeddingUnavailable(_) => busy("provider_not_initialize", a.to_string(), 5),
                AnnotationError::EmbedderBusy => {
                    Mapped { status: S::TOO_MANY_REQUESTS, code: "too_many_requests", message: a.to_string(), retry_after: Some(5) }
                }
                AnnotationError::Store(st) => store_mapped(st),
                // Internal detail goes to the log, not to the client.
                AnnotationError::Internal(_) => {
                    m(S::INTERNAL_SERVER_ERROR, "internal_server_error", "internal error in annotation replies; see the daemon log".into())
                }
            },
            ApiError::Export(x) => match x {
                ExportError::UnknownTable(_) | ExportError::UnknownFormat(_) => m(S::BAD_REQUEST, "invalid_param", x.to_string()),
                ExportError::Store(st) => store_mapped(st),
                // Internal detail goes to the log, not to the client.
                ExportError::Arrow { .. } | ExportError::Parquet { .. } | ExportError::Write { .. } | ExportError::Panicked => {
                    m(S::INTERNAL_SERVER_ERROR, "internal_server_error", "internal error writing the export; see the daemon log".into())
                }
            },
            ApiError::Backup(b) => match b {
                BackupError::Store(st) => store_mapped(st),
                // Internal detail goes to the log, not to the client.
                BackupError::Vectors(_)
                | BackupError::Io { .. }
                | BackupError::VectorsChanging { .. }
                | BackupError::Write(_)
                | BackupError::Panicked => {
                    m(S::INTERNAL_SERVER_ERROR, "internal_server_error", "internal error taking the backup; see the daemon log".into())
                }
            },
            ApiError::Update(u) => update_mapped(u),
            ApiError::Service(s) => match s {
                ServiceError::InvalidParam(_) => m(S::BAD_REQUEST, "invalid_param", s.to_string()),
                ServiceError::ConversationNotFound
                | ServiceError::MessageNotFound
                | ServiceError::LastConversationNotFound
                | ServiceError::FirstMessageNotFound => m(S::NOT_FOUND, "not_found", s.to_string()),
                ServiceError::AppNotFound(_)
                | ServiceError::KeyNotFound(_)
                | ServiceError::AppVersionNotFound { .. }
                | ServiceError::WorkflowNotFound(_)
                | ServiceError::WorkflowRunNotFound(_)
                | ServiceError::ConversationVariableNotFound(_)
                | ServiceError::ModelNotFound { .. } => m(S::NOT_FOUND, "not_found", s.to_string()),
                ServiceError::NotWorkflowApp(_) => m(S::BAD_REQUEST, "not_workflow_app", s.to_string()),
                ServiceError::AppInvalid { .. } | ServiceError::DslInvalid(_) => m(S::BAD_REQUEST, "invalid_param", s.to_string()),
                ServiceError::ExportFailed { .. } => m(S::INTERNAL_SERVER_ERROR, "internal_server_error", s.to_string()),
                ServiceError::ShuttingDown => busy("service_unavailable", s.to_string(), 5),
                // Internal detail goes to the log, not to the client.
                ServiceError::Corrupt { .. } => m(
                    S::INTERNAL_SERVER_ERROR,
                    "internal_server_error",
                    "internal error: stored state is unusable; see the daemon log".into(),
                ),
                ServiceError::Model(e) => match e {
                    ModelError::Disabled
                    | ModelError::Loading
                    | ModelError::LoadFailed { .. }
                    | ModelError::ThreadGone
                    | ModelError::Unloaded
                    | ModelError::Unloading => busy("provider_not_initialize", e.to_string(), 5),
                    ModelError::QueueFull { .. } | ModelError::AppQueueFull { .. } => Mapped {
                        status: S::TOO_MANY_REQUESTS,
                        code: "too_many_requests",
                        message: format!("{e}; retry later"),
                        retry_after: Some(1),
                    },
                    ModelError::ContextOverflow { .. } => m(S::BAD_REQUEST, "context_length_exceeded", e.to_string()),
                    ModelError::InvalidPrompt(_) => m(S::BAD_REQUEST, "invalid_param", e.to_string()),
                    // Dify: an InvokeError is CompletionRequestError, 400.
                    ModelError::Inference(_) => m(S::BAD_REQUEST, "completion_request_error", e.to_string()),
                    ModelError::Template(_) => m(S::INTERNAL_SERVER_ERROR, "internal_server_error", e.to_string()),
                },
                ServiceError::Store(st) => store_mapped(st),
                ServiceError::Knowledge(k) => knowledge_mapped(k),
                ServiceError::Governor(g) => match g {
                    GovernorError::MemoryPressure { .. } => busy("service_unavailable", g.to_string(), RETRY_AFTER_SECS),
                    // Set-up errors of the watchers are logged, never a request's.
                    GovernorError::Watch { .. } | GovernorError::WriteNotBase64 => m(
                        S::INTERNAL_SERVER_ERROR,
                        "internal_server_error",
                        "internal error in the memory governor; see the daemon log".into(),
                    ),
                },
            },
        }
    }
}

/// An update control's refusal: 409 with a code per reason (the files are
/// untouched); I/O trouble is a 500 whose message names the file.
fn update_mapped(u: &crate::update::UpdateError) -> Mapped {
    use crate::update::UpdateError as U;
    use StatusCode as S;
    let m = |status, code, message: String| Mapped { status, code, message, retry_after: None };
    match u {
        U::Disabled => m(S::CONFLICT, "update_disabled", u.to_string()),
        U::StateCorrupt { .. } | U::StateFormat { .. } | U::BadLink { .. } | U::LinkWithoutState { .. } => {
            m(S::CONFLICT, "update_state_invalid", u.to_string())
        }
        U::SlotIncomplete { .. } => m(S::CONFLICT, "update_slot_incomplete", u.to_string()),
        U::NothingToRollBack(_) => m(S::CONFLICT, "update_no_previous", u.to_string()),
        U::NotPending(_) => m(S::CONFLICT, "update_not_pending", u.to_string()),
        U::Pending(_) => m(S::CONFLICT, "update_pending", u.to_string()),
        U::Untrusted(_) => m(S::FORBIDDEN, "update_untrusted", u.to_string()),
        U::Policy(_) => m(S::CONFLICT, "update_not_applicable", u.to_string()),
        U::Bundle(_) => m(S::BAD_REQUEST, "update_bad_bundle", u.to_string()),
        U::Unsupported(_) => m(S::UNPROCESSABLE_ENTITY, "update_unsupported", u.to_string()),
        U::NoSpace { .. } => m(S::INSUFFICIENT_STORAGE, "update_no_space", u.to_string()),
        U::TooLarge { .. } => m(S::PAYLOAD_TOO_LARGE, "update_too_large", u.to_string()),
        U::BadUrl(_) => m(S::BAD_REQUEST, "invalid_param", u.to_string()),
        U::Download { .. } => m(S::BAD_GATEWAY, "update_download_failed", u.to_string()),
        U::Busy(_) => m(S::CONFLICT, "update_busy", u.to_string()),
        U::SnapshotMissing { .. } | U::Io { .. } | U::Sqlite { .. } | U::Exec { .. } | U::Task(_) => {
            m(S::INTERNAL_SERVER_ERROR, "internal_server_error", format!("{}; see the daemon log", crate::telemetry::chain(u)))
        }
    }
}

/// A knowledge error's status and Dify code.
fn knowledge_mapped(k: &KnowledgeError) -> Mapped {
    use StatusCode as S;
    let m = |status, code, message: String| Mapped { status, code, message, retry_after: None };
    let busy = |code, message: String, secs| Mapped { status: S::SERVICE_UNAVAILABLE, code, message, retry_after: Some(secs) };
    match k {
        KnowledgeError::InvalidParam(_) => m(S::BAD_REQUEST, "invalid_param", k.to_string()),
        KnowledgeError::DatasetNotFound | KnowledgeError::DocumentNotFound | KnowledgeError::SegmentNotFound => {
            m(S::NOT_FOUND, "not_found", k.to_string())
        }
        KnowledgeError::DatasetNameDuplicate => m(S::CONFLICT, "dataset_name_duplicate", k.to_string()),
        KnowledgeError::UnsupportedFileType(_) => m(S::UNSUPPORTED_MEDIA_TYPE, "unsupported_file_type", k.to_string()),
        KnowledgeError::FileTooLarge { .. } => m(S::PAYLOAD_TOO_LARGE, "file_too_large", k.to_string()),
        KnowledgeError::EmptyFile => m(S::BAD_REQUEST, "empty_file", k.to_string()),
        KnowledgeError::DocumentIndexing => m(S::BAD_REQUEST, "document_indexing", k.to_string()),
        // Dify's DatasetInUseError is 409.
        KnowledgeError::DatasetInUse => m(S::CONFLICT, "dataset_in_use", k.to_string()),
        KnowledgeError::EmbeddingUnavailable(_) => busy("provider_not_initialize", k.to_string(), 5),
        // Not the client's fault and not fixed by retrying: the operator re-indexes.
        KnowledgeError::EmbeddingModelMismatch { .. } => m(S::CONFLICT, "embedding_model_mismatch", k.to_string()),
        KnowledgeError::QueueFull(_) | KnowledgeError::EmbedderBusy => {
            Mapped { status: S::TOO_MANY_REQUESTS, code: "too_many_requests", message: k.to_string(), retry_after: Some(5) }
        }
        KnowledgeError::Store(st) => store_mapped(st),
        // Internal detail goes to the log, not to the client.
        KnowledgeError::Internal(_) => {
            m(S::INTERNAL_SERVER_ERROR, "internal_server_error", "internal error in the knowledge service; see the daemon log".into())
        }
    }
}
/// A store error as every front end sees it; internal detail stays in the log.
fn store_mapped(st: &StoreError) -> Mapped {
    use StatusCode as S;
    let m = |status, code, message: String| Mapped { status, code, message, retry_after: None };
    let busy = |code, message: String, secs| Mapped { status: S::SERVICE_UNAVAILABLE, code, message, retry_after: Some(secs) };
    match st {
        StoreError::NotFound { .. } => m(S::NOT_FOUND, "not_found", st.to_string()),
        StoreError::AlreadyExists { .. } | StoreError::DuplicateName { .. } => m(S::CONFLICT, "conflict", st.to_string()),
        StoreError::InvalidArgument { .. } => m(S::BAD_REQUEST, "invalid_param", st.to_string()),
        StoreError::Busy => busy("service_unavailable", "the store is busy; retry later".into(), 1),
        StoreError::Closed => busy("service_unavailable", "the daemon is shutting down".into(), 5),
        // Internal detail goes to the log, not to the client.
        StoreError::MissingDir { .. }
        | StoreError::Open { .. }
        | StoreError::WalUnavailable { .. }
        | StoreError::SchemaTooNew { .. }
        | StoreError::Backup { .. }
        | StoreError::BackupFile { .. }
        | StoreError::Migrate { .. }
        | StoreError::Sqlite { .. }
        | StoreError::Thread { .. }
        | StoreError::Panicked { .. }
        | StoreError::NotPending { .. } => {
            m(S::INTERNAL_SERVER_ERROR, "internal_server_error", "internal error in the store; see the daemon log".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: ApiError) -> (u16, &'static str, Option<u32>) {
        let m = e.mapped();
        (m.status.as_u16(), m.code, m.retry_after)
    }

    #[test]
    fn every_family_maps_to_its_status_and_dify_code() {
        assert_eq!(code(ApiError::MissingKey), (401, "unauthorized", None));
        assert_eq!(code(ApiError::NotAdmin), (403, "forbidden", None));
        assert_eq!(code(ApiError::BodyTooLarge { limit: 1 }), (413, "request_entity_too_large", None));
        assert_eq!(code(ApiError::NotUtf8), (400, "bad_request", None));
        assert_eq!(code(ApiError::NotChatApp), (400, "not_chat_app", None));
        assert_eq!(code(ApiError::AppUnavailable), (400, "app_unavailable", None));
        assert_eq!(code(ApiError::AppGone), (403, "forbidden", None));
        assert_eq!(code(ApiError::ApiDisabled), (403, "forbidden", None));
        assert_eq!(code(ApiError::NotBearer), (401, "unauthorized", None));
        assert_eq!(code(ModelError::Inference("x".into()).into()), (400, "completion_request_error", None));
        assert_eq!(code(ServiceError::LastConversationNotFound.into()), (404, "not_found", None));
        assert_eq!(code(ServiceError::FirstMessageNotFound.into()), (404, "not_found", None));
        assert_eq!(code(ApiError::Timeout { secs: 1 }), (504, "request_timeout", None));
        let limited = super::super::ratelimit::Limited { scope: super::super::ratelimit::Scope::Key, retry_after_secs: 3 };
        assert_eq!(code(ApiError::RateLimited(limited)), (429, "too_many_requests", Some(3)));
        assert_eq!(code(ModelError::QueueFull { depth: 1 }.into()), (429, "too_many_requests", Some(1)));
        assert_eq!(code(ModelError::AppQueueFull { app: "a".into(), depth: 1 }.into()), (429, "too_many_requests", Some(1)));
        let shed = ServiceError::Governor(GovernorError::MemoryPressure { stage: "shedding" });
        assert_eq!(code(shed.into()), (503, "service_unavailable", Some(5)));
        assert_eq!(code(ModelError::Loading.into()), (503, "provider_not_initialize", Some(5)));
        assert_eq!(code(ModelError::Unloaded.into()), (503, "provider_not_initialize", Some(5)));
        assert_eq!(
            code(ModelError::ContextOverflow { prompt_tokens: 9, max_tokens: 1, limit: 8 }.into()),
            (400, "context_length_exceeded", None)
        );
        assert_eq!(code(ServiceError::ConversationNotFound.into()), (404, "not_found", None));
        assert_eq!(code(StoreError::Busy.into()), (503, "service_unavailable", Some(1)));
        assert_eq!(code(AnnotationError::NotFound.into()), (404, "not_found", None));
        assert_eq!(code(AnnotationError::EmbeddingUnavailable("x".into()).into()), (503, "provider_not_initialize", Some(5)));
        assert_eq!(code(ExportError::UnknownTable("t".into()).into()), (400, "invalid_param", None));
        assert_eq!(code(ExportError::UnknownFormat("csv".into()).into()), (400, "invalid_param", None));
        assert_eq!(code(ExportError::Store(StoreError::NotFound { what: "app", id: "x".into() }).into()), (404, "not_found", None));
        assert_eq!(code(ExportError::Panicked.into()), (500, "internal_server_error", None));
    }

    #[test]
    fn internal_store_errors_do_not_leak_their_detail() {
        let e: ApiError = StoreError::Panicked { op: "secret-sql-detail" }.into();
        let m = e.mapped();
        assert_eq!((m.status.as_u16(), m.code), (500, "internal_server_error"));
        assert!(!m.message.contains("secret-sql-detail"), "{}", m.message);
    }
}
