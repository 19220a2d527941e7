//! Apps and their immutable definition versions.
//!
//! Owns: the `apps` and `app_versions` tables. A definition is an opaque
//! JSON string here; the engine parses it. Each version has a `workflow_id`
//! (a UUID, Dify's name for a published workflow version) and its own mode;
//! the name is the app's, so a rename survives activating an older version.
//! Must not touch: keys, conversations, messages, runs.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::error::{sql, StoreError};
use super::{now, require_json, require_non_empty, Store};

/// App modes the store accepts.
const MODES: &[&str] = &["chat", "completion", "workflow", "advanced-chat"];
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
    /// The active version's workflow id (UUID).
    pub workflow_id: String,
}

/// An app with its active definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredApp {
    /// App id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `chat`, `completion`, `workflow` or `advanced-chat` (the active version's).
    pub mode: String,
    /// The active definition version.
    pub version: u32,
    /// The active version's workflow id (UUID).
    pub workflow_id: String,
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

/// One version of an app, for listings (`apps versions APP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppVersionInfo {
    /// Version number (1, 2, ...).
    pub version: u32,
    /// The version's workflow id (UUID).
    pub workflow_id: String,
    /// The mode the version runs in.
    pub mode: String,
    /// Where it came from (`config` or `import`).
    pub source: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether it is the app's active version.
    pub active: bool,
}

/// One version of an app with its definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAppVersion {
    /// Version number.
    pub version: u32,
    /// The version's workflow id (UUID).
    pub workflow_id: String,
    /// The mode the version runs in.
    pub mode: String,
    /// The definition (JSON).
    pub definition_json: String,
    /// Where it came from (`config` or `import`).
    pub source: String,
    /// Unix seconds.
    pub created_at: i64,
}

const SELECT_VERSION: &str = "SELECT version, workflow_id, mode, definition, source, created_at FROM app_versions";

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<StoredAppVersion> {
    Ok(StoredAppVersion {
        version: row.get(0)?,
        workflow_id: row.get(1)?,
        mode: row.get(2)?,
        definition_json: row.get(3)?,
        source: row.get(4)?,
        created_at: row.get(5)?,
    })
}

/// Version `version` of `app_id`: `NotFound { what: "app" }` for an unknown
/// app, `NotFound { what: "app version" }` for an unknown version.
fn find_version(conn: &Connection, app_id: &str, version: u32) -> Result<StoredAppVersion, StoreError> {
    let found = conn
        .prepare_cached(&format!("{SELECT_VERSION} WHERE app_id = ?1 AND version = ?2"))
        .and_then(|mut stmt| stmt.query_row(params![app_id, version], version_from_row).optional())
        .map_err(sql("get app version"))?;
    match found {
        Some(v) => Ok(v),
        None => {
            require_app(conn, app_id)?;
            Err(StoreError::NotFound { what: "app version", id: format!("{app_id}@{version}") })
        }
    }
}

const SELECT_APP: &str = "SELECT a.id, a.name, a.mode, a.active_version, v.definition, a.created_at, a.updated_at,
        (SELECT count(*) FROM api_keys k WHERE k.app_id = a.id AND k.revoked_at IS NULL), v.source, v.workflow_id
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
        workflow_id: row.get(9)?,
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
    /// one becomes a new immutable version with a new workflow id and is
    /// activated; an identical one only updates the name and the mode (of
    /// the app and of its active version; `created: false`).
    pub async fn put_app(&self, id: &str, name: &str, mode: &str, definition_json: &str, source: &str) -> Result<AppVersion, StoreError> {
        require_non_empty("app id", id)?;
        require_one_of("mode", mode, MODES)?;
        require_one_of("source", source, SOURCES)?;
        require_json("definition", definition_json)?;
        let (id, name, mode, definition, source) =
            (id.to_owned(), name.to_owned(), mode.to_owned(), definition_json.to_owned(), source.to_owned());
        self.write("put app", move |conn| {
            let op = "put app";
            let tx = conn.savepoint().map_err(sql(op))?;
            let now = now();
            let active: Option<(u32, String, String)> = tx
                .query_row(
                    "SELECT a.active_version, v.definition, v.workflow_id FROM apps a
                       JOIN app_versions v ON v.app_id = a.id AND v.version = a.active_version
                      WHERE a.id = ?1",
                    [&id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(sql(op))?;
            let result = match active {
                Some((version, current, workflow_id)) if current == definition => {
                    tx.execute(
                        "UPDATE apps SET name = ?2, mode = ?3, updated_at = ?4
                          WHERE id = ?1 AND (name <> ?2 OR mode <> ?3)",
                        params![id, name, mode, now],
                    )
                    .map_err(sql(op))?;
                    // The version's definition stays as it was; its mode follows the app's.
                    tx.execute("UPDATE app_versions SET mode = ?3 WHERE app_id = ?1 AND version = ?2", params![id, version, mode])
                        .map_err(sql(op))?;
                    AppVersion { app_id: id, version, created: false, workflow_id }
                }
                Some(_) => {
                    let workflow_id = uuid::Uuid::new_v4().to_string();
                    let version: u32 = tx
                        .query_row("SELECT max(version) + 1 FROM app_versions WHERE app_id = ?1", [&id], |row| row.get(0))
                        .map_err(sql(op))?;
                    tx.execute(
                        "INSERT INTO app_versions (app_id, version, definition, source, created_at, workflow_id, mode)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![id, version, definition, source, now, workflow_id, mode],
                    )
                    .map_err(sql(op))?;
                    tx.execute(
                        "UPDATE apps SET name = ?2, mode = ?3, active_version = ?4, updated_at = ?5 WHERE id = ?1",
                        params![id, name, mode, version, now],
                    )
                    .map_err(sql(op))?;
                    AppVersion { app_id: id, version, created: true, workflow_id }
                }
                None => {
                    let workflow_id = uuid::Uuid::new_v4().to_string();
                    tx.execute(
                        "INSERT INTO apps (id, name, mode, active_version, created_at, updated_at)
                         VALUES (?1, ?2, ?3, 1, ?4, ?4)",
                        params![id, name, mode, now],
                    )
                    .map_err(sql(op))?;
                    tx.execute(
                        "INSERT INTO app_versions (app_id, version, definition, source, created_at, workflow_id, mode)
                         VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6)",
                        params![id, definition, source, now, workflow_id, mode],
                    )
                    .map_err(sql(op))?;
                    AppVersion { app_id: id, version: 1, created: true, workflow_id }
                }
            };
            tx.commit().map_err(sql(op))?;
            if result.created {
                tracing::info!(app_id = %result.app_id, version = result.version, workflow_id = %result.workflow_id, "stored new app version");
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

    /// Every version of an app, newest first. `NotFound { what: "app" }` for an unknown app.
    pub async fn list_app_versions(&self, app_id: &str) -> Result<Vec<AppVersionInfo>, StoreError> {
        let app_id = app_id.to_owned();
        self.read("list app versions", move |conn| {
            let op = "list app versions";
            require_app(conn, &app_id)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT v.version, v.workflow_id, v.mode, v.source, v.created_at, v.version = a.active_version
                       FROM app_versions v JOIN apps a ON a.id = v.app_id
                      WHERE v.app_id = ?1 ORDER BY v.version DESC",
                )
                .map_err(sql(op))?;
            let rows = stmt
                .query_map([&app_id], |row| {
                    Ok(AppVersionInfo {
                        version: row.get(0)?,
                        workflow_id: row.get(1)?,
                        mode: row.get(2)?,
                        source: row.get(3)?,
                        created_at: row.get(4)?,
                        active: row.get(5)?,
                    })
                })
                .map_err(sql(op))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))
        })
        .await
    }

    /// One version of an app with its definition: `NotFound { what: "app" }`
    /// or `NotFound { what: "app version" }`.
    pub async fn get_app_version(&self, app_id: &str, version: u32) -> Result<StoredAppVersion, StoreError> {
        let app_id = app_id.to_owned();
        self.read("get app version", move |conn| find_version(conn, &app_id, version)).await
    }

    /// The version of `app_id` whose workflow id is `workflow_id` (Dify's
    /// `POST /workflows/{workflow_id}/run`). Another app's workflow id is
    /// `NotFound { what: "app version" }` like an unknown one.
    pub async fn find_app_version_by_workflow_id(&self, app_id: &str, workflow_id: &str) -> Result<StoredAppVersion, StoreError> {
        let (app_id, workflow_id) = (app_id.to_owned(), workflow_id.to_owned());
        self.read("find app version", move |conn| {
            let found = conn
                .prepare_cached(&format!("{SELECT_VERSION} WHERE workflow_id = ?1 AND app_id = ?2"))
                .and_then(|mut stmt| stmt.query_row([&workflow_id, &app_id], version_from_row).optional())
                .map_err(sql("find app version"))?;
            match found {
                Some(v) => Ok(v),
                None => {
                    require_app(conn, &app_id)?;
                    Err(StoreError::NotFound { what: "app version", id: workflow_id })
                }
            }
        })
        .await
    }

    /// Makes `version` the app's active version (instant rollback) and sets
    /// the app's mode to that version's; the name stays the app's.
    /// Activating the active version changes nothing and returns the app.
    pub async fn activate_app_version(&self, app_id: &str, version: u32) -> Result<StoredApp, StoreError> {
        let app_id = app_id.to_owned();
        self.write("activate app version", move |conn| {
            let op = "activate app version";
            let tx = conn.savepoint().map_err(sql(op))?;
            let target = find_version(&tx, &app_id, version)?;
            let changed = tx
                .execute(
                    "UPDATE apps SET active_version = ?2, mode = ?3, updated_at = ?4 WHERE id = ?1 AND active_version <> ?2",
                    params![app_id, version, target.mode, now()],
                )
                .map_err(sql(op))?;
            let app = tx
                .prepare_cached(&format!("{SELECT_APP} WHERE a.id = ?1"))
                .and_then(|mut stmt| stmt.query_row([&app_id], app_from_row))
                .map_err(sql(op))?;
            tx.commit().map_err(sql(op))?;
            if changed > 0 {
                tracing::info!(app_id = %app_id, version, workflow_id = %target.workflow_id, "activated app version");
            }
            Ok(app)
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
        let w1 = v.workflow_id.clone();
        assert_eq!(v, AppVersion { app_id: "a1".into(), version: 1, created: true, workflow_id: w1.clone() });
        assert_eq!(uuid::Uuid::parse_str(&w1).expect("uuid").get_version_num(), 4);

        let same = store.put_app("a1", "One renamed", "chat", r#"{"k":1}"#, "import").await.expect("same");
        assert_eq!(same, AppVersion { app_id: "a1".into(), version: 1, created: false, workflow_id: w1.clone() });
        let app = store.get_app("a1").await.expect("get").expect("exists");
        assert_eq!((app.name.as_str(), app.workflow_id.as_str()), ("One renamed", w1.as_str()));

        let v2 = store.put_app("a1", "One", "chat", r#"{"k":2}"#, "import").await.expect("v2");
        assert_eq!((v2.version, v2.created), (2, true));
        assert_ne!(v2.workflow_id, w1, "every version has its own workflow id");
        let app = store.get_app("a1").await.expect("get").expect("exists");
        assert_eq!((app.version, app.definition_json.as_str(), app.workflow_id.as_str()), (2, r#"{"k":2}"#, v2.workflow_id.as_str()));

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
            ("a", "Workflow", "{}", "config", "mode"),
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

    #[tokio::test]
    async fn every_mode_is_accepted() {
        let TestStore { store, _dir } = open_store();
        for mode in ["chat", "completion", "workflow", "advanced-chat"] {
            store.put_app(mode, mode, mode, "{}", "import").await.expect(mode);
            assert_eq!(store.get_app(mode).await.expect("get").expect("exists").mode, mode);
        }
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn versions_are_listed_fetched_and_found_by_workflow_id() {
        let TestStore { store, _dir } = open_store();
        let v1 = store.put_app("a1", "One", "chat", r#"{"k":1}"#, "config").await.expect("v1");
        let v2 = store.put_app("a1", "One", "advanced-chat", r#"{"k":2}"#, "import").await.expect("v2");
        let other = store.put_app("a2", "Two", "workflow", "{}", "import").await.expect("other app");

        let versions = store.list_app_versions("a1").await.expect("list");
        let seen: Vec<_> =
            versions.iter().map(|v| (v.version, v.workflow_id.as_str(), v.mode.as_str(), v.source.as_str(), v.active)).collect();
        assert_eq!(
            seen,
            [(2, v2.workflow_id.as_str(), "advanced-chat", "import", true), (1, v1.workflow_id.as_str(), "chat", "config", false)]
        );
        assert!(versions.iter().all(|v| v.created_at > 0));

        let got = store.get_app_version("a1", 1).await.expect("get v1");
        assert_eq!(
            (got.version, got.workflow_id.as_str(), got.mode.as_str(), got.definition_json.as_str(), got.source.as_str()),
            (1, v1.workflow_id.as_str(), "chat", r#"{"k":1}"#, "config")
        );
        assert_eq!(store.find_app_version_by_workflow_id("a1", &v1.workflow_id).await.expect("by workflow id"), got);

        // Unknown app, unknown version, another app's workflow id.
        let err = store.list_app_versions("ghost").await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        let err = store.get_app_version("ghost", 1).await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        let err = store.get_app_version("a1", 3).await.expect_err("no version");
        assert!(matches!(err, StoreError::NotFound { what: "app version", .. }), "{err:?}");
        let err = store.find_app_version_by_workflow_id("a1", &other.workflow_id).await.expect_err("another app's");
        assert!(matches!(err, StoreError::NotFound { what: "app version", .. }), "{err:?}");
        let err = store.find_app_version_by_workflow_id("a1", "not-a-uuid").await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound { what: "app version", .. }), "{err:?}");
        let err = store.find_app_version_by_workflow_id("ghost", &v1.workflow_id).await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn activating_a_version_rolls_back_definition_and_mode_but_not_the_name() {
        let TestStore { store, _dir } = open_store();
        let v1 = store.put_app("a1", "One", "chat", r#"{"k":1}"#, "config").await.expect("v1");
        let v2 = store.put_app("a1", "One renamed", "advanced-chat", r#"{"k":2}"#, "import").await.expect("v2");
        let before = store.get_app("a1").await.expect("get").expect("exists");

        let app = store.activate_app_version("a1", 1).await.expect("activate v1");
        assert_eq!(
            (app.version, app.workflow_id.as_str(), app.mode.as_str(), app.definition_json.as_str(), app.name.as_str()),
            (1, v1.workflow_id.as_str(), "chat", r#"{"k":1}"#, "One renamed")
        );
        assert_eq!(app.source, "config");
        assert!(app.updated_at >= before.updated_at);
        assert_eq!(store.get_app("a1").await.expect("get").expect("exists"), app);
        let active: Vec<_> = store.list_app_versions("a1").await.expect("list").iter().map(|v| (v.version, v.active)).collect();
        assert_eq!(active, [(2, false), (1, true)]);

        // Again: a no-op that returns the same app.
        assert_eq!(store.activate_app_version("a1", 1).await.expect("again"), app);

        // Putting v1's definition again changes nothing now; v2's is a new version 3.
        let same = store.put_app("a1", "One renamed", "chat", r#"{"k":1}"#, "import").await.expect("same");
        assert_eq!((same.version, same.created), (1, false));
        let v3 = store.put_app("a1", "One renamed", "advanced-chat", r#"{"k":2}"#, "import").await.expect("v3");
        assert_eq!((v3.version, v3.created), (3, true));
        assert_ne!(v3.workflow_id, v2.workflow_id);

        let err = store.activate_app_version("a1", 9).await.expect_err("no version");
        assert!(matches!(err, StoreError::NotFound { what: "app version", .. }), "{err:?}");
        let err = store.activate_app_version("ghost", 1).await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        assert_eq!(store.get_app("a1").await.expect("get").expect("exists").version, 3, "a failed activation changes nothing");
        store.close().await.expect("close");
    }
}
