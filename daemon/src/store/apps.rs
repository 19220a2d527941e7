//! Apps and their immutable definition versions.
//!
//! Owns: the `apps` and `app_versions` tables. A definition is an opaque
//! JSON string here; the engine parses it. Must not touch: keys,
//! conversations, messages.

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::error::{sql, StoreError};
use super::{now, require_json, require_non_empty, Store};

/// App modes the store accepts.
const MODES: &[&str] = &["chat", "completion"];
/// Where a definition version came from.
const SOURCES: &[&str] = &["config", "import"];

/// The result of [`Store::put_app`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppVersion {
    /// The app.
    pub app_id: String,
    /// The active version after the call.
    pub version: u32,
    /// `false` when the definition equalled the active version's (nothing new stored).
    pub created: bool,
}

/// An app with its active definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredApp {
    /// App id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `chat` or `completion`.
    pub mode: String,
    /// The active definition version.
    pub version: u32,
    /// The active definition (JSON).
    pub definition_json: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Number of API keys not revoked.
    pub active_keys: u32,
    /// Where the active definition came from (`config` or `import`).
    pub source: String,
}

const SELECT_APP: &str = "SELECT a.id, a.name, a.mode, a.active_version, v.definition, a.created_at, a.updated_at,
        (SELECT count(*) FROM api_keys k WHERE k.app_id = a.id AND k.revoked_at IS NULL), v.source
   FROM apps a JOIN app_versions v ON v.app_id = a.id AND v.version = a.active_version";

fn app_from_row(row: &Row<'_>) -> rusqlite::Result<StoredApp> {
    Ok(StoredApp {
        id: row.get(0)?,
        name: row.get(1)?,
        mode: row.get(2)?,
        version: row.get(3)?,
        definition_json: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        active_keys: row.get(7)?,
        source: row.get(8)?,
    })
}

fn require_one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<(), StoreError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(StoreError::InvalidArgument { field, reason: format!("{value:?} is not one of {}", allowed.join(", ")) })
}

/// Whether an app exists (for callers that need `NotFound { what: "app" }`).
pub(crate) fn require_app(conn: &Connection, app_id: &str) -> Result<(), StoreError> {
    let exists = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM apps WHERE id = ?1)")
        .and_then(|mut stmt| stmt.query_row([app_id], |row| row.get::<_, bool>(0)))
        .map_err(sql("look up app"))?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound { what: "app", id: app_id.to_owned() })
    }
}

impl Store {
    /// Stores an app definition. A definition that differs from the active
    /// one becomes a new immutable version and is activated; an identical
    /// one only updates name and mode (`created: false`).
    pub async fn put_app(&self, id: &str, name: &str, mode: &str, definition_json: &str, source: &str) -> Result<AppVersion, StoreError> {
        require_non_empty("app id", id)?;
        require_one_of("mode", mode, MODES)?;
        require_one_of("source", source, SOURCES)?;
        require_json("definition", definition_json)?;
        let (id, name, mode, definition, source) =
            (id.to_owned(), name.to_owned(), mode.to_owned(), definition_json.to_owned(), source.to_owned());
        self.write("put app", move |conn| {
            let op = "put app";
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(op))?;
            let now = now();
            let active: Option<(u32, String)> = tx
                .query_row(
                    "SELECT a.active_version, v.definition FROM apps a
                       JOIN app_versions v ON v.app_id = a.id AND v.version = a.active_version
                      WHERE a.id = ?1",
                    [&id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(sql(op))?;
            let result = match active {
                Some((version, current)) if current == definition => {
                    tx.execute(
                        "UPDATE apps SET name = ?2, mode = ?3, updated_at = ?4
                          WHERE id = ?1 AND (name <> ?2 OR mode <> ?3)",
                        params![id, name, mode, now],
                    )
                    .map_err(sql(op))?;
                    AppVersion { app_id: id, version, created: false }
                }
                Some(_) => {
                    let version: u32 = tx
                        .query_row("SELECT max(version) + 1 FROM app_versions WHERE app_id = ?1", [&id], |row| row.get(0))
                        .map_err(sql(op))?;
                    tx.execute(
                        "INSERT INTO app_versions (app_id, version, definition, source, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![id, version, definition, source, now],
                    )
                    .map_err(sql(op))?;
                    tx.execute(
                        "UPDATE apps SET name = ?2, mode = ?3, active_version = ?4, updated_at = ?5 WHERE id = ?1",
                        params![id, name, mode, version, now],
                    )
                    .map_err(sql(op))?;
                    AppVersion { app_id: id, version, created: true }
                }
                None => {
                    tx.execute(
                        "INSERT INTO apps (id, name, mode, active_version, created_at, updated_at)
                         VALUES (?1, ?2, ?3, 1, ?4, ?4)",
                        params![id, name, mode, now],
                    )
                    .map_err(sql(op))?;
                    tx.execute(
                        "INSERT INTO app_versions (app_id, version, definition, source, created_at)
                         VALUES (?1, 1, ?2, ?3, ?4)",
                        params![id, definition, source, now],
                    )
                    .map_err(sql(op))?;
                    AppVersion { app_id: id, version: 1, created: true }
                }
            };
            tx.commit().map_err(sql(op))?;
            if result.created {
                tracing::info!(app_id = %result.app_id, version = result.version, "stored new app version");
            }
            Ok(result)
        })
        .await
    }

    /// The app with its active definition, or `None`.
    pub async fn get_app(&self, id: &str) -> Result<Option<StoredApp>, StoreError> {
        let id = id.to_owned();
        self.read("get app", move |conn| {
            conn.prepare_cached(&format!("{SELECT_APP} WHERE a.id = ?1"))
                .and_then(|mut stmt| stmt.query_row([&id], app_from_row).optional())
                .map_err(sql("get app"))
        })
        .await
    }

    /// Every app, by id.
    pub async fn list_apps(&self) -> Result<Vec<StoredApp>, StoreError> {
        self.read("list apps", |conn| {
            let mut stmt = conn.prepare_cached(&format!("{SELECT_APP} ORDER BY a.id")).map_err(sql("list apps"))?;
            let rows = stmt.query_map([], app_from_row).map_err(sql("list apps"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql("list apps"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{open_store, TestStore};

    #[tokio::test]
    async fn put_app_versions_only_changed_definitions() {
        let TestStore { store, _dir } = open_store();
        let v = store.put_app("a1", "One", "chat", r#"{"k":1}"#, "config").await.expect("put");
        assert_eq!(v, AppVersion { app_id: "a1".into(), version: 1, created: true });

        let same = store.put_app("a1", "One renamed", "chat", r#"{"k":1}"#, "import").await.expect("same");
        assert_eq!(same, AppVersion { app_id: "a1".into(), version: 1, created: false });
        let app = store.get_app("a1").await.expect("get").expect("exists");
        assert_eq!(app.name, "One renamed");

        let v2 = store.put_app("a1", "One", "chat", r#"{"k":2}"#, "import").await.expect("v2");
        assert_eq!(v2, AppVersion { app_id: "a1".into(), version: 2, created: true });
        let app = store.get_app("a1").await.expect("get").expect("exists");
        assert_eq!((app.version, app.definition_json.as_str()), (2, r#"{"k":2}"#));

        // Going back to an old definition is a new version, not a reactivation.
        let v3 = store.put_app("a1", "One", "chat", r#"{"k":1}"#, "config").await.expect("v3");
        assert_eq!(v3.version, 3);
        assert!(v3.created);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn get_and_list_apps() {
        let TestStore { store, _dir } = open_store();
        assert_eq!(store.get_app("nope").await.expect("get"), None);
        store.put_app("b", "B", "completion", "{}", "config").await.expect("put b");
        store.put_app("a", "A", "chat", "[]", "import").await.expect("put a");
        store.create_key("a").await.expect("key 1");
        let (k2, _) = store.create_key("a").await.expect("key 2");
        store.revoke_key(&k2.id).await.expect("revoke");

        let apps = store.list_apps().await.expect("list");
        let ids: Vec<_> = apps.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(apps[0].active_keys, 1);
        assert_eq!(apps[0].mode, "chat");
        assert_eq!(apps[1].active_keys, 0);
        assert_eq!(apps[1].definition_json, "{}");
        assert!(apps[1].created_at > 0 && apps[1].updated_at >= apps[1].created_at);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn put_app_rejects_bad_input() {
        let TestStore { store, _dir } = open_store();
        let cases = [
            ("", "chat", "{}", "config", "app id"),
            ("a", "agent", "{}", "config", "mode"),
            ("a", "chat", "{}", "upload", "source"),
            ("a", "chat", "{not json", "config", "definition"),
            ("a", "chat", "", "config", "definition"),
        ];
        for (id, mode, def, source, field) in cases {
            let err = store.put_app(id, "n", mode, def, source).await.expect_err(field);
            assert!(matches!(err, StoreError::InvalidArgument { field: f, .. } if f == field), "{field}: {err:?}");
        }
        assert!(store.list_apps().await.expect("list").is_empty());
        store.close().await.expect("close");
    }
}
