//! The single writer: one OS thread owns the read-write connection and runs
//! jobs from a bounded queue, in order, with group commit: every job waiting
//! when the writer is free runs in one transaction, each job in its own
//! savepoint (a failed job is rolled back alone), and one COMMIT (one fsync
//! with synchronous=FULL) makes them all durable. Callers hear of their job
//! only after that commit, so `Ok` still means durable. Without grouping a
//! request that writes five times paid five fsyncs on one thread; that was
//! the ceiling of every writing route.
//!
//! Owns: the write connection after start-up, the queue, the thread and the
//! group's transaction. Must not touch: SQL of its own beyond the group's
//! transaction statements and the closing checkpoint (jobs bring theirs,
//! and use savepoints, never BEGIN, for their own atomicity).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::error::{sql, StoreError};
use super::lock;

/// A unit of work for the writer thread: runs its statements and says how
/// to answer its caller once the group's commit is known.
pub(crate) type Job = Box<dyn FnOnce(&mut Connection) -> Done + Send + 'static>;

/// What a job leaves after running.
pub(crate) struct Done {
    /// Whether its statements stay (false: rolled back to its savepoint).
    pub(crate) ok: bool,
    /// Answers the caller with the commit's outcome (called exactly once).
    pub(crate) reply: Box<dyn FnOnce(Result<(), StoreError>) + Send + 'static>,
}

impl Done {
    /// A job nobody waits for (it logs its own failures).
    pub(crate) fn unanswered(ok: bool) -> Done {
        Done { ok, reply: Box::new(|_| ()) }
    }
}

/// The most jobs one transaction takes (a bound on one group's latency).
const GROUP_MAX: usize = 256;

/// What the writer queue carries.
pub(crate) enum Command {
    /// Run a job.
    Run(Job),
    /// Checkpoint, close the connection and stop; answers when done.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// The sending side of the queue plus the thread's handle.
pub(crate) struct Writer {
    queue: SyncSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    progress: Arc<Progress>,
}

/// How far the writer has got: commands queued or running, and when it last
/// took or finished one. Liveness is "nothing to do, or recent progress", so
/// a full queue under heavy writes does not read as a dead writer.
struct Progress {
    epoch: Instant,
    queued: AtomicUsize,
    last_ms: AtomicU64,
}

impl Progress {
    fn beat(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// A snapshot of the writer's progress, for the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterProgress {
    /// Commands queued or running.
    pub queued: usize,
    /// Time since the writer last took or finished a command.
    pub since_progress: Duration,
    /// False once the writer thread has ended.
    pub thread_alive: bool,
}

impl Writer {
    /// Starts the writer thread with a queue of `capacity` commands.
    pub(crate) fn spawn(conn: Connection, path: PathBuf, capacity: usize) -> Result<Writer, StoreError> {
        let (queue, commands) = mpsc::sync_channel(capacity);
        let progress = Arc::new(Progress { epoch: Instant::now(), queued: AtomicUsize::new(0), last_ms: AtomicU64::new(0) });
        let p = Arc::clone(&progress);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, &commands, &path, &p))
            .map_err(|source| StoreError::Thread { what: "writer", source })?;
        Ok(Writer { queue, thread: Mutex::new(Some(thread)), progress })
    }

    /// Queues a command without waiting: a full queue is `Busy`, a stopped
    /// writer is `Closed`.
    pub(crate) fn try_send(&self, command: Command) -> Result<(), StoreError> {
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        self.queue.try_send(command).map_err(|e| {
            self.progress.queued.fetch_sub(1, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => StoreError::Busy,
                TrySendError::Disconnected(_) => StoreError::Closed,
            }
        })
    }

    /// The writer's progress now.
    pub(crate) fn progress(&self) -> WriterProgress {
        let p = &self.progress;
        let now = p.epoch.elapsed().as_millis() as u64;
        let thread_alive = lock(&self.thread).as_ref().is_some_and(|t| !t.is_finished());
        WriterProgress {
            queued: p.queued.load(Ordering::Acquire),
            since_progress: Duration::from_millis(now.saturating_sub(p.last_ms.load(Ordering::Relaxed))),
            thread_alive,
        }
    }

    /// A sender for the blocking send of [`Command::Close`].
    pub(crate) fn sender(&self) -> SyncSender<Command> {
        self.queue.clone()
    }

    /// The thread's handle, once (for joining on close).
    pub(crate) fn take_thread(&self) -> Option<JoinHandle<()>> {
        lock(&self.thread).take()
    }
}

/// The thread's loop: takes the jobs waiting (at least one) and commits
/// them as a group; `Close` ends the loop after the jobs queued before it.
fn run(mut conn: Connection, commands: &Receiver<Command>, path: &std::path::Path, progress: &Progress) {
    tracing::debug!(path = %path.display(), "store writer started");
    while let Ok(first) = commands.recv() {
        progress.beat();
        let mut group = Vec::new();
        let mut close = None;
        match first {
            Command::Run(job) => group.push(job),
            Command::Close(reply) => close = Some(reply),
        }
        while close.is_none() && group.len() < GROUP_MAX {
            match commands.try_recv() {
                Ok(Command::Run(job)) => group.push(job),
                Ok(Command::Close(reply)) => close = Some(reply),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_group(&mut conn, group, progress);
        }
        if let Some(reply) = close {
            let result = shut_down(conn, path);
            if let Err(error) = &result {
                tracing::error!(path = %path.display(), %error, "store writer closed with an error");
            }
            // close() waits for this answer; if it is gone, nobody is left to tell.
            let _ = reply.send(result);
            return;
        }
    }
    // Every handle was dropped without close(): the connection closes on drop,
    // and SQLite checkpoints on its own when the last connection goes.
    tracing::debug!(path = %path.display(), "store writer stopped: all handles dropped");
}

/// Runs `jobs` in one transaction, each in a savepoint, commits once and
/// answers each. If the transaction cannot begin, each job runs in its own
/// (its savepoint is then the transaction). If SQLite rolls the whole
/// transaction back under a job (an I/O error, a full disk), the jobs before
/// it in that transaction are answered with the error and the rest go on in
/// a new one. A failed COMMIT answers every job of the transaction with it.
fn commit_group(conn: &mut Connection, jobs: Vec<Job>, progress: &Progress) {
    let mut open = begin(conn);
    let mut waiting: Vec<Done> = Vec::with_capacity(jobs.len());
    for job in jobs {
        let saved =
            exec(conn, "SAVEPOINT edgeai_job").map_err(|e| tracing::warn!(error = %e, "store job runs without its savepoint")).is_ok();
        let done = job(conn);
        if open && conn.is_autocommit() {
            // SQLite ended the group's transaction: what it held is gone.
            let lost = StoreError::Sqlite {
                op: "write",
                source: rolled_back("a later write of its group failed and SQLite rolled the group back"),
            };
            for d in waiting.drain(..) {
                (d.reply)(Err(copy_error(&lost)));
            }
            (done.reply)(Err(lost));
            open = begin(conn);
        } else if saved {
            let ended = if done.ok {
                exec(conn, "RELEASE edgeai_job")
            } else {
                exec(conn, "ROLLBACK TO edgeai_job").and_then(|()| exec(conn, "RELEASE edgeai_job"))
            };
            match ended {
                Ok(()) => waiting.push(done),
                Err(e) => (done.reply)(Err(StoreError::Sqlite { op: "write", source: e })),
            }
        } else {
            waiting.push(done);
        }
        progress.queued.fetch_sub(1, Ordering::AcqRel);
        progress.beat();
        if !open {
            // Each job was its own transaction: answer it now.
            for d in waiting.drain(..) {
                (d.reply)(Ok(()));
            }
        }
    }
    let committed = if open && !conn.is_autocommit() { exec(conn, "COMMIT") } else { Ok(()) };
    match committed {
        Ok(()) => {
            for d in waiting {
                (d.reply)(Ok(()));
            }
        }
        Err(source) => {
            tracing::error!(error = %source, writes = waiting.len(), "a group of store writes failed to commit");
            let _ = conn.execute_batch("ROLLBACK");
            let failed = StoreError::Sqlite { op: "commit", source };
            for d in waiting {
                (d.reply)(Err(copy_error(&failed)));
            }
        }
    }
    progress.beat();
}

/// Opens a group's transaction; false (logged) if it cannot.
fn begin(conn: &Connection) -> bool {
    match exec(conn, "BEGIN IMMEDIATE") {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "store writes run one transaction each: the group's could not begin");
            false
        }
    }
}

/// One statement of the group's bookkeeping, prepared once.
fn exec(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement).and_then(|mut s| s.execute([])).map(drop)
}

fn rolled_back(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT), Some(why.to_owned()))
}

/// Another copy of an error, one per waiting job.
pub(crate) fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sqlite { op, source: rusqlite::Error::SqliteFailure(code, message) } => {
            StoreError::Sqlite { op, source: rusqlite::Error::SqliteFailure(*code, message.clone()) }
        }
        StoreError::Sqlite { op, source } => StoreError::Sqlite { op, source: rolled_back(&source.to_string()) },
        StoreError::Panicked { op } => StoreError::Panicked { op },
        _ => StoreError::Closed,
    }
}

/// Checkpoints the whole WAL into the database, truncates it, closes the connection.
fn shut_down(conn: Connection, path: &std::path::Path) -> Result<(), StoreError> {
    let (busy, wal_frames, checkpointed): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .map_err(sql("checkpoint"))?;
    if busy != 0 {
        tracing::warn!(path = %path.display(), wal_frames, checkpointed, "WAL checkpoint could not complete: a reader is still active");
    } else {
        tracing::debug!(path = %path.display(), wal_frames, checkpointed, "WAL checkpointed");
    }
    conn.close().map_err(|(_, source)| StoreError::Sqlite { op: "close", source })
}
