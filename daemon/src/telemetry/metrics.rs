//! Prometheus metrics: the one [`Metrics`] registry, created once at start
//! and shared (`Arc`) with the API, the model runtime, the code runtime and
//! the watchdog, which feed it where things happen; what is cheaper to read
//! than to track (model state, threads, queue, memory) is set from a
//! [`Snapshot`] at scrape time. Encoded by `prometheus-client` as OpenMetrics
//! text for `GET /metrics` when the scraper accepts it (Prometheus does),
//! else rewritten to the Prometheus text format 0.0.4 (counter families
//! named with `_total`, no `# UNIT`, no `# EOF`), which `promtool check
//! metrics` and older tools read.
//!
//! Label values come from fixed sets only (route patterns of [`route_label`],
//! status codes, languages, outcomes, model states, pressure sources, shed
//! reasons, budget parts, CPU pressure scopes), so the number of series is bounded whatever
//! clients send; the one exception, the per-app queue depth, is labelled by
//! app id, bounded by the apps the daemon serves (configured or imported by
//! an admin), never by what a client sends.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The two text formats a scrape can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Text,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it, as Prometheus's does.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Sources of `edgeai_memory_pressure_events`.
pub const PRESSURE_SOURCES: [&str; 4] = ["psi", "cgroup_v1", "usage", "forced"];

/// Reasons of `edgeai_shed_requests`.
pub const SHED_REASONS: [&str; 3] = ["memory_pressure", "queue_full", "app_queue_full"];

/// Model states the `edgeai_model_state` gauge has a series for.
const MODEL_STATES: [&str; 6] = ["disabled", "loading", "ready", "failed", "unloading", "unloaded"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CgroupLabels {
    cgroup: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    language: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LanguageLabels {
    language: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateLabels {
    slot: String,
    status: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    kind: &'static str,
    /// "recorded", or "suppressed" over audit.auth_failures_per_minute.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabels {
    part: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. 131 s, ×4 per bucket.
    Histogram::new(exponential_buckets(0.0005, 4.0, 10))
}

fn code_histogram() -> Histogram {
    // 0.1 ms .. 105 s, ×4 per bucket (a code node's limit is at most 3600 s).
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// What the scrape reads from the rest of the daemon at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `disabled`, `loading`, `ready` or `failed`.
    pub model_state: &'static str,
    /// Inference threads in use now.
    pub inference_threads: u32,
    /// Places taken in the admission queue (jobs waiting for a slot).
    pub queued: usize,
    pub rss_bytes: Option<u64>,
    /// "v1", "v2" or "none".
    pub cgroup: &'static str,
    pub cgroup_memory_current: Option<u64>,
    pub cgroup_memory_limit: Option<u64>,
    /// The response cache's counters and size.
    pub cache: crate::cache::Stats,
}

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<RouteLabels>,
    connections_refused: Counter,
    clients_denied: Counter,
    time_to_first_token: Histogram,
    generated_tokens: Counter,
    kv_cells: Gauge,
    kv_cells_in_use: Gauge,
    model_state: Family<StateLabels, Gauge>,
    inference_threads: Gauge,
    cpu_pressure: Family<ScopeLabels, Gauge<f64, AtomicU64>>,
    queue_depth: Gauge,
    rss: Gauge,
    cgroup_current: Family<CgroupLabels, Gauge>,
    cgroup_limit: Family<CgroupLabels, Gauge>,
    watchdog_pings: Counter,
    code_runs: Family<CodeLabels, Counter>,
    code_duration: Histograms<LanguageLabels>,
    pressure_stage: Gauge,
    pressure_events: Family<SourceLabels, Counter>,
    shed: Family<ReasonLabels, Counter>,
    app_queue_depth: Family<AppLabels, Gauge>,
    memory_budget: Family<PartLabels, Gauge>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    cache_bytes: Gauge,
    cache_max_bytes: Gauge,
    cache_entries: Gauge,
    audit_entries: Family<AuditLabels, Counter>,
    tls_handshake_failures: Family<ReasonLabels, Counter>,
    update_info: Family<UpdateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("edgeai"),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            connections_refused: Counter::default(),
            clients_denied: Counter::default(),
            time_to_first_token: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            generated_tokens: Counter::default(),
            kv_cells: Gauge::default(),
            kv_cells_in_use: Gauge::default(),
            model_state: Family::default(),
            inference_threads: Gauge::default(),
            cpu_pressure: Family::default(),
            queue_depth: Gauge::default(),
            rss: Gauge::default(),
            cgroup_current: Family::default(),
            cgroup_limit: Family::default(),
            watchdog_pings: Counter::default(),
            code_runs: Family::default(),
            code_duration: Family::new_with_constructor(code_histogram),
            pressure_stage: Gauge::default(),
            pressure_events: Family::default(),
            shed: Family::default(),
            app_queue_depth: Family::default(),
            memory_budget: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_evictions: Counter::default(),
            cache_bytes: Gauge::default(),
            cache_max_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            audit_entries: Family::default(),
            tls_handshake_failures: Family::default(),
            update_info: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by route pattern (\"other\" for unknown paths) and status code; 429 and 503 are the shed ones",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route pattern (a streaming body is not included)",
            m.http_duration.clone(),
        );
        r.register(
            "http_connections_refused",
            "Connections refused over server.max_connections or server.max_connections_per_client (a 503 before routing, or closed in a flood); not in http_requests",
            m.connections_refused.clone(),
        );
        r.register(
            "http_clients_denied",
            "TCP connections closed at accept: the client's address is not in server.allow_clients",
            m.clients_denied.clone(),
        );
        r.register(
            "audit_entries",
            "Audit trail entries by kind (admin, auth_failure) and outcome (recorded in the journal and the store, or suppressed over audit.auth_failures_per_minute)",
            m.audit_entries.clone(),
        );
        r.register(
            "model_time_to_first_token_seconds",
            "Local model: time from queueing a generation to its first generated token",
            m.time_to_first_token.clone(),
        );
        r.register("model_generated_tokens", "Local model: tokens generated", m.generated_tokens.clone());
        r.register(
            "model_kv_cells",
            "Local model: KV cache cells, shared by every sequence (0 before the model is loaded)",
            m.kv_cells.clone(),
        );
        r.register(
            "model_kv_cells_in_use",
            "Local model: KV cells holding tokens, of running sequences and of cached prefixes kept for reuse",
            m.kv_cells_in_use.clone(),
        );
        r.register("model_state", "Local model state: 1 for the current state, 0 for the others", m.model_state.clone());
        r.register(
            "inference_threads",
            "Local model: inference threads in use now (0 while no model is loaded)",
            m.inference_threads.clone(),
        );
        r.register(
            "cpu_pressure_ratio",
            "Local model: share of the thread advisor's last interval (250 ms, idle or between decode steps) in which tasks waited for a CPU, by scope (cgroup: cpu.pressure full of the daemon's cgroup; machine: /proc/pressure/cpu some, not counted over an interval the daemon spent generating); 0.10 or more counts as one core taken",
            m.cpu_pressure.clone(),
        );
        r.register("admission_queue_depth", "Local model: generations waiting in the admission queue for a slot", m.queue_depth.clone());
        r.register("process_resident_memory_bytes", "The daemon's resident set size", m.rss.clone());
        r.register("cgroup_memory_current_bytes", "Memory the daemon's cgroup uses now, by hierarchy (v1 or v2)", m.cgroup_current.clone());
        r.register(
            "cgroup_memory_limit_bytes",
            "The memory limit of the daemon's cgroup (tightest ancestor), by hierarchy",
            m.cgroup_limit.clone(),
        );
        r.register("watchdog_pings", "systemd watchdog pings sent (the daemon was healthy)", m.watchdog_pings.clone());
        r.register("code_runs", "Workflow code node runs, by language and outcome (ok or error)", m.code_runs.clone());
        r.register("code_run_duration_seconds", "Workflow code node run time, by language", m.code_duration.clone());
        r.register(
            "memory_pressure_stage",
            "Memory governor: 0 normal, 1 caches asked to keep half, 2 caches emptied, 3 shedding new generations (503)",
            m.pressure_stage.clone(),
        );
        r.register(
            "memory_pressure_events",
            "Memory pressure seen, by source (psi trigger, cgroup_v1 pressure_level event, usage over the high watermark, forced by a test failpoint)",
            m.pressure_events.clone(),
        );
        r.register(
            "shed_requests",
            "Generations refused, by reason (memory_pressure: 503; queue_full, app_queue_full: 429)",
            m.shed.clone(),
        );
        r.register(
            "admission_queue_depth_by_app",
            "Local model: places an app holds in the admission queue (a series only while it holds any; apps are the served ones)",
            m.app_queue_depth.clone(),
        );
        r.register(
            "memory_budget_bytes",
            "The daemon's own memory budget computed at start, by part (model_file, kv_cache, request_buffers, response_cache, total)",
            m.memory_budget.clone(),
        );
        for source in PRESSURE_SOURCES {
            let _ = m.pressure_events.get_or_create(&SourceLabels { source });
        }
        for reason in SHED_REASONS {
            let _ = m.shed.get_or_create(&ReasonLabels { reason });
        }
        r.register("cache_hits", "Response cache: requests answered from the cache", m.cache_hits.clone());
        r.register("cache_misses", "Response cache: cacheable requests the cache could not answer", m.cache_misses.clone());
        r.register(
            "cache_evictions",
            "Response cache: answers evicted to stay within its byte budget or to give memory back",
            m.cache_evictions.clone(),
        );
        r.register("cache_bytes", "Response cache: bytes held", m.cache_bytes.clone());
        r.register(
            "cache_max_bytes",
            "Response cache: byte budget (cache.max_bytes or derived from the memory limit)",
            m.cache_max_bytes.clone(),
        );
        r.register("cache_entries", "Response cache: answers held", m.cache_entries.clone());
        r.register(
            "tls_handshake_failures",
            "TLS handshakes on the TCP listener that failed (\"error\": not TLS, untrusted, no common version) or stalled past server.idle_timeout_secs (\"timeout\")",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "update_info",
            "A/B slots: 1 for what runs (slot a, b or factory), its update status (good, pending, rolled-back) and version; absent when update.enabled is false or nothing was installed",
            m.update_info.clone(),
        );
        m
    }

    /// What runs, as the update state says (one series at a time).
    pub fn update_info(&self, slot: &str, status: &str, version: &str) {
        self.update_info.clear();
        self.update_info
            .get_or_create(&UpdateLabels { slot: slot.to_owned(), status: status.to_owned(), version: version.to_owned() })
            .set(1);
    }

    /// A TLS handshake that failed; `reason` is "error" or "timeout".
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        self.tls_handshake_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The memory governor's stage (0 normal .. 3 shedding).
    pub fn memory_pressure_stage(&self, stage: u8) {
        self.pressure_stage.set(i64::from(stage));
    }

    /// Memory pressure seen; `source` is one of [`PRESSURE_SOURCES`].
    pub fn pressure_event(&self, source: &'static str) {
        self.pressure_events.get_or_create(&SourceLabels { source }).inc();
    }

    /// A generation refused; `reason` is one of [`SHED_REASONS`].
    pub fn shed(&self, reason: &'static str) {
        self.shed.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// One part of the memory budget (`model_file`, `kv_cache`,
    /// `request_buffers`, `response_cache`, `total`).
    pub fn memory_budget(&self, part: &'static str, bytes: u64) {
        self.memory_budget.get_or_create(&PartLabels { part }).set(saturating_i64(bytes));
    }

    /// The admission queue's places by app, replacing the previous ones.
    pub fn app_queues(&self, by_app: &[(std::sync::Arc<str>, usize)]) {
        self.app_queue_depth.clear();
        for (app, n) in by_app {
            self.app_queue_depth.get_or_create(&AppLabels { app: app.to_string() }).set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// One answered request (`route` from [`route_label`]).
    pub fn http_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.http_requests.get_or_create(&HttpLabels { route, status }).inc();
        self.http_duration.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
    }

    /// A connection over `server.max_connections` or `server.max_connections_per_client`, refused.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// An audit entry of `kind`, recorded or (refused credentials over the
    /// per-minute bound) suppressed.
    pub fn audit_entry(&self, kind: &'static str, recorded: bool) {
        let outcome = if recorded { "recorded" } else { "suppressed" };
        self.audit_entries.get_or_create(&AuditLabels { kind, outcome }).inc();
    }

    /// A TCP client outside `server.allow_clients`, closed at accept.
    pub fn client_denied(&self) {
        self.clients_denied.inc();
    }

    /// The first token of a generation, `elapsed` after it was queued.
    pub fn first_token(&self, elapsed: Duration) {
        self.time_to_first_token.observe(elapsed.as_secs_f64());
    }

    pub fn token_generated(&self) {
        self.generated_tokens.inc();
    }

    /// The CPU pressure the thread advisor last saw: `(scope, share)`, or
    /// `None` (no series) when it could not be read.
    /// The scope is fixed at start, so a new figure replaces the last one.
    pub fn cpu_pressure(&self, measured: Option<(&'static str, f64)>) {
        match measured {
            Some((scope, share)) => {
                self.cpu_pressure.get_or_create(&ScopeLabels { scope }).set(share);
            }
            None => self.cpu_pressure.clear(),
        }
    }

    /// The KV cache's size and the cells holding tokens now.
    pub fn kv_cells(&self, total: usize, in_use: usize) {
        self.kv_cells.set(i64::try_from(total).unwrap_or(i64::MAX));
        self.kv_cells_in_use.set(i64::try_from(in_use).unwrap_or(i64::MAX));
    }

    pub fn watchdog_ping(&self) {
        self.watchdog_pings.inc();
    }

    /// One code node run; `language` is "javascript" or "python3".
    pub fn code_run(&self, language: &'static str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.code_runs.get_or_create(&CodeLabels { language, outcome }).inc();
        self.code_duration.get_or_create(&LanguageLabels { language }).observe(elapsed.as_secs_f64());
    }

    /// The text of a scrape, after setting the gauges from `snap`.
    pub fn render(&self, snap: &Snapshot, format: Format) -> Result<String, std::fmt::Error> {
        for state in MODEL_STATES {
            self.model_state.get_or_create(&StateLabels { state }).set(i64::from(state == snap.model_state));
        }
        self.inference_threads.set(i64::from(snap.inference_threads));
        self.queue_depth.set(i64::try_from(snap.queued).unwrap_or(i64::MAX));
        self.rss.set(snap.rss_bytes.map_or(0, saturating_i64));
        set_or_clear(&self.cgroup_current, snap.cgroup, snap.cgroup_memory_current);
        set_or_clear(&self.cgroup_limit, snap.cgroup, snap.cgroup_memory_limit);
        let c = &snap.cache;
        // The cache counts itself; its counters only ever grow.
        for (counter, total) in [(&self.cache_hits, c.hits), (&self.cache_misses, c.misses), (&self.cache_evictions, c.evictions)] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        self.cache_bytes.set(saturating_i64(c.bytes));
        self.cache_max_bytes.set(saturating_i64(c.max_bytes));
        self.cache_entries.set(saturating_i64(c.entries));
        let mut out = String::with_capacity(8 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(match format {
            Format::OpenMetrics => out,
            Format::Text => to_text_004(&out),
        })
    }
}

/// OpenMetrics text as the Prometheus 0.0.4 format: a counter family is
/// named as its samples (`…_total`), `# UNIT` and `# EOF` go. Samples and
/// the other families are the same in both.
fn to_text_004(om: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        om.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(om.len() + 16 * counters.len());
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta.and_then(|(p, rest)| rest.split_once(' ').map(|(name, tail)| (p, name, tail))) {
            Some((p, name, tail)) if counters.contains(name) => {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A cgroup gauge has a series only while the value is known.
fn set_or_clear(family: &Family<CgroupLabels, Gauge>, cgroup: &'static str, value: Option<u64>) {
    family.clear();
    if let Some(v) = value {
        family.get_or_create(&CgroupLabels { cgroup }).set(saturating_i64(v));
    }
}

/// Route patterns: `{id}` matches any one path segment. A request whose
/// path matches none is labelled "other".
const ROUTES: &[&str] = &[
    "/health",
    "/ready",
    "/metrics",
    "/v1/chat/completions",
    "/v1/models",
    "/v1/embeddings",
    "/v1/chat-messages",
    "/v1/chat-messages/{id}/stop",
    "/v1/completion-messages",
    "/v1/completion-messages/{id}/stop",
    "/v1/conversations",
    "/v1/conversations/{id}",
    "/v1/conversations/{id}/name",
    "/v1/conversations/{id}/variables",
    "/v1/conversations/{id}/variables/{id}",
    "/v1/messages",
    "/v1/messages/{id}/feedbacks",
    "/v1/messages/{id}/suggested",
    "/v1/parameters",
    "/v1/info",
    "/v1/meta",
    "/v1/site",
    "/v1/app/feedbacks",
    "/v1/files/upload",
    "/v1/files/{id}/preview",
    "/v1/audio-to-text",
    "/v1/text-to-audio",
    "/v1/workflows/run",
    "/v1/workflows/logs",
    "/v1/workflows/run/{id}",
    "/v1/workflows/{id}/run",
    "/v1/workflows/tasks/{id}/stop",
    "/v1/apps/annotations",
    "/v1/apps/annotations/{id}",
    "/v1/apps/annotation-reply/{id}",
    "/v1/apps/annotation-reply/{id}/status/{id}",
    "/v1/datasets",
    "/v1/datasets/{id}",
    "/v1/datasets/{id}/retrieve",
    "/v1/datasets/{id}/hit-testing",
    "/v1/datasets/{id}/reindex",
    "/v1/datasets/{id}/documents",
    "/v1/datasets/{id}/document/create-by-text",
    "/v1/datasets/{id}/document/create_by_text",
    "/v1/datasets/{id}/document/create-by-file",
    "/v1/datasets/{id}/document/create_by_file",
    "/v1/datasets/{id}/documents/status/{id}",
    "/v1/datasets/{id}/documents/{id}",
    "/v1/datasets/{id}/documents/{id}/indexing-status",
    "/v1/datasets/{id}/documents/{id}/segments",
    "/v1/datasets/{id}/documents/{id}/segments/{id}",
    "/v1/datasets/{id}/documents/{id}/update-by-text",
    "/v1/datasets/{id}/documents/{id}/update_by_text",
    "/v1/datasets/{id}/documents/{id}/update-by-file",
    "/v1/datasets/{id}/documents/{id}/update_by_file",
    "/admin/v1/status",
    "/admin/v1/apps",
    "/admin/v1/apps/dsl",
    "/admin/v1/apps/{id}/versions",
    "/admin/v1/apps/{id}/activate",
    "/admin/v1/apps/{id}/export",
    "/admin/v1/apps/{id}/chat-messages",
    "/admin/v1/keys",
    "/admin/v1/keys/{id}",
];

/// The route pattern of `path` for labels, or "other". A literal segment of
/// a pattern wins over `{id}` (`/v1/workflows/run` is not `/v1/workflows/{id}`).
/// Runs on every request: no allocation.
pub fn route_label(path: &str) -> &'static str {
    let path = path.trim_end_matches('/');
    // Most requests name a literal route: one string compare each, before
    // the segment-by-segment match (which was 5% of a cache hit's CPU).
    if let Some(literal) = ROUTES.iter().copied().find(|p| *p == path) {
        return literal;
    }
    let wildcards = |pattern: &str| pattern.matches("{id}").count();
    ROUTES.iter().copied().filter(|p| matches_route(p, path)).min_by_key(|p| wildcards(p)).unwrap_or("other")
}

fn matches_route(pattern: &str, path: &str) -> bool {
    let (mut p, mut s) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || (a == "{id}" && !b.is_empty()) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_a_bounded_set_of_route_patterns() {
        assert_eq!(route_label("/v1/chat-messages"), "/v1/chat-messages");
        assert_eq!(route_label("/v1/chat-messages/"), "/v1/chat-messages");
        assert_eq!(route_label("/v1/chat-messages/abc/stop"), "/v1/chat-messages/{id}/stop");
        assert_eq!(route_label("/v1/workflows/run"), "/v1/workflows/run");
        assert_eq!(route_label("/v1/workflows/wf-1/run"), "/v1/workflows/{id}/run");
        assert_eq!(route_label("/v1/datasets/d1/documents/x/segments"), "/v1/datasets/{id}/documents/{id}/segments");
        assert_eq!(route_label("/v1/datasets/d1/documents/status/b"), "/v1/datasets/{id}/documents/status/{id}");
        assert_eq!(route_label("/metrics"), "/metrics");
        for junk in ["/", "", "/v1/no-such", "/v1/chat-messages/a/b/c", "/v1//stop", "/../etc/passwd"] {
            assert_eq!(route_label(junk), "other", "{junk}");
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            model_state: "ready",
            inference_threads: 2,
            queued: 3,
            rss_bytes: Some(185 << 20),
            cgroup: "v1",
            cgroup_memory_current: Some(200 << 20),
            cgroup_memory_limit: None,
            cache: crate::cache::Stats { enabled: true, hits: 5, misses: 2, evictions: 1, entries: 3, bytes: 900, max_bytes: 4096 },
        }
    }

    #[test]
    fn a_scrape_shows_what_was_fed_and_the_snapshot() {
        let m = Metrics::new();
        m.http_request(route_label("/v1/chat-messages"), 200, Duration::from_millis(3));
        m.http_request(route_label("/v1/chat-messages"), 429, Duration::from_millis(1));
        m.token_generated();
        m.token_generated();
        m.code_run("javascript", true, Duration::from_millis(2));
        m.code_run("python3", false, Duration::from_millis(40));
        m.watchdog_ping();
        m.connection_refused();
        m.kv_cells(4096, 120);
        m.first_token(Duration::from_millis(80));
        let text = m.render(&snapshot(), Format::OpenMetrics).expect("encodes");
        for line in [
            "edgeai_http_requests_total{route=\"/v1/chat-messages\",status=\"200\"} 1",
            "edgeai_http_requests_total{route=\"/v1/chat-messages\",status=\"429\"} 1",
            "edgeai_http_request_duration_seconds_count{route=\"/v1/chat-messages\"} 2",
            "edgeai_model_generated_tokens_total 2",
            "edgeai_model_time_to_first_token_seconds_count 1",
            "edgeai_model_state{state=\"ready\"} 1",
            "edgeai_model_state{state=\"loading\"} 0",
            "edgeai_inference_threads 2",
            "edgeai_admission_queue_depth 3",
            "edgeai_process_resident_memory_bytes 193986560",
            "edgeai_cgroup_memory_current_bytes{cgroup=\"v1\"} 209715200",
            "edgeai_watchdog_pings_total 1",
            "edgeai_http_connections_refused_total 1",
            "edgeai_model_kv_cells 4096",
            "edgeai_model_kv_cells_in_use 120",
            "edgeai_code_runs_total{language=\"javascript\",outcome=\"ok\"} 1",
            "edgeai_code_runs_total{language=\"python3\",outcome=\"error\"} 1",
            "edgeai_code_run_duration_seconds_count{language=\"python3\"} 1",
            "edgeai_cache_hits_total 5",
            "edgeai_cache_misses_total 2",
            "edgeai_cache_evictions_total 1",
            "edgeai_cache_entries 3",
            "edgeai_cache_bytes 900",
            "edgeai_cache_max_bytes 4096",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("edgeai_cgroup_memory_limit_bytes{"), "no limit, no series:\n{text}");
        // A second scrape does not count the cache's totals twice.
        let again = m.render(&snapshot(), Format::OpenMetrics).expect("encodes");
        assert!(again.lines().any(|l| l == "edgeai_cache_hits_total 5"), "{again}");
        assert!(text.ends_with("# EOF\n"), "{text}");

        let plain = m.render(&snapshot(), Format::Text).expect("encodes");
        for line in [
            "# TYPE edgeai_http_requests_total counter",
            "# TYPE edgeai_model_generated_tokens_total counter",
            "# TYPE edgeai_inference_threads gauge",
            "edgeai_model_generated_tokens_total 2",
            "edgeai_admission_queue_depth 3",
        ] {
            assert!(plain.lines().any(|l| l == line), "missing {line:?} in\n{plain}");
        }
        assert!(plain.lines().all(|l| l != "# EOF" && !l.starts_with("# UNIT ")), "{plain}");
        assert!(plain.lines().any(|l| l.starts_with("# HELP edgeai_http_requests_total HTTP requests answered")), "{plain}");
    }

    #[test]
    fn cpu_pressure_has_a_series_only_while_measured() {
        let m = Metrics::new();
        let text = m.render(&snapshot(), Format::OpenMetrics).expect("encodes");
        assert!(text.lines().any(|l| l == "# TYPE edgeai_cpu_pressure_ratio gauge"), "{text}");
        assert!(!text.contains("edgeai_cpu_pressure_ratio{"), "not measured yet, no series:\n{text}");
        m.cpu_pressure(Some(("machine", 0.25)));
        m.cpu_pressure(Some(("machine", 0.125)));
        let text = m.render(&snapshot(), Format::Text).expect("encodes");
        assert!(text.lines().any(|l| l == "edgeai_cpu_pressure_ratio{scope=\"machine\"} 0.125"), "{text}");
        m.cpu_pressure(None);
        let text = m.render(&snapshot(), Format::OpenMetrics).expect("encodes");
        assert!(!text.contains("edgeai_cpu_pressure_ratio{"), "unreadable now, no series:\n{text}");
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }

    #[test]
    fn the_model_state_follows_the_latest_snapshot() {
        let m = Metrics::new();
        m.render(&snapshot(), Format::OpenMetrics).expect("encodes");
        let text =
            m.render(&Snapshot { model_state: "failed", cgroup_memory_current: None, ..snapshot() }, Format::OpenMetrics).expect("encodes");
        assert!(text.lines().any(|l| l == "edgeai_model_state{state=\"failed\"} 1"), "{text}");
        assert!(text.lines().any(|l| l == "edgeai_model_state{state=\"ready\"} 0"), "{text}");
        assert!(!text.contains("edgeai_cgroup_memory_current_bytes{"), "a value gone is a series gone:\n{text}");
    }
}
