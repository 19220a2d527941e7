//! The slot layout under `update.dir`: `slots/a/`, `slots/b/` (each with
//! `manifest.json`, written last, and optionally `bin/edgeaid`, `models/`,
//! `apps/`, `config/`) and the `current` symlink naming the slot that runs.
//!
//! Owns reading a slot's manifest and moving `current` atomically (a new
//! link `current.new`, renamed over `current`, directory fsynced). Must not:
//! write slot contents (the install does) or the state file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::state::{sync_dir, Slot};
use super::UpdateError;

/// The link's name under `update.dir`.
pub const CURRENT: &str = "current";
/// A slot's completeness marker, written last by an install.
pub const MANIFEST: &str = "manifest.json";

/// `<dir>/slots/<a|b>`; `None` for the factory.
pub fn slot_dir(dir: &Path, slot: Slot) -> Option<PathBuf> {
    match slot {
        Slot::A | Slot::B => Some(dir.join("slots").join(slot.as_str())),
        Slot::Factory => None,
    }
}

/// The link target written for a slot: relative, so the directory can move.
fn link_target(slot: Slot) -> Option<PathBuf> {
    match slot {
        Slot::A | Slot::B => Some(Path::new("slots").join(slot.as_str())),
        Slot::Factory => None,
    }
}

/// The part of `manifest.json` the daemon reads; other fields are the
/// install's (bundle) business and ignored here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    pub version: String,
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot: Slot,
    /// The manifest's version; `None` when there is no manifest (empty or
    /// half-written slot).
    pub version: Option<String>,
    /// Why the manifest is unusable, when it exists but does not parse.
    pub problem: Option<String>,
    /// `bin/edgeaid` exists (an executable file).
    pub binary: Option<PathBuf>,
}

impl SlotInfo {
    /// A complete slot: its manifest was written and parses.
    pub fn complete(&self) -> bool {
        self.version.is_some()
    }
}

/// Reads a slot's manifest and looks for its binary.
pub fn inspect(dir: &Path, slot: Slot) -> Option<SlotInfo> {
    let sdir = slot_dir(dir, slot)?;
    let manifest = sdir.join(MANIFEST);
    let (version, problem) = match std::fs::read(&manifest) {
        Ok(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) if !m.version.trim().is_empty() => (Some(m.version), None),
            Ok(_) => (None, Some(format!("{}: \"version\" is empty", manifest.display()))),
            Err(e) => (None, Some(format!("{}: {e}", manifest.display()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
        Err(e) => (None, Some(format!("{}: {e}", manifest.display()))),
    };
    let bin = sdir.join("bin").join("edgeaid");
    let binary = std::fs::metadata(&bin).ok().filter(|m| m.is_file()).map(|_| bin);
    Some(SlotInfo { slot, version, problem, binary })
}

/// A complete slot's info, or why it is not usable.
pub fn require_complete(dir: &Path, slot: Slot) -> Result<SlotInfo, UpdateError> {
    match inspect(dir, slot) {
        None => Err(UpdateError::SlotIncomplete { slot: slot.as_str(), reason: "the factory is not a slot".into() }),
        Some(info) if info.complete() => Ok(info),
        Some(info) => Err(UpdateError::SlotIncomplete {
            slot: slot.as_str(),
            reason: info.problem.unwrap_or_else(|| format!("{} has no {MANIFEST}", slot_dir(dir, slot).unwrap_or_default().display())),
        }),
    }
}

/// Where `current` points: `Ok(None)` when there is no link (the factory
/// runs); an error for a link that names neither slot.
pub fn read_current(dir: &Path) -> Result<Option<Slot>, UpdateError> {
    let link = dir.join(CURRENT);
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(UpdateError::Io { what: "reading the current link", path: link, source }),
    };
    let relative = target.strip_prefix(dir).unwrap_or(target.as_path());
    [Slot::A, Slot::B]
        .into_iter()
        .find(|s| link_target(*s).as_deref() == Some(relative))
        .map(Some)
        .ok_or_else(|| UpdateError::BadLink { link, target })
}

/// Points `current` at `slot` (or removes it for the factory) atomically:
/// readers see the old link or the new one, never none in between for a
/// slot-to-slot switch. The directory is fsynced afterwards.
pub fn switch_current(dir: &Path, slot: Slot) -> Result<(), UpdateError> {
    let link = dir.join(CURRENT);
    let io = |what, p: &Path| {
        let p = p.to_path_buf();
        move |source| UpdateError::Io { what, path: p, source }
    };
    match link_target(slot) {
        Some(target) => {
            let new = dir.join("current.new");
            match std::fs::remove_file(&new) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(UpdateError::Io { what: "removing a stale current.new", path: new, source }),
            }
            std::os::unix::fs::symlink(&target, &new).map_err(io("creating the link current.new", &new))?;
            fail::fail_point!("update-switch-before-rename", |_| Err(UpdateError::Io {
                what: "switching current (failpoint update-switch-before-rename)",
                path: new.clone(),
                source: std::io::Error::other("failpoint"),
            }));
            std::fs::rename(&new, &link).map_err(io("renaming current.new over current", &link))?;
        }
        None => match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(UpdateError::Io { what: "removing the current link", path: link, source }),
        },
    }
    sync_dir(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    fn slot_with_manifest(dir: &Path, slot: Slot, version: &str) {
        let d = slot_dir(dir, slot).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(MANIFEST), format!("{{\"version\": \"{version}\", \"compatible\": \"edgeai-x86_64\"}}")).unwrap();
    }

    #[test]
    fn switch_moves_the_link_and_read_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(read_current(d).unwrap(), None);
        switch_current(d, Slot::B).unwrap();
        assert_eq!(read_current(d).unwrap(), Some(Slot::B));
        assert_eq!(std::fs::read_link(d.join(CURRENT)).unwrap(), Path::new("slots/b"));
        switch_current(d, Slot::A).unwrap();
        assert_eq!(read_current(d).unwrap(), Some(Slot::A));
        assert!(!d.join("current.new").exists() && std::fs::symlink_metadata(d.join("current.new")).is_err());
        // A stale current.new from an interrupted switch does not stop the next one.
        std::os::unix::fs::symlink("slots/a", d.join("current.new")).unwrap();
        switch_current(d, Slot::B).unwrap();
        assert_eq!(read_current(d).unwrap(), Some(Slot::B));
        switch_current(d, Slot::Factory).unwrap();
        assert_eq!(read_current(d).unwrap(), None);
        // Removing what is not there is fine (idempotent).
        switch_current(d, Slot::Factory).unwrap();
    }

    #[test]
    fn an_absolute_link_into_the_dir_is_understood_and_a_foreign_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::os::unix::fs::symlink(d.join("slots/a"), d.join(CURRENT)).unwrap();
        assert_eq!(read_current(d).unwrap(), Some(Slot::A));
        std::fs::remove_file(d.join(CURRENT)).unwrap();
        std::os::unix::fs::symlink("/usr", d.join(CURRENT)).unwrap();
        let e = read_current(d).unwrap_err().to_string();
        assert!(e.contains("/usr") && e.contains("current"), "{e}");
    }

    #[test]
    fn a_slot_is_complete_only_with_a_manifest_that_parses() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(require_complete(d, Slot::A).unwrap_err().to_string().contains("has no manifest.json"));
        slot_with_manifest(d, Slot::A, "1.2.0");
        let info = require_complete(d, Slot::A).unwrap();
        assert_eq!((info.version.as_deref(), info.binary.is_none()), (Some("1.2.0"), true));
        std::fs::create_dir_all(d.join("slots/a/bin")).unwrap();
        std::fs::write(d.join("slots/a/bin/edgeaid"), "#!/bin/sh\n").unwrap();
        assert!(inspect(d, Slot::A).unwrap().binary.is_some());
        std::fs::create_dir_all(d.join("slots/b")).unwrap();
        std::fs::write(d.join("slots/b").join(MANIFEST), "{\"vers").unwrap();
        let e = require_complete(d, Slot::B).unwrap_err().to_string();
        assert!(e.contains("slots/b/manifest.json"), "{e}");
    }
}
