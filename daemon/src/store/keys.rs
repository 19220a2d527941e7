//! API keys of two kinds, as in Dify: app keys (`app-` + 24 random
//! alphanumerics) open one app's routes; dataset keys (`dataset-` + 24)
//! open the datasets API and nothing else.
//!
//! Owns: the `api_keys` table, secret generation and verification. Only the
//! sha256 of a secret and its 8-character lookup prefix are stored; the
//! secret itself is returned once, by [`Store::create_key`] or
//! [`Store::create_dataset_key`].
//! Must not touch: HTTP headers (the `api` module extracts the bearer token).

use rand::distributions::Alphanumeric;
use rand::rngs::OsRng;
use rand::Rng;
use rusqlite::{params, OptionalExtension, Row};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::apps::require_app;
use super::error::{sql, StoreError};
use super::writer::Done;
use super::{lock, now, Store};

const SECRET_BODY_LEN: usize = 24;
const LOOKUP_PREFIX_LEN: usize = 8;
/// `last_used_at` is refreshed at most this often (seconds).
const LAST_USED_RESOLUTION: i64 = 60;

/// The kind of a key, stored in `api_keys.kind`; it decides the secret's
/// prefix and which routes the key opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    App,
    Dataset,
}

stored_as_text!(KeyKind, "key kind", App => "app", Dataset => "dataset");

impl KeyKind {
    /// What every secret of this kind starts with.
    fn secret_prefix(self) -> &'static str {
        match self {
            KeyKind::App => "app-",
            KeyKind::Dataset => "dataset-",
        }
    }
}

/// What a key opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// The routes of this app (Service API, OpenAI API).
    App(String),
    /// The datasets API (every dataset), never an app's routes.
    Datasets,
}

/// An API key as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// Key id (UUID).
    pub id: String,
    /// What the key opens.
    pub scope: KeyScope,
    /// The first 8 characters after `app-` or `dataset-`, to recognise a
    /// key in listings.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
    /// Unix seconds of the last successful authentication (minute resolution).
    pub last_used_at: Option<i64>,
}

impl ApiKeyInfo {
    /// The app an app key opens; `None` for a dataset key.
    pub fn app_id(&self) -> Option<&str> {
        match &self.scope {
            KeyScope::App(id) => Some(id),
            KeyScope::Datasets => None,
        }
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        match self.scope {
            KeyScope::App(_) => KeyKind::App,
            KeyScope::Datasets => KeyKind::Dataset,
        }
    }
}

const KEY_COLUMNS: &str = "id, kind, app_id, prefix, created_at, revoked_at, last_used_at";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    let scope = match (row.get::<_, KeyKind>(1)?, row.get::<_, Option<String>>(2)?) {
        (KeyKind::App, Some(app_id)) => KeyScope::App(app_id),
        (KeyKind::Dataset, None) => KeyScope::Datasets,
        (kind, app_id) => {
            let reason = format!("a {kind} key with app_id {app_id:?}");
            return Err(rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, reason.into()));
        }
    };
    Ok(ApiKeyInfo {
        id: row.get(0)?,
        scope,
        prefix: row.get(3)?,
        created_at: row.get(4)?,
        revoked_at: row.get(5)?,
        last_used_at: row.get(6)?,
    })
}

/// A fresh secret of `kind` from the OS CSPRNG, and its lookup prefix.
fn generate_secret(kind: KeyKind) -> (String, String) {
    let body: String = OsRng.sample_iter(&Alphanumeric).take(SECRET_BODY_LEN).map(char::from).collect();
    let prefix = body.chars().take(LOOKUP_PREFIX_LEN).collect();
    (format!("{}{body}", kind.secret_prefix()), prefix)
}

/// The kind and lookup prefix of a well-formed secret, `None` for anything else.
fn lookup_prefix(secret: &str) -> Option<(KeyKind, &str)> {
    let (kind, body) = KeyKind::ALL.iter().find_map(|&k| Some((k, secret.strip_prefix(k.secret_prefix())?)))?;
    if body.len() != SECRET_BODY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some((kind, body.get(..LOOKUP_PREFIX_LEN)?))
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Verified keys kept in memory (a few hundred bytes each): a request's key
/// check costs no store read. Only valid, unrevoked keys are kept (a flood
/// of wrong secrets never enters it); every revocation empties it.
pub(super) const KEY_MEMO_MAX: usize = 1024;

impl Store {
    /// Creates a key for an existing app; returns its info and the secret
    /// (shown once, never stored).
    pub async fn create_key(&self, app_id: &str) -> Result<(ApiKeyInfo, String), StoreError> {
        self.insert_key(KeyScope::App(app_id.to_owned())).await
    }

    /// Creates a dataset key (opens the datasets API only); returns its
    /// info and the secret (shown once, never stored).
    pub async fn create_dataset_key(&self) -> Result<(ApiKeyInfo, String), StoreError> {
        self.insert_key(KeyScope::Datasets).await
    }

    async fn insert_key(&self, scope: KeyScope) -> Result<(ApiKeyInfo, String), StoreError> {
        let info = ApiKeyInfo {
            id: uuid::Uuid::new_v4().to_string(),
            scope,
            prefix: String::new(),
            created_at: now(),
            revoked_at: None,
            last_used_at: None,
        };
        let (secret, prefix) = generate_secret(info.kind());
        let info = ApiKeyInfo { prefix, ..info };
        let hash = hash_secret(&secret);
        let info = self
            .write("create key", move |conn| {
                if let Some(app_id) = info.app_id() {
                    require_app(conn, app_id)?;
                }
                conn.execute(
                    "INSERT INTO api_keys (id, kind, app_id, prefix, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![info.id, info.kind(), info.app_id(), info.prefix, &hash[..], info.created_at],
                )
                .map_err(sql("create key"))?;
                Ok(info)
            })
            .await?;
        tracing::info!(key_id = %info.id, kind = %info.kind(), app_id = info.app_id(), prefix = %info.prefix, "created API key");
        Ok((info, secret))
    }

    /// Keys of one app (`NotFound` if the app is unknown), or every key
    /// (app and dataset keys); oldest first, revoked ones included.
    pub async fn list_keys(&self, app_id: Option<&str>) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let app_id = app_id.map(str::to_owned);
        self.read("list keys", move |conn| {
            let op = "list keys";
            if let Some(app_id) = &app_id {
                require_app(conn, app_id)?;
            }
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE ?1 IS NULL OR app_id = ?1 ORDER BY created_at, rowid"))
                .map_err(sql(op))?;
            let rows = stmt.query_map([&app_id], key_from_row).map_err(sql(op))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))
        })
        .await
    }

    /// Revokes a key. Revoking a revoked key changes nothing and succeeds.
    pub async fn revoke_key(&self, key_id: &str) -> Result<ApiKeyInfo, StoreError> {
        let key_id = key_id.to_owned();
        let info = self
            .write("revoke key", move |conn| {
                let op = "revoke key";
                conn.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![key_id, now()])
                    .map_err(sql(op))?;
                conn.query_row(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"), [&key_id], key_from_row)
                    .optional()
                    .map_err(sql(op))?
                    .ok_or(StoreError::NotFound { what: "api key", id: key_id })
            })
            .await?;
        lock(&self.inner.key_memo).invalidate();
        tracing::info!(key_id = %info.id, kind = %info.kind(), app_id = info.app_id(), "revoked API key");
        Ok(info)
    }

    /// Looks the key up by prefix, compares sha256 in constant time and
    /// ignores revoked keys. Refreshes `last_used_at` at most once a minute,
    /// through the writer without waiting for it (a full queue skips the
    /// refresh). A malformed secret is `Ok(None)` without touching SQL.
    /// The returned `last_used_at` is the stored value when the key was
    /// first verified since start (verified keys are kept in memory until a
    /// revocation: [`KEY_MEMO_MAX`]).
    /// The key's [`KeyScope`] says what it opens: callers must check it (an
    /// app key never opens the datasets API, a dataset key never an app).
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiKeyInfo>, StoreError> {
        let Some((kind, prefix)) = lookup_prefix(secret) else {
            return Ok(None);
        };
        let prefix = prefix.to_owned();
        let hash = hash_secret(secret);
        let (cached, generation) = lock(&self.inner.key_memo).get(&hash);
        if let Some(key) = cached {
            self.note_key_use(&key);
            return Ok(Some(key));
        }
        let found = self
            .read("authenticate", move |conn| {
                let op = "authenticate";
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {KEY_COLUMNS}, hash FROM api_keys WHERE kind = ?1 AND prefix = ?2 AND revoked_at IS NULL"
                    ))
                    .map_err(sql(op))?;
                let mut rows = stmt.query(params![kind, prefix]).map_err(sql(op))?;
                let mut found = None;
                while let Some(row) = rows.next().map_err(sql(op))? {
                    let stored: Vec<u8> = row.get(7).map_err(sql(op))?;
                    if bool::from(stored.as_slice().ct_eq(&hash[..])) {
                        found = Some(key_from_row(row).map_err(sql(op))?);
                    }
                }
                Ok(found)
            })
            .await?;
        if let Some(key) = &found {
            lock(&self.inner.key_memo).fill(generation, hash, key.clone());
            self.note_key_use(key);
        }
        Ok(found)
    }

    /// Queues a `last_used_at` refresh unless one is recent (in the row or queued).
    fn note_key_use(&self, key: &ApiKeyInfo) {
        let now = now();
        let fresh = |t: i64| now.saturating_sub(t) < LAST_USED_RESOLUTION;
        if key.last_used_at.is_some_and(fresh) {
            return;
        }
        {
            let mut touches = lock(&self.inner.key_touches);
            if touches.get(&key.id).copied().is_some_and(fresh) {
                return;
            }
            touches.insert(key.id.clone(), now);
        }
        let key_id = key.id.clone();
        let queued = self.submit(Box::new(move |conn| {
            let updated = conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at <= ?2 - ?3)",
                params![key_id, now, LAST_USED_RESOLUTION],
            );
            if let Err(error) = &updated {
                tracing::warn!(key_id = %key_id, %error, "could not record API key use");
            }
            Done::unanswered(updated.is_ok())
        }));
        if let Err(error) = queued {
            tracing::debug!(key_id = %key.id, %error, "skipped recording API key use");
            lock(&self.inner.key_touches).remove(&key.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{open_store, wait_for, TestStore};

    #[test]
    fn secrets_have_the_documented_shape() {
        let (a, prefix) = generate_secret(KeyKind::App);
        let (b, _) = generate_secret(KeyKind::App);
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 24);
        assert!(a.starts_with("app-"));
        assert_eq!(lookup_prefix(&a), Some((KeyKind::App, prefix.as_str())));
        assert_eq!(prefix, a[4..12]);
        let (d, prefix) = generate_secret(KeyKind::Dataset);
        assert_eq!(d.len(), 8 + 24);
        assert!(d.starts_with("dataset-"));
        assert_eq!(lookup_prefix(&d), Some((KeyKind::Dataset, prefix.as_str())));
        assert_eq!(prefix, d[8..16]);
    }

    #[test]
    fn malformed_secrets_have_no_prefix() {
        for bad in [
            "",
            "app-",
            "app-short",
            "key-ABCDEFGHIJKLMNOPQRSTUVWX",
            "app-ABCDEFGHIJKLMNOPQRSTUVWXY",
            "app-ABCDEFGHIJKLMNOPQRSTUVW!",
            "app-ABCDEFGHIJKLMNOPQRSTUVé",
            "APP-ABCDEFGHIJKLMNOPQRSTUVWX",
            "dataset-",
            "dataset-ABCDEFGHIJKLMNOPQRSTUVW",
            "dataset-ABCDEFGHIJKLMNOPQRSTUVWXY",
            "Dataset-ABCDEFGHIJKLMNOPQRSTUVWX",
            "dataset_ABCDEFGHIJKLMNOPQRSTUVWX",
        ] {
            assert_eq!(lookup_prefix(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn create_authenticate_revoke() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        let (info, secret) = store.create_key("a1").await.expect("create");
        assert_eq!(info.scope, KeyScope::App("a1".into()));
        assert_eq!(info.prefix, secret[4..12]);
        assert_eq!((info.revoked_at, info.last_used_at), (None, None));

        let authed = store.authenticate(&secret).await.expect("auth").expect("valid");
        assert_eq!(authed.id, info.id);

        let revoked = store.revoke_key(&info.id).await.expect("revoke");
        let at = revoked.revoked_at.expect("revoked_at set");
        let again = store.revoke_key(&info.id).await.expect("revoke is idempotent");
        assert_eq!(again.revoked_at, Some(at));
        assert_eq!(store.authenticate(&secret).await.expect("auth"), None);

        let keys = store.list_keys(Some("a1")).await.expect("list");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].revoked_at, Some(at));
        store.close().await.expect("close");
    }

    /// A verified key is answered from memory until a revocation; an
    /// unknown secret is not kept.
    #[tokio::test]
    async fn verified_keys_are_kept_until_a_revocation() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        let (info, secret) = store.create_key("a1").await.expect("create");
        store.authenticate(&secret).await.expect("auth").expect("valid");
        assert_eq!(lock(&store.inner.key_memo).get(&hash_secret(&secret)).0.map(|k| k.id), Some(info.id.clone()));
        assert!(store.authenticate("app-AAAAAAAAAAAAAAAAAAAAAAAA").await.expect("auth").is_none());
        assert_eq!(lock(&store.inner.key_memo).len(), 1, "an unknown secret is not kept");
        store.revoke_key(&info.id).await.expect("revoke");
        assert_eq!(lock(&store.inner.key_memo).len(), 0, "a revocation empties the memo");
        store.close().await.expect("close");
    }

    /// A dataset key opens the datasets API only: `authenticate` says so by
    /// its scope, and its secret under the app prefix is no key at all.
    #[tokio::test]
    async fn dataset_keys_are_told_apart_from_app_keys() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        let (app_key, app_secret) = store.create_key("a1").await.expect("app key");
        let (info, secret) = store.create_dataset_key().await.expect("dataset key");
        assert!(secret.starts_with("dataset-") && secret.len() == 32, "{secret}");
        assert_eq!((info.scope.clone(), info.kind(), info.app_id()), (KeyScope::Datasets, KeyKind::Dataset, None));
        assert_eq!(info.prefix, secret[8..16]);

        let authed = store.authenticate(&secret).await.expect("auth").expect("valid");
        assert_eq!((authed.id.as_str(), authed.scope.clone()), (info.id.as_str(), KeyScope::Datasets));
        let authed = store.authenticate(&app_secret).await.expect("auth").expect("valid");
        assert_eq!(authed.scope, KeyScope::App("a1".into()));
        // The same body under the other kind's prefix is not a key.
        let swapped = format!("app-{}", &secret[8..]);
        assert_eq!(store.authenticate(&swapped).await.expect("auth"), None);
        let swapped = format!("dataset-{}", &app_secret[4..]);
        assert_eq!(store.authenticate(&swapped).await.expect("auth"), None);

        // Listed with every key, not with an app's; revoked like any key.
        let all: Vec<_> = store.list_keys(None).await.expect("list").into_iter().map(|k| k.id).collect();
        assert_eq!(all, [app_key.id.clone(), info.id.clone()]);
        let of_app: Vec<_> = store.list_keys(Some("a1")).await.expect("list").into_iter().map(|k| k.id).collect();
        assert_eq!(of_app, [app_key.id]);
        assert!(store.revoke_key(&info.id).await.expect("revoke").revoked_at.is_some());
        assert_eq!(store.authenticate(&secret).await.expect("auth"), None);
        store.close().await.expect("close");
    }

    /// Keys written by a v3 daemon open their app after the v4 migration.
    #[tokio::test]
    async fn keys_of_a_v3_store_still_work_after_migrating() {
        use crate::store::migrations::{migrate, MIGRATIONS};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edgeai.db");
        let secret = "app-ABCDEFGHijklmnop12345678";
        {
            let mut conn = rusqlite::Connection::open(&path).expect("open");
            migrate(&mut conn, &path, &MIGRATIONS[..3]).expect("v3");
            conn.execute("INSERT INTO apps VALUES ('a1', 'One', 'chat', 1, 10, 10)", []).expect("app");
            conn.execute("INSERT INTO api_keys VALUES ('k1', 'a1', 'ABCDEFGH', ?1, 10, NULL, NULL)", [&hash_secret(secret)[..]])
                .expect("key");
        }
        let (store, report) = Store::open(&path).expect("open migrates");
        assert_eq!(report.schema_version, super::super::supported_schema_version());
        let key = store.authenticate(secret).await.expect("auth").expect("the old key works");
        assert_eq!((key.id.as_str(), key.scope), ("k1", KeyScope::App("a1".into())));
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn unknown_app_and_unknown_key_are_not_found() {
        let TestStore { store, _dir } = open_store();
        let err = store.create_key("ghost").await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", ref id } if id == "ghost"), "{err:?}");
        let err = store.revoke_key("ghost-key").await.expect_err("no key");
        assert!(matches!(err, StoreError::NotFound { what: "api key", .. }), "{err:?}");
        let err = store.list_keys(Some("ghost")).await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn wrong_or_malformed_secrets_fail() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        let (_, secret) = store.create_key("a1").await.expect("create");
        // Right prefix, wrong tail.
        let mut wrong = secret[..secret.len() - 1].to_owned();
        wrong.push(if secret.ends_with('x') { 'y' } else { 'x' });
        assert_eq!(store.authenticate(&wrong).await.expect("auth"), None);
        assert_eq!(store.authenticate("app-nope").await.expect("auth"), None);
        assert_eq!(store.authenticate(&format!("{secret} ")).await.expect("auth"), None);
        assert_eq!(store.authenticate(&format!("Bearer {secret}")).await.expect("auth"), None);
        // The right secret still works after the failures.
        assert!(store.authenticate(&secret).await.expect("auth").is_some());
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn malformed_secret_does_not_touch_sql() {
        let TestStore { store, _dir } = open_store();
        let closer = store.clone();
        closer.close().await.expect("close");
        // A closed store fails every query, so Ok(None) proves no SQL ran.
        assert_eq!(store.authenticate("app-short").await.expect("no SQL"), None);
        let err = store.authenticate("app-ABCDEFGHIJKLMNOPQRSTUVWX").await.expect_err("SQL on a closed store");
        assert!(matches!(err, StoreError::Closed), "{err:?}");
    }

    #[tokio::test]
    async fn list_keys_of_all_apps() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        store.put_app("a2", "B", "chat", "{}", "config").await.expect("app");
        let (k1, _) = store.create_key("a1").await.expect("k1");
        let (k2, _) = store.create_key("a2").await.expect("k2");
        let all: Vec<_> = store.list_keys(None).await.expect("list").into_iter().map(|k| k.id).collect();
        assert_eq!(all, [k1.id.clone(), k2.id]);
        let one: Vec<_> = store.list_keys(Some("a1")).await.expect("list").into_iter().map(|k| k.id).collect();
        assert_eq!(one, [k1.id]);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn last_used_is_recorded_at_most_once_a_minute() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        let (info, secret) = store.create_key("a1").await.expect("create");
        store.authenticate(&secret).await.expect("auth").expect("valid");
        let first = wait_for(|| async { store.list_keys(Some("a1")).await.expect("list")[0].last_used_at }).await;
        // Pretend the recorded use is 30 s old: not refreshed yet.
        let id = info.id.clone();
        store
            .write("test: age last use", move |conn| {
                conn.execute("UPDATE api_keys SET last_used_at = last_used_at - 30 WHERE id = ?1", [&id]).map_err(sql("age"))
            })
            .await
            .expect("age");
        store.authenticate(&secret).await.expect("auth").expect("valid");
        store.ping_writer().await.expect("flush queue");
        let keys = store.list_keys(Some("a1")).await.expect("list");
        assert_eq!(keys[0].last_used_at, Some(first - 30));

        // 90 s later (in the row and in the queued-update memo): refreshed.
        let id = info.id.clone();
        store
            .write("test: age last use", move |conn| {
                conn.execute("UPDATE api_keys SET last_used_at = last_used_at - 60 WHERE id = ?1", [&id]).map_err(sql("age"))
            })
            .await
            .expect("age");
        for t in lock(&store.inner.key_touches).values_mut() {
            *t -= 90;
        }
        store.authenticate(&secret).await.expect("auth").expect("valid");
        let refreshed = wait_for(|| async {
            let t = store.list_keys(Some("a1")).await.expect("list")[0].last_used_at;
            t.filter(|&t| t >= first)
        })
        .await;
        assert!(refreshed >= first);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn the_secret_is_not_stored_in_plaintext() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        let (_, secret) = store.create_key("a1").await.expect("create");
        let path = store.inner.path.clone();
        store.close().await.expect("close");
        let bytes = std::fs::read(&path).expect("db bytes");
        let body = &secret.as_bytes()[4..];
        assert!(!bytes.windows(body.len()).any(|w| w == body), "secret found in {}", path.display());
        // The lookup prefix is stored (that is its purpose); the hash too.
        let hash = hash_secret(&secret);
        assert!(bytes.windows(hash.len()).any(|w| w == hash));
    }
}
