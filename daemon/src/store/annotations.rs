//! Annotation replies (schema v4): an app's curated question/answer pairs
//! and its annotation settings, as Dify's `/apps/annotations` and
//! `/apps/annotation-reply/{action}` keep them.
//!
//! Owns: the `annotations` and `app_annotation_settings` tables. An
//! annotation's rowid keys its question's vector (kept by the caller in a
//! vector file, like segments); it is never reused.
//! Must not touch: embeddings, matching (the service compares a query's
//! embedding with the questions' and applies the threshold).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::apps::require_app;
use super::error::{sql, StoreError};
use super::workflows::like_pattern;
use super::{lock, now, require_limit, require_non_empty, Store};

/// An annotation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationRecord {
    /// Its key in the annotation vector file.
    pub rowid: i64,
    /// UUID.
    pub id: String,
    pub app_id: String,
    pub question: String,
    pub answer: String,
    /// How many queries it answered.
    pub hit_count: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An app's annotation reply settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotationSettings {
    pub app_id: String,
    pub enabled: bool,
    /// A query's similarity to a question must reach this (0..=1).
    pub score_threshold: f32,
    /// Identity of the embedding model the questions' vectors come from.
    pub embedding_model: Option<String>,
    pub updated_at: i64,
}

const COLUMNS: &str = "rowid, id, app_id, question, answer, hit_count, created_at, updated_at";

fn annotation_from_row(row: &Row<'_>) -> rusqlite::Result<AnnotationRecord> {
    Ok(AnnotationRecord {
        rowid: row.get(0)?,
        id: row.get(1)?,
        app_id: row.get(2)?,
        question: row.get(3)?,
        answer: row.get(4)?,
        hit_count: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn find_annotation(conn: &Connection, app_id: &str, id: &str) -> Result<AnnotationRecord, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM annotations WHERE id = ?1 AND app_id = ?2"))
        .and_then(|mut stmt| stmt.query_row([id, app_id], annotation_from_row).optional())
        .map_err(sql("get annotation"))?
        .ok_or_else(|| StoreError::NotFound { what: "annotation", id: id.to_owned() })
}

fn require_pair(question: &str, answer: &str) -> Result<(), StoreError> {
    require_non_empty("question", question)?;
    require_non_empty("answer", answer)
}

impl Store {
    /// Adds an annotation to an existing app.
    pub async fn create_annotation(&self, app_id: &str, question: &str, answer: &str) -> Result<AnnotationRecord, StoreError> {
        require_pair(question, answer)?;
        let (app_id, question, answer) = (app_id.to_owned(), question.to_owned(), answer.to_owned());
        let id = uuid::Uuid::new_v4().to_string();
        self.write("create annotation", move |conn| {
            require_app(conn, &app_id)?;
            conn.execute(
                "INSERT INTO annotations (id, app_id, question, answer, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![id, app_id, question, answer, now()],
            )
            .map_err(sql("create annotation"))?;
            find_annotation(conn, &app_id, &id)
        })
        .await
    }

    /// A page of an app's annotations, newest first, whose question or
    /// answer contains `keyword`, and how many match in all.
    pub async fn list_annotations(
        &self,
        app_id: &str,
        page: u32,
        limit: u32,
        keyword: Option<&str>,
    ) -> Result<(Vec<AnnotationRecord>, i64), StoreError> {
        require_limit(limit)?;
        if page == 0 {
            return Err(StoreError::InvalidArgument { field: "page", reason: "must be at least 1".into() });
        }
        let offset = i64::from(page - 1) * i64::from(limit);
        let pattern = keyword.filter(|k| !k.is_empty()).map(like_pattern);
        let app_id = app_id.to_owned();
        self.read("list annotations", move |conn| {
            let op = "list annotations";
            const WHERE: &str = "WHERE app_id = ?1 AND (?2 IS NULL OR question LIKE ?2 ESCAPE '\\' OR answer LIKE ?2 ESCAPE '\\')";
            let snapshot = conn.unchecked_transaction().map_err(sql(op))?;
            require_app(&snapshot, &app_id)?;
            let total = snapshot
                .prepare_cached(&format!("SELECT count(*) FROM annotations {WHERE}"))
                .and_then(|mut stmt| stmt.query_row(params![app_id, pattern], |row| row.get(0)))
                .map_err(sql(op))?;
            let data = snapshot
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM annotations {WHERE} ORDER BY created_at DESC, rowid DESC LIMIT ?3 OFFSET ?4"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![app_id, pattern, limit, offset], annotation_from_row)?.collect::<Result<Vec<_>, _>>()
                })
                .map_err(sql(op))?;
            Ok((data, total))
        })
        .await
    }

    /// One annotation of an app.
    pub async fn get_annotation(&self, app_id: &str, id: &str) -> Result<AnnotationRecord, StoreError> {
        let (app_id, id) = (app_id.to_owned(), id.to_owned());
        self.read("get annotation", move |conn| find_annotation(conn, &app_id, &id)).await
    }

    /// The annotations of an app among `rowids` (vector hits), in the order
    /// given; unknown ones and other apps' are left out.
    pub async fn annotations_by_rowids(&self, app_id: &str, rowids: &[i64]) -> Result<Vec<AnnotationRecord>, StoreError> {
        if rowids.is_empty() {
            return Ok(Vec::new());
        }
        let app_id = app_id.to_owned();
        let order = rowids.to_vec();
        let list = serde_json::to_string(rowids).map_err(|e| StoreError::InvalidArgument { field: "rowids", reason: e.to_string() })?;
        self.read("annotations by rowids", move |conn| {
            let mut found: std::collections::HashMap<i64, AnnotationRecord> = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM annotations WHERE app_id = ?1 AND rowid IN (SELECT value FROM json_each(?2))"
                ))
                .and_then(|mut stmt| stmt.query_map(params![app_id, list], |row| annotation_from_row(row).map(|a| (a.rowid, a)))?.collect())
                .map_err(sql("annotations by rowids"))?;
            Ok(order.iter().filter_map(|rowid| found.remove(rowid)).collect())
        })
        .await
    }

    /// Replaces an annotation's question and answer (its vector is the
    /// caller's to renew, under the same rowid).
    pub async fn update_annotation(&self, app_id: &str, id: &str, question: &str, answer: &str) -> Result<AnnotationRecord, StoreError> {
        require_pair(question, answer)?;
        let (app_id, id, question, answer) = (app_id.to_owned(), id.to_owned(), question.to_owned(), answer.to_owned());
        self.write("update annotation", move |conn| {
            let changed = conn
                .execute(
                    "UPDATE annotations SET question = ?3, answer = ?4, updated_at = ?5 WHERE id = ?1 AND app_id = ?2",
                    params![id, app_id, question, answer, now()],
                )
                .map_err(sql("update annotation"))?;
            if changed == 0 {
                return Err(StoreError::NotFound { what: "annotation", id });
            }
            find_annotation(conn, &app_id, &id)
        })
        .await
    }

    /// Deletes an annotation of an app; returns its rowid (its vector is to
    /// be tombstoned).
    pub async fn delete_annotation(&self, app_id: &str, id: &str) -> Result<i64, StoreError> {
        let (app_id, id) = (app_id.to_owned(), id.to_owned());
        self.write("delete annotation", move |conn| {
            conn.query_row("DELETE FROM annotations WHERE id = ?1 AND app_id = ?2 RETURNING rowid", [&id, &app_id], |row| row.get(0))
                .optional()
                .map_err(sql("delete annotation"))?
                .ok_or(StoreError::NotFound { what: "annotation", id })
        })
        .await
    }

    /// Counts one reply given from an annotation (unknown rowids are ignored).
    pub async fn increment_annotation_hit(&self, rowid: i64) -> Result<(), StoreError> {
        self.write("increment annotation hit", move |conn| {
            conn.execute("UPDATE annotations SET hit_count = hit_count + 1 WHERE rowid = ?1", [rowid])
                .map(drop)
                .map_err(sql("increment annotation hit"))
        })
        .await
    }

    /// An app's annotation settings; `None` if never set (replies are off).
    /// Kept in memory after the first read ([`SETTINGS_MEMO_MAX`]): every
    /// chat turn asks.
    pub async fn annotation_settings(&self, app_id: &str) -> Result<Option<AnnotationSettings>, StoreError> {
        let (kept, generation) = lock(&self.inner.annotation_memo).get(&app_id.to_owned());
        if let Some(settings) = kept {
            return Ok(settings);
        }
        let id = app_id.to_owned();
        let settings = self
            .read("annotation settings", move |conn| {
                conn.prepare_cached(
                    "SELECT app_id, enabled, score_threshold, embedding_model, updated_at FROM app_annotation_settings WHERE app_id = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.query_row([&id], |row| {
                        Ok(AnnotationSettings {
                            app_id: row.get(0)?,
                            enabled: row.get(1)?,
                            score_threshold: row.get::<_, f64>(2)? as f32,
                            embedding_model: row.get(3)?,
                            updated_at: row.get(4)?,
                        })
                    })
                    .optional()
                })
                .map_err(sql("annotation settings"))
            })
            .await?;
        lock(&self.inner.annotation_memo).fill(generation, app_id.to_owned(), settings.clone());
        Ok(settings)
    }

    /// Turns an existing app's annotation replies on or off with their
    /// threshold (0..=1) and the embedding model of the questions' vectors.
    pub async fn set_annotation_settings(
        &self,
        app_id: &str,
        enabled: bool,
        score_threshold: f32,
        embedding_model: Option<&str>,
    ) -> Result<AnnotationSettings, StoreError> {
        if !(0.0..=1.0).contains(&score_threshold) {
            return Err(StoreError::InvalidArgument { field: "score_threshold", reason: format!("{score_threshold} is outside 0..=1") });
        }
        let settings = AnnotationSettings {
            app_id: app_id.to_owned(),
            enabled,
            score_threshold,
            embedding_model: embedding_model.map(str::to_owned),
            updated_at: now(),
        };
        let inner = std::sync::Arc::clone(&self.inner);
        self.write("set annotation settings", move |conn| {
            let s = settings;
            require_app(conn, &s.app_id)?;
            conn.execute(
                "INSERT INTO app_annotation_settings (app_id, enabled, score_threshold, embedding_model, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (app_id) DO UPDATE SET enabled = ?2, score_threshold = ?3, embedding_model = ?4, updated_at = ?5",
                params![s.app_id, s.enabled, f64::from(s.score_threshold), s.embedding_model, s.updated_at],
            )
            .map_err(sql("set annotation settings"))?;
            // On the writer thread, so the memo sees changes in commit order.
            lock(&inner.annotation_memo).set(s.app_id.clone(), Some(s.clone()));
            Ok(s)
        })
        .await
    }
}

/// Apps whose annotation settings are kept in memory (a few hundred bytes
/// each).
pub(super) const SETTINGS_MEMO_MAX: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{open_store, TestStore};

    #[tokio::test]
    async fn annotations_crud_paging_and_scoping() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        store.put_app("a2", "B", "chat", "{}", "config").await.expect("app");
        let one = store.create_annotation("a1", "How do I clear the PLC alarm?", "Press RESET for 3 s.").await.expect("one");
        let two = store.create_annotation("a1", "如何清除报警", "按复位键3秒").await.expect("two");
        let other = store.create_annotation("a2", "q", "a").await.expect("other");
        assert!(two.rowid > one.rowid);
        assert_eq!((one.hit_count, one.app_id.as_str()), (0, "a1"));

        let (page, total) = store.list_annotations("a1", 1, 1, None).await.expect("page");
        assert_eq!((page[0].id.as_str(), total), (two.id.as_str(), 2));
        let (page, total) = store.list_annotations("a1", 1, 10, Some("reset")).await.expect("keyword");
        assert_eq!((page.len(), total, page[0].id.as_str()), (1, 1, one.id.as_str()));
        let (page, _) = store.list_annotations("a1", 1, 10, Some("报警")).await.expect("keyword zh");
        assert_eq!(page[0].id, two.id);

        let by_rowids = store.annotations_by_rowids("a1", &[two.rowid, other.rowid, one.rowid, 99]).await.expect("rowids");
        assert_eq!(by_rowids.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), [two.id.as_str(), one.id.as_str()]);

        let updated = store.update_annotation("a1", &one.id, "How to reset?", "Hold RESET.").await.expect("update");
        assert_eq!((updated.rowid, updated.question.as_str(), updated.answer.as_str()), (one.rowid, "How to reset?", "Hold RESET."));
        store.increment_annotation_hit(one.rowid).await.expect("hit");
        assert_eq!(store.get_annotation("a1", &one.id).await.expect("get").hit_count, 1);

        // Another app's annotation is not found through this app.
        for err in [
            store.get_annotation("a1", &other.id).await.expect_err("get"),
            store.update_annotation("a1", &other.id, "q", "a").await.expect_err("update"),
            store.delete_annotation("a1", &other.id).await.expect_err("delete"),
        ] {
            assert!(matches!(err, StoreError::NotFound { what: "annotation", .. }), "{err:?}");
        }
        assert_eq!(store.delete_annotation("a1", &one.id).await.expect("delete"), one.rowid);
        assert_eq!(store.list_annotations("a1", 1, 10, None).await.expect("list").1, 1);

        let err = store.create_annotation("a1", "", "a").await.expect_err("empty question");
        assert!(matches!(err, StoreError::InvalidArgument { field: "question", .. }), "{err:?}");
        let err = store.create_annotation("ghost", "q", "a").await.expect_err("unknown app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        let err = store.list_annotations("a1", 0, 10, None).await.expect_err("page 0");
        assert!(matches!(err, StoreError::InvalidArgument { field: "page", .. }), "{err:?}");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn annotation_settings_are_upserted_and_checked() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        assert_eq!(store.annotation_settings("a1").await.expect("none"), None);
        let on = store.set_annotation_settings("a1", true, 0.8, Some("local:e5@abc")).await.expect("on");
        assert_eq!(store.annotation_settings("a1").await.expect("get"), Some(on));
        store.set_annotation_settings("a1", false, 0.5, None).await.expect("off");
        let off = store.annotation_settings("a1").await.expect("get").expect("set");
        assert_eq!((off.enabled, off.score_threshold, off.embedding_model), (false, 0.5, None));
        for bad in [-0.1, 1.5, f32::NAN] {
            let err = store.set_annotation_settings("a1", true, bad, None).await.expect_err("threshold");
            assert!(matches!(err, StoreError::InvalidArgument { field: "score_threshold", .. }), "{err:?}");
        }
        let err = store.set_annotation_settings("ghost", true, 0.5, None).await.expect_err("unknown app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        store.close().await.expect("close");
    }
}
