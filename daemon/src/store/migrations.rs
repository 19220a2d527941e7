//! Versioned schema migrations.
//!
//! Owns: the list of schema versions (`PRAGMA user_version`), running each
//! pending migration in its own transaction, and the `VACUUM INTO` backup
//! written before the schema of a non-empty database changes.
//! Must not touch: rows (recovery of interrupted messages lives in `mod.rs`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, TransactionBehavior};

use super::error::{sql, StoreError};

/// One step of the schema: applied when `user_version < version`.
pub(crate) struct Migration {
    /// The `user_version` after this migration.
    pub(crate) version: u32,
    /// The DDL, run as one batch inside the migration's transaction.
    pub(crate) sql: &'static str,
}

/// Every migration, in order. Append only: a released migration never changes.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, sql: V1 },
    Migration { version: 2, sql: V2 },
    Migration { version: 3, sql: V3 },
    Migration { version: 4, sql: V4 },
    Migration { version: 5, sql: V5 },
    Migration { version: 6, sql: V6 },
];

/// Schema v1. Closed sets owned by Rust enums (message status, rating) are
/// also `CHECK`ed here; open-ended sets (app mode, version source) are
/// validated in Rust so a new value needs no migration.
const V1: &str = r"
CREATE TABLE apps (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL,
    mode           TEXT    NOT NULL,
    active_version INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE TABLE app_versions (
    app_id     TEXT    NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    definition TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, version)
);
CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    app_id       TEXT    NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    prefix       TEXT    NOT NULL,
    hash         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_keys_by_prefix ON api_keys (prefix);
CREATE INDEX api_keys_by_app ON api_keys (app_id);
CREATE TABLE conversations (
    id         TEXT    NOT NULL PRIMARY KEY,
    app_id     TEXT    NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    user       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    inputs     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX conversations_by_user_updated ON conversations (app_id, user, updated_at);
CREATE INDEX conversations_by_user_created ON conversations (app_id, user, created_at);
CREATE TABLE messages (
    id                TEXT    NOT NULL PRIMARY KEY,
    app_id            TEXT    NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    conversation_id   TEXT    REFERENCES conversations(id) ON DELETE CASCADE,
    user              TEXT    NOT NULL,
    task_id           TEXT    NOT NULL,
    query             TEXT    NOT NULL,
    inputs            TEXT    NOT NULL,
    answer            TEXT    NOT NULL DEFAULT '',
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms        INTEGER NOT NULL DEFAULT 0,
    status            TEXT    NOT NULL CHECK (status IN ('pending', 'normal', 'stopped', 'error')),
    error             TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, created_at);
CREATE INDEX messages_pending ON messages (status) WHERE status = 'pending';
CREATE TABLE feedbacks (
    message_id TEXT    NOT NULL PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    user       TEXT    NOT NULL,
    rating     TEXT    NOT NULL CHECK (rating IN ('like', 'dislike')),
    content    TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
";

/// Schema v2: files uploaded through the Service API (`POST /v1/files/upload`).
/// The bytes live in `files.dir` under the row's id; the row says whose they are.
const V2: &str = r"
CREATE TABLE upload_files (
    id         TEXT    NOT NULL PRIMARY KEY,
    app_id     TEXT    NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    user       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    size       INTEGER NOT NULL CHECK (size >= 0),
    extension  TEXT    NOT NULL,
    mime_type  TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX upload_files_by_app ON upload_files (app_id, created_at);
";

/// Schema v3: the workflow engine (issue 12).
///
/// `app_versions` is rebuilt (SQLite cannot add a `NOT NULL UNIQUE` column in
/// place) with `workflow_id`, the UUID Dify clients use to name a published
/// version, and `mode`, so activating an old version restores its mode.
/// Existing versions get a random version-4-shaped UUID and the app's mode.
/// Nothing references `app_versions`, so the rebuild is safe with foreign keys on.
///
/// `workflow_runs` is inserted `running` and finished by one transaction
/// together with its `workflow_node_executions`; `Store::open` marks runs
/// still `running` as `failed`. `conversation_id`/`message_id` are not foreign
/// keys: a run log outlives the conversation it served, as in Dify.
const V3: &str = r"
CREATE TABLE app_versions_v3 (
    app_id      TEXT    NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    definition  TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    workflow_id TEXT    NOT NULL UNIQUE,
    mode        TEXT    NOT NULL,
    PRIMARY KEY (app_id, version)
);
INSERT INTO app_versions_v3 (app_id, version, definition, source, created_at, workflow_id, mode)
SELECT v.app_id, v.version, v.definition, v.source, v.created_at,
       lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-'
           || substr('89ab', 1 + (random() & 3), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6))),
       a.mode
  FROM app_versions v JOIN apps a ON a.id = v.app_id;
DROP TABLE app_versions;
ALTER TABLE app_versions_v3 RENAME TO app_versions;

CREATE TABLE workflow_runs (
    id              TEXT    NOT NULL PRIMARY KEY,
    app_id          TEXT    NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    app_version     INTEGER NOT NULL,
    workflow_id     TEXT    NOT NULL,
    task_id         TEXT    NOT NULL,
    user            TEXT    NOT NULL,
    conversation_id TEXT,
    message_id      TEXT,
    triggered_from  TEXT    NOT NULL,
    inputs          TEXT    NOT NULL,
    outputs         TEXT,
    status          TEXT    NOT NULL
                    CHECK (status IN ('running', 'succeeded', 'failed', 'stopped', 'partial-succeeded')),
    error           TEXT,
    elapsed_secs    REAL    NOT NULL DEFAULT 0,
    total_tokens    INTEGER NOT NULL DEFAULT 0,
    total_steps     INTEGER NOT NULL DEFAULT 0,
    exceptions_count INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX workflow_runs_by_app_created ON workflow_runs (app_id, created_at_ms);
CREATE INDEX workflow_runs_running ON workflow_runs (status) WHERE status = 'running';
CREATE TABLE workflow_node_executions (
    id                  TEXT    NOT NULL PRIMARY KEY,
    workflow_run_id     TEXT    NOT NULL REFERENCES workflow_runs(id) ON DELETE CASCADE,
    idx                 INTEGER NOT NULL,
    node_id             TEXT    NOT NULL,
    node_type           TEXT    NOT NULL,
    title               TEXT    NOT NULL,
    predecessor_node_id TEXT,
    iteration_id        TEXT,
    iteration_index     INTEGER,
    inputs              TEXT    NOT NULL,
    process_data        TEXT    NOT NULL,
    outputs             TEXT    NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('succeeded', 'failed', 'stopped', 'exception')),
    error               TEXT,
    elapsed_secs        REAL    NOT NULL,
    total_tokens        INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    finished_at         INTEGER NOT NULL
);
CREATE INDEX workflow_node_executions_by_run ON workflow_node_executions (workflow_run_id, idx);

CREATE TABLE conversation_variables (
    id              TEXT    NOT NULL PRIMARY KEY,
    conversation_id TEXT    NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    name            TEXT    NOT NULL,
    value_type      TEXT    NOT NULL,
    value           TEXT    NOT NULL,
    description     TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (conversation_id, name)
);
";

/// Schema v4: knowledge bases (issue 13).
///
/// `api_keys` is rebuilt (SQLite cannot drop `NOT NULL` in place) with a
/// `kind`: `app` keys keep their `app_id`, `dataset` keys have none. Every
/// existing key becomes an `app` key. Nothing references `api_keys`.
///
/// `segments.rowid` is the segment's key in the vector files, so it is
/// `AUTOINCREMENT`: a deleted segment's rowid is never given to a new one
/// while its vector may still sit in a file as a tombstone. A segment is
/// inserted `indexing` and becomes searchable only when its document's
/// `complete_document` transaction flips it to `completed`.
///
/// `segments_fts` is a contentless FTS5 index (rowid = segment rowid) of
/// the segment's content, answer and keywords, where every CJK character
/// and every pair of neighbouring ones is a token of its own, so Chinese is
/// found by substring; the store writes it in the same transaction as the
/// segment row.
///
/// `annotations` are an app's curated question/answer pairs (Dify's
/// annotation replies); their rowid keys the questions' vectors, so it is
/// `AUTOINCREMENT` too. `app_annotation_settings` holds whether replies are
/// on, the match threshold and the embedding model of the vectors.
const V4: &str = r"
CREATE TABLE api_keys_v4 (
    id           TEXT    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('app', 'dataset')),
    app_id       TEXT    REFERENCES apps(id) ON DELETE CASCADE,
    prefix       TEXT    NOT NULL,
    hash         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    CHECK ((kind = 'app') = (app_id IS NOT NULL))
);
INSERT INTO api_keys_v4 (id, kind, app_id, prefix, hash, created_at, revoked_at, last_used_at)
SELECT id, 'app', app_id, prefix, hash, created_at, revoked_at, last_used_at FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_v4 RENAME TO api_keys;
CREATE INDEX api_keys_by_prefix ON api_keys (kind, prefix);
CREATE INDEX api_keys_by_app ON api_keys (app_id);

CREATE TABLE datasets (
    id                 TEXT    NOT NULL PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    description        TEXT    NOT NULL,
    indexing_technique TEXT    NOT NULL CHECK (indexing_technique IN ('high_quality', 'economy')),
    embedding_model    TEXT,
    embedding_dims     INTEGER,
    retrieval_model    TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX datasets_by_created ON datasets (created_at);

CREATE TABLE documents (
    id                     TEXT    NOT NULL PRIMARY KEY,
    dataset_id             TEXT    NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    position               INTEGER NOT NULL,
    name                   TEXT    NOT NULL,
    source_kind            TEXT    NOT NULL CHECK (source_kind IN ('text', 'file')),
    file_name              TEXT,
    file_kind              TEXT,
    file_size              INTEGER,
    batch                  TEXT    NOT NULL,
    process_rule           TEXT    NOT NULL,
    status                 TEXT    NOT NULL
                           CHECK (status IN ('waiting', 'parsing', 'splitting', 'indexing', 'completed', 'error', 'paused')),
    error                  TEXT,
    enabled                INTEGER NOT NULL DEFAULT 1,
    word_count             INTEGER NOT NULL DEFAULT 0,
    tokens                 INTEGER NOT NULL DEFAULT 0,
    completed_segments     INTEGER NOT NULL DEFAULT 0,
    total_segments         INTEGER NOT NULL DEFAULT 0,
    created_at             INTEGER NOT NULL,
    processing_started_at  INTEGER,
    parsing_completed_at   INTEGER,
    splitting_completed_at INTEGER,
    completed_at           INTEGER,
    updated_at             INTEGER NOT NULL,
    CHECK ((source_kind = 'file') = (file_name IS NOT NULL AND file_kind IS NOT NULL AND file_size IS NOT NULL)),
    UNIQUE (dataset_id, position)
);
CREATE INDEX documents_by_batch ON documents (batch);
CREATE INDEX documents_unfinished ON documents (status) WHERE status IN ('waiting', 'parsing', 'splitting', 'indexing');

CREATE TABLE segments (
    rowid       INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    document_id TEXT    NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    dataset_id  TEXT    NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    content     TEXT    NOT NULL,
    answer      TEXT    NOT NULL DEFAULT '',
    keywords    TEXT    NOT NULL DEFAULT '[]',
    word_count  INTEGER NOT NULL,
    tokens      INTEGER NOT NULL,
    hash        TEXT    NOT NULL,
    hit_count   INTEGER NOT NULL DEFAULT 0,
    enabled     INTEGER NOT NULL DEFAULT 1,
    status      TEXT    NOT NULL CHECK (status IN ('indexing', 'completed')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (document_id, position)
);
CREATE INDEX segments_by_dataset ON segments (dataset_id);

CREATE VIRTUAL TABLE segments_fts USING fts5(
    text, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TABLE annotations (
    rowid      INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    app_id     TEXT    NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    question   TEXT    NOT NULL,
    answer     TEXT    NOT NULL,
    hit_count  INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX annotations_by_app ON annotations (app_id, created_at);
CREATE TABLE app_annotation_settings (
    app_id          TEXT    NOT NULL PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    enabled         INTEGER NOT NULL,
    score_threshold REAL    NOT NULL CHECK (score_threshold >= 0 AND score_threshold <= 1),
    embedding_model TEXT,
    updated_at      INTEGER NOT NULL
);
";

/// Schema v5: the response cache's persisted answers (see `cache.rs`). No
/// foreign key: the cache drops an app's rows itself, and a row must never
/// make an app write fail.
const V5: &str = r"
CREATE TABLE response_cache (
    hash        TEXT    NOT NULL PRIMARY KEY,
    app_id      TEXT    NOT NULL,
    app_version INTEGER NOT NULL,
    cache_key   TEXT    NOT NULL,
    answer      TEXT    NOT NULL,
    truncated   INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    scope       TEXT,
    embed_model TEXT,
    embedding   BLOB
);
CREATE INDEX response_cache_by_app ON response_cache (app_id, app_version);
CREATE INDEX response_cache_by_age ON response_cache (created_at);
";

/// Schema v6: the audit trail (see `audit.rs`): admin actions and refused
/// credentials, newest last by `id`. No foreign keys: an entry outlives the
/// app or key it names.
const V6: &str = r"
CREATE TABLE audit_log (
    id      INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    kind    TEXT    NOT NULL CHECK (kind IN ('admin', 'auth_failure')),
    channel TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    outcome TEXT    NOT NULL,
    detail  TEXT    NOT NULL
);
";

/// The newest schema version `migrations` produce (0 for an empty list).
pub(crate) fn latest(migrations: &[Migration]) -> u32 {
    migrations.last().map_or(0, |m| m.version)
}

/// A test-only migration after the real ones: lets the tests migrate a
/// non-empty database the way a future release will, and (fail point
/// `update-slot-migration`) lets the update tests install a version whose
/// schema the running one does not know.
#[cfg(any(test, feature = "failpoints"))]
pub(crate) const WITH_NEXT: &[Migration] = &[
    Migration { version: 1, sql: V1 },
    Migration { version: 2, sql: V2 },
    Migration { version: 3, sql: V3 },
    Migration { version: 4, sql: V4 },
    Migration { version: 5, sql: V5 },
    Migration { version: 6, sql: V6 },
    Migration { version: 7, sql: "ALTER TABLE apps ADD COLUMN description TEXT;" },
];

/// The schema this process migrates to: [`MIGRATIONS`]; in a test build, a
/// process started from an update slot with the fail point
/// `update-slot-migration` on takes [`WITH_NEXT`], so an installed "new
/// version" migrates the store while the factory binary does not know v7.
pub(crate) fn for_this_process() -> &'static [Migration] {
    #[cfg(feature = "failpoints")]
    if crate::update::running_slot().is_some() {
        fail::fail_point!("update-slot-migration", |_| WITH_NEXT);
    }
    MIGRATIONS
}

/// Brings the database to the newest version of `migrations` and returns it.
///
/// Before the first migration that changes a non-empty database, the current
/// file is copied to `<path>.pre-v<N>.bak` (`N` = that migration's version):
/// one backup of the state the operator had, not one per intermediate step.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<u32, StoreError> {
    let found = schema_version(conn)?;
    let supported = latest(migrations);
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    let mut backed_up = false;
    for migration in migrations.iter().filter(|m| m.version > found) {
        if !backed_up && has_schema(conn)? {
            let backup = backup_path(path, migration.version);
            write_backup(conn, &backup)?;
            tracing::info!(
                path = %path.display(),
                backup = %backup.display(),
                from_version = found,
                "backed up the store before migrating"
            );
        }
        backed_up = true;
        apply(conn, migration)?;
        tracing::info!(path = %path.display(), version = migration.version, "migrated the store schema");
    }
    Ok(supported.max(found))
}

/// `PRAGMA user_version`, which SQLite keeps as a signed 32-bit value.
pub(crate) fn schema_version(conn: &Connection) -> Result<u32, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get::<_, u32>(0)).map_err(sql("read schema version"))
}

/// The backup file written before migrating to `version`.
pub(crate) fn backup_path(path: &Path, version: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".pre-v{version}.bak"));
    PathBuf::from(name)
}

fn has_schema(conn: &Connection) -> Result<bool, StoreError> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master)", [], |row| row.get::<_, bool>(0)).map_err(sql("inspect schema"))
}

/// `VACUUM INTO` a temporary name, fsync, then rename over any older backup
/// of the same version, so a crash never leaves a half-written `.bak`.
fn write_backup(conn: &Connection, backup: &Path) -> Result<(), StoreError> {
    let mut tmp = backup.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let tmp_text = tmp.to_str().ok_or_else(|| StoreError::InvalidArgument {
        field: "store path",
        reason: format!("{} is not valid UTF-8, so SQLite cannot back it up", tmp.display()),
    })?;
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(StoreError::BackupFile { path: tmp, source }),
    }
    conn.execute("VACUUM INTO ?1", [tmp_text]).map_err(|source| StoreError::Backup { path: tmp.clone(), source })?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|source| StoreError::BackupFile { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, backup).map_err(|source| StoreError::BackupFile { path: backup.to_path_buf(), source })
}

fn apply(conn: &mut Connection, migration: &Migration) -> Result<(), StoreError> {
    let fail = |source| StoreError::Migrate { version: migration.version, source };
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
    tx.execute_batch(migration.sql).map_err(fail)?;
    tx.pragma_update(None, "user_version", migration.version).map_err(fail)?;
    // Test builds: `update-kill=return(migrate)` dies with the migration
    // applied but not committed (only in a slot's process; see
    // [`for_this_process`]).
    #[cfg(feature = "failpoints")]
    if crate::update::running_slot().is_some() {
        crate::update::kill_point("migrate");
    }
    tx.commit().map_err(fail)
}

#[cfg(test)]
mod tests {
    use rusqlite::OptionalExtension;

    use super::*;

    /// When a real v7 lands, WITH_NEXT must grow with it, or the update
    /// tests would install a "new version" that migrates backwards.
    #[test]
    fn with_next_is_the_real_migrations_and_one_more() {
        assert_eq!(WITH_NEXT.len(), MIGRATIONS.len() + 1);
        for (real, next) in MIGRATIONS.iter().zip(WITH_NEXT) {
            assert_eq!((real.version, real.sql), (next.version, next.sql));
        }
        assert_eq!(latest(WITH_NEXT), latest(MIGRATIONS) + 1);
        assert_eq!(for_this_process().len(), MIGRATIONS.len(), "no slot here: the real list");
    }

    fn open(path: &Path) -> Connection {
        Connection::open(path).expect("open test db")
    }

    #[test]
    fn migrates_an_empty_database_without_a_backup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = open(&path);
        assert_eq!(migrate(&mut conn, &path, MIGRATIONS).expect("migrate"), 6);
        assert_eq!(schema_version(&conn).expect("version"), 6);
        assert!(!backup_path(&path, 1).exists());
        // Every table exists.
        for table in [
            "apps",
            "app_versions",
            "api_keys",
            "conversations",
            "messages",
            "feedbacks",
            "upload_files",
            "workflow_runs",
            "workflow_node_executions",
            "conversation_variables",
            "datasets",
            "documents",
            "segments",
            "segments_fts",
            "audit_log",
            "annotations",
            "app_annotation_settings",
            "response_cache",
        ] {
            let n: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [table], |r| r.get(0))
                .expect("query");
            assert_eq!(n, 1, "table {table}");
        }
    }

    /// A v2 database with apps and versions keeps them all through v3; each
    /// version gets its own UUID-shaped workflow id and its app's mode.
    #[test]
    fn v3_backfills_workflow_ids_and_modes_of_existing_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = open(&path);
        conn.pragma_update(None, "foreign_keys", true).expect("foreign keys");
        migrate(&mut conn, &path, &MIGRATIONS[..2]).expect("v2");
        conn.execute_batch(
            r#"INSERT INTO apps VALUES ('a1', 'One', 'chat', 2, 10, 20);
               INSERT INTO apps VALUES ('a2', 'Two', 'completion', 1, 30, 30);
               INSERT INTO app_versions VALUES ('a1', 1, '{"v":1}', 'config', 10);
               INSERT INTO app_versions VALUES ('a1', 2, '{"v":2}', 'import', 20);
               INSERT INTO app_versions VALUES ('a2', 1, '{}', 'config', 30);
               INSERT INTO api_keys VALUES ('k1', 'a1', 'app-abc', x'00', 10, NULL, NULL);
               INSERT INTO conversations VALUES ('c1', 'a1', 'u1', 'n', '{}', 10, 10);"#,
        )
        .expect("seed v2");
        assert_eq!(migrate(&mut conn, &path, &MIGRATIONS[..3]).expect("v3"), 3);
        assert!(backup_path(&path, 3).exists());

        let mut stmt = conn
            .prepare("SELECT app_id, version, definition, source, created_at, workflow_id, mode FROM app_versions ORDER BY app_id, version")
            .expect("prepare");
        let rows: Vec<(String, u32, String, String, i64, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let kept: Vec<_> = rows.iter().map(|r| (r.0.as_str(), r.1, r.2.as_str(), r.3.as_str(), r.4, r.6.as_str())).collect();
        assert_eq!(
            kept,
            [
                ("a1", 1, r#"{"v":1}"#, "config", 10, "chat"),
                ("a1", 2, r#"{"v":2}"#, "import", 20, "chat"),
                ("a2", 1, "{}", "config", 30, "completion")
            ]
        );
        let mut ids = std::collections::HashSet::new();
        for row in &rows {
            let parsed = uuid::Uuid::parse_str(&row.5).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4, "{}", row.5);
            assert_eq!(parsed.hyphenated().to_string(), row.5, "lower-case hyphenated");
            assert!(ids.insert(row.5.clone()), "duplicate workflow id {}", row.5);
        }
        // The rest of the data is untouched, and the rebuilt table still cascades.
        let keys: i64 = conn.query_row("SELECT count(*) FROM api_keys", [], |r| r.get(0)).expect("keys");
        let conversations: i64 = conn.query_row("SELECT count(*) FROM conversations", [], |r| r.get(0)).expect("conversations");
        assert_eq!((keys, conversations), (1, 1));
        let check: String = conn.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional().expect("fk check").unwrap_or_default();
        assert_eq!(check, "", "foreign key violations");
        conn.execute("DELETE FROM apps WHERE id = 'a2'", []).expect("delete app");
        let left: i64 = conn.query_row("SELECT count(*) FROM app_versions WHERE app_id = 'a2'", [], |r| r.get(0)).expect("count");
        assert_eq!(left, 0);
        // A workflow id stays unique.
        let dup = conn.execute("INSERT INTO app_versions VALUES ('a1', 3, '{}', 'import', 40, ?1, 'chat')", [&rows[0].5]);
        assert!(dup.is_err(), "a duplicate workflow id was accepted");
    }

    /// A v3 database with keys keeps them through v4 as app keys (same id,
    /// app, prefix, hash, times); a dataset key has no app, an app key
    /// must have one, and keys still cascade with their app.
    #[test]
    fn v4_keeps_existing_keys_as_app_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = open(&path);
        conn.pragma_update(None, "foreign_keys", true).expect("foreign keys");
        migrate(&mut conn, &path, &MIGRATIONS[..3]).expect("v3");
        conn.execute_batch(
            r"INSERT INTO apps VALUES ('a1', 'One', 'chat', 1, 10, 10);
              INSERT INTO api_keys VALUES ('k1', 'a1', 'abcdefgh', x'0102', 10, NULL, 15);
              INSERT INTO api_keys VALUES ('k2', 'a1', 'ijklmnop', x'0304', 11, 12, NULL);",
        )
        .expect("seed v3");
        assert_eq!(migrate(&mut conn, &path, MIGRATIONS[..4].as_ref()).expect("v4"), 4);
        assert!(backup_path(&path, 4).exists());

        let mut stmt = conn
            .prepare("SELECT id, kind, app_id, prefix, hash, created_at, revoked_at, last_used_at FROM api_keys ORDER BY id")
            .expect("prepare");
        type KeyRow = (String, String, Option<String>, String, Vec<u8>, i64, Option<i64>, Option<i64>);
        let rows: Vec<KeyRow> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let a1 = Some("a1".to_owned());
        assert_eq!(
            rows,
            [
                ("k1".into(), "app".into(), a1.clone(), "abcdefgh".into(), vec![1, 2], 10, None, Some(15)),
                ("k2".into(), "app".into(), a1, "ijklmnop".into(), vec![3, 4], 11, Some(12), None)
            ]
        );
        conn.execute("INSERT INTO api_keys (id, kind, app_id, prefix, hash, created_at) VALUES ('d1', 'dataset', NULL, 'x', x'00', 1)", [])
            .expect("a dataset key has no app");
        for bad in [
            "INSERT INTO api_keys (id, kind, app_id, prefix, hash, created_at) VALUES ('b1', 'app', NULL, 'x', x'00', 1)",
            "INSERT INTO api_keys (id, kind, app_id, prefix, hash, created_at) VALUES ('b2', 'dataset', 'a1', 'x', x'00', 1)",
            "INSERT INTO api_keys (id, kind, app_id, prefix, hash, created_at) VALUES ('b3', 'other', 'a1', 'x', x'00', 1)",
        ] {
            assert!(conn.execute(bad, []).is_err(), "accepted: {bad}");
        }
        conn.execute("DELETE FROM apps WHERE id = 'a1'", []).expect("delete app");
        let left: Vec<String> = conn
            .prepare("SELECT id FROM api_keys")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("ids");
        assert_eq!(left, ["d1"]);
    }

    #[test]
    fn migrating_again_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = open(&path);
        migrate(&mut conn, &path, MIGRATIONS).expect("first");
        assert_eq!(migrate(&mut conn, &path, MIGRATIONS).expect("second"), 6);
        assert!(!backup_path(&path, 1).exists());
    }

    #[test]
    fn backs_up_a_non_empty_database_before_changing_its_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = open(&path);
        migrate(&mut conn, &path, &WITH_NEXT[..1]).expect("v1");
        conn.execute("INSERT INTO apps VALUES ('a1', 'App', 'chat', 1, 0, 0)", []).expect("insert");
        assert_eq!(migrate(&mut conn, &path, WITH_NEXT).expect("v7"), 7);

        // One backup, of the state before the first migration that ran.
        let backup = backup_path(&path, 2);
        assert!(backup.exists(), "backup {} missing", backup.display());
        assert!((3..=7).all(|v| !backup_path(&path, v).exists()));
        let old = open(&backup);
        assert_eq!(schema_version(&old).expect("version"), 1);
        let name: String = old.query_row("SELECT name FROM apps WHERE id = 'a1'", [], |r| r.get(0)).expect("row in backup");
        assert_eq!(name, "App");
        // The backup has the old schema, the live file the new one.
        assert!(old.prepare("SELECT description FROM apps").is_err());
        conn.prepare("SELECT description FROM apps").expect("new column");
        let mut tmp = backup.into_os_string();
        tmp.push(".tmp");
        assert!(!PathBuf::from(tmp).exists());
    }

    #[test]
    fn backs_up_a_foreign_unversioned_database_and_reports_the_failed_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = open(&path);
        conn.execute_batch("CREATE TABLE apps (x); INSERT INTO apps VALUES (1);").expect("seed");
        let err = migrate(&mut conn, &path, MIGRATIONS).expect_err("must fail");
        assert!(matches!(err, StoreError::Migrate { version: 1, .. }), "{err:?}");
        assert!(backup_path(&path, 1).exists());
        // The failed migration rolled back completely.
        assert_eq!(schema_version(&conn).expect("version"), 0);
        let n: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'messages'", [], |r| r.get(0)).expect("query");
        assert_eq!(n, 0);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut conn = open(&path);
        migrate(&mut conn, &path, WITH_NEXT).expect("v7");
        let err = migrate(&mut conn, &path, MIGRATIONS).expect_err("too new");
        assert!(matches!(err, StoreError::SchemaTooNew { found: 7, supported: 6 }), "{err:?}");
    }

    #[test]
    fn replaces_a_stale_backup_of_the_same_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        std::fs::write(backup_path(&path, 7), b"stale").expect("stale backup");
        let mut conn = open(&path);
        migrate(&mut conn, &path, &WITH_NEXT[..1]).expect("v1");
        migrate(&mut conn, &path, &WITH_NEXT[..6]).expect("v6");
        migrate(&mut conn, &path, WITH_NEXT).expect("v7");
        let old = open(&backup_path(&path, 7));
        assert_eq!(schema_version(&old).expect("backup is a database"), 6);
    }
}
