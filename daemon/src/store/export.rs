//! Reads for the log export (`edgeaictl export logs`): messages with their
//! conversation and feedback, and workflow runs, in keyset-paged batches.
//!
//! Owns: the export's SELECTs. Each page is one short read on the reader
//! pool (never the writer), keyed by rowid: a page starts after the last
//! rowid of the one before, so paging costs one pass over the table however
//! many pages there are, and no row is skipped or repeated while others are
//! inserted. An export stops at the highest rowid it saw when it started,
//! so a busy daemon cannot make it run forever.
//! Must not touch: Arrow, Parquet or HTTP (the service's `export` module
//! encodes the rows).

use rusqlite::{params, Row};

use super::apps::require_app;
use super::error::{sql, StoreError};
use super::{MessageStatus, Rating, Store, WorkflowRunStatus};

/// Which rows to export; times are unix seconds, both ends included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only this app's rows (it must exist).
    pub app_id: Option<String>,
    /// Only rows created at or after this second.
    pub since: Option<i64>,
    /// Only rows created at or before this second.
    pub until: Option<i64>,
}

/// The exported tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTable {
    /// `messages`, one row per message.
    Messages,
    /// `workflow_runs`, one row per run.
    WorkflowRuns,
}

/// Where an export is: after `after`, up to `end` (rowids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    after: i64,
    end: i64,
}

/// One exported message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLogRow {
    /// Message id.
    pub id: String,
    /// The conversation (none for completion apps).
    pub conversation_id: Option<String>,
    /// The conversation's name.
    pub conversation_name: Option<String>,
    /// The app.
    pub app_id: String,
    /// The end user.
    pub user: String,
    /// The query.
    pub query: String,
    /// The answer.
    pub answer: String,
    /// Status.
    pub status: MessageStatus,
    /// Error text.
    pub error: Option<String>,
    /// Tokens read.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Wall time of the generation.
    pub latency_ms: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Feedback rating, if given.
    pub rating: Option<Rating>,
    /// Feedback text.
    pub feedback: Option<String>,
}

/// One exported workflow run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLogRow {
    /// Run id.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// The app version it ran.
    pub app_version: u32,
    /// That version's workflow id.
    pub workflow_id: String,
    /// The end user.
    pub user: String,
    /// Status.
    pub status: WorkflowRunStatus,
    /// Error text.
    pub error: Option<String>,
    /// Wall time in seconds.
    pub elapsed_secs: f64,
    /// Tokens used.
    pub total_tokens: i64,
    /// Nodes executed.
    pub total_steps: u32,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix seconds; `None` while running.
    pub finished_at: Option<i64>,
    /// Dify's `triggered_from`.
    pub triggered_from: String,
    /// The conversation, for chatflow runs.
    pub conversation_id: Option<String>,
    /// The message, for chatflow runs.
    pub message_id: Option<String>,
}

const MESSAGE_PAGE: &str = "SELECT m.rowid, m.id, m.conversation_id, c.name, m.app_id, m.user, m.query, m.answer, m.status, m.error,
        m.prompt_tokens, m.completion_tokens, m.latency_ms, m.created_at, f.rating, f.content
   FROM messages m
   LEFT JOIN conversations c ON c.id = m.conversation_id
   LEFT JOIN feedbacks f ON f.message_id = m.id
  WHERE m.rowid > ?1 AND m.rowid <= ?2
    AND (?3 IS NULL OR m.app_id = ?3) AND (?4 IS NULL OR m.created_at >= ?4) AND (?5 IS NULL OR m.created_at <= ?5)
  ORDER BY m.rowid LIMIT ?6";

const RUN_PAGE: &str = "SELECT rowid, id, app_id, app_version, workflow_id, user, status, error, elapsed_secs, total_tokens,
        total_steps, created_at_ms, finished_at, triggered_from, conversation_id, message_id
   FROM workflow_runs
  WHERE rowid > ?1 AND rowid <= ?2
    AND (?3 IS NULL OR app_id = ?3) AND (?4 IS NULL OR created_at >= ?4) AND (?5 IS NULL OR created_at <= ?5)
  ORDER BY rowid LIMIT ?6";

fn message_row(row: &Row<'_>) -> rusqlite::Result<(i64, MessageLogRow)> {
    Ok((
        row.get(0)?,
        MessageLogRow {
            id: row.get(1)?,
            conversation_id: row.get(2)?,
            conversation_name: row.get(3)?,
            app_id: row.get(4)?,
            user: row.get(5)?,
            query: row.get(6)?,
            answer: row.get(7)?,
            status: row.get(8)?,
            error: row.get(9)?,
            prompt_tokens: row.get(10)?,
            completion_tokens: row.get(11)?,
            latency_ms: row.get(12)?,
            created_at: row.get(13)?,
            rating: row.get(14)?,
            feedback: row.get(15)?,
        },
    ))
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<(i64, RunLogRow)> {
    Ok((
        row.get(0)?,
        RunLogRow {
            id: row.get(1)?,
            app_id: row.get(2)?,
            app_version: row.get(3)?,
            workflow_id: row.get(4)?,
            user: row.get(5)?,
            status: row.get(6)?,
            error: row.get(7)?,
            elapsed_secs: row.get(8)?,
            total_tokens: row.get(9)?,
            total_steps: row.get(10)?,
            created_at_ms: row.get(11)?,
            finished_at: row.get(12)?,
            triggered_from: row.get(13)?,
            conversation_id: row.get(14)?,
            message_id: row.get(15)?,
        },
    ))
}

impl Store {
    /// Starts an export of `table`: checks the filter (`NotFound` for an
    /// unknown app, `InvalidArgument` when `since` is after `until`) and
    /// returns a cursor that ends at the table's current last row.
    pub async fn begin_log_export(&self, table: LogTable, filter: &LogFilter) -> Result<LogCursor, StoreError> {
        if let (Some(since), Some(until)) = (filter.since, filter.until) {
            if since > until {
                return Err(StoreError::InvalidArgument { field: "since", reason: format!("{since} is after until ({until})") });
            }
        }
        let app_id = filter.app_id.clone();
        self.read("begin log export", move |conn| {
            let op = "begin log export";
            if let Some(app_id) = &app_id {
                require_app(conn, app_id)?;
            }
            let max = match table {
                LogTable::Messages => "SELECT coalesce(max(rowid), 0) FROM messages",
                LogTable::WorkflowRuns => "SELECT coalesce(max(rowid), 0) FROM workflow_runs",
            };
            let end = conn.prepare_cached(max).and_then(|mut stmt| stmt.query_row([], |row| row.get(0))).map_err(sql(op))?;
            Ok(LogCursor { after: 0, end })
        })
        .await
    }

    /// The next at most `limit` messages of an export (empty: done).
    pub async fn message_log_page(&self, filter: &LogFilter, cursor: &mut LogCursor, limit: u32) -> Result<Vec<MessageLogRow>, StoreError> {
        let rows = self.log_page("message log page", MESSAGE_PAGE, filter, *cursor, limit, message_row).await?;
        Ok(advance(cursor, rows))
    }

    /// The next at most `limit` workflow runs of an export (empty: done).
    pub async fn run_log_page(&self, filter: &LogFilter, cursor: &mut LogCursor, limit: u32) -> Result<Vec<RunLogRow>, StoreError> {
        let rows = self.log_page("run log page", RUN_PAGE, filter, *cursor, limit, run_row).await?;
        Ok(advance(cursor, rows))
    }

    async fn log_page<T: Send + 'static>(
        &self,
        op: &'static str,
        query: &'static str,
        filter: &LogFilter,
        cursor: LogCursor,
        limit: u32,
        from_row: fn(&Row<'_>) -> rusqlite::Result<(i64, T)>,
    ) -> Result<Vec<(i64, T)>, StoreError> {
        if limit == 0 {
            return Err(StoreError::InvalidArgument { field: "limit", reason: "must be at least 1".into() });
        }
        let filter = filter.clone();
        self.read(op, move |conn| {
            let mut stmt = conn.prepare_cached(query).map_err(sql(op))?;
            let params = params![cursor.after, cursor.end, filter.app_id, filter.since, filter.until, limit];
            let rows = stmt.query_map(params, from_row).map_err(sql(op))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))
        })
        .await
    }
}

/// Moves the cursor past the page and drops the rowids.
fn advance<T>(cursor: &mut LogCursor, rows: Vec<(i64, T)>) -> Vec<T> {
    if let Some((last, _)) = rows.last() {
        cursor.after = *last;
    }
    rows.into_iter().map(|(_, row)| row).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use std::collections::HashSet;

    use super::super::testutil::open_store;
    use super::*;

    /// `n` messages of app `a1` (every third in conversation `c1`, created
    /// at second 1000 + i, ids `m{i}`) and `n` runs, written directly.
    fn seed(db: &std::path::Path, n: usize) {
        let mut conn = rusqlite::Connection::open(db).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(
            "INSERT INTO apps VALUES ('a1', 'A', 'chat', 1, 1, 1);
             INSERT INTO apps VALUES ('a2', 'B', 'chat', 1, 1, 1);
             INSERT INTO conversations VALUES ('c1', 'a1', 'u', 'Pumps', '{}', 1, 1);",
        )
        .unwrap();
        for i in 0..n {
            let conversation = (i % 3 == 0).then_some("c1");
            tx.execute(
                "INSERT INTO messages (id, app_id, conversation_id, user, task_id, query, inputs, answer, prompt_tokens,
                                       completion_tokens, latency_ms, status, error, created_at, updated_at)
                 VALUES (?1, 'a1', ?2, 'u', 't', 'q', '{}', 'a', ?3, 2, 5, 'normal', NULL, ?4, ?4)",
                params![format!("m{i}"), conversation, i as i64, 1000 + i as i64],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO workflow_runs (id, app_id, app_version, workflow_id, task_id, user, triggered_from, inputs,
                                            status, created_at, created_at_ms)
                 VALUES (?1, 'a1', 1, 'w', 't', 'u', 'app-run', '{}', 'succeeded', ?2, ?3)",
                params![format!("r{i}"), 1000 + i as i64, (1000 + i as i64) * 1000],
            )
            .unwrap();
        }
        tx.execute("INSERT INTO feedbacks VALUES ('m7', 'u', 'dislike', 'too long', 1, 1)", []).unwrap();
        tx.commit().unwrap();
    }

    #[tokio::test]
    async fn keyset_pages_lose_and_repeat_no_row() {
        let t = open_store();
        let n = 10_000;
        seed(&t._dir.path().join("edgeai.db"), n);
        let filter = LogFilter::default();

        let mut cursor = t.store.begin_log_export(LogTable::Messages, &filter).await.unwrap();
        let (mut seen, mut pages) = (Vec::new(), 0);
        loop {
            let page = t.store.message_log_page(&filter, &mut cursor, 4096).await.unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 4096);
            pages += 1;
            seen.extend(page);
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), n);
        let ids: HashSet<&str> = seen.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids.len(), n, "a row came twice");
        assert!((0..n).all(|i| ids.contains(format!("m{i}").as_str())), "a row is missing");
        let m7 = seen.iter().find(|m| m.id == "m7").unwrap();
        assert_eq!((m7.rating, m7.feedback.as_deref()), (Some(Rating::Dislike), Some("too long")));
        let m6 = seen.iter().find(|m| m.id == "m6").unwrap();
        assert_eq!((m6.conversation_id.as_deref(), m6.conversation_name.as_deref()), (Some("c1"), Some("Pumps")));
        assert_eq!((m6.prompt_tokens, m6.created_at, m6.rating), (6, 1006, None));

        let mut cursor = t.store.begin_log_export(LogTable::WorkflowRuns, &filter).await.unwrap();
        let mut runs = HashSet::new();
        loop {
            let page = t.store.run_log_page(&filter, &mut cursor, 4096).await.unwrap();
            if page.is_empty() {
                break;
            }
            for r in page {
                assert!(runs.insert(r.id), "a run came twice");
            }
        }
        assert_eq!(runs.len(), n);
    }

    #[tokio::test]
    async fn filters_by_time_and_app_and_stops_at_the_rows_it_started_with() {
        let t = open_store();
        let db = t._dir.path().join("edgeai.db");
        seed(&db, 100);
        let filter = LogFilter { app_id: Some("a1".into()), since: Some(1010), until: Some(1019) };
        let mut cursor = t.store.begin_log_export(LogTable::Messages, &filter).await.unwrap();
        // Rows added after the start are not part of this export.
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute(
                "INSERT INTO messages (id, app_id, user, task_id, query, inputs, status, created_at, updated_at)
                 VALUES ('late', 'a1', 'u', 't', 'q', '{}', 'normal', 1015, 1015)",
                [],
            )
            .unwrap();
        let mut ids = Vec::new();
        loop {
            let page = t.store.message_log_page(&filter, &mut cursor, 3).await.unwrap();
            if page.is_empty() {
                break;
            }
            ids.extend(page.into_iter().map(|m| m.id));
        }
        assert_eq!(ids, (10..20).map(|i| format!("m{i}")).collect::<Vec<_>>());

        let other = LogFilter { app_id: Some("a2".into()), ..LogFilter::default() };
        let mut cursor = t.store.begin_log_export(LogTable::WorkflowRuns, &other).await.unwrap();
        assert!(t.store.run_log_page(&other, &mut cursor, 10).await.unwrap().is_empty());

        let unknown = LogFilter { app_id: Some("nope".into()), ..LogFilter::default() };
        let err = t.store.begin_log_export(LogTable::Messages, &unknown).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        let reversed = LogFilter { since: Some(5), until: Some(4), ..LogFilter::default() };
        let err = t.store.begin_log_export(LogTable::Messages, &reversed).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument { field: "since", .. }), "{err:?}");
    }
}
