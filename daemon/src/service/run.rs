//! Runs: one generation from the moment it is queued until its outcome is
//! stored. A run is a task of its own, not part of the HTTP request: it
//! forwards the model's text to its front end while the front end listens,
//! stops generating when the front end goes away, and always records the
//! outcome (one UPDATE of the pending message). `Runs` tracks the runs in
//! flight for stop (by task id) and for the shutdown drain.
//! Knows nothing of HTTP or JSON wire shapes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use crate::model::{CancelFlag, FinishReason, GenEvent, LocalModel};
use crate::store::{MessageOutcome, MessageStatus, Store};

/// Token counts and timing of one answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// From the start of the run to its end.
    pub latency: Duration,
    /// From the start of the run to its first text; `None` without text.
    pub first_token: Option<Duration>,
}

/// What a running generation tells its front end.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Text(String),
    /// The answer is complete (or was stopped) and is stored.
    End {
        usage: Usage,
        finish: FinishReason,
    },
    /// Generation failed; the message is stored with status error.
    Failed {
        message: String,
    },
}

/// A started run: ids for the client, and its events.
pub struct Run {
    pub task_id: String,
    pub message_id: String,
    pub conversation_id: Option<String>,
    pub created_at: i64,
    pub events: mpsc::Receiver<RunEvent>,
    /// The annotation whose curated answer this is (annotation replies);
    /// `None` when the model answers.
    pub annotation: Option<String>,
    /// Why the front end stopped listening, if it did (see [`Run::abandon`]).
    pub(crate) left: Arc<OnceLock<String>>,
    /// Knowledge segments the answer was given (Dify's `retriever_resources`).
    pub retriever_resources: Vec<serde_json::Value>,
    /// How the request met the response cache (a hit is a cached answer).
    pub cache: crate::cache::Mark,
}

impl Run {
    /// The front end stops listening: the run is cancelled and stored as
    /// stopped with `reason` (instead of "client disconnected").
    pub fn abandon(self, reason: String) {
        let _ = self.left.set(reason);
    }
}

/// Who may stop a run, and how.
struct TaskEntry {
    app_id: String,
    user: String,
    stop: TaskStop,
}

/// How a run is told to stop: a generation's cancel flag, or a workflow
/// run's stop signal.
pub(crate) enum TaskStop {
    Flag(CancelFlag),
    Watch(tokio::sync::watch::Sender<bool>),
}

impl TaskStop {
    fn stop(&self) {
        match self {
            TaskStop::Flag(f) => f.cancel(),
            TaskStop::Watch(w) => {
                let _ = w.send(true);
            }
        }
    }
}

/// The message a run finishes, when it is stored (OpenAI runs are not).
pub(crate) struct Persist {
    pub message_id: String,
    pub conversation_id: Option<String>,
}

/// Everything one run needs besides the generation itself.
pub(crate) struct RunSpec {
    pub task_id: String,
    pub app_id: String,
    pub user: String,
    pub persist: Option<Persist>,
    /// Where a normally finished answer is cached (a cacheable miss).
    pub fill: Option<(Arc<crate::cache::ResponseCache>, crate::cache::CacheKey)>,
}

/// The runs in flight.
#[derive(Default)]
pub(crate) struct Runs {
    tasks: Mutex<HashMap<String, TaskEntry>>,
    count: AtomicU64,
    idle: Notify,
}

/// Forgets the task and decrements the in-flight count when a run task
/// ends, however it ends (a panic included).
pub(crate) struct InflightGuard {
    runs: Arc<Runs>,
    task_id: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.runs.finished(&self.task_id);
        if self.runs.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.runs.idle.notify_waiters();
        }
    }
}

impl Runs {
    /// Starts the run task for an admitted generation and returns the front
    /// end's event stream.
    pub fn spawn(
        self: &Arc<Self>,
        store: Store,
        model: Arc<LocalModel>,
        spec: RunSpec,
        cancel: CancelFlag,
        gen: mpsc::Receiver<GenEvent>,
    ) -> (mpsc::Receiver<RunEvent>, Arc<OnceLock<String>>) {
        let (tx, rx) = mpsc::channel(64);
        let left: Arc<OnceLock<String>> = Arc::default();
        let guard = self.register(&spec.task_id, &spec.app_id, &spec.user, TaskStop::Flag(cancel.clone()));
        let task = RunTask {
            guard,
            store,
            model,
            spec,
            cancel,
            gen,
            tx,
            started: Instant::now(),
            answer: String::new(),
            first_text: None,
            client_gone: false,
            outcome: None,
            failure: None,
            left: Arc::clone(&left),
        };
        tokio::spawn(task.drive());
        (rx, left)
    }

    /// Tracks a run in flight (for stop and the drain) until the returned
    /// guard is dropped.
    pub fn register(self: &Arc<Self>, task_id: &str, app_id: &str, user: &str, stop: TaskStop) -> InflightGuard {
        if let Ok(mut t) = self.tasks.lock() {
            t.insert(task_id.to_owned(), TaskEntry { app_id: app_id.to_owned(), user: user.to_owned(), stop });
        }
        self.count.fetch_add(1, Ordering::AcqRel);
        InflightGuard { runs: Arc::clone(self), task_id: task_id.to_owned() }
    }

    /// Cancels the task if it belongs to this app and user; returns whether
    /// it did. Unknown tasks are ignored, as in Dify.
    pub fn stop(&self, app_id: &str, user: &str, task_id: &str) -> bool {
        let Ok(t) = self.tasks.lock() else { return false };
        match t.get(task_id) {
            Some(e) if e.app_id == app_id && e.user == user => {
                e.stop.stop();
                true
            }
            _ => false,
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Cancels every run in flight (each still records its outcome).
    pub fn cancel_all(&self) {
        if let Ok(t) = self.tasks.lock() {
            t.values().for_each(|e| e.stop.stop());
        }
    }

    /// Waits until no run is in flight, or `deadline` passes; then cancels
    /// the stragglers and waits (briefly) for them to record their outcome.
    /// Returns how many were cancelled.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> u64 {
        let wait_idle = async {
            loop {
                let notified = self.idle.notified();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout_at(deadline, wait_idle).await.is_ok() {
            return 0;
        }
        let left = self.in_flight();
        tracing::warn!(runs = left, "drain deadline passed; cancelling the remaining runs");
        self.cancel_all();
        self.settle(Duration::from_secs(5)).await;
        left
    }

    /// Waits up to `limit` for the runs in flight to end.
    pub async fn settle(&self, limit: Duration) {
        let settle = async {
            while self.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(limit, settle).await;
    }

    /// Forgets a task (its run has ended), so a later stop finds nothing.
    pub fn finished(&self, task_id: &str) {
        if let Ok(mut t) = self.tasks.lock() {
            t.remove(task_id);
        }
    }
}

/// One run task's state.
struct RunTask {
    guard: InflightGuard,
    store: Store,
    model: Arc<LocalModel>,
    spec: RunSpec,
    cancel: CancelFlag,
    gen: mpsc::Receiver<GenEvent>,
    tx: mpsc::Sender<RunEvent>,
    started: Instant,
    answer: String,
    first_text: Option<Duration>,
    client_gone: bool,
    outcome: Option<(FinishReason, u32, u32)>,
    failure: Option<String>,
    /// Why the front end left, when it said so.
    left: Arc<OnceLock<String>>,
}

impl RunTask {
    async fn drive(mut self) {
        loop {
            let ev = tokio::select! {
                ev = self.gen.recv() => match ev {
                    Some(ev) => ev,
                    None => break,
                },
                // The client went away before any text (e.g. while the job
                // waited in the queue): cancel and free its place.
                _ = self.tx.closed(), if !self.client_gone => {
                    self.client_left();
                    continue;
                }
            };
            match ev {
                GenEvent::Started { .. } => {}
                GenEvent::Text(t) => {
                    self.first_text.get_or_insert_with(|| self.started.elapsed());
                    self.answer.push_str(&t);
                    if !self.client_gone && self.tx.send(RunEvent::Text(t)).await.is_err() {
                        // The client went away: stop generating, keep what we have.
                        self.client_left();
                    }
                }
                GenEvent::Done { reason, prompt_tokens, completion_tokens } => {
                    self.outcome = Some((reason, prompt_tokens, completion_tokens));
                }
                GenEvent::Failed(e) => self.failure = Some(e),
            }
        }
        self.finish().await;
    }

    fn client_left(&mut self) {
        self.client_gone = true;
        self.cancel.cancel();
        self.model.withdraw_cancelled();
    }

    /// The stored status and error of the run, from how it ended.
    fn status(&self) -> (MessageStatus, Option<String>) {
        let finish = self.outcome.map(|(f, _, _)| f);
        match (&self.failure, finish, self.client_gone) {
            (Some(e), _, _) => (MessageStatus::Error, Some(e.clone())),
            (None, None, true) | (None, Some(FinishReason::Cancelled), true) => {
                (MessageStatus::Stopped, Some(self.left.get().cloned().unwrap_or_else(|| "client disconnected".to_owned())))
            }
            (None, None, false) => (MessageStatus::Error, Some("the inference thread ended the request without an answer".to_owned())),
            (None, Some(FinishReason::Cancelled), false) => (MessageStatus::Stopped, None),
            (None, Some(_), _) => (MessageStatus::Normal, None),
        }
    }

    async fn finish(self) {
        let latency = self.started.elapsed();
        let (finish, prompt_tokens, completion_tokens) = self.outcome.unwrap_or((FinishReason::Cancelled, 0, 0));
        let (status, error) = self.status();
        let task_id = &self.spec.task_id;
        if let Some(p) = &self.spec.persist {
            let o = MessageOutcome {
                answer: self.answer.clone(),
                prompt_tokens,
                completion_tokens,
                latency_ms: latency.as_millis() as u64,
                status,
                error: error.clone(),
            };
            if let Err(e) = self.store.finish_message(&p.message_id, o).await {
                tracing::error!(message_id = %p.message_id, error = %crate::telemetry::chain(&e), "could not store the finished message");
            }
            if let Some(c) = &p.conversation_id {
                if let Err(e) = self.store.touch_conversation(c).await {
                    tracing::warn!(conversation_id = %c, error = %crate::telemetry::chain(&e), "could not update the conversation time");
                }
            }
        }
        if let Some((cache, key)) = &self.spec.fill {
            if status == MessageStatus::Normal && matches!(finish, FinishReason::Stop | FinishReason::Length) {
                cache.insert(key, &self.answer, finish == FinishReason::Length);
            }
        }
        // The task is forgotten before the last event, so a stop that
        // follows the answer finds nothing to cancel.
        self.guard.runs.finished(task_id);
        let last = match self.failure {
            Some(message) => RunEvent::Failed { message },
            None => {
                let usage = Usage { prompt_tokens, completion_tokens, latency, first_token: self.first_text };
                RunEvent::End { usage, finish }
            }
        };
        // Bounded: a front end that stopped reading must not hold the run
        // (and so the shutdown drain) forever; the outcome is stored already.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tx.send(last)).await;
        tracing::info!(task_id = %task_id, prompt_tokens, completion_tokens, latency_ms = latency.as_millis() as u64, status = ?status, error = error.as_deref().unwrap_or(""), "run finished");
    }
}
