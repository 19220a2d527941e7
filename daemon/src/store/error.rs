//! The store's one error type.
//!
//! Owns: `StoreError` and the helper that attaches an operation name to a
//! rusqlite error. Must not touch: HTTP status codes (the `api` module maps
//! these variants to statuses).

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The directory that should hold the database file does not exist.
    #[error("cannot open the store: directory {dir} does not exist")]
    MissingDir {
        /// The missing parent directory.
        dir: PathBuf,
    },
    /// SQLite could not open or configure the database file.
    #[error("cannot open the store {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite refused write-ahead logging for this file (e.g. its filesystem
    /// lacks shared memory support).
    #[error("the store {path} cannot use write-ahead logging (journal_mode stayed {journal_mode})")]
    WalUnavailable {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        journal_mode: String,
    },
    /// The database was written by a newer daemon than this one.
    #[error("the store has schema version {found}, this daemon supports up to {supported}")]
    SchemaTooNew {
        /// `PRAGMA user_version` of the file.
        found: u32,
        /// The newest schema this build knows.
        supported: u32,
    },
    /// `VACUUM INTO` failed while writing the pre-migration backup.
    #[error("cannot write the pre-migration backup {path}")]
    Backup {
        /// The backup file being written.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Moving the finished backup into place (or clearing a stale temporary) failed.
    #[error("cannot move the pre-migration backup into place at {path}")]
    BackupFile {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A schema migration failed; its transaction was rolled back.
    #[error("schema migration to version {version} failed")]
    Migrate {
        /// The version the migration would have produced.
        version: u32,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("store operation {op} failed")]
    Sqlite {
        /// What the store was doing.
        op: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The writer queue is full; try again later (the API answers 503).
    #[error("the store is busy: the write queue is full")]
    Busy,
    /// The store has been closed (or its writer thread has stopped).
    #[error("the store is closed")]
    Closed,
    /// The writer or reader thread could not be started.
    #[error("cannot start the store's {what} thread")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A store job panicked (a bug); the writer thread survives it.
    #[error("store operation {op} panicked")]
    Panicked {
        /// What the store was doing.
        op: &'static str,
    },
    /// No such row, or the row belongs to another app or user.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of object (`app`, `api key`, `conversation`, `message`...).
        what: &'static str,
        /// The id that was looked up.
        id: String,
    },
    /// A row with this id already exists.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// The kind of object.
        what: &'static str,
        /// The duplicate id.
        id: String,
    },
    /// A name that must be unique is taken (a dataset's).
    #[error("{what} name {name:?} already exists")]
    DuplicateName {
        /// The kind of object.
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A message or workflow run was finished twice, or finished after
    /// recovery marked it.
    #[error("{what} {id} is not pending (status {status})")]
    NotPending {
        /// The kind of object (`message`, `workflow run`).
        what: &'static str,
        /// Its id.
        id: String,
        /// Its current status.
        status: String,
    },
    /// An argument was rejected before touching SQL.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The argument's name.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
}

/// `map_err` helper: wraps a rusqlite error with the operation's name.
pub(crate) fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
}
