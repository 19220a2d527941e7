//! Installing a signed bundle: verify it (signature by a key in
//! `update.trust_dir`, `update.compatible`, the version policy, free space),
//! unpack it into the slot that does not run (every payload hashed while it
//! is written, `manifest.json` last), then make it the pending `current`
//! (state first, then the link; see [`super::state`]). The caller restarts
//! the daemon; the launcher then snapshots the store and starts the new
//! version as attempt 1 of `update.max_attempts`.
//!
//! Owns the order of those steps and what each refusal leaves behind (a
//! refused bundle changes nothing; an unpack that fails removes what it
//! wrote, and the slot it was writing to is left empty, never half full
//! with a manifest). Must not: parse bundles itself (`edgeai_common::bundle`
//! does), restart the daemon, or touch the store (the launcher snapshots it
//! before the new version's first start).

use std::path::{Path, PathBuf};

use edgeai_common::admin as wire;
use edgeai_common::bundle::{self, Bundle, BundleError, ErrorClass, Kind, TrustStore};

use super::slots;
use super::state::{self, Slot, Status, UpdateState};
use super::{UpdateError, Updates};

/// What the operator allowed for one install.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// Install an older version (the bundle's manifest must allow it too).
    pub allow_downgrade: bool,
    /// Install the version that runs again.
    pub reinstall: bool,
}

/// Room kept free on the update directory's file system besides the
/// payloads and the store snapshot (the journal, SQLite's WAL, logs).
const SPACE_MARGIN: u64 = 64 << 20;

impl Updates {
    /// Installs the bundle at `path` into the slot that does not run and
    /// makes it the pending version. The answer says `restarting`: the
    /// caller stops the daemon (exit 75) so the new version starts.
    pub fn install(&self, path: &Path, opts: InstallOptions) -> Result<wire::UpdateActionResponse, UpdateError> {
        if !self.settings.enabled {
            return Err(UpdateError::Disabled);
        }
        let dir = self.dir().to_path_buf();
        let _lock = state::lock();
        let before = state::read(&dir)?;
        if let Some(st) = before.as_ref().filter(|s| s.status == Status::Pending) {
            return Err(UpdateError::Pending(format!(
                "{} in slot {} is pending (start {} of {}): wait for it to commit, or mark it good, bad or roll it back, before installing another",
                st.version,
                st.current.as_str(),
                st.attempts,
                st.max_attempts
            )));
        }
        let (running, running_version) = self.running_version(before.as_ref());
        let installed = semver::Version::parse(&running_version)
            .map_err(|e| UpdateError::Bundle(format!("the running version {running_version:?} is not a semantic version ({e})")))?;
        let trust = TrustStore::load(&self.settings.trust_dir).map_err(bundle_error)?;
        let opened = Bundle::open_file(path, &trust).map_err(bundle_error)?;
        let manifest = opened.manifest().clone();
        bundle::check_policy(&manifest, &installed, &self.settings.compatible, opts.allow_downgrade, opts.reinstall)
            .map_err(bundle_error)?;
        // Only the binary is applied so far: models, apps and config in a
        // slot are not read by the daemon yet, and pretending to install
        // them would be worse than refusing.
        if let Some(c) = manifest.components.iter().find(|c| c.kind != Kind::Binary) {
            return Err(UpdateError::Unsupported(format!(
                "the bundle carries a {} ({}): this edgeaid installs the daemon binary only; models, apps and config are not applied from bundles yet",
                c.kind.as_str(),
                c.name
            )));
        }
        match manifest.components.iter().find(|c| c.kind == Kind::Binary) {
            Some(c) if c.name == "edgeaid" => {}
            Some(c) => {
                return Err(UpdateError::Unsupported(format!(
                "the bundle's binary is named {:?}: it must be \"edgeaid\" (build it with `edgeaictl bundle create --binary .../edgeaid`)",
                c.name
            )))
            }
            None => return Err(UpdateError::Unsupported("the bundle carries no binary: nothing to install".into())),
        }
        let target = match before.as_ref().map(|s| s.current) {
            Some(Slot::A) => Slot::B,
            Some(Slot::B) => Slot::A,
            Some(Slot::Factory) | None => running.other(),
        };
        let slot_dir = slots::slot_dir(&dir, target).ok_or_else(|| UpdateError::Bundle("no directory for the factory slot".into()))?;
        self.check_space(&dir, opened.payload_bytes())?;
        // The slot that does not run is the one replaced: empty it first, so
        // a crash during the unpack leaves a slot without a manifest
        // (incomplete, never started), not a mix of two versions.
        match std::fs::remove_dir_all(&slot_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(UpdateError::Io { what: "emptying the slot", path: slot_dir, source }),
        }
        std::fs::create_dir_all(&slot_dir).map_err(|source| UpdateError::Io {
            what: "creating the slot",
            path: slot_dir.clone(),
            source,
        })?;
        let signers = opened.signers().to_vec();
        let mut last_logged = 0u64;
        opened
            .unpack_into(&slot_dir, |done, total| {
                if done > 0 {
                    super::kill_point("unpack");
                }
                // A line per quarter: progress for the journal without a flood.
                if total > 0 && done * 4 / total > last_logged {
                    last_logged = done * 4 / total;
                    tracing::info!(slot = target.as_str(), done, total, "update: unpacking the bundle");
                }
            })
            .map_err(bundle_error)?;
        let new_version = manifest.version.to_string();
        let mut st = UpdateState::pending(target, &new_version, running, Some(&running_version), self.settings.max_attempts);
        if let Some(old) = before {
            // Keep the history across installs (bounded by `record`).
            let mut history = old.history;
            history.append(&mut st.history);
            st.history = history;
        }
        st.record("installed", Some(format!("signed by {}", signers.join(", "))));
        super::kill_point("installed");
        state::write(&dir, &st)?;
        super::kill_point("state-written");
        slots::switch_current(&dir, target)?;
        super::kill_point("switched");
        tracing::warn!(
            slot = target.as_str(),
            version = %manifest.version,
            previous = running.as_str(),
            previous_version = %running_version,
            signers = %signers.join(","),
            "update: installed; restarting into the pending version"
        );
        Ok(wire::UpdateActionResponse {
            action: "install".into(),
            status: st.status.as_str().to_owned(),
            message: format!(
                "{} installed in slot {} (pending); the daemon restarts into it and commits it once healthy, or rolls back after {} failed starts",
                manifest.version,
                target.as_str(),
                st.max_attempts
            ),
            restarting: true,
        })
    }

    /// The slot this process runs as and its version (the factory's is this
    /// binary's own).
    fn running_version(&self, st: Option<&UpdateState>) -> (Slot, String) {
        let running = self.running;
        let version = match running {
            Slot::Factory => None,
            slot => slots::inspect(self.dir(), slot).and_then(|i| i.version).or_else(|| st.map(|s| s.version.clone())),
        };
        (running, version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()))
    }

    /// Before a bundle of `bundle_bytes` is received (its size known from
    /// the request or the descriptor): refuses when the received copy, the
    /// payloads it unpacks to (at most its size) and the store snapshot
    /// would not fit, so a full disk is found before a byte is written.
    pub fn check_receive_space(&self, bundle_bytes: u64) -> Result<(), UpdateError> {
        let dir = self.dir().to_path_buf();
        self.check_space(&dir, bundle_bytes.saturating_mul(2))
    }

    /// Refuses before a byte is written when the payloads and the store
    /// snapshot the launcher takes would not fit, with a margin.
    fn check_space(&self, dir: &Path, payload: u64) -> Result<(), UpdateError> {
        let available = free_space(dir)?;
        let store = std::fs::metadata(&self.store_path).map(|m| m.len()).unwrap_or(0);
        let needed = payload.saturating_add(store).saturating_add(SPACE_MARGIN);
        if available < needed {
            return Err(UpdateError::NoSpace { dir: dir.to_path_buf(), needed, available });
        }
        Ok(())
    }
}

/// Bytes free for us on the file system of `dir`.
fn free_space(dir: &Path) -> Result<u64, UpdateError> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| UpdateError::Io {
        what: "reading the free space of",
        path: dir.to_path_buf(),
        source: std::io::Error::from(e),
    })?;
    Ok((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
}

/// A write of the received bundle at `path` failed: a full file system
/// (ENOSPC, or a quota) is the install's `NoSpace` with what it needed
/// (`needed`: the bundle's size, when known, else what was written), any
/// other error names the file.
pub fn receive_write_error(path: &Path, needed: u64, source: std::io::Error) -> UpdateError {
    if matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) {
        let dir = path.parent().unwrap_or(path).to_path_buf();
        let available = free_space(&dir).unwrap_or(0);
        return UpdateError::NoSpace { dir, needed, available };
    }
    UpdateError::Io { what: "writing", path: path.to_path_buf(), source }
}

/// A bundle's refusal as the update's error, keeping its class.
fn bundle_error(e: BundleError) -> UpdateError {
    let message = e.to_string();
    match e.class() {
        ErrorClass::Untrusted => UpdateError::Untrusted(message),
        ErrorClass::Policy => UpdateError::Policy(message),
        ErrorClass::Data | ErrorClass::Output => UpdateError::Bundle(crate::telemetry::chain(&e)),
    }
}

/// Where the admin API writes a bundle it receives: under the update
/// directory (the same file system as the slots), never in /tmp.
pub fn incoming_path(dir: &Path) -> PathBuf {
    super::snapshot::update_dir(dir).join(format!("incoming-{}.bundle", uuid::Uuid::now_v7()))
}

/// Removes the bundles an earlier process was receiving or installing when
/// it died (`update/incoming-*.bundle`; a running install removes its own),
/// so a power cut mid-download does not keep its bytes for ever. Called by
/// the launcher before anything can receive; logs each file it removes.
pub fn remove_leftovers(dir: &Path) {
    let udir = super::snapshot::update_dir(dir);
    let Ok(entries) = std::fs::read_dir(&udir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("incoming-") && name.ends_with(".bundle")) {
            continue;
        }
        let path = entry.path();
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), bytes, "update: removed a bundle an earlier start did not finish receiving or installing")
            }
            Err(e) => tracing::error!(path = %path.display(), error = %e, "update: could not remove an unfinished received bundle"),
        }
    }
}
