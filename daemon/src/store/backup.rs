//! The online snapshot of the database for `edgeaictl backup create`:
//! SQLite's backup API on a dedicated read-only connection.
//!
//! Owns: that connection and the copy's file. The source connection holds
//! one read transaction for the whole copy, so in WAL mode the copy is one
//! consistent snapshot and the writer never waits for it (readers do not
//! block a WAL writer); the copy advances [`BACKUP_PAGES`] pages per step.
//! The copy is left in rollback-journal mode, a standalone file.
//! Must not: run on the writer thread or a pooled reader (a long copy would
//! take one of the few readers away from requests).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{migrations, sql, Store, StoreError};

/// Pages copied per backup step (4 MiB at SQLite's 4 KiB pages).
const BACKUP_PAGES: std::ffi::c_int = 1024;

impl Store {
    /// Copies a consistent snapshot of the database into a new file `dest`
    /// (which must not exist) and returns the snapshot's schema version.
    pub async fn snapshot_to(&self, dest: PathBuf) -> Result<u32, StoreError> {
        let op = "backup";
        let src = self.inner.path.clone();
        tokio::task::spawn_blocking(move || copy(&src, &dest)).await.map_err(|_| StoreError::Panicked { op })?
    }
}

fn copy(src_path: &Path, dest: &Path) -> Result<u32, StoreError> {
    let open_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Open { path, source }
    };
    let src = Connection::open_with_flags(src_path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(open_err(src_path))?;
    src.busy_timeout(Duration::from_secs(5)).map_err(open_err(src_path))?;
    // The read transaction pins one WAL snapshot for the whole copy: the
    // backup never restarts because of concurrent commits.
    src.execute_batch("BEGIN DEFERRED").map_err(sql("backup: begin the snapshot"))?;
    let schema_version = migrations::schema_version(&src)?;
    let mut dst = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err(dest))?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(sql("backup: start"))?;
        loop {
            match backup.step(BACKUP_PAGES).map_err(sql("backup: copy pages"))? {
                StepResult::Done => break,
                StepResult::More => {}
                // Busy or Locked: only the destination can be (it is ours);
                // wait briefly, as SQLite's own backup_run does.
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    src.execute_batch("COMMIT").map_err(sql("backup: end the snapshot"))?;
    // A standalone file: no -wal/-shm beside the copy.
    let _: String = dst.pragma_update_and_check(None, "journal_mode", "DELETE", |row| row.get(0)).map_err(sql("backup: journal mode"))?;
    dst.close().map_err(|(_, e)| e).map_err(sql("backup: close the copy"))?;
    Ok(schema_version)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_copy_is_a_sound_standalone_database() {
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = Store::open(&dir.path().join("t.db")).unwrap();
        let dest = dir.path().join("copy.db");
        let version = store.snapshot_to(dest.clone()).await.unwrap();
        assert_eq!(version, report.schema_version);
        store.close().await.unwrap();
        assert!(!dir.path().join("copy.db-wal").exists());
        let copy = Connection::open(&dest).unwrap();
        let ok: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(ok, "ok");
        let mode: String = copy.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete");
        assert_eq!(migrations::schema_version(&copy).unwrap(), version);
    }
}
