//! Life under systemd: sd_notify readiness, status text, the watchdog, and
//! the signals that stop or reload the daemon. The watchdog pings only while
//! the event loop, the store's writer and the inference thread all show
//! progress, so a hung daemon is killed and restarted by systemd.
//! Owns no server or store logic; it only probes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};

use crate::model::{ModelRuntime, RuntimeStatus};
use crate::store::{Store, StoreError};

/// Talks to systemd's notify socket; a no-op when not started by systemd.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Self {
        Notifier { enabled: std::env::var_os("NOTIFY_SOCKET").is_some() }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        // A lost notification is logged, never fatal (systemd may be gone
        // during shutdown, or the socket may be full for a moment).
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }
    /// Before a restart in place ([`crate::reexec`]): `RELOADING=1` until
    /// the new image's `READY=1`.
    pub fn restarting_in_place(&self, status: &str) {
        let mut states = vec![NotifyState::Reloading, NotifyState::Status(status)];
        states.extend(NotifyState::monotonic_usec_now().ok());
        self.send(&states);
    }
    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading, NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading"))]);
    }
}

/// WATCHDOG_USEC for this process, if systemd asked for pings.
pub fn watchdog_timeout() -> Option<Duration> {
    let mut usec = 0u64;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec)).filter(|d| !d.is_zero())
}

/// Why the daemon is asked to do something by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    Stop(&'static str),
    Reload,
}

/// Waits for the next SIGTERM, SIGINT or SIGHUP.
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())?, hup: signal(SignalKind::hangup())? })
    }

    pub async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.term.recv() => SignalEvent::Stop("SIGTERM"),
            _ = self.int.recv() => SignalEvent::Stop("SIGINT"),
            _ = self.hup.recv() => SignalEvent::Reload,
        }
    }
}

/// What the health task found wrong, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    EventLoopLag(Duration),
    StoreWriter(String),
    InferenceStalled,
    /// The embedding model's thread has shown no progress.
    EmbedderStalled,
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::EventLoopLag(d) => write!(f, "event loop lagged {} ms", d.as_millis()),
            Unhealthy::StoreWriter(e) => write!(f, "store writer not answering: {e}"),
            Unhealthy::InferenceStalled => write!(f, "inference thread shows no progress"),
            Unhealthy::EmbedderStalled => write!(f, "embedding thread shows no progress"),
        }
    }
}

/// The health task: every `period` (half of WATCHDOG_USEC) it probes the
/// event loop, the store writer, the inference thread and the embedding
/// thread (`embedder_age`: the age of its last sign of progress, `None`
/// without one), and pings the watchdog only if all are well. Runs until
/// the process ends.
pub async fn watchdog_task(
    notifier: Notifier,
    timeout: Duration,
    store: Store,
    model: Arc<ModelRuntime>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    embedder_age: impl Fn() -> Option<Duration> + Send + 'static,
) {
    let period = timeout / 2;
    // Progress older than this means stuck; leaves room for one long decode.
    let max_age = (timeout * 3 / 4).max(Duration::from_millis(500));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut was_healthy = true;
    tracing::info!(timeout_ms = timeout.as_millis() as u64, period_ms = period.as_millis() as u64, "watchdog enabled");
    loop {
        tick.tick().await;
        let lag = last.elapsed().saturating_sub(period);
        last = Instant::now();
        let verdict = match probe(lag, period, &store, &model, max_age).await {
            Ok(()) if embedder_age().is_some_and(|age| age > max_age) => Err(Unhealthy::EmbedderStalled),
            other => other,
        };
        match verdict {
            Ok(()) => {
                // Counted first, so a scrape never shows fewer than systemd got.
                metrics.watchdog_ping();
                notifier.watchdog();
                if !was_healthy {
                    tracing::info!("healthy again; watchdog pings resumed");
                    was_healthy = true;
                }
            }
            Err(why) => {
                if was_healthy {
                    tracing::error!(reason = %why, "unhealthy: withholding watchdog pings");
                    notifier.status(&format!("unhealthy: {why}"));
                    was_healthy = false;
                }
            }
        }
    }
}

async fn probe(lag: Duration, period: Duration, store: &Store, model: &ModelRuntime, max_age: Duration) -> Result<(), Unhealthy> {
    if lag > period {
        return Err(Unhealthy::EventLoopLag(lag));
    }
    probe_writer(store, period / 2, max_age).await?;
    if !model.inference_healthy(max_age) {
        return Err(Unhealthy::InferenceStalled);
    }
    Ok(())
}

/// The store writer is alive when it has nothing queued and answers a round
/// trip, or when it has made progress within `max_age`. A full queue under
/// heavy writes is busy, not dead.
async fn probe_writer(store: &Store, wait: Duration, max_age: Duration) -> Result<(), Unhealthy> {
    let judge_by_progress = |what: &str| {
        let p = store.writer_progress();
        if p.since_progress <= max_age {
            Ok(())
        } else {
            Err(Unhealthy::StoreWriter(format!(
                "{what}; no progress for {} ms with {} writes queued",
                p.since_progress.as_millis(),
                p.queued
            )))
        }
    };
    let p = store.writer_progress();
    if !p.thread_alive {
        return Err(Unhealthy::StoreWriter("the writer thread has stopped".into()));
    }
    if p.queued > 0 {
        return judge_by_progress("busy");
    }
    match tokio::time::timeout(wait, store.ping_writer()).await {
        Ok(Ok(())) => Ok(()),
        // A burst filled the queue between the two looks: judge by progress.
        Ok(Err(StoreError::Busy)) => judge_by_progress("queue full"),
        Ok(Err(e)) => Err(Unhealthy::StoreWriter(crate::telemetry::chain(&e))),
        Err(_) => judge_by_progress("round trip timed out"),
    }
}

/// The STATUS= line for the model's state, so every notification that
/// changes the status (READY after a reload too) tells the same truth.
pub fn status_text(model: &RuntimeStatus) -> String {
    match (model.state, &model.error) {
        (_, Some(e)) => format!("serving without a model: {e}"),
        ("disabled", None) => "serving without a model (model.enabled = false)".into(),
        ("loading", None) => "serving; loading the model".into(),
        ("unloading", None) => "serving; unloading the model (an operator asked)".into(),
        ("unloaded", None) => "serving without a model: unloaded by an operator (LoadModel or edgeaictl models load brings it back)".into(),
        _ => "serving; model loaded".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn store(queue: usize) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions { write_queue: queue, ..StoreOptions::default() };
        let (s, _) = Store::open_with(&dir.path().join("s.db"), opts).expect("open");
        (s, dir)
    }

    #[tokio::test]
    async fn an_idle_writer_answers_the_round_trip() {
        let (s, _dir) = store(4);
        assert_eq!(probe_writer(&s, Duration::from_secs(2), Duration::from_secs(1)).await, Ok(()));
    }

    #[tokio::test]
    async fn a_full_queue_that_makes_progress_is_healthy() {
        let (s, _dir) = store(2);
        // Keep the writer busy with a steady stream of short writes that fill
        // its queue: every submission beyond two is refused as Busy.
        let mut refused = 0;
        for _ in 0..6 {
            if s.occupy_writer(Duration::from_millis(150)).is_err() {
                refused += 1;
            }
        }
        assert!(refused > 0, "the queue was never full: the test does not test the busy case");
        for _ in 0..4 {
            assert_eq!(probe_writer(&s, Duration::from_millis(50), Duration::from_secs(1)).await, Ok(()));
            let _ = s.occupy_writer(Duration::from_millis(150));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn a_writer_stuck_in_one_write_is_unhealthy() {
        let (s, _dir) = store(2);
        s.occupy_writer(Duration::from_millis(1500)).expect("queued");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let verdict = probe_writer(&s, Duration::from_millis(50), Duration::from_millis(200)).await;
        assert!(matches!(&verdict, Err(Unhealthy::StoreWriter(m)) if m.contains("no progress")), "{verdict:?}");
    }

    #[test]
    fn the_status_line_follows_the_model_state() {
        let st = |state, error: Option<&str>| RuntimeStatus { state, error: error.map(str::to_owned) };
        assert_eq!(status_text(&st("loading", None)), "serving; loading the model");
        assert_eq!(status_text(&st("ready", None)), "serving; model loaded");
        assert_eq!(status_text(&st("failed", Some("bad magic"))), "serving without a model: bad magic");
        assert!(status_text(&st("disabled", None)).contains("model.enabled = false"));
        assert!(status_text(&st("unloaded", None)).starts_with("serving without a model: unloaded by an operator"));
    }
}
