//! The response cache's persisted entries (schema v5): one row per cached
//! answer, so the cache is warm again after a restart.
//!
//! Owns: the `response_cache` table. Writes are queued without waiting (the
//! cache's hit and insert paths never wait for SQLite); a full writer queue
//! is `Busy` for the caller to log.
//! Must not touch: keys, budgets or expiry policy (the cache decides; this
//! keeps rows and returns them newest first).

use rusqlite::{params, Connection};

use super::error::{sql, StoreError};
use super::writer::Done;
use super::Store;

/// One persisted cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRow {
    /// Hex SHA-256 of `cache_key`.
    pub hash: String,
    pub app_id: String,
    pub app_version: u32,
    /// The canonical key the hash is of.
    pub cache_key: String,
    pub answer: String,
    /// The answer stopped at `max_tokens` (replayed with that finish reason).
    pub truncated: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Hash of the key without the query (semantic lookups).
    pub scope: Option<String>,
    /// The model that embedded the query, with `embedding`.
    pub embed_model: Option<String>,
    /// The query's embedding (semantic cache), stored as little-endian f32s.
    pub embedding: Option<Vec<f32>>,
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn apply(conn: &mut Connection, puts: &[CacheRow], deletes: &[String]) -> Result<(), StoreError> {
    let op = "write response cache";
    let tx = conn.savepoint().map_err(sql(op))?;
    {
        let mut del = tx.prepare_cached("DELETE FROM response_cache WHERE hash = ?1").map_err(sql(op))?;
        for h in deletes {
            del.execute([h]).map_err(sql(op))?;
        }
        let mut put = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO response_cache \
                 (hash, app_id, app_version, cache_key, answer, truncated, created_at, scope, embed_model, embedding) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(sql(op))?;
        for r in puts {
            let blob = r.embedding.as_deref().map(to_blob);
            put.execute(params![
                r.hash,
                r.app_id,
                r.app_version,
                r.cache_key,
                r.answer,
                r.truncated,
                r.created_at,
                r.scope,
                r.embed_model,
                blob
            ])
            .map_err(sql(op))?;
        }
    }
    tx.commit().map_err(sql(op))
}

impl Store {
    /// Queues one cached answer and the deletion of the entries it evicted.
    pub fn cache_put(&self, row: CacheRow, evicted: Vec<String>) -> Result<(), StoreError> {
        self.cache_put_many(vec![row], evicted)
    }

    /// Queues inserting `puts` and deleting `deletes` (one transaction);
    /// returns once queued. A failure in SQLite is logged.
    pub fn cache_put_many(&self, puts: Vec<CacheRow>, deletes: Vec<String>) -> Result<(), StoreError> {
        self.submit(Box::new(move |conn: &mut Connection| {
            let applied = apply(conn, &puts, &deletes);
            if let Err(e) = &applied {
                tracing::warn!(error = %crate::telemetry::chain(e), "could not persist response cache entries");
            }
            Done::unanswered(applied.is_ok())
        }))
    }

    /// Queues deleting an app's entries of versions other than `version`.
    pub fn cache_delete_other_versions(&self, app_id: &str, version: u32) -> Result<(), StoreError> {
        let app_id = app_id.to_owned();
        self.submit(Box::new(move |conn: &mut Connection| {
            let deleted = conn.execute("DELETE FROM response_cache WHERE app_id = ?1 AND app_version <> ?2", params![app_id, version]);
            if let Err(e) = &deleted {
                tracing::warn!(app = %app_id, error = %e, "could not delete stale response cache entries");
            }
            Done::unanswered(deleted.is_ok())
        }))
    }

    /// Deletes every entry, or one app's; returns how many rows went.
    pub async fn cache_delete(&self, app_id: Option<String>) -> Result<u64, StoreError> {
        self.write("flush response cache", move |conn| {
            let n = match &app_id {
                Some(a) => conn.execute("DELETE FROM response_cache WHERE app_id = ?1", [a]),
                None => conn.execute("DELETE FROM response_cache", []),
            }
            .map_err(sql("flush response cache"))?;
            Ok(n as u64)
        })
        .await
    }

    /// Every entry created at or after `oldest` (unix seconds), newest first.
    /// Older rows are deleted (they expired while the daemon was down).
    pub async fn cache_load(&self, oldest: i64) -> Result<Vec<CacheRow>, StoreError> {
        self.write("load response cache", move |conn| {
            let op = "load response cache";
            conn.execute("DELETE FROM response_cache WHERE created_at < ?1", [oldest]).map_err(sql(op))?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT hash, app_id, app_version, cache_key, answer, truncated, created_at, scope, embed_model, embedding FROM response_cache \
                     ORDER BY created_at DESC, rowid DESC",
                )
                .map_err(sql(op))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(CacheRow {
                        hash: r.get(0)?,
                        app_id: r.get(1)?,
                        app_version: r.get(2)?,
                        cache_key: r.get(3)?,
                        answer: r.get(4)?,
                        truncated: r.get(5)?,
                        created_at: r.get(6)?,
                        scope: r.get(7)?,
                        embed_model: r.get(8)?,
                        embedding: r.get::<_, Option<Vec<u8>>>(9)?.map(|b| from_blob(&b)),
                    })
                })
                .and_then(Iterator::collect)
                .map_err(sql(op))?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hash: &str, app: &str, version: u32, created_at: i64) -> CacheRow {
        CacheRow {
            hash: hash.into(),
            app_id: app.into(),
            app_version: version,
            cache_key: format!("key of {hash}"),
            answer: format!("answer of {hash}"),
            truncated: false,
            created_at,
            scope: None,
            embed_model: None,
            embedding: None,
        }
    }

    #[tokio::test]
    async fn rows_are_kept_replaced_deleted_and_loaded_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(&dir.path().join("s.db")).expect("store");
        store.cache_put_many(vec![row("h1", "a", 1, 100), row("h2", "a", 2, 300), row("h3", "b", 1, 200)], Vec::new()).expect("queued");
        store.cache_put(row("h4", "b", 1, 50), vec!["h3".into()]).expect("queued");
        store.cache_put(CacheRow { answer: "replaced".into(), ..row("h1", "a", 1, 100) }, Vec::new()).expect("queued");
        let rows = store.cache_load(0).await.expect("load");
        assert_eq!(rows.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>(), ["h2", "h1", "h4"]);
        assert_eq!(rows[1].answer, "replaced");
        assert_eq!(rows[0], row("h2", "a", 2, 300));
        let embedded = CacheRow {
            scope: Some("s".into()),
            embed_model: Some("e5".into()),
            embedding: Some(vec![0.5, -0.25]),
            ..row("h6", "a", 2, 500)
        };
        store.cache_put(embedded.clone(), Vec::new()).expect("queued");
        assert_eq!(store.cache_load(0).await.expect("load")[0], embedded, "the vector round-trips");
        store.cache_put_many(Vec::new(), vec!["h6".into()]).expect("queued");

        store.cache_delete_other_versions("a", 2).expect("queued");
        let rows = store.cache_load(60).await.expect("load");
        assert_eq!(rows.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>(), ["h2"], "h1: other version, h4: expired");
        assert_eq!(store.cache_load(0).await.expect("load").len(), 1, "the expired row was deleted");

        store.cache_put(row("h5", "b", 1, 400), Vec::new()).expect("queued");
        assert_eq!(store.cache_delete(Some("b".into())).await.expect("flush"), 1);
        assert_eq!(store.cache_delete(None).await.expect("flush"), 1);
        assert!(store.cache_load(0).await.expect("load").is_empty());
    }
}
