//! process: one confined python process: started (`spawn`, by the
//! spawner thread), handed its request and read (`exchange`, bounded), and
//! ended (`finish`: a short grace, then SIGKILL to its process group, reaped,
//! its scratch directory removed) on every path, `Drop` included.

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{confine, Shared, RUNNER, STDERR_KEPT};

/// One started, confined process waiting for its request.
pub(super) struct Proc {
    pub(super) child: Child,
    pub(super) pid: libc::pid_t,
    dir: PathBuf,
    reaped: Option<Exit>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exit {
    pub(super) status: libc::c_int,
    /// User + system CPU seconds.
    pub(super) cpu_secs: f64,
}

/// Starts one confined process in a fresh scratch directory.
pub(super) fn spawn(shared: &Shared) -> Result<Proc, String> {
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

pub(super) type Pipes = (tokio::process::ChildStdin, tokio::process::ChildStdout, tokio::process::ChildStderr);

impl Proc {
    /// Whether it still waits (reaps it if it died).
    pub(super) fn alive(&mut self) -> bool {
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

    pub(super) fn pipes(&mut self) -> std::io::Result<Pipes> {
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
    pub(super) fn finish(&mut self, grace: Duration) -> Option<Exit> {
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
pub(super) async fn finish(mut proc: Proc, grace: Duration) -> Option<Exit> {
    tokio::task::spawn_blocking(move || proc.finish(grace)).await.unwrap_or(None)
}

/// The reply exceeded the output cap.
pub(super) struct Overflow;

/// Writes the request, reads the reply (at most `max_output` and a margin)
/// and the stderr (the first [`STDERR_KEPT`] bytes kept, the rest drained).
pub(super) async fn exchange(
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
