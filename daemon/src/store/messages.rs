//! Messages (one query and its answer) and their feedback.
//!
//! Owns: the `messages` and `feedbacks` tables. A message is inserted as
//! `pending` when generation starts and finished by ONE `UPDATE`; nothing
//! else changes its answer. Must not touch: conversation rows (the caller
//! bumps `updated_at` with `touch_conversation`).

use std::str::FromStr;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::apps::require_app;
use super::conversations::find_scoped;
use super::error::{sql, StoreError};
use super::{now, require_json, require_limit, require_non_empty, Store};

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// Generation is running (or the daemon died while it ran, until the next open).
    Pending,
    /// Answered completely.
    Normal,
    /// Stopped by the client (`/chat-messages/{task_id}/stop`); the answer is partial.
    Stopped,
    /// Failed; see the message's `error`.
    Error,
}

stored_as_text!(MessageStatus, "message status", Pending => "pending", Normal => "normal", Stopped => "stopped", Error => "error");

/// A user's verdict on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rating {
    /// `like`
    Like,
    /// `dislike`
    Dislike,
}

stored_as_text!(Rating, "rating", Like => "like", Dislike => "dislike");

impl FromStr for Rating {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_text(s)
            .ok_or_else(|| StoreError::InvalidArgument { field: "rating", reason: format!("{s:?} is not one of like, dislike") })
    }
}

/// Feedback on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// Like or dislike.
    pub rating: Rating,
    /// Optional free text.
    pub content: Option<String>,
}

/// A message as generation starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Message id (UUID, chosen by the caller: it is streamed before the answer).
    pub id: String,
    /// The app answering.
    pub app_id: String,
    /// The conversation (chat apps); `None` for completion apps.
    pub conversation_id: Option<String>,
    /// The end user.
    pub user: String,
    /// The task id the client can stop.
    pub task_id: String,
    /// The user's query.
    pub query: String,
    /// The inputs (JSON object text).
    pub inputs_json: String,
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOutcome {
    /// The answer (partial when stopped or failed).
    pub answer: String,
    /// Tokens read.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Wall time from request to last token.
    pub latency_ms: u64,
    /// `Normal`, `Stopped` or `Error` (`Pending` is rejected).
    pub status: MessageStatus,
    /// What went wrong, for `Error`.
    pub error: Option<String>,
}

/// A stored message with its feedback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message id.
    pub id: String,
    /// The app.
    pub app_id: String,
    /// The conversation, if any.
    pub conversation_id: Option<String>,
    /// The end user.
    pub user: String,
    /// The task id.
    pub task_id: String,
    /// The query.
    pub query: String,
    /// The inputs (JSON object text).
    pub inputs_json: String,
    /// The answer ("" while pending).
    pub answer: String,
    /// Tokens read.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Wall time of the generation.
    pub latency_ms: u64,
    /// Status.
    pub status: MessageStatus,
    /// Error text, for `Error`.
    pub error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Feedback, if given.
    pub feedback: Option<Feedback>,
}

const SELECT_MESSAGE: &str = "SELECT m.id, m.app_id, m.conversation_id, m.user, m.task_id, m.query, m.inputs,
        m.answer, m.prompt_tokens, m.completion_tokens, m.latency_ms, m.status, m.error, m.created_at,
        f.rating, f.content
   FROM messages m LEFT JOIN feedbacks f ON f.message_id = m.id";

fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let rating: Option<Rating> = row.get(14)?;
    Ok(Message {
        id: row.get(0)?,
        app_id: row.get(1)?,
        conversation_id: row.get(2)?,
        user: row.get(3)?,
        task_id: row.get(4)?,
        query: row.get(5)?,
        inputs_json: row.get(6)?,
        answer: row.get(7)?,
        prompt_tokens: row.get(8)?,
        completion_tokens: row.get(9)?,
        latency_ms: row.get(10)?,
        status: row.get(11)?,
        error: row.get(12)?,
        created_at: row.get(13)?,
        feedback: match rating {
            Some(rating) => Some(Feedback { rating, content: row.get(15)? }),
            None => None,
        },
    })
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound { what: "message", id: id.to_owned() }
}

/// Whether message `id` belongs to `(app_id, user)`.
fn require_scoped(conn: &Connection, app_id: &str, user: &str, id: &str) -> Result<(), StoreError> {
    let exists = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND app_id = ?2 AND user = ?3)")
        .and_then(|mut stmt| stmt.query_row([id, app_id, user], |row| row.get::<_, bool>(0)))
        .map_err(sql("look up message"))?;
    if exists {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

impl Store {
    /// Records a message as `pending` when generation starts. The app must
    /// exist and the conversation, if any, must belong to `(app_id, user)`.
    pub async fn begin_message(&self, m: NewMessage) -> Result<(), StoreError> {
        check_new_message(&m)?;
        self.write("begin message", move |conn| begin_message_in(conn, m)).await
    }

    /// Finishes a pending message in one `UPDATE`. `NotFound` if unknown,
    /// `NotPending` if it was already finished (or recovered after a crash).
    pub async fn finish_message(&self, id: &str, o: MessageOutcome) -> Result<(), StoreError> {
        if o.status == MessageStatus::Pending {
            return Err(StoreError::InvalidArgument { field: "status", reason: "a finished message cannot be pending".into() });
        }
        let latency_ms = i64::try_from(o.latency_ms).map_err(|_| StoreError::InvalidArgument {
            field: "latency_ms",
            reason: format!("{} does not fit in 63 bits", o.latency_ms),
        })?;
        let id = id.to_owned();
        self.write("finish message", move |conn| {
            let op = "finish message";
            let changed = conn
                .prepare_cached(
                    "UPDATE messages SET answer = ?2, prompt_tokens = ?3, completion_tokens = ?4,
                            latency_ms = ?5, status = ?6, error = ?7, updated_at = ?8
                      WHERE id = ?1 AND status = 'pending'",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![id, o.answer, o.prompt_tokens, o.completion_tokens, latency_ms, o.status, o.error, now()])
                })
                .map_err(sql(op))?;
            if changed == 1 {
                return Ok(());
            }
            let status: Option<MessageStatus> =
                conn.query_row("SELECT status FROM messages WHERE id = ?1", [&id], |row| row.get(0)).optional().map_err(sql(op))?;
            Err(match status {
                Some(status) => StoreError::NotPending { what: "message", id, status: status.to_string() },
                None => not_found(&id),
            })
        })
        .await
    }

    /// A message answered without a run (a cached answer), in one
    /// transaction: the conversation created (`new_conversation`: its name;
    /// its id is `m.conversation_id`) or touched, and the message inserted
    /// finished with `o`. Nothing is written if any step fails.
    pub async fn record_answered(&self, m: NewMessage, new_conversation: Option<String>, o: MessageOutcome) -> Result<(), StoreError> {
        require_non_empty("message id", &m.id)?;
        require_non_empty("user", &m.user)?;
        require_json("inputs", &m.inputs_json)?;
        if o.status == MessageStatus::Pending {
            return Err(StoreError::InvalidArgument { field: "status", reason: "a finished message cannot be pending".into() });
        }
        let latency_ms = i64::try_from(o.latency_ms).map_err(|_| StoreError::InvalidArgument {
            field: "latency_ms",
            reason: format!("{} does not fit in 63 bits", o.latency_ms),
        })?;
        // Through the group commit: hits of the response cache come by the
        // thousand a second, and one fsync each would be their ceiling.
        self.write_run(super::workflows::RunWrite::Answered { message: m, new_conversation, outcome: o, latency_ms }).await
    }

    /// One message of `(app_id, user)`, with its feedback.
    pub async fn get_message(&self, app_id: &str, user: &str, id: &str) -> Result<Message, StoreError> {
        let (app_id, user, id) = (app_id.to_owned(), user.to_owned(), id.to_owned());
        self.read("get message", move |conn| {
            conn.prepare_cached(&format!("{SELECT_MESSAGE} WHERE m.id = ?1 AND m.app_id = ?2 AND m.user = ?3"))
                .and_then(|mut stmt| stmt.query_row([&id, &app_id, &user], message_from_row).optional())
                .map_err(sql("get message"))?
                .ok_or_else(|| not_found(&id))
        })
        .await
    }

    /// Dify `GET /messages`: the `limit` (1..=100) messages before
    /// `first_id` (or the newest), returned oldest first; `true` if older
    /// ones exist. The conversation must belong to `(app_id, user)` and
    /// `first_id` to the conversation, else `NotFound`.
    pub async fn list_messages(
        &self,
        app_id: &str,
        user: &str,
        conversation_id: &str,
        first_id: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        require_limit(limit)?;
        let (app_id, user, conversation_id) = (app_id.to_owned(), user.to_owned(), conversation_id.to_owned());
        let first_id = first_id.map(str::to_owned);
        self.read("list messages", move |conn| {
            let op = "list messages";
            find_scoped(conn, &app_id, &user, &conversation_id)?;
            let before: Option<(i64, i64)> = match &first_id {
                None => None,
                Some(id) => Some(
                    conn.prepare_cached("SELECT created_at, rowid FROM messages WHERE id = ?1 AND conversation_id = ?2")
                        .and_then(|mut stmt| stmt.query_row([id, &conversation_id], |row| Ok((row.get(0)?, row.get(1)?))).optional())
                        .map_err(sql(op))?
                        .ok_or_else(|| not_found(id))?,
                ),
            };
            let keyset = if before.is_some() { "AND (m.created_at < ?2 OR (m.created_at = ?2 AND m.rowid < ?3))" } else { "" };
            let mut stmt = conn
                .prepare_cached(&format!(
                    "{SELECT_MESSAGE} WHERE m.conversation_id = ?1 {keyset}
                      ORDER BY m.created_at DESC, m.rowid DESC LIMIT ?4"
                ))
                .map_err(sql(op))?;
            let (created_at, rowid) = before.unzip();
            let rows =
                stmt.query_map(params![conversation_id, created_at, rowid, i64::from(limit) + 1], message_from_row).map_err(sql(op))?;
            let mut page = rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))?;
            let has_more = page.len() > limit as usize;
            page.truncate(limit as usize);
            page.reverse();
            Ok((page, has_more))
        })
        .await
    }

    /// Model context: the newest `max_turns` finished turns (status normal
    /// or stopped, non-empty answer) of a conversation as (query, answer),
    /// oldest first.
    pub async fn history(&self, conversation_id: &str, max_turns: u32) -> Result<Vec<(String, String)>, StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.read("history", move |conn| {
            let op = "history";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT query, answer FROM messages
                      WHERE conversation_id = ?1 AND status IN ('normal', 'stopped') AND answer <> ''
                      ORDER BY created_at DESC, rowid DESC LIMIT ?2",
                )
                .map_err(sql(op))?;
            let rows = stmt.query_map(params![conversation_id, max_turns], |row| Ok((row.get(0)?, row.get(1)?))).map_err(sql(op))?;
            let mut turns = rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))?;
            turns.reverse();
            Ok(turns)
        })
        .await
    }

    /// How many messages a conversation holds (Dify's `sys.dialogue_count`
    /// counts them all, whatever their status).
    pub async fn count_messages(&self, conversation_id: &str) -> Result<u32, StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.read("count messages", move |conn| {
            conn.prepare_cached("SELECT count(*) FROM messages WHERE conversation_id = ?1")
                .and_then(|mut stmt| stmt.query_row([&conversation_id], |row| row.get::<_, u32>(0)))
                .map_err(sql("count messages"))
        })
        .await
    }

    /// Sets (or with `rating: None` removes) the feedback of a message of
    /// `(app_id, user)`; a new rating replaces the old one. `content` is
    /// ignored when removing.
    pub async fn set_feedback(
        &self,
        app_id: &str,
        user: &str,
        message_id: &str,
        rating: Option<Rating>,
        content: Option<&str>,
    ) -> Result<(), StoreError> {
        let (app_id, user, message_id) = (app_id.to_owned(), user.to_owned(), message_id.to_owned());
        let content = content.map(str::to_owned);
        self.write("set feedback", move |conn| {
            let op = "set feedback";
            require_scoped(conn, &app_id, &user, &message_id)?;
            match rating {
                None => {
                    conn.execute("DELETE FROM feedbacks WHERE message_id = ?1", [&message_id]).map_err(sql(op))?;
                }
                Some(rating) => {
                    conn.execute(
                        "INSERT INTO feedbacks (message_id, user, rating, content, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                         ON CONFLICT (message_id) DO UPDATE
                            SET user = excluded.user, rating = excluded.rating,
                                content = excluded.content, updated_at = excluded.updated_at",
                        params![message_id, user, rating, content, now()],
                    )
                    .map_err(sql(op))?;
                }
            }
            Ok(())
        })
        .await
    }
}

/// One feedback of an app, for Dify's `GET /app/feedbacks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFeedback {
    /// The message rated (one feedback per message).
    pub message_id: String,
    /// Its conversation, if any.
    pub conversation_id: Option<String>,
    /// The end user who rated it.
    pub user: String,
    /// Like or dislike.
    pub rating: Rating,
    /// Optional free text.
    pub content: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl Store {
    /// The feedbacks on `app_id`'s messages, newest first, `limit` per page
    /// (1-based `page`). `limit` must be 1..=101 (Dify's bound).
    pub async fn list_app_feedbacks(&self, app_id: &str, page: u32, limit: u32) -> Result<Vec<AppFeedback>, StoreError> {
        if page == 0 {
            return Err(StoreError::InvalidArgument { field: "page", reason: "must be at least 1".into() });
        }
        if !(1..=101).contains(&limit) {
            return Err(StoreError::InvalidArgument { field: "limit", reason: format!("{limit} is outside 1..=101") });
        }
        let app_id = app_id.to_owned();
        let offset = i64::from(page - 1) * i64::from(limit);
        self.read("list app feedbacks", move |conn| {
            let op = "list app feedbacks";
            let mut stmt = conn
                .prepare_cached(
                    "SELECT f.message_id, m.conversation_id, f.user, f.rating, f.content, f.created_at, f.updated_at
                       FROM feedbacks f JOIN messages m ON m.id = f.message_id
                      WHERE m.app_id = ?1
                      ORDER BY f.created_at DESC, f.rowid DESC LIMIT ?2 OFFSET ?3",
                )
                .map_err(sql(op))?;
            let rows = stmt
                .query_map(params![app_id, limit, offset], |row| {
                    Ok(AppFeedback {
                        message_id: row.get(0)?,
                        conversation_id: row.get(1)?,
                        user: row.get(2)?,
                        rating: row.get(3)?,
                        content: row.get(4)?,
                        created_at: row.get(5)?,
                        updated_at: row.get(6)?,
                    })
                })
                .map_err(sql(op))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))
        })
        .await
    }
}

/// The checks of a new message that need no SQL.
pub(super) fn check_new_message(m: &NewMessage) -> Result<(), StoreError> {
    require_non_empty("message id", &m.id)?;
    require_non_empty("user", &m.user)?;
    require_json("inputs", &m.inputs_json)
}

/// [`Store::begin_message`]'s statements, on the writer.
pub(super) fn begin_message_in(conn: &Connection, m: NewMessage) -> Result<(), StoreError> {
    let op = "begin message";
    require_app(conn, &m.app_id)?;
    if let Some(conversation_id) = &m.conversation_id {
        find_scoped(conn, &m.app_id, &m.user, conversation_id)?;
    }
    let duplicate =
        conn.query_row("SELECT EXISTS (SELECT 1 FROM messages WHERE id = ?1)", [&m.id], |row| row.get::<_, bool>(0)).map_err(sql(op))?;
    if duplicate {
        return Err(StoreError::AlreadyExists { what: "message", id: m.id });
    }
    let now = now();
    conn.prepare_cached(
        "INSERT INTO messages (id, app_id, conversation_id, user, task_id, query, inputs, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![m.id, m.app_id, m.conversation_id, m.user, m.task_id, m.query, m.inputs_json, MessageStatus::Pending, now])
    })
    .map_err(sql(op))?;
    Ok(())
}

/// Inserts a conversation a turn starts: its id is the message's
/// `conversation_id`, its inputs the message's.
pub(super) fn insert_started_conversation(tx: &Connection, m: &NewMessage, name: &str, now: i64) -> Result<(), StoreError> {
    let Some(c) = &m.conversation_id else {
        return Err(StoreError::InvalidArgument { field: "conversation_id", reason: "a new conversation needs its id".into() });
    };
    tx.prepare_cached(
        "INSERT INTO conversations (id, app_id, user, name, inputs, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )
    .and_then(|mut stmt| stmt.execute(params![c, m.app_id, m.user, name, m.inputs_json, now]))
    .map_err(sql("start conversation"))?;
    Ok(())
}

/// Records a message answered without generation (and its new conversation,
/// or touches the one it continues) inside the group commit's savepoint.
pub(super) fn answered_in(
    tx: &Connection,
    m: NewMessage,
    new_conversation: Option<String>,
    o: MessageOutcome,
    latency_ms: i64,
) -> Result<(), StoreError> {
    let op = "record answered message";
    require_app(tx, &m.app_id)?;
    let now = now();
    match (&m.conversation_id, new_conversation) {
        (Some(_), Some(name)) => insert_started_conversation(tx, &m, &name, now)?,
        (Some(c), None) => {
            find_scoped(tx, &m.app_id, &m.user, c)?;
            tx.prepare_cached("UPDATE conversations SET updated_at = ?2 WHERE id = ?1")
                .and_then(|mut stmt| stmt.execute(params![c, now]))
                .map_err(sql(op))?;
        }
        (None, _) => {}
    }
    tx.prepare_cached(
        "INSERT INTO messages (id, app_id, conversation_id, user, task_id, query, inputs, answer, prompt_tokens,
                               completion_tokens, latency_ms, status, error, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            m.id,
            m.app_id,
            m.conversation_id,
            m.user,
            m.task_id,
            m.query,
            m.inputs_json,
            o.answer,
            o.prompt_tokens,
            o.completion_tokens,
            latency_ms,
            o.status,
            o.error,
            now
        ])
    })
    .map_err(sql(op))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{open_store, TestStore};

    async fn setup(store: &Store) -> String {
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        store.create_conversation("a1", "u1", "c", "{}").await.expect("conversation").id
    }

    fn new_message(id: &str, conversation_id: Option<&str>, query: &str) -> NewMessage {
        NewMessage {
            id: id.into(),
            app_id: "a1".into(),
            conversation_id: conversation_id.map(Into::into),
            user: "u1".into(),
            task_id: format!("task-{id}"),
            query: query.into(),
            inputs_json: r#"{"lang":"en"}"#.into(),
        }
    }

    fn outcome(answer: &str, status: MessageStatus) -> MessageOutcome {
        MessageOutcome {
            answer: answer.into(),
            prompt_tokens: 12,
            completion_tokens: 34,
            latency_ms: 567,
            status,
            error: (status == MessageStatus::Error).then(|| "boom".into()),
        }
    }

    /// Adds a finished message.
    async fn say(store: &Store, conversation_id: &str, id: &str, answer: &str, status: MessageStatus) {
        store.begin_message(new_message(id, Some(conversation_id), &format!("q-{id}"))).await.expect("begin");
        store.finish_message(id, outcome(answer, status)).await.expect("finish");
    }

    async fn count(store: &Store, table: &'static str) -> i64 {
        store
            .read("test: count", move |conn| {
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).map_err(sql("count"))
            })
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn begin_then_finish() {
        let TestStore { store, _dir } = open_store();
        let c = setup(&store).await;
        store.begin_message(new_message("m1", Some(&c), "hello")).await.expect("begin");
        let m = store.get_message("a1", "u1", "m1").await.expect("get");
        assert_eq!(m.status, MessageStatus::Pending);
        assert_eq!((m.answer.as_str(), m.query.as_str()), ("", "hello"));
        assert_eq!(m.conversation_id.as_deref(), Some(c.as_str()));
        assert_eq!(m.task_id, "task-m1");
        assert_eq!(m.inputs_json, r#"{"lang":"en"}"#);

        store.finish_message("m1", outcome("hi there", MessageStatus::Normal)).await.expect("finish");
        let m = store.get_message("a1", "u1", "m1").await.expect("get");
        assert_eq!(m.status, MessageStatus::Normal);
        assert_eq!(m.answer, "hi there");
        assert_eq!((m.prompt_tokens, m.completion_tokens, m.latency_ms), (12, 34, 567));
        assert_eq!((m.error, m.feedback), (None, None));

        let err = store.finish_message("m1", outcome("again", MessageStatus::Normal)).await.expect_err("twice");
        assert!(matches!(err, StoreError::NotPending { ref status, .. } if status == "normal"), "{err:?}");
        assert_eq!(store.get_message("a1", "u1", "m1").await.expect("get").answer, "hi there");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn completion_messages_have_no_conversation() {
        let TestStore { store, _dir } = open_store();
        setup(&store).await;
        store.begin_message(new_message("m1", None, "q")).await.expect("begin");
        store.finish_message("m1", outcome("partial", MessageStatus::Stopped)).await.expect("finish");
        let m = store.get_message("a1", "u1", "m1").await.expect("get");
        assert_eq!((m.conversation_id, m.status), (None, MessageStatus::Stopped));
        store.begin_message(new_message("m2", None, "q")).await.expect("begin");
        store.finish_message("m2", outcome("", MessageStatus::Error)).await.expect("finish");
        let m = store.get_message("a1", "u1", "m2").await.expect("get");
        assert_eq!((m.status, m.error.as_deref()), (MessageStatus::Error, Some("boom")));
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn message_calls_reject_bad_input() {
        let TestStore { store, _dir } = open_store();
        let c = setup(&store).await;
        let mut m = new_message("m1", Some(&c), "q");
        m.app_id = "ghost".into();
        let err = store.begin_message(m).await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        let mut m = new_message("m1", Some(&c), "q");
        m.user = "u2".into();
        let err = store.begin_message(m).await.expect_err("other user's conversation");
        assert!(matches!(err, StoreError::NotFound { what: "conversation", .. }), "{err:?}");
        let err = store.begin_message(new_message("m1", Some("ghost"), "q")).await.expect_err("no conv");
        assert!(matches!(err, StoreError::NotFound { what: "conversation", .. }), "{err:?}");
        let mut m = new_message("m1", Some(&c), "q");
        m.inputs_json = "nope".into();
        let err = store.begin_message(m).await.expect_err("bad json");
        assert!(matches!(err, StoreError::InvalidArgument { field: "inputs", .. }), "{err:?}");
        let err = store.begin_message(new_message("", Some(&c), "q")).await.expect_err("no id");
        assert!(matches!(err, StoreError::InvalidArgument { field: "message id", .. }), "{err:?}");

        store.begin_message(new_message("m1", Some(&c), "q")).await.expect("begin");
        let err = store.begin_message(new_message("m1", Some(&c), "q")).await.expect_err("dup");
        assert!(matches!(err, StoreError::AlreadyExists { what: "message", .. }), "{err:?}");

        let err = store.finish_message("m1", outcome("x", MessageStatus::Pending)).await.expect_err("pending");
        assert!(matches!(err, StoreError::InvalidArgument { field: "status", .. }), "{err:?}");
        let mut o = outcome("x", MessageStatus::Normal);
        o.latency_ms = u64::MAX;
        let err = store.finish_message("m1", o).await.expect_err("latency");
        assert!(matches!(err, StoreError::InvalidArgument { field: "latency_ms", .. }), "{err:?}");
        let err = store.finish_message("ghost", outcome("x", MessageStatus::Normal)).await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound { what: "message", .. }), "{err:?}");
        // None of the failures touched the pending message.
        assert_eq!(store.get_message("a1", "u1", "m1").await.expect("get").status, MessageStatus::Pending);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn messages_are_scoped_by_user_and_app() {
        let TestStore { store, _dir } = open_store();
        let c = setup(&store).await;
        store.put_app("a2", "B", "chat", "{}", "config").await.expect("app");
        say(&store, &c, "m1", "a", MessageStatus::Normal).await;
        for (app_id, user) in [("a1", "u2"), ("a2", "u1")] {
            let err = store.get_message(app_id, user, "m1").await.expect_err("scoped");
            assert!(matches!(err, StoreError::NotFound { what: "message", .. }), "{err:?}");
            let err = store.list_messages(app_id, user, &c, None, 20).await.expect_err("scoped");
            assert!(matches!(err, StoreError::NotFound { what: "conversation", .. }), "{err:?}");
            let err = store.set_feedback(app_id, user, "m1", Some(Rating::Like), None).await.expect_err("scoped");
            assert!(matches!(err, StoreError::NotFound { what: "message", .. }), "{err:?}");
        }
        store.close().await.expect("close");
    }

    /// Messages created within one second: order by insertion, pages stable.
    #[tokio::test]
    async fn list_messages_pages_backwards_oldest_first() {
        let TestStore { store, _dir } = open_store();
        let c = setup(&store).await;
        let ids: Vec<String> = (0..7).map(|i| format!("m{i}")).collect();
        for id in &ids {
            say(&store, &c, id, "a", MessageStatus::Normal).await;
        }
        // Another conversation's messages never show up.
        let other = store.create_conversation("a1", "u1", "other", "{}").await.expect("other").id;
        say(&store, &other, "x1", "a", MessageStatus::Normal).await;

        let (page, more) = store.list_messages("a1", "u1", &c, None, 20).await.expect("all");
        assert_eq!(page.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ids);
        assert!(!more);
        let (_, more) = store.list_messages("a1", "u1", &c, None, 7).await.expect("exactly all");
        assert!(!more);

        for limit in [1_u32, 2, 3, 6] {
            let mut seen: Vec<String> = Vec::new();
            let mut first: Option<String> = None;
            loop {
                let (page, more) = store.list_messages("a1", "u1", &c, first.as_deref(), limit).await.expect("page");
                let mut ids: Vec<String> = page.iter().map(|m| m.id.clone()).collect();
                first = ids.first().cloned();
                ids.append(&mut seen);
                seen = ids;
                if !more {
                    break;
                }
            }
            assert_eq!(seen, ids, "limit {limit}");
        }
        let (page, more) = store.list_messages("a1", "u1", &c, Some("m3"), 2).await.expect("before m3");
        assert_eq!(page.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m1", "m2"]);
        assert!(more);

        let err = store.list_messages("a1", "u1", &c, Some("x1"), 5).await.expect_err("other conv's id");
        assert!(matches!(err, StoreError::NotFound { what: "message", .. }), "{err:?}");
        let err = store.list_messages("a1", "u1", &c, None, 0).await.expect_err("limit");
        assert!(matches!(err, StoreError::InvalidArgument { field: "limit", .. }), "{err:?}");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn history_keeps_the_newest_finished_turns() {
        let TestStore { store, _dir } = open_store();
        let c = setup(&store).await;
        say(&store, &c, "m1", "a1", MessageStatus::Normal).await;
        say(&store, &c, "m2", "", MessageStatus::Normal).await;
        say(&store, &c, "m3", "a3", MessageStatus::Error).await;
        say(&store, &c, "m4", "a4", MessageStatus::Stopped).await;
        say(&store, &c, "m5", "a5", MessageStatus::Normal).await;
        store.begin_message(new_message("m6", Some(&c), "q-m6")).await.expect("pending");

        let turn = |q: &str, a: &str| (q.to_owned(), a.to_owned());
        assert_eq!(store.history(&c, 10).await.expect("history"), [turn("q-m1", "a1"), turn("q-m4", "a4"), turn("q-m5", "a5")]);
        assert_eq!(store.history(&c, 2).await.expect("history"), [turn("q-m4", "a4"), turn("q-m5", "a5")]);
        assert!(store.history(&c, 0).await.expect("history").is_empty());
        assert!(store.history("ghost", 5).await.expect("history").is_empty());
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn feedback_set_replace_remove() {
        let TestStore { store, _dir } = open_store();
        let c = setup(&store).await;
        say(&store, &c, "m1", "a", MessageStatus::Normal).await;
        store.set_feedback("a1", "u1", "m1", Some(Rating::Like), None).await.expect("like");
        let fb = store.get_message("a1", "u1", "m1").await.expect("get").feedback;
        assert_eq!(fb, Some(Feedback { rating: Rating::Like, content: None }));

        store.set_feedback("a1", "u1", "m1", Some(Rating::Dislike), Some("wrong")).await.expect("replace");
        let (page, _) = store.list_messages("a1", "u1", &c, None, 5).await.expect("list");
        assert_eq!(page[0].feedback, Some(Feedback { rating: Rating::Dislike, content: Some("wrong".into()) }));
        assert_eq!(count(&store, "feedbacks").await, 1);

        store.set_feedback("a1", "u1", "m1", None, Some("ignored")).await.expect("remove");
        assert_eq!(store.get_message("a1", "u1", "m1").await.expect("get").feedback, None);
        store.set_feedback("a1", "u1", "m1", None, None).await.expect("remove again");

        let err = store.set_feedback("a1", "u1", "ghost", Some(Rating::Like), None).await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound { what: "message", .. }), "{err:?}");
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn app_feedbacks_page_newest_first_within_the_app() {
        let TestStore { store, _dir } = open_store();
        let c = setup(&store).await;
        store.put_app("a2", "B", "chat", "{}", "config").await.expect("app");
        for id in ["m1", "m2", "m3"] {
            say(&store, &c, id, "a", MessageStatus::Normal).await;
        }
        store.set_feedback("a1", "u1", "m1", Some(Rating::Like), Some("good")).await.expect("fb");
        store.set_feedback("a1", "u1", "m3", Some(Rating::Dislike), None).await.expect("fb");
        let all = store.list_app_feedbacks("a1", 1, 20).await.expect("list");
        let ids: Vec<&str> = all.iter().map(|f| f.message_id.as_str()).collect();
        assert_eq!(ids, ["m3", "m1"], "newest first");
        assert_eq!(all[1].rating, Rating::Like);
        assert_eq!(all[1].content.as_deref(), Some("good"));
        assert_eq!(all[1].conversation_id.as_deref(), Some(c.as_str()));
        assert_eq!(store.list_app_feedbacks("a1", 2, 1).await.expect("page 2")[0].message_id, "m1");
        assert!(store.list_app_feedbacks("a1", 3, 1).await.expect("past the end").is_empty());
        assert!(store.list_app_feedbacks("a2", 1, 20).await.expect("other app").is_empty());
        for (page, limit) in [(0, 20), (1, 0), (1, 102)] {
            let err = store.list_app_feedbacks("a1", page, limit).await.expect_err("bad page");
            assert!(matches!(err, StoreError::InvalidArgument { .. }), "{err:?}");
        }
        store.close().await.expect("close");
    }

    #[test]
    fn rating_parses_difys_strings() {
        assert_eq!("like".parse::<Rating>().expect("like"), Rating::Like);
        assert_eq!("dislike".parse::<Rating>().expect("dislike"), Rating::Dislike);
        for bad in ["", "Like", "null", "up"] {
            let err = bad.parse::<Rating>().expect_err(bad);
            assert!(matches!(err, StoreError::InvalidArgument { field: "rating", .. }), "{err:?}");
        }
    }

    #[tokio::test]
    async fn deleting_a_conversation_cascades() {
        let TestStore { store, _dir } = open_store();
        let c = setup(&store).await;
        let keep = store.create_conversation("a1", "u1", "keep", "{}").await.expect("keep").id;
        say(&store, &c, "m1", "a", MessageStatus::Normal).await;
        say(&store, &c, "m2", "a", MessageStatus::Normal).await;
        say(&store, &keep, "k1", "a", MessageStatus::Normal).await;
        store.set_feedback("a1", "u1", "m1", Some(Rating::Like), None).await.expect("fb");
        store.set_feedback("a1", "u1", "k1", Some(Rating::Like), None).await.expect("fb");

        store.delete_conversation("a1", "u1", &c).await.expect("delete");
        assert_eq!(count(&store, "messages").await, 1);
        assert_eq!(count(&store, "feedbacks").await, 1);
        let err = store.get_message("a1", "u1", "m1").await.expect_err("gone");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        let err = store.get_conversation("a1", "u1", &c).await.expect_err("gone");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        let err = store.delete_conversation("a1", "u1", &c).await.expect_err("twice");
        assert!(matches!(err, StoreError::NotFound { what: "conversation", .. }), "{err:?}");
        assert!(store.get_message("a1", "u1", "k1").await.expect("kept").feedback.is_some());
        store.close().await.expect("close");
    }
}
