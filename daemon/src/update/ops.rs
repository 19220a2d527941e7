//! The operator's update controls, shared by the control front ends (the
//! admin API today): the status report, mark-good, mark-bad and rollback,
//! as edgeai-common's wire types.
//!
//! Owns what each action changes in the state file and the link. Must not:
//! touch the store (a pending version's database is put back by the
//! launcher at the next start, before the store opens: never under an open
//! store), restart the daemon itself (the caller does, after answering), or
//! know HTTP. Every refusal leaves the files as they were.

use edgeai_common::admin as wire;

use super::slots;
use super::state::{self, Slot, Snapshot, Status, UpdateState};
use super::{snapshot, UpdateError};
use crate::config::UpdateSettings;

/// The update controls of a running daemon.
#[derive(Debug)]
pub struct Updates {
    pub(super) settings: UpdateSettings,
    /// What this process runs as (`EDGEAI_SLOT`, else the factory).
    pub(super) running: Slot,
    /// `store.path`: an install needs room for its snapshot too.
    pub(super) store_path: std::path::PathBuf,
}

impl Updates {
    pub fn new(settings: &UpdateSettings) -> Updates {
        Updates { settings: settings.clone(), running: super::running_slot().unwrap_or(Slot::Factory), store_path: Default::default() }
    }

    /// For tests: as if this process ran as `running`.
    pub fn with_running(settings: &UpdateSettings, running: Slot) -> Updates {
        Updates { settings: settings.clone(), running, store_path: Default::default() }
    }

    /// The `[update]` settings these controls follow.
    pub fn settings(&self) -> &UpdateSettings {
        &self.settings
    }

    /// The store's file, whose size an install's free-space check counts.
    pub fn with_store(mut self, path: &std::path::Path) -> Updates {
        self.store_path = path.to_path_buf();
        self
    }

    pub(super) fn dir(&self) -> &std::path::Path {
        &self.settings.dir
    }

    /// `GET /admin/v1/update`.
    pub fn status(&self) -> wire::UpdateStatus {
        let dir = self.dir();
        let (state, state_error) = match state::read(dir) {
            Ok(s) => (s.map(|s| info(&s)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let current_link = match slots::read_current(dir) {
            Ok(l) => l.unwrap_or(Slot::Factory).as_str().to_owned(),
            Err(e) => format!("invalid: {e}"),
        };
        let slots = [Slot::A, Slot::B]
            .into_iter()
            .filter_map(|s| slots::inspect(dir, s))
            .map(|i| wire::SlotStatus {
                name: i.slot.as_str().to_owned(),
                complete: i.complete(),
                has_binary: i.binary.is_some(),
                version: i.version,
                problem: i.problem,
            })
            .collect();
        wire::UpdateStatus {
            enabled: self.settings.enabled,
            dir: dir.display().to_string(),
            running: self.running.as_str().to_owned(),
            current_link,
            state,
            state_error,
            slots,
        }
    }

    /// The state, for an action: updates on, a readable file, something installed.
    fn state(&self) -> Result<UpdateState, UpdateError> {
        if !self.settings.enabled {
            return Err(UpdateError::Disabled);
        }
        state::read(self.dir())?
            .ok_or_else(|| UpdateError::NothingToRollBack("no update was ever installed; the installed binary runs".into()))
    }

    /// `POST /admin/v1/update/mark-good`: the pending version that runs is
    /// good now (as if its health gate passed); a good one stays good.
    pub fn mark_good(&self) -> Result<wire::UpdateActionResponse, UpdateError> {
        let _lock = state::lock();
        let mut st = self.state().map_err(not_installed_is_not_pending)?;
        match st.status {
            Status::Good => {
                Ok(answer("mark-good", &st, format!("{} in {} is already good; nothing changed", st.version, st.current.as_str()), false))
            }
            Status::RolledBack => Err(UpdateError::NotPending(format!(
                "nothing is pending: {} was rolled back ({}); install it again to retry",
                st.failed_version.as_deref().unwrap_or("the update"),
                st.last_error.as_deref().unwrap_or("no reason recorded")
            ))),
            Status::Pending if st.current != self.running => Err(UpdateError::NotPending(format!(
                "the pending version {} is in slot {}, but this daemon runs as {}: only the running version can be marked good",
                st.version,
                st.current.as_str(),
                self.running.as_str()
            ))),
            Status::Pending => {
                st.status = Status::Good;
                st.committed_at = Some(state::now());
                st.snapshot = Snapshot::None;
                st.last_error = None;
                st.record("marked-good", Some("by the operator".into()));
                state::write(self.dir(), &st)?;
                snapshot::discard(self.dir())?;
                tracing::warn!(slot = st.current.as_str(), version = %st.version, "update: marked good by the operator");
                Ok(answer(
                    "mark-good",
                    &st,
                    format!("{} in {} is good (committed by the operator)", st.version, st.current.as_str()),
                    false,
                ))
            }
        }
    }

    /// `POST /admin/v1/update/mark-bad`: the pending version gets no more
    /// starts; the daemon restarts and the launcher rolls it back (and puts
    /// the store snapshot back) before anything opens the store.
    pub fn mark_bad(&self) -> Result<wire::UpdateActionResponse, UpdateError> {
        self.give_up("mark-bad", "marked bad by the operator")
    }

    /// `POST /admin/v1/update/rollback`: back to the previous version. A
    /// pending one is given up as by mark-bad (the rollback happens at the
    /// restart, with the store snapshot); a good one is switched now (the
    /// state and link; its database stays as it is) and the daemon restarts.
    pub fn rollback(&self) -> Result<wire::UpdateActionResponse, UpdateError> {
        let st = {
            let _lock = state::lock();
            self.state()?
        };
        if st.status == Status::Pending {
            return self.give_up("rollback", "rolled back by the operator");
        }
        let _lock = state::lock();
        let mut st = self.state()?;
        let to = st.previous.ok_or_else(|| {
            UpdateError::NothingToRollBack(format!(
                "{} in {} has no previous version recorded{}",
                st.version,
                st.current.as_str(),
                if st.status == Status::RolledBack { " (it is what a rollback went back to)" } else { "" }
            ))
        })?;
        if to != Slot::Factory {
            slots::require_complete(self.dir(), to)?;
        }
        let from = st.current;
        let failed = st.version.clone();
        let reason = format!("rolled back by the operator from {failed} in {}", from.as_str());
        st.record("rolled-back", Some(format!("to {}: {reason}", to.as_str())));
        st.current = to;
        st.previous = None;
        st.status = Status::RolledBack;
        st.version = st.previous_version.take().unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
        st.failed_version = Some(failed);
        st.last_error = Some(reason.clone());
        st.attempts = 0;
        st.snapshot = Snapshot::None;
        st.switched_at = state::now();
        st.committed_at = None;
        // The state first: a crash before the link moves is repaired by the next start.
        state::write(self.dir(), &st)?;
        slots::switch_current(self.dir(), to)?;
        tracing::error!(from = from.as_str(), to = to.as_str(), reason = %reason, "update: rolled back by the operator; restarting");
        Ok(answer("rollback", &st, format!("{reason}; restarting into {} ({})", to.as_str(), st.version), true))
    }

    /// The pending version gets no more starts: attempts = max, the reason
    /// in `last_error`; the restart rolls it back.
    fn give_up(&self, action: &str, why: &str) -> Result<wire::UpdateActionResponse, UpdateError> {
        let _lock = state::lock();
        let mut st = self.state().map_err(not_installed_is_not_pending)?;
        if st.status != Status::Pending {
            return Err(UpdateError::NotPending(format!(
                "{} in {} is {}, not pending{}",
                st.version,
                st.current.as_str(),
                st.status.as_str(),
                if action == "mark-bad" { "; to go back to the previous version use rollback" } else { "" }
            )));
        }
        st.attempts = st.max_attempts;
        st.last_error = Some(why.to_owned());
        st.record(action, Some(why.to_owned()));
        state::write(self.dir(), &st)?;
        tracing::error!(slot = st.current.as_str(), version = %st.version, why, "update: pending version given up; restarting to roll it back");
        let to = st.previous.unwrap_or(Slot::Factory);
        let message =
            format!("{} {why}; restarting: the next start rolls it back to {} and restores the store snapshot", st.version, to.as_str());
        Ok(answer(action, &st, message, true))
    }
}

/// "Nothing installed" reads as "nothing pending" for mark-good/mark-bad.
fn not_installed_is_not_pending(e: UpdateError) -> UpdateError {
    match e {
        UpdateError::NothingToRollBack(m) => UpdateError::NotPending(format!("nothing is pending: {m}")),
        other => other,
    }
}

fn answer(action: &str, st: &UpdateState, message: String, restarting: bool) -> wire::UpdateActionResponse {
    wire::UpdateActionResponse { action: action.to_owned(), status: st.status.as_str().to_owned(), message, restarting }
}

/// The state as its wire type.
pub fn info(s: &UpdateState) -> wire::UpdateStateInfo {
    wire::UpdateStateInfo {
        current: s.current.as_str().to_owned(),
        previous: s.previous.map(|p| p.as_str().to_owned()),
        status: s.status.as_str().to_owned(),
        version: s.version.clone(),
        previous_version: s.previous_version.clone(),
        attempts: s.attempts,
        max_attempts: s.max_attempts,
        switched_at: s.switched_at,
        committed_at: s.committed_at,
        failed_version: s.failed_version.clone(),
        last_error: s.last_error.clone(),
        history: s
            .history
            .iter()
            .map(|e| wire::UpdateEvent { at: e.at, event: e.event.clone(), version: e.version.clone(), detail: e.detail.clone() })
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    fn setup(enabled: bool) -> (tempfile::TempDir, UpdateSettings) {
        let tmp = tempfile::tempdir().unwrap();
        let s = UpdateSettings { enabled, dir: tmp.path().to_path_buf(), ..UpdateSettings::default() };
        for (slot, v) in [(Slot::A, "1.1.0"), (Slot::B, "1.2.0")] {
            let d = slots::slot_dir(tmp.path(), slot).unwrap();
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(slots::MANIFEST), format!("{{\"version\": \"{v}\"}}")).unwrap();
        }
        (tmp, s)
    }

    /// Every file under the dir with its bytes (links as their target).
    fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.file_type().is_symlink() {
                    out.push((p.display().to_string(), std::fs::read_link(&p).unwrap().display().to_string().into_bytes()));
                } else if m.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn refusals_leave_every_file_as_it_was() {
        // Disabled.
        let (tmp, s) = setup(false);
        let before = files(tmp.path());
        let u = Updates::with_running(&s, Slot::Factory);
        assert!(matches!(u.rollback(), Err(UpdateError::Disabled)));
        assert!(matches!(u.mark_good(), Err(UpdateError::Disabled)));
        assert_eq!(files(tmp.path()), before);
        // Nothing installed.
        let (tmp, s) = setup(true);
        let u = Updates::with_running(&s, Slot::Factory);
        assert!(matches!(u.rollback(), Err(UpdateError::NothingToRollBack(_))));
        assert!(matches!(u.mark_bad(), Err(UpdateError::NotPending(_))));
        // Good without a previous version; corrupt state.
        let mut st = UpdateState::pending(Slot::B, "1.2.0", Slot::A, None, 3);
        st.status = Status::Good;
        st.previous = None;
        state::write(tmp.path(), &st).unwrap();
        slots::switch_current(tmp.path(), Slot::B).unwrap();
        let before = files(tmp.path());
        let u = Updates::with_running(&s, Slot::B);
        let e = u.rollback().unwrap_err();
        assert!(matches!(e, UpdateError::NothingToRollBack(_)), "{e}");
        assert!(matches!(u.mark_bad(), Err(UpdateError::NotPending(_))));
        assert_eq!(files(tmp.path()), before);
        std::fs::write(state::path(tmp.path()), "{\"format\": 1").unwrap();
        let before = files(tmp.path());
        assert!(matches!(u.rollback(), Err(UpdateError::StateCorrupt { .. })));
        assert!(matches!(u.mark_good(), Err(UpdateError::StateCorrupt { .. })));
        assert_eq!(files(tmp.path()), before);
        assert!(u.status().state_error.unwrap().contains("corrupt"));
    }

    #[test]
    fn mark_good_mark_bad_and_rollback_change_the_state() {
        let (tmp, s) = setup(true);
        let d = tmp.path();
        let mut st = UpdateState::pending(Slot::B, "1.2.0", Slot::A, Some("1.1.0"), 3);
        st.attempts = 1;
        state::write(d, &st).unwrap();
        slots::switch_current(d, Slot::B).unwrap();
        // Only the running version can be marked good.
        assert!(matches!(Updates::with_running(&s, Slot::Factory).mark_good(), Err(UpdateError::NotPending(_))));
        let u = Updates::with_running(&s, Slot::B);
        let r = u.mark_good().unwrap();
        assert_eq!((r.status.as_str(), r.restarting), ("good", false));
        assert_eq!(u.mark_good().unwrap().message, "1.2.0 in b is already good; nothing changed");
        // A good version rolls back to the previous slot now.
        let r = u.rollback().unwrap();
        assert!(r.restarting && r.status == "rolled-back", "{r:?}");
        let after = state::read(d).unwrap().unwrap();
        assert_eq!((after.current, after.version.as_str(), after.failed_version.as_deref()), (Slot::A, "1.1.0", Some("1.2.0")));
        assert_eq!(slots::read_current(d).unwrap(), Some(Slot::A));
        // ... and not again.
        assert!(matches!(u.rollback(), Err(UpdateError::NothingToRollBack(_))));
        // A pending version is given up: the next start rolls it back.
        state::write(d, &st).unwrap();
        let r = u.mark_bad().unwrap();
        assert!(r.restarting);
        let after = state::read(d).unwrap().unwrap();
        assert_eq!((after.status, after.attempts, after.last_error.as_deref()), (Status::Pending, 3, Some("marked bad by the operator")));
        let status = u.status();
        assert_eq!((status.running.as_str(), status.current_link.as_str()), ("b", "a"));
        assert_eq!(status.slots.len(), 2);
    }
}
