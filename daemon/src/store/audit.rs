//! The audit trail's rows (schema v6): admin actions and refused
//! credentials, one row each, kept newest `max_rows`.
//!
//! Owns: the `audit_log` table: appending (waiting for the commit, or
//! queued without waiting), trimming to the newest rows, and listing.
//! Must not touch: what is worth recording or how often (`crate::audit`
//! decides, and writes the journal).

use rusqlite::{params, Connection};

use super::error::{sql, StoreError};
use super::writer::Done;
use super::Store;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// An admin action (admin API on the unix socket, a D-Bus method).
    Admin,
    /// A request or call refused for its credentials.
    AuthFailure,
}

impl AuditKind {
    pub const ALL: [AuditKind; 2] = [AuditKind::Admin, AuditKind::AuthFailure];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Admin => "admin",
            AuditKind::AuthFailure => "auth_failure",
        }
    }

    pub fn parse(s: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Its place in the log (0 before it is stored).
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub kind: AuditKind,
    /// Where it came in: "tcp", "unix" or "dbus".
    pub channel: String,
    /// Who: "uid=0 pid=42", "uid=1000 sender=:1.7", "10.0.0.5".
    pub actor: String,
    /// What: "POST /admin/v1/apps", "D-Bus CreateApiKey".
    pub action: String,
    /// "ok", or the refusal's code ("invalid_api_key", "org.edgeai.Error.PermissionDenied").
    pub outcome: String,
    /// Why, in words; never a secret.
    pub detail: String,
}

/// Which entries `audit_list` returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub kind: Option<AuditKind>,
    /// Only entries at or after this (unix milliseconds).
    pub since_ms: Option<i64>,
    /// Only entries older than this id (paging back).
    pub before_id: Option<i64>,
    /// At most this many, newest first.
    pub limit: u32,
}

fn insert(conn: &Connection, e: &AuditEntry, max_rows: u64) -> Result<i64, StoreError> {
    let op = "append audit entry";
    conn.prepare_cached("INSERT INTO audit_log (at_ms, kind, channel, actor, action, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
        .and_then(|mut s| s.execute(params![e.at_ms, e.kind.as_str(), e.channel, e.actor, e.action, e.outcome, e.detail]))
        .map_err(sql(op))?;
    let id = conn.last_insert_rowid();
    let keep = i64::try_from(max_rows).unwrap_or(i64::MAX);
    conn.prepare_cached("DELETE FROM audit_log WHERE id <= ?1").and_then(|mut s| s.execute([id - keep])).map_err(sql(op))?;
    Ok(id)
}

impl Store {
    /// Appends `entry` and trims the log to its newest `max_rows`; returns
    /// the entry's id once committed.
    pub async fn audit_append(&self, entry: AuditEntry, max_rows: u64) -> Result<i64, StoreError> {
        self.write("append audit entry", move |conn| insert(conn, &entry, max_rows)).await
    }

    /// As [`Store::audit_append`], without waiting (refused requests must
    /// not wait for the disk); a failure in SQLite is logged.
    pub fn audit_queue(&self, entry: AuditEntry, max_rows: u64) -> Result<(), StoreError> {
        self.submit(Box::new(move |conn: &mut Connection| {
            let stored = insert(conn, &entry, max_rows);
            if let Err(e) = &stored {
                tracing::warn!(error = %crate::telemetry::chain(e), action = %entry.action, "could not store an audit entry");
            }
            Done::unanswered(stored.is_ok())
        }))
    }

    /// Entries matching `filter`, newest first.
    pub async fn audit_list(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.read("list audit entries", move |conn| {
            let op = "list audit entries";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, at_ms, kind, channel, actor, action, outcome, detail FROM audit_log \
                     WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR at_ms >= ?2) AND (?3 IS NULL OR id < ?3) \
                     ORDER BY id DESC LIMIT ?4",
                )
                .map_err(sql(op))?;
            let kind = filter.kind.map(AuditKind::as_str);
            let rows = stmt
                .query_map(params![kind, filter.since_ms, filter.before_id, filter.limit], |r| {
                    let name: String = r.get(2)?;
                    let kind = AuditKind::parse(&name)
                        .ok_or_else(|| rusqlite::Error::InvalidColumnType(2, name.clone(), rusqlite::types::Type::Text))?;
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        kind,
                        channel: r.get(3)?,
                        actor: r.get(4)?,
                        action: r.get(5)?,
                        outcome: r.get(6)?,
                        detail: r.get(7)?,
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

    fn entry(kind: AuditKind, at_ms: i64, action: &str) -> AuditEntry {
        AuditEntry {
            id: 0,
            at_ms,
            kind,
            channel: "unix".into(),
            actor: "uid=0 pid=1".into(),
            action: action.into(),
            outcome: "ok".into(),
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn entries_are_appended_listed_newest_first_filtered_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(&dir.path().join("s.db")).expect("store");
        let first = store.audit_append(entry(AuditKind::Admin, 1_000, "POST /admin/v1/apps"), 100).await.expect("append");
        store.audit_queue(entry(AuditKind::AuthFailure, 2_000, "GET /v1/parameters"), 100).expect("queued");
        let third = store.audit_append(entry(AuditKind::Admin, 3_000, "D-Bus Reload"), 100).await.expect("append");
        assert!(third > first);

        let all = store.audit_list(AuditFilter { limit: 10, ..Default::default() }).await.expect("list");
        let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["D-Bus Reload", "GET /v1/parameters", "POST /admin/v1/apps"]);
        assert_eq!(all[2], AuditEntry { id: first, ..entry(AuditKind::Admin, 1_000, "POST /admin/v1/apps") });

        let failures = store.audit_list(AuditFilter { kind: Some(AuditKind::AuthFailure), limit: 10, ..Default::default() }).await;
        assert_eq!(failures.expect("list").len(), 1);
        let recent = store.audit_list(AuditFilter { since_ms: Some(2_000), limit: 10, ..Default::default() }).await.expect("list");
        assert_eq!(recent.len(), 2);
        let older = store.audit_list(AuditFilter { before_id: Some(third), limit: 1, ..Default::default() }).await.expect("list");
        assert_eq!(older.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["GET /v1/parameters"]);

        // Trimming keeps the newest max_rows.
        for i in 0..5 {
            store.audit_append(entry(AuditKind::Admin, 4_000 + i, &format!("action {i}")), 3).await.expect("append");
        }
        let kept = store.audit_list(AuditFilter { limit: 10, ..Default::default() }).await.expect("list");
        assert_eq!(kept.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["action 4", "action 3", "action 2"]);
        store.close().await.expect("close");
    }

    #[test]
    fn kinds_round_trip_and_unknown_names_are_none() {
        for k in AuditKind::ALL {
            assert_eq!(AuditKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AuditKind::parse("login"), None);
    }
}
