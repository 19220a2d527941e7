//! Restarting in place: when the daemon stops to restart (an update switch,
//! mark-bad, rollback, RestoreBackup: [`crate::request_restart`]) under
//! systemd, it execs the installed binary in its own process instead of
//! exiting 75 and waiting `RestartSec=` for systemd to start it again.
//!
//! Owns: the path of the installed binary (the one systemd's `ExecStart=`
//! runs, which the update launcher keeps in `EDGEAI_INSTALLED` when it execs
//! a slot), keeping a copy of the sockets systemd passed, and handing them,
//! LISTEN_* and the notify socket on to the new image. The pid stays the
//! unit's main pid, so systemd sees `RELOADING=1` and then the new image's
//! `READY=1`; the passed sockets stay open, so a request in the gap waits in
//! the backlog. The new image runs `main` from the top: the launcher counts
//! the attempt, takes the store snapshot or rolls back, as after a restart.
//! Without NOTIFY_SOCKET (a terminal, the tests' harness) or without a
//! usable installed path the daemon exits 75 as before.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// The installed binary's path, kept across a slot's exec.
pub const INSTALLED_ENV: &str = "EDGEAI_INSTALLED";

/// The first fd of the passed sockets (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Copies of the sockets systemd passed (close-on-exec until the exec in
/// place), with their names.
static PASSED: Mutex<Vec<(OwnedFd, String)>> = Mutex::new(Vec::new());

/// Why the daemon could not restart in place (it exits 75 instead).
#[derive(Debug, thiserror::Error)]
pub enum ReexecError {
    #[error("the installed binary's path is unknown or was replaced ({0}); exiting 75 for systemd's restart")]
    NoBinary(String),
    #[error("arranging the passed socket fd {fd} for the new image: {source}")]
    Fds { fd: RawFd, source: nix::Error },
    #[error("exec {}: {source}", path.display())]
    Exec { path: PathBuf, source: std::io::Error },
}

/// The binary `ExecStart=` ran: `EDGEAI_INSTALLED` when a slot's launcher
/// set it, else this process's own. Call before [`crate::update::launch`]
/// execs a slot (it passes the value on).
pub fn installed_binary() -> Result<PathBuf, ReexecError> {
    if let Some(p) = std::env::var_os(INSTALLED_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| ReexecError::NoBinary(e.to_string()))?;
    // /proc/self/exe of a binary replaced on disk (a package upgrade) ends
    // with " (deleted)": that path names nothing to exec.
    if exe.to_string_lossy().ends_with(" (deleted)") {
        return Err(ReexecError::NoBinary(exe.display().to_string()));
    }
    Ok(exe)
}

/// Keeps a close-on-exec copy of each socket systemd passed, for the exec in place.
pub fn keep_passed(fds: &[(OwnedFd, String)]) -> std::io::Result<()> {
    let mut kept = PASSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (fd, name) in fds {
        kept.push((fd.try_clone()?, name.clone()));
    }
    Ok(())
}

/// Whether a requested restart happens in place: under systemd (it gave a
/// notify socket) with an installed binary to exec.
pub fn in_place() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some() && installed_binary().is_ok()
}

/// Execs the installed binary in this process with the same arguments,
/// the passed sockets at fd 3.. and LISTEN_* naming them; returns only on
/// failure. Call with one thread left that matters (the runtime is shut
/// down): it edits the environment and fd table.
pub fn exec_in_place() -> ReexecError {
    let bin = match installed_binary() {
        Ok(b) => b,
        Err(e) => return e,
    };
    let kept = std::mem::take(&mut *PASSED.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let mut names = Vec::with_capacity(kept.len());
    let n = kept.len() as RawFd;
    // Move the copies above the target range first, so no dup2 below
    // overwrites one not yet placed.
    let mut high = Vec::with_capacity(kept.len());
    for (fd, name) in kept {
        match fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(LISTEN_FDS_START + n)) {
            Ok(h) => high.push(h),
            Err(source) => return ReexecError::Fds { fd: fd.as_raw_fd(), source },
        }
        names.push(name);
    }
    for (i, h) in high.iter().enumerate() {
        let target = LISTEN_FDS_START + i as RawFd;
        if let Err(source) = nix::unistd::dup2(*h, target) {
            return ReexecError::Fds { fd: *h, source };
        }
        // dup2 leaves the target without FD_CLOEXEC: it survives the exec.
        if let Err(source) = fcntl(target, FcntlArg::F_SETFD(FdFlag::empty())) {
            return ReexecError::Fds { fd: target, source };
        }
        let _ = nix::unistd::close(*h);
    }
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(std::env::args_os().skip(1))
        .env_remove(crate::update::SLOT_ENV)
        .env_remove(crate::update::ROLLED_BACK_ENV)
        .env(INSTALLED_ENV, &bin);
    if names.is_empty() {
        cmd.env_remove("LISTEN_PID").env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES");
    } else {
        cmd.env("LISTEN_PID", std::process::id().to_string())
            .env("LISTEN_FDS", names.len().to_string())
            .env("LISTEN_FDNAMES", OsString::from(names.join(":")));
    }
    let source = cmd.exec();
    ReexecError::Exec { path: bin, source }
}
