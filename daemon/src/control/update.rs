//! The update methods' plumbing around `crate::update::Updates` (which
//! does the work, for the admin API too): receiving InstallUpdate's bundle
//! from the caller's descriptor (or InstallUpdateFromUrl's through
//! `crate::update::download`) into `update/incoming-<uuid>.bundle`
//! (bounded, fsynced, removed on every path), handing it to the install,
//! and the exit-75 restart after a reply. Must not: verify or install bundles, or touch the state file,
//! the slots or the link (`crate::update` owns them).

use std::sync::Arc;

use super::error::update_error;
use super::MethodError;
use crate::update::{UpdateError, Updates};

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
struct Incoming(std::path::PathBuf);

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
fn receive_bundle(
    input: impl std::io::Read,
    path: &std::path::Path,
    limit: u64,
    counted: &std::sync::atomic::AtomicU64,
) -> Result<Incoming, MethodError> {
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
        counted.store(written, std::sync::atomic::Ordering::Relaxed);
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

/// Where an install's bundle comes from.
pub(super) enum Source {
    /// A descriptor the caller opened (InstallUpdate).
    Fd(std::fs::File),
    /// A URL the daemon downloads (InstallUpdateFromUrl).
    Url(String),
}

/// Receives the bundle from `source` into the update directory (removed again on every path) and installs it.
pub(super) async fn receive_and_install(
    u: Arc<Updates>,
    source: Source,
    opts: crate::update::install::InstallOptions,
    progress: Arc<crate::update::download::Progress>,
    installing: Arc<std::sync::atomic::AtomicBool>,
) -> Result<edgeai_common::admin::UpdateActionResponse, MethodError> {
    use std::sync::atomic::Ordering;
    let task = |e: tokio::task::JoinError| update_error(&UpdateError::Task(e.to_string()));
    let incoming = match source {
        Source::Fd(input) => {
            let u = Arc::clone(&u);
            let progress = Arc::clone(&progress);
            tokio::task::spawn_blocking(move || {
                // Progress by the bytes received (0 while the size is unknown: a pipe).
                let total = input.metadata().ok().filter(|m| m.is_file()).map_or(0, |m| m.len());
                progress.total.store(total, Ordering::Relaxed);
                let limit = u.settings().max_bundle_bytes;
                if total > limit {
                    return Err(update_error(&UpdateError::TooLarge { limit }));
                }
                if total > 0 {
                    // A full disk is found before a byte is received.
                    u.check_receive_space(total).map_err(|e| update_error(&e))?;
                }
                let path = crate::update::install::incoming_path(&u.settings().dir);
                receive_bundle(input, &path, limit, &progress.received)
            })
            .await
            .map_err(task)??
        }
        Source::Url(url) => {
            let path = crate::update::download::fetch(&u, &url, &progress).await.map_err(|e| {
                tracing::warn!(url = %crate::update::download::shown(&url), error = %crate::telemetry::chain(&e), "InstallUpdateFromUrl: the download failed");
                update_error(&e)
            })?;
            Incoming(path)
        }
    };
    installing.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || {
        u.install(&incoming.0, opts).map_err(|e| {
            tracing::warn!(error = %crate::telemetry::chain(&e), "the install was refused; the slots and the state are unchanged");
            update_error(&e)
        })
    })
    .await
    .map_err(task)?
}
