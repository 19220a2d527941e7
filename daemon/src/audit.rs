//! The audit trail: every admin action (admin API on the unix socket, D-Bus
//! methods that change something or let data out) and every request or call
//! refused for its credentials, as a journal entry with `F_AUDIT` and other
//! fields and as a row in the store's `audit_log` (schema v6).
//!
//! Owns: what an entry says (channel, actor, action, outcome, detail; never
//! a secret), the per-minute bound on recorded refusals (a flood of bad keys
//! must not fill the disk: the rest are counted and summed up in the next
//! recorded one), and the `edgeai_audit_entries_total` counter.
//! Must not touch: deciding who is refused (the API and D-Bus layers do) or
//! the table's SQL (`store::audit`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::AuditSettings;
use crate::store::{AuditEntry, AuditKind, Store};
use crate::telemetry::metrics::Metrics;

/// How long the refusal bound's window is.
const WINDOW: Duration = Duration::from_secs(60);

/// Where an audited request or call came in, and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// "tcp", "unix" or "dbus".
    pub channel: &'static str,
    /// "10.0.0.5", "uid=0 gid=0 pid=42", "uid=1000 sender=:1.7".
    pub who: String,
}

impl Actor {
    pub fn tcp(ip: std::net::IpAddr) -> Actor {
        Actor { channel: "tcp", who: ip.to_string() }
    }

    pub fn unix(uid: u32, gid: u32, pid: i32) -> Actor {
        Actor { channel: "unix", who: format!("uid={uid} gid={gid} pid={pid}") }
    }

    pub fn dbus(uid: Option<u32>, sender: &str) -> Actor {
        let who = match uid {
            Some(uid) => format!("uid={uid} sender={sender}"),
            None => format!("sender={sender}"),
        };
        Actor { channel: "dbus", who }
    }
}

/// The refusals recorded in the current window and those left out.
struct Window {
    started: Instant,
    recorded: u32,
    suppressed: u64,
}

/// The daemon's audit trail (one per daemon, shared by the API and D-Bus).
pub struct Audit {
    store: Store,
    settings: AuditSettings,
    metrics: Arc<Metrics>,
    window: Mutex<Window>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

impl Audit {
    pub fn new(store: Store, settings: AuditSettings, metrics: Arc<Metrics>) -> Arc<Audit> {
        let window = Mutex::new(Window { started: Instant::now(), recorded: 0, suppressed: 0 });
        Arc::new(Audit { store, settings, metrics, window })
    }

    /// Records an admin action that has ended: `outcome` is "ok" or the
    /// refusal's code, `detail` what it did or why it failed. Waits until
    /// the entry is committed; a store that cannot take it is logged (the
    /// journal entry stands).
    pub async fn admin(&self, actor: &Actor, action: &str, outcome: &str, detail: &str) {
        tracing::info!(
            audit = AuditKind::Admin.as_str(),
            channel = actor.channel,
            actor = %actor.who,
            action,
            outcome,
            detail,
            "admin action"
        );
        self.metrics.audit_entry(AuditKind::Admin.as_str(), true);
        let entry = self.entry(AuditKind::Admin, actor, action, outcome, detail.to_owned());
        if let Err(e) = self.store.audit_append(entry, self.settings.max_rows).await {
            tracing::error!(error = %crate::telemetry::chain(&e), action, "could not store the audit entry of an admin action");
        }
    }

    /// Records a request or call refused for its credentials (`outcome` is
    /// the refusal's code), unless `audit.auth_failures_per_minute` are
    /// already recorded this minute; never waits for the disk.
    pub fn auth_failure(&self, actor: &Actor, action: &str, outcome: &str, detail: &str) {
        let Some(suppressed) = self.admit() else {
            self.metrics.audit_entry(AuditKind::AuthFailure.as_str(), false);
            return;
        };
        self.metrics.audit_entry(AuditKind::AuthFailure.as_str(), true);
        let detail = match suppressed {
            0 => detail.to_owned(),
            n => format!("{detail} ({n} earlier refusals were not recorded: over audit.auth_failures_per_minute)"),
        };
        tracing::warn!(
            audit = AuditKind::AuthFailure.as_str(),
            channel = actor.channel,
            actor = %actor.who,
            action,
            outcome,
            detail = %detail,
            "credentials refused"
        );
        let entry = self.entry(AuditKind::AuthFailure, actor, action, outcome, detail);
        if let Err(e) = self.store.audit_queue(entry, self.settings.max_rows) {
            tracing::warn!(error = %crate::telemetry::chain(&e), action, "could not queue the audit entry of a refusal");
        }
    }

    /// Whether one more refusal may be recorded now, with the number left
    /// out since the last recorded one.
    fn admit(&self) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if w.started.elapsed() >= WINDOW {
            w.started = Instant::now();
            w.recorded = 0;
        }
        if w.recorded >= self.settings.auth_failures_per_minute {
            w.suppressed += 1;
            return None;
        }
        w.recorded += 1;
        Some(std::mem::take(&mut w.suppressed))
    }

    fn entry(&self, kind: AuditKind, actor: &Actor, action: &str, outcome: &str, detail: String) -> AuditEntry {
        AuditEntry {
            id: 0,
            at_ms: now_ms(),
            kind,
            channel: actor.channel.to_owned(),
            actor: actor.who.clone(),
            action: action.to_owned(),
            outcome: outcome.to_owned(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditFilter;

    #[tokio::test]
    async fn refusals_over_the_bound_are_counted_and_summed_up_in_the_next_recorded_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(&dir.path().join("s.db")).expect("store");
        let metrics = Arc::new(Metrics::new());
        let audit = Audit::new(store.clone(), AuditSettings { max_rows: 100, auth_failures_per_minute: 2 }, Arc::clone(&metrics));
        let actor = Actor::tcp("10.0.0.5".parse().expect("ip"));
        for _ in 0..5 {
            audit.auth_failure(&actor, "GET /v1/parameters", "invalid_api_key", "the key is unknown");
        }
        audit.admin(&Actor::unix(0, 0, 7), "POST /admin/v1/apps", "ok", "").await;
        let rows = store.audit_list(AuditFilter { limit: 10, ..Default::default() }).await.expect("list");
        let kinds: Vec<AuditKind> = rows.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [AuditKind::Admin, AuditKind::AuthFailure, AuditKind::AuthFailure], "two of five refusals recorded");
        assert_eq!((rows[1].channel.as_str(), rows[1].actor.as_str()), ("tcp", "10.0.0.5"));
        assert_eq!(rows[0].actor, "uid=0 gid=0 pid=7");

        // A new window records again and says how many were left out.
        audit.window.lock().expect("lock").started -= WINDOW;
        audit.auth_failure(&actor, "GET /v1/parameters", "invalid_api_key", "the key is unknown");
        audit.admin(&Actor::dbus(Some(0), ":1.4"), "D-Bus Reload", "ok", "").await;
        let rows = store.audit_list(AuditFilter { kind: Some(AuditKind::AuthFailure), limit: 1, ..Default::default() }).await;
        let detail = rows.expect("list").remove(0).detail;
        assert_eq!(detail, "the key is unknown (3 earlier refusals were not recorded: over audit.auth_failures_per_minute)");
        let snap = crate::telemetry::metrics::Snapshot {
            model_state: "ready",
            inference_threads: 2,
            queued: 0,
            rss_bytes: None,
            cgroup: "none",
            cgroup_memory_current: None,
            cgroup_memory_limit: None,
            cache: Default::default(),
        };
        let text = metrics.render(&snap, crate::telemetry::metrics::Format::Text).expect("render");
        assert!(text.contains("edgeai_audit_entries_total{kind=\"auth_failure\",outcome=\"suppressed\"} 3"), "{text}");
        assert!(text.contains("edgeai_audit_entries_total{kind=\"auth_failure\",outcome=\"recorded\"} 3"), "{text}");
        assert!(text.contains("edgeai_audit_entries_total{kind=\"admin\",outcome=\"recorded\"} 2"), "{text}");
        store.close().await.expect("close");
    }
}
