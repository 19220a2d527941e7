//! The store snapshot of a pending update: taken before the new version's
//! first start (`VACUUM INTO <dir>/update/store-before.db`), so its
//! migrations can be undone; restored by a rollback before any store opens.
//!
//! Owns the files under `<dir>/update/` and the renames of the database
//! file on rollback. Must not: run while the store is open (only the
//! launcher calls it, before `Store::open`), or ever delete a database the
//! new version wrote: it is kept as `update/rolled-back-<version>.db`.

use std::path::{Path, PathBuf};

use super::carry::{self, Carried};
use super::state::sync_dir;
use super::UpdateError;

/// The snapshot's file under `<dir>/update/`.
pub const SNAPSHOT: &str = "store-before.db";

/// `<dir>/update`.
pub fn update_dir(dir: &Path) -> PathBuf {
    dir.join("update")
}

/// `<dir>/update/store-before.db`.
pub fn snapshot_path(dir: &Path) -> PathBuf {
    update_dir(dir).join(SNAPSHOT)
}

fn io(what: &'static str, p: &Path) -> impl FnOnce(std::io::Error) -> UpdateError {
    let p = p.to_path_buf();
    move |source| UpdateError::Io { what, path: p, source }
}

fn sqlite(what: &'static str, p: &Path) -> impl FnOnce(rusqlite::Error) -> UpdateError {
    let p = p.to_path_buf();
    move |source| UpdateError::Sqlite { what, path: p, source }
}

/// Removes a file that may not exist.
fn remove_if_present(p: &Path) -> Result<(), UpdateError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UpdateError::Io { what: "removing", path: p.to_path_buf(), source }),
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Takes the snapshot of the store at `store`. `Ok(false)` when there is no
/// store yet (nothing to undo: a rollback then only sets the new one aside).
/// The copy is consistent (SQLite's `VACUUM INTO` reads one transaction,
/// the WAL included), fsynced, and replaces an older snapshot.
pub fn take(store: &Path, dir: &Path) -> Result<bool, UpdateError> {
    if !store.exists() {
        return Ok(false);
    }
    let udir = update_dir(dir);
    std::fs::create_dir_all(&udir).map_err(io("creating the update directory", &udir))?;
    let snap = snapshot_path(dir);
    let tmp = udir.join(format!(".{SNAPSHOT}.tmp"));
    remove_if_present(&tmp)?;
    let conn = rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sqlite("opening the store for its snapshot", store))?;
    let target = tmp.to_str().ok_or_else(|| UpdateError::Io {
        what: "naming the snapshot",
        path: tmp.clone(),
        source: std::io::Error::other("the path is not UTF-8"),
    })?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(sqlite("copying the store (VACUUM INTO)", &tmp))?;
    drop(conn);
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io("syncing the snapshot", &tmp))?;
    std::fs::rename(&tmp, &snap).map_err(io("renaming the snapshot into place", &snap))?;
    sync_dir(&udir)?;
    Ok(true)
}

/// What a rollback did to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Where the new version's database went (with its `-wal`, checkpointed
    /// into it when possible); `None` when there was no live database.
    pub kept: Option<PathBuf>,
    /// Whether the snapshot was copied back (false: there was no store
    /// before the switch, so none is live now).
    pub restored: bool,
    /// The failed version's rows carried into the restored store
    /// ([`carry`](super::carry)): `None` when nothing was restored or there
    /// was no live database; `Some(Err(why))` when the copy failed (the
    /// restored store is then the snapshot as it was; the rows stay in `kept`).
    pub carried: Option<Result<Carried, String>>,
}

/// Undoes the pending version's store changes: a copy of the snapshot is
/// staged beside the store, the failed version's conversations, messages,
/// runs and audit entries are carried into it ([`carry`](super::carry)),
/// the live database (and its `-wal`) is renamed to
/// `update/rolled-back-<version>.db` (never over an existing file: `-2`,
/// `-3`, ... then), its `-shm` removed, and the staged copy (fsynced) is
/// renamed into its place. `had_store` false: there was no store before the switch, so
/// nothing is put back. Repeating it after a crash is safe: the live file
/// is set aside again under a new name and the snapshot copied again.
pub fn restore(store: &Path, dir: &Path, version: &str, had_store: bool) -> Result<Restored, UpdateError> {
    let udir = update_dir(dir);
    std::fs::create_dir_all(&udir).map_err(io("creating the update directory", &udir))?;
    let snap = snapshot_path(dir);
    if had_store && !snap.exists() {
        return Err(UpdateError::SnapshotMissing { path: snap });
    }
    let store_dir = store.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // 1. The snapshot's copy, ready beside the store (same filesystem for the rename).
    let staged = with_suffix(store, ".rollback-tmp");
    let mut carried = None;
    if had_store {
        std::fs::copy(&snap, &staged).map_err(io("copying the snapshot", &staged))?;
        if store.exists() {
            // Into the staged copy only: a crash here leaves the live store as it was.
            let outcome = carry::carry(store, &staged).map_err(|e| crate::telemetry::chain(&e));
            if let Err(e) = &outcome {
                tracing::error!(
                    error = %e,
                    "update: the failed version's messages could not be carried into the restored store; they stay in the kept database"
                );
            }
            carried = Some(outcome);
        }
        std::fs::File::open(&staged).and_then(|f| f.sync_all()).map_err(io("syncing the snapshot's copy", &staged))?;
    }
    // 2. The new version's database aside, with its WAL (it holds committed rows).
    let kept = if store.exists() {
        let base = format!("rolled-back-{}", safe_name(version));
        let mut kept = udir.join(format!("{base}.db"));
        let mut n = 2;
        while kept.exists() || with_suffix(&kept, "-wal").exists() {
            kept = udir.join(format!("{base}-{n}.db"));
            n += 1;
        }
        std::fs::rename(store, &kept).map_err(io("setting the new version's database aside", &kept))?;
        let wal = with_suffix(store, "-wal");
        if wal.exists() {
            std::fs::rename(&wal, with_suffix(&kept, "-wal")).map_err(io("setting the new version's WAL aside", &wal))?;
        }
        sync_dir(&udir)?;
        Some(kept)
    } else {
        None
    };
    remove_if_present(&with_suffix(store, "-wal"))?;
    remove_if_present(&with_suffix(store, "-shm"))?;
    // 3. The snapshot's copy into place.
    if had_store {
        std::fs::rename(&staged, store).map_err(io("renaming the snapshot's copy into place", store))?;
    }
    sync_dir(store_dir)?;
    // 4. Fold the kept database's WAL into it, so it is one self-contained
    //    file (best effort: the pair is complete either way).
    if let Some(k) = &kept {
        if let Err(e) = checkpoint(k) {
            tracing::warn!(kept = %k.display(), error = %e, "the rolled-back database keeps its -wal beside it");
        }
    }
    Ok(Restored { kept, restored: had_store, carried })
}

/// Checkpoints a WAL database into its main file and switches it to a
/// rollback journal, so it stands alone.
fn checkpoint(db: &Path) -> Result<(), UpdateError> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sqlite("opening the rolled-back database", db))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(sqlite("checkpointing the rolled-back database", db))?;
    conn.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(())).map_err(sqlite("leaving WAL mode", db))?;
    Ok(())
}

/// Removes the snapshot (after a commit, or once a rollback restored it).
pub fn discard(dir: &Path) -> Result<(), UpdateError> {
    remove_if_present(&snapshot_path(dir))?;
    let udir = update_dir(dir);
    if udir.exists() {
        sync_dir(&udir)?;
    }
    Ok(())
}

/// A version as a file name part: ASCII letters, digits, `.`, `_`, `-`; the
/// rest become `_`.
fn safe_name(version: &str) -> String {
    let s: String =
        version.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    if s.is_empty() {
        "unknown".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    fn db(path: &Path) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        c
    }

    fn rows(path: &Path) -> Vec<String> {
        let c = rusqlite::Connection::open(path).unwrap();
        let mut st = c.prepare("SELECT body FROM messages ORDER BY id").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn snapshot_then_restore_undoes_a_migration_and_keeps_the_new_rows_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("edgeai.db");
        let dir = tmp.path();
        {
            let c = db(&store);
            c.execute_batch("CREATE TABLE messages(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO messages(body) VALUES ('old');")
                .unwrap();
            // The connection stays open while the snapshot is taken from another:
            // the row sits in the WAL, and VACUUM INTO still sees it.
            assert!(take(&store, dir).unwrap());
            c.execute_batch("ALTER TABLE messages ADD COLUMN v2 TEXT; INSERT INTO messages(body, v2) VALUES ('new', 'x');").unwrap();
        }
        assert!(snapshot_path(dir).exists());
        let r = restore(&store, dir, "1.2.0", true).unwrap();
        let kept = r.kept.unwrap();
        assert_eq!(kept, dir.join("update/rolled-back-1.2.0.db"));
        assert!(r.restored);
        assert_eq!(rows(&store), vec!["old"]);
        assert_eq!(rows(&kept), vec!["old", "new"]);
        // The live database has the old schema back.
        let c = rusqlite::Connection::open(&store).unwrap();
        assert!(c.prepare("SELECT v2 FROM messages").is_err());
        // A second rollback of the same version never overwrites the kept one.
        let again = restore(&store, dir, "1.2.0", true).unwrap();
        assert_eq!(again.kept.unwrap(), dir.join("update/rolled-back-1.2.0-2.db"));
        assert_eq!(rows(&kept), vec!["old", "new"]);
        discard(dir).unwrap();
        assert!(!snapshot_path(dir).exists());
    }

    #[test]
    fn no_store_before_means_nothing_to_snapshot_and_the_new_one_is_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("edgeai.db");
        assert!(!take(&store, tmp.path()).unwrap());
        db(&store)
            .execute_batch("CREATE TABLE messages(id INTEGER PRIMARY KEY, body TEXT); INSERT INTO messages(body) VALUES ('new');")
            .unwrap();
        let r = restore(&store, tmp.path(), "../2 beta", false).unwrap();
        assert!(!store.exists());
        assert!(!r.restored);
        assert_eq!(r.kept.unwrap(), tmp.path().join("update/rolled-back-.._2_beta.db"));
    }

    #[test]
    fn a_missing_snapshot_is_an_error_and_leaves_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("edgeai.db");
        db(&store).execute_batch("CREATE TABLE t(x)").unwrap();
        let e = restore(&store, tmp.path(), "1", true).unwrap_err().to_string();
        assert!(e.contains("store-before.db"), "{e}");
        assert!(store.exists());
    }
}
