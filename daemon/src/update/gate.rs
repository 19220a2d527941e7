//! The health gate of a pending version, run by the slot itself (after
//! READY): the model loaded (or is disabled by configuration), a self-test
//! generation through the real model runtime succeeded, a retrieval over
//! the knowledge datasets (by words and by vectors, through the loaded
//! embedding model) succeeded, and the daemon
//! stayed up `update.commit_after_secs` since it started. Then it commits:
//! status `good`, `committed_at`, the store snapshot removed (the previous
//! slot stays for a manual rollback). A failed gate records `last_error`
//! and stops the daemon with exit status 1 ([`gate_failed`]), so the next
//! start counts another attempt.
//!
//! Owns the gate's steps and the commit. Must not: write the store or
//! change slots; it only reads the model runtime's state, submits one
//! short generation like any request and runs one retrieval that counts no
//! hits (`Knowledge::self_test`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{self, Slot, Snapshot, Status};
use super::{snapshot, UpdateError};
use crate::config::UpdateSettings;
use crate::model::{CancelFlag, ChatMessage, GenEvent, LocalModel, ModelRuntime, SamplingParams};
use crate::supervise::Notifier;
use crate::telemetry::metrics::Metrics;

/// Exit status of a daemon whose health gate failed (restarted by systemd's
/// Restart=on-failure; the next start is another attempt).
pub const EXIT_GATE_FAILED: u8 = 1;

/// Tokens the self-test generates.
const SELF_TEST_TOKENS: u32 = 4;
/// How long the self-test generation may take.
const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the gate looks at the model's state.
const POLL: Duration = Duration::from_millis(200);

static GATE_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether this process stopped because its health gate failed: `main`
/// then exits with [`EXIT_GATE_FAILED`].
pub fn gate_failed() -> bool {
    GATE_FAILED.load(Ordering::SeqCst)
}

/// What the gate runs against.
pub struct Gate {
    pub settings: UpdateSettings,
    pub runtime: Arc<ModelRuntime>,
    /// The knowledge service, for the retrieval self-test.
    pub knowledge: Arc<crate::service::knowledge::Knowledge>,
    pub notifier: Notifier,
    pub metrics: Arc<Metrics>,
    /// When the process started (the commit waits `commit_after` from here).
    pub started: Instant,
}

impl Gate {
    /// Starts the gate when this process is the pending slot; `None` otherwise.
    pub fn spawn(self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.settings.enabled {
            return None;
        }
        let st = match state::read(&self.settings.dir) {
            Ok(Some(st)) => st,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "update: cannot read the update state; no health gate runs");
                return None;
            }
        };
        let running = super::running_slot();
        self.metrics.update_info(running.unwrap_or(Slot::Factory).as_str(), st.status.as_str(), &st.version);
        let slot = running?;
        if st.status != Status::Pending || st.current != slot {
            return None;
        }
        let status = format!(
            "update {} pending (start {} of {}): health gate, commits after {}s healthy",
            st.version,
            st.attempts,
            st.max_attempts,
            self.settings.commit_after.as_secs()
        );
        self.notifier.status(&status);
        tracing::info!(slot = slot.as_str(), version = %st.version, attempt = st.attempts, max_attempts = st.max_attempts, "update: health gate started");
        Some(tokio::spawn(async move {
            let version = st.version.clone();
            match self.check().await {
                Ok(self_test) => self.commit(slot, &version, self_test).await,
                Err(reason) => self.fail(slot, &version, &reason).await,
            }
        }))
    }

    /// The gate's conditions; the self-test's summary, or why it failed.
    async fn check(&self) -> Result<String, String> {
        let model = loop {
            let st = self.runtime.status();
            match st.state {
                "ready" => break Some(self.runtime.ready().map_err(|e| format!("the model is not ready: {e}"))?),
                "disabled" => break None,
                "loading" => tokio::time::sleep(POLL).await,
                other => return Err(format!("the model is {other}: {}", st.error.unwrap_or_default())),
            }
        };
        fail::fail_point!("update-gate-fail", |_| Err("self-test failed (failpoint update-gate-fail)".to_owned()));
        hang_point();
        let summary = match model {
            Some(m) => match tokio::time::timeout(SELF_TEST_TIMEOUT, self_test(m)).await {
                Ok(Ok(tokens)) => format!("self-test generated {tokens} tokens"),
                Ok(Err(e)) => return Err(format!("self-test generation failed: {e}")),
                Err(_) => return Err(format!("self-test generation took longer than {}s", SELF_TEST_TIMEOUT.as_secs())),
            },
            None => "no self-test: model.enabled is false".to_owned(),
        };
        let retrieval = match tokio::time::timeout(SELF_TEST_TIMEOUT, self.knowledge.self_test()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("self-test retrieval failed: {e}")),
            Err(_) => return Err(format!("self-test retrieval took longer than {}s", SELF_TEST_TIMEOUT.as_secs())),
        };
        let summary = format!("{summary}; {retrieval}");
        tracing::info!(summary = %summary, "update: health gate self-test passed");
        super::kill_point("gate");
        let commit_at = self.started + self.settings.commit_after;
        tokio::time::sleep_until(commit_at.into()).await;
        match self.runtime.status().state {
            "ready" | "disabled" => Ok(summary),
            other => Err(format!("the model is {other} when the update should commit")),
        }
    }

    async fn commit(&self, slot: Slot, version: &str, summary: String) {
        let dir = self.settings.dir.clone();
        let v = version.to_owned();
        let done = tokio::task::spawn_blocking(move || commit(&dir, slot, &v, &summary))
            .await
            .unwrap_or_else(|e| Err(UpdateError::Task(e.to_string())));
        match done {
            Ok(true) => {
                tracing::info!(slot = slot.as_str(), version, "update: committed; the version is good");
                self.metrics.update_info(slot.as_str(), Status::Good.as_str(), version);
                self.notifier.status(&format!("update {version} committed (good)"));
            }
            Ok(false) => tracing::info!(slot = slot.as_str(), version, "update: nothing to commit (the state changed meanwhile)"),
            Err(e) => tracing::error!(error = %e, "update: the commit could not be written; the next start counts another attempt"),
        }
    }

    async fn fail(&self, slot: Slot, version: &str, reason: &str) {
        let dir = self.settings.dir.clone();
        let r = reason.to_owned();
        let v = version.to_owned();
        let recorded = tokio::task::spawn_blocking(move || record_failure(&dir, slot, &v, &r))
            .await
            .unwrap_or_else(|e| Err(UpdateError::Task(e.to_string())));
        if let Err(e) = recorded {
            tracing::error!(error = %e, "update: the failed health gate could not be recorded");
        }
        tracing::error!(
            slot = slot.as_str(),
            version,
            reason,
            "update: health gate failed; stopping (exit 1) so the next start counts another attempt"
        );
        self.notifier.status(&format!("update {version} failed its health gate: {reason}"));
        GATE_FAILED.store(true, Ordering::SeqCst);
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM) {
            tracing::error!(error = %e, "update: cannot signal the daemon to stop");
        }
    }
}

/// A few greedy tokens through the real runtime, as a request would.
/// Test builds only: `update-gate-hang=return` makes the pending version
/// hang after READY, as a broken one would: it turns `inference-hang` on,
/// so the self-test's generation stops the inference thread and with it
/// the watchdog pings. The installed binary runs no gate, so the same
/// FAILPOINTS leave it healthy after the rollback.
fn hang_point() {
    fail::fail_point!("update-gate-hang", |_| {
        tracing::warn!("failpoint update-gate-hang: the self-test's generation hangs the inference thread");
        if let Err(e) = fail::cfg("inference-hang", "return") {
            tracing::error!(error = %e, "failpoint update-gate-hang: could not turn inference-hang on");
        }
    });
}

async fn self_test(model: Arc<LocalModel>) -> Result<u32, String> {
    let m = Arc::clone(&model);
    let prompt = tokio::task::spawn_blocking(move || m.prompt(&[ChatMessage::user("Reply with the word OK.")]).map_err(|e| e.to_string()))
        .await
        .map_err(|e| format!("prompt task: {e}"))??;
    let params = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        max_tokens: SELF_TEST_TOKENS,
        seed: Some(0),
        stop: Vec::new(),
        grammar: None,
    };
    let cancel = CancelFlag::default();
    let admission = model.admit("update-self-test").map_err(|e| e.to_string())?;
    let mut events = model.submit(admission, prompt, params, cancel.clone()).map_err(|e| e.to_string())?;
    while let Some(ev) = events.recv().await {
        match ev {
            GenEvent::Started { .. } | GenEvent::Text(_) => {}
            GenEvent::Done { completion_tokens, .. } if completion_tokens > 0 => return Ok(completion_tokens),
            GenEvent::Done { .. } => return Err("the model generated no token".into()),
            GenEvent::Failed(e) => return Err(e),
        }
    }
    cancel.cancel();
    Err("the inference thread ended the request without an answer".into())
}

/// Marks the pending `version` in `slot` good; `Ok(false)` when the state
/// is no longer that (an operator marked it meanwhile).
pub fn commit(dir: &std::path::Path, slot: Slot, version: &str, summary: &str) -> Result<bool, UpdateError> {
    let _lock = state::lock();
    let Some(mut st) = state::read(dir)? else { return Ok(false) };
    if st.status != Status::Pending || st.current != slot || st.version != version {
        return Ok(false);
    }
    st.status = Status::Good;
    st.committed_at = Some(state::now());
    st.snapshot = Snapshot::None;
    st.last_error = None;
    st.record("committed", Some(summary.to_owned()));
    state::write(dir, &st)?;
    snapshot::discard(dir)?;
    Ok(true)
}

/// Records a failed gate in the state (`last_error`, history); the status
/// stays pending and the attempt stays counted.
pub fn record_failure(dir: &std::path::Path, slot: Slot, version: &str, reason: &str) -> Result<(), UpdateError> {
    let _lock = state::lock();
    let Some(mut st) = state::read(dir)? else { return Ok(()) };
    if st.status != Status::Pending || st.current != slot || st.version != version {
        return Ok(());
    }
    st.last_error = Some(reason.to_owned());
    st.record("gate-failed", Some(reason.to_owned()));
    state::write(dir, &st)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn commit_marks_good_once_and_only_the_pending_version() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let mut st = state::UpdateState::pending(Slot::B, "1.2.0", Slot::A, Some("1.1.0"), 3);
        st.attempts = 1;
        st.snapshot = Snapshot::Taken;
        state::write(d, &st).unwrap();
        std::fs::create_dir_all(d.join("update")).unwrap();
        std::fs::write(snapshot::snapshot_path(d), b"db").unwrap();
        record_failure(d, Slot::B, "1.2.0", "self-test failed").unwrap();
        assert_eq!(state::read(d).unwrap().unwrap().last_error.as_deref(), Some("self-test failed"));
        assert!(!commit(d, Slot::A, "1.2.0", "x").unwrap(), "another slot does not commit");
        assert!(!commit(d, Slot::B, "1.3.0", "x").unwrap(), "another version does not commit");
        assert!(commit(d, Slot::B, "1.2.0", "self-test generated 4 tokens").unwrap());
        let after = state::read(d).unwrap().unwrap();
        assert_eq!((after.status, after.attempts, after.previous, after.last_error), (Status::Good, 1, Some(Slot::A), None));
        assert!(after.committed_at.is_some());
        assert!(!snapshot::snapshot_path(d).exists());
        assert!(!commit(d, Slot::B, "1.2.0", "x").unwrap(), "a good version commits once");
    }
}
