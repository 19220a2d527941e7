//! `edgeaictl backup create|verify|restore`: the daemon's state as one tar
//! archive (see the daemon's `service::backup` for what it holds).
//!
//! Owns: downloading the archive into FILE safely (a temporary sibling,
//! checked, then renamed over FILE; removed on any failure, as `export
//! logs` does), checking an archive offline (its manifest, every member's
//! size and sha256 in order, nothing missing or extra, and the database's
//! `PRAGMA integrity_check`), and the offline restore: everything is
//! unpacked into `DIR.restore-tmp` and checked there, and only then swapped
//! in by renames, the old state kept as `DIR.previous-<time>`; and the
//! online restore over D-Bus (`RestoreBackup`, which stages the archive for
//! the daemon's next start). The archive checks themselves are
//! `edgeai_common::backup_archive`'s, the daemon's too.
//! Must not: link the daemon crate (it opens the copied database itself,
//! with its own bundled SQLite).

use std::fs::File;
use std::path::{Path, PathBuf};

use edgeai_common::admin::{BackupManifest, BACKUP_STORE};
use edgeai_common::backup_archive::{check_database, read_archive, unpack_target, write_member, ArchiveError, STATE_DB};
use edgeai_common::dbus::BusClient;
use edgeai_common::UnixClient;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::control::Control;
use crate::error::{CtlError, EX_CANTCREAT, EX_DATAERR, EX_FAILURE, EX_INTERRUPTED, EX_USAGE};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot write the backup to {}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the backup to {} broke off: {reason}; nothing was written to it", path.display())]
    Incomplete { path: PathBuf, reason: String },
    #[error("stopped on Ctrl-C; nothing was written to {}", path.display())]
    Interrupted { path: PathBuf },
    #[error("cannot read the backup {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a good backup: {reason}", path.display())]
    BadArchive { path: PathBuf, reason: String },
    #[error("{} is in use by a running edgeaid ({reason}): stop the daemon (systemctl stop edgeai) before restoring into its state directory; nothing was changed", db.display())]
    InUse { db: PathBuf, reason: String },
    #[error("cannot restore into {}; nothing was replaced", path.display())]
    Unpack { path: PathBuf, source: std::io::Error },
    #[error("cannot swap the restored state into {}", path.display())]
    Swap { path: PathBuf, source: std::io::Error },
    #[error("backup restore needs --bus (online: the daemon checks and stages the backup and applies it as it restarts) or --state-dir DIR (offline, with the daemon stopped)")]
    NeedsStateDir,
}

impl BackupError {
    pub fn exit_code(&self) -> u8 {
        match self {
            BackupError::Write { .. } | BackupError::Unpack { .. } | BackupError::Swap { .. } => EX_CANTCREAT,
            BackupError::Incomplete { .. } | BackupError::InUse { .. } => EX_FAILURE,
            BackupError::Interrupted { .. } => EX_INTERRUPTED,
            BackupError::Read { .. } | BackupError::BadArchive { .. } => EX_DATAERR,
            BackupError::NeedsStateDir => EX_USAGE,
        }
    }
}

impl From<BackupError> for CtlError {
    fn from(e: BackupError) -> Self {
        CtlError::Backup(e)
    }
}

/// `backup create` waits at least this long for each piece of the archive:
/// the daemon copies the database and hashes every file before it sends the
/// first byte, which takes longer than `--timeout`'s default for a large state.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `edgeaictl backup create FILE`; `timeout` is `--timeout` (at least [`SNAPSHOT_WAIT`] is used).
pub async fn create(control: &Control, timeout: std::time::Duration, file: &Path, json: bool) -> Result<(), CtlError> {
    let wait = timeout.max(SNAPSHOT_WAIT);
    let tmp = crate::export::temp_path(file);
    let write_err = |source| CtlError::from(BackupError::Write { path: file.to_owned(), source });
    let mut out = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).await.map_err(write_err)?;
    let copied = tokio::select! {
        copied = async {
            match control {
                Control::Socket(client) => download(&client.clone().with_timeout(wait), file, &mut out).await,
                Control::Bus(bus) => write_over_bus(bus, wait, file, &out).await,
            }
        } => copied,
        _ = tokio::signal::ctrl_c() => Err(BackupError::Interrupted { path: file.to_owned() }.into()),
    };
    let finished = match copied {
        Ok(bytes) => out.sync_all().await.map_err(write_err).map(|()| bytes),
        Err(e) => Err(e),
    };
    drop(out);
    // The downloaded file is checked as `verify` would before it replaces FILE.
    let checked = match finished {
        Ok(bytes) => {
            let t = tmp.clone();
            let checked = tokio::task::spawn_blocking(move || verify_file(&t, None)).await;
            match checked {
                Ok(Ok(manifest)) => Ok((bytes, manifest)),
                Ok(Err(BackupError::BadArchive { reason, .. })) => Err(BackupError::Incomplete { path: file.to_owned(), reason }.into()),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => {
                    Err(BackupError::Incomplete { path: file.to_owned(), reason: "the check of the download panicked".into() }.into())
                }
            }
        }
        Err(e) => Err(e),
    };
    let placed = match checked {
        Ok(done) => tokio::fs::rename(&tmp, file).await.map_err(write_err).map(|()| done),
        Err(e) => Err(e),
    };
    let (bytes, manifest) = match placed {
        Ok(done) => done,
        Err(e) => {
            // Nothing of a failed backup stays behind.
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    if json {
        let v = json!({"file": file.display().to_string(), "bytes": bytes, "manifest": manifest});
        return crate::commands::print(&format!("{v}\n"));
    }
    crate::commands::print(&format!(
        "wrote a backup of {} files ({bytes} bytes, schema version {}) to {}\n",
        manifest.members.len(),
        manifest.schema_version,
        file.display()
    ))
}

/// Streams the daemon's archive into `out`; its size once the daemon said it is complete.
async fn download(client: &UnixClient, file: &Path, out: &mut tokio::fs::File) -> Result<u64, CtlError> {
    let mut download = client.download(&crate::paths::backup()).await?;
    let mut bytes = 0u64;
    while let Some(chunk) = download.next_chunk().await? {
        out.write_all(&chunk).await.map_err(|source| BackupError::Write { path: file.to_owned(), source })?;
        bytes += chunk.len() as u64;
    }
    let incomplete = |reason: String| BackupError::Incomplete { path: file.to_owned(), reason };
    match download.trailer("x-edgeai-backup") {
        Some("complete") => Ok(bytes),
        Some(_) => {
            let why = download.trailer("x-edgeai-backup-error").unwrap_or("the daemon gave no reason; see its log");
            Err(incomplete(why.to_owned()).into())
        }
        None => Err(incomplete("the daemon ended the archive without saying it is complete".into()).into()),
    }
}

/// D-Bus `CreateBackup`: the daemon writes the archive into our temporary
/// file through a descriptor; its size once the daemon answered.
async fn write_over_bus(bus: &BusClient, wait: std::time::Duration, file: &Path, out: &tokio::fs::File) -> Result<u64, CtlError> {
    let write_err = |source| CtlError::from(BackupError::Write { path: file.to_owned(), source });
    let fd = out.try_clone().await.map_err(write_err)?.into_std().await;
    let options: edgeai_common::dbus::Options<'_> = std::collections::HashMap::new();
    // The daemon's Progress signals drive a bar on a terminal.
    let args = (edgeai_common::dbus::fd(&fd), options);
    crate::progress::follow(bus, "CreateBackup", "backup", bus.call_within("CreateBackup", &args, wait)).await?;
    Ok(fd.metadata().map_err(write_err)?.len())
}

/// `edgeaictl backup verify FILE`.
pub async fn verify(file: &Path, json: bool) -> Result<(), CtlError> {
    let f = file.to_owned();
    let manifest = tokio::task::spawn_blocking(move || verify_file(&f, None))
        .await
        .map_err(|_| BackupError::BadArchive { path: file.to_owned(), reason: "the check panicked".into() })??;
    if json {
        let v = json!({"file": file.display().to_string(), "ok": true, "manifest": manifest});
        return crate::commands::print(&format!("{v}\n"));
    }
    let bytes: u64 = manifest.members.iter().map(|m| m.size).sum();
    crate::commands::print(&format!(
        "{}: ok: edgeai {}, schema version {}, created at unix {}, {} files ({bytes} bytes), every sha256 matches, database integrity ok\n",
        file.display(),
        manifest.edgeai_version,
        manifest.schema_version,
        manifest.created_at,
        manifest.members.len()
    ))
}

/// Where [`read_archive`] puts the members: nowhere (a check), or unpacked
/// below a state directory and a config directory.
struct Unpack<'a> {
    state: &'a Path,
    config: Option<&'a Path>,
}

/// Checks the archive `file` completely (and, with `unpack`, writes its
/// members there): its manifest, every member's size and sha256, and the
/// database's integrity (the checks of `edgeai_common::backup_archive`,
/// which the daemon's RestoreBackup runs too). The manifest when all is well.
fn verify_file(file: &Path, unpack: Option<&Unpack<'_>>) -> Result<BackupManifest, BackupError> {
    let bad = |reason: String| BackupError::BadArchive { path: file.to_owned(), reason };
    let f = File::open(file).map_err(|source| BackupError::Read { path: file.to_owned(), source })?;
    // Without a state directory to unpack into, the database alone goes to
    // a temporary file for the integrity check.
    let scratch = std::env::temp_dir().join(format!(".edgeaictl-verify-{}.db", std::process::id()));
    if unpack.is_none() {
        let _ = std::fs::remove_file(&scratch);
    }
    let db = match unpack {
        Some(u) => u.state.join(STATE_DB),
        None => scratch.clone(),
    };
    let read = read_archive(
        f,
        |_| Ok(()),
        |member, data| {
            let target = match (member.name.as_str(), unpack) {
                (BACKUP_STORE, _) => Some(db.clone()),
                (name, Some(u)) => unpack_target(name, u.state, u.config),
                (_, None) => None,
            };
            match target {
                Some(path) => write_member(&path, data),
                None => std::io::copy(data, &mut std::io::sink()).map(|_| ()),
            }
        },
    );
    let checked = read
        .map_err(|e: ArchiveError| bad(e.to_string()))
        .and_then(|manifest| check_database(&db, manifest.schema_version).map_err(bad).map(|()| manifest));
    if unpack.is_none() {
        let _ = std::fs::remove_file(&scratch);
    }
    checked
}

/// `edgeaictl --bus ... backup restore FILE [--no-restart]`: D-Bus
/// RestoreBackup reads FILE through a descriptor opened here (so our
/// permissions apply), checks and stages it; the daemon applies it at its
/// next start, which with `restart` is at once (it exits 75 and systemd
/// starts it again).
pub async fn restore_over_bus(
    bus: &BusClient,
    timeout: std::time::Duration,
    file: &Path,
    restart: bool,
    json: bool,
) -> Result<(), CtlError> {
    let f = File::open(file).map_err(|source| BackupError::Read { path: file.to_owned(), source })?;
    let mut options: edgeai_common::dbus::Options<'_> = std::collections::HashMap::new();
    options.insert("restart", zbus::zvariant::Value::from(restart));
    let args = (edgeai_common::dbus::fd(&f), options);
    let wait = timeout.max(SNAPSHOT_WAIT);
    let answer = crate::progress::follow(bus, "RestoreBackup", "restore", bus.call_within("RestoreBackup", &args, wait)).await?;
    if json {
        let v = json!({"file": file.display().to_string(), "restore": answer});
        return crate::commands::print(&format!("{v}\n"));
    }
    let field = |k: &str| answer.get(k).map_or_else(String::new, |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    let mut out = format!(
        "staged {} (edgeai {}, schema version {}, created at unix {}): {} files, {} bytes, in {}\n",
        file.display(),
        field("edgeai_version"),
        field("schema_version"),
        field("created_at"),
        field("members"),
        field("bytes"),
        field("staged"),
    );
    let skipped: Vec<&str> =
        answer.get("skipped").and_then(|v| v.as_array()).map_or_else(Vec::new, |a| a.iter().filter_map(|v| v.as_str()).collect());
    if !skipped.is_empty() {
        out.push_str(&format!("not restored online: {}; {}\n", skipped.join(", "), field("skipped_how")));
    }
    out.push_str(&format!("applied {}\n", field("applies")));
    crate::commands::print(&out)
}

/// `edgeaictl backup restore FILE --state-dir DIR [--config-dir DIR]`.
pub async fn restore(file: &Path, state: &Path, config: Option<&Path>, json: bool) -> Result<(), CtlError> {
    let (f, s, c) = (file.to_owned(), state.to_owned(), config.map(Path::to_owned));
    let done = tokio::task::spawn_blocking(move || restore_blocking(&f, &s, c.as_deref()))
        .await
        .map_err(|_| BackupError::Unpack { path: state.to_owned(), source: std::io::Error::other("the restore panicked") })??;
    let previous = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    if json {
        let v = json!({
            "file": file.display().to_string(),
            "state_dir": state.display().to_string(),
            "previous_state_dir": previous(&done.previous_state),
            "config_dir": config.map(|c| c.display().to_string()),
            "previous_config_dir": previous(&done.previous_config),
            "manifest": done.manifest,
        });
        return crate::commands::print(&format!("{v}\n"));
    }
    let mut out = format!(
        "restored {} (edgeai {}, schema version {}, created at unix {}) into {}\n",
        file.display(),
        done.manifest.edgeai_version,
        done.manifest.schema_version,
        done.manifest.created_at,
        state.display()
    );
    match (config, &done.previous_config) {
        (Some(c), _) => out.push_str(&format!("restored the config files into {}\n", c.display())),
        (None, _) => out.push_str("config files not restored (no --config-dir)\n"),
    }
    for (what, p) in [("state", &done.previous_state), ("config", &done.previous_config)] {
        if let Some(p) = p {
            out.push_str(&format!(
                "the previous {what} is kept in {}; remove it once the daemon runs well on the restored state\n",
                p.display()
            ));
        }
    }
    crate::commands::print(&out)
}

struct Restored {
    manifest: BackupManifest,
    previous_state: Option<PathBuf>,
    previous_config: Option<PathBuf>,
}

/// `dir` with `suffix` appended to its last component.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(suffix);
    dir.with_file_name(name)
}

fn restore_blocking(file: &Path, state: &Path, config: Option<&Path>) -> Result<Restored, BackupError> {
    // Unreadable input fails before anything is touched.
    File::open(file).map_err(|source| BackupError::Read { path: file.to_owned(), source })?;
    let state = &absolute(state);
    let config = config.map(absolute);
    check_not_in_use(&state.join(STATE_DB))?;
    let tmp_state = sibling(state, ".restore-tmp");
    let tmp_config = config.as_deref().map(|c| sibling(c, ".restore-tmp"));
    let tmps: Vec<&Path> = std::iter::once(tmp_state.as_path()).chain(tmp_config.as_deref()).collect();
    let clean = || {
        for t in &tmps {
            let _ = std::fs::remove_dir_all(t);
        }
    };
    // A stale one is what an interrupted restore left: ours to remove.
    clean();
    let unpacked = (|| {
        for t in &tmps {
            std::fs::create_dir_all(t).map_err(|source| BackupError::Unpack { path: t.to_path_buf(), source })?;
        }
        let unpack = Unpack { state: &tmp_state, config: tmp_config.as_deref() };
        let manifest = verify_file(file, Some(&unpack))?;
        for (tmp, like) in [(Some(&tmp_state), Some(state.as_path())), (tmp_config.as_ref(), config.as_deref())] {
            if let (Some(tmp), Some(like)) = (tmp, like) {
                own_like(tmp, like).map_err(|source| BackupError::Unpack { path: tmp.clone(), source })?;
            }
        }
        Ok(manifest)
    })();
    let manifest = match unpacked {
        Ok(m) => m,
        Err(e) => {
            clean();
            return Err(e);
        }
    };
    let stamp = stamp();
    let previous_state = swap(state, &tmp_state, &stamp).inspect_err(|_| clean())?;
    let previous_config = match (config.as_deref(), tmp_config.as_deref()) {
        (Some(c), Some(t)) => match swap(c, t, &stamp) {
            Ok(p) => p,
            Err(e) => {
                // Put the old state back: all or nothing.
                let _ = std::fs::remove_dir_all(state);
                if let Some(p) = &previous_state {
                    let _ = std::fs::rename(p, state);
                }
                clean();
                return Err(e);
            }
        },
        _ => None,
    };
    Ok(Restored { manifest, previous_state, previous_config })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `<dir>` becomes `new`; the old `<dir>` (if any) `<dir>.previous-<stamp>`.
fn swap(dir: &Path, new: &Path, stamp: &str) -> Result<Option<PathBuf>, BackupError> {
    let swap_err = |source| BackupError::Swap { path: dir.to_owned(), source };
    let previous = match std::fs::symlink_metadata(dir) {
        Ok(_) => {
            let p = sibling(dir, &format!(".previous-{stamp}"));
            std::fs::rename(dir, &p).map_err(swap_err)?;
            Some(p)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(swap_err(e)),
    };
    if let Err(e) = std::fs::rename(new, dir) {
        if let Some(p) = &previous {
            let _ = std::fs::rename(p, dir);
        }
        return Err(swap_err(e));
    }
    Ok(previous)
}

/// The time as `20261130T131500Z`, for `.previous-<time>`.
fn stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().chars().filter(|c| !matches!(c, '-' | ':')).collect()
}

/// Gives everything below `tmp` the owner, and `tmp` the mode, of the
/// existing directory `like` (a restore as root for a daemon running as
/// `edgeai`); nothing when `like` does not exist or we are not root.
fn own_like(tmp: &Path, like: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(like) else { return Ok(()) };
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    fn walk(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
        if std::fs::symlink_metadata(p)?.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), uid, gid)?;
            }
        }
        Ok(())
    }
    walk(tmp, meta.uid(), meta.gid())
}

/// Refuses a database another process has open: SQLite (WAL) holds a read
/// lock on byte 128 of `<db>-shm` for as long as a connection has the
/// database open, and locks on the database file while it reads or writes.
fn check_not_in_use(db: &Path) -> Result<(), BackupError> {
    let shm = PathBuf::from(format!("{}-shm", db.display()));
    for (path, start, len) in [(shm.as_path(), 128, 1), (db, 0, 0)] {
        let f = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(BackupError::InUse { db: db.to_owned(), reason: format!("cannot open {} to check: {e}", path.display()) })
            }
        };
        if let Some(pid) = lock_holder(&f, start, len)
            .map_err(|e| BackupError::InUse { db: db.to_owned(), reason: format!("cannot check the locks of {}: {e}", path.display()) })?
        {
            return Err(BackupError::InUse { db: db.to_owned(), reason: format!("process {pid} holds a lock on {}", path.display()) });
        }
    }
    Ok(())
}

/// The pid of a process holding a lock that conflicts with a write lock on
/// `len` bytes from `start` (0: to the end) of `f`.
fn lock_holder(f: &File, start: i64, len: i64) -> std::io::Result<Option<i32>> {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::libc;
    use std::os::fd::AsRawFd;
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    fcntl(f.as_raw_fd(), FcntlArg::F_GETLK(&mut fl)).map_err(std::io::Error::from)?;
    Ok((fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_and_temporary_directories_are_siblings() {
        assert_eq!(sibling(Path::new("/var/lib/edgeai"), ".restore-tmp"), Path::new("/var/lib/edgeai.restore-tmp"));
        let s = stamp();
        assert!(s.len() == 16 && s.ends_with('Z') && s.as_bytes()[8] == b'T', "{s}");
    }
}
