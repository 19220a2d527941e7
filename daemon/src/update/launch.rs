//! The launcher: at start, before the store opens and while the process has
//! one thread, the installed edgeaid decides what runs: itself (the
//! factory), a good slot (exec of its `bin/edgeaid` with `EDGEAI_SLOT`), one
//! more attempt of a pending slot (counted and fsynced first; the store
//! snapshot taken before the first), or a rollback of a pending slot that
//! used up its attempts.
//!
//! Owns the decision table ([`decide`], a pure function) and carrying it
//! out ([`launch`]). Must not: start threads, open the store through
//! `crate::store`, or run in a process that already has `EDGEAI_SLOT`.

use std::os::unix::process::CommandExt;
use std::path::Path;

use super::slots::{self, SlotInfo};
use super::snapshot;
use super::state::{self, Slot, Snapshot, Status, UpdateState};
use super::{UpdateError, SLOT_ENV};
use crate::config::Settings;

/// What the launcher decided, before it acts.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Updates are off, or nothing is installed: the installed binary serves.
    Factory { why: String },
    /// The state cannot be trusted: the installed binary serves and the
    /// files are left as they are (logged as an error).
    Refuse { error: String },
    /// A good (or rolled-back-to) slot runs.
    Run { slot: Slot },
    /// One more start of the pending version in `slot` (this is attempt
    /// `attempt` of `max`).
    Attempt { slot: Slot, attempt: u32, max: u32 },
    /// The pending version in `from` used its attempts: go back to `to`.
    Rollback { from: Slot, to: Slot, reason: String },
}

/// The decision table. `state` and `link` are what the files say; errors
/// reading them are passed in as errors, so refusing is decided here too.
pub fn decide(enabled: bool, state: Result<Option<UpdateState>, UpdateError>, link: Result<Option<Slot>, UpdateError>) -> Decision {
    if !enabled {
        return Decision::Factory { why: "update.enabled is false".into() };
    }
    let state = match state {
        Ok(s) => s,
        Err(e) => return Decision::Refuse { error: e.to_string() },
    };
    let link = match link {
        Ok(l) => l,
        Err(e) => return Decision::Refuse { error: e.to_string() },
    };
    let Some(s) = state else {
        return match link {
            None => Decision::Factory { why: "no update installed".into() },
            Some(_) => Decision::Refuse { error: "the current link exists but there is no update state".into() },
        };
    };
    match (s.current, s.status) {
        (Slot::Factory, Status::Good | Status::RolledBack) => {
            Decision::Factory { why: format!("the update state says the factory runs ({})", s.status.as_str()) }
        }
        (slot, Status::Good | Status::RolledBack) => Decision::Run { slot },
        (from, Status::Pending) if s.attempts >= s.max_attempts => Decision::Rollback {
            from,
            to: s.previous.unwrap_or(Slot::Factory),
            reason: s.last_error.clone().map_or_else(
                || format!("{} starts of {} without becoming healthy", s.attempts, s.version),
                |e| format!("{} starts of {}; last error: {e}", s.attempts, s.version),
            ),
        },
        (Slot::Factory, Status::Pending) => {
            Decision::Refuse { error: "the update state says the factory is pending, which no install writes".into() }
        }
        (slot, Status::Pending) => Decision::Attempt { slot, attempt: s.attempts + 1, max: s.max_attempts },
    }
}

/// What `main` does after [`launch`] (which execs a slot's binary and so
/// does not return when it does).
#[derive(Debug, PartialEq, Eq)]
pub enum Launch {
    /// Serve in this process; `Some(slot)`: as that slot, a slot without its
    /// own binary (`main` then sets `EDGEAI_SLOT` while it has one thread,
    /// so the health gate and the admin API see it as the slot).
    Serve(Option<Slot>),
}

/// Decides and acts. Runs before the store opens, with one thread. Returns
/// only when this process serves; an error means the start must stop (a
/// rollback that could not put the database back, or an exec that failed):
/// systemd's restart tries again.
pub fn launch(settings: &Settings) -> Result<Launch, UpdateError> {
    if let Ok(slot) = std::env::var(SLOT_ENV) {
        // Started from a slot by a launcher: nothing to decide again.
        return Ok(Launch::Serve(Slot::parse_slot(&slot)));
    }
    let u = &settings.update;
    let dir = u.dir.as_path();
    if !u.enabled {
        if std::fs::symlink_metadata(dir.join(slots::CURRENT)).is_ok() {
            tracing::warn!(dir = %dir.display(), "update.enabled is false: the installed binary runs and the slot in current is ignored");
        }
        return Ok(Launch::Serve(None));
    }
    super::install::remove_leftovers(dir);
    let decision = decide(true, state::read(dir), slots::read_current(dir));
    act(settings, dir, decision)
}

fn act(settings: &Settings, dir: &Path, decision: Decision) -> Result<Launch, UpdateError> {
    match decision {
        Decision::Factory { why } => {
            tracing::info!(why = %why, "update: the installed binary serves");
            ensure_link(dir, Slot::Factory);
            Ok(Launch::Serve(None))
        }
        Decision::Refuse { error } => {
            tracing::error!(
                dir = %dir.display(),
                error = %error,
                "update: refusing to guess which version is good; the installed binary serves and the update files are left as they are"
            );
            Ok(Launch::Serve(None))
        }
        Decision::Run { slot } => run_slot(dir, slot),
        Decision::Attempt { slot, attempt, max } => attempt_slot(settings, dir, slot, attempt, max),
        Decision::Rollback { from, to, reason } => {
            rollback(settings, dir, from, to, &reason)?;
            match to {
                Slot::Factory => Ok(Launch::Serve(None)),
                slot => run_slot(dir, slot),
            }
        }
    }
}

/// Runs a good slot: its binary when it has one, else this process as it.
fn run_slot(dir: &Path, slot: Slot) -> Result<Launch, UpdateError> {
    let info = match slots::require_complete(dir, slot) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(slot = slot.as_str(), error = %e, "update: the current slot is not usable; the installed binary serves");
            return Ok(Launch::Serve(None));
        }
    };
    ensure_link(dir, slot);
    tracing::info!(slot = slot.as_str(), version = info.version.as_deref().unwrap_or(""), "update: starting the current slot");
    start(slot, &info)
}

/// One more start of a pending slot: snapshot (first start only), count,
/// fsync, then start it.
fn attempt_slot(settings: &Settings, dir: &Path, slot: Slot, attempt: u32, max: u32) -> Result<Launch, UpdateError> {
    let mut st = match state::read(dir)? {
        Some(s) => s,
        None => return Ok(Launch::Serve(None)),
    };
    let info = match slots::require_complete(dir, slot) {
        Ok(i) => i,
        Err(e) => {
            let reason = format!("the pending slot cannot start: {e}");
            rollback(settings, dir, slot, st.previous.unwrap_or(Slot::Factory), &reason)?;
            return match st.previous.unwrap_or(Slot::Factory) {
                Slot::Factory => Ok(Launch::Serve(None)),
                to => run_slot(dir, to),
            };
        }
    };
    if st.snapshot == Snapshot::None {
        // Before the new version ever runs: what a rollback puts back.
        match snapshot::take(&settings.store.path, dir) {
            Ok(had) => {
                super::kill_point("snapshot");
                st.snapshot = if had { Snapshot::Taken } else { Snapshot::NoStore };
                tracing::info!(
                    store = %settings.store.path.display(),
                    snapshot = %snapshot::snapshot_path(dir).display(),
                    taken = had,
                    "update: store snapshot taken before the pending version's first start"
                );
                state::write(dir, &st)?;
            }
            Err(e) => {
                let reason = format!("could not take the store snapshot before the first start of {}: {e}", st.version);
                rollback(settings, dir, slot, st.previous.unwrap_or(Slot::Factory), &reason)?;
                return match st.previous.unwrap_or(Slot::Factory) {
                    Slot::Factory => Ok(Launch::Serve(None)),
                    to => run_slot(dir, to),
                };
            }
        }
    }
    st.attempts = attempt;
    st.record("attempt", Some(format!("{attempt} of {max}")));
    // Counted and on disk before the new version runs: a crash before its
    // own main still counts.
    state::write(dir, &st)?;
    super::kill_point("attempt");
    ensure_link(dir, slot);
    tracing::warn!(
        slot = slot.as_str(),
        version = %st.version,
        attempt,
        max_attempts = max,
        "update: starting the pending version; it commits itself once healthy, and the start after max_attempts starts without that rolls it back"
    );
    start(slot, &info)
}

/// Rolls the pending version in `from` back to `to`: the store snapshot is
/// restored (the new database kept aside), the state says `rolled-back`
/// with the reason, and `current` points at `to` (or is removed). An error
/// leaves the state pending, so the next start tries again.
fn rollback(settings: &Settings, dir: &Path, from: Slot, to: Slot, reason: &str) -> Result<(), UpdateError> {
    let Some(mut st) = state::read(dir)? else { return Ok(()) };
    let failed = st.version.clone();
    let restored = match st.snapshot {
        Snapshot::None => None,
        Snapshot::Taken => Some(snapshot::restore(&settings.store.path, dir, &failed, true)?),
        Snapshot::NoStore => Some(snapshot::restore(&settings.store.path, dir, &failed, false)?),
    };
    super::kill_point("rollback");
    let factory_version = env!("CARGO_PKG_VERSION").to_owned();
    st.record("rolled-back", Some(format!("to {}: {reason}", to.as_str())));
    let carried = restored.as_ref().and_then(|r| r.carried.as_ref()).map(|c| match c {
        Ok(c) => format!("carried into the restored store: {}", c.summary()),
        Err(e) => format!("nothing carried into the restored store (it stays in the kept database): {e}"),
    });
    if let Some(c) = &carried {
        st.record("carried", Some(c.clone()));
    }
    st.current = to;
    st.previous = None;
    st.status = Status::RolledBack;
    st.version = st.previous_version.take().unwrap_or(factory_version);
    st.failed_version = Some(failed.clone());
    st.last_error = Some(reason.to_owned());
    st.attempts = 0;
    st.snapshot = Snapshot::None;
    st.switched_at = state::now();
    st.committed_at = None;
    state::write(dir, &st)?;
    slots::switch_current(dir, to)?;
    if let Err(e) = snapshot::discard(dir) {
        tracing::warn!(error = %e, "update: the store snapshot could not be removed after the rollback");
    }
    // For the D-Bus Completed signal once this start serves (one thread here:
    // the launcher runs before the runtime and any other thread).
    std::env::set_var(
        super::ROLLED_BACK_ENV,
        format!("rolled back at start from slot {} ({failed}) to {} ({}): {reason}", from.as_str(), to.as_str(), st.version),
    );
    let kept = restored.as_ref().and_then(|r| r.kept.as_ref()).map(|p| p.display().to_string());
    tracing::error!(
        from = from.as_str(),
        to = to.as_str(),
        failed_version = %failed,
        version = %st.version,
        reason,
        store_restored = restored.as_ref().is_some_and(|r| r.restored),
        kept_database = kept.as_deref().unwrap_or(""),
        carried = carried.as_deref().unwrap_or(""),
        "update: rolled back"
    );
    Ok(())
}

/// Puts `current` where the state says (an install or rollback that
/// crashed between writing the state and moving the link); logged.
fn ensure_link(dir: &Path, want: Slot) {
    let now = slots::read_current(dir).ok().flatten().unwrap_or(Slot::Factory);
    if now != want {
        match slots::switch_current(dir, want) {
            Ok(()) => tracing::warn!(was = now.as_str(), now = want.as_str(), "update: current link repaired to match the update state"),
            Err(e) => tracing::error!(error = %e, "update: could not repair the current link"),
        }
    }
}

/// Execs the slot's binary with the same arguments and `EDGEAI_SLOT`, or
/// marks this process as the slot when it has none. The pid stays, so
/// systemd's notify socket, watchdog and sockets carry over.
fn start(slot: Slot, info: &SlotInfo) -> Result<Launch, UpdateError> {
    match &info.binary {
        Some(bin) => {
            let mut cmd = std::process::Command::new(bin);
            cmd.args(std::env::args_os().skip(1)).env(SLOT_ENV, slot.as_str());
            // The slot's binary restarts in place through this one (crate::reexec).
            if let Ok(installed) = crate::reexec::installed_binary() {
                cmd.env(crate::reexec::INSTALLED_ENV, installed);
            }
            let err = cmd.exec();
            Err(UpdateError::Exec { slot: slot.as_str(), path: bin.clone(), source: err })
        }
        None => {
            // `main` marks the process as the slot (`EDGEAI_SLOT`), see [`Launch::Serve`].
            tracing::info!(slot = slot.as_str(), "update: the slot has no bin/edgeaid; the installed binary serves it");
            Ok(Launch::Serve(Some(slot)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    fn pending(attempts: u32, max: u32, previous: Slot) -> UpdateState {
        let mut s = UpdateState::pending(Slot::B, "1.2.0", previous, Some("1.1.0"), max);
        s.attempts = attempts;
        s
    }

    #[test]
    fn the_decision_table() {
        let corrupt = || Err(UpdateError::StateCorrupt { path: "/x/update-state.json".into(), reason: "eof".into() });
        let good = |slot| {
            let mut s = pending(0, 3, Slot::A);
            s.current = slot;
            s.status = Status::Good;
            s
        };
        // Off: always the factory, whatever the files say.
        assert!(matches!(decide(false, Ok(Some(pending(5, 3, Slot::A))), Ok(Some(Slot::B))), Decision::Factory { .. }));
        // Nothing installed.
        assert!(matches!(decide(true, Ok(None), Ok(None)), Decision::Factory { .. }));
        // A link without a state, a corrupt state, a foreign link: refuse to guess.
        assert!(matches!(decide(true, Ok(None), Ok(Some(Slot::A))), Decision::Refuse { .. }));
        match decide(true, corrupt(), Ok(Some(Slot::B))) {
            Decision::Refuse { error } => assert!(error.contains("/x/update-state.json"), "{error}"),
            d => panic!("{d:?}"),
        }
        let bad_link = Err(UpdateError::BadLink { link: "/x/current".into(), target: "/usr".into() });
        assert!(matches!(decide(true, Ok(Some(good(Slot::A))), bad_link), Decision::Refuse { .. }));
        // Good and rolled-back run the slot the state names (the link follows the state).
        assert_eq!(decide(true, Ok(Some(good(Slot::A))), Ok(Some(Slot::A))), Decision::Run { slot: Slot::A });
        assert_eq!(decide(true, Ok(Some(good(Slot::B))), Ok(None)), Decision::Run { slot: Slot::B });
        let mut rb = good(Slot::A);
        rb.status = Status::RolledBack;
        assert_eq!(decide(true, Ok(Some(rb)), Ok(Some(Slot::A))), Decision::Run { slot: Slot::A });
        assert!(matches!(decide(true, Ok(Some(good(Slot::Factory))), Ok(None)), Decision::Factory { .. }));
        // Pending: attempts 1..=max, then the rollback to the previous slot (or the factory).
        assert_eq!(
            decide(true, Ok(Some(pending(0, 3, Slot::A))), Ok(Some(Slot::B))),
            Decision::Attempt { slot: Slot::B, attempt: 1, max: 3 }
        );
        assert_eq!(
            decide(true, Ok(Some(pending(2, 3, Slot::A))), Ok(Some(Slot::B))),
            Decision::Attempt { slot: Slot::B, attempt: 3, max: 3 }
        );
        match decide(true, Ok(Some(pending(3, 3, Slot::A))), Ok(Some(Slot::B))) {
            Decision::Rollback { from, to, reason } => {
                assert_eq!((from, to), (Slot::B, Slot::A));
                assert_eq!(reason, "3 starts of 1.2.0 without becoming healthy");
            }
            d => panic!("{d:?}"),
        }
        let mut failed_gate = pending(1, 1, Slot::Factory);
        failed_gate.last_error = Some("self-test failed".into());
        match decide(true, Ok(Some(failed_gate)), Ok(Some(Slot::B))) {
            Decision::Rollback { to, reason, .. } => {
                assert_eq!(to, Slot::Factory);
                assert!(reason.contains("self-test failed"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        let mut no_prev = pending(3, 3, Slot::A);
        no_prev.previous = None;
        assert!(matches!(decide(true, Ok(Some(no_prev)), Ok(Some(Slot::B))), Decision::Rollback { to: Slot::Factory, .. }));
    }

    /// Settings whose store and update dir are in `dir`.
    fn settings(dir: &Path) -> Settings {
        let mut s = Settings::default();
        s.store.path = dir.join("edgeai.db");
        s.update.enabled = true;
        s.update.dir = dir.to_path_buf();
        s
    }

    fn slot(dir: &Path, slot: Slot, version: &str) {
        let d = slots::slot_dir(dir, slot).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(slots::MANIFEST), format!("{{\"version\": \"{version}\"}}")).unwrap();
    }

    #[test]
    fn pending_starts_count_then_roll_back_restoring_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let s = settings(d);
        let db = rusqlite::Connection::open(&s.store.path).unwrap();
        db.execute_batch("CREATE TABLE m(x TEXT); INSERT INTO m VALUES ('before');").unwrap();
        drop(db);
        slot(d, Slot::A, "1.1.0");
        slot(d, Slot::B, "1.2.0");
        state::write(d, &pending(0, 2, Slot::A)).unwrap();
        slots::switch_current(d, Slot::B).unwrap();
        // Slots without bin/edgeaid are served in-process, so launching does not exec here.
        for n in 1..=2 {
            assert_eq!(act(&s, d, decide(true, state::read(d), slots::read_current(d))).unwrap(), Launch::Serve(Some(Slot::B)));
            let st = state::read(d).unwrap().unwrap();
            assert_eq!((st.attempts, st.status, st.snapshot), (n, Status::Pending, Snapshot::Taken));
            // The pending version writes to the store.
            rusqlite::Connection::open(&s.store.path).unwrap().execute("INSERT INTO m VALUES (?1)", [format!("attempt {n}")]).unwrap();
        }
        assert!(snapshot::snapshot_path(d).exists());
        assert_eq!(act(&s, d, decide(true, state::read(d), slots::read_current(d))).unwrap(), Launch::Serve(Some(Slot::A)));
        let st = state::read(d).unwrap().unwrap();
        assert_eq!((st.current, st.status, st.previous), (Slot::A, Status::RolledBack, None));
        assert_eq!((st.version.as_str(), st.failed_version.as_deref()), ("1.1.0", Some("1.2.0")));
        assert_eq!(st.last_error.as_deref(), Some("2 starts of 1.2.0 without becoming healthy"));
        assert_eq!(slots::read_current(d).unwrap(), Some(Slot::A));
        assert!(!snapshot::snapshot_path(d).exists());
        let live: Vec<String> = rusqlite::Connection::open(&s.store.path)
            .unwrap()
            .prepare("SELECT x FROM m")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(live, vec!["before"]);
        let kept: Vec<String> = rusqlite::Connection::open(d.join("update/rolled-back-1.2.0.db"))
            .unwrap()
            .prepare("SELECT x FROM m")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kept, vec!["before", "attempt 1", "attempt 2"]);
        // Starts of the rolled-back-to (good) slot never count.
        for _ in 0..3 {
            assert_eq!(act(&s, d, decide(true, state::read(d), slots::read_current(d))).unwrap(), Launch::Serve(Some(Slot::A)));
        }
        assert_eq!(state::read(d).unwrap().unwrap().attempts, 0);
    }

    #[test]
    fn an_incomplete_pending_slot_rolls_back_at_once_and_a_link_is_repaired() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let s = settings(d);
        std::fs::create_dir_all(d.join("slots/b")).unwrap();
        state::write(d, &pending(0, 3, Slot::Factory)).unwrap();
        // The link was never moved (a crash between the state and the link).
        assert_eq!(act(&s, d, decide(true, state::read(d), slots::read_current(d))).unwrap(), Launch::Serve(None));
        let st = state::read(d).unwrap().unwrap();
        assert_eq!((st.current, st.status), (Slot::Factory, Status::RolledBack));
        assert!(st.last_error.unwrap().contains("slot b is not complete"));
        // A good slot whose link is missing gets it back.
        slot(d, Slot::A, "2.0");
        let mut good = pending(0, 3, Slot::Factory);
        good.current = Slot::A;
        good.status = Status::Good;
        state::write(d, &good).unwrap();
        assert_eq!(act(&s, d, decide(true, state::read(d), slots::read_current(d))).unwrap(), Launch::Serve(Some(Slot::A)));
        assert_eq!(slots::read_current(d).unwrap(), Some(Slot::A));
    }
}
