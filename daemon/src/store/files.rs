//! Metadata of files uploaded through the Service API.
//!
//! Owns: the `upload_files` table. The bytes are not here: the service
//! keeps them in `files.dir` under the row's id. A row is inserted only
//! after its bytes are in place, so every row has its file.
//! Must not touch: the file system, or what a file may be used for.

use rusqlite::{params, OptionalExtension, Row};

use super::apps::require_app;
use super::error::{sql, StoreError};
use super::{now, require_non_empty, Store};

/// A file's metadata as an upload finishes (the bytes are already stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUploadFile {
    /// File id (UUID, chosen by the caller: it names the bytes on disk).
    pub id: String,
    /// The app whose key uploaded it; only this app may read it.
    pub app_id: String,
    /// The end user who uploaded it.
    pub user: String,
    /// The client's file name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case extension without the dot.
    pub extension: String,
    /// The client's content type.
    pub mime_type: String,
}

/// A stored upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadFile {
    /// File id.
    pub id: String,
    /// The owning app.
    pub app_id: String,
    /// The end user who uploaded it.
    pub user: String,
    /// The client's file name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case extension without the dot.
    pub extension: String,
    /// The client's content type.
    pub mime_type: String,
    /// Unix seconds.
    pub created_at: i64,
}

fn file_from_row(row: &Row<'_>) -> rusqlite::Result<UploadFile> {
    Ok(UploadFile {
        id: row.get(0)?,
        app_id: row.get(1)?,
        user: row.get(2)?,
        name: row.get(3)?,
        size: row.get(4)?,
        extension: row.get(5)?,
        mime_type: row.get(6)?,
        created_at: row.get(7)?,
    })
}

impl Store {
    /// Records an uploaded file of an existing app; returns it as stored.
    pub async fn insert_upload_file(&self, f: NewUploadFile) -> Result<UploadFile, StoreError> {
        require_non_empty("file id", &f.id)?;
        require_non_empty("file name", &f.name)?;
        let size = i64::try_from(f.size)
            .map_err(|_| StoreError::InvalidArgument { field: "size", reason: format!("{} does not fit in 63 bits", f.size) })?;
        self.write("insert upload file", move |conn| {
            let op = "insert upload file";
            require_app(conn, &f.app_id)?;
            let duplicate = conn
                .query_row("SELECT EXISTS (SELECT 1 FROM upload_files WHERE id = ?1)", [&f.id], |row| row.get::<_, bool>(0))
                .map_err(sql(op))?;
            if duplicate {
                return Err(StoreError::AlreadyExists { what: "upload file", id: f.id });
            }
            let created_at = now();
            conn.prepare_cached(
                "INSERT INTO upload_files (id, app_id, user, name, size, extension, mime_type, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut stmt| stmt.execute(params![f.id, f.app_id, f.user, f.name, size, f.extension, f.mime_type, created_at]))
            .map_err(sql(op))?;
            Ok(UploadFile {
                id: f.id,
                app_id: f.app_id,
                user: f.user,
                name: f.name,
                size: f.size,
                extension: f.extension,
                mime_type: f.mime_type,
                created_at,
            })
        })
        .await
    }

    /// A file of `app_id`; another app's file is `NotFound` like an unknown one.
    pub async fn get_upload_file(&self, app_id: &str, id: &str) -> Result<UploadFile, StoreError> {
        let (app_id, id) = (app_id.to_owned(), id.to_owned());
        self.read("get upload file", move |conn| {
            conn.prepare_cached(
                "SELECT id, app_id, user, name, size, extension, mime_type, created_at
                   FROM upload_files WHERE id = ?1 AND app_id = ?2",
            )
            .and_then(|mut stmt| stmt.query_row([&id, &app_id], file_from_row).optional())
            .map_err(sql("get upload file"))?
            .ok_or(StoreError::NotFound { what: "upload file", id })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{open_store, TestStore};

    fn new_file(id: &str, app_id: &str) -> NewUploadFile {
        NewUploadFile {
            id: id.into(),
            app_id: app_id.into(),
            user: "u1".into(),
            name: "notes.txt".into(),
            size: 12,
            extension: "txt".into(),
            mime_type: "text/plain".into(),
        }
    }

    #[tokio::test]
    async fn files_are_stored_and_scoped_by_app() {
        let TestStore { store, _dir } = open_store();
        store.put_app("a1", "A", "chat", "{}", "config").await.expect("app");
        store.put_app("a2", "B", "chat", "{}", "config").await.expect("app");
        let f = store.insert_upload_file(new_file("f1", "a1")).await.expect("insert");
        assert_eq!((f.size, f.name.as_str(), f.user.as_str()), (12, "notes.txt", "u1"));
        assert!(f.created_at > 0);
        assert_eq!(store.get_upload_file("a1", "f1").await.expect("get"), f);

        let err = store.get_upload_file("a2", "f1").await.expect_err("other app");
        assert!(matches!(err, StoreError::NotFound { what: "upload file", .. }), "{err:?}");
        let err = store.get_upload_file("a1", "ghost").await.expect_err("unknown");
        assert!(matches!(err, StoreError::NotFound { what: "upload file", .. }), "{err:?}");
        let err = store.insert_upload_file(new_file("f1", "a1")).await.expect_err("duplicate");
        assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
        let err = store.insert_upload_file(new_file("f2", "ghost-app")).await.expect_err("no app");
        assert!(matches!(err, StoreError::NotFound { what: "app", .. }), "{err:?}");
        store.close().await.expect("close");
    }
}
