//! On-device updates, daemon side: A/B slots under `update.dir`, the
//! launcher that picks what runs before the store opens, attempts of a
//! pending version, the health-gated commit and automatic rollback.
//! docs/update.md describes the layout, the state machine and the systemd
//! interplay; this module implements them.
//!
//! - [`state`]: `update-state.json` (format, atomic writes).
//! - [`slots`]: `slots/a|b`, their `manifest.json`, the `current` link.
//! - [`snapshot`]: the store snapshot before a pending version's first
//!   start and its restore on rollback.
//! - [`launch`]: the decision at start (run a slot, count an attempt, roll
//!   back) and the exec into a slot's binary.
//! - [`gate`]: the pending slot's health gate and commit.
//! - [`download`]: a bundle from an http(s) URL, resumed with `Range`.
//! - [`install`]: a signed bundle into the slot that does not run, made
//!   the pending `current`.
//! - [`ops`]: status, mark-good, mark-bad and rollback for the operator
//!   (admin API), through the same functions.
//!
//! Owns everything under `update.dir` that is not the store. Must not: open
//! the store through `crate::store` (the launcher runs before it opens and
//! touches the database file only with plain SQLite), know HTTP or D-Bus, or
//! parse bundles (common's `bundle` module and the install step do).

pub mod carry;
pub mod download;
pub mod gate;
pub mod install;
pub mod launch;
pub mod ops;
pub mod slots;
pub mod snapshot;
pub mod state;

use std::path::PathBuf;

pub use launch::{launch, Launch};
pub use ops::Updates;
pub use state::{Slot, Status, UpdateState};

/// The environment variable that tells a process it runs from a slot (`a`
/// or `b`): set by the launcher when it execs a slot's binary (or serves a
/// slot in-process); a process that has it never launches again.
pub const SLOT_ENV: &str = "EDGEAI_SLOT";

/// The slot this process runs from, when the launcher started it from one.
/// Set by the launcher's rollback for the rest of this start (carried
/// over the exec into a slot's binary): what was rolled back and why. The
/// D-Bus interface announces it once serving (a `Completed` signal of
/// `Rollback`), as nothing could while the launcher ran.
pub const ROLLED_BACK_ENV: &str = "EDGEAI_ROLLED_BACK";

/// The launcher's rollback of this start ([`ROLLED_BACK_ENV`]), if one happened.
pub fn rolled_back_at_start() -> Option<String> {
    std::env::var(ROLLED_BACK_ENV).ok().filter(|s| !s.is_empty())
}

pub fn running_slot() -> Option<Slot> {
    std::env::var(SLOT_ENV).ok().and_then(|s| Slot::parse_slot(&s))
}

/// Everything that can go wrong with slots, the state file and snapshots.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("updates are disabled (update.enabled = false): no slots are used")]
    Disabled,
    #[error("the update state {} is corrupt: {reason}; it is left as it is (fix or remove it; until then the installed binary runs)", path.display())]
    StateCorrupt { path: PathBuf, reason: String },
    #[error("the update state {} has format {found}, this edgeaid reads format {}; it is left as it is", path.display(), state::FORMAT)]
    StateFormat { path: PathBuf, found: u64 },
    #[error("the link {} points at {}, which is neither slots/a nor slots/b", link.display(), target.display())]
    BadLink { link: PathBuf, target: PathBuf },
    #[error("{} exists but there is no update state: refusing to guess whether the slot is good", link.display())]
    LinkWithoutState { link: PathBuf },
    #[error("slot {slot} is not complete: {reason}")]
    SlotIncomplete { slot: &'static str, reason: String },
    #[error("nothing to roll back to: {0}")]
    NothingToRollBack(String),
    #[error("{0}")]
    NotPending(String),
    #[error("the store snapshot {} is missing: the pending version's database cannot be undone", path.display())]
    SnapshotMissing { path: PathBuf },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}", path.display())]
    Sqlite {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("starting slot {slot}'s binary {}", path.display())]
    Exec {
        slot: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the update task failed: {0}")]
    Task(String),
    #[error("an update is pending: {0}")]
    Pending(String),
    #[error("the bundle is not signed by a key in update.trust_dir: {0}")]
    Untrusted(String),
    #[error("the bundle is not for this device or version: {0}")]
    Policy(String),
    #[error("the bundle is refused: {0}")]
    Bundle(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("not enough free space in {}: the install needs {needed} bytes (payloads, the store snapshot and a margin), {available} are free", dir.display())]
    NoSpace { dir: PathBuf, needed: u64, available: u64 },
    #[error("the bundle is larger than update.max_bundle_bytes ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("cannot download from {0}")]
    BadUrl(String),
    #[error("the download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("{0}")]
    Busy(String),
}

/// Test builds only: `update-kill=return(STEP)` kills this process with
/// SIGKILL when it reaches STEP (kill -9 there: no destructor, no flush, no
/// reply), so the tests can show that every step recovers at the next
/// start. The steps, in the order an update meets them: `receive` (a
/// bundle partly received), `unpack` (a slot partly written), `installed`
/// (the slot complete, the state not yet pending), `state-written` (pending,
/// the link not moved), `switched` (the link moved, before the reply and the
/// exit 75), `snapshot` (the launcher took the store snapshot, not yet
/// recorded), `attempt` (the attempt counted, before the exec), `migrate`
/// (a slot's process applied a store migration, not committed), `gate` (the
/// self-test passed, before the commit) and `rollback` (the store restored,
/// the state still pending).
pub fn kill_point(step: &str) {
    fail::fail_point!("update-kill", |arg: Option<String>| {
        if arg.as_deref() == Some(step) {
            eprintln!("edgeaid: failpoint update-kill: SIGKILL at step {step}");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = step;
}

/// `kill_point` for a step that has just handed bytes to a tokio file:
/// tokio writes on its blocking pool after `write_all` returns, so a test
/// build flushes first, or the SIGKILL could land before the bytes do and
/// the test would see an empty file. Release builds do nothing here.
pub async fn kill_point_flushed(step: &str, file: &mut tokio::fs::File) {
    #[cfg(feature = "failpoints")]
    {
        use tokio::io::AsyncWriteExt;
        let _ = file.flush().await;
        kill_point(step);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (step, file);
}

/// Test builds only: a start from a slot (`EDGEAI_SLOT` set) dies at once
/// when the fail point `update-slot-crash` is on, as a broken new binary
/// would (SIGABRT). The installed binary (no `EDGEAI_SLOT`) ignores it, so
/// the same FAILPOINTS survive the exec and the rollback.
pub fn crash_point() {
    if running_slot().is_some() {
        fail::fail_point!("update-slot-crash", |_| {
            eprintln!("edgeaid: failpoint update-slot-crash: aborting at start from slot {:?}", std::env::var(SLOT_ENV));
            std::process::abort()
        });
    }
}
