//! The database's self-check for `edgeaictl doctor`: `PRAGMA integrity_check`
//! and `PRAGMA foreign_key_check`, run on a pooled read-only connection.
//!
//! Owns: those two pragmas and what they found. Must not: run on the writer
//! (a long check would stall every write) or repair anything.

use super::{sql, Store, StoreError};

/// At most this many problems of each check are kept (SQLite's own default
/// for `integrity_check` is 100; a report of thousands helps nobody).
const MAX_PROBLEMS: usize = 20;

/// What the two checks found; both empty means the file is sound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Integrity {
    /// Lines of `integrity_check` other than `ok`.
    pub problems: Vec<String>,
    /// Rows of `foreign_key_check`, as `table rowid N -> parent`.
    pub foreign_keys: Vec<String>,
}

impl Store {
    /// The database file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.inner.path
    }

    /// Runs `integrity_check` and `foreign_key_check` on a reader connection.
    pub async fn integrity(&self) -> Result<Integrity, StoreError> {
        self.read("integrity check", |conn| {
            let op = "integrity check";
            let mut stmt = conn.prepare(&format!("PRAGMA integrity_check({MAX_PROBLEMS})")).map_err(sql(op))?;
            let problems = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(sql(op))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql(op))?
                .into_iter()
                .filter(|line| line != "ok")
                .collect();
            let op = "foreign key check";
            let mut stmt = conn.prepare("PRAGMA foreign_key_check").map_err(sql(op))?;
            let foreign_keys = stmt
                .query_map([], |row| {
                    let table: String = row.get(0)?;
                    let rowid: Option<i64> = row.get(1)?;
                    let parent: String = row.get(2)?;
                    Ok(format!("{table} rowid {} -> {parent}", rowid.map_or_else(|| "?".to_owned(), |r| r.to_string())))
                })
                .map_err(sql(op))?
                .take(MAX_PROBLEMS)
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql(op))?;
            Ok(Integrity { problems, foreign_keys })
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_store_is_sound() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(store.integrity().await.unwrap(), Integrity::default());
        store.close().await.unwrap();
    }
}
