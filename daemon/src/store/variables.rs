//! Conversation variables of advanced-chat apps (Dify's `conversation.*`,
//! written by assigner nodes, read and set through
//! `/v1/conversations/{id}/variables`).
//!
//! Owns: the `conversation_variables` table (rows go with their conversation
//! through `ON DELETE CASCADE`). A value is opaque JSON text and its type an
//! opaque string here; the engine checks one against the other. Must not
//! touch: conversations (callers scope a conversation to its app and user
//! with [`Store::get_conversation`] first).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::error::{sql, StoreError};
use super::{now, require_json, require_non_empty, Store};

/// One variable of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationVariable {
    /// Variable id (UUID; kept when the value changes).
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Name, unique within the conversation.
    pub name: String,
    /// Dify's `value_type` (`string`, `number`, `object`, `array[string]`...).
    pub value_type: String,
    /// The value (JSON text).
    pub value_json: String,
    /// Description from the DSL.
    pub description: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; bumped when type, value or description change.
    pub updated_at: i64,
}

/// A variable to set: `(name, value_type, value_json, description)`.
pub type VariableValue = (String, String, String, String);

const COLUMNS: &str = "id, conversation_id, name, value_type, value, description, created_at, updated_at";

fn variable_from_row(row: &Row<'_>) -> rusqlite::Result<ConversationVariable> {
    Ok(ConversationVariable {
        id: row.get(0)?,
        conversation_id: row.get(1)?,
        name: row.get(2)?,
        value_type: row.get(3)?,
        value_json: row.get(4)?,
        description: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

fn require_conversation(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let exists = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM conversations WHERE id = ?1)")
        .and_then(|mut stmt| stmt.query_row([id], |row| row.get::<_, bool>(0)))
        .map_err(sql("look up conversation"))?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::NotFound { what: "conversation", id: id.to_owned() })
    }
}

fn list(conn: &Connection, conversation_id: &str) -> Result<Vec<ConversationVariable>, StoreError> {
    let op = "conversation variables";
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM conversation_variables WHERE conversation_id = ?1 ORDER BY created_at, name"))
        .map_err(sql(op))?;
    let rows = stmt.query_map([conversation_id], variable_from_row).map_err(sql(op))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql(op))
}

impl Store {
    /// The variables of a conversation, by creation time then name (empty
    /// for an unknown conversation).
    pub async fn conversation_variables(&self, conversation_id: &str) -> Result<Vec<ConversationVariable>, StoreError> {
        let conversation_id = conversation_id.to_owned();
        self.read("conversation variables", move |conn| list(conn, &conversation_id)).await
    }

    /// Sets every variable in one transaction: new names are inserted, known
    /// ones keep their id and `created_at`. Nothing is read back: a run's
    /// end writes these on the writer thread, which every write shares
    /// ([`Store::conversation_variables`] lists them). `NotFound { what:
    /// "conversation" }` for an unknown conversation; a name given twice is
    /// `InvalidArgument`.
    pub async fn set_conversation_variables(&self, conversation_id: &str, variables: Vec<VariableValue>) -> Result<(), StoreError> {
        let mut seen = std::collections::HashSet::new();
        for (name, value_type, value_json, _) in &variables {
            require_non_empty("variable name", name)?;
            require_non_empty("value_type", value_type)?;
            require_json("variable value", value_json)?;
            if !seen.insert(name.as_str()) {
                return Err(StoreError::InvalidArgument { field: "variable name", reason: format!("{name:?} is given twice") });
            }
        }
        let conversation_id = conversation_id.to_owned();
        self.write("set conversation variables", move |conn| {
            let op = "set conversation variables";
            let tx = conn.savepoint().map_err(sql(op))?;
            require_conversation(&tx, &conversation_id)?;
            let now = now();
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO conversation_variables (id, conversation_id, name, value_type, value, description, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                         ON CONFLICT (conversation_id, name) DO UPDATE
                            SET value_type = excluded.value_type, value = excluded.value,
                                description = excluded.description, updated_at = excluded.updated_at
                          WHERE value_type <> excluded.value_type OR value <> excluded.value
                             OR description <> excluded.description",
                    )
                    .map_err(sql(op))?;
                for (name, value_type, value_json, description) in &variables {
                    // Time-ordered (v7), like the other tables' row ids: a random id
                    // dirtied a random page of the primary key's index on every insert
                    // (about a fifth fewer chatflow turns a second, README).
                    let id = uuid::Uuid::now_v7().to_string();
                    upsert.execute(params![id, conversation_id, name, value_type, value_json, description, now]).map_err(sql(op))?;
                }
            }
            tx.commit().map_err(sql(op))
        })
        .await
    }

    /// Sets the value of one variable (Dify's
    /// `PUT /conversations/{id}/variables/{variable_id}`).
    /// `NotFound { what: "conversation variable" }` unless the variable
    /// belongs to the conversation.
    pub async fn update_conversation_variable(
        &self,
        conversation_id: &str,
        variable_id: &str,
        value_json: &str,
    ) -> Result<ConversationVariable, StoreError> {
        require_json("variable value", value_json)?;
        let (conversation_id, variable_id, value_json) = (conversation_id.to_owned(), variable_id.to_owned(), value_json.to_owned());
        self.write("update conversation variable", move |conn| {
            conn.prepare_cached(&format!(
                "UPDATE conversation_variables SET value = ?3, updated_at = ?4
                  WHERE id = ?1 AND conversation_id = ?2
                  RETURNING {COLUMNS}"
            ))
            .and_then(|mut stmt| stmt.query_row(params![variable_id, conversation_id, value_json, now()], variable_from_row).optional())
            .map_err(sql("update conversation variable"))?
            .ok_or(StoreError::NotFound { what: "conversation variable", id: variable_id })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{open_store, TestStore};

    fn var(name: &str, value_type: &str, value_json: &str) -> VariableValue {
        (name.into(), value_type.into(), value_json.into(), format!("about {name}"))
    }

    async fn conversation(store: &Store) -> String {
        store.put_app("a1", "A", "advanced-chat", "{}", "import").await.expect("app");
        store.create_conversation("a1", "u1", "c", "{}").await.expect("conversation").id
    }

    /// Sets `created_at` of every variable of a conversation.
    async fn set_created(store: &Store, conversation_id: &str, created_at: i64) {
        let id = conversation_id.to_owned();
        store
            .write("test: set created", move |conn| {
                conn.execute(
                    "UPDATE conversation_variables SET created_at = ?2, updated_at = ?2 WHERE conversation_id = ?1",
                    params![id, created_at],
                )
                .map_err(sql("set created"))
            })
            .await
            .expect("set created");
    }

    #[tokio::test]
    async fn set_inserts_then_upserts_keeping_ids() {
        let TestStore { store, _dir } = open_store();
        let c = conversation(&store).await;
        assert!(store.conversation_variables(&c).await.expect("none yet").is_empty());

        store.set_conversation_variables(&c, vec![var("topic", "string", r#""pumps""#), var("count", "number", "0")]).await.expect("set");
        let set = store.conversation_variables(&c).await.expect("list");
        let names: Vec<_> = set.iter().map(|v| (v.name.as_str(), v.value_type.as_str(), v.value_json.as_str())).collect();
        assert_eq!(names, [("count", "number", "0"), ("topic", "string", r#""pumps""#)], "same created_at: by name");
        assert!(set.iter().all(|v| v.conversation_id == c && v.description == format!("about {}", v.name)));
        // Time-ordered ids (v7): random ones dirtied a random index page per insert.
        assert!(set.iter().all(|v| uuid::Uuid::parse_str(&v.id).map(|u| u.get_version_num()) == Ok(7)), "{set:?}");
        set_created(&store, &c, 100).await;

        // Upsert: `count` changes, `topic` is given unchanged, `notes` is new.
        store
            .set_conversation_variables(
                &c,
                vec![var("count", "number", "3"), var("topic", "string", r#""pumps""#), var("notes", "array[string]", "[]")],
            )
            .await
            .expect("upsert");
        let again = store.conversation_variables(&c).await.expect("list");
        let by_name = |name: &str| again.iter().find(|v| v.name == name).cloned().expect(name);
        let before = |name: &str| set.iter().find(|v| v.name == name).cloned().expect(name);
        let count = by_name("count");
        assert_eq!((count.id.as_str(), count.created_at, count.value_json.as_str()), (before("count").id.as_str(), 100, "3"));
        assert!(count.updated_at > 100, "a changed value bumps updated_at");
        let topic = by_name("topic");
        assert_eq!((topic.id.as_str(), topic.created_at, topic.updated_at), (before("topic").id.as_str(), 100, 100), "unchanged");
        let notes = by_name("notes");
        assert!(notes.created_at > 100);
        // Oldest first, then by name.
        let order: Vec<_> = again.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(order, ["count", "topic", "notes"]);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn set_rejects_bad_input_and_writes_nothing() {
        let TestStore { store, _dir } = open_store();
        let c = conversation(&store).await;
        store.set_conversation_variables(&c, vec![var("kept", "string", r#""x""#)]).await.expect("seed");
        let cases = [
            (vec![var("", "string", "1")], "variable name"),
            (vec![var("a", "", "1")], "value_type"),
            (vec![var("a", "string", "{")], "variable value"),
            (vec![var("a", "string", "1"), var("kept", "string", r#""y""#), var("a", "number", "2")], "variable name"),
        ];
        for (vars, field) in cases {
            let err = store.set_conversation_variables(&c, vars).await.expect_err(field);
            assert!(matches!(err, StoreError::InvalidArgument { field: f, .. } if f == field), "{field}: {err:?}");
        }
        let err = store.set_conversation_variables("ghost", vec![var("a", "string", "1")]).await.expect_err("no conversation");
        assert!(matches!(err, StoreError::NotFound { what: "conversation", .. }), "{err:?}");
        let left = store.conversation_variables(&c).await.expect("list");
        assert_eq!(left.iter().map(|v| (v.name.as_str(), v.value_json.as_str())).collect::<Vec<_>>(), [("kept", r#""x""#)]);
        store.close().await.expect("close");
    }

    #[tokio::test]
    async fn update_one_variable_of_its_own_conversation() {
        let TestStore { store, _dir } = open_store();
        let c = conversation(&store).await;
        let other = store.create_conversation("a1", "u1", "other", "{}").await.expect("other").id;
        store.set_conversation_variables(&c, vec![var("n", "number", "1"), var("s", "string", r#""a""#)]).await.expect("set");
        let vars = store.conversation_variables(&c).await.expect("list");
        store.set_conversation_variables(&other, vec![var("n", "number", "7")]).await.expect("other's");
        set_created(&store, &c, 100).await;
        let n = vars.iter().find(|v| v.name == "n").cloned().expect("n");

        let updated = store.update_conversation_variable(&c, &n.id, "2").await.expect("update");
        assert_eq!(
            (updated.id.as_str(), updated.name.as_str(), updated.value_json.as_str(), updated.created_at),
            (n.id.as_str(), "n", "2", 100)
        );
        assert!(updated.updated_at > 100);
        assert!(store.conversation_variables(&c).await.expect("list").contains(&updated));

        // Another conversation's id for the variable, an unknown variable, bad JSON.
        let err = store.update_conversation_variable(&other, &n.id, "3").await.expect_err("wrong conversation");
        assert!(matches!(err, StoreError::NotFound { what: "conversation variable", ref id } if *id == n.id), "{err:?}");
        let err = store.update_conversation_variable(&c, "ghost", "3").await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound { what: "conversation variable", .. }), "{err:?}");
        let err = store.update_conversation_variable(&c, &n.id, "not json").await.expect_err("bad json");
        assert!(matches!(err, StoreError::InvalidArgument { field: "variable value", .. }), "{err:?}");
        let values: Vec<_> = store.conversation_variables(&other).await.expect("other").into_iter().map(|v| v.value_json).collect();
        assert_eq!(values, ["7"]);
        assert_eq!(store.conversation_variables(&c).await.expect("list").iter().find(|v| v.name == "n").expect("n").value_json, "2");

        // Deleting the conversation deletes its variables.
        store.delete_conversation("a1", "u1", &c).await.expect("delete");
        assert!(store.conversation_variables(&c).await.expect("list").is_empty());
        assert_eq!(store.conversation_variables(&other).await.expect("other").len(), 1);
        store.close().await.expect("close");
    }
}
