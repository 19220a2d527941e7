//! Everything that can make `edgeaictl` fail, the exit code of each, and the
//! text printed on stderr.
//!
//! Owns: the error → exit code contract documented in `--help`.
//! Must not: print by itself; `main` prints [`CtlError::report`] once.

use edgeai_common::dbus::BusError;
use edgeai_common::ClientError;
use std::io::ErrorKind;
use std::path::PathBuf;

/// sysexits.h `EX_DATAERR`: an input file cannot be read or is not JSON.
pub const EX_DATAERR: u8 = 65;
/// sysexits.h `EX_UNAVAILABLE`: the daemon's socket cannot be reached, or
/// the daemon did not answer within `--timeout`.
pub const EX_UNAVAILABLE: u8 = 69;
/// sysexits.h `EX_NOPERM`: the daemon or the socket refused us.
pub const EX_NOPERM: u8 = 77;
/// sysexits.h `EX_TEMPFAIL`: the daemon is busy (`org.edgeai.Error.Busy`,
/// say another long job runs); the same command later may succeed.
pub const EX_TEMPFAIL: u8 = 75;
/// A usage error, as clap's own (an option that does not apply).
pub const EX_USAGE: u8 = 2;
/// sysexits.h `EX_CANTCREAT`: an output file cannot be written.
pub const EX_CANTCREAT: u8 = 73;
/// Any other failure, API errors included.
pub const EX_FAILURE: u8 = 1;
/// The shell's 128 + SIGINT: Ctrl-C stopped `datasets ingest` waiting.
pub const EX_INTERRUPTED: u8 = 130;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Boxed: zbus's errors are large, and every CtlError would carry their size.
    #[error(transparent)]
    Bus(Box<BusError>),
    #[error("the daemon's answer to {command} is not what this edgeaictl expects (a different version?)")]
    Answer { command: String, source: serde_json::Error },
    #[error("the run of {app} ended {status}: {error}")]
    RunFailed { app: String, status: String, error: String },
    #[error("`edgeaictl {command}` works over D-Bus only, and edgeaictl is on the socket here (--socket given, run inside a source checkout, or no edgeaid on the system bus): give --bus system (or session, or a bus address)")]
    NeedsBus { command: &'static str },
    #[error("cannot read {}", path.display())]
    ReadInput { path: PathBuf, source: std::io::Error },
    #[error("{} is not valid JSON", path.display())]
    ParseInput { path: PathBuf, source: serde_json::Error },
    #[error("{} holds JSON {found}, not an app definition object ({{\"id\": ..., \"name\": ..., \"mode\": ...}})", path.display())]
    InputNotObject { path: PathBuf, found: &'static str },
    #[error("{} is not UTF-8 text", path.display())]
    InputNotUtf8 { path: PathBuf },
    #[error("--name, --id and --dataset apply to a Dify DSL file (.yml/.yaml), not to {}", path.display())]
    DslOnlyOption { path: PathBuf },
    #[error("cannot write {}", path.display())]
    WriteOutput { path: PathBuf, source: std::io::Error },
    #[error("reading stdin failed")]
    Stdin { source: std::io::Error },
    #[error("writing to stdout failed")]
    Stdout { source: std::io::Error },
    #[error("the answer from app {app} ended before its message_end event")]
    StreamEnded { app: String },
    #[error("{failed} of {turns} chat turns failed")]
    ChatTurnsFailed { failed: usize, turns: usize },
    #[error("cannot start the async runtime")]
    Runtime { source: std::io::Error },
    #[error("no {what} is named {name:?} or has that id")]
    NotFound { what: &'static str, name: String },
    #[error("{} {what}s are named {name:?} ({}): give the id", ids.len(), ids.join(", "))]
    Ambiguous { what: &'static str, name: String, ids: Vec<String> },
    #[error("no file to ingest (txt, md, markdown, html, htm, csv, pdf) in {}", paths.join(", "))]
    NoFiles { paths: Vec<String> },
    #[error("{failed} of {files} files were not indexed")]
    IngestFailed { failed: usize, files: usize },
    #[error("stopped waiting on Ctrl-C with {pending} documents still indexing; the daemon goes on indexing them (see `edgeaictl datasets docs`)")]
    Interrupted { pending: usize },
    #[error("cannot listen for Ctrl-C")]
    Signal { source: std::io::Error },
    #[error("{failed} of {total} doctor checks failed")]
    ChecksFailed { failed: usize, total: usize },
    #[error(transparent)]
    Export(crate::export::ExportError),
    #[error(transparent)]
    Backup(crate::backup::BackupError),
    #[error(transparent)]
    Bundle(crate::bundle::BundleCmdError),
}

impl From<BusError> for CtlError {
    fn from(e: BusError) -> Self {
        CtlError::Bus(Box::new(e))
    }
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Client(ClientError::Connect { source, .. }) if source.kind() == ErrorKind::PermissionDenied => EX_NOPERM,
            CtlError::Client(ClientError::Connect { .. } | ClientError::Timeout { .. }) => EX_UNAVAILABLE,
            CtlError::Client(ClientError::Api { status: 403, .. }) => EX_NOPERM,
            CtlError::Client(_) => EX_FAILURE,
            CtlError::Bus(b) => match **b {
                BusError::Connect { .. } | BusError::NotRunning { .. } | BusError::Timeout { .. } => EX_UNAVAILABLE,
                BusError::Denied { .. } => EX_NOPERM,
                BusError::Remote { ref name, .. } if name == "org.edgeai.Error.Busy" => EX_TEMPFAIL,
                // As the socket's 403 update_untrusted.
                BusError::Remote { ref name, .. } if name == "org.edgeai.Error.UpdateUntrusted" => EX_NOPERM,
                BusError::Remote { .. } | BusError::Decode { .. } | BusError::Call { .. } => EX_FAILURE,
            },
            CtlError::NeedsBus { .. } => EX_USAGE,
            CtlError::Answer { .. } | CtlError::RunFailed { .. } => EX_FAILURE,
            CtlError::ReadInput { .. }
            | CtlError::ParseInput { .. }
            | CtlError::InputNotObject { .. }
            | CtlError::InputNotUtf8 { .. }
            | CtlError::NoFiles { .. } => EX_DATAERR,
            CtlError::DslOnlyOption { .. } => EX_USAGE,
            CtlError::WriteOutput { .. } => EX_CANTCREAT,
            CtlError::Stdin { .. }
            | CtlError::Stdout { .. }
            | CtlError::StreamEnded { .. }
            | CtlError::ChatTurnsFailed { .. }
            | CtlError::Runtime { .. }
            | CtlError::NotFound { .. }
            | CtlError::Ambiguous { .. }
            | CtlError::IngestFailed { .. }
            | CtlError::Signal { .. }
            | CtlError::ChecksFailed { .. } => EX_FAILURE,
            CtlError::Interrupted { .. } => EX_INTERRUPTED,
            CtlError::Export(e) => e.exit_code(),
            CtlError::Backup(e) => e.exit_code(),
            CtlError::Bundle(e) => e.exit_code(),
        }
    }

    /// A chat turn that failed this way leaves the session usable; the
    /// others (socket gone, permission lost, stdout closed) end it.
    pub fn is_turn_local(&self) -> bool {
        match self {
            CtlError::Client(ClientError::Api { status, .. }) => *status != 403,
            CtlError::Client(ClientError::Decode { .. } | ClientError::Stream { .. } | ClientError::NotEventStream { .. })
            | CtlError::StreamEnded { .. } => true,
            _ => false,
        }
    }

    /// The lines to print on stderr, each prefixed with `edgeaictl: `.
    pub fn report(&self) -> String {
        match self {
            CtlError::Client(ClientError::Api { code, message, .. }) => format!("edgeaictl: {code}: {message}"),
            CtlError::Client(ClientError::Connect { path, source }) if source.kind() == ErrorKind::PermissionDenied => {
                format!(
                    "edgeaictl: permission denied on {}: {source}\n\
                     edgeaictl: run as root or as a member of edgeaid's admin group, or check --socket",
                    path.display()
                )
            }
            CtlError::Client(ClientError::Connect { path, source }) => format!(
                "edgeaictl: cannot reach edgeaid at {}: {source}\n\
                 edgeaictl: is the daemon running? See `systemctl status edgeai`, \
                 or point --socket (or EDGEAI_SOCKET) at its socket",
                path.display()
            ),
            CtlError::Client(ClientError::Timeout { path, request, after }) => format!(
                "edgeaictl: edgeaid at {} did not answer {request} within {}\n\
                 edgeaictl: the daemon may be stuck or overloaded: see `systemctl status edgeai` and \
                 `journalctl -u edgeai`, or allow longer with --timeout",
                path.display(),
                humantime::format_duration(*after)
            ),
            CtlError::Bus(b) if matches!(**b, BusError::Remote { .. } | BusError::Denied { .. }) => format!("edgeaictl: {b}"),
            CtlError::Bus(e) if matches!(**e, BusError::Connect { .. } | BusError::NotRunning { .. }) => format!(
                "edgeaictl: {}\n\
                 edgeaictl: is the daemon running with control.bus on that bus? See `systemctl status edgeai`, \
                 or use the socket (leave out --bus)",
                chain(e.as_ref())
            ),
            other => format!("edgeaictl: {}", chain(other)),
        }
    }
}

/// `outer: cause: root cause`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;
    use std::io;

    fn connect(kind: ErrorKind) -> CtlError {
        CtlError::Client(ClientError::Connect { path: "/run/x.sock".into(), source: io::Error::from(kind) })
    }

    fn api(status: u16, code: &str) -> CtlError {
        CtlError::Client(ClientError::Api { status, code: code.into(), message: "m".into() })
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(connect(ErrorKind::NotFound).exit_code(), 69);
        assert_eq!(connect(ErrorKind::ConnectionRefused).exit_code(), 69);
        assert_eq!(connect(ErrorKind::PermissionDenied).exit_code(), 77);
        assert_eq!(api(403, "forbidden").exit_code(), 77);
        assert_eq!(api(404, "not_found").exit_code(), 1);
        assert_eq!(api(503, "provider_not_initialize").exit_code(), 1);
        let parse = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        assert_eq!(CtlError::ParseInput { path: "a.json".into(), source: parse }.exit_code(), 65);
        let read = CtlError::ReadInput { path: "a.json".into(), source: io::Error::from(ErrorKind::NotFound) };
        assert_eq!(read.exit_code(), 65);
        assert_eq!(CtlError::InputNotObject { path: "a.json".into(), found: "an array" }.exit_code(), 65);
        assert_eq!(CtlError::StreamEnded { app: "demo".into() }.exit_code(), 1);
        assert_eq!(timeout().exit_code(), 69);
        assert_eq!(CtlError::NoFiles { paths: vec!["x.bin".into()] }.exit_code(), 65);
        assert_eq!(CtlError::NotFound { what: "dataset", name: "m".into() }.exit_code(), 1);
        assert_eq!(CtlError::IngestFailed { failed: 1, files: 2 }.exit_code(), 1);
        assert_eq!(CtlError::Interrupted { pending: 2 }.exit_code(), 130);
        assert_eq!(CtlError::ChecksFailed { failed: 1, total: 8 }.exit_code(), 1);
        let remote = |name: &str| CtlError::Bus(Box::new(BusError::Remote { name: name.into(), message: "m".into() }));
        assert_eq!(remote("org.edgeai.Error.Busy").exit_code(), 75);
        assert_eq!(remote("org.edgeai.Error.NotFound").exit_code(), 1);
        assert_eq!(remote("org.edgeai.Error.UpdateUntrusted").exit_code(), 77, "as the socket's 403 update_untrusted");
        assert_eq!(remote("org.edgeai.Error.UpdateNotPending").exit_code(), 1);
    }

    fn timeout() -> CtlError {
        CtlError::Client(ClientError::Timeout {
            path: "/run/x.sock".into(),
            request: "GET /admin/v1/status".into(),
            after: std::time::Duration::from_millis(1500),
        })
    }

    #[test]
    fn reports_name_the_socket_and_the_remedy() {
        let unavailable = connect(ErrorKind::NotFound).report();
        assert!(unavailable.contains("/run/x.sock") && unavailable.contains("systemctl status edgeai"), "{unavailable}");
        assert!(unavailable.contains("--socket"), "{unavailable}");
        let denied = connect(ErrorKind::PermissionDenied).report();
        assert!(denied.contains("permission denied on /run/x.sock"), "{denied}");
        assert_eq!(api(404, "not_found").report(), "edgeaictl: not_found: m");
        let late = timeout().report();
        assert!(late.starts_with("edgeaictl: edgeaid at /run/x.sock did not answer GET /admin/v1/status within 1s 500ms\n"), "{late}");
        assert!(late.contains("--timeout"), "{late}");
    }

    #[test]
    fn other_reports_carry_the_cause_chain() {
        let read = CtlError::ReadInput { path: "a.json".into(), source: io::Error::new(ErrorKind::NotFound, "gone") };
        assert_eq!(read.report(), "edgeaictl: cannot read a.json: gone");
    }

    #[test]
    fn only_request_level_failures_keep_a_chat_session_going() {
        assert!(api(400, "invalid_param").is_turn_local());
        assert!(CtlError::StreamEnded { app: "demo".into() }.is_turn_local());
        assert!(!api(403, "forbidden").is_turn_local());
        assert!(!connect(ErrorKind::ConnectionRefused).is_turn_local());
        assert!(!timeout().is_turn_local());
    }
}
