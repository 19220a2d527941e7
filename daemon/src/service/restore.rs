//! `RestoreBackup`: an online-requested restore, staged while the daemon
//! serves and applied at the next start, before the store opens.
//!
//! Owns: the staging directory `<state dir>/restore.staged/` (`edgeai.db`
//! and `knowledge/`), which [`stage`] fills from an archive only after the
//! shared checks of `edgeai_common::backup_archive` passed on everything
//! unpacked into `restore.staged.tmp/` (so a bad archive stages nothing);
//! and the swap at start ([`begin`], then [`Applying::commit`] once the
//! restored store opened, or [`Applying::rollback`] when it did not).
//!
//! Crash safety: before the first rename, [`begin`] writes the whole list
//! of renames to `<state dir>/restore.journal` (written beside, synced,
//! renamed into place, the directory synced). Every rename is undone by
//! renaming its target back when the target exists and its source does
//! not, so the undo is idempotent. A start that finds a journal undoes it
//! (the staged copy is back in `restore.staged/`, the old state in place)
//! and then applies the staged copy again. [`Applying::commit`] removes the
//! journal first (the point of no return) and only then the emptied staged
//! directory; a staged directory without a database is such a leftover and
//! is removed, never applied (as is a `restore.staged.tmp/` that a crash
//! during RestoreBackup left).
//! Must not: restore the config files (under /etc/edgeai the unit's
//! ProtectSystem=strict forbids it; they are reported as skipped), or open
//! the store (the caller does, so that opening and migrating decide).

use std::io::Read;
use std::path::{Path, PathBuf};

use edgeai_common::admin::BackupManifest;
use edgeai_common::backup_archive::{self, ArchiveError, STATE_DB, STATE_KNOWLEDGE};
use serde::{Deserialize, Serialize};

/// The staged restore in the state directory, applied at the next start.
pub const STAGED: &str = "restore.staged";
/// Where an archive is unpacked and checked before it becomes [`STAGED`].
const STAGED_TMP: &str = "restore.staged.tmp";
/// The renames of a swap in progress.
const JOURNAL: &str = "restore.journal";

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the archive is not a good backup: {0}")]
    BadArchive(String),
    #[error("the backup's database has schema version {found}, newer than this edgeaid knows ({supported}): restore it with the edgeaid that made it")]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("not enough space in {}: the restore needs {needed} bytes, {available} are free", dir.display())]
    NoSpace { dir: PathBuf, needed: u64, available: u64 },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the restore journal {} is unreadable: {reason}", path.display())]
    Journal { path: PathBuf, reason: String },
    #[error("the restore task panicked")]
    Panicked,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io { path: path.to_path_buf(), source }
}

/// A restore staged by [`stage`].
#[derive(Debug)]
pub struct Staged {
    pub manifest: BackupManifest,
    /// `<state dir>/restore.staged`.
    pub dir: PathBuf,
    /// Members restored (the database and the knowledge files) and their bytes.
    pub members: usize,
    pub bytes: u64,
    /// Members not restored online: the config files.
    pub skipped: Vec<String>,
    /// A restore staged before and not applied yet, replaced by this one.
    pub replaced: bool,
}

/// Bytes free for an unprivileged writer in `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64))
}

/// Unpacks the archive read from `input` into `<state_dir>/restore.staged.tmp/`,
/// checks it all there (every member's size and sha256, the database's
/// integrity and schema version, which must be at most `supported`) and
/// only then renames it to `<state_dir>/restore.staged/` (replacing a
/// restore staged before). On any error nothing is staged. Blocking.
pub fn stage(input: impl Read, state_dir: &Path, supported: u32) -> Result<Staged, RestoreError> {
    let tmp = state_dir.join(STAGED_TMP);
    // A leftover of an interrupted RestoreBackup: ours to remove.
    remove_all(&tmp)?;
    let staged = match stage_into(input, &tmp, state_dir, supported) {
        Ok(s) => s,
        Err(e) => {
            if let Err(clean) = remove_all(&tmp) {
                tracing::warn!(error = %clean, "could not remove the failed restore's files");
            }
            return Err(e);
        }
    };
    let dir = state_dir.join(STAGED);
    let replaced = dir.exists();
    remove_all(&dir)?;
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    sync_dir(state_dir)?;
    Ok(Staged { dir, replaced, ..staged })
}

fn stage_into(input: impl Read, tmp: &Path, state_dir: &Path, supported: u32) -> Result<Staged, RestoreError> {
    std::fs::create_dir_all(tmp.join(STATE_KNOWLEDGE)).map_err(io_err(tmp))?;
    let mut skipped = Vec::new();
    let (mut members, mut bytes, mut needed) = (0usize, 0u64, 0u64);
    let read = backup_archive::read_archive(
        input,
        |m| {
            needed = m.members.iter().filter(|x| backup_archive::unpack_target(&x.name, tmp, None).is_some()).map(|x| x.size).sum();
            match free_bytes(state_dir) {
                Some(free) if free < needed => Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space")),
                _ => Ok(()),
            }
        },
        |member, data| match backup_archive::unpack_target(&member.name, tmp, None) {
            Some(path) => {
                members += 1;
                bytes += member.size;
                backup_archive::write_member(&path, data)
            }
            None => {
                skipped.push(member.name.clone());
                Ok(())
            }
        },
    );
    let manifest = match read {
        Ok(m) => m,
        Err(ArchiveError::Bad(reason)) => return Err(RestoreError::BadArchive(reason)),
        Err(ArchiveError::Sink { source, .. }) if source.kind() == std::io::ErrorKind::StorageFull => {
            return Err(RestoreError::NoSpace { dir: state_dir.to_owned(), needed, available: free_bytes(state_dir).unwrap_or(0) })
        }
        Err(ArchiveError::Sink { member, source }) => return Err(RestoreError::Io { path: tmp.join(member), source }),
    };
    backup_archive::check_database(&tmp.join(STATE_DB), manifest.schema_version).map_err(RestoreError::BadArchive)?;
    if manifest.schema_version > supported {
        return Err(RestoreError::SchemaTooNew { found: manifest.schema_version, supported });
    }
    sync_dir(tmp)?;
    Ok(Staged { manifest, dir: tmp.to_owned(), members, bytes, skipped, replaced: false })
}

fn remove_all(path: &Path) -> Result<(), RestoreError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), RestoreError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// One rename of the swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Move {
    from: PathBuf,
    to: PathBuf,
}

/// `restore.journal`: the swap's renames, in order.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    /// `restore.previous-<time>`: the old state.
    previous: PathBuf,
    moves: Vec<Move>,
}

/// A swap done at start, waiting for the store to open.
#[derive(Debug)]
pub struct Applying {
    state_dir: PathBuf,
    /// The live database's path (`store.path`).
    db: PathBuf,
    journal: Journal,
    stamp: String,
}

/// What [`Applying::commit`] reports.
#[derive(Debug)]
pub struct Applied {
    /// Where the old state is kept.
    pub previous: PathBuf,
}

/// `path` with `suffix` appended to its file name (`edgeai.db` → `edgeai.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// The time as `20261130T131500Z`.
fn stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().chars().filter(|c| !matches!(c, '-' | ':')).collect()
}

/// At start, before the store opens: finishes or undoes a swap a crash
/// interrupted, then, when a restore is staged, moves the database `db`
/// (with its -wal and -shm) and the knowledge directory `knowledge` into
/// `<state_dir>/restore.previous-<time>/` and the staged ones into their
/// place. `None`: nothing staged. On an error the swap is undone (and the
/// staged copy kept as `restore.failed-<time>/`).
pub fn begin(state_dir: &Path, db: &Path, knowledge: &Path) -> Result<Option<Applying>, RestoreError> {
    let journal_path = state_dir.join(JOURNAL);
    if exists(&journal_path) {
        let text = std::fs::read(&journal_path).map_err(io_err(&journal_path))?;
        let journal: Journal =
            serde_json::from_slice(&text).map_err(|e| RestoreError::Journal { path: journal_path.clone(), reason: e.to_string() })?;
        undo(&journal, db, &state_dir.join(STAGED))?;
        remove_file(&journal_path)?;
        sync_dir(state_dir)?;
        tracing::warn!(journal = %journal_path.display(), "an interrupted restore was undone; applying the staged restore again");
    }
    // What a RestoreBackup a crash interrupted left (nothing can be staging now).
    remove_all(&state_dir.join(STAGED_TMP))?;
    let staged = state_dir.join(STAGED);
    if !exists(&staged) {
        return Ok(None);
    }
    if !exists(&staged.join(STATE_DB)) {
        // What a commit interrupted after its journal was removed leaves: nothing to apply.
        remove_all(&staged)?;
        return Ok(None);
    }
    let stamp = stamp();
    let previous = state_dir.join(format!("restore.previous-{stamp}"));
    let mut moves: Vec<Move> =
        ["", "-wal", "-shm"].iter().map(|s| Move { from: with_suffix(db, s), to: with_suffix(&previous.join(STATE_DB), s) }).collect();
    moves.push(Move { from: knowledge.to_owned(), to: previous.join(STATE_KNOWLEDGE) });
    moves.push(Move { from: staged.join(STATE_DB), to: db.to_owned() });
    moves.push(Move { from: staged.join(STATE_KNOWLEDGE), to: knowledge.to_owned() });
    let journal = Journal { previous, moves };
    write_journal(&journal_path, &journal)?;
    let applying = Applying { state_dir: state_dir.to_owned(), db: db.to_owned(), journal, stamp };
    for m in &applying.journal.moves {
        if let Err(e) = do_move(m) {
            // Undone (the journal is gone), or not (it stays): `interrupted` tells.
            return Err(applying.rollback().err().unwrap_or(e));
        }
    }
    Ok(Some(applying))
}

/// A swap is half done (its journal is there): the live state may be a mix
/// of the old and the restored one and must not be opened.
pub fn interrupted(state_dir: &Path) -> bool {
    exists(&state_dir.join(JOURNAL))
}

fn write_journal(path: &Path, journal: &Journal) -> Result<(), RestoreError> {
    let tmp = with_suffix(path, ".tmp");
    let text = serde_json::to_vec_pretty(journal).map_err(|e| io_err(&tmp)(e.into()))?;
    std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn remove_file(path: &Path) -> Result<(), RestoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Renames `from` to `to` (nothing when `from` is gone: not there, or moved before a crash).
fn do_move(m: &Move) -> Result<(), RestoreError> {
    if !exists(&m.from) {
        return Ok(());
    }
    let parent = m.to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    std::fs::rename(&m.from, &m.to).map_err(io_err(&m.to))?;
    sync_dir(parent)?;
    sync_dir(m.from.parent().unwrap_or(Path::new(".")))
}

/// Puts every moved path back, last first. The restored database's own
/// -wal and -shm (an open that failed may have made them) go back to the
/// staged copy with it, so they never meet the old database.
fn undo(journal: &Journal, db: &Path, staged: &Path) -> Result<(), RestoreError> {
    if exists(db) && !exists(&staged.join(STATE_DB)) {
        for s in ["-wal", "-shm"] {
            do_move(&Move { from: with_suffix(db, s), to: with_suffix(&staged.join(STATE_DB), s) })?;
        }
    }
    for m in journal.moves.iter().rev() {
        if exists(&m.to) && !exists(&m.from) {
            do_move(&Move { from: m.to.clone(), to: m.from.clone() })?;
        }
    }
    // The previous-state directory is empty again.
    let _ = std::fs::remove_dir(&journal.previous);
    Ok(())
}

impl Applying {
    /// The restored store opened: the old state stays in `restore.previous-<time>/`.
    pub fn commit(self) -> Result<Applied, RestoreError> {
        let journal = self.state_dir.join(JOURNAL);
        remove_file(&journal)?;
        sync_dir(&self.state_dir)?;
        remove_all(&self.state_dir.join(STAGED))?;
        Ok(Applied { previous: self.journal.previous })
    }

    /// The restored store did not open (or the swap failed): the old state
    /// goes back, the staged copy becomes `restore.failed-<time>/`, and the
    /// journal goes. Returns that directory. An error leaves the journal
    /// (see [`interrupted`]): the next start undoes the rest.
    pub fn rollback(self) -> Result<PathBuf, RestoreError> {
        let staged = self.state_dir.join(STAGED);
        let failed = self.state_dir.join(format!("restore.failed-{}", self.stamp));
        undo(&self.journal, &self.db, &staged)?;
        std::fs::rename(&staged, &failed).map_err(io_err(&failed))?;
        remove_file(&self.state_dir.join(JOURNAL))?;
        sync_dir(&self.state_dir)?;
        Ok(failed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    /// A state dir with an old database (+ wal), old knowledge and a staged restore.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (db, k) = (dir.path().join("edgeai.db"), dir.path().join("knowledge"));
        std::fs::write(&db, b"old db").unwrap();
        std::fs::write(with_suffix(&db, "-wal"), b"old wal").unwrap();
        std::fs::create_dir_all(k.join("d1")).unwrap();
        std::fs::write(k.join("d1/old"), b"old k").unwrap();
        let staged = dir.path().join(STAGED);
        std::fs::create_dir_all(staged.join("knowledge/d2")).unwrap();
        std::fs::write(staged.join(STATE_DB), b"new db").unwrap();
        std::fs::write(staged.join("knowledge/d2/new"), b"new k").unwrap();
        (dir, db, k)
    }

    fn read(p: &Path) -> String {
        String::from_utf8(std::fs::read(p).unwrap()).unwrap()
    }

    fn assert_old_state(dir: &Path, db: &Path, k: &Path) {
        assert_eq!(read(db), "old db");
        assert_eq!(read(&with_suffix(db, "-wal")), "old wal");
        assert_eq!(read(&k.join("d1/old")), "old k");
        assert!(!exists(&k.join("d2")));
        assert!(!exists(&dir.join(JOURNAL)));
    }

    #[test]
    fn a_commit_keeps_the_old_state_aside_and_removes_the_journal_and_staged_copy() {
        let (dir, db, k) = setup();
        let a = begin(dir.path(), &db, &k).unwrap().unwrap();
        assert!(exists(&dir.path().join(JOURNAL)), "the journal is written before the renames and kept until commit");
        assert_eq!(read(&db), "new db");
        assert!(!exists(&with_suffix(&db, "-wal")), "the old wal is not left beside the restored database");
        let applied = a.commit().unwrap();
        assert_eq!(read(&k.join("d2/new")), "new k");
        assert_eq!(read(&applied.previous.join(STATE_DB)), "old db");
        assert_eq!(read(&with_suffix(&applied.previous.join(STATE_DB), "-wal")), "old wal");
        assert_eq!(read(&applied.previous.join("knowledge/d1/old")), "old k");
        assert!(!exists(&dir.path().join(JOURNAL)) && !exists(&dir.path().join(STAGED)));
        assert!(begin(dir.path(), &db, &k).unwrap().is_none(), "nothing is applied twice");
    }

    #[test]
    fn a_rollback_puts_the_old_state_back_and_keeps_the_staged_copy_as_failed() {
        let (dir, db, k) = setup();
        let a = begin(dir.path(), &db, &k).unwrap().unwrap();
        // A failed open of the restored database may leave its own -wal.
        std::fs::write(with_suffix(&db, "-wal"), b"new wal").unwrap();
        let failed = a.rollback().unwrap();
        assert_old_state(dir.path(), &db, &k);
        assert_eq!(read(&failed.join(STATE_DB)), "new db");
        assert_eq!(read(&with_suffix(&failed.join(STATE_DB), "-wal")), "new wal");
        assert!(!exists(&dir.path().join(STAGED)) && !interrupted(dir.path()));
        let leftovers: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(!leftovers.iter().any(|n| n.starts_with("restore.previous-")), "{leftovers:?}");
    }

    #[test]
    fn a_crash_at_any_step_of_the_swap_is_undone_and_the_restore_applied_at_the_next_start() {
        // A crash after `done` renames: the journal and that many moves are on disk.
        for done in 0..=6 {
            let (dir, db, k) = setup();
            let previous = dir.path().join("restore.previous-x");
            let staged = dir.path().join(STAGED);
            let mut moves: Vec<Move> = ["", "-wal", "-shm"]
                .iter()
                .map(|s| Move { from: with_suffix(&db, s), to: with_suffix(&previous.join(STATE_DB), s) })
                .collect();
            moves.push(Move { from: k.clone(), to: previous.join(STATE_KNOWLEDGE) });
            moves.push(Move { from: staged.join(STATE_DB), to: db.clone() });
            moves.push(Move { from: staged.join(STATE_KNOWLEDGE), to: k.clone() });
            let journal = Journal { previous: previous.clone(), moves };
            write_journal(&dir.path().join(JOURNAL), &journal).unwrap();
            for m in &journal.moves[..done] {
                do_move(m).unwrap();
            }
            let a = begin(dir.path(), &db, &k).unwrap().unwrap();
            assert_eq!(read(&db), "new db", "after {done} moves");
            let applied = a.commit().unwrap();
            assert_eq!(read(&applied.previous.join(STATE_DB)), "old db", "after {done} moves");
            assert_eq!(read(&k.join("d2/new")), "new k");
            assert!(!exists(&previous), "the interrupted swap's directory is gone after {done} moves");
        }
    }

    #[test]
    fn a_commit_interrupted_after_its_journal_applies_nothing_again() {
        let (dir, db, k) = setup();
        std::fs::remove_file(dir.path().join(STAGED).join(STATE_DB)).unwrap();
        std::fs::create_dir(dir.path().join(STAGED_TMP)).unwrap();
        assert!(begin(dir.path(), &db, &k).unwrap().is_none());
        assert_old_state(dir.path(), &db, &k);
        assert!(!exists(&dir.path().join(STAGED)));
        assert!(!exists(&dir.path().join(STAGED_TMP)), "an interrupted RestoreBackup's leftover is removed at start");
    }

    /// A real backup archive of a fresh store (and one knowledge file), and its schema version.
    async fn archive(dir: &Path) -> (Vec<u8>, u32) {
        let (store, report) = crate::store::Store::open(&dir.join("src.db")).unwrap();
        let k = dir.join("k");
        std::fs::create_dir_all(k.join("d1/sources")).unwrap();
        std::fs::write(k.join("d1/sources/doc"), b"source text").unwrap();
        let config = dir.join("edgeaid.toml");
        std::fs::write(&config, b"[server]\n").unwrap();
        let snapshot = crate::service::backup::take(&store, Some(&k), std::slice::from_ref(&config)).await.unwrap();
        store.close().await.unwrap();
        let mut out = Vec::new();
        snapshot.write_to(&mut out).unwrap();
        (out, report.schema_version)
    }

    #[tokio::test]
    async fn a_good_archive_is_staged_and_a_bad_or_too_new_one_stages_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let (bytes, schema) = archive(dir.path()).await;

        let err = stage(&bytes[..bytes.len() - 2048], &state, schema).unwrap_err();
        assert!(matches!(err, RestoreError::BadArchive(_)), "{err}");
        let err = stage(bytes.as_slice(), &state, schema - 1).unwrap_err();
        assert!(matches!(err, RestoreError::SchemaTooNew { found, supported } if found == schema && supported == schema - 1), "{err}");
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "nothing staged, no temporary directory left");

        let staged = stage(bytes.as_slice(), &state, schema).unwrap();
        assert_eq!(staged.dir, state.join(STAGED));
        assert_eq!((staged.members, staged.skipped.as_slice(), staged.replaced), (2, ["config/edgeaid.toml".to_owned()].as_slice(), false));
        assert_eq!(std::fs::read(staged.dir.join("knowledge/d1/sources/doc")).unwrap(), b"source text");
        backup_archive::check_database(&staged.dir.join(STATE_DB), schema).unwrap();
        assert!(stage(bytes.as_slice(), &state, schema).unwrap().replaced, "a second restore replaces the staged one");
        let names: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [STAGED]);
    }
}
