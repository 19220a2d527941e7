//! python: runs Dify Python code nodes (`def main(...) -> dict`) in the
//! system `python3`, one fresh confined process per run, never reused. It
//! owns the probe of the interpreter (`probe`), the confinement of a process
//! (`confine`: landlock, rlimits; `seccomp`: the system-call allowlist), the
//! pool of processes started ahead and waiting for a request, and the
//! exchange with one process (request on stdin, one reply line on the saved
//! stdout, prints on stderr). The runner script is `python/runner.py`.
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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use landlock::ABI;
use seccompiler::BpfProgram;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{RunLimits, SandboxError};

mod confine;
mod probe;
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

/// One started, confined process waiting for its request.
struct Proc {
    child: Child,
    pid: libc::pid_t,
    dir: PathBuf,
    reaped: Option<Exit>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
struct Exit {
    status: libc::c_int,
    /// User + system CPU seconds.
    cpu_secs: f64,
}

/// Starts one confined process in a fresh scratch directory.
fn spawn(shared: &Shared) -> Result<Proc, String> {
    let dir = shared.scratch_dir.join(uuid::Uuid::new_v4().to_string());
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let spawned = (|| {
        let ruleset = confine::ruleset(shared.abi, &shared.view, &dir).map_err(|e| format!("the landlock ruleset: {e}"))?;
        let confinement = confine::Confinement::new(ruleset, &shared.filter)?;
        let mut command = Command::new(&shared.executable);
        command
            .args(["-I", "-B", "-c", RUNNER])
            .env_clear()
            .env("LANG", "C.UTF-8")
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: `apply` makes only async-signal-safe system calls on memory
        // prepared before the fork (`shared.filter` outlives the spawn).
        unsafe {
            command.pre_exec(move || confinement.apply());
        }
        command.spawn().map_err(|e| format!("spawning {}: {e}", shared.executable.display()))
    })();
    match spawned {
        Ok(child) => {
            let pid = libc::pid_t::try_from(child.id()).map_err(|_| "a pid out of range".to_owned())?;
            Ok(Proc { child, pid, dir, reaped: None })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

type Pipes = (tokio::process::ChildStdin, tokio::process::ChildStdout, tokio::process::ChildStderr);

impl Proc {
    /// Whether it still waits (reaps it if it died).
    fn alive(&mut self) -> bool {
        self.try_reap();
        self.reaped.is_none()
    }

    fn try_reap(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        if let Some(exit) = wait4(self.pid, libc::WNOHANG) {
            self.reaped = Some(exit);
        }
    }

    fn pipes(&mut self) -> std::io::Result<Pipes> {
        let missing = || std::io::Error::other("a pipe is missing");
        let stdin = self.child.stdin.take().ok_or_else(missing)?;
        let stdout = self.child.stdout.take().ok_or_else(missing)?;
        let stderr = self.child.stderr.take().ok_or_else(missing)?;
        Ok((
            tokio::process::ChildStdin::from_std(stdin)?,
            tokio::process::ChildStdout::from_std(stdout)?,
            tokio::process::ChildStderr::from_std(stderr)?,
        ))
    }

    /// Waits up to `grace` for the process to exit by itself, then kills its
    /// process group and reaps it; removes its scratch directory. Blocking.
    fn finish(&mut self, grace: Duration) -> Option<Exit> {
        let deadline = Instant::now() + grace;
        self.try_reap();
        while self.reaped.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
            self.try_reap();
        }
        if self.reaped.is_none() {
            // SAFETY: kill has no memory preconditions; the group is the
            // process's own (setsid), and it is not reaped yet, so the id
            // is still ours.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            self.reaped = wait4(self.pid, 0);
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(path = %self.dir.display(), error = %e, "removing a code scratch directory failed");
            }
        }
        self.reaped
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.finish(Duration::ZERO);
    }
}

/// `wait4` on one pid, retrying on EINTR; `None` if it has not exited
/// (WNOHANG) or cannot be waited for.
fn wait4(pid: libc::pid_t, flags: libc::c_int) -> Option<Exit> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain data, fully written by wait4 on success.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == pid {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return Some(Exit { status, cpu_secs: secs(usage.ru_utime) + secs(usage.ru_stime) });
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// Ends a process off the async threads (reaping may block briefly).
async fn finish(mut proc: Proc, grace: Duration) -> Option<Exit> {
    tokio::task::spawn_blocking(move || proc.finish(grace)).await.unwrap_or(None)
}

/// The reply exceeded the output cap.
struct Overflow;

/// Writes the request, reads the reply (at most `max_output` and a margin)
/// and the stderr (the first [`STDERR_KEPT`] bytes kept, the rest drained).
async fn exchange(
    mut stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    stderr: tokio::process::ChildStderr,
    request: Vec<u8>,
    max_output: usize,
) -> Result<(Vec<u8>, Vec<u8>), Overflow> {
    let write = async move {
        // A process that died early closes its stdin: its exit says why.
        let _ = stdin.write_all(&request).await;
        drop(stdin);
        Ok(())
    };
    let cap = max_output.saturating_add(64);
    let read_out = async move {
        let (data, overflow) = read_bounded(stdout, cap, false).await;
        if overflow {
            Err(Overflow)
        } else {
            Ok(data)
        }
    };
    let read_err = async move { Ok(read_bounded(stderr, STDERR_KEPT, true).await.0) };
    let ((), out, err) = tokio::try_join!(write, read_out, read_err)?;
    Ok((out, err))
}

/// Reads to EOF keeping at most `cap` bytes; past it, stops (`drain`:
/// keeps reading and discards). Returns the data and whether it overflowed.
async fn read_bounded(mut r: impl AsyncRead + Unpin, cap: usize, drain: bool) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut overflow = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (data, overflow),
            Ok(n) => {
                let room = cap.saturating_sub(data.len());
                data.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    overflow = true;
                    if !drain {
                        return (data, overflow);
                    }
                }
            }
        }
    }
}

/// The runner's reply.
#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Ok(Map<String, Value>),
    Error(ReplyError),
}

#[derive(serde::Deserialize)]
struct ReplyError {
    kind: String,
    message: Option<String>,
    line: Option<u64>,
}

/// Maps what a finished process wrote and how it ended to the run's result.
fn outcome_of(
    stdout: &[u8],
    stderr: &[u8],
    exit: Option<Exit>,
    limits: &RunLimits,
    cpu_secs: u64,
) -> Result<Map<String, Value>, SandboxError> {
    let line = stdout.split(|&b| b == b'\n').find(|l| !l.is_empty());
    if let Some(reply) = line.and_then(|l| serde_json::from_slice::<Reply>(l).ok()) {
        return match reply {
            // The reply is `{"ok": ` + result + `}` and a newline.
            Reply::Ok(_) if stdout.len().saturating_sub(9) > limits.max_output_bytes => {
                Err(SandboxError::OutputTooLarge(limits.max_output_bytes))
            }
            Reply::Ok(result) => Ok(result),
            Reply::Error(e) => Err(reply_error(e, limits)),
        };
    }
    let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(600)..]).trim().to_owned();
    let Some(exit) = exit else {
        return Err(SandboxError::Internal(format!("the python process could not be reaped: {tail}")));
    };
    if tail.contains("MemoryError") || tail.contains("Cannot allocate memory") {
        return Err(SandboxError::Memory(limits.memory_bytes));
    }
    if libc::WIFSIGNALED(exit.status) {
        let signal = libc::WTERMSIG(exit.status);
        // SIGXCPU at the soft CPU limit, SIGKILL at the hard one.
        if signal == libc::SIGXCPU || (signal == libc::SIGKILL && exit.cpu_secs + 0.5 >= cpu_secs as f64) {
            return Err(SandboxError::Timeout(limits.timeout));
        }
        // SIGSYS: a call the service's own seccomp filter (systemd's
        // SystemCallFilter=) kills for, where ours would only refuse.
        if signal == libc::SIGSYS {
            return Err(SandboxError::Denied("a system call the service forbids (the process was killed)".into()));
        }
        return Err(SandboxError::Internal(format!("the python process was killed by signal {signal}: {tail}")));
    }
    let code = libc::WEXITSTATUS(exit.status);
    if code != 0 && !stdout.is_empty() {
        return Err(SandboxError::Internal(format!("the python process wrote a malformed reply and exited with {code}: {tail}")));
    }
    Err(SandboxError::Code(format!("the code ended the python process (exit status {code}) before main returned")))
}

fn reply_error(e: ReplyError, limits: &RunLimits) -> SandboxError {
    let message = e.message.unwrap_or_default();
    let with_line = match e.line {
        Some(n) => format!("{message} (line {n})"),
        None => message.clone(),
    };
    match e.kind.as_str() {
        "nomain" => SandboxError::NoMain,
        "notdict" => SandboxError::NotAnObject(message),
        "memory" => SandboxError::Memory(limits.memory_bytes),
        "output" => SandboxError::OutputTooLarge(limits.max_output_bytes),
        "denied" => SandboxError::Denied(with_line),
        "code" => SandboxError::Code(with_line),
        other => SandboxError::Internal(format!("the runner replied with an unknown kind {other:?}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RunLimits {
        RunLimits { timeout: Duration::from_secs(2), memory_bytes: 256 << 20, max_output_bytes: 100 }
    }

    fn exited(code: i32) -> Option<Exit> {
        Some(Exit { status: code << 8, cpu_secs: 0.01 })
    }

    #[test]
    fn replies_map_to_results_and_errors() {
        let l = limits();
        let ok = outcome_of(b"{\"ok\": {\"a\": 1}}\n", b"", exited(0), &l, 4).expect("ok");
        assert_eq!(ok.get("a"), Some(&Value::from(1)));
        let code = br#"{"error": {"kind": "code", "message": "NameError: name 'x' is not defined", "line": 3}}"#;
        assert_eq!(outcome_of(code, b"", exited(0), &l, 4), Err(SandboxError::Code("NameError: name 'x' is not defined (line 3)".into())));
        assert_eq!(outcome_of(br#"{"error": {"kind": "nomain"}}"#, b"", exited(0), &l, 4), Err(SandboxError::NoMain));
        let notdict = br#"{"error": {"kind": "notdict", "message": "list"}}"#;
        assert_eq!(outcome_of(notdict, b"", exited(0), &l, 4), Err(SandboxError::NotAnObject("list".into())));
        assert_eq!(outcome_of(br#"{"error": {"kind": "memory"}}"#, b"", exited(0), &l, 4), Err(SandboxError::Memory(256 << 20)));
    }

    #[test]
    fn a_result_over_the_cap_is_refused() {
        let big = format!("{{\"ok\": {{\"a\": \"{}\"}}}}\n", "x".repeat(200));
        assert_eq!(outcome_of(big.as_bytes(), b"", exited(0), &limits(), 4), Err(SandboxError::OutputTooLarge(100)));
    }

    #[test]
    fn deaths_without_a_reply_say_why() {
        let l = limits();
        let xcpu = Some(Exit { status: libc::SIGXCPU, cpu_secs: 4.0 });
        assert_eq!(outcome_of(b"", b"", xcpu, &l, 4), Err(SandboxError::Timeout(l.timeout)));
        let cpu_kill = Some(Exit { status: libc::SIGKILL, cpu_secs: 5.0 });
        assert_eq!(outcome_of(b"", b"", cpu_kill, &l, 4), Err(SandboxError::Timeout(l.timeout)));
        assert!(matches!(outcome_of(b"", b"", Some(Exit { status: libc::SIGKILL, cpu_secs: 0.1 }), &l, 4), Err(SandboxError::Internal(_))));
        assert_eq!(outcome_of(b"", b"Fatal Python error: MemoryError", exited(1), &l, 4), Err(SandboxError::Memory(256 << 20)));
        assert!(matches!(outcome_of(b"", b"", exited(3), &l, 4), Err(SandboxError::Code(m)) if m.contains("exit status 3")));
        let sigsys = Some(Exit { status: libc::SIGSYS, cpu_secs: 0.1 });
        assert!(matches!(outcome_of(b"", b"", sigsys, &l, 4), Err(SandboxError::Denied(_))));
    }
}
