//! The update methods' plumbing around `crate::update::Updates` (which
//! does the work, for the admin API too): receiving InstallUpdate's bundle
//! from the caller's descriptor into `update/incoming-<uuid>.bundle`
//! (bounded, fsynced, removed on every path) and the exit-75 restart after
//! a reply. Must not: verify or install bundles, or touch the state file,
//! the slots or the link (`crate::update` owns them).

use super::error::update_error;
use super::MethodError;
use crate::update::UpdateError;

/// After the reply has gone out (the drain closes the bus connection): the
/// daemon stops with exit 75 and systemd starts it again, as the admin API's
/// update routes and RestoreBackup do.
pub(super) fn restart_after_reply(method: &'static str) {
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        tracing::info!(method, "update: stopping so the next start runs the chosen version (exit 75: restart)");
        if let Err(e) = crate::request_restart() {
            tracing::error!(method, error = %e, "update: cannot signal the daemon to restart; restart it (systemctl restart edgeai)");
        }
    });
}

/// The bundle received for InstallUpdate: removed when dropped, on every
/// path out of the install (a refusal, an error, a panic's unwinding).
pub(super) struct Incoming(std::path::PathBuf);

impl Drop for Incoming {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %self.0.display(), error = %e, "update: the received bundle could not be removed"),
        }
    }
}

/// Copies a bundle from the caller's descriptor into `path` (a new file,
/// mode 0600, fsynced), refusing more than `limit` bytes. Blocking: run it
/// off the event loop. A read error is the caller's descriptor's
/// (InvalidArgument); a write error names the file.
pub(super) fn receive_bundle(input: impl std::io::Read, path: &std::path::Path, limit: u64) -> Result<Incoming, MethodError> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |what, source| update_error(&UpdateError::Io { what, path: path.to_path_buf(), source });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| io("creating", e))?;
    let incoming = Incoming(path.to_path_buf());
    let mut input = input.take(limit.saturating_add(1));
    let mut buf = vec![0u8; 64 << 10];
    let mut written: u64 = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(MethodError::InvalidArgument(format!("cannot read the bundle from the descriptor: {e}"))),
        };
        written += n as u64;
        if written > limit {
            return Err(update_error(&UpdateError::TooLarge { limit }));
        }
        file.write_all(&buf[..n]).map_err(|e| update_error(&crate::update::install::receive_write_error(path, written, e)))?;
        crate::update::kill_point("receive");
    }
    if written == 0 {
        return Err(update_error(&UpdateError::Bundle("the descriptor gave 0 bytes: pass the bundle file, opened for reading".into())));
    }
    file.sync_all().map_err(|e| update_error(&crate::update::install::receive_write_error(path, written, e)))?;
    Ok(incoming)
}
