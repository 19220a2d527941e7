//! The single writer: one OS thread owns the read-write connection and runs
//! jobs from a bounded queue, one at a time, in order.
//!
//! Owns: the write connection after start-up, the queue and the thread.
//! Must not touch: SQL of its own beyond the closing checkpoint (jobs bring
//! their statements).

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

/// A unit of work for the writer thread. It answers its caller itself.
pub(crate) type Job = Box<dyn FnOnce(&mut Connection) + Send + 'static>;

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

fn run(mut conn: Connection, commands: &Receiver<Command>, path: &std::path::Path, progress: &Progress) {
    tracing::debug!(path = %path.display(), "store writer started");
    while let Ok(command) = commands.recv() {
        progress.beat();
        match command {
            Command::Run(job) => {
                job(&mut conn);
                progress.queued.fetch_sub(1, Ordering::AcqRel);
                progress.beat();
            }
            Command::Close(reply) => {
                let result = shut_down(conn, path);
                if let Err(error) = &result {
                    tracing::error!(path = %path.display(), %error, "store writer closed with an error");
                }
                // close() waits for this answer; if it is gone, nobody is left to tell.
                let _ = reply.send(result);
                return;
            }
        }
    }
    // Every handle was dropped without close(): the connection closes on drop,
    // and SQLite checkpoints on its own when the last connection goes.
    tracing::debug!(path = %path.display(), "store writer stopped: all handles dropped");
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
