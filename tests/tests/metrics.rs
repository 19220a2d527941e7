//! `GET /metrics` against the real daemon: served on the unix socket, on TCP
//! only with `metrics.tcp` (404 otherwise), nowhere with `metrics.enabled =
//! false`; a chat turn and workflow runs with JavaScript code nodes move
//! exactly the counters they should; a wrong method is Dify's 405; the
//! OpenMetrics text (what Prometheus asks for) passes a strict reading here,
//! the Prometheus 0.0.4 text (without that `Accept`) passes `promtool check
//! metrics` (Debian's `prometheus` package; a loud SKIP without it); the
//! model's CPU pressure gauge has this machine's PSI scope and a share in
//! 0..=1 (a loud SKIP on a kernel without PSI); and every metric
//! the Grafana dashboard (configs/grafana-edgeai.json) queries is in a real
//! scrape.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeai_tests::{paths, Client, Daemon, DaemonBuilder};
use serde_json::{json, Value};

/// One scrape: samples by `name{labels}` (labels as the daemon wrote
/// them), and the declared families with their types.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
    families: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of a sample; 0 for a counter series not created yet.
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    fn has_metric(&self, name: &str) -> bool {
        self.families.contains_key(name) || self.samples.keys().any(|s| s.split('{').next() == Some(name))
    }
}

const SUFFIXES: &[(&str, &[&str])] =
    &[("counter", &["_total", "_created"]), ("gauge", &[""]), ("histogram", &["_bucket", "_sum", "_count", "_created"])];

/// Reads OpenMetrics text strictly: HELP, TYPE (and UNIT) before a
/// family's samples, no family twice, every sample named after the family
/// it is in with its type's suffix, `name="value"` labels, a float value,
/// nothing after `# EOF`, which must end the text.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with("# EOF\n"), "the text does not end with # EOF:\n{text}");
    let mut s = Scrape { text: text.to_owned(), samples: BTreeMap::new(), families: BTreeMap::new() };
    let mut current: Option<(String, String)> = None;
    let mut helped: Option<String> = None;
    let body = &text[..text.len() - "# EOF\n".len()];
    for line in body.lines() {
        let name_ok = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
            assert!(name_ok(name) && !help.trim().is_empty(), "bad HELP line: {line}");
            helped = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without a type: {line}"));
            assert_eq!(helped.as_deref(), Some(name), "TYPE {name} without its HELP just before");
            assert!(SUFFIXES.iter().any(|(t, _)| *t == ty), "unexpected type in {line}");
            assert!(s.families.insert(name.to_owned(), ty.to_owned()).is_none(), "family {name} declared twice");
            current = Some((name.to_owned(), ty.to_owned()));
        } else if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').unwrap_or_else(|| panic!("bad UNIT line: {line}"));
            assert!(current.as_ref().is_some_and(|(n, _)| n == name) && name.ends_with(&format!("_{unit}")), "bad UNIT line: {line}");
        } else {
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without a value: {line}"));
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("value not a number: {line}"));
            let name = series.split('{').next().unwrap();
            let (family, ty) = current.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let suffixes = SUFFIXES.iter().find(|(t, _)| t == ty).unwrap().1;
            assert!(suffixes.iter().any(|sfx| name == format!("{family}{sfx}")), "sample {name} is not of family {family} ({ty})");
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap_or_else(|| panic!("bad labels: {line}"));
                for pair in inner.split("\",") {
                    let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair:?} in {line}"));
                    assert!(name_ok(k) && !v.contains('\n'), "bad label {pair:?} in {line}");
                }
            }
            assert!(s.samples.insert(series.to_owned(), v).is_none(), "series twice: {series}");
        }
    }
    s
}

/// Prometheus's own Accept header.
const PROMETHEUS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn scrape(c: &Client) -> Scrape {
    let r = c.request("GET", "/metrics", &[("Accept", PROMETHEUS_ACCEPT)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/openmetrics-text")), "{:?}", r.headers);
    parse(&r.text())
}

/// The 0.0.4 text (no openmetrics Accept) through `promtool check
/// metrics`; a loud SKIP without promtool (a failure under CI). Returns the text.
fn promtool_check(c: &Client) -> String {
    let r = c.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.text();
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "OpenMetrics lines in the 0.0.4 text:\n{text}");
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter(|l| l.ends_with(" counter")) {
        assert!(l.split(' ').next().unwrap().ends_with("_total"), "a 0.0.4 counter family must be named as its samples: {l}");
    }
    let child =
        Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "promtool is missing under CI ({e}); scripts/setup.sh installs Debian's prometheus");
            eprintln!(
                "SKIP promtool check metrics: promtool not runnable ({e}); apt-get install prometheus. Only this test's own checks ran."
            );
            return text;
        }
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
    text
}

fn fixture(name: &str) -> std::path::PathBuf {
    paths::repo_root().join("tests/fixtures/dsl").join(name)
}

fn probe_app(d: &Daemon) -> Client {
    let out = d.ctl(&["apps", "import", fixture("workflow-code-probe-js.yml").to_str().unwrap(), "--id", "probe-js"]);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let (_, key) = d.admin().create_key("probe-js");
    d.client().with_key(&key)
}

fn run_code(c: &Client, src: &str) -> Value {
    c.post_json("/v1/workflows/run", &json!({"inputs": {"src": src}, "response_mode": "blocking", "user": "metrics"})).expect_json(200)
}

/// Metric names (`edgeai_…`) in the dashboard's queries.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = paths::repo_root().join("configs/grafana-edgeai.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let panels = d["panels"].as_array().unwrap();
    assert!(!panels.is_empty(), "the dashboard has no panels");
    let mut names = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel without targets: {p}"));
        assert!(!targets.is_empty(), "panel {} queries nothing", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let found: Vec<String> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("edgeai_"))
                .map(str::to_owned)
                .collect();
            assert!(!found.is_empty(), "panel {} query {expr:?} names no edgeai metric", p["title"]);
            names.extend(found);
        }
    }
    names
}

/// The CPU pressure (PSI) file the daemon follows, as the test process
/// (whose cgroup the daemon shares) finds it: its own v2 cgroup's
/// `cpu.pressure`, else the machine's `/proc/pressure/cpu`.
fn cpu_pressure_scope() -> Option<&'static str> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let own = std::fs::read_to_string("/proc/self/cgroup").ok().and_then(|c| {
        let rel = c.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/').to_owned();
        let found = root.join("cgroup.controllers").exists()
            && !rel.is_empty()
            && std::fs::read_to_string(root.join(rel).join("cpu.pressure")).is_ok();
        found.then_some("cgroup")
    });
    own.or_else(|| std::fs::read_to_string("/proc/pressure/cpu").ok().filter(|t| t.starts_with("some ")).map(|_| "machine"))
}

/// The model's idle ticks measure CPU pressure even with a configured
/// thread count: a series with this machine's scope and a share in 0..=1
/// appears within a few ticks (bounded wait, no timing asserted).
fn cpu_pressure_is_reported(u: &Client) {
    let Some(scope) = cpu_pressure_scope() else {
        eprintln!("SKIP edgeai_cpu_pressure_ratio value: no readable cpu.pressure or /proc/pressure/cpu here (kernel without PSI)");
        return;
    };
    let series = format!("edgeai_cpu_pressure_ratio{{scope=\"{scope}\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let share = loop {
        let s = scrape(u);
        assert_eq!(s.families.get("edgeai_cpu_pressure_ratio").map(String::as_str), Some("gauge"), "{}", s.text);
        if let Some(&v) = s.samples.get(&series) {
            break v;
        }
        assert!(Instant::now() < deadline, "no {series} after 30 s of an idle model:\n{}", s.text);
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(share.is_finite() && (0.0..=1.0).contains(&share), "{series} = {share}");
}

#[test]
fn counters_follow_chat_and_code_runs_over_both_transports() {
    let mut b = DaemonBuilder::new().set("metrics.tcp", true);
    let notify = b.notify_socket();
    let d = b.watchdog_usec(1_000_000).start();
    let (u, tcp) = (d.unix_client().without_key(), d.client().without_key());
    let before = scrape(&u);
    assert_eq!(before.get("edgeai_model_state{state=\"ready\"}"), 1.0, "{}", before.text);
    assert_eq!(before.get("edgeai_model_state{state=\"loading\"}"), 0.0);
    assert!(before.get("edgeai_inference_threads") >= 1.0, "{}", before.text);
    assert_eq!(before.get("edgeai_admission_queue_depth"), 0.0);
    assert!(before.get("edgeai_process_resident_memory_bytes") > 1e6, "{}", before.text);
    let cgroup = [("v2", "/sys/fs/cgroup/memory.current"), ("v1", "/sys/fs/cgroup/memory/memory.usage_in_bytes")]
        .into_iter()
        .find(|(_, f)| std::fs::read_to_string(f).is_ok());
    match cgroup {
        Some((v, _)) => {
            let used = before.get(&format!("edgeai_cgroup_memory_current_bytes{{cgroup=\"{v}\"}}"));
            assert!(used >= before.get("edgeai_process_resident_memory_bytes"), "cgroup {v} uses {used}:\n{}", before.text);
        }
        None => eprintln!("SKIP cgroup memory gauges: no cgroup memory controller readable here"),
    }

    // A chat turn: one 200 on its route, its tokens, one first token.
    let a = d.client().chat_blocking("What is Modbus?", "metrics", None);
    let tokens = a["metadata"]["usage"]["completion_tokens"].as_f64().unwrap();
    assert!(tokens >= 1.0, "{a}");
    let after_chat = scrape(&tcp);
    let delta = |s: &Scrape, earlier: &Scrape, series: &str| s.get(series) - earlier.get(series);
    assert_eq!(delta(&after_chat, &before, "edgeai_http_requests_total{route=\"/v1/chat-messages\",status=\"200\"}"), 1.0);
    assert_eq!(delta(&after_chat, &before, "edgeai_http_request_duration_seconds_count{route=\"/v1/chat-messages\"}"), 1.0);
    assert_eq!(delta(&after_chat, &before, "edgeai_model_generated_tokens_total"), tokens, "usage said {tokens}");
    assert_eq!(delta(&after_chat, &before, "edgeai_model_time_to_first_token_seconds_count"), 1.0);
    // The finished turn's tokens stay cached for prefix reuse (the last token is sampled, not decoded).
    let prompt = a["metadata"]["usage"]["prompt_tokens"].as_f64().unwrap();
    let (cells, in_use) = (after_chat.get("edgeai_model_kv_cells"), after_chat.get("edgeai_model_kv_cells_in_use"));
    assert!(in_use >= prompt && in_use <= cells, "{in_use} of {cells} KV cells in use after a {prompt}-token prompt");
    // The first scrape itself was counted, on its route.
    assert_eq!(delta(&after_chat, &before, "edgeai_http_requests_total{route=\"/metrics\",status=\"200\"}"), 1.0);

    // Two code runs: one fine, one throwing.
    let c = probe_app(&d);
    let ok = run_code(&c, "function main() { return {result: 'fine'}; }");
    assert_eq!(ok["data"]["status"], "succeeded", "{ok}");
    let bad = run_code(&c, "function main() { throw new Error('boom'); }");
    assert_eq!(bad["data"]["status"], "failed", "{bad}");
    let after_code = scrape(&u);
    assert_eq!(delta(&after_code, &after_chat, "edgeai_code_runs_total{language=\"javascript\",outcome=\"ok\"}"), 1.0);
    assert_eq!(delta(&after_code, &after_chat, "edgeai_code_runs_total{language=\"javascript\",outcome=\"error\"}"), 1.0);
    assert_eq!(delta(&after_code, &after_chat, "edgeai_code_run_duration_seconds_count{language=\"javascript\"}"), 2.0);
    assert_eq!(delta(&after_code, &after_chat, "edgeai_http_requests_total{route=\"/v1/workflows/run\",status=\"200\"}"), 2.0);

    // A wrong method is Dify's 405; an unknown path is "other", not its own series.
    u.request("POST", "/metrics", &[], Some(b"{}")).expect_dify_error(405, "method_not_allowed");
    u.get("/v1/no-such/route/9f3c").expect_dify_error(404, "not_found");
    let head = u.request("HEAD", "/metrics", &[], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD with a body");
    let after_bad = scrape(&u);
    assert_eq!(delta(&after_bad, &after_code, "edgeai_http_requests_total{route=\"/metrics\",status=\"405\"}"), 1.0);
    assert_eq!(delta(&after_bad, &after_code, "edgeai_http_requests_total{route=\"other\",status=\"404\"}"), 1.0);
    assert!(!after_bad.text.contains("9f3c"), "a raw path became a label:\n{}", after_bad.text);

    // Watchdog pings: at least those systemd (the test's socket) received.
    let seen = notify.wait_for_count(2, Duration::from_secs(10), "WATCHDOG=1", |_, n| n.has("WATCHDOG=1")).len() as f64;
    let pings = scrape(&u).get("edgeai_watchdog_pings_total");
    assert!(pings >= seen && seen >= 2.0, "counter {pings}, notifications {seen}");

    cpu_pressure_is_reported(&u);

    // Every metric the dashboard queries is in a real scrape.
    let last = scrape(&tcp);
    for name in dashboard_metrics() {
        let family = ["_bucket", "_sum", "_count", "_total"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        assert!(
            last.has_metric(&name) || last.has_metric(family),
            "the dashboard queries {name}, the daemon does not export it:\n{}",
            last.text
        );
    }
    let plain = promtool_check(&tcp);
    assert!(plain.contains("edgeai_code_runs_total{language=\"javascript\",outcome=\"error\"} 1"), "{plain}");
}

/// Connections over `server.max_connections` never reach routing; they are
/// counted on their own, exactly.
#[test]
fn refused_connections_are_counted() {
    let d = DaemonBuilder::new().set("model.enabled", false).set("server.max_connections", 1).wait_for_model(false).start();
    let holder = TcpStream::connect(d.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..2 {
        d.client().without_key().get("/health").expect_dify_error(503, "service_unavailable");
    }
    drop(holder);
    // Until the daemon has seen the holder go, a scrape is refused too (and counted).
    let u = d.unix_client().without_key();
    let mut refused = 2.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let r = u.request("GET", "/metrics", &[("Accept", PROMETHEUS_ACCEPT)], None);
        match r.status {
            200 => break r.text(),
            503 if Instant::now() < deadline => refused += 1.0,
            other => panic!("scrape answered {other}: {}", r.text()),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let s = parse(&text);
    assert_eq!(s.get("edgeai_http_connections_refused_total"), refused, "{text}");
    assert_eq!(s.get("edgeai_http_requests_total{route=\"/health\",status=\"503\"}"), 0.0, "refusals are not routed requests");
}

#[test]
fn metrics_stay_off_tcp_unless_asked_and_off_everywhere_when_disabled() {
    let d = DaemonBuilder::new().set("model.enabled", false).wait_for_model(false).start();
    let on_socket = scrape(&d.unix_client().without_key());
    assert_eq!(on_socket.get("edgeai_model_state{state=\"disabled\"}"), 1.0, "{}", on_socket.text);
    assert_eq!(on_socket.get("edgeai_inference_threads"), 0.0);
    assert!(!on_socket.text.contains("edgeai_cpu_pressure_ratio{"), "no model, nothing measured:\n{}", on_socket.text);
    promtool_check(&d.unix_client().without_key());
    d.client().without_key().get("/metrics").expect_dify_error(404, "not_found");

    let off = DaemonBuilder::new()
        .set("model.enabled", false)
        .set("metrics.enabled", false)
        .set("metrics.tcp", true)
        .wait_for_model(false)
        .start();
    off.unix_client().without_key().get("/metrics").expect_dify_error(404, "not_found");
    off.client().without_key().get("/metrics").expect_dify_error(404, "not_found");
}
