//! The local GGUF runtime: loading the model, the inference thread that owns
//! the llama.cpp context, and the scheduler that runs every active sequence
//! in one batch per decode step, reusing a slot's KV cache for a shared
//! prompt prefix.

use std::io::Read;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{KvCacheType, LlamaContextParams};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LlamaStateSeqFlags, SeqState};
use tokio::sync::mpsc::error::TrySendError as AsyncTrySendError;

use super::prefixes::{self, Fingerprint};
use super::queue::{JobQueue, Pop, QueueLimits, Reservation};
use super::template::Renderer;
use super::text::TokenText;
use super::{ChatMessage, FinishReason, GenEvent, Heartbeat, Job, ModelError, Prompt, RuntimeConfig, SamplingParams};
use crate::config::KvType;
use crate::governor::{CpuLoad, CpuReading, ThreadAdvisor};
use crate::telemetry::metrics::Metrics;

/// How long the idle scheduler waits for work before beating the heartbeat.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// A loaded model: templating and tokenising on any thread, generation
/// through the bounded queue to the inference thread.
pub struct LocalModel {
    model: Arc<LlamaModel>,
    renderer: Renderer,
    jobs: Arc<JobQueue>,
    /// KV positions shared by all sequences; one request may use them all.
    pub context: u32,
    /// Inference threads in use now (fewer than configured while other
    /// processes hold the cores; see governor::ThreadAdvisor).
    pub threads: Arc<std::sync::atomic::AtomicU32>,
    pub template: String,
    /// Counts the generations the queue refuses.
    metrics: Arc<Metrics>,
}

impl LocalModel {
    /// Renders messages with the model's chat template and tokenises them,
    /// with exactly one BOS at the start when the model wants one.
    pub fn prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, ModelError> {
        let text = self.renderer.render(&self.model, messages)?;
        let vocab = self.model.vocab();
        // Special tokens in the text are parsed (the template writes them),
        // but none is added: templates rendered by minijinja write
        // `{{ bos_token }}` themselves, llama.cpp's own ones do not.
        let tokens = with_one_bos(vocab.tokenize(text.as_bytes(), false, true), vocab.bos(), vocab.should_add_bos());
        tracing::debug!(
            prompt_tokens = tokens.len(),
            leading_bos = tokens.iter().take_while(|&&t| t == vocab.bos()).count(),
            first_tokens = ?tokens.iter().take(8).map(|t| t.0).collect::<Vec<_>>(),
            "prompt tokenised"
        );
        Ok(Prompt { tokens })
    }

    /// Checks that prompt plus answer fit one sequence.
    pub fn check_fits(&self, prompt: &Prompt, max_tokens: u32) -> Result<(), ModelError> {
        if prompt.len() as u64 + u64::from(max_tokens) > u64::from(self.context) {
            return Err(ModelError::ContextOverflow { prompt_tokens: prompt.len(), max_tokens, limit: self.context });
        }
        Ok(())
    }

    /// Reserves a place in the admission queue for a generation of `app`
    /// (429 when the queue or the app's share of it is full) before the
    /// caller records anything; [`LocalModel::submit`] uses it.
    pub fn admit(&self, app: &str) -> Result<Admission, ModelError> {
        match self.jobs.reserve(app) {
            Ok(r) => Ok(Admission(r)),
            Err(e) => {
                match &e {
                    ModelError::QueueFull { .. } => self.metrics.shed("queue_full"),
                    ModelError::AppQueueFull { .. } => self.metrics.shed("app_queue_full"),
                    _ => {}
                }
                Err(e)
            }
        }
    }

    /// The model's shape, for the governor's memory budget.
    pub fn shape(&self) -> crate::governor::pressure::ModelShape {
        let m = &self.model;
        crate::governor::pressure::ModelShape {
            n_layer: m.n_layer(),
            n_embd: u32::try_from(m.n_embd()).unwrap_or(0),
            n_head: m.n_head(),
            n_head_kv: m.n_head_kv(),
            n_vocab: u32::try_from(m.n_vocab()).unwrap_or(0),
        }
    }

    /// Queues a generation in an admitted place; never blocks. The receiver
    /// gets [`GenEvent`]s.
    pub fn submit(
        &self,
        admission: Admission,
        prompt: Prompt,
        params: SamplingParams,
        cancel: super::CancelFlag,
    ) -> Result<tokio::sync::mpsc::Receiver<GenEvent>, ModelError> {
        self.check_fits(&prompt, params.max_tokens)?;
        if prompt.is_empty() {
            return Err(ModelError::InvalidPrompt("the prompt is empty".into()));
        }
        let grammar = params.grammar.as_deref().map(|g| self.grammar_sampler(g)).transpose()?;
        // Room for every event the job can produce, so the inference thread
        // never blocks on a slow consumer (max_tokens is bounded by the slot).
        let (tx, rx) = tokio::sync::mpsc::channel(params.max_tokens as usize + 4);
        admission.0.push(Job { prompt, params, grammar, cancel, events: tx, queued_at: Instant::now(), running: None })?;
        Ok(rx)
    }

    /// llama.cpp's sampler for a GBNF grammar (start rule `root`); parsing
    /// it here, on the caller's thread, fails a bad grammar before the job
    /// is queued (llama.cpp logs the parse error itself).
    fn grammar_sampler(&self, gbnf: &str) -> Result<LlamaSampler, ModelError> {
        LlamaSampler::grammar(&self.model, gbnf, "root").map_err(|e| {
            tracing::warn!(error = %e, grammar_bytes = gbnf.len(), "llama.cpp rejected an output grammar");
            ModelError::Inference(format!("llama.cpp rejected the output grammar ({e}); see the daemon log for the parse error"))
        })
    }

    /// Takes no more jobs: the inference thread ends once none runs.
    pub(super) fn close(&self) {
        self.jobs.close();
    }

    /// Places taken in the admission queue now.
    pub fn queued(&self) -> usize {
        self.jobs.queued()
    }

    /// Places taken in the admission queue now by each app that has any.
    pub fn queued_by_app(&self) -> Vec<(Arc<str>, usize)> {
        self.jobs.queued_by_app()
    }

    /// Takes jobs whose client went away out of the queue (they end as
    /// cancelled), so they stop holding queue places.
    pub fn withdraw_cancelled(&self) {
        let n = self.jobs.withdraw_cancelled();
        if n > 0 {
            tracing::debug!(jobs = n, "withdrew cancelled jobs from the queue");
        }
    }
}

/// A reserved place in the admission queue; freed if dropped unused.
pub struct Admission(Reservation);

impl Drop for LocalModel {
    fn drop(&mut self) {
        self.jobs.close();
    }
}

fn load_error(reason: impl Into<String>) -> ModelError {
    ModelError::LoadFailed { reason: reason.into() }
}

/// Checks the file before llama.cpp sees it, so the common mistakes get a
/// precise message instead of llama.cpp's null pointer.
fn check_file(cfg: &RuntimeConfig) -> Result<(), ModelError> {
    let p = &cfg.path;
    let meta = std::fs::metadata(p).map_err(|e| load_error(format!("model file {}: {e}", p.display())))?;
    if !meta.is_file() {
        return Err(load_error(format!("model file {} is not a regular file", p.display())));
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| load_error(format!("model file {}: cannot read its header: {e}", p.display())))?;
    if &magic != b"GGUF" {
        return Err(load_error(format!("model file {} is not a GGUF file (bad magic bytes)", p.display())));
    }
    Ok(())
}

/// Body of the inference thread: load, report through `on_loaded`, then
/// serve jobs until the queue is closed (the `LocalModel` is dropped).
pub(super) fn run_thread(
    cfg: RuntimeConfig,
    heartbeat: Arc<Heartbeat>,
    metrics: Arc<Metrics>,
    percent: Arc<std::sync::atomic::AtomicU32>,
    on_loaded: impl FnOnce(Result<Arc<LocalModel>, ModelError>),
) {
    heartbeat.beat();
    let started = Instant::now();
    let loaded = (|| {
        check_file(&cfg)?;
        let backend = super::backend().map_err(load_error)?;
        let progress = LoadProgress {
            heartbeat: Arc::clone(&heartbeat),
            deadline: started + cfg.load_timeout,
            timed_out: Arc::default(),
            percent: Arc::clone(&percent),
        };
        let too_slow = || {
            load_error(format!(
                "loading {} took longer than model.load_timeout_secs ({} s) and was aborted; \
                 raise the limit if the storage is this slow",
                cfg.path.display(),
                cfg.load_timeout.as_secs()
            ))
        };
        // Percent of the load: reading the file through is the first half
        // when it happens, llama.cpp's own progress the rest.
        let prefetched = worth_prefetching(&cfg);
        if prefetched && !prefetch(&cfg.path, &progress)? {
            return Err(too_slow());
        }
        let (from, span) = if prefetched { (PREFETCH_SHARE, 100 - PREFETCH_SHARE) } else { (0, 100) };
        let callback = progress.clone();
        let params = LlamaModelParams::default()
            .with_use_mlock(cfg.use_mlock)
            .with_progress_callback(move |p| callback.step(from + (p.clamp(0.0, 1.0) * span as f32) as u32));
        let model = LlamaModel::load_from_file(backend, &cfg.path, &params).map_err(|e| {
            if progress.timed_out.load(Ordering::Relaxed) {
                too_slow()
            } else {
                load_error(format!("llama.cpp could not load {} ({e}); the file may be truncated or corrupt", cfg.path.display()))
            }
        })?;
        Ok::<_, ModelError>((backend, Arc::new(model)))
    })();
    let (backend, model) = match loaded {
        Ok(x) => x,
        Err(e) => return on_loaded(Err(e)),
    };
    heartbeat.beat();
    let ctx = match model.new_context(backend, context_params(&cfg, cfg.threads)) {
        Ok(c) => c,
        Err(e) => {
            return on_loaded(Err(load_error(format!(
                "llama.cpp context ({} positions, {} slots, KV model.kv_type_k = {:?}, model.kv_type_v = {:?}): {e}",
                cfg.context_size,
                cfg.slots,
                cfg.kv_type_k.as_str(),
                cfg.kv_type_v.as_str()
            ))))
        }
    };
    let (renderer, template) = match Renderer::for_model(&model, cfg.chat_template.as_deref()) {
        Ok(r) => r,
        Err(e) => return on_loaded(Err(e)),
    };
    percent.store(100, Ordering::Relaxed);
    let context = ctx.n_ctx();
    let queue = Arc::new(JobQueue::new(QueueLimits {
        depth: cfg.queue_depth,
        per_app_queued: cfg.max_queued_per_app,
        per_app_running: cfg.max_concurrent_per_app,
    }));
    tracing::info!(
        model = %cfg.path.display(),
        n_ctx = context,
        kv_cache = %format_args!("{}/{}, unified", cfg.kv_type_k.as_str(), cfg.kv_type_v.as_str()),
        slots = cfg.slots,
        threads = cfg.threads,
        template = %template,
        n_ctx_train = model.n_ctx_train(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let threads_now = Arc::new(std::sync::atomic::AtomicU32::new(cfg.threads));
    let local = Arc::new(LocalModel {
        model: Arc::clone(&model),
        renderer,
        jobs: Arc::clone(&queue),
        context,
        threads: Arc::clone(&threads_now),
        template,
        metrics: Arc::clone(&metrics),
    });
    on_loaded(Ok(local));
    failpoint_hang();
    Scheduler::new(backend, &model, ctx, &cfg, heartbeat, threads_now, metrics).run(&queue);
    tracing::info!("inference thread stopped: no more senders");
}

/// Progress of one model load. Every step (a chunk of the file read, or a
/// tensor llama.cpp loaded: its progress callback) beats the inference
/// heartbeat, so a slow load (eMMC, mlock) is progress the watchdog sees;
/// past the deadline (`model.load_timeout_secs`) the load is called off.
/// Each step also says how far the load is, in percent, for LoadModel's
/// Progress signals (read from the runtime, never sent from this thread).
#[derive(Clone)]
struct LoadProgress {
    heartbeat: Arc<Heartbeat>,
    deadline: Instant,
    timed_out: Arc<AtomicBool>,
    percent: Arc<std::sync::atomic::AtomicU32>,
}

/// The share of the load's percent that reading the file through takes.
const PREFETCH_SHARE: u32 = 50;

impl LoadProgress {
    /// One step, `percent` of the load done; false once the deadline has
    /// passed (the load must stop; false from llama.cpp's callback aborts
    /// `load_from_file`).
    fn step(&self, percent: u32) -> bool {
        self.heartbeat.beat();
        // Below 100 until the model is usable (the context is made after).
        self.percent.store(percent.min(99), Ordering::Relaxed);
        // Test-only: `model-load-progress=sleep(N)` makes every step slow.
        fail::fail_point!("model-load-progress");
        if Instant::now() >= self.deadline {
            self.timed_out.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Whether reading the file through first pays: not with `mlock` (llama.cpp
/// faults every page in itself) and not for a file larger than half the
/// available memory (it would evict its own first pages and double the I/O).
fn worth_prefetching(cfg: &RuntimeConfig) -> bool {
    if cfg.use_mlock {
        return false;
    }
    let size = std::fs::metadata(&cfg.path).map(|m| m.len()).unwrap_or(u64::MAX);
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_available_bytes(&t));
    available.is_some_and(|a| size <= a / 2)
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Reads the model file once, in chunks, before llama.cpp maps it. With
/// mmap llama.cpp reads only the tensors it repacks while loading; the rest
/// would come from storage at the first decode, where nothing shows the
/// watchdog progress and a client waits. Reading it here puts it in the page
/// cache the mapping then uses. False when the deadline passed.
fn prefetch(path: &std::path::Path, progress: &LoadProgress) -> Result<bool, ModelError> {
    let read_error = |e: std::io::Error| load_error(format!("model file {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0).max(1);
    let mut chunk = vec![0u8; 8 << 20];
    let mut read = 0u64;
    loop {
        let share = u32::try_from(read.min(size) * u64::from(PREFETCH_SHARE) / size).unwrap_or(PREFETCH_SHARE);
        if !progress.step(share) {
            return Ok(false);
        }
        match file.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => read += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e)),
        }
    }
}

fn context_params(cfg: &RuntimeConfig, threads: u32) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(cfg.context_size))
        .with_n_batch(cfg.batch_size)
        .with_n_ubatch(cfg.batch_size)
        .with_n_seq_max(cfg.slots)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32)
        // One KV store for all slots (split streams made every decode step
        // 7x slower here); admission reserves cells per request so sequences
        // never run out. Flash attention stays llama.cpp's default (auto),
        // which turns it on for a quantized value type on the CPU.
        .with_kv_unified(true)
        .with_type_k(kv_cache_type(cfg.kv_type_k))
        .with_type_v(kv_cache_type(cfg.kv_type_v))
}

fn kv_cache_type(t: KvType) -> KvCacheType {
    match t {
        KvType::F16 => KvCacheType::F16,
        KvType::Q8_0 => KvCacheType::Q8_0,
        KvType::Q4_0 => KvCacheType::Q4_0,
    }
}

/// Test-only fault (`inference-hang=return`): the inference thread stops
/// showing progress once the model is loaded (or, when the fail point is
/// turned on later, at its next step with work in hand), as a deadlocked
/// thread would.
fn failpoint_hang() {
    fail::fail_point!("inference-hang", |_| {
        tracing::warn!("failpoint: the inference thread hangs now");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
}

/// Test-only: `retune-threads=return` makes every look at the CPU load (each
/// idle tick, and every IDLE_TICK between steps while busy) rebuild the
/// context (with the thread count in use, or `return(N)`'s N), as a change
/// of the CPU load would.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn forced_retune(current: u32) -> Option<u32> {
    fail::fail_point!("retune-threads", |arg| Some(arg.and_then(|a| a.parse().ok()).unwrap_or(current)));
    None
}

/// Tokens of a slot's start that name its prefix for the idle save: an
/// app's pre-prompt differs from another's within them, while a
/// conversation growing after it does not change them.
const PREFIX_HEAD_TOKENS: usize = 128;

/// A hash of a slot's first [`PREFIX_HEAD_TOKENS`] tokens; `None` when empty.
fn prefix_head(kv: &[LlamaToken]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    if kv.is_empty() {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in &kv[..kv.len().min(PREFIX_HEAD_TOKENS)] {
        t.0.hash(&mut h);
    }
    Some(h.finish())
}

/// A slot is one llama.cpp sequence id with the tokens its KV cache holds.
struct Slot {
    kv: Vec<LlamaToken>,
    busy: bool,
}

/// One running generation.
struct Active {
    slot: usize,
    job: Job,
    /// Prompt tokens still to decode (after the reused prefix).
    pending: usize,
    reused: usize,
    /// The token sampled last, to be decoded in the next step.
    next: Option<LlamaToken>,
    /// Index of this sequence's logits in the current batch.
    logits_at: Option<i32>,
    sampler: LlamaSampler,
    generated: u32,
    text: TokenText,
    finished: Option<FinishReason>,
}

struct Scheduler<'m> {
    backend: &'m LlamaBackend,
    cfg: &'m RuntimeConfig,
    advisor: ThreadAdvisor,
    cpu_load: CpuLoad,
    /// When the CPU load was last read (idle tick or between steps).
    last_retune: Instant,
    threads_now: Arc<std::sync::atomic::AtomicU32>,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    slots: Vec<Slot>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    /// KV cells in the context, shared by every slot.
    n_ctx: usize,
    heartbeat: Arc<Heartbeat>,
    metrics: Arc<Metrics>,
    active: Vec<Active>,
    /// How long steps take, to size prompt chunks by the time budget.
    pace: StepPace,
    /// A job taken from the queue that waits for KV room.
    waiting: Option<Job>,
    /// Where prefixes are kept across a restart, and what they must match.
    saved_prefixes: Option<(PathBuf, Fingerprint)>,
    /// Each slot's head (see [`prefix_head`]) when the prefixes were last
    /// saved or restored, and when that was: an idle save happens only when
    /// a head changed (a new app's pre-prompt), at most every
    /// `prefix_save`, so a conversation growing in a slot does not rewrite
    /// the files (flash wear).
    saved_heads: Vec<Option<u64>>,
    last_prefix_save: Instant,
}

impl<'m> Scheduler<'m> {
    fn new(
        backend: &'m LlamaBackend,
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        cfg: &'m RuntimeConfig,
        heartbeat: Arc<Heartbeat>,
        threads_now: Arc<std::sync::atomic::AtomicU32>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let n_ctx = ctx.n_ctx() as usize;
        let (n_slots, batch_size) = (cfg.slots as usize, cfg.batch_size as usize);
        Scheduler {
            backend,
            cfg,
            // Observed every IDLE_TICK, idle or busy: a change needs ~2 s
            // of steady load.
            advisor: ThreadAdvisor::new(cfg.threads, 8),
            cpu_load: CpuLoad::for_this_process(),
            last_retune: Instant::now(),
            threads_now,
            model,
            ctx,
            slots: (0..n_slots).map(|_| Slot { kv: Vec::new(), busy: false }).collect(),
            batch: LlamaBatch::new(batch_size, 1),
            batch_size,
            n_ctx,
            heartbeat,
            metrics,
            active: Vec::new(),
            pace: StepPace::default(),
            waiting: None,
            saved_prefixes: cfg.prefix_dir.clone().zip(Fingerprint::of(cfg, n_ctx as u32)),
            saved_heads: vec![None; n_slots],
            last_prefix_save: Instant::now(),
        }
    }

    fn run(mut self, rx: &Arc<JobQueue>) {
        self.restore_prefixes();
        loop {
            self.heartbeat.beat();
            if !self.admit(rx) {
                self.save_prefixes();
                return;
            }
            // Also after an eviction or a thread-count change in admit.
            self.report_kv();
            if self.active.is_empty() {
                continue;
            }
            // Also here, with work in hand: `update-gate-hang` turns it on at run time.
            failpoint_hang();
            self.step();
            self.reap();
            self.report_kv();
            // Under sustained load the queue never leaves the scheduler idle
            // for a tick: follow the CPU load between steps as well.
            if self.last_retune.elapsed() >= IDLE_TICK {
                self.retune_threads();
            }
        }
    }

    /// Loads the prefixes the last clean stop saved (see `prefixes.rs`),
    /// before the first job is admitted.
    fn restore_prefixes(&mut self) {
        let Some((dir, fp)) = &self.saved_prefixes else { return };
        let started = Instant::now();
        let restored = prefixes::restore(dir, fp, &mut self.ctx);
        let tokens: usize = restored.iter().map(|(_, t)| t.len()).sum();
        for (slot, kv) in restored {
            self.slots[slot].kv = kv;
        }
        self.saved_heads = self.heads();
        let slots = self.slots.iter().filter(|s| !s.kv.is_empty()).count();
        tracing::info!(slots, tokens, ms = started.elapsed().as_millis() as u64, "cached prefixes restored");
    }

    /// Saves every slot's cached prefix for the next start; called once the
    /// queue is closed and nothing runs (a clean stop).
    fn save_prefixes(&self) {
        let Some((dir, fp)) = &self.saved_prefixes else { return };
        let started = Instant::now();
        let cached: Vec<(usize, &[LlamaToken])> =
            self.slots.iter().enumerate().filter(|(_, s)| !s.kv.is_empty()).map(|(i, s)| (i, s.kv.as_slice())).collect();
        let (slots, bytes) = prefixes::save(dir, fp, &self.ctx, &cached);
        tracing::info!(slots, bytes, dir = %dir.display(), ms = started.elapsed().as_millis() as u64, "cached prefixes saved");
    }

    /// While idle: saves the prefixes when a slot's head changed since the
    /// last save and `model.prefix_save_secs` have passed, so a start after
    /// a crash or a power cut is warm too (the files are then kept while
    /// running; a clean stop saves again).
    fn save_prefixes_if_due(&mut self) {
        let interval = self.cfg.prefix_save;
        if self.saved_prefixes.is_none() || interval.is_zero() || self.last_prefix_save.elapsed() < interval {
            return;
        }
        let heads = self.heads();
        if heads == self.saved_heads {
            return;
        }
        let Some((dir, fp)) = &self.saved_prefixes else { return };
        let started = Instant::now();
        let cached: Vec<(usize, &[LlamaToken])> =
            self.slots.iter().enumerate().filter(|(_, s)| !s.kv.is_empty()).map(|(i, s)| (i, s.kv.as_slice())).collect();
        let (slots, bytes) = prefixes::save(dir, fp, &self.ctx, &cached);
        tracing::info!(slots, bytes, dir = %dir.display(), ms = started.elapsed().as_millis() as u64, "cached prefixes saved while idle");
        self.saved_heads = heads;
        self.last_prefix_save = Instant::now();
    }

    fn heads(&self) -> Vec<Option<u64>> {
        self.slots.iter().map(|s| prefix_head(&s.kv)).collect()
    }

    /// KV cells in use, for the metrics (a sum over at most 16 slots).
    fn report_kv(&self) {
        self.metrics.kv_cells(self.n_ctx, self.slots.iter().map(|s| s.kv.len()).sum());
    }

    /// Moves queued jobs into free slots while their KV reservation fits.
    /// Returns false when the queue is closed and nothing is running.
    fn admit(&mut self, rx: &Arc<JobQueue>) -> bool {
        while self.slots.iter().any(|s| !s.busy) {
            let job = match self.waiting.take() {
                Some(j) => j,
                None if self.active.is_empty() => match rx.pop_timeout(IDLE_TICK) {
                    Pop::Job(j) => j,
                    Pop::Timeout => {
                        self.retune_threads();
                        self.save_prefixes_if_due();
                        return true;
                    }
                    Pop::Closed => return false,
                },
                None => match rx.try_pop() {
                    Some(j) => j,
                    None => return true,
                },
            };
            if job.cancel.is_cancelled() || job.events.is_closed() {
                // Cancelled while queued: report it as such (not as a job the
                // thread dropped), so the run is stored as stopped.
                let prompt_tokens = job.prompt.len() as u32;
                let _ = job.events.try_send(GenEvent::Done { reason: FinishReason::Cancelled, prompt_tokens, completion_tokens: 0 });
                continue;
            }
            let Some((slot, common)) = self.pick_slot(&job.prompt.tokens) else {
                self.waiting = Some(job);
                return true;
            };
            if !self.reserve(slot, reservation(&job)) {
                // Running sequences hold the room: wait for one to finish.
                self.waiting = Some(job);
                return true;
            }
            self.start(job, slot, common);
        }
        true
    }

    /// Every idle tick, and every IDLE_TICK between steps while busy: follow
    /// the thread advice when other processes hold the cores or CPU pressure
    /// shows tasks waiting for one (or when that stops). The thread count is
    /// fixed per llama.cpp context (llama-cpp-2 does not expose
    /// llama_set_n_threads), so the context is rebuilt; every sequence's
    /// cells are carried over, running ones included (see
    /// [`Scheduler::rebuild_context`]). It only happens after the load held
    /// for a while. The load is measured (and its CPU pressure reported)
    /// even with a configured thread count.
    fn retune_threads(&mut self) {
        self.last_retune = Instant::now();
        if let Some(threads) = forced_retune(self.threads_now.load(Ordering::Relaxed)) {
            self.rebuild_context(threads, None);
            return;
        }
        let load = self.cpu_load.read();
        self.metrics.cpu_pressure(load.stall.map(|s| (s.scope, s.share)));
        if !self.cfg.adaptive_threads {
            return;
        }
        let Some(others) = load.others else { return };
        let Some(threads) = self.advisor.observe(others, load.advisor_stall()) else { return };
        self.rebuild_context(threads, Some(load));
    }

    /// Replaces the context by one running `threads` threads, between steps:
    /// each slot's cells (a cached prefix, or a running sequence's prompt
    /// and answer so far) are copied out of the old context and into the new
    /// one. A running sequence's next token is already sampled and its
    /// sampler is not the context's, so it goes on as if nothing happened.
    /// An idle slot whose copy fails starts empty; a running sequence whose
    /// copy fails ends with an error (its cells are gone). `load`: the CPU
    /// load that asked for it, if any.
    fn rebuild_context(&mut self, threads: u32, load: Option<CpuReading>) {
        let saved: Vec<(usize, Option<SeqState>)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.kv.is_empty())
            .map(|(i, _)| (i, self.ctx.state_seq_get(i as i32, LlamaStateSeqFlags::empty()).ok()))
            .collect();
        let ctx = match self.model.new_context(self.backend, context_params(self.cfg, threads)) {
            Ok(ctx) => ctx,
            Err(e) => {
                tracing::warn!(error = %e, threads, "could not rebuild the context for a new thread count");
                return;
            }
        };
        // The old context is freed here; its prefixes live on in `saved`.
        self.ctx = ctx;
        let (mut kept, mut dropped) = (0, 0);
        for (slot, state) in saved {
            match state.map(|st| self.ctx.state_seq_set(&st, slot as i32)) {
                Some(Ok(())) => kept += 1,
                failed => {
                    tracing::warn!(slot, error = ?failed.and_then(Result::err), "a sequence's cells could not be carried into the new context");
                    let _ = self.ctx.kv_cache_seq_rm(slot as i32, None, None);
                    self.slots[slot].kv.clear();
                    for a in self.active.iter_mut().filter(|a| a.slot == slot && a.finished.is_none()) {
                        send(a, GenEvent::Failed("its cells could not be carried into the context rebuilt for a new thread count".into()));
                        a.finished = Some(FinishReason::Cancelled);
                    }
                    dropped += 1;
                }
            }
        }
        self.threads_now.store(threads, Ordering::Relaxed);
        let (others, stall) = (load.and_then(|l| l.others), load.and_then(|l| l.stall));
        tracing::info!(
            threads,
            busy_cpus_others = ?others,
            cpu_pressure = ?stall.map(|s| s.share),
            cpu_pressure_scope = ?stall.map(|s| s.scope),
            kept_prefixes = kept,
            dropped_prefixes = dropped,
            running = self.active.len(),
            "inference threads changed for the CPU load"
        );
    }

    /// The free slot whose cache shares the longest prefix with `prompt`; on
    /// a tie, the one with the least cached (least worth keeping).
    fn pick_slot(&self, prompt: &[LlamaToken]) -> Option<(usize, usize)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy)
            .map(|(i, s)| (i, common_prefix(&s.kv, prompt)))
            .max_by_key(|&(i, c)| (c, std::cmp::Reverse(self.slots[i].kv.len())))
    }

    /// Makes room for `need` cells in `slot`: running sequences keep their
    /// reservations; idle slots' caches are dropped only when that makes the
    /// job fit (see [`plan_eviction`]), else nothing is touched.
    fn reserve(&mut self, slot: usize, need: usize) -> bool {
        let held: usize = self.active.iter().map(|a| reservation(&a.job)).sum();
        let idle: Vec<(usize, usize)> =
            self.slots.iter().enumerate().filter(|(i, s)| !s.busy && *i != slot).map(|(i, s)| (i, s.kv.len())).collect();
        let Some(victims) = plan_eviction(self.n_ctx, held + need, &idle) else { return false };
        for v in victims {
            let _ = self.ctx.kv_cache_seq_rm(v as i32, None, None);
            self.slots[v].kv.clear();
            tracing::debug!(slot = v, "evicted an idle slot's cached prefix to make room");
        }
        true
    }

    fn start(&mut self, mut job: Job, slot: usize, common: usize) {
        let prompt = &job.prompt.tokens;
        // Keep at least one prompt token to decode: it yields the logits.
        let mut common = common.min(prompt.len().saturating_sub(1));
        if self.ctx.kv_cache_seq_rm(slot as i32, Some(common as u32), None).is_err() {
            let _ = self.ctx.kv_cache_seq_rm(slot as i32, None, None);
            common = 0;
        }
        self.slots[slot].kv.truncate(common);
        self.slots[slot].busy = true;
        let sampler = build_sampler(&job.params, job.grammar.take());
        let text = TokenText::new(&job.params.stop);
        let started = GenEvent::Started { prompt_tokens: prompt.len() as u32, reused: common as u32 };
        let pending = prompt.len() - common;
        let mut a = Active { slot, job, pending, reused: common, next: None, logits_at: None, sampler, generated: 0, text, finished: None };
        tracing::debug!(slot, prompt_tokens = a.job.prompt.len(), reused = common, "sequence started");
        send(&mut a, started);
        self.active.push(a);
    }

    /// One decode step: one token for every generating sequence, then prompt
    /// chunks for sequences still reading their prompt, the shortest rest
    /// first, up to the batch size and, while others generate, the time
    /// budget (see [`Scheduler::prompt_room`]).
    fn step(&mut self) {
        self.batch.clear();
        let mut generating = 0;
        for a in &mut self.active {
            a.logits_at = None;
            if a.finished.is_some() {
                continue;
            }
            if a.job.cancel.is_cancelled() || a.job.events.is_closed() {
                a.finished = Some(FinishReason::Cancelled);
                continue;
            }
            if let Some(tok) = a.next {
                let pos = self.slots[a.slot].kv.len() as i32;
                if self.batch.add(tok, pos, &[a.slot as i32], true).is_ok() {
                    a.logits_at = Some(self.batch.n_tokens() - 1);
                    self.slots[a.slot].kv.push(tok);
                    generating += 1;
                }
            }
        }
        let mut room = self.prompt_room(generating);
        let mut reading = 0;
        for i in self.readers_shortest_first() {
            if room == 0 {
                break;
            }
            let a = &mut self.active[i];
            let take = a.pending.min(room);
            let from = a.job.prompt.len() - a.pending;
            for (k, &tok) in a.job.prompt.tokens[from..from + take].iter().enumerate() {
                let pos = self.slots[a.slot].kv.len() as i32;
                let last = k + 1 == take && take == a.pending;
                if self.batch.add(tok, pos, &[a.slot as i32], last).is_err() {
                    break;
                }
                self.slots[a.slot].kv.push(tok);
            }
            a.pending -= take;
            room -= take;
            reading += take;
            if a.pending == 0 {
                a.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        let decoding = Instant::now();
        let decoded = self.decode();
        if decoded.is_ok() {
            self.pace.record(generating, reading, decoding.elapsed());
        }
        if let Err(e) = decoded {
            tracing::error!(error = %e, tokens = self.batch.n_tokens(), "decode failed");
            for a in &mut self.active {
                if a.finished.is_none() {
                    send(a, GenEvent::Failed(format!("llama.cpp decode failed: {e}")));
                    a.finished = Some(FinishReason::Cancelled);
                    // The cache of a failed sequence is unknown: drop it.
                    let _ = self.ctx.kv_cache_seq_rm(a.slot as i32, None, None);
                    self.slots[a.slot].kv.clear();
                }
            }
            return;
        }
        self.heartbeat.beat();
        let vocab = self.model.vocab();
        for a in &mut self.active {
            let Some(idx) = a.logits_at else { continue };
            let tok = match sample(a, &self.ctx, idx) {
                Ok(tok) => tok,
                Err(e) => {
                    tracing::warn!(slot = a.slot, generated = a.generated, error = %e, "sequence failed");
                    send(a, GenEvent::Failed(e));
                    a.finished = Some(FinishReason::Cancelled);
                    continue;
                }
            };
            if vocab.is_eog(tok) {
                a.finished = Some(FinishReason::Stop);
                continue;
            }
            a.generated += 1;
            if a.generated == 1 {
                self.metrics.first_token(a.job.queued_at.elapsed());
            }
            self.metrics.token_generated();
            a.next = Some(tok);
            let step = a.text.push(&vocab.token_to_piece(tok, false, None));
            if !step.emit.is_empty() {
                send(a, GenEvent::Text(step.emit));
            }
            if step.stopped {
                a.finished = Some(FinishReason::Stop);
            } else if a.generated >= a.job.params.max_tokens
                || self.slots[a.slot].kv.len() >= a.job.prompt.len() + a.job.params.max_tokens as usize
            {
                a.finished = Some(FinishReason::Length);
            }
        }
    }

    /// Prompt tokens this step may take besides `generating` decode tokens:
    /// what is left of the batch, and, while sequences generate, as many as
    /// the time budget allows, so that neither their next tokens nor a new
    /// request's first one waits for a long prompt. Alone, a prompt is read
    /// in whole batches, the fastest way.
    fn prompt_room(&self, generating: usize) -> usize {
        let left = self.batch_size - generating;
        if generating == 0 || self.cfg.step_budget.is_zero() {
            return left;
        }
        self.pace.prompt_tokens_within(self.cfg.step_budget, left)
    }

    /// Indexes in `active` of the sequences still reading their prompt, the
    /// fewest tokens left first: a short request's prompt is read in the
    /// next step, not after a long one's.
    fn readers_shortest_first(&self) -> Vec<usize> {
        let mut readers: Vec<usize> = (0..self.active.len())
            .filter(|&i| self.active[i].finished.is_none() && self.active[i].next.is_none() && self.active[i].pending > 0)
            .collect();
        readers.sort_by_key(|&i| self.active[i].pending);
        readers
    }

    /// Decodes the batch. Test-only: `decode-fail=return` (or `1*return`)
    /// makes it fail as llama.cpp can (out of memory, a backend error).
    fn decode(&mut self) -> Result<(), String> {
        fail::fail_point!("decode-fail", |_| Err("failpoint decode-fail".to_owned()));
        self.ctx.decode(&mut self.batch).map_err(|e| e.to_string())
    }

    /// Ends finished sequences: flush held text, report, free the slot.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            let Some(reason) = self.active[i].finished else {
                i += 1;
                continue;
            };
            let mut a = self.active.swap_remove(i);
            if reason != FinishReason::Cancelled {
                let rest = a.text.finish();
                if !rest.is_empty() {
                    send(&mut a, GenEvent::Text(rest));
                }
            }
            let done = GenEvent::Done { reason, prompt_tokens: a.job.prompt.len() as u32, completion_tokens: a.generated };
            tracing::debug!(slot = a.slot, ?reason, generated = a.generated, reused = a.reused, "sequence finished");
            send(&mut a, done);
            self.slots[a.slot].busy = false;
        }
    }
}

/// The next token of `a` from the logits at `idx`. Without a grammar this is
/// llama.cpp's `sample`. With one, the chosen token is checked before the
/// sampler accepts it: llama.cpp aborts the process when a grammar is made
/// to accept a token it forbids, which is what `sample` does when the
/// grammar leaves no token allowed (every candidate at -inf).
fn sample(a: &mut Active, ctx: &LlamaContext, idx: i32) -> Result<LlamaToken, String> {
    if a.job.params.grammar.is_none() {
        return Ok(a.sampler.sample(ctx, idx));
    }
    let mut candidates = ctx.token_data_array_ith(idx);
    candidates.apply_sampler(&mut a.sampler);
    let chosen = candidates.selected.and_then(|i| candidates.data.get(i));
    let Some(tok) = chosen.filter(|c| c.logit().is_finite()).map(|c| c.id()) else {
        return Err("the output grammar allows no token here: generation cannot continue".to_owned());
    };
    // A finite logit means the grammar allowed the token: accepting it
    // cannot throw (or, for end-of-generation, abort).
    a.sampler.accept(tok);
    Ok(tok)
}

/// Sends an event without ever blocking the inference thread; a consumer
/// that is gone (or stalled beyond the channel's room) cancels the sequence.
fn send(a: &mut Active, ev: GenEvent) {
    match a.job.events.try_send(ev) {
        Ok(()) => {}
        Err(AsyncTrySendError::Full(_)) | Err(AsyncTrySendError::Closed(_)) => {
            a.job.cancel.cancel();
            if a.finished.is_none() {
                a.finished = Some(FinishReason::Cancelled);
            }
        }
    }
}

/// `tokens` with `bos` in front when the model wants a BOS (`add_bos`) and
/// the rendered text did not already start with one.
fn with_one_bos(mut tokens: Vec<LlamaToken>, bos: LlamaToken, add_bos: bool) -> Vec<LlamaToken> {
    if add_bos && tokens.first() != Some(&bos) {
        tokens.insert(0, bos);
    }
    tokens
}

/// Fewest prompt tokens a step takes while others generate, so a prompt
/// always progresses even when the decode tokens alone use up the budget.
const MIN_PROMPT_CHUNK: usize = 8;

/// Weight of the newest measurement in [`StepPace`]'s moving averages.
const PACE_WEIGHT: f64 = 0.25;

/// What decode steps cost on this machine now (threads, load and model
/// change it), learnt from the steps themselves: the time of a step with
/// only decode tokens, and what each prompt token adds to it.
#[derive(Debug, Default)]
struct StepPace {
    /// Seconds of a step with decode tokens and no prompt tokens.
    decode_step: Option<f64>,
    /// Seconds one prompt token adds to a step.
    per_prompt_token: Option<f64>,
}

impl StepPace {
    /// Learns from a step that decoded `generating` sequences' next tokens
    /// and `reading` prompt tokens in `took`.
    fn record(&mut self, generating: usize, reading: usize, took: Duration) {
        let secs = took.as_secs_f64();
        if reading == 0 {
            if generating > 0 {
                self.decode_step = Some(ewma(self.decode_step, secs));
            }
            return;
        }
        let base = if generating > 0 { self.decode_step.unwrap_or(0.0) } else { 0.0 };
        let per = (secs - base).max(0.0) / reading as f64;
        self.per_prompt_token = Some(ewma(self.per_prompt_token, per));
    }

    /// Prompt tokens that fit in a step of `budget` next to the decode
    /// tokens, between [`MIN_PROMPT_CHUNK`] and `max`. Before anything is
    /// measured, the minimum (the first steps teach the rest). When the
    /// decode tokens alone take half the budget or more (a busy machine, many
    /// streams), prompts still get as much time as the decode tokens: a
    /// long prompt then reads at no less than half its speed, instead of
    /// crawling at the minimum while the streams run.
    fn prompt_tokens_within(&self, budget: Duration, max: usize) -> usize {
        let fit = match self.per_prompt_token {
            Some(per) if per > 0.0 => {
                let decode = self.decode_step.unwrap_or(0.0);
                let room = (budget.as_secs_f64() - decode).max(decode);
                (room / per).max(0.0) as usize
            }
            _ => 0,
        };
        fit.max(MIN_PROMPT_CHUNK).min(max)
    }
}

fn ewma(old: Option<f64>, new: f64) -> f64 {
    old.map_or(new, |o| o + PACE_WEIGHT * (new - o))
}

/// Which idle slots' cached prefixes to drop so that `needed` cells (running
/// reservations plus the new job's) fit in `n_ctx`, given `idle` as
/// (slot, cached cells): the fewest, largest first. `None` when the job does
/// not fit even with every idle cache dropped; then none is dropped, so a
/// job that must wait for running sequences costs no cached prefix.
fn plan_eviction(n_ctx: usize, needed: usize, idle: &[(usize, usize)]) -> Option<Vec<usize>> {
    let mut cached: Vec<(usize, usize)> = idle.iter().copied().filter(|&(_, len)| len > 0).collect();
    let mut total = needed + cached.iter().map(|&(_, len)| len).sum::<usize>();
    cached.sort_by_key(|&(slot, len)| (std::cmp::Reverse(len), slot));
    let mut victims = Vec::new();
    for (slot, len) in cached {
        if total <= n_ctx {
            break;
        }
        total -= len;
        victims.push(slot);
    }
    (total <= n_ctx).then_some(victims)
}

/// KV cells a job may fill: its whole prompt plus its longest answer.
fn reservation(job: &Job) -> usize {
    job.prompt.len() + job.params.max_tokens as usize
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The sampler chain for one request. A grammar comes first, so every
/// later sampler (greedy included) only sees the tokens it allows.
fn build_sampler(p: &SamplingParams, grammar: Option<LlamaSampler>) -> LlamaSampler {
    let mut chain = Vec::with_capacity(5);
    chain.extend(grammar);
    if p.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    if p.top_k > 0 {
        chain.push(LlamaSampler::top_k(p.top_k));
    }
    if p.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(p.top_p, 1));
    }
    chain.push(LlamaSampler::temp(p.temperature));
    chain.push(LlamaSampler::dist(p.seed.unwrap_or_else(rand::random)));
    LlamaSampler::chain_simple(chain)
}

#[cfg(test)]
mod tests {
    use super::{mem_available_bytes, plan_eviction, with_one_bos, StepPace, MIN_PROMPT_CHUNK};
    use llama_cpp_2::token::LlamaToken;
    use std::time::Duration;

    #[test]
    fn exactly_one_bos_whoever_renders_it() {
        let t = |ids: &[i32]| ids.iter().map(|&i| LlamaToken(i)).collect::<Vec<_>>();
        let bos = LlamaToken(1);
        // llama.cpp's renderer writes no BOS: one is added.
        assert_eq!(with_one_bos(t(&[5, 6]), bos, true), t(&[1, 5, 6]));
        // A Jinja template wrote `{{ bos_token }}`: none is added.
        assert_eq!(with_one_bos(t(&[1, 5, 6]), bos, true), t(&[1, 5, 6]));
        // A model without BOS gets none.
        assert_eq!(with_one_bos(t(&[5, 6]), bos, false), t(&[5, 6]));
        assert_eq!(with_one_bos(t(&[]), bos, true), t(&[1]));
    }

    #[test]
    fn nothing_is_evicted_when_the_job_fits_already() {
        assert_eq!(plan_eviction(100, 60, &[(1, 20), (2, 20)]), Some(vec![]));
    }

    #[test]
    fn the_fewest_largest_caches_are_evicted_when_that_makes_the_job_fit() {
        // 60 + 10 + 30 + 20 = 120 > 100: dropping the 30-cell cache suffices.
        assert_eq!(plan_eviction(100, 60, &[(0, 10), (1, 30), (2, 20)]), Some(vec![1]));
        // 90 needed: all three must go, largest first.
        assert_eq!(plan_eviction(100, 90, &[(0, 10), (1, 30), (2, 20)]), Some(vec![1, 2]));
        assert_eq!(plan_eviction(100, 100, &[(0, 10), (1, 30), (2, 20)]), Some(vec![1, 2, 0]));
    }

    #[test]
    fn nothing_is_evicted_when_the_job_would_still_not_fit() {
        // Running sequences hold 90; the job needs 20 more: even with every
        // idle cache gone it waits, and the caches stay.
        assert_eq!(plan_eviction(100, 110, &[(0, 10), (1, 30)]), None);
        assert_eq!(plan_eviction(100, 101, &[]), None);
        // Empty caches are never "evicted".
        assert_eq!(plan_eviction(100, 90, &[(0, 0), (1, 30)]), Some(vec![1]));
    }

    #[test]
    fn mem_available_is_read_from_meminfo() {
        let t = "MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   2000000 kB\n";
        assert_eq!(mem_available_bytes(t), Some(2_048_000_000));
        assert_eq!(mem_available_bytes("MemTotal: 1 kB\n"), None);
        assert_eq!(mem_available_bytes("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn prompt_chunks_are_sized_by_the_time_each_token_adds() {
        let ms = Duration::from_millis;
        let mut pace = StepPace::default();
        // Nothing measured yet: the smallest chunk, which then teaches.
        assert_eq!(pace.prompt_tokens_within(ms(60), 512), MIN_PROMPT_CHUNK);
        // 4 streams alone take 40 ms; with 20 prompt tokens 80 ms: 2 ms each.
        pace.record(4, 0, ms(40));
        pace.record(4, 20, ms(80));
        // 100 ms budget - 40 ms of decode = 60 ms: 30 tokens (29 after
        // floating-point rounding).
        assert!((29..=30).contains(&pace.prompt_tokens_within(ms(100), 512)));
        // 60 ms budget - 40 ms = 20 ms, less than the decode's own 40 ms:
        // prompts get the decode's time, 20 tokens.
        assert!((19..=20).contains(&pace.prompt_tokens_within(ms(60), 512)));
        // Never more than the batch has room for.
        assert_eq!(pace.prompt_tokens_within(ms(1000), 100), 100);
        // Decode alone over the budget: prompts still get the decode's time
        // (40 ms: 20 tokens), not just the minimum.
        assert!((19..=20).contains(&pace.prompt_tokens_within(ms(30), 512)));
        let mut slow = StepPace::default();
        slow.record(4, 0, ms(2));
        slow.record(4, 100, ms(1002));
        assert_eq!(slow.prompt_tokens_within(ms(1), 512), MIN_PROMPT_CHUNK, "never below the minimum");
        // A prompt read alone costs no decode step: all of its time is per token.
        let mut alone = StepPace::default();
        alone.record(0, 100, ms(300));
        alone.record(1, 0, ms(12));
        assert!((15..=16).contains(&alone.prompt_tokens_within(ms(60), 512)));
    }

    #[test]
    fn the_pace_follows_the_machine_smoothly() {
        let ms = Duration::from_millis;
        let mut pace = StepPace::default();
        pace.record(2, 10, ms(50));
        let first = pace.prompt_tokens_within(ms(100), 512);
        // One step five times slower (another process took the cores) moves
        // the estimate, but not all the way.
        pace.record(2, 10, ms(250));
        let after = pace.prompt_tokens_within(ms(100), 512);
        assert!(after < first && after > first / 5, "{first} -> {after}");
    }
}
