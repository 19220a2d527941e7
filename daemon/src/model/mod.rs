//! Model runtimes. Today: a local GGUF model through llama-cpp-2, loaded in
//! the background after READY, served by one inference thread that owns the
//! llama.cpp context and batches every active sequence in each decode step
//! (continuous batching), behind a bounded admission queue; and an upstream
//! OpenAI-compatible endpoint over HTTP (`upstream`).
//! Owns: loading, templating, tokenising, sampling, streaming text out.
//! Does not touch: HTTP, the store, app semantics (that is `service`).

pub mod embed;
pub mod grammar;
mod local;
mod prefixes;
mod queue;
mod template;
pub mod text;
pub mod upstream;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use crate::config::KvType;
use crate::telemetry::metrics::Metrics;
pub use local::{Admission, LocalModel};

/// Errors of the model layer; the API maps each to a status and Dify code.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model is disabled in the configuration (model.enabled = false)")]
    Disabled,
    #[error("the model is still loading")]
    Loading,
    #[error("the model could not be loaded: {reason}")]
    LoadFailed { reason: String },
    #[error("the admission queue is full ({depth} requests waiting)")]
    QueueFull { depth: usize },
    /// One app holds its share of the queue (`admission.max_queued_per_app`).
    #[error("app {app:?} has {depth} requests waiting, its share of the admission queue")]
    AppQueueFull { app: String, depth: usize },
    #[error("the prompt needs {prompt_tokens} tokens plus {max_tokens} for the answer, but a sequence holds {limit} tokens")]
    ContextOverflow { prompt_tokens: usize, max_tokens: u32, limit: u32 },
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the inference thread has stopped")]
    ThreadGone,
    /// An operator unloaded the model (D-Bus UnloadModel).
    #[error("the model was unloaded by an operator; LoadModel or edgeaictl models load brings it back")]
    Unloaded,
    /// An unload is waiting for the generations that run to end.
    #[error("the model is being unloaded by an operator; LoadModel or edgeaictl models load brings it back once it is")]
    Unloading,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(c: impl Into<String>) -> Self {
        ChatMessage { role: Role::System, content: c.into() }
    }
    pub fn user(c: impl Into<String>) -> Self {
        ChatMessage { role: Role::User, content: c.into() }
    }
    pub fn assistant(c: impl Into<String>) -> Self {
        ChatMessage { role: Role::Assistant, content: c.into() }
    }
}

/// Sampling for one request. `temperature <= 0` means greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub max_tokens: u32,
    pub seed: Option<u32>,
    pub stop: Vec<String>,
    /// GBNF (start rule `root`) the answer must match, e.g. from
    /// [`grammar::json_schema_to_gbnf`]; llama.cpp rejecting it fails the
    /// request at submit time.
    pub grammar: Option<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop sequence.
    Stop,
    /// `max_tokens` or the sequence's context was reached.
    Length,
    /// The client went away, called stop, or the daemon is shutting down.
    Cancelled,
}

/// What the inference thread reports for one request, in order:
/// `Started`, any number of `Text`, then exactly one `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// The request got a slot; `reused` prompt tokens came from its KV cache.
    Started {
        prompt_tokens: u32,
        reused: u32,
    },
    Text(String),
    Done {
        reason: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    Failed(String),
}

/// A tokenised prompt ready for the inference thread.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub tokens: Vec<LlamaToken>,
}

impl Prompt {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Cancels one generation from any thread.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The process's one llama.cpp backend, shared by the chat model and the
/// embedding model (llama-cpp-2 allows one live `LlamaBackend` per process);
/// initialised on first use and never freed.
pub(crate) fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: std::sync::OnceLock<Result<LlamaBackend, String>> = std::sync::OnceLock::new();
    BACKEND.get_or_init(|| LlamaBackend::init().map_err(|e| format!("llama.cpp backend: {e}"))).as_ref().map_err(Clone::clone)
}

/// Progress beacon of the inference thread, read by the watchdog.
#[derive(Debug)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Heartbeat { epoch: Instant::now(), last_ms: AtomicU64::new(0) }
    }
    pub(crate) fn beat(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Time since the thread last showed progress.
    pub fn age(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Everything the runtime needs from config, already resolved.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub name: String,
    pub path: PathBuf,
    pub enabled: bool,
    pub context_size: u32,
    /// KV cache key and value types (`model.kv_type_k`, `model.kv_type_v`).
    pub kv_type_k: KvType,
    pub kv_type_v: KvType,
    pub slots: u32,
    pub threads: u32,
    /// Run fewer threads while other processes hold the cores (when the
    /// thread count was derived, not configured).
    pub adaptive_threads: bool,
    pub batch_size: u32,
    /// How long a decode step may take with prompt tokens while other
    /// sequences generate (`model.step_budget_ms`); zero: no time bound.
    pub step_budget: Duration,
    /// Where the cached prompt prefixes are kept across a restart
    /// (`kv-prefixes/` next to the store); `None`: not kept.
    pub prefix_dir: Option<PathBuf>,
    /// While idle, save the prefixes at most this often when they changed
    /// (`model.prefix_save_secs`); zero: only at a clean stop.
    pub prefix_save: Duration,
    pub queue_depth: usize,
    /// Places one app may hold in the queue (`admission.max_queued_per_app`).
    pub max_queued_per_app: usize,
    /// Generations of one app run at once (`admission.max_concurrent_per_app`).
    pub max_concurrent_per_app: usize,
    pub use_mlock: bool,
    /// Loading still running after this is aborted (`model.load_timeout_secs`).
    pub load_timeout: Duration,
    /// A llama.cpp built-in template name that replaces the GGUF's template.
    pub chat_template: Option<String>,
}

enum State {
    Disabled,
    Loading,
    Ready(Arc<LocalModel>),
    Failed(String),
    /// Unloading: no new generations; the inference thread finishes the
    /// queued and running ones, saves the cached prefixes and ends.
    Unloading,
    /// Unloaded by an operator: no inference thread, no weights, no KV cache.
    Unloaded,
}

/// What [`ModelRuntime::load`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Loading started on a new inference thread.
    Started,
    /// The model was loaded already; nothing changed.
    AlreadyReady,
}

/// What [`ModelRuntime::unload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unload {
    /// The inference thread has ended: the model is unloaded.
    Done,
    /// The model was unloaded already, or had failed to load (now unloaded).
    Already,
    /// Generations still ran when the wait ended; the model unloads when
    /// they have finished (the state stays `unloading` until then).
    StillRunning,
}

/// Called with the new status whenever loading ends or the model unloads.
type OnChange = Arc<dyn Fn(&RuntimeStatus) + Send + Sync>;

/// Snapshot for /ready, status and logs.
#[derive(Debug, Clone)]
pub struct RuntimeStatus {
    pub state: &'static str,
    pub error: Option<String>,
}

/// The daemon's model: its load state and, once loaded, the runtime.
pub struct ModelRuntime {
    pub config: RuntimeConfig,
    state: RwLock<State>,
    heartbeat: Arc<Heartbeat>,
    /// Fed by the inference thread: time to first token, tokens generated, KV cells.
    metrics: Arc<Metrics>,
    /// Closed when the inference thread has ended (its cached prefixes
    /// saved): its sender lives as long as the thread.
    stopped: std::sync::Mutex<Option<tokio::sync::watch::Receiver<()>>>,
    /// The callback given to [`ModelRuntime::start`], for later loads.
    on_change: std::sync::Mutex<Option<OnChange>>,
    /// Percent of the current (or last) load, 0 ..= 100.
    load_percent: Arc<AtomicU32>,
}

impl ModelRuntime {
    /// A runtime that has not started loading yet (state `loading`, or
    /// `disabled` when the config says so).
    pub fn new(config: RuntimeConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let initial = if config.enabled { State::Loading } else { State::Disabled };
        Arc::new(ModelRuntime {
            config,
            state: RwLock::new(initial),
            heartbeat: Arc::new(Heartbeat::new()),
            metrics,
            stopped: std::sync::Mutex::new(None),
            on_change: std::sync::Mutex::new(None),
            load_percent: Arc::new(AtomicU32::new(0)),
        })
    }

    /// Starts loading on the inference thread and returns at once.
    /// `on_change` is called from that thread when loading ends, and again
    /// for every later [`ModelRuntime::load`] and [`ModelRuntime::unload`].
    pub fn start(self: &Arc<Self>, on_change: impl Fn(&RuntimeStatus) + Send + Sync + 'static) {
        *lock(&self.on_change) = Some(Arc::new(on_change));
        if !self.config.enabled {
            return;
        }
        self.spawn_thread();
    }

    /// Loads the model again after an unload or a failed load, with the same
    /// configuration, on a new inference thread; returns at once (follow
    /// [`ModelRuntime::status`] and [`ModelRuntime::load_percent`]).
    pub fn load(self: &Arc<Self>) -> Result<Load, ModelError> {
        {
            let mut state = self.state.write().map_err(|_| ModelError::ThreadGone)?;
            match &*state {
                State::Ready(_) => return Ok(Load::AlreadyReady),
                State::Disabled => return Err(ModelError::Disabled),
                State::Loading => return Err(ModelError::Loading),
                State::Unloading => return Err(ModelError::Unloading),
                State::Unloaded | State::Failed(_) => *state = State::Loading,
            }
        }
        tracing::info!(model = %self.config.path.display(), "loading the model again on an operator's request");
        self.notify();
        self.spawn_thread();
        Ok(Load::Started)
    }

    /// Unloads the model: no new generations are taken (they answer 503
    /// like a disabled model); the queued and running ones finish, the
    /// inference thread saves the cached prefixes and ends, which frees the
    /// weights (the file mapping) and the KV cache. Waits for that up to
    /// `timeout`; a model that failed to load is just marked unloaded.
    pub async fn unload(&self, timeout: Duration) -> Result<Unload, ModelError> {
        let closing = {
            let mut state = self.state.write().map_err(|_| ModelError::ThreadGone)?;
            match std::mem::replace(&mut *state, State::Unloading) {
                State::Ready(m) => Some(m),
                State::Unloading => None,
                State::Unloaded => {
                    *state = State::Unloaded;
                    return Ok(Unload::Already);
                }
                State::Failed(_) => {
                    *state = State::Unloaded;
                    drop(state);
                    self.notify();
                    return Ok(Unload::Already);
                }
                State::Disabled => {
                    *state = State::Disabled;
                    return Err(ModelError::Disabled);
                }
                State::Loading => {
                    *state = State::Loading;
                    return Err(ModelError::Loading);
                }
            }
        };
        if let Some(model) = closing {
            tracing::info!(queued = model.queued(), "unloading the model on an operator's request");
            model.close();
            // The state's reference goes now; requests still running hold
            // theirs until they end.
            drop(model);
            self.notify();
        }
        if self.wait_for_thread(timeout).await {
            Ok(Unload::Done)
        } else {
            Ok(Unload::StillRunning)
        }
    }

    /// Percent of the current load (file read and tensors loaded), 0 ..= 100.
    pub fn load_percent(&self) -> u32 {
        self.load_percent.load(Ordering::Relaxed)
    }

    /// Calls the `on_change` callback with the status now.
    fn notify(&self) {
        let callback = lock(&self.on_change).clone();
        if let Some(callback) = callback {
            callback(&self.status());
        }
    }

    /// Starts the inference thread, which loads the model (state `Loading`).
    fn spawn_thread(self: &Arc<Self>) {
        self.heartbeat.beat();
        self.load_percent.store(0, Ordering::Relaxed);
        let weak = Arc::downgrade(self);
        let at_end = Arc::downgrade(self);
        let cfg = self.config.clone();
        let hb = Arc::clone(&self.heartbeat);
        let metrics = Arc::clone(&self.metrics);
        let percent = Arc::clone(&self.load_percent);
        let (stopped, stopped_rx) = tokio::sync::watch::channel(());
        *lock(&self.stopped) = Some(stopped_rx);
        let spawned = std::thread::Builder::new().name("inference".into()).spawn(move || {
            local::run_thread(cfg, hb, metrics, percent, move |result| {
                let Some(rt) = weak.upgrade() else { return };
                let next = match result {
                    Ok(m) => State::Ready(m),
                    Err(e) => State::Failed(e.to_string()),
                };
                if let Ok(mut s) = rt.state.write() {
                    *s = next;
                }
                rt.notify();
            });
            // The thread's model and context are freed by now. An unload
            // ends here: say so before the waiters wake (`stopped` drops last).
            if let Some(rt) = at_end.upgrade() {
                let unloaded = match rt.state.write() {
                    Ok(mut s) if matches!(*s, State::Unloading) => {
                        *s = State::Unloaded;
                        true
                    }
                    _ => false,
                };
                if unloaded {
                    tracing::info!("model unloaded: the inference thread has ended");
                    rt.notify();
                }
            }
            drop(stopped);
        });
        if let Err(e) = spawned {
            if let Ok(mut s) = self.state.write() {
                *s = State::Failed(format!("cannot start the inference thread: {e}"));
            }
            self.notify();
        }
    }

    /// Waits up to `timeout` for the inference thread to end; true when it
    /// has (or there is none).
    async fn wait_for_thread(&self, timeout: Duration) -> bool {
        let stopped = lock(&self.stopped).clone();
        let Some(mut stopped) = stopped else { return true };
        // The sender never sends: `changed` fails once the thread dropped it.
        tokio::time::timeout(timeout, async { while stopped.changed().await.is_ok() {} }).await.is_ok()
    }

    /// A clean stop: no new generations are taken; the inference thread
    /// finishes what runs, saves the cached prefixes for the next start and
    /// ends. Waits for that up to `timeout` (an unload under way included).
    pub async fn stop(&self, timeout: Duration) {
        let running = match self.state.read().as_deref() {
            Ok(State::Ready(m)) => {
                m.close();
                true
            }
            Ok(State::Unloading) => true,
            _ => false,
        };
        if running && !self.wait_for_thread(timeout).await {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "the inference thread did not stop in time: cached prefixes not saved");
        }
    }

    pub fn status(&self) -> RuntimeStatus {
        match self.state.read().as_deref() {
            Ok(State::Disabled) => RuntimeStatus { state: "disabled", error: None },
            Ok(State::Loading) => RuntimeStatus { state: "loading", error: None },
            Ok(State::Ready(_)) => RuntimeStatus { state: "ready", error: None },
            Ok(State::Failed(e)) => RuntimeStatus { state: "failed", error: Some(e.clone()) },
            Ok(State::Unloading) => RuntimeStatus { state: "unloading", error: None },
            Ok(State::Unloaded) => RuntimeStatus { state: "unloaded", error: None },
            Err(_) => RuntimeStatus { state: "failed", error: Some("model state lock poisoned".into()) },
        }
    }

    /// The loaded model, or why there is none.
    pub fn ready(&self) -> Result<Arc<LocalModel>, ModelError> {
        match self.state.read().as_deref() {
            Ok(State::Ready(m)) => Ok(Arc::clone(m)),
            Ok(State::Disabled) => Err(ModelError::Disabled),
            Ok(State::Loading) => Err(ModelError::Loading),
            Ok(State::Failed(e)) => Err(ModelError::LoadFailed { reason: e.clone() }),
            Ok(State::Unloading) => Err(ModelError::Unloading),
            Ok(State::Unloaded) => Err(ModelError::Unloaded),
            Err(_) => Err(ModelError::ThreadGone),
        }
    }

    /// True while the inference thread shows progress within `max_age`, or
    /// when there is no inference thread to watch (disabled, failed or unloaded).
    pub fn inference_healthy(&self, max_age: Duration) -> bool {
        match self.state.read().as_deref() {
            Ok(State::Ready(_)) | Ok(State::Loading) | Ok(State::Unloading) => self.heartbeat.age() <= max_age,
            Ok(State::Disabled) | Ok(State::Failed(_)) | Ok(State::Unloaded) => true,
            Err(_) => false,
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One admitted generation, as handed to the inference thread.
pub(crate) struct Job {
    pub prompt: Prompt,
    pub params: SamplingParams,
    /// The grammar sampler for `params.grammar`, built (and so checked) at
    /// submit time.
    pub grammar: Option<llama_cpp_2::sampling::LlamaSampler>,
    pub cancel: CancelFlag,
    pub events: mpsc::Sender<GenEvent>,
    /// When the job was queued, for the time to first token.
    pub queued_at: Instant,
    /// Set by the queue when the inference thread takes the job: counts it
    /// against its app's running limit until the job is dropped.
    pub running: Option<queue::Running>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, enabled: bool) -> RuntimeConfig {
        RuntimeConfig {
            name: "m".into(),
            path: dir.join("missing.gguf"),
            enabled,
            context_size: 512,
            kv_type_k: KvType::Q8_0,
            kv_type_v: KvType::Q8_0,
            slots: 1,
            threads: 1,
            adaptive_threads: false,
            batch_size: 32,
            step_budget: Duration::ZERO,
            prefix_dir: None,
            prefix_save: Duration::ZERO,
            queue_depth: 1,
            max_queued_per_app: 1,
            max_concurrent_per_app: 1,
            use_mlock: false,
            load_timeout: Duration::from_secs(5),
            chat_template: None,
        }
    }

    async fn settled(rt: &ModelRuntime) -> RuntimeStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        while rt.status().state == "loading" {
            assert!(Instant::now() < deadline, "the load never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rt.status()
    }

    #[tokio::test]
    async fn a_failed_model_unloads_and_loads_again_with_the_start_callback() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = ModelRuntime::new(config(dir.path(), true), Arc::default());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        rt.start(move |st| lock(&s).push(st.state));
        assert_eq!(settled(&rt).await.state, "failed", "the file does not exist");

        assert_eq!(rt.unload(Duration::from_secs(1)).await.expect("unload"), Unload::Already);
        assert_eq!(rt.status().state, "unloaded");
        assert!(matches!(rt.ready(), Err(ModelError::Unloaded)));
        assert!(rt.inference_healthy(Duration::ZERO), "nothing to watch while unloaded");
        assert_eq!(rt.unload(Duration::from_secs(1)).await.expect("again"), Unload::Already);

        assert_eq!(rt.load().expect("load"), Load::Started);
        assert_eq!(settled(&rt).await.state, "failed", "the same config, the same missing file");
        assert_eq!(*lock(&seen), ["failed", "unloaded", "loading", "failed"], "every change went to the callback");
        // A clean stop with no inference thread returns at once.
        tokio::time::timeout(Duration::from_secs(1), rt.stop(Duration::from_secs(5))).await.expect("stop");
    }

    #[tokio::test]
    async fn a_disabled_model_neither_loads_nor_unloads() {
        let dir = tempfile::tempdir().expect("tmp");
        let rt = ModelRuntime::new(config(dir.path(), false), Arc::default());
        rt.start(|_| {});
        assert!(matches!(rt.load(), Err(ModelError::Disabled)));
        assert!(matches!(rt.unload(Duration::from_secs(1)).await, Err(ModelError::Disabled)));
        assert_eq!(rt.status().state, "disabled");
    }
}
