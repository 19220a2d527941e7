//! Logging: tracing with structured fields, to journald when systemd gave us
//! a journal stream (JOURNAL_STREAM), else to stderr as text or JSON.
//! llama.cpp's own log lines are routed into tracing under the target
//! `llama-cpp-2`. Prometheus metrics are in [`metrics`].

pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log.level {level:?} is not a valid filter: {reason}")]
    Filter { level: String, reason: String },
    #[error("installing the log subscriber: {0}")]
    Install(String),
}

/// Output format chosen by `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Journald,
    Text,
    Json,
}

/// Decides the output: "auto" means journald when stderr is the journal.
pub fn choose(format: &str) -> Output {
    match format {
        "json" => Output::Json,
        "text" => Output::Text,
        _ if std::env::var_os("JOURNAL_STREAM").is_some() => Output::Journald,
        _ => Output::Text,
    }
}

/// Installs the global subscriber. `EDGEAI_LOG` overrides `level`.
pub fn init(level: &str, output: Output) -> Result<(), TelemetryError> {
    let directives = std::env::var("EDGEAI_LOG").unwrap_or_else(|_| level.to_owned());
    // llama.cpp is chatty at info; keep it at warn unless asked for.
    let with_llama = if directives.contains("llama") { directives.clone() } else { format!("{directives},llama-cpp-2=warn") };
    let filter =
        EnvFilter::try_new(&with_llama).map_err(|e| TelemetryError::Filter { level: directives.clone(), reason: e.to_string() })?;
    let layer = match output {
        Output::Journald => match tracing_journald::layer() {
            Ok(l) => l.with_syslog_identifier("edgeaid".into()).boxed(),
            // No journal socket after all: fall back to stderr without timestamps.
            Err(_) => tracing_subscriber::fmt::layer().without_time().with_writer(std::io::stderr).boxed(),
        },
        Output::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
        // Colours only for a person at a terminal, not for files or pipes.
        Output::Text => tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(filter)).try_init().map_err(|e| TelemetryError::Install(e.to_string()))?;
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn explicit_formats_win_over_the_environment() {
        assert_eq!(super::choose("json"), super::Output::Json);
        assert_eq!(super::choose("text"), super::Output::Text);
        // "auto" follows JOURNAL_STREAM, which the test runner may or may not have.
        let expected = if std::env::var_os("JOURNAL_STREAM").is_some() { super::Output::Journald } else { super::Output::Text };
        assert_eq!(super::choose("auto"), expected);
    }
}

/// An error with every cause, `outer: cause: root`, for log fields: an
/// error's own Display names what failed, its sources say why (a store
/// error's SQLite message, an I/O error's errno).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        // thiserror's `transparent` and `{0}` wrappers repeat their source.
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod chain_tests {
    #[test]
    fn a_store_error_logs_its_sqlite_cause() {
        let sqlite = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(19), Some("UNIQUE constraint failed: apps.id".into()));
        let e = crate::store::StoreError::Sqlite { op: "put app", source: sqlite };
        assert_eq!(e.to_string(), "store operation put app failed", "Display alone drops the cause");
        let c = super::chain(&e);
        assert!(c.starts_with("store operation put app failed: "), "{c}");
        assert!(c.contains("UNIQUE constraint failed: apps.id"), "{c}");
    }

    #[test]
    fn wrappers_that_repeat_their_source_are_not_doubled() {
        let inner = crate::store::StoreError::Busy;
        let outer = crate::service::ServiceError::Store(inner);
        assert_eq!(super::chain(&outer), "the store is busy: the write queue is full");
    }
}
