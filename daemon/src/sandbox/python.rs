//! python: runs Dify Python code nodes (`def main(...) -> dict`) in the
//! system `python3`, one fresh confined process per run, never reused. It
//! owns the probe of the interpreter (`probe`), the confinement of a process
//! (`confine`: landlock, rlimits; `seccomp`: the system-call allowlist), the
//! pool of processes started ahead and waiting for a request, and the
//! exchange with one process (request on stdin, one reply line on the saved
//! stdout, prints on stderr: `process`) and what its reply or its end
//! means (`reply`). The runner script is `python/runner.py`.
//!
//! Each process runs `python3 -I -B -c RUNNER` (the real executable found by
//! the probe, not a shim) with a cleared environment, its own scratch
//! directory as cwd, and in this order between fork and exec: its own
//! session and process group, SIGKILL when the spawning thread dies (a
//! dedicated thread spawns, so it lives as long as the pool), oom_score_adj
//! 1000 (the runs share edgeaid's cgroup: a run dies first, not the daemon), `RLIMIT_NOFILE`
//! 32, `RLIMIT_FSIZE` 16 MB, `RLIMIT_CORE` 0, every descriptor but stdio
//! close-on-exec (a library's fopen without `e` must not hand code an open
//! file), every capability dropped
//! (bounding set, ambient, all sets: only matters when edgeaid runs as
//! root), no_new_privs, the landlock domain, and the seccomp filter last.
//! `-I` keeps the user site and `PYTHON*` variables out; `site` is imported,
//! so modules installed system-wide (numpy where the image has it) import.
//! A run's `RLIMIT_AS` (its memory limit) and `RLIMIT_CPU` (timeout + 1 s,
//! SIGKILL a second later) are set by the parent with `prlimit` when it
//! hands the process its request; the process cannot change them.
//!
//! Landlock (every right the kernel's ABI knows is handled, so denied unless
//! granted): read files and list directories under the interpreter's
//! prefixes and `sys.path`, `/usr`, `/lib`, `/lib64`; read
//! `/etc/ld.so.cache`, `/etc/localtime`, `/dev/null`, `/dev/urandom`,
//! `/dev/zero`; read and execute only the interpreter binary and its ELF
//! loader (so `os.execv("/bin/sh")` fails); read, write, create and remove
//! in the run's scratch directory. ABI 4+: TCP bind and connect denied.
//! ABI 6+: signals and abstract unix sockets scoped to the process. Start
//! refuses if a protected path (store, keys, config) lies under a readable
//! path. `/proc`, `/sys`, `/etc` (but the two files), `/home`, `/root`,
//! `/tmp` and the state directory are not readable.
//!
//! Seccomp allowlist (anything else fails with EPERM, a `PermissionError`):
//! file calls (open/read/write/stat/getdents/mkdir/unlink/rename/fcntl/dup/
//! pipe... — landlock decides which files), memory (brk, mmap, mprotect...),
//! the process's own state (getpid, signals to its own handlers, limits read
//! only: `prlimit64` with no new limit), threads (`clone` with
//! `CLONE_THREAD` only; `clone3` gets ENOSYS so glibc uses `clone`), time,
//! `getrandom`, `ioctl` for six terminal/descriptor requests, and `execve`
//! (landlock limits it to the interpreter). Not allowed: `socket`,
//! `socketpair`, fork/vfork/clone without `CLONE_THREAD`, `kill`/`tgkill`,
//! `ptrace`, `prctl` (but naming its own threads), `setrlimit`, `mount`, `unshare`, `setns`, `bpf`,
//! `keyctl`, `memfd_create` and everything else unlisted.
//!
//! The import guard in the runner (ctypes, subprocess, socket,
//! multiprocessing, ssl, pty; `os.system`, `os.fork`, `os.exec*`,
//! `os.spawn*`, `os.kill`) only gives clear messages; the OS sandbox above
//! holds when it is bypassed (tests show it). Not confined: CPU time is
//! bounded only by `RLIMIT_CPU` and the wall-clock timeout (no cgroup);
//! memory by `RLIMIT_AS` (address space, not resident memory); native code
//! loaded by a bypass of the guard still runs, inside the same confinement;
//! a process may re-exec the interpreter (or the loader with a readable
//! binary) inside the same confinement.

use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use landlock::ABI;
use seccompiler::BpfProgram;
use serde_json::{Map, Value};

use super::{RunLimits, SandboxError};
use process::{exchange, finish, spawn, Overflow, Proc};
use reply::outcome_of;

mod confine;
mod probe;
mod process;
mod reply;
mod seccomp;

/// The script every process runs (see its header).
const RUNNER: &str = include_str!("python/runner.py");

/// Modules the runner's guard refuses to import (clear messages; the OS
/// sandbox is the barrier). Not listed in [`PythonInfo::modules`].
pub const FORBIDDEN_MODULES: &[&str] = &[
    "ctypes",
    "_ctypes",
    "subprocess",
    "_posixsubprocess",
    "socket",
    "_socket",
    "multiprocessing",
    "_multiprocessing",
    "ssl",
    "_ssl",
    "pty",
];

/// `os` functions the runner replaces with a refusal.
const FORBIDDEN_OS: &[&str] = &[
    "system",
    "popen",
    "fork",
    "forkpty",
    "execv",
    "execve",
    "execl",
    "execle",
    "execlp",
    "execlpe",
    "execvp",
    "execvpe",
    "spawnv",
    "spawnve",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnlpe",
    "spawnvp",
    "spawnvpe",
    "posix_spawn",
    "posix_spawnp",
    "kill",
    "killpg",
];

/// Most of a run's stderr (its prints) kept for diagnostics.
const STDERR_KEPT: usize = 64 * 1024;
/// How long a process that closed its output may take to exit by itself.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// `[code]`'s Python settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonConfig {
    /// The interpreter; `None` finds `python3` on PATH. Either way the real
    /// executable (`sys.executable`, not a shim script) is what runs.
    pub interpreter: Option<PathBuf>,
    /// Per-run scratch directories are made under it (the only writable
    /// place a run sees; removed after the run).
    pub scratch_dir: PathBuf,
    /// Processes kept started and waiting for a run (0: start per call).
    pub pool_size: usize,
    /// Paths that must stay unreadable to code (the store, key files, the
    /// config): start refuses if any lies under a path the sandbox lets
    /// code read.
    pub protected: Vec<PathBuf>,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonInfo {
    pub executable: PathBuf,
    /// e.g. `3.11.2`.
    pub version: String,
    /// Top-level modules importable offline (stdlib + site-packages).
    pub modules: Arc<BTreeSet<String>>,
    /// The landlock ABI in use.
    pub landlock_abi: u32,
    /// What code may read (everything else is denied).
    pub read_paths: Vec<PathBuf>,
}

/// The Python sandbox: the probe's findings and the pool.
pub struct Python {
    info: PythonInfo,
    shared: Arc<Shared>,
    spawner: mpsc::Sender<Job>,
}

/// What spawning needs, shared with the spawner thread.
struct Shared {
    executable: PathBuf,
    view: confine::ReadView,
    abi: ABI,
    /// Must outlive every `Confinement` (they point into it).
    filter: BpfProgram,
    scratch_dir: PathBuf,
    pool_size: usize,
    pool: Mutex<VecDeque<Proc>>,
    /// Pool spawns asked for and not done yet.
    pending: AtomicUsize,
}

enum Job {
    /// Start one process into the pool.
    Fill,
    /// Start one process for a run waiting now.
    Now(tokio::sync::oneshot::Sender<Result<Proc, String>>),
}

impl Python {
    /// Probes the interpreter, checks landlock and the protected paths,
    /// makes the scratch directory, proves one confined run works, and
    /// starts the pool. Blocking.
    pub fn start(config: PythonConfig) -> Result<Python, SandboxError> {
        let interpreter = config.interpreter.clone().unwrap_or_else(|| PathBuf::from("python3"));
        let found = probe::probe(&interpreter).map_err(SandboxError::Unavailable)?;
        let abi_version = confine::landlock_abi();
        if abi_version < 1 {
            return Err(SandboxError::Unavailable(
                "Python code nodes need landlock (Linux 5.13+ with landlock in the lsm= list); this kernel has none".into(),
            ));
        }
        let view = probe::read_view(&found);
        let scratch_dir = make_scratch_dir(&config.scratch_dir).map_err(SandboxError::Unavailable)?;
        probe::check_protected(&view, &scratch_dir, &config.protected).map_err(SandboxError::Unavailable)?;
        remove_stale_runs(&scratch_dir);
        let filter = seccomp::program().map_err(SandboxError::Unavailable)?;
        let mut modules = found.modules;
        for m in FORBIDDEN_MODULES {
            modules.remove(*m);
        }
        let info = PythonInfo {
            executable: found.executable.clone(),
            version: found.version,
            modules: Arc::new(modules),
            landlock_abi: u32::try_from(abi_version).unwrap_or(0),
            read_paths: view.read.iter().chain(&view.exec).cloned().collect(),
        };
        let shared = Arc::new(Shared {
            executable: found.executable,
            view,
            abi: ABI::from(abi_version),
            filter,
            scratch_dir,
            pool_size: config.pool_size,
            pool: Mutex::new(VecDeque::new()),
            pending: AtomicUsize::new(0),
        });
        smoke_test(&shared)
            .map_err(|e| SandboxError::Unavailable(format!("the sandboxed {} does not run: {e}", shared.executable.display())))?;
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("python-spawner".into())
            .spawn(move || spawner(&thread_shared, rx))
            .map_err(|e| SandboxError::Unavailable(format!("starting the python spawner thread: {e}")))?;
        let python = Python { info, shared, spawner: tx };
        python.fill_pool();
        tracing::info!(
            executable = %python.info.executable.display(),
            version = %python.info.version,
            landlock_abi = python.info.landlock_abi,
            pool_size = config.pool_size,
            "python code sandbox ready"
        );
        Ok(python)
    }

    pub fn info(&self) -> &PythonInfo {
        &self.info
    }

    /// Runs `main(**inputs)` in a fresh confined process and returns the
    /// dict it returned.
    pub async fn run(&self, code: &str, inputs: &Map<String, Value>, limits: &RunLimits) -> Result<Map<String, Value>, SandboxError> {
        let started = Instant::now();
        let (mut proc, warm) = self.take().await?;
        let request = serde_json::to_vec(&serde_json::json!({
            "code": code,
            "inputs": inputs,
            "forbidden": FORBIDDEN_MODULES,
            "forbidden_os": FORBIDDEN_OS,
            "max_output": limits.max_output_bytes,
        }))
        .map_err(|e| SandboxError::Internal(format!("encoding the request: {e}")))?;
        let cpu_secs = limits.timeout.as_secs_f64().ceil() as u64 + 1;
        if let Err(e) = confine::set_run_limits(proc.pid, limits.memory_bytes, cpu_secs) {
            finish(proc, Duration::ZERO).await;
            return Err(SandboxError::Internal(format!("setting the run's limits: {e}")));
        }
        let exchange = match proc.pipes() {
            Ok((stdin, stdout, stderr)) => exchange(stdin, stdout, stderr, request, limits.max_output_bytes),
            Err(e) => {
                finish(proc, Duration::ZERO).await;
                return Err(SandboxError::Internal(format!("the python process's pipes: {e}")));
            }
        };
        let outcome = tokio::time::timeout(limits.timeout, exchange).await;
        let grace = if matches!(outcome, Ok(Ok(_))) { EXIT_GRACE } else { Duration::ZERO };
        let exit = finish(proc, grace).await;
        let result = match outcome {
            Err(_) => Err(SandboxError::Timeout(limits.timeout)),
            Ok(Err(Overflow)) => Err(SandboxError::OutputTooLarge(limits.max_output_bytes)),
            Ok(Ok((stdout, stderr))) => outcome_of(&stdout, &stderr, exit, limits, cpu_secs),
        };
        tracing::debug!(warm, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, ok = result.is_ok(), "python run");
        result
    }

    /// A waiting process from the pool, or a new one; asks for the pool to
    /// be refilled either way. The bool says whether it came from the pool.
    async fn take(&self) -> Result<(Proc, bool), SandboxError> {
        loop {
            let next = lock(&self.shared.pool).pop_front();
            let Some(mut proc) = next else { break };
            if proc.alive() {
                self.fill_pool();
                return Ok((proc, true));
            }
            tracing::warn!(pid = proc.pid, "a waiting python process died; discarding it");
            finish(proc, Duration::ZERO).await;
        }
        self.fill_pool();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Now(tx))?;
        let proc = rx
            .await
            .map_err(|_| SandboxError::Internal("the python spawner thread is gone".into()))?
            .map_err(|e| SandboxError::Internal(format!("starting python: {e}")))?;
        Ok((proc, false))
    }

    /// Asks the spawner for the processes the pool lacks.
    fn fill_pool(&self) {
        let shared = &self.shared;
        let have = lock(&shared.pool).len() + shared.pending.load(Ordering::SeqCst);
        for _ in have..shared.pool_size {
            shared.pending.fetch_add(1, Ordering::SeqCst);
            if self.send(Job::Fill).is_err() {
                shared.pending.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }

    fn send(&self, job: Job) -> Result<(), SandboxError> {
        self.spawner.send(job).map_err(|_| SandboxError::Internal("the python spawner thread is gone".into()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The thread that starts every process (PR_SET_PDEATHSIG follows the
/// spawning thread, so it must live as long as the pool). When `Python` is
/// dropped it ends, and the waiting processes with it.
fn spawner(shared: &Shared, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Fill => {
                match spawn(shared) {
                    Ok(proc) => lock(&shared.pool).push_back(proc),
                    Err(e) => tracing::warn!(error = %e, "starting a python process for the pool failed"),
                }
                shared.pending.fetch_sub(1, Ordering::SeqCst);
            }
            Job::Now(reply) => {
                if let Err(Ok(proc)) = reply.send(spawn(shared)) {
                    drop(proc);
                }
            }
        }
    }
    lock(&shared.pool).clear();
}

/// Makes the scratch directory (0700) and returns its resolved path.
fn make_scratch_dir(dir: &Path) -> Result<PathBuf, String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the code scratch directory {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))?;
    std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Removes run directories a previous daemon left (only names that are
/// UUIDs: a misconfigured scratch dir loses nothing else).
fn remove_stale_runs(scratch_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch_dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| uuid::Uuid::parse_str(n).is_ok()) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "removing a stale code scratch directory failed");
            }
        }
    }
}

/// One trivial confined run, synchronously, before the daemon relies on
/// the sandbox: proves the interpreter starts under landlock and seccomp.
fn smoke_test(shared: &Shared) -> Result<(), String> {
    let mut proc = spawn(shared)?;
    confine::set_run_limits(proc.pid, 1 << 30, 30).map_err(|e| format!("setting limits: {e}"))?;
    let request = serde_json::json!({
        "code": "def main(x):\n    return {'x': x}\n",
        "inputs": {"x": 1},
        "forbidden": FORBIDDEN_MODULES,
        "forbidden_os": FORBIDDEN_OS,
        "max_output": 1024,
    });
    if let Some(mut stdin) = proc.child.stdin.take() {
        // Too small to block; a failure shows in the reply.
        let _ = stdin.write_all(request.to_string().as_bytes());
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    if let Some(mut s) = proc.child.stdout.take() {
        let _ = s.read_to_end(&mut out);
    }
    if let Some(s) = proc.child.stderr.take() {
        let _ = s.take(STDERR_KEPT as u64).read_to_end(&mut err);
    }
    proc.finish(EXIT_GRACE);
    let reply = String::from_utf8_lossy(&out);
    if reply.trim() == r#"{"ok": {"x": 1}}"# {
        Ok(())
    } else {
        Err(format!("reply {:?}, stderr: {}", reply.trim(), String::from_utf8_lossy(&err).trim()))
    }
}
