//! The control module's errors: [`ControlError`] when the interface cannot be
//! served at start, [`MethodError`] as the named D-Bus errors a method call
//! answers (`org.edgeai.Error.*`, with a readable message), and the one
//! exhaustive mapping of service errors onto them (and of update errors:
//! [`update_error`], one name per Dify code of docs/update.md).

use crate::governor::pressure::GovernorError;
use crate::model::ModelError;
use crate::service::knowledge::KnowledgeError;
use crate::service::ServiceError;
use crate::store::StoreError;
use crate::update::UpdateError;

/// Why the control interface could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "the D-Bus name org.edgeai.Daemon1 is already owned on the {bus} bus: is another edgeaid running? \
         (`busctl status org.edgeai.Daemon1` on that bus shows its pid; control.bus chooses the bus)"
    )]
    NameTaken { bus: String },
    #[error("serving /org/edgeai/Daemon1 on the {bus} bus: {source}")]
    Serve { bus: String, source: zbus::Error },
}

/// A method's failure as a named D-Bus error.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.edgeai.Error")]
pub enum MethodError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// An app, version, key or file that does not exist.
    NotFound(String),
    /// A bad argument: wrong option, malformed file, invalid app.
    InvalidArgument(String),
    /// The caller is neither root nor in the admin group.
    PermissionDenied(String),
    /// Try again later: the store or model is busy, or the daemon is stopping.
    Busy(String),
    /// Anything else; the detail is in the daemon's log.
    Failed(String),
    /// An update control refused: update.enabled is false (`update_disabled`).
    UpdateDisabled(String),
    /// The update state file or the current link is unusable (`update_state_invalid`).
    UpdateStateInvalid(String),
    /// The slot a rollback goes back to is not complete (`update_slot_incomplete`).
    UpdateSlotIncomplete(String),
    /// Nothing to roll back to (`update_no_previous`).
    UpdateNoPrevious(String),
    /// Nothing is pending, or the pending version does not run (`update_not_pending`).
    UpdateNotPending(String),
    /// An update is pending; another install waits for its outcome (`update_pending`).
    UpdatePending(String),
    /// The bundle is not signed by a key in update.trust_dir (`update_untrusted`).
    UpdateUntrusted(String),
    /// The bundle is for another device or version (`update_not_applicable`).
    UpdateNotApplicable(String),
    /// The bundle carries what this edgeaid does not install (`update_unsupported`).
    UpdateUnsupported(String),
    /// Not enough free space for the install (`update_no_space`).
    UpdateNoSpace(String),
    /// The bundle is damaged, truncated or malformed (`update_bad_bundle`).
    UpdateBadBundle(String),
    /// The bundle is larger than update.max_bundle_bytes (`update_too_large`).
    UpdateTooLarge(String),
    /// The bundle's URL could not be fetched (`update_download_failed`).
    UpdateDownloadFailed(String),
}

/// An update control's refusal as its named error; the message starts with
/// the Dify code the admin API answers for it (`update_disabled: ...`), so
/// scripts match the same code on either transport. I/O trouble is Failed,
/// naming the file.
pub fn update_error(u: &UpdateError) -> MethodError {
    let coded = |code: &str| format!("{code}: {u}");
    match u {
        UpdateError::Disabled => MethodError::UpdateDisabled(coded("update_disabled")),
        UpdateError::StateCorrupt { .. }
        | UpdateError::StateFormat { .. }
        | UpdateError::BadLink { .. }
        | UpdateError::LinkWithoutState { .. } => MethodError::UpdateStateInvalid(coded("update_state_invalid")),
        UpdateError::SlotIncomplete { .. } => MethodError::UpdateSlotIncomplete(coded("update_slot_incomplete")),
        UpdateError::NothingToRollBack(_) => MethodError::UpdateNoPrevious(coded("update_no_previous")),
        UpdateError::NotPending(_) => MethodError::UpdateNotPending(coded("update_not_pending")),
        UpdateError::Pending(_) => MethodError::UpdatePending(coded("update_pending")),
        UpdateError::Untrusted(_) => MethodError::UpdateUntrusted(coded("update_untrusted")),
        UpdateError::Policy(_) => MethodError::UpdateNotApplicable(coded("update_not_applicable")),
        UpdateError::Unsupported(_) => MethodError::UpdateUnsupported(coded("update_unsupported")),
        UpdateError::NoSpace { .. } => MethodError::UpdateNoSpace(coded("update_no_space")),
        UpdateError::Bundle(_) => MethodError::UpdateBadBundle(coded("update_bad_bundle")),
        UpdateError::TooLarge { .. } => MethodError::UpdateTooLarge(coded("update_too_large")),
        UpdateError::BadUrl(_) => MethodError::InvalidArgument(coded("invalid_param")),
        UpdateError::Download { .. } => MethodError::UpdateDownloadFailed(coded("update_download_failed")),
        UpdateError::Busy(_) => MethodError::Busy(coded("update_busy")),
        UpdateError::SnapshotMissing { .. }
        | UpdateError::Io { .. }
        | UpdateError::Sqlite { .. }
        | UpdateError::Exec { .. }
        | UpdateError::Task(_) => MethodError::Failed(format!("internal_server_error: {}; see the daemon log", crate::telemetry::chain(u))),
    }
}

impl From<ServiceError> for MethodError {
    fn from(s: ServiceError) -> Self {
        let text = s.to_string();
        match s {
            ServiceError::InvalidParam(_)
            | ServiceError::NotWorkflowApp(_)
            | ServiceError::AppInvalid { .. }
            | ServiceError::DslInvalid(_) => MethodError::InvalidArgument(text),
            ServiceError::ConversationNotFound
            | ServiceError::MessageNotFound
            | ServiceError::LastConversationNotFound
            | ServiceError::FirstMessageNotFound
            | ServiceError::AppNotFound(_)
            | ServiceError::KeyNotFound(_)
            | ServiceError::AppVersionNotFound { .. }
            | ServiceError::WorkflowNotFound(_)
            | ServiceError::WorkflowRunNotFound(_)
            | ServiceError::ConversationVariableNotFound(_)
            | ServiceError::ModelNotFound { .. } => MethodError::NotFound(text),
            ServiceError::ShuttingDown => MethodError::Busy(text),
            ServiceError::ExportFailed { .. } => MethodError::Failed(text),
            ServiceError::Corrupt { .. } => MethodError::Failed("internal error: stored state is unusable; see the daemon log".into()),
            ServiceError::Model(e) => match e {
                ModelError::Disabled
                | ModelError::Loading
                | ModelError::LoadFailed { .. }
                | ModelError::ThreadGone
                | ModelError::Unloaded
                | ModelError::Unloading
                | ModelError::QueueFull { .. }
                | ModelError::AppQueueFull { .. } => MethodError::Busy(e.to_string()),
                ModelError::ContextOverflow { .. } | ModelError::InvalidPrompt(_) | ModelError::Inference(_) => {
                    MethodError::InvalidArgument(e.to_string())
                }
                ModelError::Template(_) => MethodError::Failed(e.to_string()),
            },
            ServiceError::Store(st) => store_error(&st),
            ServiceError::Knowledge(k) => knowledge_error(&k),
            ServiceError::Governor(g) => match g {
                GovernorError::MemoryPressure { .. } => MethodError::Busy(g.to_string()),
                GovernorError::Watch { .. } | GovernorError::WriteNotBase64 => {
                    MethodError::Failed("internal error in the memory governor; see the daemon log".into())
                }
            },
        }
    }
}

fn store_error(st: &StoreError) -> MethodError {
    match st {
        StoreError::NotFound { .. } => MethodError::NotFound(st.to_string()),
        StoreError::AlreadyExists { .. } | StoreError::DuplicateName { .. } | StoreError::InvalidArgument { .. } => {
            MethodError::InvalidArgument(st.to_string())
        }
        StoreError::Busy => MethodError::Busy("the store is busy; retry later".into()),
        StoreError::Closed => MethodError::Busy("the daemon is shutting down".into()),
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
        | StoreError::NotPending { .. } => MethodError::Failed("internal error in the store; see the daemon log".into()),
    }
}

fn knowledge_error(k: &KnowledgeError) -> MethodError {
    match k {
        KnowledgeError::InvalidParam(_)
        | KnowledgeError::DatasetNameDuplicate
        | KnowledgeError::UnsupportedFileType(_)
        | KnowledgeError::FileTooLarge { .. }
        | KnowledgeError::EmptyFile
        | KnowledgeError::DocumentIndexing
        | KnowledgeError::DatasetInUse
        | KnowledgeError::EmbeddingModelMismatch { .. } => MethodError::InvalidArgument(k.to_string()),
        KnowledgeError::DatasetNotFound | KnowledgeError::DocumentNotFound | KnowledgeError::SegmentNotFound => {
            MethodError::NotFound(k.to_string())
        }
        KnowledgeError::EmbeddingUnavailable(_) | KnowledgeError::QueueFull(_) | KnowledgeError::EmbedderBusy => {
            MethodError::Busy(k.to_string())
        }
        KnowledgeError::Store(st) => store_error(st),
        KnowledgeError::Internal(_) => MethodError::Failed("internal error in the knowledge service; see the daemon log".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError as _;

    #[test]
    fn service_errors_become_named_dbus_errors() {
        let name = |e: MethodError| e.name().to_string();
        assert_eq!(name(ServiceError::AppNotFound("x".into()).into()), "org.edgeai.Error.NotFound");
        assert_eq!(name(ServiceError::DslInvalid(vec!["bad".into()]).into()), "org.edgeai.Error.InvalidArgument");
        assert_eq!(name(ServiceError::ShuttingDown.into()), "org.edgeai.Error.Busy");
        assert_eq!(name(ServiceError::Store(StoreError::Busy).into()), "org.edgeai.Error.Busy");
        assert_eq!(name(MethodError::PermissionDenied("no".into())), "org.edgeai.Error.PermissionDenied");
        let internal: MethodError = ServiceError::Store(StoreError::Panicked { op: "secret-sql-detail" }).into();
        assert_eq!(internal.name().to_string(), "org.edgeai.Error.Failed");
        assert!(!internal.description().unwrap_or_default().contains("secret-sql-detail"), "internal detail stays in the log");
    }

    #[test]
    fn update_errors_have_a_name_each_and_the_dify_code_in_the_message() {
        let cases = [
            (UpdateError::Disabled, "UpdateDisabled", "update_disabled"),
            (UpdateError::NothingToRollBack("x".into()), "UpdateNoPrevious", "update_no_previous"),
            (UpdateError::NotPending("x".into()), "UpdateNotPending", "update_not_pending"),
            (UpdateError::Pending("x".into()), "UpdatePending", "update_pending"),
            (UpdateError::Untrusted("x".into()), "UpdateUntrusted", "update_untrusted"),
            (UpdateError::Policy("x".into()), "UpdateNotApplicable", "update_not_applicable"),
            (UpdateError::Unsupported("x".into()), "UpdateUnsupported", "update_unsupported"),
            (UpdateError::Bundle("x".into()), "UpdateBadBundle", "update_bad_bundle"),
            (UpdateError::TooLarge { limit: 1 }, "UpdateTooLarge", "update_too_large"),
            (UpdateError::Download { url: "u".into(), reason: "r".into() }, "UpdateDownloadFailed", "update_download_failed"),
            (UpdateError::BadUrl("u".into()), "InvalidArgument", "invalid_param"),
            (UpdateError::Busy("b".into()), "Busy", "update_busy"),
            (UpdateError::NoSpace { dir: "/d".into(), needed: 2, available: 1 }, "UpdateNoSpace", "update_no_space"),
            (UpdateError::Task("x".into()), "Failed", "internal_server_error"),
        ];
        for (u, name, code) in cases {
            let e = update_error(&u);
            assert_eq!(e.name().to_string(), format!("org.edgeai.Error.{name}"), "{u}");
            assert!(e.description().unwrap_or_default().starts_with(&format!("{code}: ")), "{e:?}");
        }
    }
}
