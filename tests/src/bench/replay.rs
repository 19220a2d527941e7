//! The replayed query log phase (`bench --only replay`): edgeaid with the
//! local model and its response cache on answers a checked-in log of
//! operator questions with repeats (tests/data/replay/queries.jsonl, each a
//! new conversation) from a few concurrent clients, in log order, blocking.
//! Measured: hits and misses as the answers' `metadata.cache.hit` say,
//! checked against the daemon's own counters (`GET /admin/v1/cache` over
//! the unix socket), the best hit rate the log allows, latency of hits and
//! of misses, the daemon's RSS idle, sampled under load and its peak; then
//! the daemon is restarted on the same store and the log's first queries
//! are asked again (does the hit rate survive a restart?).
//! Owns only the daemons it starts, its client connections and the log's
//! parsing; the cache's key rule is the daemon's own `normalise_query`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use edgeai_common::admin::CacheStats;
use edgeai_common::UnixClient;
use edgeaid::cache::key::normalise_query;
use serde_json::Value;

use super::client::{self, BlockingRun};
use super::cpu;
use super::daemon::{Daemon, Launch, Rss};

/// The log, relative to the repository root.
pub const LOG: &str = "tests/data/replay/queries.jsonl";
/// Clients replaying the log at once.
pub const CLIENTS: usize = 4;
/// `max_tokens` of the replay's chat app: a miss is quick.
pub const MAX_TOKENS: u32 = 16;
/// Queries of the log asked again after the restart.
pub const AFTER_RESTART: usize = 50;
/// The replay's chat app's system prompt.
pub const PRE_PROMPT: &str = "You are the chat assistant of a food plant's operators on an industrial edge gateway. \
    Answer in one or two short sentences.";
/// A request that takes longer than this ends the phase.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The daemon's RSS is read this often while the log is replayed.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long an idle daemon settles before its RSS is read.
const SETTLE: Duration = Duration::from_secs(1);
/// Asked once before the replay, not counted: the first answer after a
/// load pays for cold pages. Not a question of the log.
const WARM_UP: &str = "Hello, are you there?";

/// The queries of a log, in order: one JSON object a line with a `query`
/// string; blank lines are skipped.
pub fn parse_log(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("line {}: not JSON: {line}", i + 1))?;
        let q = v.get("query").and_then(Value::as_str).ok_or_else(|| anyhow!("line {}: no \"query\" string: {line}", i + 1))?;
        out.push(q.to_owned());
    }
    if out.is_empty() {
        bail!("the log has no query");
    }
    Ok(out)
}

/// A query as the response cache's key sees it (the daemon's rule).
pub fn cache_key(query: &str) -> String {
    normalise_query(query)
}

/// A query with case and trailing punctuation folded too: what a looser
/// key would make of it (for comparison only).
fn loose_key(query: &str) -> String {
    normalise_query(query).to_lowercase().trim_end_matches(['?', '!', '.', ' ']).to_owned()
}

/// What a log allows before it is replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub requests: usize,
    /// Distinct queries as the cache keys them.
    pub keys: usize,
    /// Distinct queries with case and trailing punctuation folded too.
    pub loose_keys: usize,
}

impl Expected {
    pub fn of(queries: &[String]) -> Expected {
        let keys: HashSet<String> = queries.iter().map(|q| cache_key(q)).collect();
        let loose: HashSet<String> = queries.iter().map(|q| loose_key(q)).collect();
        Expected { requests: queries.len(), keys: keys.len(), loose_keys: loose.len() }
    }

    /// 1 - distinct keys / requests: every first asking misses, every repeat hits.
    pub fn best_hit_rate(&self) -> f64 {
        1.0 - self.keys as f64 / self.requests.max(1) as f64
    }

    /// The same with the looser key.
    pub fn loose_hit_rate(&self) -> f64 {
        1.0 - self.loose_keys as f64 / self.requests.max(1) as f64
    }
}

/// How a request stood towards the earlier ones with the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The first of its key in the log: must miss.
    First,
    /// An earlier one's answer had arrived before this was sent: must hit.
    RepeatAnswered,
    /// Earlier ones were still being answered (the cache does not coalesce
    /// requests): a miss is expected, a hit possible.
    RepeatInFlight,
}

/// One request of a replay.
#[derive(Debug, Clone)]
pub struct Asked {
    /// Position in the log.
    pub index: usize,
    pub run: BlockingRun,
}

/// Each request's [`Kind`]; `keys[i]` is the key of `asked[i]`, both in log order.
pub fn classify(keys: &[String], asked: &[Asked]) -> Vec<Kind> {
    asked
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let earlier: Vec<&Asked> = asked[..i].iter().zip(&keys[..i]).filter(|(_, k)| **k == keys[i]).map(|(e, _)| e).collect();
            if earlier.is_empty() {
                Kind::First
            } else if earlier.iter().any(|e| e.run.done <= a.run.sent) {
                Kind::RepeatAnswered
            } else {
                Kind::RepeatInFlight
            }
        })
        .collect()
}

/// Sends `queries` from `clients` concurrent clients, each taking the next
/// query of the log when its previous answer arrived; returns them in log order.
async fn replay(d: &Daemon, queries: &[String], clients: usize) -> Result<Vec<Asked>> {
    let queries: Arc<Vec<String>> = Arc::new(queries.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (queries, next, addr, key) = (Arc::clone(&queries), Arc::clone(&next), d.addr, d.key.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(q) = queries.get(index) else { break };
                    let run = tokio::time::timeout(REQUEST_TIMEOUT, client::chat_blocking(addr, &key, &format!("operator-{c}"), q))
                        .await
                        .map_err(|_| anyhow!("no answer within {REQUEST_TIMEOUT:?}"))
                        .and_then(|r| r)
                        .with_context(|| format!("query {} of the log ({q:?})", index + 1))?;
                    mine.push(Asked { index, run });
                }
                anyhow::Ok(mine)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(queries.len());
    for t in tasks {
        all.extend(t.await.context("a replay client")??);
    }
    all.sort_by_key(|a| a.index);
    Ok(all)
}

/// What [`Sampler`] saw.
#[derive(Debug, Clone, Default)]
struct Samples {
    /// The largest RSS read, and how many reads.
    max: Option<Rss>,
    n: usize,
    /// Cores other processes kept busy, per [`CPU_WINDOW`] (seconds since the start, cores).
    foreign: Vec<(f64, f64)>,
}

/// Other processes' CPU is averaged over windows this long.
const CPU_WINDOW: Duration = Duration::from_secs(1);

/// A process's RSS, read every [`SAMPLE_EVERY`], and the other processes'
/// CPU, on a thread of its own until [`Sampler::stop`].
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Samples>,
}

impl Sampler {
    /// `began` is the instant the windows' times count from.
    fn start(pid: u32, began: Instant) -> Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bench-rss".into())
            .spawn(move || {
                let mut s = Samples::default();
                let mut window = cpu::snapshot(Some(pid)).ok().map(|c| (Instant::now(), c));
                while !flag.load(Ordering::Relaxed) {
                    if let Ok(r) = Rss::read(pid) {
                        s.n += 1;
                        if s.max.is_none_or(|m| r.vm_rss_kb > m.vm_rss_kb) {
                            s.max = Some(r);
                        }
                    }
                    if let Some((at, c)) = window.filter(|(at, _)| at.elapsed() >= CPU_WINDOW) {
                        window = cpu::snapshot(Some(pid)).ok().map(|n| {
                            s.foreign.push((at.saturating_duration_since(began).as_secs_f64(), c.foreign_cores_until(&n)));
                            (Instant::now(), n)
                        });
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
                s
            })
            .context("starting the RSS sampler")?;
        Ok(Sampler { stop, thread })
    }

    fn stop(self) -> Result<Samples> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow!("the RSS sampler panicked"))
    }
}

/// The daemon's cache counters.
async fn stats(admin: &UnixClient) -> Result<CacheStats> {
    admin.get("/admin/v1/cache").await.context("GET /admin/v1/cache")
}

/// Hits and misses the answers reported must be what the daemon counted
/// between `before` and `after`.
fn agree(asked: &[Asked], before: &CacheStats, after: &CacheStats) -> Result<()> {
    let hits = asked.iter().filter(|a| a.run.cache_hit).count() as u64;
    let misses = asked.len() as u64 - hits;
    let (d_hits, d_misses) = (after.hits.saturating_sub(before.hits), after.misses.saturating_sub(before.misses));
    if (hits, misses) != (d_hits, d_misses) {
        bail!(
            "the answers' metadata.cache.hit counted {hits} hits and {misses} misses, but GET /admin/v1/cache counted \
             {d_hits} hits and {d_misses} misses over the same requests (before {before:?}, after {after:?})"
        );
    }
    Ok(())
}

/// The replay after the restart.
#[derive(Debug, Clone)]
pub struct Restarted {
    /// Entries before the SIGTERM, and loaded by the new daemon.
    pub entries_before: u64,
    pub entries_loaded: u64,
    pub asked: Vec<Asked>,
    /// Of those queries, the ones whose key was asked before the restart.
    pub cached_before: usize,
    /// 1 - distinct keys / queries: what repeats alone would give without persistence.
    pub without_persistence: f64,
}

/// Everything the phase measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub expected: Expected,
    pub asked: Vec<Asked>,
    pub kinds: Vec<Kind>,
    pub replay_s: f64,
    /// Cores other processes (not the bench, not the daemon) kept busy during the replay.
    pub foreign_cores: f64,
    /// The same per second of the replay: (seconds since it began, cores).
    pub foreign_per_s: Vec<(f64, f64)>,
    /// When the replay began (the requests' `sent` are later).
    pub began: Instant,
    /// The inference threads the daemon started with, and how many times
    /// its governor changed them for the CPU load during the replay.
    pub threads_at_start: Option<u64>,
    pub thread_changes: usize,
    /// The daemon's counters after the replay.
    pub stats: CacheStats,
    pub idle: Rss,
    /// The largest RSS sampled during the replay, and how many samples.
    pub under_load: Option<Rss>,
    pub samples: usize,
    /// Just before the SIGTERM (its VmHWM is the peak).
    pub end: Rss,
    pub restarted: Restarted,
}

/// Starts edgeaid with `launch` (its cache on, its chat app greedy), replays
/// `queries`, restarts it on the same store and asks the first
/// [`AFTER_RESTART`] again.
pub async fn measure(launch: &Launch<'_>, queries: &[String]) -> Result<Measured> {
    if !launch.cache {
        bail!("the replay measures the response cache: start edgeaid with cache.enabled = true");
    }
    let expected = Expected::of(queries);
    let admin = UnixClient::new(launch.dir.join("edgeai.sock"));
    let mut d = Daemon::start(launch).await?;
    d.wait_model_ready(Duration::from_secs(120)).await?;
    client::chat_blocking(d.addr, &d.key, "warm-up", WARM_UP).await.context("the warm-up request")?;
    tokio::time::sleep(SETTLE).await;
    let idle = d.rss()?;

    let before = stats(&admin).await?;
    let cpu_before = cpu::snapshot(Some(d.pid))?;
    let began = Instant::now();
    let sampler = Sampler::start(d.pid, began)?;
    let replayed = replay(&d, queries, CLIENTS).await;
    let replay_s = began.elapsed().as_secs_f64();
    let foreign_cores = cpu_before.foreign_cores_until(&cpu::snapshot(Some(d.pid))?);
    let Samples { max: under_load, n: samples, foreign: foreign_per_s } = sampler.stop()?;
    let asked = replayed?;
    let after = stats(&admin).await?;
    agree(&asked, &before, &after)?;
    let keys: Vec<String> = queries.iter().map(|q| cache_key(q)).collect();
    let kinds = classify(&keys, &asked);
    let end = d.rss()?;
    let threads_at_start =
        d.event_at(|m| m.starts_with("inference threads")).and_then(|(_, e)| e.pointer("/fields/threads").and_then(Value::as_u64));
    let thread_changes = d.events("inference threads changed for the CPU load").len();
    let status = d.stop().await?;
    if !status.success() {
        bail!("edgeaid exited with {status} after SIGTERM");
    }

    // Same directory, so the same store: the entries are loaded before READY=1.
    let mut d = Daemon::start(launch).await?;
    let loaded = stats(&admin).await?;
    d.wait_model_ready(Duration::from_secs(120)).await?;
    let first = &queries[..AFTER_RESTART.min(queries.len())];
    let again = replay(&d, first, CLIENTS).await?;
    agree(&again, &loaded, &stats(&admin).await?)?;
    let status = d.stop().await?;
    if !status.success() {
        bail!("edgeaid exited with {status} after SIGTERM (after the restart)");
    }
    let asked_before: HashSet<&String> = keys.iter().collect();
    let restarted = Restarted {
        entries_before: after.entries,
        entries_loaded: loaded.entries,
        cached_before: first.iter().filter(|q| asked_before.contains(&cache_key(q))).count(),
        without_persistence: Expected::of(first).best_hit_rate(),
        asked: again,
    };
    Ok(Measured {
        expected,
        asked,
        kinds,
        replay_s,
        foreign_cores,
        foreign_per_s,
        began,
        threads_at_start,
        thread_changes,
        stats: after,
        idle,
        under_load,
        samples,
        end,
        restarted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sent_ms: u64, done_ms: u64, hit: bool, t0: Instant) -> BlockingRun {
        BlockingRun { sent: t0 + Duration::from_millis(sent_ms), done: t0 + Duration::from_millis(done_ms), cache_hit: hit }
    }

    #[test]
    fn the_log_is_parsed_and_bad_lines_named() {
        let q = parse_log("{\"query\": \"What is a PLC?\"}\n\n{\"query\": \"  what is a PLC? \", \"note\": 1}\n").expect("parsed");
        assert_eq!(q, ["What is a PLC?", "  what is a PLC? "]);
        assert!(parse_log("{\"query\": 1}\n").unwrap_err().to_string().contains("line 1: no \"query\" string"));
        assert!(parse_log("{\"query\": \"a\"}\nnot json\n").unwrap_err().to_string().contains("line 2: not JSON"));
        assert!(parse_log("\n \n").unwrap_err().to_string().contains("no query"));
    }

    #[test]
    fn the_best_hit_rate_counts_keys_as_the_daemon_makes_them() {
        let log: Vec<String> =
            ["What is a PLC?", "What  is a PLC?\n", "\tWhat is a PLC?", "what is a plc?", "What is a PLC", "Name a fieldbus."]
                .map(String::from)
                .to_vec();
        let e = Expected::of(&log);
        // Whitespace folds (3 -> 1); case and punctuation do not.
        assert_eq!((e.requests, e.keys, e.loose_keys), (6, 4, 2));
        assert!((e.best_hit_rate() - (1.0 - 4.0 / 6.0)).abs() < 1e-12);
        assert!((e.loose_hit_rate() - (1.0 - 2.0 / 6.0)).abs() < 1e-12);
    }

    #[test]
    fn repeats_are_told_apart_by_whether_the_first_answer_had_arrived() {
        let t0 = Instant::now();
        let keys: Vec<String> = ["a", "a", "b", "a"].map(String::from).to_vec();
        let asked: Vec<Asked> = [run(0, 300, false, t0), run(10, 320, false, t0), run(20, 40, false, t0), run(310, 311, true, t0)]
            .into_iter()
            .enumerate()
            .map(|(index, run)| Asked { index, run })
            .collect();
        let kinds = classify(&keys, &asked);
        assert_eq!(kinds, [Kind::First, Kind::RepeatInFlight, Kind::First, Kind::RepeatAnswered]);
    }

    #[test]
    fn the_daemons_counters_must_match_the_answers() {
        let t0 = Instant::now();
        let asked: Vec<Asked> =
            [run(0, 1, false, t0), run(2, 3, true, t0)].into_iter().enumerate().map(|(index, run)| Asked { index, run }).collect();
        let at = |hits, misses| CacheStats { enabled: true, hits, misses, hit_rate: 0.0, entries: 0, bytes: 0, max_bytes: 0, evictions: 0 };
        agree(&asked, &at(5, 7), &at(6, 8)).expect("one hit, one miss on both sides");
        let err = agree(&asked, &at(5, 7), &at(5, 9)).unwrap_err().to_string();
        assert!(err.contains("counted 1 hits and 1 misses, but GET /admin/v1/cache counted 0 hits and 2 misses"), "{err}");
    }

    #[test]
    fn the_checked_in_log_has_the_counts_its_readme_states() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/replay/queries.jsonl");
        let log = parse_log(&std::fs::read_to_string(&path).expect("the log is checked in")).expect("parsed");
        let exact: HashSet<&String> = log.iter().collect();
        let e = Expected::of(&log);
        assert_eq!((e.requests, exact.len(), e.keys, e.loose_keys), (300, 123, 100, 60), "tests/data/replay/README.md");
        assert_eq!(Expected::of(&log[..AFTER_RESTART]).keys, 33, "the first 50 lines' keys, as the README says");
    }
}
