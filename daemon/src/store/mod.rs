//! Persistent state in one SQLite file (rusqlite, bundled SQLite, WAL).
//!
//! Owns: the database file, its schema and migrations, and every SQL
//! statement of the daemon. Writes go through ONE writer thread fed by a
//! bounded queue (a full queue is [`StoreError::Busy`], never more memory);
//! reads run on a small pool of read-only connections on tokio's blocking
//! threads. No call blocks a tokio worker.
//!
//! Must not touch: HTTP or D-Bus shapes, app semantics (a definition is an
//! opaque JSON string here), model or engine state. It depends on nothing
//! else of the crate but the knowledge records (`crate::knowledge`).
//!
//! Crash safety: a message is inserted as `pending` when generation starts
//! and finished by one `UPDATE`; [`Store::open`] marks every message still
//! `pending` (the daemon died mid-answer) as `error`, so a partial answer is
//! never stored as if complete. Workflow runs likewise: inserted `running`,
//! finished (with their node executions) by one transaction, and marked
//! `failed` by [`Store::open`] if a crash left them `running`. Knowledge
//! segments are searchable only once their document's completing
//! transaction marks them `completed`; [`Store::open`] counts the documents
//! a crash left mid-index (the service queues them again).

/// `as_str`, `ALL`, `Display`, `ToSql` and `FromSql` of an enum stored as
/// text in Dify's spelling: `stored_as_text!(Type, "what", Variant => "text", ...)`.
macro_rules! stored_as_text {
    ($t:ident, $what:literal, $($v:ident => $s:literal),+ $(,)?) => {
        impl $t {
            /// Every value, in declaration order.
            pub const ALL: &'static [$t] = &[$(Self::$v),+];

            /// The stored (and Dify) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$v => $s),+
                }
            }

            /// The value spelled `s`, if any.
            fn from_text(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $t {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let s = value.as_str()?;
                Self::from_text(s).ok_or_else(|| rusqlite::types::FromSqlError::Other(format!("unknown {} {s:?}", $what).into()))
            }
        }
    };
}

mod annotations;
mod apps;
mod audit;
mod backup;
mod cache;
mod conversations;
mod error;
mod export;
mod files;
mod integrity;
mod keys;
mod knowledge;
mod memo;
mod messages;
pub(crate) mod migrations;
mod variables;
mod workflows;
mod writer;

#[cfg(test)]
mod testutil;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, Semaphore};

pub use annotations::{AnnotationRecord, AnnotationSettings};
pub use apps::{AppVersion, AppVersionInfo, StoredApp, StoredAppVersion};
pub use audit::{AuditEntry, AuditFilter, AuditKind};
pub use cache::CacheRow;
pub use conversations::{Conversation, ConversationSort};
pub use error::StoreError;
pub use export::{LogCursor, LogFilter, LogTable, MessageLogRow, RunLogRow};
pub use files::{NewUploadFile, UploadFile};
pub use integrity::Integrity;
pub use keys::{ApiKeyInfo, KeyKind, KeyScope};
pub use knowledge::{DatasetChanges, DocumentStep, FulltextHit, NewDatasetRow, NewDocumentRow, NewSegment, SegmentChanges, VisibleSegment};
pub use messages::{AppFeedback, Feedback, Message, MessageOutcome, MessageStatus, NewMessage, Rating};
pub use variables::{ConversationVariable, VariableValue};
pub use workflows::{
    NewWorkflowRun, NodeExecutionRecord, NodeExecutionStatus, WorkflowLogFilter, WorkflowRunOutcome, WorkflowRunRecord, WorkflowRunStatus,
    INTERRUPTED_RUN_ERROR,
};
pub use writer::WriterProgress;

use error::sql;
use writer::Command;

/// The error recorded on messages that were still generating when the daemon stopped.
pub const INTERRUPTED_ERROR: &str = "interrupted: the daemon stopped before the answer was complete";

/// What [`Store::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The schema version after migrations.
    pub schema_version: u32,
    /// Messages left `pending` by a previous run, now marked `error`.
    pub recovered_messages: u64,
    /// Workflow runs left `running` by a previous run, now marked `failed`.
    pub recovered_workflow_runs: u64,
    /// Knowledge documents whose indexing had not finished (see
    /// [`Store::documents_to_resume`]); their unfinished segments stay invisible.
    pub unfinished_documents: u64,
}

/// Tuning knobs of [`Store::open_with`]; [`Store::open`] uses the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Capacity of the writer queue (jobs waiting for the writer thread).
    pub write_queue: usize,
    /// Number of read-only connections.
    pub readers: u32,
    /// Reads that may wait for a connection; one more gets `Busy`.
    pub read_queue: usize,
    /// How long SQLite waits for a lock before failing with `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// `store.synchronous`: FULL (the default) or NORMAL.
    pub synchronous: crate::config::Synchronous,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            write_queue: 256,
            readers: 2,
            read_queue: 256,
            busy_timeout: Duration::from_secs(5),
            synchronous: crate::config::Synchronous::Full,
        }
    }
}

/// Handle to the store. Cheap to clone; every clone shares one writer
/// thread and one reader pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: writer::Writer,
    readers: Mutex<Vec<Connection>>,
    /// One permit per reader connection; closed by [`Store::close`].
    read_permits: Arc<Semaphore>,
    reader_count: u32,
    /// Reads waiting for or holding a connection, bounded by `read_limit`.
    reads_in_flight: std::sync::atomic::AtomicUsize,
    read_limit: usize,
    closed: AtomicBool,
    /// When `authenticate` last queued a `last_used_at` update, per key id.
    key_touches: Mutex<std::collections::HashMap<String, i64>>,
    /// Keys verified since start, by secret hash (emptied by every revocation).
    key_memo: Mutex<memo::Memo<[u8; 32], ApiKeyInfo>>,
    /// Apps' annotation settings (`None`: never set).
    annotation_memo: Mutex<memo::Memo<String, Option<AnnotationSettings>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

/// The newest schema version this edgeaid opens (a newer database is
/// refused with [`StoreError::SchemaTooNew`]).
pub fn supported_schema_version() -> u32 {
    migrations::latest(migrations::MIGRATIONS)
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrates it and
    /// recovers interrupted messages. The parent directory must exist.
    /// Synchronous: call it during start-up, before serving.
    pub fn open(path: &Path) -> Result<(Store, OpenReport), StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// [`Store::open`] with explicit queue and pool sizes.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<(Store, OpenReport), StoreError> {
        Self::open_migrating(path, options, migrations::for_this_process())
    }

    fn open_migrating(path: &Path, options: StoreOptions, migrations: &[migrations::Migration]) -> Result<(Store, OpenReport), StoreError> {
        if options.write_queue == 0 {
            return Err(StoreError::InvalidArgument { field: "write_queue", reason: "must be at least 1".into() });
        }
        if options.readers == 0 {
            return Err(StoreError::InvalidArgument { field: "readers", reason: "must be at least 1".into() });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(StoreError::MissingDir { dir: dir.to_path_buf() });
            }
        }
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };

        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::WalUnavailable { path: path.to_path_buf(), journal_mode: mode });
        }
        // FULL: a committed answer survives a power cut, not only a crash.
        // NORMAL (`store.synchronous`): only the last commits may be lost
        // to a power cut; WAL keeps the file consistent either way.
        conn.pragma_update(None, "synchronous", options.synchronous.as_str()).map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true).map_err(open_err)?;
        // Each writer job runs in a savepoint, and a group of them shares one
        // transaction, so the statement journal grows with the group; at
        // SQLite's default it spills past 64 KiB to a temporary file that is
        // created, written and deleted for every group. In memory it stays
        // bounded by the group (at most `writer::GROUP_MAX` jobs).
        conn.pragma_update(None, "temp_store", "MEMORY").map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

        let schema_version = migrations::migrate(&mut conn, path, migrations)?;
        let recovered_messages = recover_pending(&conn)?;
        if recovered_messages > 0 {
            tracing::warn!(
                path = %path.display(),
                recovered_messages,
                "marked messages interrupted by the previous run as errors"
            );
        }
        let recovered_workflow_runs = workflows::recover_running(&conn)?;
        if recovered_workflow_runs > 0 {
            tracing::warn!(
                path = %path.display(),
                recovered_workflow_runs,
                "marked workflow runs interrupted by the previous run as failed"
            );
        }
        let unfinished_documents = knowledge::count_unfinished(&conn)?;
        if unfinished_documents > 0 {
            tracing::warn!(
                path = %path.display(),
                unfinished_documents,
                "knowledge documents were left mid-index by the previous run; they are to be indexed again"
            );
        }

        let mut readers = Vec::new();
        for _ in 0..options.readers {
            readers.push(open_reader(path, options.busy_timeout)?);
        }
        let writer = writer::Writer::spawn(conn, path.to_path_buf(), options.write_queue)?;

        tracing::info!(
            path = %path.display(),
            schema_version,
            readers = options.readers,
            write_queue = options.write_queue,
            "opened store"
        );
        let inner = Inner {
            path: path.to_path_buf(),
            writer,
            readers: Mutex::new(readers),
            read_permits: Arc::new(Semaphore::new(options.readers as usize)),
            reader_count: options.readers,
            reads_in_flight: std::sync::atomic::AtomicUsize::new(0),
            read_limit: options.read_queue + options.readers as usize,
            closed: AtomicBool::new(false),
            key_touches: Mutex::new(std::collections::HashMap::new()),
            key_memo: Mutex::new(memo::Memo::new(keys::KEY_MEMO_MAX)),
            annotation_memo: Mutex::new(memo::Memo::new(annotations::SETTINGS_MEMO_MAX)),
        };
        Ok((
            Store { inner: Arc::new(inner) },
            OpenReport { schema_version, recovered_messages, recovered_workflow_runs, unfinished_documents },
        ))
    }

    /// Graceful close: waits for running reads, runs every write already
    /// queued, checkpoints the WAL (`TRUNCATE`) and joins the writer thread.
    /// Other clones get [`StoreError::Closed`] afterwards; a second `close`
    /// does too.
    pub async fn close(self) -> Result<(), StoreError> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Err(StoreError::Closed);
        }
        // Wait for in-flight reads, then shut the pool for good.
        if let Ok(permits) = inner.read_permits.acquire_many(inner.reader_count).await {
            permits.forget();
        }
        inner.read_permits.close();
        let readers = std::mem::take(&mut *lock(&inner.readers));

        let (reply, done) = oneshot::channel();
        let sender = inner.writer.sender();
        tokio::task::spawn_blocking(move || {
            drop(readers);
            // A blocking send: waits behind the queued writes (that is the flush).
            sender.send(Command::Close(reply))
        })
        .await
        .map_err(|_| StoreError::Panicked { op: "close" })?
        .map_err(|_| StoreError::Closed)?;
        let result = done.await.map_err(|_| StoreError::Closed)?;

        if let Some(handle) = inner.writer.take_thread() {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|_| StoreError::Panicked { op: "close" })?
                .map_err(|_| StoreError::Panicked { op: "writer thread" })?;
        }
        tracing::info!(path = %inner.path.display(), ok = result.is_ok(), "closed store");
        result
    }

    /// How far the writer thread has got (queued work, time since it last
    /// made progress), for the watchdog: a busy writer is not a dead one.
    pub fn writer_progress(&self) -> WriterProgress {
        self.inner.writer.progress()
    }

    /// Test aid: occupies the writer thread for `d` (as a slow write would).
    #[cfg(test)]
    pub(crate) fn occupy_writer(&self, d: Duration) -> Result<(), StoreError> {
        self.submit(Box::new(move |_| {
            std::thread::sleep(d);
            writer::Done::unanswered(true)
        }))
    }

    /// Liveness probe for the watchdog: a trivial round trip through the
    /// writer thread (`SELECT 1` on the write connection) proves the single
    /// writer works.
    pub async fn ping_writer(&self) -> Result<(), StoreError> {
        self.write("ping writer", |conn| conn.query_row("SELECT 1", [], |row| row.get::<_, i64>(0)).map(drop).map_err(sql("ping writer")))
            .await
    }

    /// Runs `job` on the writer thread and awaits its result, after its
    /// group's commit (a job's `Err` rolls back its own statements only). A
    /// full queue fails at once with [`StoreError::Busy`]. Once queued, the
    /// job runs even if the caller stops waiting. Jobs never BEGIN: a job
    /// that needs atomicity of its own takes a savepoint.
    async fn write<T, F>(&self, op: &'static str, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        self.submit(Box::new(move |conn: &mut Connection| {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| job(conn))).unwrap_or(Err(StoreError::Panicked { op }));
            writer::Done {
                ok: outcome.is_ok(),
                reply: Box::new(move |committed| {
                    // The caller may have stopped waiting; the write happened anyway.
                    let _ = reply.send(committed.and(outcome));
                }),
            }
        }))?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a job without waiting for it (fire and forget).
    fn submit(&self, job: writer::Job) -> Result<(), StoreError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.inner.writer.try_send(Command::Run(job))
    }

    /// Runs `query` on a pooled read-only connection on a blocking thread.
    async fn read<T, F>(&self, op: &'static str, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let slot = ReadSlot::take(&self.inner)?;
        let permit = Arc::clone(&self.inner.read_permits).acquire_owned().await.map_err(|_| StoreError::Closed)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _permit = permit;
            let conn = lock(&inner.readers).pop().ok_or(StoreError::Closed)?;
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| query(&conn))).unwrap_or(Err(StoreError::Panicked { op }));
            lock(&inner.readers).push(conn);
            outcome
        })
        .await
        .map_err(|_| StoreError::Panicked { op })?
    }
}

/// One place among the bounded reads; freed on drop.
struct ReadSlot(Arc<Inner>);

impl ReadSlot {
    fn take(inner: &Arc<Inner>) -> Result<ReadSlot, StoreError> {
        let before = inner.reads_in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = ReadSlot(Arc::clone(inner));
        if before >= inner.read_limit {
            return Err(StoreError::Busy);
        }
        Ok(slot)
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        self.0.reads_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Prepared statements kept per connection. rusqlite's default (16) is
/// fewer than the statements one chatflow turn runs, so every request
/// parsed and planned SQL again (about 8% of the writer thread under load).
const STATEMENT_CACHE: usize = 256;

fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(busy_timeout).map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Marks messages a previous run left `pending` as `error`.
fn recover_pending(conn: &Connection) -> Result<u64, StoreError> {
    let fixed = conn
        .execute(
            "UPDATE messages SET status = 'error', error = ?1, updated_at = ?2 WHERE status = 'pending'",
            rusqlite::params![INTERRUPTED_ERROR, now()],
        )
        .map_err(sql("recover pending messages"))?;
    Ok(fixed as u64)
}

/// Current time as unix seconds (0 if the clock is before 1970).
fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Current time as unix milliseconds (0 if the clock is before 1970).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Rejects an empty identifier before it reaches SQL.
fn require_non_empty(field: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(StoreError::InvalidArgument { field, reason: "must not be empty".into() });
    }
    Ok(())
}

/// Rejects text that is not one JSON value.
fn require_json(field: &'static str, value: &str) -> Result<(), StoreError> {
    serde_json::from_str::<serde::de::IgnoredAny>(value)
        .map(drop)
        .map_err(|e| StoreError::InvalidArgument { field, reason: format!("not valid JSON: {e}") })
}

/// Checks a page size against Dify's 1..=100.
fn require_limit(limit: u32) -> Result<(), StoreError> {
    if !(1..=100).contains(&limit) {
        return Err(StoreError::InvalidArgument { field: "limit", reason: format!("{limit} is outside 1..=100") });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
