//! Conversations, always scoped by app AND user.
//!
//! Owns: the `conversations` table and its Dify-style pagination. Another
//! user's conversation is `NotFound`, exactly like an unknown one.
//! Must not touch: messages (they cascade on delete through the schema).

use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::apps::require_app;
use super::error::{sql, StoreError};
use super::{now, require_json, require_limit, require_non_empty, Store};

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Conversation id (UUID).
    pub id: String,
    /// Owning app.
    pub app_id: String,
    /// Owning end user (Dify's `user`).
    pub user: String,
    /// Display name.
    pub name: String,
    /// The app inputs fixed at the first message (JSON object text).
    pub inputs_json: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; bumped by new messages and renames.
    pub updated_at: i64,
}

/// Dify's `sort_by` for `GET /conversations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConversationSort {
    /// `created_at`
    CreatedAsc,
    /// `-created_at`
    CreatedDesc,
    /// `updated_at`
    UpdatedAsc,
    /// `-updated_at` (Dify's default)
    #[default]
    UpdatedDesc,
}

impl ConversationSort {
    /// Dify's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreatedAsc => "created_at",
            Self::CreatedDesc => "-created_at",
            Self::UpdatedAsc => "updated_at",
            Self::UpdatedDesc => "-updated_at",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::CreatedAsc | Self::CreatedDesc => "created_at",
            Self::UpdatedAsc | Self::UpdatedDesc => "updated_at",
        }
    }

    fn descending(self) -> bool {
        matches!(self, Self::CreatedDesc | Self::UpdatedDesc)
    }
}

impl FromStr for ConversationSort {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::CreatedAsc, Self::CreatedDesc, Self::UpdatedAsc, Self::UpdatedDesc].into_iter().find(|sort| sort.as_str() == s).ok_or_else(
            || StoreError::InvalidArgument {
                field: "sort_by",
                reason: format!("{s:?} is not one of created_at, -created_at, updated_at, -updated_at"),
            },
        )
    }
}

const COLUMNS: &str = "id, app_id, user, name, inputs, created_at, updated_at";

fn conversation_from_row(row: &Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: row.get(0)?,
        app_id: row.get(1)?,
        user: row.get(2)?,
        name: row.get(3)?,
        inputs_json: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound { what: "conversation", id: id.to_owned() }
}

/// The conversation if it belongs to `(app_id, user)`.
pub(crate) fn find_scoped(conn: &Connection, app_id: &str, user: &str, id: &str) -> Result<Conversation, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM conversations WHERE id = ?1 AND app_id = ?2 AND user = ?3"))
        .and_then(|mut stmt| stmt.query_row([id, app_id, user], conversation_from_row).optional())
        .map_err(sql("get conversation"))?
        .ok_or_else(|| not_found(id))
}

impl Store {
    /// Starts a conversation for an existing app.
    pub async fn create_conversation(&self, app_id: &str, user: &str, name: &str, inputs_json: &str) -> Result<Conversation, StoreError> {
        require_non_empty("user", user)?;
        require_json("inputs", inputs_json)?;
        let now = now();
        let conversation = Conversation {
            id: uuid::Uuid::now_v7().to_string(),
            app_id: app_id.to_owned(),
            user: user.to_owned(),
            name: name.to_owned(),
            inputs_json: inputs_json.to_owned(),
            created_at: now,
            updated_at: now,
        };
        self.write("create conversation", move |conn| {
            let c = conversation;
            require_app(conn, &c.app_id)?;
            conn.prepare_cached(&format!("INSERT INTO conversations ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"))
                .and_then(|mut stmt| stmt.execute(params![c.id, c.app_id, c.user, c.name, c.inputs_json, c.created_at, c.updated_at]))
                .map_err(sql("create conversation"))?;
            Ok(c)
        })
        .await
    }

    /// One conversation of `(app_id, user)`.
    pub async fn get_conversation(&self, app_id: &str, user: &str, id: &str) -> Result<Conversation, StoreError> {
        let (app_id, user, id) = (app_id.to_owned(), user.to_owned(), id.to_owned());
        self.read("get conversation", move |conn| find_scoped(conn, &app_id, &user, &id)).await
    }

    /// Dify's `GET /conversations`: up to `limit` (1..=100) conversations of
    /// `(app_id, user)` after `last_id` (the last item of the previous page;
    /// `NotFound` if unknown) in `sort` order, and whether more follow.
    /// Ties on the timestamp are ordered by insertion, so pages never
    /// skip or repeat a row.
    pub async fn list_conversations(
        &self,
        app_id: &str,
        user: &str,
        last_id: Option<&str>,
        limit: u32,
        sort: ConversationSort,
    ) -> Result<(Vec<Conversation>, bool), StoreError> {
        require_limit(limit)?;
        let (app_id, user) = (app_id.to_owned(), user.to_owned());
        let last_id = last_id.map(str::to_owned);
        self.read("list conversations", move |conn| {
            let op = "list conversations";
            let column = sort.column();
            let (dir, cmp) = if sort.descending() { ("DESC", "<") } else { ("ASC", ">") };
            let after: Option<(i64, i64)> = match &last_id {
                None => None,
                Some(id) => Some(
                    conn.prepare_cached(&format!("SELECT {column}, rowid FROM conversations WHERE id = ?1 AND app_id = ?2 AND user = ?3"))
                        .and_then(|mut stmt| stmt.query_row([id, &app_id, &user], |row| Ok((row.get(0)?, row.get(1)?))).optional())
                        .map_err(sql(op))?
                        .ok_or_else(|| not_found(id))?,
                ),
            };
            let keyset =
                if after.is_some() { format!("AND ({column} {cmp} ?3 OR ({column} = ?3 AND rowid {cmp} ?4))") } else { String::new() };
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM conversations WHERE app_id = ?1 AND user = ?2 {keyset}
                      ORDER BY {column} {dir}, rowid {dir} LIMIT ?5"
                ))
                .map_err(sql(op))?;
            let (value, rowid) = after.unzip();
            let rows = stmt.query_map(params![app_id, user, value, rowid, i64::from(limit) + 1], conversation_from_row).map_err(sql(op))?;
            let mut page = rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))?;
            let has_more = page.len() > limit as usize;
            page.truncate(limit as usize);
            Ok((page, has_more))
        })
        .await
    }

    /// Renames a conversation of `(app_id, user)` and bumps `updated_at`.
    pub async fn rename_conversation(&self, app_id: &str, user: &str, id: &str, name: &str) -> Result<Conversation, StoreError> {
        let (app_id, user, id, name) = (app_id.to_owned(), user.to_owned(), id.to_owned(), name.to_owned());
        self.write("rename conversation", move |conn| {
            let changed = conn
                .execute(
                    "UPDATE conversations SET name = ?4, updated_at = ?5 WHERE id = ?1 AND app_id = ?2 AND user = ?3",
                    params![id, app_id, user, name, now()],
                )
                .map_err(sql("rename conversation"))?;
            if changed == 0 {
                return Err(not_found(&id));
            }
            find_scoped(conn, &app_id, &user, &id)
        })
        .await
    }

    /// Deletes a conversation of `(app_id, user)`; its messages and their
    /// feedback go with it.
    pub async fn delete_conversation(&self, app_id: &str, user: &str, id: &str) -> Result<(), StoreError> {
        let (app_id, user, id) = (app_id.to_owned(), user.to_owned(), id.to_owned());
        self.write("delete conversation", move |conn| {
            let deleted = conn
                .execute("DELETE FROM conversations WHERE id = ?1 AND app_id = ?2 AND user = ?3", [&id, &app_id, &user])
                .map_err(sql("delete conversation"))?;
            if deleted == 0 {
                return Err(not_found(&id));
            }
            tracing::debug!(conversation_id = %id, app_id = %app_id, "deleted conversation");
            Ok(())
        })
        .await
    }

    /// Sets `updated_at` to now (a new message arrived).
    pub async fn touch_conversation(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write("touch conversation", move |conn| {
            let changed = conn
                .prepare_cached("UPDATE conversations SET updated_at = ?2 WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![id, now()]))
                .map_err(sql("touch conversation"))?;
            if changed == 0 {
                return Err(not_found(&id));
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{open_store, TestStore};

    async fn app(store: &Store, id: &str) {
        store.put_app(id, id, "chat", "{}", "config").await.expect("app");
    }

    /// Sets both timestamps of a conversation (tests need distinct seconds).
    async fn set_times(store: &Store, id: &str, created_at: i64, updated_at: i64) {
        let id = id.to_owned();
        store
            .write("test: set times", move |conn| {
                conn.execute("UPDATE conversations SET created_at = ?2, updated_at = ?3 WHERE id = ?1", params![id, created_at, updated_at])
                    .map_err(sql("set times"))
            })
            .await
            .expect("set times");
    }

    #[test]
    fn sort_parses_difys_strings() {
        for sort in
            [ConversationSort::CreatedAsc, ConversationSort::CreatedDesc, ConversationSort::UpdatedAsc, ConversationSort::UpdatedDesc]
        {
            assert_eq!(sort.as_str().parse::<ConversationSort>().expect("parse"), sort);
        }
        assert_eq!(ConversationSort::default(), ConversationSort::UpdatedDesc);
        for bad in ["", "name", "+created_at", "-updated_at ", "CREATED_AT"] {
            let err = bad.parse::<ConversationSort>().expect_err(bad);
            assert!(matches!(err, StoreError::InvalidArgument { field: "sort_by", .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn create_get_rename_touch() {
        let TestStore { store, _dir } = open_store();
        app(&store, "a1").await;
        let c = store.create_conversation("a1", "u1", "First", r#"{"x":1}"#).await.expect("create");
        assert_eq!(store.get_conversation("a1", "u1", &c.id).await.expect("get"), c);
        set_times(&store, &c.id, 100, 100).await;

        let renamed = store.rename_conversation("a1", "u1", &c.id, "Second").await.expect("rename");
        assert_eq!(renamed.name, "Second");
        assert!(renamed.updated_at > 100);
        assert_eq!(renamed.created_at, 100);

        set_times(&store, &c.id, 100, 100).await;
        store.touch_conversation(&c.id).await.expect("touch");
        assert!(store.get_conversation("a1", "u1", &c.id).await.expect("get").updated_at > 100);
        let err = store.touch_conversation("ghost").await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound { what: "conversation", .. }), "{err:?}");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn conversations_are_scoped_by_user_and_app() {
        let TestStore { store, _dir } = open_store();
        app(&store, "a1").await;
        app(&store, "a2").await;
        let c = store.create_conversation("a1", "u1", "mine", "{}").await.expect("create");
        for (app_id, user) in [("a1", "u2"), ("a2", "u1"), ("a1", "U1")] {
            let err = store.get_conversation(app_id, user, &c.id).await.expect_err("scoped");
            assert!(matches!(err, StoreError::NotFound { what: "conversation", ref id } if *id == c.id), "{err:?}");
            let err = store.rename_conversation(app_id, user, &c.id, "x").await.expect_err("scoped");
            assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
            let err = store.delete_conversation(app_id, user, &c.id).await.expect_err("scoped");
            assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
            let (page, more) = store.list_conversations(app_id, user, None, 20, ConversationSort::default()).await.expect("list");
            assert!(page.is_empty() && !more);
            // Another user's id is no valid cursor either.
            let err = store.list_conversations(app_id, user, Some(&c.id), 20, ConversationSort::default()).await.expect_err("cursor");
            assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        }
        assert_eq!(store.get_conversation("a1", "u1", &c.id).await.expect("still there").name, "mine");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn create_rejects_bad_input() {
        let TestStore { store, _dir } = open_store();
        let err = store.create_conversation("ghost", "u1", "n", "{}").await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        app(&store, "a1").await;
        let err = store.create_conversation("a1", "", "n", "{}").await.expect_err("no user");
        assert!(matches!(err, StoreError::InvalidArgument { field: "user", .. }), "{err:?}");
        let err = store.create_conversation("a1", "u", "n", "{").await.expect_err("bad json");
        assert!(matches!(err, StoreError::InvalidArgument { field: "inputs", .. }), "{err:?}");
        for limit in [0, 101] {
            let err = store.list_conversations("a1", "u", None, limit, ConversationSort::default()).await.expect_err("limit");
            assert!(matches!(err, StoreError::InvalidArgument { field: "limit", .. }), "{err:?}");
        }
        store.close().await.expect("close");
    }

    /// Pages through every sort with distinct and with tied timestamps.
    #[tokio::test]
    async fn pagination_in_every_sort_order() {
        let TestStore { store, _dir } = open_store();
        app(&store, "a1").await;
        // Seven conversations: created 10, 20, ... 70; updated in another
        // order, three of them tied at 300 (ties go by insertion order).
        let updated = [500, 300, 300, 700, 100, 600, 300];
        let mut ids = Vec::new();
        for (i, up) in updated.iter().enumerate() {
            let c = store.create_conversation("a1", "u1", &format!("c{i}"), "{}").await.expect("create");
            set_times(&store, &c.id, 10 * (i as i64 + 1), *up).await;
            ids.push(c.id);
        }
        // Someone else's conversation never shows up.
        store.create_conversation("a1", "u2", "other", "{}").await.expect("other");

        let by = |key: &dyn Fn(usize) -> (i64, usize)| {
            let mut order: Vec<usize> = (0..ids.len()).collect();
            order.sort_by_key(|&i| key(i));
            order
        };
        let created_asc = by(&|i| (i as i64, i));
        let updated_asc = by(&|i| (updated[i], i));
        let rev = |v: &Vec<usize>| v.iter().rev().copied().collect::<Vec<_>>();
        let cases = [
            (ConversationSort::CreatedAsc, created_asc.clone()),
            (ConversationSort::CreatedDesc, rev(&created_asc)),
            (ConversationSort::UpdatedAsc, updated_asc.clone()),
            (ConversationSort::UpdatedDesc, rev(&updated_asc)),
        ];
        for (sort, expected) in cases {
            for limit in [1_u32, 2, 3, 7, 100] {
                let mut seen = Vec::new();
                let mut last: Option<String> = None;
                loop {
                    let (page, more) = store.list_conversations("a1", "u1", last.as_deref(), limit, sort).await.expect("page");
                    assert!(page.len() <= limit as usize);
                    seen.extend(page.iter().map(|c| c.id.clone()));
                    last = page.last().map(|c| c.id.clone());
                    if !more {
                        break;
                    }
                    assert_eq!(page.len(), limit as usize, "{sort:?} limit {limit}: short page with more");
                }
                let want: Vec<String> = expected.iter().map(|&i| ids[i].clone()).collect();
                assert_eq!(seen, want, "{sort:?} limit {limit}");
            }
            // A page that ends exactly at the end says no more.
            let (_, more) = store.list_conversations("a1", "u1", None, 7, sort).await.expect("all");
            assert!(!more, "{sort:?}");
        }
        let err = store.list_conversations("a1", "u1", Some("ghost"), 5, ConversationSort::default()).await.expect_err("unknown cursor");
        assert!(matches!(err, StoreError::NotFound { what: "conversation", ref id } if id == "ghost"), "{err:?}");
        store.close().await.expect("close");
    }
}
