//! Carrying what a rolled-back version wrote into the restored store: the
//! conversations, messages, feedback, conversation variables, uploaded
//! files' records, workflow runs (with their node executions) and audit
//! entries that users and operators produced while the failed version ran,
//! copied from its database into the snapshot's copy before that copy goes
//! live.
//!
//! Owns the list of carried tables and the copy. Rows are copied by the
//! columns both schemas share (the failed version may have migrated), new
//! rows only, except the few columns a later turn updates (a conversation's
//! name and time, a variable's value, a feedback); a row whose parent (app,
//! conversation, message, run) is not in the restored store stays behind in
//! the kept database, counted. Everything else the failed version changed
//! (apps, versions, keys, knowledge, cached answers, deletions) is not
//! carried: the restored store is the snapshot's. Must not: write anything
//! but the staged copy (`into`), or commit part of a copy (one transaction).

use std::path::Path;

use super::UpdateError;

/// One table the copy carries: its name, the key that says "already there",
/// the filter that keeps rows whose parents exist in `main` (the restored
/// store) and the columns an existing row takes from the failed version.
struct Table {
    name: &'static str,
    key: &'static str,
    parents: &'static str,
    update: &'static [&'static str],
}

/// Parents first: a child's filter sees the rows carried before it.
const TABLES: &[Table] = &[
    Table { name: "conversations", key: "id", parents: "t.app_id IN (SELECT id FROM main.apps)", update: &["name", "updated_at"] },
    Table {
        name: "messages",
        key: "id",
        parents: "t.app_id IN (SELECT id FROM main.apps) \
                  AND (t.conversation_id IS NULL OR t.conversation_id IN (SELECT id FROM main.conversations))",
        update: &[],
    },
    Table {
        name: "feedbacks",
        key: "message_id",
        parents: "t.message_id IN (SELECT id FROM main.messages)",
        update: &["rating", "content", "updated_at"],
    },
    Table {
        name: "conversation_variables",
        key: "id",
        parents: "t.conversation_id IN (SELECT id FROM main.conversations)",
        update: &["value", "updated_at"],
    },
    Table { name: "upload_files", key: "id", parents: "t.app_id IN (SELECT id FROM main.apps)", update: &[] },
    Table { name: "workflow_runs", key: "id", parents: "t.app_id IN (SELECT id FROM main.apps)", update: &[] },
    Table { name: "workflow_node_executions", key: "id", parents: "t.workflow_run_id IN (SELECT id FROM main.workflow_runs)", update: &[] },
    // Entries the failed version appended (ids past the snapshot's last).
    Table { name: "audit_log", key: "id", parents: "t.id > (SELECT coalesce(max(id), 0) FROM main.audit_log)", update: &[] },
];

/// What the copy did, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// (table, rows copied or updated, rows left behind in the kept database).
    pub tables: Vec<(&'static str, u64, u64)>,
}

impl Carried {
    /// Rows copied or updated, over all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.1).sum()
    }

    /// Rows left behind (no parent in the restored store, or refused by its schema).
    pub fn left(&self) -> u64 {
        self.tables.iter().map(|t| t.2).sum()
    }

    /// `messages 3, conversations 1 (left behind: messages 2)`; tables with nothing are left out.
    pub fn summary(&self) -> String {
        let list = |f: fn(&(&'static str, u64, u64)) -> u64| {
            self.tables.iter().filter(|t| f(t) > 0).map(|t| format!("{} {}", t.0, f(t))).collect::<Vec<_>>().join(", ")
        };
        let carried = if self.rows() == 0 { "nothing".to_owned() } else { list(|t| t.1) };
        if self.left() == 0 {
            carried
        } else {
            format!("{carried} (left behind: {})", list(|t| t.2))
        }
    }
}

fn sqlite(what: &'static str, p: &Path) -> impl FnOnce(rusqlite::Error) -> UpdateError {
    let p = p.to_path_buf();
    move |source| UpdateError::Sqlite { what, path: p, source }
}

/// The columns of `schema.table` with whether each must be given (NOT NULL
/// without a default, not the integer key); empty when the table is absent.
fn columns(conn: &rusqlite::Connection, schema: &str, table: &str) -> rusqlite::Result<Vec<(String, bool)>> {
    let mut st = conn.prepare(&format!("PRAGMA {schema}.table_info(\"{table}\")"))?;
    let rows = st.query_map([], |r| {
        let name: String = r.get(1)?;
        let notnull: bool = r.get(3)?;
        let default: Option<String> = r.get(4)?;
        let pk: i64 = r.get(5)?;
        let ty: String = r.get(2)?;
        let rowid_alias = pk == 1 && ty.eq_ignore_ascii_case("INTEGER");
        Ok((name, notnull && default.is_none() && !rowid_alias))
    })?;
    rows.collect()
}

/// Copies the failed version's rows from the database at `from` into the
/// store at `into` (the snapshot's staged copy), in one transaction: all
/// tables or none. A table missing on either side, or one whose required
/// column the failed version does not have, is skipped (its rows counted
/// as left behind).
pub fn carry(from: &Path, into: &Path) -> Result<Carried, UpdateError> {
    let mut conn = rusqlite::Connection::open_with_flags(into, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(sqlite("opening the restored store to carry rows into", into))?;
    // The staged copy is renamed into place afterwards: no -wal may stay beside it.
    conn.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(())).map_err(sqlite("leaving WAL mode", into))?;
    conn.execute_batch("PRAGMA foreign_keys=ON").map_err(sqlite("turning foreign keys on", into))?;
    let from_str = from.to_str().ok_or_else(|| UpdateError::Io {
        what: "naming the failed version's database",
        path: from.to_path_buf(),
        source: std::io::Error::other("the path is not UTF-8"),
    })?;
    conn.execute("ATTACH DATABASE ?1 AS failed", [from_str]).map_err(sqlite("attaching the failed version's database", from))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sqlite("starting the carry", into))?;
    let mut carried = Carried::default();
    for t in TABLES {
        let (copied, left) = carry_table(&tx, t).map_err(sqlite("carrying rows into the restored store", into))?;
        carried.tables.push((t.name, copied, left));
    }
    tx.commit().map_err(sqlite("committing the carried rows", into))?;
    Ok(carried)
}

/// One table: (rows copied or updated, rows left behind).
fn carry_table(tx: &rusqlite::Transaction<'_>, t: &Table) -> rusqlite::Result<(u64, u64)> {
    let ours = columns(tx, "main", t.name)?;
    let theirs = columns(tx, "failed", t.name)?;
    if theirs.is_empty() {
        return Ok((0, 0));
    }
    let count = |sql: String| -> rusqlite::Result<u64> { tx.query_row(&sql, [], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64) };
    let fresh = format!("t.{key} NOT IN (SELECT {key} FROM main.{name})", key = t.key, name = t.name);
    let candidates = count(format!("SELECT count(*) FROM failed.{name} t WHERE {fresh}", name = t.name))?;
    let has = |c: &str| theirs.iter().any(|(n, _)| n == c);
    let missing_required = ours.iter().any(|(n, required)| *required && !has(n));
    if ours.is_empty() || missing_required || !has(t.key) {
        return Ok((0, candidates));
    }
    let common: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).filter(|n| has(n)).collect();
    let cols = common.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let picked = common.iter().map(|c| format!("t.\"{c}\"")).collect::<Vec<_>>().join(", ");
    let mut copied = 0u64;
    // Rows already in the restored store that a later turn changed.
    let updates: Vec<&str> = t.update.iter().copied().filter(|c| common.contains(c)).collect();
    if !updates.is_empty() {
        let set = updates.iter().map(|c| format!("\"{c}\" = f.\"{c}\"")).collect::<Vec<_>>().join(", ");
        let differs = updates.iter().map(|c| format!("m.\"{c}\" IS NOT f.\"{c}\"")).collect::<Vec<_>>().join(" OR ");
        let sql = format!(
            "UPDATE OR IGNORE main.{name} AS m SET {set} FROM failed.{name} AS f WHERE f.{key} = m.{key} AND ({differs})",
            name = t.name,
            key = t.key
        );
        copied += tx.execute(&sql, [])? as u64;
    }
    // New rows; OR IGNORE leaves a row the old schema's CHECKs refuse behind.
    let sql = format!(
        "INSERT OR IGNORE INTO main.{name} ({cols}) SELECT {picked} FROM failed.{name} t WHERE {fresh} AND {parents}",
        name = t.name,
        parents = t.parents
    );
    let inserted = tx.execute(&sql, [])? as u64;
    copied += inserted;
    Ok((copied, candidates.saturating_sub(inserted)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    /// A store with the real schema (every migration) and one app.
    fn store(path: &Path) -> rusqlite::Connection {
        let mut c = rusqlite::Connection::open(path).unwrap();
        crate::store::migrations::migrate(&mut c, path, crate::store::migrations::MIGRATIONS).unwrap();
        c.execute_batch(
            "INSERT INTO apps (id, name, mode, active_version, created_at, updated_at) VALUES ('app1', 'a', 'chat', 1, 1, 1);
             INSERT INTO conversations VALUES ('c-old', 'app1', 'u', 'first', '{}', 1, 1);
             INSERT INTO messages (id, app_id, conversation_id, user, task_id, query, inputs, answer, status, created_at, updated_at)
                  VALUES ('m-old', 'app1', 'c-old', 'u', 't', 'q0', '{}', 'a0', 'normal', 1, 1);",
        )
        .unwrap();
        c
    }

    /// A snapshot store and the failed version's copy of it (as it was at the switch).
    fn pair() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let snap = tmp.path().join("snap.db");
        let failed = tmp.path().join("failed.db");
        drop(store(&snap));
        std::fs::copy(&snap, &failed).unwrap();
        (tmp, snap, failed)
    }

    fn count(path: &Path, sql: &str) -> i64 {
        rusqlite::Connection::open(path).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn new_turns_are_carried_and_orphans_stay_behind() {
        let (tmp, snap, failed) = pair();
        {
            // What the failed version wrote after the switch: a turn in the old
            // conversation, a new conversation, a feedback, an app of its own
            // with a conversation (its parent is not restored), an audit entry,
            // and a column of a later schema.
            let c = rusqlite::Connection::open(&failed).unwrap();
            c.execute_batch(
                "ALTER TABLE messages ADD COLUMN v99 TEXT NOT NULL DEFAULT 'x';
                 UPDATE conversations SET name = 'renamed', updated_at = 5 WHERE id = 'c-old';
                 INSERT INTO messages (id, app_id, conversation_id, user, task_id, query, inputs, answer, status, created_at, updated_at)
                      VALUES ('m-new1', 'app1', 'c-old', 'u', 't', 'q1', '{}', 'a1', 'normal', 5, 5);
                 INSERT INTO conversations VALUES ('c-new', 'app1', 'u', 'second', '{}', 6, 6);
                 INSERT INTO messages (id, app_id, conversation_id, user, task_id, query, inputs, answer, status, created_at, updated_at)
                      VALUES ('m-new2', 'app1', 'c-new', 'u', 't', 'q2', '{}', 'a2', 'normal', 6, 6);
                 INSERT INTO feedbacks VALUES ('m-new2', 'u', 'like', NULL, 7, 7);
                 INSERT INTO apps (id, name, mode, active_version, created_at, updated_at) VALUES ('app2', 'b', 'chat', 1, 8, 8);
                 INSERT INTO conversations VALUES ('c-orphan', 'app2', 'u', 'x', '{}', 8, 8);
                 INSERT INTO messages (id, app_id, conversation_id, user, task_id, query, inputs, answer, status, created_at, updated_at)
                      VALUES ('m-orphan', 'app2', 'c-orphan', 'u', 't', 'q3', '{}', 'a3', 'normal', 8, 8);
                 INSERT INTO audit_log (at_ms, kind, channel, actor, action, outcome, detail)
                      VALUES (9, 'admin', 'unix', 'uid=0', 'POST /admin/v1/keys', 'ok', '');",
            )
            .unwrap();
        }
        let got = carry(&failed, &snap).unwrap();
        assert_eq!(count(&snap, "SELECT count(*) FROM messages"), 3, "{got:?}");
        assert_eq!(count(&snap, "SELECT count(*) FROM messages WHERE id = 'm-orphan'"), 0);
        assert_eq!(count(&snap, "SELECT count(*) FROM apps"), 1, "apps are not carried");
        assert_eq!(count(&snap, "SELECT count(*) FROM conversations WHERE id = 'c-old' AND name = 'renamed' AND updated_at = 5"), 1);
        assert_eq!(count(&snap, "SELECT count(*) FROM feedbacks"), 1);
        assert_eq!(count(&snap, "SELECT count(*) FROM audit_log"), 1);
        let by = |name: &str| got.tables.iter().find(|t| t.0 == name).map(|t| (t.1, t.2)).unwrap();
        assert_eq!(by("messages"), (2, 1));
        assert_eq!(by("conversations"), (2, 1), "one new, one renamed; the orphan left");
        assert_eq!(got.summary(), "conversations 2, messages 2, feedbacks 1, audit_log 1 (left behind: conversations 1, messages 1)");
        // The copy is a plain file again: no -wal beside it, and the schema is the old one.
        assert!(!tmp.path().join("snap.db-wal").exists());
        let c = rusqlite::Connection::open(&snap).unwrap();
        assert!(c.prepare("SELECT v99 FROM messages").is_err());
        assert!(c.prepare("PRAGMA foreign_key_check").unwrap().query([]).unwrap().next().unwrap().is_none());
        // Carrying again adds nothing: the rows are there.
        drop(c);
        let again = carry(&failed, &snap).unwrap();
        assert_eq!(again.rows(), 0, "{again:?}");
    }

    #[test]
    fn a_copy_that_fails_halfway_changes_nothing() {
        let (_tmp, snap, failed) = pair();
        rusqlite::Connection::open(&failed)
            .unwrap()
            .execute_batch(
                "INSERT INTO conversations VALUES ('c-new', 'app1', 'u', 'second', '{}', 6, 6);
                 INSERT INTO feedbacks VALUES ('m-old', 'u', 'like', NULL, 2, 2);",
            )
            .unwrap();
        // Something refuses the third table's rows after the first was copied.
        rusqlite::Connection::open(&snap)
            .unwrap()
            .execute_batch("CREATE TRIGGER boom BEFORE INSERT ON feedbacks BEGIN SELECT RAISE(ABORT, 'refused'); END;")
            .unwrap();
        let e = carry(&failed, &snap).unwrap_err();
        assert!(crate::telemetry::chain(&e).contains("refused"), "{}", crate::telemetry::chain(&e));
        assert_eq!(count(&snap, "SELECT count(*) FROM conversations"), 1, "the first table's copy was undone too");
        assert_eq!(count(&snap, "SELECT count(*) FROM feedbacks"), 0);
    }

    #[test]
    fn a_row_the_old_schema_refuses_is_left_behind_and_counted() {
        let (_tmp, snap, failed) = pair();
        // The new version knows a message status the old CHECK does not.
        rusqlite::Connection::open(&failed)
            .unwrap()
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON;
                 INSERT INTO messages (id, app_id, conversation_id, user, task_id, query, inputs, answer, status, created_at, updated_at)
                      VALUES ('m-odd', 'app1', 'c-old', 'u', 't', 'q', '{}', 'a', 'queued', 5, 5),
                             ('m-ok', 'app1', 'c-old', 'u', 't', 'q', '{}', 'a', 'normal', 5, 5);",
            )
            .unwrap();
        let got = carry(&failed, &snap).unwrap();
        assert_eq!(got.summary(), "messages 1 (left behind: messages 1)");
        assert_eq!(count(&snap, "SELECT count(*) FROM messages WHERE id = 'm-ok'"), 1);
    }
}
