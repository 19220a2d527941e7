//! Life under systemd: sd_notify readiness, status text, the watchdog, and
//! the signals that stop or reload the daemon. The watchdog pings only while
//! the event loop, the store's writer and the inference thread all show
//! progress, so a hung daemon is killed and restarted by systemd.
//! Owns no server or store logic; it only probes them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};

use crate::model::ModelRuntime;
use crate::store::Store;

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
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unhealthy::EventLoopLag(d) => write!(f, "event loop lagged {} ms", d.as_millis()),
            Unhealthy::StoreWriter(e) => write!(f, "store writer not answering: {e}"),
            Unhealthy::InferenceStalled => write!(f, "inference thread shows no progress"),
        }
    }
}

/// The health task: every `period` (half of WATCHDOG_USEC) it probes the
/// event loop, the store writer and the inference thread, and pings the
/// watchdog only if all are well. Runs until the process ends.
pub async fn watchdog_task(notifier: Notifier, timeout: Duration, store: Store, model: Arc<ModelRuntime>) {
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
        let verdict = probe(lag, period, &store, &model, max_age).await;
        match verdict {
            Ok(()) => {
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
    match tokio::time::timeout(period / 2, store.ping_writer()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Unhealthy::StoreWriter(e.to_string())),
        Err(_) => return Err(Unhealthy::StoreWriter("timed out".into())),
    }
    if !model.inference_healthy(max_age) {
        return Err(Unhealthy::InferenceStalled);
    }
    Ok(())
}
