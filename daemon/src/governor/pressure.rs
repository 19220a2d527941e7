//! The memory governor: follows the cgroup's limits (re-read every second,
//! so a changed limit is followed), watches for memory pressure and acts on
//! it in stages, and reports the daemon's own memory budget.
//!
//! Pressure is seen three ways: a PSI trigger (the cgroup's v2
//! `memory.pressure`, or `$MEMORY_PRESSURE_WATCH` with
//! `$MEMORY_PRESSURE_WRITE` when systemd sets them, or on cgroup v1 the
//! machine's `/proc/pressure/memory`), the cgroup v1
//! `memory.pressure_level` eventfd (`medium`), and, always, a poll of the
//! working set (usage less inactive file cache) against the lower of
//! `memory.max` and `memory.high`. Under pressure the governor first asks
//! every registered [`Shrink`] to keep half, then to empty, then refuses new
//! generations with 503 while the running ones finish; once the working set
//! is below the low watermark and no event came for a while it admits again
//! ([`Stages`]). Owns: the stages, the watcher threads, the budget.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::shrink::Shrink;
use super::Limits;
use crate::config::KvType;
use crate::telemetry::metrics::Metrics;

/// How often the limits and the usage are read.
const TICK: Duration = Duration::from_secs(1);
/// Enter pressure at this share of the limit.
const HIGH_WATERMARK: f64 = 0.90;
/// Leave it below this share (hysteresis).
const LOW_WATERMARK: f64 = 0.80;
/// A PSI or v1 event counts as pressure for this long.
const EVENT_HOLD: Duration = Duration::from_secs(5);
/// The Retry-After of a shed request, in seconds.
pub const RETRY_AFTER_SECS: u32 = 5;
/// PSI trigger when systemd sets none: 200 ms of stall in a 2 s window
/// (systemd's default; a 2 s window is also allowed without privileges).
const PSI_TRIGGER: &[u8] = b"some 200000 2000000";
/// The machine's memory PSI, watched when the cgroup has no pressure file
/// (cgroup v1): on a gateway the whole machine's stalls are the daemon's.
const MACHINE_PSI: &str = "/proc/pressure/memory";

/// Errors of the governor.
#[derive(Debug, thiserror::Error)]
pub enum GovernorError {
    /// New generations are refused until the memory pressure is gone.
    #[error("the daemon is under memory pressure (stage {stage}); new generations are refused until it passes")]
    MemoryPressure { stage: &'static str },
    #[error("memory pressure watch {path}: {source}")]
    Watch { path: PathBuf, source: std::io::Error },
    #[error("$MEMORY_PRESSURE_WRITE is not valid base64")]
    WriteNotBase64,
}

/// How hard the governor is acting, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Normal = 0,
    /// The shrinkers were asked to keep half.
    KeepHalf = 1,
    /// The shrinkers were asked to empty.
    Empty = 2,
    /// New generations are refused.
    Shedding = 3,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Normal => "normal",
            Stage::KeepHalf | Stage::Empty => "shrinking",
            Stage::Shedding => "shedding",
        }
    }

    fn from_u8(v: u8) -> Stage {
        match v {
            1 => Stage::KeepHalf,
            2 => Stage::Empty,
            3 => Stage::Shedding,
            _ => Stage::Normal,
        }
    }

    fn escalate(self) -> Stage {
        match self {
            Stage::Normal => Stage::KeepHalf,
            Stage::KeepHalf => Stage::Empty,
            Stage::Empty | Stage::Shedding => Stage::Shedding,
        }
    }
}

/// One observation of the memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// The working set in bytes, if known.
    pub used: Option<u64>,
    /// The limit the watermarks are taken from, if any.
    pub limit: Option<u64>,
    /// A PSI or v1 event arrived since the last reading.
    pub event: bool,
    /// Pressure forced (a test failpoint).
    pub forced: bool,
}

/// The watermark logic with hysteresis: while over the high watermark (or
/// a recent event with the working set above the low one, or forced) each
/// observation escalates one stage; below the low watermark with no recent
/// event it goes back to normal; in between it stays where it is.
#[derive(Debug, Clone)]
pub struct Stages {
    stage: Stage,
    last_event: Option<Instant>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages { stage: Stage::Normal, last_event: None }
    }
}

impl Stages {
    /// Records a reading; returns the new stage when it changed. (In the
    /// logs of the transitions, a byte count of 0 means unknown or none.)
    pub fn observe(&mut self, r: &Reading, now: Instant) -> Option<Stage> {
        if r.event {
            self.last_event = Some(now);
        }
        let recent = self.last_event.is_some_and(|t| now.duration_since(t) < EVENT_HOLD);
        let ratio = match (r.used, r.limit) {
            (Some(u), Some(l)) if l > 0 => Some(u as f64 / l as f64),
            _ => None,
        };
        let over = r.forced || ratio.is_some_and(|x| x >= HIGH_WATERMARK) || (recent && ratio.is_none_or(|x| x >= LOW_WATERMARK));
        let under = !r.forced && !recent && ratio.is_none_or(|x| x < LOW_WATERMARK);
        let next = if over {
            self.stage.escalate()
        } else if under {
            Stage::Normal
        } else {
            self.stage
        };
        (next != self.stage).then(|| {
            self.stage = next;
            next
        })
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }
}

/// The model's shape, for the KV part of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub n_layer: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_vocab: u32,
}

/// What the budget is computed from.
#[derive(Debug, Clone)]
pub struct BudgetInput {
    pub model_path: PathBuf,
    pub context_size: u32,
    pub kv_type_k: KvType,
    pub kv_type_v: KvType,
    pub slots: u32,
    pub batch_size: u32,
    pub queue_depth: usize,
    /// The response cache's byte budget (0 when it is off).
    pub response_cache: u64,
}

/// The daemon's own memory budget in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    pub model_file: u64,
    pub kv_cache: Option<u64>,
    pub request_buffers: u64,
    pub response_cache: u64,
}

impl Budget {
    /// From the model file's size and, once the model is loaded, its shape.
    pub fn compute(input: &BudgetInput, model_file: u64, shape: Option<ModelShape>) -> Budget {
        let kv_cache = shape.map(|s| u64::from(input.context_size) * kv_bytes_per_cell(&s, input.kv_type_k, input.kv_type_v));
        // Logits of every slot and the batch's embeddings (f32), and each
        // queued request's event channel and prompt (~64 KiB).
        let (vocab, embd) = shape.map_or((0, 0), |s| (u64::from(s.n_vocab), u64::from(s.n_embd)));
        let request_buffers =
            u64::from(input.slots) * vocab * 4 + u64::from(input.batch_size) * embd * 4 + input.queue_depth as u64 * (64 << 10);
        Budget { model_file, kv_cache, request_buffers, response_cache: input.response_cache }
    }

    pub fn total(&self) -> u64 {
        self.model_file + self.kv_cache.unwrap_or(0) + self.request_buffers + self.response_cache
    }
}

/// Bytes of one KV cell: keys and values of every layer, each
/// `n_embd / n_head × n_head_kv` elements of the configured type.
pub fn kv_bytes_per_cell(s: &ModelShape, k: KvType, v: KvType) -> u64 {
    let embd_gqa = u64::from(s.n_embd) / u64::from(s.n_head.max(1)) * u64::from(s.n_head_kv);
    // Bytes per element in 1/32ths: a q8_0 block is 34 bytes for 32, q4_0 18.
    let per32 = |t: KvType| match t {
        KvType::F16 => 64,
        KvType::Q8_0 => 34,
        KvType::Q4_0 => 18,
    };
    u64::from(s.n_layer) * embd_gqa * (per32(k) + per32(v)) / 32
}

/// The memory governor, shared by the service (which asks it before a new
/// generation) and its own task.
pub struct Governor {
    shrinkers: Mutex<Vec<Arc<dyn Shrink>>>,
    stage: AtomicU8,
    metrics: Arc<Metrics>,
    /// Events from the watcher threads, by source.
    psi_events: Arc<AtomicU64>,
    v1_events: Arc<AtomicU64>,
    limits: RwLock<Limits>,
    budget: RwLock<Budget>,
    budget_input: BudgetInput,
    kv_known: AtomicBool,
}

impl Governor {
    /// A governor for these limits (read at start) and budget input; start
    /// it with [`Governor::spawn`].
    pub fn new(limits: Limits, budget_input: BudgetInput, metrics: Arc<Metrics>) -> Arc<Governor> {
        let model_file = std::fs::metadata(&budget_input.model_path).map(|m| m.len()).unwrap_or(0);
        let budget = Budget::compute(&budget_input, model_file, None);
        let g = Governor {
            shrinkers: Mutex::new(Vec::new()),
            stage: AtomicU8::new(Stage::Normal as u8),
            metrics,
            psi_events: Arc::new(AtomicU64::new(0)),
            v1_events: Arc::new(AtomicU64::new(0)),
            limits: RwLock::new(limits),
            budget: RwLock::new(budget),
            budget_input,
            kv_known: AtomicBool::new(false),
        };
        g.report_budget(&budget, "memory budget at start (KV part once the model is loaded)");
        Arc::new(g)
    }

    /// Adds something that gives memory back under pressure.
    pub fn register(&self, s: Arc<dyn Shrink>) {
        tracing::info!(shrinker = s.name(), "registered with the memory governor");
        self.shrinkers.lock().unwrap_or_else(PoisonError::into_inner).push(s);
    }

    /// Whether a new generation may start: refused while shedding.
    pub fn admit_new(&self) -> Result<(), GovernorError> {
        let stage = self.stage();
        if stage == Stage::Shedding {
            self.metrics.shed("memory_pressure");
            return Err(GovernorError::MemoryPressure { stage: stage.as_str() });
        }
        Ok(())
    }

    pub fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Acquire))
    }

    /// The limits as last read.
    pub fn limits(&self) -> Limits {
        self.limits.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn budget(&self) -> Budget {
        *self.budget.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The KV part of the budget, once the model is loaded and its shape known.
    pub fn model_loaded(&self, shape: ModelShape) {
        if self.kv_known.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut b = self.budget.write().unwrap_or_else(PoisonError::into_inner);
        *b = Budget::compute(&self.budget_input, b.model_file, Some(shape));
        let budget = *b;
        drop(b);
        self.report_budget(&budget, "memory budget with the loaded model");
    }

    fn report_budget(&self, b: &Budget, msg: &'static str) {
        self.metrics.memory_budget("model_file", b.model_file);
        self.metrics.memory_budget("kv_cache", b.kv_cache.unwrap_or(0));
        self.metrics.memory_budget("request_buffers", b.request_buffers);
        self.metrics.memory_budget("response_cache", b.response_cache);
        self.metrics.memory_budget("total", b.total());
        let limit = self.limits().pressure_limit();
        tracing::info!(
            model_file_bytes = b.model_file,
            kv_cache_bytes = b.kv_cache.unwrap_or(0),
            request_buffer_bytes = b.request_buffers,
            response_cache_bytes = b.response_cache,
            total_bytes = b.total(),
            limit_bytes = limit.unwrap_or(0),
            "{msg}"
        );
        if let Some(l) = limit.filter(|&l| b.total() as f64 >= l as f64 * LOW_WATERMARK) {
            tracing::warn!(total_bytes = b.total(), limit_bytes = l, "the daemon's own budget is near its memory limit; expect shedding");
        }
    }

    /// Starts the pressure watchers (threads blocked on their triggers) and
    /// the governor task that reads the limits every second. `loaded` gives
    /// the model's shape once it is loaded.
    pub fn spawn(self: &Arc<Self>, loaded: impl Fn() -> Option<ModelShape> + Send + 'static) {
        self.start_watchers();
        let g = Arc::clone(self);
        tokio::spawn(async move {
            let mut stages = Stages::default();
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut psi_seen, mut v1_seen) = (0, 0);
            loop {
                tick.tick().await;
                if !g.kv_known.load(Ordering::Acquire) {
                    if let Some(shape) = loaded() {
                        g.model_loaded(shape);
                    }
                }
                let limits = match tokio::task::spawn_blocking(super::detect).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the limits");
                        continue;
                    }
                };
                let (psi, v1) = (g.psi_events.load(Ordering::Relaxed), g.v1_events.load(Ordering::Relaxed));
                let event = psi != psi_seen || v1 != v1_seen;
                (psi_seen, v1_seen) = (psi, v1);
                g.tick(&mut stages, limits, event);
            }
        });
    }

    /// One observation: follows changed limits, notices OOM kills, moves
    /// the stages and acts on a change.
    fn tick(&self, stages: &mut Stages, limits: Limits, event: bool) {
        let previous = std::mem::replace(&mut *self.limits.write().unwrap_or_else(PoisonError::into_inner), limits.clone());
        if (previous.memory_max, previous.memory_high) != (limits.memory_max, limits.memory_high) {
            tracing::info!(
                memory_max_bytes = limits.memory_max.unwrap_or(0),
                memory_high_bytes = limits.memory_high.unwrap_or(0),
                was_max_bytes = previous.memory_max.unwrap_or(0),
                was_high_bytes = previous.memory_high.unwrap_or(0),
                "memory limit changed"
            );
        }
        if let (Some(before), Some(now)) = (previous.oom_kills, limits.oom_kills) {
            if now > before {
                tracing::error!(oom_kills = now - before, cgroup = limits.cgroup, "the OOM killer acted in the daemon's cgroup");
            }
        }
        let forced = forced();
        // Without a cgroup limit the machine's memory is the limit: what is
        // not available of it is in use.
        let (used, limit) = match limits.pressure_limit() {
            Some(l) => (limits.working_set(), Some(l)),
            None => std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| machine_memory(&m))
                .map_or((None, None), |(u, t)| (Some(u), Some(t))),
        };
        let reading = Reading { used, limit, event, forced };
        if forced {
            self.metrics.pressure_event("forced");
        } else if let (Some(u), Some(l)) = (reading.used, reading.limit) {
            if u as f64 >= l as f64 * HIGH_WATERMARK {
                self.metrics.pressure_event("usage");
            }
        }
        let Some(stage) = stages.observe(&reading, Instant::now()) else { return };
        let before = self.stage();
        self.stage.store(stage as u8, Ordering::Release);
        self.metrics.memory_pressure_stage(stage as u8);
        let freed = match stage {
            Stage::KeepHalf => self.shrink(0.5),
            Stage::Empty => self.shrink(0.0),
            Stage::Normal => {
                self.shrinkers.lock().unwrap_or_else(PoisonError::into_inner).iter().for_each(|s| s.relax());
                0
            }
            Stage::Shedding => 0,
        };
        let fields = (reading.used, reading.limit, event, forced);
        match stage {
            Stage::Normal => {
                tracing::info!(
                    from = before.as_str(),
                    working_set_bytes = fields.0.unwrap_or(0),
                    limit_bytes = fields.1.unwrap_or(0),
                    "memory pressure over: admitting new generations"
                )
            }
            Stage::Shedding => tracing::warn!(
                working_set_bytes = fields.0.unwrap_or(0),
                limit_bytes = fields.1.unwrap_or(0),
                event = fields.2,
                forced = fields.3,
                retry_after_secs = RETRY_AFTER_SECS,
                "memory pressure persists after shrinking: refusing new generations (503) while running ones finish"
            ),
            Stage::KeepHalf | Stage::Empty => tracing::warn!(
                stage = ?stage,
                freed_bytes = freed,
                working_set_bytes = fields.0.unwrap_or(0),
                limit_bytes = fields.1.unwrap_or(0),
                event = fields.2,
                forced = fields.3,
                "memory pressure: asked the caches to give memory back"
            ),
        }
    }

    /// Asks every shrinker to keep `keep` of what it holds; the bytes freed.
    fn shrink(&self, keep: f64) -> u64 {
        let shrinkers = self.shrinkers.lock().unwrap_or_else(PoisonError::into_inner).clone();
        shrinkers
            .iter()
            .map(|s| {
                let freed = s.shrink(keep);
                tracing::info!(shrinker = s.name(), keep, freed_bytes = freed, "shrunk");
                freed
            })
            .sum()
    }

    /// The PSI trigger and the v1 pressure_level eventfd, each on a thread
    /// of its own; a watch that cannot be set up is logged and the poll of
    /// the usage remains.
    fn start_watchers(&self) {
        let limits = self.limits();
        match psi_watch(&limits) {
            Ok(Some((path, write))) => {
                let count = Arc::clone(&self.psi_events);
                let metrics = Arc::clone(&self.metrics);
                spawn_watcher("psi-watch", move || watch_psi(&path, &write, &count, &metrics));
            }
            Ok(None) => tracing::info!(cgroup = limits.cgroup, "no PSI memory trigger here; the usage poll watches the memory"),
            Err(e) => tracing::warn!(error = %e, "memory pressure watch not usable; the usage poll watches the memory"),
        }
        if let (Some(dir), "v1") = (limits.memory_dir.clone(), limits.cgroup) {
            let count = Arc::clone(&self.v1_events);
            let metrics = Arc::clone(&self.metrics);
            spawn_watcher("v1-pressure", move || watch_v1(&dir, &count, &metrics));
        }
    }
}

fn spawn_watcher(name: &str, f: impl FnOnce() -> Result<(), GovernorError> + Send + 'static) {
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        if let Err(e) = f() {
            tracing::warn!(error = %e, "memory pressure watch stopped; the usage poll still watches the memory");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, watcher = name, "cannot start a memory pressure watcher");
    }
}

/// Test builds: pressure is forced while the file named by the
/// `memory-pressure` failpoint exists.
fn forced() -> bool {
    #[cfg(feature = "failpoints")]
    {
        let path: Option<String> = (|| {
            fail::fail_point!("memory-pressure", |p| p);
            None
        })();
        if let Some(p) = path {
            return Path::new(&p).exists();
        }
    }
    false
}

/// Where to register a PSI trigger and what to write: systemd's
/// `$MEMORY_PRESSURE_WATCH` (`/dev/null`: off) with its base64
/// `$MEMORY_PRESSURE_WRITE`, else the cgroup's v2 `memory.pressure`, else
/// the machine's `/proc/pressure/memory`.
fn psi_watch(limits: &Limits) -> Result<Option<(PathBuf, Vec<u8>)>, GovernorError> {
    if let Some(path) = std::env::var_os("MEMORY_PRESSURE_WATCH") {
        let path = PathBuf::from(path);
        if path == Path::new("/dev/null") {
            return Ok(None);
        }
        let write = match std::env::var("MEMORY_PRESSURE_WRITE") {
            Ok(b64) => decode_base64(&b64).ok_or(GovernorError::WriteNotBase64)?,
            Err(_) => Vec::new(),
        };
        return Ok(Some((path, write)));
    }
    let cgroup = limits.memory_dir.as_ref().map(|d| d.join("memory.pressure")).filter(|p| limits.cgroup == "v2" && p.exists());
    let file = cgroup.or_else(|| Some(PathBuf::from(MACHINE_PSI)).filter(|p| p.exists()));
    Ok(file.map(|p| (p, PSI_TRIGGER.to_vec())))
}

/// Blocks on a PSI trigger (POLLPRI), or on a FIFO systemd hands over
/// (POLLIN), counting each event.
fn watch_psi(path: &Path, write: &[u8], count: &AtomicU64, metrics: &Metrics) -> Result<(), GovernorError> {
    let err = |source| GovernorError::Watch { path: path.to_owned(), source };
    let fifo = std::fs::metadata(path).map_err(err)?.file_type().is_fifo();
    let mut f = OpenOptions::new().read(true).write(!fifo).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path).map_err(err)?;
    if !write.is_empty() && !fifo {
        // The kernel reads the trigger up to a NUL in the bytes written
        // (it overwrites the last byte with one): send it with its NUL.
        let mut trigger = write.to_vec();
        if trigger.last() != Some(&0) {
            trigger.push(0);
        }
        f.write_all(&trigger).map_err(err)?;
    }
    let shown = String::from_utf8_lossy(write).trim_end_matches('\0').to_owned();
    tracing::info!(path = %path.display(), trigger = %shown, "memory pressure: PSI trigger registered");
    let events = if fifo { libc::POLLIN } else { libc::POLLPRI };
    loop {
        let mut pfd = libc::pollfd { fd: f.as_raw_fd(), events, revents: 0 };
        // SAFETY: one valid pollfd for a file this function owns.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err(e));
        }
        if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(err(std::io::Error::other("the trigger was dropped")));
        }
        if fifo {
            let mut buf = [0u8; 256];
            let _ = f.read(&mut buf);
        }
        count.fetch_add(1, Ordering::Relaxed);
        metrics.pressure_event("psi");
        tracing::debug!(path = %path.display(), "PSI memory pressure event");
    }
}

/// Registers an eventfd for the v1 cgroup's `memory.pressure_level`
/// (`medium`: the kernel reclaims hard) and counts its events.
fn watch_v1(dir: &Path, count: &AtomicU64, metrics: &Metrics) -> Result<(), GovernorError> {
    let level_path = dir.join("memory.pressure_level");
    let control_path = dir.join("cgroup.event_control");
    let level = std::fs::File::open(&level_path).map_err(|source| GovernorError::Watch { path: level_path.clone(), source })?;
    // SAFETY: eventfd takes no pointers; the fd is owned below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(GovernorError::Watch { path: control_path, source: std::io::Error::last_os_error() });
    }
    // SAFETY: efd is a fresh, valid descriptor nothing else owns.
    let mut efile: std::fs::File = unsafe { std::os::fd::FromRawFd::from_raw_fd(efd) };
    let line = format!("{} {} medium", efile.as_raw_fd(), level.as_raw_fd());
    OpenOptions::new()
        .write(true)
        .open(&control_path)
        .and_then(|mut c| c.write_all(line.as_bytes()))
        .map_err(|source| GovernorError::Watch { path: control_path.clone(), source })?;
    tracing::info!(path = %level_path.display(), level = "medium", "memory pressure: cgroup v1 pressure_level event registered");
    let mut buf = [0u8; 8];
    loop {
        efile.read_exact(&mut buf).map_err(|source| GovernorError::Watch { path: control_path.clone(), source })?;
        count.fetch_add(1, Ordering::Relaxed);
        metrics.pressure_event("cgroup_v1");
        tracing::debug!(events = u64::from_ne_bytes(buf), "cgroup v1 memory pressure event");
    }
}

/// (in use, total) bytes of the machine from /proc/meminfo: MemTotal less
/// MemAvailable, and MemTotal.
fn machine_memory(meminfo: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()).map(|k| k * 1024)
    };
    let (total, available) = (kib("MemTotal:")?, kib("MemAvailable:")?);
    Some((total.saturating_sub(available), total))
}

/// Standard base64 (with or without padding), as systemd writes
/// `$MEMORY_PRESSURE_WRITE`; `None` on any other character.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim().trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64, base: Instant) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn over_the_high_watermark_escalates_one_stage_per_reading_and_recovers_below_the_low_one() {
        let t0 = Instant::now();
        let mut s = Stages::default();
        let r = |used| Reading { used: Some(used), limit: Some(1000), event: false, forced: false };
        assert_eq!(s.observe(&r(850), t0), None, "between the watermarks from normal: stays normal");
        assert_eq!(s.observe(&r(900), at(1000, t0)), Some(Stage::KeepHalf));
        assert_eq!(s.observe(&r(950), at(2000, t0)), Some(Stage::Empty));
        assert_eq!(s.observe(&r(950), at(3000, t0)), Some(Stage::Shedding));
        assert_eq!(s.observe(&r(990), at(4000, t0)), None, "shedding is the last stage");
        // Hysteresis: below the high watermark but above the low one, it keeps shedding.
        assert_eq!(s.observe(&r(850), at(5000, t0)), None);
        assert_eq!(s.stage(), Stage::Shedding);
        assert_eq!(s.observe(&r(799), at(6000, t0)), Some(Stage::Normal));
        assert_eq!(s.observe(&r(850), at(7000, t0)), None, "and does not re-enter until the high watermark");
    }

    #[test]
    fn an_event_counts_for_a_while_but_only_above_the_low_watermark() {
        let t0 = Instant::now();
        let mut s = Stages::default();
        let ev = |used, event| Reading { used: Some(used), limit: Some(1000), event, forced: false };
        // Page cache reclaim with a small working set is not pressure.
        assert_eq!(s.observe(&ev(500, true), t0), None);
        // With the working set above the low watermark it is.
        assert_eq!(s.observe(&ev(850, true), at(100, t0)), Some(Stage::KeepHalf));
        assert_eq!(s.observe(&ev(850, false), at(1000, t0)), Some(Stage::Empty), "the event still holds");
        // Below the low watermark but the event is recent: no recovery yet.
        assert_eq!(s.observe(&ev(700, false), at(2000, t0)), None);
        assert_eq!(s.observe(&ev(700, false), at(100 + EVENT_HOLD.as_millis() as u64, t0)), Some(Stage::Normal));
        // Without a known limit an event alone is pressure.
        let mut s = Stages::default();
        assert_eq!(s.observe(&Reading { used: None, limit: None, event: true, forced: false }, t0), Some(Stage::KeepHalf));
    }

    #[test]
    fn forced_pressure_sheds_and_lifting_it_recovers() {
        let t0 = Instant::now();
        let mut s = Stages::default();
        let f = |forced| Reading { used: Some(10), limit: None, event: false, forced };
        let stages: Vec<_> = (0..4).filter_map(|i| s.observe(&f(true), at(i * 1000, t0))).collect();
        assert_eq!(stages, vec![Stage::KeepHalf, Stage::Empty, Stage::Shedding]);
        assert_eq!(s.observe(&f(false), at(5000, t0)), Some(Stage::Normal));
        // No limit and no event: never pressure.
        assert_eq!(s.observe(&f(false), at(6000, t0)), None);
    }

    struct Counting(std::sync::Mutex<Vec<f64>>);

    impl Shrink for Counting {
        fn name(&self) -> &'static str {
            "test_cache"
        }
        fn shrink(&self, keep: f64) -> u64 {
            self.0.lock().expect("lock").push(keep);
            100
        }
        /// Recorded as 1.0: "keep everything, grow again".
        fn relax(&self) {
            self.0.lock().expect("lock").push(1.0);
        }
    }

    #[test]
    fn the_governor_shrinks_then_sheds_then_admits_again() {
        let metrics = Arc::new(Metrics::new());
        let input = BudgetInput {
            model_path: PathBuf::from("/nonexistent"),
            context_size: 4096,
            kv_type_k: KvType::Q8_0,
            kv_type_v: KvType::Q8_0,
            slots: 4,
            batch_size: 512,
            queue_depth: 16,
            response_cache: 8 << 20,
        };
        let limits_of = |current: u64, max: u64| Limits {
            affinity_cpus: 2,
            cpu_quota: None,
            memory_max: Some(max),
            cgroup: "v1",
            memory_current: Some(current),
            memory_high: None,
            inactive_file: Some(0),
            oom_kills: Some(0),
            memory_dir: None,
        };
        let limits = |current| limits_of(current, 1000);
        let g = Governor::new(limits(0), input, Arc::clone(&metrics));
        let cache = Arc::new(Counting(std::sync::Mutex::new(Vec::new())));
        g.register(cache.clone());
        let mut stages = Stages::default();
        for _ in 0..3 {
            assert!(g.admit_new().is_ok(), "not shedding before the caches were asked");
            g.tick(&mut stages, limits(950), false);
        }
        assert_eq!(*cache.0.lock().expect("lock"), vec![0.5, 0.0], "keep half, then empty, before shedding");
        assert!(matches!(g.admit_new(), Err(GovernorError::MemoryPressure { stage: "shedding" })));
        // Still above the low watermark: shedding holds (hysteresis).
        g.tick(&mut stages, limits(850), false);
        assert_eq!(g.stage(), Stage::Shedding);
        // The limit is raised at run time: read on the next tick, followed.
        g.tick(&mut stages, limits_of(850, 2000), false);
        assert_eq!(g.stage(), Stage::Normal);
        assert_eq!(g.limits().memory_max, Some(2000));
        assert!(g.admit_new().is_ok());
        assert_eq!(*cache.0.lock().expect("lock"), vec![0.5, 0.0, 1.0], "told it may grow again");
        let snap = crate::telemetry::metrics::Snapshot {
            model_state: "ready",
            inference_threads: 2,
            queued: 0,
            rss_bytes: None,
            cgroup: "v1",
            cgroup_memory_current: None,
            cgroup_memory_limit: None,
            cache: crate::cache::Stats::default(),
        };
        let text = metrics.render(&snap, crate::telemetry::metrics::Format::Text).expect("render");
        assert!(text.contains("edgeai_shed_requests_total{reason=\"memory_pressure\"} 1"), "{text}");
        assert!(text.contains("edgeai_memory_pressure_events_total{source=\"usage\"} 3"), "{text}");
    }

    #[test]
    fn the_budget_counts_model_kv_and_buffers() {
        // SmolLM2-135M: 30 layers, 576 embd, 9 heads, 3 KV heads, 49152 tokens.
        let shape = ModelShape { n_layer: 30, n_embd: 576, n_head: 9, n_head_kv: 3, n_vocab: 49152 };
        assert_eq!(kv_bytes_per_cell(&shape, KvType::F16, KvType::F16), 30 * 192 * 4);
        assert_eq!(kv_bytes_per_cell(&shape, KvType::Q8_0, KvType::Q8_0), 30 * 192 * 34 * 2 / 32);
        let input = BudgetInput {
            model_path: PathBuf::new(),
            context_size: 4096,
            kv_type_k: KvType::F16,
            kv_type_v: KvType::F16,
            slots: 4,
            batch_size: 512,
            queue_depth: 16,
            response_cache: 8 << 20,
        };
        let b = Budget::compute(&input, 100 << 20, Some(shape));
        assert_eq!(b.kv_cache, Some(4096 * 30 * 192 * 4));
        assert_eq!(b.request_buffers, 4 * 49152 * 4 + 512 * 576 * 4 + 16 * (64 << 10));
        assert_eq!(b.total(), (100 << 20) + 4096 * 30 * 192 * 4 + b.request_buffers + (8 << 20));
        assert_eq!(Budget::compute(&input, 7, None).kv_cache, None, "unknown before the model is loaded");
    }

    #[test]
    fn without_a_cgroup_limit_the_machine_is_the_limit() {
        let meminfo = "MemTotal:        4000000 kB\nMemFree:          100000 kB\nMemAvailable:     300000 kB\nBuffers: 1 kB\n";
        assert_eq!(machine_memory(meminfo), Some((3_700_000 * 1024, 4_000_000 * 1024)));
        assert_eq!(machine_memory("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn systemd_base64_decodes() {
        // "some 200000 2000000", as systemd writes MEMORY_PRESSURE_WRITE.
        assert_eq!(decode_base64("c29tZSAyMDAwMDAgMjAwMDAwMA==").as_deref(), Some(&b"some 200000 2000000"[..]));
        assert_eq!(decode_base64("c29tZQ").as_deref(), Some(&b"some"[..]));
        assert_eq!(decode_base64("no spaces!"), None);
    }
}
