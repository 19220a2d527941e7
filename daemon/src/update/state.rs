//! `update-state.json`: what runs (slot or factory), whether it is good or
//! pending, how many starts a pending version had, and a short history.
//!
//! Owns the file's format and its atomic replacement (temp file, fsync,
//! rename, directory fsync). Must not: touch slots, the `current` link or
//! the store. A file that does not parse, or has another `format`, is an
//! error naming the file; nothing here guesses a state.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::UpdateError;

/// The file name under `update.dir`.
pub const STATE_FILE: &str = "update-state.json";

/// The only `format` this build reads and writes.
pub const FORMAT: u32 = 1;

/// History entries kept (oldest dropped first).
pub const HISTORY_MAX: usize = 20;

/// A place a version runs from: one of the two slots, or the installed
/// (factory) binary and configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
    Factory,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
            Slot::Factory => "factory",
        }
    }

    /// `a` or `b` (the names `EDGEAI_SLOT` and the link use); not `factory`.
    pub fn parse_slot(s: &str) -> Option<Slot> {
        match s {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot an install writes into when this one runs.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B | Slot::Factory => Slot::A,
        }
    }
}

/// Where the version in `current` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Committed: started, passed the health gate (or marked good).
    Good,
    /// Switched to, not committed yet: its starts count as attempts.
    Pending,
    /// A pending version was rolled back; `current` is the version before it
    /// (known good), `failed_version` and `last_error` say what and why.
    RolledBack,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Good => "good",
            Status::Pending => "pending",
            Status::RolledBack => "rolled-back",
        }
    }
}

/// Whether the store snapshot of a pending version was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Snapshot {
    /// Not yet (taken before the first start of the pending version).
    #[default]
    None,
    /// `update/store-before.db` holds the store as it was before the switch.
    Taken,
    /// There was no store before the switch: a rollback sets the new one aside.
    NoStore,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at: i64,
    /// `switched`, `attempt`, `committed`, `marked-good`, `marked-bad`,
    /// `rolled-back`, `gate-failed`, `link-repaired`.
    pub event: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The whole file. See docs/update.md for an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    /// [`FORMAT`]; another value is refused.
    pub format: u32,
    /// What `current` must point at (`factory`: no link).
    pub current: Slot,
    /// What a rollback goes back to; `None`: nothing (after a rollback, or a
    /// first install whose previous was never recorded).
    pub previous: Option<Slot>,
    pub status: Status,
    /// The version in `current` (the slot manifest's `version`; the factory's is
    /// the installed binary's).
    pub version: String,
    pub previous_version: Option<String>,
    /// Starts of the pending version so far (only starts of a pending version count).
    pub attempts: u32,
    /// Starts a pending version gets; the next start after these rolls back.
    pub max_attempts: u32,
    #[serde(default)]
    pub snapshot: Snapshot,
    /// Unix seconds of the switch to `current`.
    pub switched_at: i64,
    pub committed_at: Option<i64>,
    /// The version a rollback left (status `rolled-back`).
    #[serde(default)]
    pub failed_version: Option<String>,
    pub last_error: Option<String>,
    #[serde(default)]
    pub history: Vec<Event>,
}

impl UpdateState {
    /// A switch to `slot` (pending) from `previous`: what an install writes
    /// before it moves the `current` link.
    pub fn pending(slot: Slot, version: &str, previous: Slot, previous_version: Option<&str>, max_attempts: u32) -> UpdateState {
        let now = now();
        let mut s = UpdateState {
            format: FORMAT,
            current: slot,
            previous: Some(previous),
            status: Status::Pending,
            version: version.to_owned(),
            previous_version: previous_version.map(str::to_owned),
            attempts: 0,
            max_attempts,
            snapshot: Snapshot::None,
            switched_at: now,
            committed_at: None,
            failed_version: None,
            last_error: None,
            history: Vec::new(),
        };
        s.record("switched", Some(format!("from {}", previous.as_str())));
        s
    }

    /// Appends to the history (for the current version), dropping the oldest.
    pub fn record(&mut self, event: &str, detail: Option<String>) {
        self.history.push(Event { at: now(), event: event.to_owned(), version: self.version.clone(), detail });
        let over = self.history.len().saturating_sub(HISTORY_MAX);
        self.history.drain(..over);
    }
}

/// Serialises read-modify-write of the state file inside the daemon (the
/// health gate's commit and the operator's actions).
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the state lock (a panic while holding it does not poison it for good).
pub fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The state file's path under `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Reads the state; `Ok(None)` when there is no file (nothing was ever
/// installed, the factory runs).
pub fn read(dir: &Path) -> Result<Option<UpdateState>, UpdateError> {
    let path = path(dir);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(UpdateError::Io { what: "reading the update state", path, source }),
    };
    // The format first, so a newer file says so instead of failing on a field.
    let format = serde_json::from_slice::<serde_json::Value>(&text)
        .map_err(|e| UpdateError::StateCorrupt { path: path.clone(), reason: e.to_string() })?
        .get("format")
        .and_then(serde_json::Value::as_u64);
    match format {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => return Err(UpdateError::StateFormat { path, found: f }),
        None => return Err(UpdateError::StateCorrupt { path, reason: "no \"format\" field".into() }),
    }
    let state: UpdateState =
        serde_json::from_slice(&text).map_err(|e| UpdateError::StateCorrupt { path: path.clone(), reason: e.to_string() })?;
    if state.current != Slot::Factory && state.version.is_empty() {
        return Err(UpdateError::StateCorrupt { path, reason: "\"version\" is empty".into() });
    }
    if state.max_attempts == 0 {
        return Err(UpdateError::StateCorrupt { path, reason: "\"max_attempts\" is 0".into() });
    }
    Ok(Some(state))
}

/// Replaces the state file atomically: a temp file beside it, written and
/// fsynced, renamed over it, and the directory fsynced. A crash leaves the
/// old file or the new one, never a mix.
pub fn write(dir: &Path, state: &UpdateState) -> Result<(), UpdateError> {
    let path = path(dir);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let io = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| UpdateError::Io { what, path: p, source }
    };
    let mut text = serde_json::to_vec_pretty(state).map_err(|e| UpdateError::StateCorrupt { path: path.clone(), reason: e.to_string() })?;
    text.push(b'\n');
    fail::fail_point!("update-state-write", |_| Err(UpdateError::Io {
        what: "writing the update state (failpoint update-state-write)",
        path: tmp.clone(),
        source: std::io::Error::other("failpoint"),
    }));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("creating the update state", &tmp))?;
        f.write_all(&text).map_err(io("writing the update state", &tmp))?;
        f.sync_all().map_err(io("syncing the update state", &tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io("renaming the update state into place", &path))?;
    sync_dir(dir)
}

/// fsyncs a directory, so a rename or unlink in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| UpdateError::Io {
        what: "syncing the directory",
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = UpdateState::pending(Slot::B, "1.2.0", Slot::A, Some("1.1.0"), 3);
        s.attempts = 2;
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(s.clone()));
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, vec![STATE_FILE.to_owned()]);
        // Replacing keeps exactly one file with the new content.
        s.status = Status::Good;
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap().status, Status::Good);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.contains("\"status\": \"good\"") && text.contains("\"current\": \"b\""), "{text}");
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }

    #[test]
    fn corrupt_and_unknown_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        for (text, want) in [
            ("{\"format\": 1, \"current\": \"b\"", "is corrupt"),
            ("not json", "is corrupt"),
            ("{\"current\": \"b\"}", "no \"format\" field"),
            ("{\"format\": 2, \"current\": \"c\"}", "format 2"),
            ("{\"format\": 1, \"current\": \"c\"}", "unknown variant"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&p.display().to_string()) && e.contains(want), "{text}: {e}");
        }
        // A truncated write (what a non-atomic writer leaves after a power cut) is refused too.
        let s = UpdateState::pending(Slot::A, "2.0", Slot::Factory, None, 3);
        let full = serde_json::to_string(&s).unwrap();
        std::fs::write(&p, &full[..full.len() / 2]).unwrap();
        assert!(matches!(read(dir.path()), Err(UpdateError::StateCorrupt { .. })));
    }

    #[test]
    fn history_is_bounded() {
        let mut s = UpdateState::pending(Slot::A, "2.0", Slot::Factory, None, 3);
        for i in 0..50 {
            s.record("attempt", Some(i.to_string()));
        }
        assert_eq!(s.history.len(), HISTORY_MAX);
        assert_eq!(s.history.last().unwrap().detail.as_deref(), Some("49"));
    }
}
