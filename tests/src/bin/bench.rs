//! `bench`: how fast and how small the real `edgeaid` is, next to a bare
//! llama-cpp-2 decode loop on the same model, thread count, context
//! parameters and chat-templated prompt. A bench, not a test: every figure
//! is printed next to its target with PASS or MISS, and the process exits 0
//! unless a figure could not be measured at all.
//!
//! Measured, in this order (the daemon and the bare loop never run at the
//! same time):
//! 1. start-up: exec → READY=1 on a fake NOTIFY_SOCKET, the daemon's own
//!    `ready_ms`, exec → `/ready` 200 (model loaded); median of `--starts`;
//! 2. the same without a model (`model.enabled = false`), with its idle RSS;
//! 3. idle RSS of a daemon with the model loaded (1 s after `/ready` is 200);
//! 4. generation: the bare loop and `POST /v1/chat-messages` (streaming)
//!    alternately, `--rounds` rounds of `--tokens` greedy tokens each;
//! 5. four concurrent streaming clients (continuous batching);
//! 6. RSS after all that, and the SIGTERM → exit time;
//! 7. the multilingual model (Gemma 3 270M, configs/gemma.toml) through the
//!    daemon alone: idle RSS, streaming generation tok/s and TTFT over
//!    `--rounds` rounds (at most 5), RSS after (skipped with a note when
//!    its GGUF was not fetched, or with `--gemma off`);
//! 8. the workflow engine: runs/s and p50/p99 of a six-node workflow over
//!    HTTP with an instant upstream model, next to `GET /v1/info`;
//! 9. the knowledge vector index in this process: append throughput,
//!    top-10 search p50/p99 at 10k and 100k vectors of 384 dims next to a
//!    naive scan, RSS growth (`--only vectors`: this phase alone, without
//!    edgeaid or a model);
//! 10. knowledge bases through edgeaid with the embedding model and no chat
//!     model (bench/knowledge.rs): embedding texts/s over HTTP next to the
//!     embedder in this process, ingestion segments/s, recall@5 on the
//!     labelled set per method and language, `/retrieve` p50/p99 at 10k and
//!     100k segments and the daemon's RSS growth (`--only knowledge`: this
//!     phase alone, written to bench-results/bench-knowledge.json);
//! 11. code nodes (bench/code.rs): per-call time of a trivial `main` in
//!     edgeaid's sandbox in this process, JavaScript next to a serde_json
//!     round trip, Python with a pool of 0 (cold), 1 and 2 (warm and back to
//!     back) next to a bare interpreter spawn; then a start → code → end
//!     workflow over HTTP in both languages next to the same graph with a
//!     template-transform node, and the daemon's RSS around the runs
//!     (`--only code`: this phase alone, written to
//!     bench-results/bench-code.json).
//! 12. KV cache types (bench/kv.rs), only with `--only kv`: edgeaid started
//!     once per `model.kv_type_k`/`model.kv_type_v` mix (q8_0/q8_0, f16/q8_0,
//!     f16/f16, q4_0/q4_0, and f16/f16 with half the cells): reading a new
//!     ~700-token prompt (prompt tokens / time to first token, 3 rounds),
//!     one stream's decode tok/s, RSS idle and after, with ratios against
//!     q8_0/q8_0; written to bench-results/bench-kv.json.
//! 13. time to first token under load (bench/ttft.rs), only with `--only
//!     ttft`: four streams generate, a ~2k-token prompt is read and short
//!     requests arrive every 300 ms; their TTFT p50/p99 with prompt chunks
//!     bounded by batch_size (`model.step_budget_ms = 0`) and by the time
//!     budget (60 ms), rounds alternating on fresh daemons; written to
//!     bench-results/bench-ttft.json.
//! 14. side by side with llama.cpp's own llama-server (bench/server.rs), only
//!     with `--only server`: edgeaid (its default f16 KV, and q8_0/q8_0),
//!     and llama-server built by scripts/build-llama-server.sh, same model,
//!     threads, 4 slots, context 4096, the same OpenAI-chat workload over
//!     HTTP in 3 alternating rounds: one stream's decode, TTFT of a new
//!     ~700-token system prompt and of the same prompt with a new question,
//!     tiny requests (1 token, 4 clients) req/s and p99, 4 streams' aggregate
//!     tok/s, TTFT of a short request arriving while they stream, RSS idle
//!     and after; medians and ratios; written to bench-results/bench-server.json.
//! 15. the HTTP path under a load generator (bench/http.rs, bench/load.rs),
//!     only with `--only http`: `wrk -t1 -c32` (TCP) and the `uds-load` bin
//!     (unix socket) as separate processes on the same cores, against
//!     edgeaid without a local model: `GET /health`, `GET /v1/parameters`
//!     with an app key, blocking `POST /v1/chat-messages` answered by an
//!     instant upstream (the `ceiling upstream` bin); and the ceiling, a bare
//!     hyper server with one SQLite commit per request (`ceiling sqlite`),
//!     in the same run; req/s, p50/p99, the daemon's RSS idle, under load
//!     and peak; written to bench-results/bench-http.json.
//! 16. the response cache on a replayed query log (bench/replay.rs), only
//!     with `--only replay`: edgeaid with the model and its cache on answers
//!     tests/data/replay/queries.jsonl (300 operator questions, 60 distinct,
//!     Zipf-like repeats, some differing only in whitespace, case or trailing
//!     punctuation; blocking, max_tokens 16) from 4 clients in log order: hits
//!     and misses from the answers' `metadata.cache.hit`, which must agree with
//!     the daemon's `GET /admin/v1/cache`, next to the best hit rate the log
//!     allows; hit and miss latency p50/p99, cache bytes, entries and
//!     evictions, RSS idle, under load and peak; then a restart on the same
//!     store and the first 50 queries again (the hit rate after a restart);
//!     written to bench-results/bench-replay.json.
//!
//! Writes `bench-results/bench.json` at the repository root (or `--out`).
//! The edgeaid measured is the one next to this binary (same
//! target/<profile>/ directory) unless `--edgeaid PATH` names another.

#[path = "../bench/mod.rs"]
mod bench;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde_json::{json, Map, Value};
use tokio::runtime::Runtime;

use bench::bare::{self, BareRun, Baseline, Shape};
use bench::client::{self, StreamRun};
use bench::cpu;
use bench::daemon::{BenchApp, Daemon, Launch, Rss};
use bench::report::{median, Table};

const USAGE: &str = "\
usage: bench [--edgeaid PATH] [--model PATH] [--gemma PATH|off] [--tokens N] [--rounds N]
             [--starts N] [--threads N] [--out FILE]
             [--only workflow|vectors|knowledge|code|kv|ttft|server|http|replay]

  --edgeaid PATH  edgeaid binary to measure (default: next to this binary)
  --model PATH    GGUF model (default: .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf)
  --gemma PATH    the second model, run with model.chat_template = \"gemma\"
                  (default: .cache/models/gemma-3-270m-q4_k_m.gguf; off: skip it)
  --tokens N      tokens per answer (max_tokens), default 128
  --rounds N      bare/daemon rounds counted on a quiet machine, default 9
  --starts N      daemon starts for the start-up timing, default 5
  --threads N     inference threads for both (default: the daemon's own choice)
  --out FILE      JSON results (default: bench-results/bench.json in the repo)
  --only workflow only the workflow engine phase (no model needed)
  --only vectors  only the vector index phase (no daemon, no model)
  --only knowledge  only the knowledge phase (edgeaid with the embedding model
                  .cache/models/multilingual-e5-small-q4_0.gguf, no chat model)
  --only code     only the code node phase (sandbox in this process, then
                  edgeaid without a model)
  --only kv       only the KV cache types phase (edgeaid with the model, once
                  per model.kv_type_k/kv_type_v mix)
  --only ttft     only the time-to-first-token-under-load phase (edgeaid with
                  the model, step_budget_ms 0 and 60 in turn)
  --only server   only edgeaid next to llama.cpp's llama-server (built by
                  scripts/build-llama-server.sh into .cache/llama-server;
                  without it the llama-server column is skipped, with the reason)
  --only http     only the HTTP path under wrk / uds-load, next to a bare
                  hyper + SQLite server (needs wrk, and the ceiling and
                  uds-load bins: cargo build --release -p edgeai-tests --bins)
  --only replay   only the response cache on a replayed query log (edgeaid
                  with the model, tests/data/replay/queries.jsonl), then a
                  restart on the same store";

/// The daemon's context parameters (configs/dev.toml, daemon/src/model/local.rs).
const N_CTX: u32 = 4096;
const SLOTS: u32 = 4;
const BATCH: u32 = 512;
const CLIENTS: usize = 4;
const CONCURRENT_ROUNDS: usize = 2;
const NO_MODEL_STARTS: usize = 3;
/// Rounds of the second model's phase, at most.
const SECOND_MODEL_ROUNDS: usize = 5;
/// The second model's llama.cpp built-in chat template (configs/gemma.toml).
const GEMMA_TEMPLATE: &str = "gemma";
/// Pause between runs, so OpenMP threads that spin after a decode have
/// gone to sleep before the other side starts.
const SETTLE: Duration = Duration::from_millis(250);
/// How long an idle daemon settles before its RSS is read.
const RSS_SETTLE: Duration = Duration::from_secs(1);

/// The bench app's system prompt: asks for long answers, so greedy decoding
/// rarely hits end-of-generation before `--tokens`.
const PRE_PROMPT: &str = "You are a storyteller running on an industrial edge gateway. \
    You write long, detailed stories with many scenes and characters.";
const TOPICS: [&str; 6] = [
    "Write a long story about a lighthouse keeper who finds a mysterious map.",
    "Write a long story about a robot that learns to paint.",
    "Write a long story about two friends who build a boat and sail around the world.",
    "Write a long story about a village that discovers a hidden garden.",
    "Write a long story about an engineer who repairs an old steam train.",
    "Write a long story about a cat who becomes the mayor of a small town.",
];

/// Targets from the issue.
const TARGET_RATIO: f64 = 0.95;
const TARGET_RSS_MODEL_MB: f64 = 200.0;
const TARGET_RSS_NO_MODEL_MB: f64 = 30.0;
const TARGET_READY_MS: f64 = 300.0;
/// Above this many cores of other processes' CPU during a timed run, the
/// figures say more about the machine than about edgeaid.
const QUIET_CORES: f64 = 0.05;

struct Args {
    edgeaid: Option<PathBuf>,
    model: Option<PathBuf>,
    /// `None`: the default path; `Some(None)`: `--gemma off`.
    gemma: Option<Option<PathBuf>>,
    tokens: u32,
    rounds: usize,
    starts: usize,
    threads: Option<u32>,
    out: Option<PathBuf>,
    /// `--only workflow`: phase 8 alone.
    only_workflow: bool,
    /// `--only vectors`: phase 9 alone.
    only_vectors: bool,
    /// `--only knowledge`: phase 10 alone.
    only_knowledge: bool,
    /// `--only code`: phase 11 alone.
    only_code: bool,
    /// `--only kv`: phase 12 alone.
    only_kv: bool,
    /// `--only ttft`: phase 13 alone.
    only_ttft: bool,
    /// `--only server`: phase 14 alone.
    only_server: bool,
    /// `--only http`: phase 15 alone.
    only_http: bool,
    /// `--only replay`: phase 16 alone.
    only_replay: bool,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Option<Args>> {
    let mut a = Args {
        edgeaid: None,
        model: None,
        gemma: None,
        tokens: 128,
        rounds: 9,
        starts: 5,
        threads: None,
        out: None,
        only_workflow: false,
        only_vectors: false,
        only_knowledge: false,
        only_code: false,
        only_kv: false,
        only_ttft: false,
        only_server: false,
        only_http: false,
        only_replay: false,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        let number = |what: &str| -> Result<u64> {
            match value.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{what} must be a positive integer, not {value:?}"),
            }
        };
        match flag.as_str() {
            "--edgeaid" => a.edgeaid = Some(PathBuf::from(&value)),
            "--model" => a.model = Some(PathBuf::from(&value)),
            "--gemma" => a.gemma = Some((value != "off").then(|| PathBuf::from(&value))),
            "--tokens" => a.tokens = u32::try_from(number("--tokens")?.min(2048))?,
            "--rounds" => a.rounds = usize::try_from(number("--rounds")?.min(50))?,
            "--starts" => a.starts = usize::try_from(number("--starts")?.min(50))?,
            "--threads" => a.threads = Some(u32::try_from(number("--threads")?.min(256))?),
            "--out" => a.out = Some(PathBuf::from(&value)),
            "--only" if value == "workflow" => a.only_workflow = true,
            "--only" if value == "vectors" => a.only_vectors = true,
            "--only" if value == "knowledge" => a.only_knowledge = true,
            "--only" if value == "code" => a.only_code = true,
            "--only" if value == "kv" => a.only_kv = true,
            "--only" if value == "ttft" => a.only_ttft = true,
            "--only" if value == "server" => a.only_server = true,
            "--only" if value == "http" => a.only_http = true,
            "--only" if value == "replay" => a.only_replay = true,
            "--only" => {
                bail!("--only takes `workflow`, `vectors`, `knowledge`, `code`, `kv`, `ttft`, `server`, `http` or `replay`, not {value:?}")
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some figures could not be measured (ERROR rows above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root (this crate is `<root>/tests`).
fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1000.0)
}

fn opt_ms(s: Option<f64>) -> String {
    s.map(ms).unwrap_or_else(|| "n/a".into())
}

fn tok_s(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1} tok/s")).unwrap_or_else(|| "n/a".into())
}

/// kB (as /proc reports, KiB) to MB (10^6 bytes).
fn mb(kb: u64) -> f64 {
    kb as f64 * 1024.0 / 1e6
}

fn rss_json(r: &Rss) -> Value {
    json!({"vm_rss_kb": r.vm_rss_kb, "rss_anon_kb": r.rss_anon_kb, "rss_file_kb": r.rss_file_kb,
           "rss_shmem_kb": r.rss_shmem_kb, "vm_hwm_kb": r.vm_hwm_kb, "threads": r.threads,
           "vm_rss_mb": mb(r.vm_rss_kb)})
}

fn rss_breakdown(r: &Rss) -> String {
    format!(
        "anon {:.1} MB, file {:.1} MB, shmem {:.1} MB, peak {:.1} MB",
        mb(r.rss_anon_kb),
        mb(r.rss_file_kb),
        mb(r.rss_shmem_kb),
        mb(r.vm_hwm_kb)
    )
}

/// The edgeaid to measure: `--edgeaid`, else the one next to this binary.
fn locate_edgeaid(given: Option<PathBuf>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p,
        None => {
            let me = std::env::current_exe().context("locating the bench binary")?;
            me.parent().map(|d| d.join("edgeaid")).ok_or_else(|| anyhow!("{} has no parent directory", me.display()))?
        }
    };
    if !path.is_file() {
        bail!(
            "{} does not exist; build it first with `cargo build --release -p edgeai-daemon` \
             (same CARGO_TARGET_DIR as the bench) or pass --edgeaid PATH",
            path.display()
        );
    }
    Ok(path)
}

/// The cargo profile a binary was built with: its target/<profile>/ directory.
fn profile_of(bin: &Path) -> String {
    bin.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Whether any file under `dir` is newer than `than` (a stale binary).
fn newer_source(dir: &Path, than: std::time::SystemTime) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(found) = newer_source(&p, than) {
                return Some(found);
            }
        } else if e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t > than) {
            return Some(p);
        }
    }
    None
}

fn git(repo: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").arg("--no-optional-locks").arg("-C").arg(repo).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The x86 features this bench binary was compiled for (the daemon logs its own).
fn compiled_features() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(target_feature = "sse4.2") {
        v.push("sse4.2");
    }
    if cfg!(target_feature = "avx") {
        v.push("avx");
    }
    if cfg!(target_feature = "avx2") {
        v.push("avx2");
    }
    if cfg!(target_feature = "fma") {
        v.push("fma");
    }
    if cfg!(target_feature = "f16c") {
        v.push("f16c");
    }
    if cfg!(target_feature = "bmi2") {
        v.push("bmi2");
    }
    if cfg!(target_feature = "avx512f") {
        v.push("avx512f");
    }
    v
}

/// Everything the phases share.
struct Ctx {
    rt: Runtime,
    edgeaid: PathBuf,
    model: PathBuf,
    dir_model: PathBuf,
    dir_no_model: PathBuf,
    threads: Option<u32>,
    app: BenchApp,
    table: Table,
    json: Map<String, Value>,
    errors: Vec<String>,
}

impl Ctx {
    fn launch<'a>(&'a self, dir: &'a Path, model: Option<&'a Path>) -> Launch<'a> {
        Launch {
            exe: &self.edgeaid,
            dir,
            model,
            threads: self.threads,
            n_ctx: N_CTX,
            slots: SLOTS,
            batch: BATCH,
            chat_template: None,
            kv_types: None,
            model_extra: String::new(),
            cache: false,
            synchronous: "full",
            app: &self.app,
            extra_config: String::new(),
        }
    }

    fn failed(&mut self, figure: &str, e: &anyhow::Error) {
        let msg = format!("{e:#}");
        progress(&format!("{figure}: {msg}"));
        self.table.error(figure, msg.lines().next().unwrap_or_default().chars().take(60).collect());
        self.errors.push(format!("{figure}: {msg}"));
    }
}

/// What the start-up phase learned about the daemon.
struct DaemonFacts {
    threads: u32,
    threads_event: Value,
    cpu: String,
}

/// Workflow runs the engine phase sends, and the connections it sends them on.
const WORKFLOW_RUNS: usize = 4000;
const WORKFLOW_CONNECTIONS: usize = 4;
const TARGET_WORKFLOW_RUNS_PER_S: f64 = 2000.0;
const TARGET_WORKFLOW_P99_MS: f64 = 5.0;

/// Phase 8, the workflow engine's overhead: the six-node fixture
/// (tests/fixtures/dsl/workflow-six-nodes.yml) run over HTTP, blocking,
/// its LLM node answered at once by an upstream peer in this process (no
/// local model), against `GET /v1/info` on the same connections as the
/// baseline.
fn workflow_engine(cx: &mut Ctx, repo: &Path, dir: &Path) -> Result<()> {
    use bench::workflow::{hammer, Target};
    use edgeai_tests::peer::{Peer, Reply};
    progress("workflow engine: six-node workflow, instant upstream model");
    let peer = Peer::start(Reply::Stream { pieces: vec!["ok".into()], delay: Duration::ZERO });
    let mut launch = cx.launch(dir, None);
    launch.extra_config = format!("\n[upstream]\nurl = {:?}\nmodel = \"peer\"\n\n[model_map]\ndefault = \"upstream\"\n", peer.openai_url());
    let yaml = std::fs::read_to_string(repo.join("tests/fixtures/dsl/workflow-six-nodes.yml")).context("reading the six-node fixture")?;
    let figures = cx.rt.block_on(async {
        let d = Daemon::start(&launch).await?;
        let admin = edgeai_common::UnixClient::new(dir.join("edgeai.sock"));
        let req = json!({"yaml": yaml, "id": "bench-flow"});
        let imported: Value = admin.post_json("/admin/v1/apps/dsl", &req).await.context("importing the six-node workflow")?;
        let created: Value = admin.post_json("/admin/v1/keys", &json!({"app": "bench-flow"})).await.context("creating a key")?;
        let key = created["key"].as_str().ok_or_else(|| anyhow!("no key in {created}"))?.to_owned();
        let run = Target {
            method: http::Method::POST,
            path: "/v1/workflows/run".into(),
            body: Some(json!({"inputs": {"name": "pump 3", "mode": "model"}, "response_mode": "blocking", "user": "bench"})),
            check_workflow: true,
        };
        let info = Target { method: http::Method::GET, path: "/v1/info".into(), body: None, check_workflow: false };
        // Warm-up, then the baseline and the runs, alternately twice.
        hammer(d.addr, &key, &run, 200, WORKFLOW_CONNECTIONS).await?;
        let mut base = Vec::new();
        let mut flows = Vec::new();
        for _ in 0..2 {
            base.push(hammer(d.addr, &key, &info, WORKFLOW_RUNS / 2, WORKFLOW_CONNECTIONS).await?);
            flows.push(hammer(d.addr, &key, &run, WORKFLOW_RUNS / 2, WORKFLOW_CONNECTIONS).await?);
        }
        let rss = d.rss()?;
        let status = d.stop().await?;
        if !status.success() {
            bail!("edgeaid exited with {status} after SIGTERM");
        }
        Ok::<_, anyhow::Error>((imported, base, flows, rss))
    })?;
    let (imported, base, flows, rss) = figures;
    let merge = |v: &[bench::workflow::Figures]| bench::workflow::Figures {
        requests: v.iter().map(|f| f.requests).sum(),
        wall: v.iter().map(|f| f.wall).sum(),
        latencies: v.iter().flat_map(|f| f.latencies.iter().copied()).collect(),
    };
    let (base, flows) = (merge(&base), merge(&flows));
    let t = &mut cx.table;
    t.section(&format!(
        "Workflow engine: six-node workflow over HTTP, blocking, {WORKFLOW_CONNECTIONS} keep-alive connections, instant upstream model"
    ));
    t.target(
        &format!("workflow runs/s ({} runs)", flows.requests),
        format!("{:.0} runs/s", flows.per_sec()),
        ">= 2000 runs/s",
        flows.per_sec() >= TARGET_WORKFLOW_RUNS_PER_S,
    );
    t.info("  run latency p50", format!("{:.2} ms", flows.quantile_ms(0.5)));
    t.target(
        "  run latency p99",
        format!("{:.2} ms", flows.quantile_ms(0.99)),
        "<= 5 ms",
        flows.quantile_ms(0.99) <= TARGET_WORKFLOW_P99_MS,
    );
    t.info(
        "baseline GET /v1/info (auth + HTTP)",
        format!("{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms", base.per_sec(), base.quantile_ms(0.5), base.quantile_ms(0.99)),
    );
    t.info("  workflow / baseline throughput", format!("{:.2}", flows.per_sec() / base.per_sec().max(1e-9)));
    t.info("  RSS after the runs", format!("{:.1} MB", rss.vm_rss_kb as f64 / 1024.0));
    cx.json.insert(
        "workflow_engine".into(),
        json!({"runs": flows.requests, "connections": WORKFLOW_CONNECTIONS, "runs_per_s": flows.per_sec(),
               "p50_ms": flows.quantile_ms(0.5), "p99_ms": flows.quantile_ms(0.99),
               "baseline_info_per_s": base.per_sec(), "baseline_p50_ms": base.quantile_ms(0.5), "baseline_p99_ms": base.quantile_ms(0.99),
               "rss_kb_after": rss.vm_rss_kb, "import": imported, "upstream_requests": peer.received().len()}),
    );
    Ok(())
}

/// Sizes of the vector index phase, its vectors' dims, vectors per append,
/// queries per size, hits per query.
const VECTOR_SIZES: [usize; 2] = [10_000, 100_000];
const VECTOR_DIMS: usize = 384;
const VECTOR_BATCH: usize = 1000;
const VECTOR_QUERIES: usize = 200;
const VECTOR_K: usize = 10;
const TARGET_VECTOR_SEARCH_MS: f64 = 10.0;

/// Phase 9, the knowledge vector index (no daemon): see bench/vectors.rs.
fn vector_index(t: &mut Table, json: &mut Map<String, Value>, dir: &Path) -> Result<()> {
    use bench::vectors::{measure, quantile_ms};
    let mut sizes = Vec::new();
    for n in VECTOR_SIZES {
        progress(&format!("vector index: {n} vectors of {VECTOR_DIMS} dims"));
        let f = measure(&dir.join(n.to_string()), n, VECTOR_DIMS, VECTOR_BATCH, VECTOR_QUERIES, VECTOR_K)?;
        let q = |d: &[Duration], p: f64| quantile_ms(d, p);
        let (p50, p99) = (q(&f.search, 0.5), q(&f.search, 0.99));
        let per_100k = |kb_before: u64, kb_after: u64| mb(kb_after.saturating_sub(kb_before)) * 100_000.0 / n as f64;
        let anon = per_100k(f.rss_before.rss_anon_kb, f.rss_after.rss_anon_kb);
        let file = per_100k(f.rss_before.rss_file_kb, f.rss_after.rss_file_kb);
        t.section(&format!(
            "Vector index: {n} random unit vectors of {VECTOR_DIMS} dims, top-{VECTOR_K}, {VECTOR_QUERIES} queries, in-process"
        ));
        t.info(
            &format!("append ({} files of {VECTOR_BATCH}, fsynced)", f.files),
            format!("{:.0} vectors/s, {:.1} MB on disk", f.append_per_s(), f.bytes_files as f64 / 1e6),
        );
        t.info(
            &format!("  search over the {} files p50 / p99", f.files),
            format!("{:.2} / {:.2} ms", q(&f.search_files, 0.5), q(&f.search_files, 0.99)),
        );
        t.info("  compaction into one file", format!("{:.0} ms, {:.1} MB", f.compact.as_secs_f64() * 1000.0, f.bytes as f64 / 1e6));
        let target = n >= 100_000;
        if target {
            t.target("search p50 (one file, one thread)", format!("{p50:.2} ms"), "<= 10 ms", p50 <= TARGET_VECTOR_SEARCH_MS);
            t.target("search p99", format!("{p99:.2} ms"), "<= 10 ms", p99 <= TARGET_VECTOR_SEARCH_MS);
        } else {
            t.info("search p50 (one file, one thread)", format!("{p50:.2} ms"));
            t.info("search p99", format!("{p99:.2} ms"));
        }
        t.info("  on two threads p50 / p99", format!("{:.2} / {:.2} ms", q(&f.search_two_threads, 0.5), q(&f.search_two_threads, 0.99)));
        t.info("exact f32 scan (no int8 pass) p50 / p99", format!("{:.2} / {:.2} ms", q(&f.search_exact, 0.5), q(&f.search_exact, 0.99)));
        t.info(
            "  on two threads p50 / p99",
            format!("{:.2} / {:.2} ms", q(&f.search_exact_two_threads, 0.5), q(&f.search_exact_two_threads, 0.99)),
        );
        t.info("naive scan (iterator dot, 1 thread) p50 / p99", format!("{:.2} / {:.2} ms", q(&f.naive, 0.5), q(&f.naive, 0.99)));
        t.info("  naive p50 / index p50", format!("{:.1}x", q(&f.naive, 0.5) / p50.max(1e-9)));
        t.target("queries whose top-10 differs from the naive scan's", f.mismatches.to_string(), "0", f.mismatches == 0);
        t.info("RSS growth per 100k vectors (open + searches)", format!("anon {anon:.1} MB, mapped file pages {file:.1} MB"));
        sizes.push(json!({
            "vectors": n, "dims": f.dims, "batch": f.batch, "files": f.files,
            "append_s": f.append.as_secs_f64(), "append_vectors_per_s": f.append_per_s(),
            "bytes_before_compaction": f.bytes_files, "bytes": f.bytes, "compact_ms": f.compact.as_secs_f64() * 1000.0,
            "search_files_p50_ms": q(&f.search_files, 0.5), "search_files_p99_ms": q(&f.search_files, 0.99),
            "search_p50_ms": p50, "search_p99_ms": p99,
            "search_two_threads_p50_ms": q(&f.search_two_threads, 0.5), "search_two_threads_p99_ms": q(&f.search_two_threads, 0.99),
            "search_exact_p50_ms": q(&f.search_exact, 0.5), "search_exact_p99_ms": q(&f.search_exact, 0.99),
            "search_exact_two_threads_p50_ms": q(&f.search_exact_two_threads, 0.5),
            "search_exact_two_threads_p99_ms": q(&f.search_exact_two_threads, 0.99),
            "naive_p50_ms": q(&f.naive, 0.5), "naive_p99_ms": q(&f.naive, 0.99),
            "naive_over_index_p50": q(&f.naive, 0.5) / p50.max(1e-9), "mismatches": f.mismatches,
            "rss_before": rss_json(&f.rss_before), "rss_after_open": rss_json(&f.rss_after_open), "rss_after_search": rss_json(&f.rss_after),
            "rss_growth_per_100k_mb": {"anon": anon, "file": file},
        }));
    }
    json.insert(
        "vector_index".into(),
        json!({"k": VECTOR_K, "queries": VECTOR_QUERIES, "sizes": sizes,
               "note": "in-process VectorIndex (knowledge/vectors.rs); search = int8 pass then exact f32 ranking of 4k+64 candidates; \
                        after compaction into one file unless named; RSS file pages are the mapped vectors (page cache)"}),
    );
    Ok(())
}

/// The knowledge targets from the issue: top-10 semantic search over 100k
/// segments, hybrid search.
const TARGET_SEMANTIC_MS: f64 = 10.0;
const TARGET_HYBRID_MS: f64 = 20.0;

/// Phase 10, knowledge bases through edgeaid (see bench/knowledge.rs): a
/// daemon without a chat model, with the embedding model and `threads`.
fn knowledge_phase(
    t: &mut Table,
    json: &mut Map<String, Value>,
    rt: &Runtime,
    edgeaid: &Path,
    repo: &Path,
    dir: &Path,
    threads: u32,
) -> Result<()> {
    use bench::knowledge::{measure, Setup, HYBRID, SCALE_QUERIES, SCALE_TOP_K};
    use bench::vectors::quantile_ms;
    let embed_model = repo.join(".cache/models/multilingual-e5-small-q4_0.gguf");
    if !embed_model.is_file() {
        bail!("the embedding model {} is missing: run scripts/fetch-embedder.sh (scripts/setup.sh)", embed_model.display());
    }
    let app = BenchApp { pre_prompt: PRE_PROMPT.to_owned(), max_tokens: 16 };
    let launch = Launch {
        exe: edgeaid,
        dir,
        model: None,
        threads: Some(threads),
        n_ctx: N_CTX,
        slots: SLOTS,
        batch: BATCH,
        chat_template: None,
        kv_types: None,
        model_extra: String::new(),
        cache: false,
        synchronous: "full",
        app: &app,
        extra_config: format!("\n[embedding]\npath = {}\nthreads = {threads}\n", Value::String(embed_model.display().to_string())),
    };
    let f = rt.block_on(measure(Setup { launch, embed_model: &embed_model, threads, repo }))?;

    let q = |d: &[Duration], p: f64| quantile_ms(d, p);
    t.section(&format!("Knowledge: embedding, {} ({threads} threads), passages of {:.0} tokens", f.model_id, f.passage_tokens_mean));
    let mut embed_json = Vec::new();
    for e in &f.embed {
        let rate = |d: Duration| (e.texts as f64 / d.as_secs_f64().max(1e-9), e.tokens as f64 / d.as_secs_f64().max(1e-9));
        let ((lt, lk), (ht, hk)) = (rate(e.in_process), rate(e.http));
        t.info(&format!("batch {}: Embedder in this process", e.batch), format!("{lt:.1} texts/s, {lk:.0} tokens/s"));
        t.info(&format!("batch {}: POST /v1/embeddings (keep-alive)", e.batch), format!("{ht:.1} texts/s, {hk:.0} tokens/s"));
        t.info("  HTTP / in-process throughput", format!("{:.3} (max |vector difference| {:.1e})", ht / lt.max(1e-9), e.max_abs_diff));
        t.info(
            "  other processes' CPU per round",
            e.foreign_cores.iter().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join(" / ") + " cores",
        );
        embed_json.push(json!({"batch": e.batch, "texts": e.texts, "tokens": e.tokens,
            "in_process_s": e.in_process.as_secs_f64(), "http_s": e.http.as_secs_f64(),
            "in_process_texts_per_s": lt, "in_process_tokens_per_s": lk, "http_texts_per_s": ht, "http_tokens_per_s": hk,
            "http_over_in_process": ht / lt.max(1e-9), "max_abs_vector_diff": e.max_abs_diff, "foreign_cpu_cores": e.foreign_cores}));
    }

    let g = &f.ingest;
    let per_s = g.segments as f64 / g.wall.as_secs_f64().max(1e-9);
    t.section(&format!("Knowledge: ingestion, {} create-by-text documents (EN+ZH), custom rule \\n\\n / 200 tokens", g.documents));
    t.info("segments indexed", format!("{} ({} tokens)", g.segments, g.tokens));
    t.info("end to end (first POST -> all completed in indexing-status)", format!("{:.1} s, {per_s:.1} segments/s", g.wall.as_secs_f64()));
    t.info("daemon's own indexing time (sum of `document indexed` elapsed_ms)", format!("{:.1} s", g.daemon_ms as f64 / 1000.0));
    t.info("  segments/s over embedder texts/s in this process (batch 16)", format!("{:.2}", per_s / g.embed_texts_per_s.max(1e-9)));

    t.section(&format!("Knowledge: retrieval quality, labelled set over the demo manuals ({} segments), top 5", f.quality_segments));
    let mut quality_json = Vec::new();
    for r in &f.quality {
        t.info(
            &format!("{} {}", r.method, r.lang),
            format!(
                "recall@5 {}/{} = {:.2}, recall@1 {:.2}",
                r.at5,
                r.queries,
                r.at5 as f64 / r.queries.max(1) as f64,
                r.at1 as f64 / r.queries.max(1) as f64
            ),
        );
        quality_json
            .push(json!({"method": r.method, "lang": r.lang, "queries": r.queries, "recall_at_5": r.at5 as f64 / r.queries.max(1) as f64,
            "recall_at_1": r.at1 as f64 / r.queries.max(1) as f64, "missed_at_5": r.missed}));
    }

    let mut scale_json = Vec::new();
    for s in &f.scale {
        let n = s.segments;
        t.section(&format!(
            "Knowledge: /retrieve over {n} segments of 384 dims, top-{SCALE_TOP_K}, {SCALE_QUERIES} queries per method, HTTP keep-alive, client-side"
        ));
        t.info(
            "dataset written through edgeaid's store + vector index (bench, not HTTP)",
            format!(
                "{} documents, {} vector files, {:.1} s; store (all datasets) {:.1} MB, vectors {:.1} MB",
                s.documents,
                s.vector_files,
                s.build.as_secs_f64(),
                s.db_bytes_after as f64 / 1e6,
                s.vector_bytes as f64 / 1e6
            ),
        );
        let mut lat_json = serde_json::Map::new();
        for l in &s.latency {
            let (p50, p99) = (q(&l.http, 0.5), q(&l.http, 0.99));
            let target = match l.method {
                "semantic_search" => Some(TARGET_SEMANTIC_MS),
                "hybrid_search" => Some(TARGET_HYBRID_MS),
                _ => None,
            };
            match target {
                Some(ms) if n >= 100_000 => {
                    t.target(&format!("{} p50", l.method), format!("{p50:.2} ms"), &format!("<= {ms} ms"), p50 <= ms);
                    t.target(&format!("{} p99", l.method), format!("{p99:.2} ms"), &format!("<= {ms} ms"), p99 <= ms);
                }
                _ => t.info(&format!("{} p50 / p99", l.method), format!("{p50:.2} / {p99:.2} ms")),
            }
            t.info("  other processes' CPU meanwhile", format!("{:.2} cores", l.foreign_cores));
            lat_json.insert(l.method.into(), json!({"p50_ms": p50, "p99_ms": p99, "mean_ms": l.http.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / l.http.len().max(1) as f64, "mean_hits": l.mean_hits, "foreign_cpu_cores": l.foreign_cores}));
        }
        t.info(
            "  in this process: query embedding p50 / p99",
            format!("{:.2} / {:.2} ms", q(&s.embed_query, 0.5), q(&s.embed_query, 0.99)),
        );
        t.info(
            &format!("  in this process: vector search (top-{} pool) p50 / p99", SCALE_TOP_K * 4 + 16),
            format!("{:.2} / {:.2} ms", q(&s.vector_search, 0.5), q(&s.vector_search, 0.99)),
        );
        let grow = |a: u64, b: u64| mb(b.saturating_sub(a)) * 100_000.0 / n as f64;
        t.info(
            "daemon RSS before the first query / after it / after all",
            format!("{:.1} / {:.1} / {:.1} MB", mb(s.rss_before.vm_rss_kb), mb(s.rss_after_first.vm_rss_kb), mb(s.rss_after.vm_rss_kb)),
        );
        t.info(
            "  RSS growth per 100k segments (all queries)",
            format!(
                "anon {:.1} MB, file {:.1} MB",
                grow(s.rss_before.rss_anon_kb, s.rss_after.rss_anon_kb),
                grow(s.rss_before.rss_file_kb, s.rss_after.rss_file_kb)
            ),
        );
        scale_json.push(json!({"segments": n, "documents": s.documents, "vector_files": s.vector_files, "build_s": s.build.as_secs_f64(),
            "store_dir_bytes": s.db_bytes_after, "vector_bytes": s.vector_bytes, "http": lat_json,
            "in_process_query_embedding_p50_ms": q(&s.embed_query, 0.5), "in_process_query_embedding_p99_ms": q(&s.embed_query, 0.99),
            "in_process_vector_search_p50_ms": q(&s.vector_search, 0.5), "in_process_vector_search_p99_ms": q(&s.vector_search, 0.99),
            "rss_before": rss_json(&s.rss_before), "rss_after_first_query": rss_json(&s.rss_after_first), "rss_after_queries": rss_json(&s.rss_after),
            "rss_growth_per_100k_mb": {"anon": grow(s.rss_before.rss_anon_kb, s.rss_after.rss_anon_kb), "file": grow(s.rss_before.rss_file_kb, s.rss_after.rss_file_kb),
                                       "vm_rss": grow(s.rss_before.vm_rss_kb, s.rss_after.vm_rss_kb)}}));
    }
    t.section("Knowledge: daemon memory (embedding model, no chat model)");
    for (step, r) in &f.rss_steps {
        t.info(&format!("RSS {step}"), format!("{:.1} MB ({})", mb(r.vm_rss_kb), rss_breakdown(r)));
    }
    json.insert(
        "knowledge".into(),
        json!({"embedding_model": f.model_id, "threads": f.threads, "passage_tokens_mean": f.passage_tokens_mean,
               "embedding": embed_json,
               "ingestion": {"documents": g.documents, "segments": g.segments, "tokens": g.tokens, "wall_s": g.wall.as_secs_f64(),
                             "segments_per_s": per_s, "daemon_indexing_s": g.daemon_ms as f64 / 1000.0,
                             "in_process_embed_texts_per_s": g.embed_texts_per_s},
               "quality": {"segments": f.quality_segments, "top_k": 5, "hybrid_weights": [HYBRID.0, HYBRID.1], "rows": quality_json},
               "scale": scale_json, "rss_idle": rss_json(&f.rss_idle),
               "rss_steps": f.rss_steps.iter().map(|(s, r)| json!({"step": s, "rss": rss_json(r)})).collect::<Vec<_>>(),
               "method": "all HTTP figures client-side over one keep-alive TCP connection, one request at a time, send -> whole body; \
                          embedding: the same passages through POST /v1/embeddings (app key) and through edgeaid's Embedder loaded in the bench \
                          process with the daemon's default [embedding] settings and the same threads; ingestion: create-by-text then \
                          indexing-status polled every 50 ms; quality: a hit is relevant when its segment content contains `expect`; \
                          scale: segments, documents, full-text rows and vector files written by the bench through edgeaid's Store and \
                          VectorIndex before the daemon starts (one vector file per 1000-segment document), generated EN/ZH text, vectors = \
                          real embeddings of 64 passages each copied with noise (cosine ~0.95); latency after 10 untimed queries per method; \
                          RSS from /proc/PID/status of the daemon"}),
    );
    Ok(())
}

/// The code node targets from the issue: a trivial JavaScript node's p99,
/// a trivial Python node's p99 with a warm pool.
const TARGET_JS_P99_MS: f64 = 1.0;
const TARGET_PY_WARM_P99_MS: f64 = 30.0;

/// Phase 11, code nodes (see bench/code.rs): the sandbox in this process,
/// then edgeaid without a model. A figure that could not be measured (no
/// Python here) is an ERROR row of its own; the others are still reported.
fn code_phase(t: &mut Table, json: &mut Map<String, Value>, edgeaid: &Path, dir: &Path) -> Result<()> {
    use bench::code::{self, Series};
    use bench::vectors::quantile_ms;
    let app = BenchApp { pre_prompt: PRE_PROMPT.to_owned(), max_tokens: 16 };
    let launch = Launch {
        exe: edgeaid,
        dir,
        model: None,
        threads: None,
        n_ctx: N_CTX,
        slots: SLOTS,
        batch: BATCH,
        chat_template: None,
        kv_types: None,
        model_extra: String::new(),
        cache: false,
        synchronous: "full",
        app: &app,
        extra_config: "\n[code]\npython_pool = 1\n".into(),
    };
    let f = code::measure(&launch)?;
    let q = |s: &Series, p: f64| quantile_ms(&s.calls, p);
    let mean = |s: &Series| s.calls.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / s.calls.len().max(1) as f64;
    let p50_p99 = |s: &Series| match q(s, 0.99) {
        p99 if p99 < 0.1 => format!("{:.2} / {:.2} µs", q(s, 0.5) * 1000.0, p99 * 1000.0),
        p99 => format!("{:.3} / {p99:.3} ms", q(s, 0.5)),
    };
    let ratio =
        |a: &Series, b: &Series| format!("{:.1}x p50, {:.1}x p99", q(a, 0.5) / q(b, 0.5).max(1e-9), q(a, 0.99) / q(b, 0.99).max(1e-9));
    let series_json = |s: &Series| {
        json!({"calls": s.calls.len(), "p50_ms": q(s, 0.5), "p99_ms": q(s, 0.99), "mean_ms": mean(s), "max_ms": q(s, 1.0),
               "foreign_cpu_cores": s.foreign_cores})
    };
    let error = |t: &mut Table, figure: &str, why: &str| {
        progress(&format!("{figure}: {why}"));
        t.error(figure, why.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect());
    };

    t.section(&format!(
        "Code nodes in this process: a trivial main through edgeaid's Sandbox::run, sequential, limits {:?} / {} MB",
        f.limits.timeout,
        f.limits.memory_bytes / (1024 * 1024)
    ));
    let js = &f.js_sandbox;
    t.target(
        &format!("JavaScript Sandbox::run p99 ({} calls)", js.calls.len()),
        format!("{:.3} ms", q(js, 0.99)),
        "<= 1 ms",
        q(js, 0.99) <= TARGET_JS_P99_MS,
    );
    t.info("  p50 / mean", format!("{:.3} / {:.3} ms", q(js, 0.5), mean(js)));
    t.info("  js::run alone (no blocking-thread hop) p50 / p99", p50_p99(&f.js_engine));
    t.info("baseline: serde_json round trip of inputs and result p50 / p99", p50_p99(&f.js_baseline));
    t.info("  Sandbox::run / baseline", ratio(js, &f.js_baseline));
    t.info("  other processes' CPU meanwhile", format!("{:.2} cores", js.foreign_cores));
    match &f.spawn {
        Ok(s) => {
            t.info("baseline: bare `python3 -I -S -c pass` spawn + wait p50 / p99", p50_p99(&s.series));
            t.info("  interpreter", format!("{} ({})", s.executable.display(), s.source));
        }
        Err(why) => error(t, "baseline: bare python3 spawn", why),
    }
    let mut python_json = json!(null);
    match &f.python {
        Err(why) => error(t, "Python code nodes (pool 0, 1 and 2)", why),
        Ok(p) => {
            t.info("Python runtime", p.runtime.clone());
            let spawn = f.spawn.as_ref().ok().map(|s| &s.series);
            match &p.cold {
                Ok(c) => {
                    t.info(&format!("Python pool 0 (a process per call) p50 / p99 ({} calls)", c.calls.len()), p50_p99(c));
                    if let Some(s) = spawn {
                        t.info("  pool 0 / bare spawn", ratio(c, s));
                    }
                }
                Err(why) => error(t, "Python pool 0 (a process per call)", why),
            }
            let mut pools = Vec::new();
            for pool in &p.pools {
                let n = pool.size;
                match &pool.warm {
                    Ok(w) => {
                        t.target(
                            &format!("Python pool {n} warm p99 ({} calls {:.0} ms apart)", w.calls.len(), p.gap.as_secs_f64() * 1000.0),
                            format!("{:.2} ms", q(w, 0.99)),
                            "<= 30 ms",
                            q(w, 0.99) <= TARGET_PY_WARM_P99_MS,
                        );
                        t.info("  p50 / mean", format!("{:.2} / {:.2} ms", q(w, 0.5), mean(w)));
                        if let Some(s) = spawn {
                            t.info("  warm / bare spawn", ratio(w, s));
                        }
                    }
                    Err(why) => error(t, &format!("Python pool {n} warm"), why),
                }
                match &pool.burst {
                    Ok(b) => t.info(&format!("Python pool {n} back to back (pool drained) p50 / p99"), p50_p99(b)),
                    Err(why) => error(t, &format!("Python pool {n} back to back"), why),
                }
                pools.push(json!({"pool_size": n, "warm": pool.warm.as_ref().map(series_json).unwrap_or_else(|e| json!({"error": e})),
                                  "back_to_back": pool.burst.as_ref().map(series_json).unwrap_or_else(|e| json!({"error": e}))}));
            }
            python_json = json!({"runtime": p.runtime, "warm_gap_ms": p.gap.as_secs_f64() * 1000.0,
                                 "pool_0_cold": p.cold.as_ref().map(series_json).unwrap_or_else(|e| json!({"error": e})), "pools": pools});
        }
    }
    if let Err(why) = &f.python {
        python_json = json!({"error": why});
    }

    t.section(
        "Code nodes over HTTP: start -> node -> end, POST /v1/workflows/run blocking, sequential, one keep-alive connection, no model",
    );
    let http_json = match &f.http {
        Err(why) => {
            error(t, "code nodes through edgeaid", why);
            json!({"error": why})
        }
        Ok(h) => {
            let (tp, js) = (&h.template.series, &h.javascript.series);
            let minus = |a: &Series| format!("+{:.3} / +{:.3} ms", q(a, 0.5) - q(tp, 0.5), q(a, 0.99) - q(tp, 0.99));
            t.info(&format!("baseline: template-transform node p50 / p99 ({} runs)", tp.calls.len()), p50_p99(tp));
            t.info(&format!("JavaScript code node p50 / p99 ({} runs)", js.calls.len()), p50_p99(js));
            t.info("  minus the template run (code node overhead) p50 / p99", minus(js));
            let py_json = match &h.python {
                Ok(py) => {
                    let s = &py.series;
                    t.info(
                        &format!(
                            "Python code node, pool 1, runs {:.0} ms apart, p50 / p99 ({} runs)",
                            h.python_gap.as_secs_f64() * 1000.0,
                            s.calls.len()
                        ),
                        p50_p99(s),
                    );
                    t.info("  minus the template run (code node overhead) p50 / p99", minus(s));
                    json!({"app": py.app, "runs": series_json(s), "minus_template_p50_ms": q(s, 0.5) - q(tp, 0.5), "minus_template_p99_ms": q(s, 0.99) - q(tp, 0.99)})
                }
                Err(why) => {
                    error(t, "Python code node through edgeaid", why);
                    json!({"error": why})
                }
            };
            t.info("  other processes' CPU meanwhile", format!("{:.2} cores", tp.foreign_cores));
            for (step, r) in &h.rss_steps {
                t.info(&format!("daemon RSS {step}"), format!("{:.1} MB ({})", mb(r.vm_rss_kb), rss_breakdown(r)));
            }
            let at = |name: &str| h.rss_steps.iter().find(|(s, _)| *s == name).map(|(_, r)| r.vm_rss_kb);
            let grew = at("after the warm-up runs").zip(at("1 s after the last run")).map(|(a, b)| mb(b) - mb(a));
            let second = at("after the first half of the runs").zip(at("after all runs")).map(|(a, b)| mb(b) - mb(a));
            // The store's page cache and the allocator fill up over the
            // first runs; growth that goes on in the second half is a leak.
            let word = |d: f64| if d > 0.5 { "still growing in the second half" } else { "levelled off (second half within 0.5 MB)" };
            let second_runs = (tp.calls.len() + js.calls.len() + h.python.as_ref().map_or(0, |p| p.series.calls.len())) / 2;
            if let (Some(g), Some(s2)) = (grew, second) {
                t.info(
                    "  RSS change over the timed runs / their second half",
                    format!("{g:+.1} / {s2:+.1} MB ({:+.2} kB a run): {}", s2 * 1e3 / second_runs.max(1) as f64, word(s2)),
                );
            }
            json!({"template": {"app": h.template.app, "runs": series_json(tp)},
                   "javascript": {"app": h.javascript.app, "runs": series_json(js),
                                  "minus_template_p50_ms": q(js, 0.5) - q(tp, 0.5), "minus_template_p99_ms": q(js, 0.99) - q(tp, 0.99)},
                   "python": py_json,
                   "rss_steps": h.rss_steps.iter().map(|(s, r)| json!({"step": s, "rss": rss_json(r)})).collect::<Vec<_>>(),
                   "rss_growth_timed_runs_mb": grew, "rss_growth_second_half_mb": second, "rss_verdict": second.map(word),
                   "daemon_code_status": h.status})
        }
    };
    let [(_, template_yaml), (_, js_yaml), (_, py_yaml)] = code::workflows();
    json.insert(
        "code_nodes".into(),
        json!({"in_process": {"limits": {"timeout_ms": f.limits.timeout.as_millis() as u64, "memory_bytes": f.limits.memory_bytes,
                                         "max_output_bytes": f.limits.max_output_bytes},
                              "javascript": {"sandbox_run": series_json(&f.js_sandbox), "js_run": series_json(&f.js_engine),
                                             "baseline_json_round_trip": series_json(&f.js_baseline),
                                             "p50_over_baseline": q(&f.js_sandbox, 0.5) / q(&f.js_baseline, 0.5).max(1e-9),
                                             "p99_over_baseline": q(&f.js_sandbox, 0.99) / q(&f.js_baseline, 0.99).max(1e-9)},
                              "bare_python_spawn": f.spawn.as_ref().map(|s| json!({"executable": s.executable, "source": s.source, "series": series_json(&s.series)}))
                                                    .unwrap_or_else(|e| json!({"error": e})),
                              "python": python_json},
               "http": http_json,
               "code": {"javascript": code::JS_MAIN, "python": code::PY_MAIN, "template": code::TEMPLATE, "input": code::INPUT},
               "workflows": {"template": template_yaml, "javascript": js_yaml, "python": py_yaml},
               "method": "in-process: edgeaid's Sandbox::run awaited on a two-worker tokio runtime (the daemon's shape), one call at a time, \
                          each result checked to be {r: input}; the daemon's default [code] limits; JavaScript, js::run and the baseline \
                          interleaved in rounds; baseline for JavaScript = serde_json of the inputs to text and back, {r: a} built, to \
                          text and back (what js::run does around QuickJS: the transform without an engine); baseline for Python = \
                          Command::new(interpreter).args([-I, -S, -c, pass]) spawned and waited for, interleaved with the pool-0 calls; \
                          warm = a pause of twice the pool-0 median (20..250 ms) after each call so the pool refills; back to back = no \
                          pause (the pool drained); HTTP: one daemon without a model, [code] python_pool = 1, the three workflows imported, \
                          10 untimed runs each, then two rounds of template, JavaScript, Python runs on one keep-alive connection, each \
                          timed from send to the whole body and checked; overhead = difference of the quantiles; RSS from /proc of the \
                          daemon (Python sandbox processes are not in it)"}),
    );
    Ok(())
}

/// Phase 12 (`--only kv`): one daemon per KV mix, one after the other.
#[allow(clippy::too_many_arguments)]
fn kv_phase(
    t: &mut Table,
    json: &mut Map<String, Value>,
    rt: &tokio::runtime::Runtime,
    edgeaid: &Path,
    model: &Path,
    dir: &Path,
    threads: u32,
    tokens: u32,
) -> Result<()> {
    use bench::kv::{measure, mixes, MixRun, PASSES};
    let app = BenchApp { pre_prompt: PRE_PROMPT.to_owned(), max_tokens: tokens };
    let all = mixes(N_CTX);
    let mut runs: Vec<Option<MixRun>> = vec![None; all.len()];
    let order: Vec<(usize, usize)> = (0..PASSES)
        .flat_map(|pass| {
            let idx: Vec<usize> = if pass % 2 == 0 { (0..all.len()).collect() } else { (0..all.len()).rev().collect() };
            idx.into_iter().map(move |i| (pass, i))
        })
        .collect();
    for (pass, i) in order {
        let mix = all[i];
        let label = mix.label(N_CTX);
        progress(&format!("KV {label}, pass {}", pass + 1));
        let mix_dir = dir.join(label.replace(['/', ',', ' '], "_"));
        std::fs::create_dir_all(&mix_dir).with_context(|| format!("creating {}", mix_dir.display()))?;
        let launch = Launch {
            exe: edgeaid,
            dir: &mix_dir,
            model: Some(model),
            threads: Some(threads),
            n_ctx: mix.n_ctx,
            slots: SLOTS,
            batch: BATCH,
            chat_template: None,
            kv_types: Some((mix.k, mix.v)),
            model_extra: String::new(),
            cache: false,
            synchronous: "full",
            app: &app,
            extra_config: String::new(),
        };
        match rt.block_on(measure(&launch, mix, pass)) {
            Ok(r) => match &mut runs[i] {
                Some(first) => first.merge(r),
                slot => *slot = Some(r),
            },
            Err(e) => t.error(&format!("KV {label}"), format!("{e:#}").lines().next().unwrap_or_default().chars().take(60).collect()),
        }
    }
    let runs: Vec<MixRun> = runs.into_iter().flatten().collect();
    let read = |r: &MixRun| median(&r.read_tok_s());
    let decode = |r: &MixRun| median(&r.decodes.iter().filter_map(StreamRun::gen_tok_s).collect::<Vec<_>>());
    let ttft = |r: &MixRun| median(&r.reads.iter().map(StreamRun::ttft_s).collect::<Vec<_>>());
    let base = runs.first().filter(|r| r.mix.k == "q8_0" && r.mix.v == "q8_0" && r.mix.n_ctx == N_CTX);
    let ratio = |x: Option<f64>, b: Option<f64>| match (x, b) {
        (Some(x), Some(b)) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "n/a".into(),
    };
    let prompt_tokens: Vec<String> =
        runs.first().map(|r| r.reads.iter().map(|s| s.prompt_tokens.to_string()).collect()).unwrap_or_default();
    t.section(&format!(
        "KV cache types: {threads} threads, {SLOTS} slots, batch {BATCH}; reading = prompt tokens ({}) / TTFT, median of {} new prompts; \
         decode = one stream, {tokens} tokens, median of {}; {PASSES} passes, the second in reverse order",
        prompt_tokens.join("/"),
        bench::kv::READ_ROUNDS * PASSES,
        bench::kv::DECODE_RUNS * PASSES
    ));
    let mut rows = Vec::new();
    for r in &runs {
        let label = r.mix.label(N_CTX);
        let (rd, dc) = (read(r), decode(r));
        let (b_rd, b_dc, b_idle, b_after) = match base {
            Some(b) => (read(b), decode(b), Some(mb(b.idle.vm_rss_kb)), Some(mb(b.after.vm_rss_kb))),
            None => (None, None, None, None),
        };
        let (idle, after) = (mb(r.idle.vm_rss_kb), mb(r.after.vm_rss_kb));
        t.info(&format!("{label}: reading"), format!("{} ({}), TTFT {}", tok_s(rd), ratio(rd, b_rd), opt_ms(ttft(r))));
        t.info(&format!("{label}: decode"), format!("{} ({})", tok_s(dc), ratio(dc, b_dc)));
        t.info(
            &format!("{label}: RSS idle -> after"),
            format!(
                "{idle:.1} -> {after:.1} MB ({} / {}), peak {:.1} MB",
                ratio(Some(idle), b_idle),
                ratio(Some(after), b_after),
                mb(r.after.vm_hwm_kb)
            ),
        );
        rows.push(json!({"k": r.mix.k, "v": r.mix.v, "n_ctx": r.mix.n_ctx, "kv_cache_logged": r.kv_cache,
                         "read_tok_s_median": rd, "read_tok_s": r.read_tok_s(), "ttft_ms_median": ttft(r).map(|s| s * 1000.0),
                         "decode_tok_s_median": dc,
                         "read_ratio": rd.zip(b_rd).map(|(x, b)| x / b), "decode_ratio": dc.zip(b_dc).map(|(x, b)| x / b),
                         "rss_idle": rss_json(&r.idle), "rss_after": rss_json(&r.after),
                         "reads": r.reads.iter().map(stream_json).collect::<Vec<_>>(),
                         "decodes": r.decodes.iter().map(stream_json).collect::<Vec<_>>()}));
    }
    json.insert(
        "kv".into(),
        json!({"threads": threads, "slots": SLOTS, "batch": BATCH, "n_ctx": N_CTX, "max_tokens": tokens, "mixes": rows,
               "method": "one edgeaid per mix and pass, started in turn (2 passes, the second in reverse order, runs merged, RSS the larger), model.kv_type_k/kv_type_v set (flash attention: llama.cpp's auto); \
                          one untimed short request, then 3 streaming chats whose query is a different ~700-token plant log \
                          (the app's short system prompt is the only shared prefix), reading = usage prompt_tokens / client TTFT; \
                          then 2 short story prompts, decode = (completion tokens - 1) / first..last message event; \
                          RSS from /proc 1 s after /ready 200 and 1 s after the runs"}),
    );
    Ok(())
}

/// Context for phase 13: room for four long streams, the ~2k-token prompt
/// and the short requests at once (reservations are prompt + max_tokens).
const TTFT_N_CTX: u32 = 8192;
/// More sequences than streaming clients, so the long prompt and the short
/// requests never wait for a slot.
const TTFT_SLOTS: u32 = 8;
/// The issue's target for a short request's TTFT under this load.
const TARGET_TTFT_P99_S: f64 = 0.150;

/// Phase 13 (`--only ttft`): rounds alternating between the modes, each on
/// a fresh daemon.
fn ttft_phase(
    t: &mut Table,
    json: &mut Map<String, Value>,
    rt: &tokio::runtime::Runtime,
    edgeaid: &Path,
    model: &Path,
    dir: &Path,
    threads: u32,
) -> Result<()> {
    use bench::ttft::{measure, quantile, RoundRun, MODES, ROUNDS, STREAMS};
    let app = BenchApp { pre_prompt: PRE_PROMPT.to_owned(), max_tokens: 64 };
    let mut runs: Vec<RoundRun> = Vec::new();
    for round in 0..ROUNDS {
        for mode in MODES {
            progress(&format!("TTFT under load: {}, round {}", mode.label, round + 1));
            let mode_dir = dir.join(format!("budget-{}-{round}", mode.step_budget_ms));
            std::fs::create_dir_all(&mode_dir).with_context(|| format!("creating {}", mode_dir.display()))?;
            let launch = Launch {
                exe: edgeaid,
                dir: &mode_dir,
                model: Some(model),
                threads: Some(threads),
                n_ctx: TTFT_N_CTX,
                slots: TTFT_SLOTS,
                batch: BATCH,
                chat_template: None,
                kv_types: None,
                // Room for every short request in the queue (at most 16 a round):
                // a 429 would end the round, not measure a wait.
                model_extra: format!("step_budget_ms = {}\nqueue_depth = 64\n", mode.step_budget_ms),
                cache: false,
                synchronous: "full",
                app: &app,
                extra_config: String::new(),
            };
            match rt.block_on(measure(&launch, mode, round)) {
                Ok(r) => runs.push(r),
                Err(e) => {
                    t.error(&format!("TTFT {}", mode.label), format!("{e:#}").lines().next().unwrap_or_default().chars().take(60).collect())
                }
            }
        }
    }
    t.section(&format!(
        "TTFT under load: {threads} threads, {TTFT_SLOTS} slots, {TTFT_N_CTX} cells, batch {BATCH}; {STREAMS} streams generate, \
         a ~2k-token prompt is read, a short request (4 tokens out) arrives every 300 ms while it is; {ROUNDS} rounds per mode, alternating"
    ));
    let mut rows = Vec::new();
    for mode in MODES {
        let mine: Vec<&RoundRun> = runs.iter().filter(|r| r.mode.step_budget_ms == mode.step_budget_ms).collect();
        let shorts: Vec<f64> = mine.iter().flat_map(|r| r.short_ttft_s.iter().copied()).collect();
        let longs: Vec<f64> = mine.iter().map(|r| r.long_ttft_s).collect();
        let streams: Vec<f64> = mine.iter().map(|r| r.streams_tok_s).collect();
        let (p50, p99) = (quantile(&shorts, 0.5), quantile(&shorts, 0.99));
        let value = format!("p50 {} / p99 {} (n = {})", opt_ms(p50), opt_ms(p99), shorts.len());
        match p99 {
            Some(p) if mode.step_budget_ms > 0 => {
                t.target(&format!("{}: short TTFT", mode.label), value, "p99 <= 150 ms", p <= TARGET_TTFT_P99_S)
            }
            _ => t.info(&format!("{}: short TTFT", mode.label), value),
        }
        t.info(&format!("{}: reading the 2k prompt", mode.label), format!("median {}", opt_ms(median(&longs))));
        t.info(&format!("{}: streams while it is read", mode.label), format!("{} aggregate", tok_s(median(&streams))));
        rows.push(json!({"step_budget_ms": mode.step_budget_ms, "short_ttft_ms_p50": p50.map(|s| s * 1000.0),
                         "short_ttft_ms_p99": p99.map(|s| s * 1000.0), "short_ttft_ms": shorts.iter().map(|s| s * 1000.0).collect::<Vec<_>>(),
                         "long_read_ms": longs.iter().map(|s| s * 1000.0).collect::<Vec<_>>(),
                         "streams_tok_s_while_reading": streams}));
    }
    json.insert(
        "ttft".into(),
        json!({"threads": threads, "slots": TTFT_SLOTS, "n_ctx": TTFT_N_CTX, "batch": BATCH, "modes": rows,
               "method": "per round and mode a fresh edgeaid (model.step_budget_ms 0 or 60), one untimed request, then 4 OpenAI streaming chats \
                          (max_tokens 1024, cut off at the end of the round), after 1 s one chat whose prompt is 3 plant logs (~2k tokens, max_tokens 4), \
                          and every 300 ms while that one has no text yet a short chat (max_tokens 4, at most 16); TTFT = send to the first chunk \
                          with text, client-side; p50/p99 by nearest rank over all rounds; streams' rate = their text chunks between sending \
                          the long prompt and its first text, per second"}),
    );
    Ok(())
}

/// Threads of the side-by-side phase unless `--threads` says otherwise (the issue's 2 cores).
const SIDE_BY_SIDE_THREADS: u32 = 2;
/// Targets of the side-by-side phase, as ratios edgeaid / llama-server.
const TARGET_READ_TTFT_RATIO: f64 = 1.0;
const TARGET_AGGREGATE_RATIO: f64 = 1.3;
const TARGET_TINY_RATIO: f64 = 1.5;

/// One server of the side-by-side phase, with its rounds and memory.
struct Side {
    target: bench::server::Target,
    kv: String,
    idle: Rss,
    after: Option<Rss>,
    rounds: Vec<bench::server::Round>,
}

/// Phase 14 (`--only server`): edgeaid (default f16 KV, and q8_0/q8_0) and
/// llama-server, started together and measured one at a time.
#[allow(clippy::too_many_arguments)]
fn server_phase(
    t: &mut Table,
    json: &mut Map<String, Value>,
    rt: &Runtime,
    edgeaid: &Path,
    model: &Path,
    repo: &Path,
    dir: &Path,
    threads: u32,
) -> Result<()> {
    use bench::server::{self, med, LlamaServer, Round, Shape, Target};
    let shape = Shape { threads, slots: SLOTS, n_ctx: N_CTX };
    let app = BenchApp { pre_prompt: String::new(), max_tokens: 16 };
    let exe = repo.join(".cache/llama-server/bin/llama-server");
    let version = std::fs::read_to_string(repo.join(".cache/llama-server/VERSION")).unwrap_or_default();
    let skipped = (!exe.is_file()).then(|| {
        format!("{} is missing: scripts/build-llama-server.sh builds it (make bench runs it; it prints why it could not)", exe.display())
    });
    if let Some(why) = &skipped {
        progress(&format!("SKIP the llama-server column: {why}"));
    }
    rt.block_on(async {
        let mut sides: Vec<Side> = Vec::new();
        let mut daemons = Vec::new();
        for (name, kv) in [("edgeaid", None), ("edgeaid q8_0 KV", Some(("q8_0", "q8_0")))] {
            let d_dir = dir.join(name.replace(' ', "-"));
            let launch = Launch {
                exe: edgeaid,
                dir: &d_dir,
                model: Some(model),
                threads: Some(threads),
                n_ctx: N_CTX,
                slots: SLOTS,
                batch: BATCH,
                chat_template: None,
                kv_types: kv,
                app: &app,
                extra_config: String::new(),
                model_extra: String::new(),
                cache: false,
                synchronous: "full",
            };
            let mut d = Daemon::start(&launch).await.with_context(|| format!("starting {name}"))?;
            d.wait_model_ready(Duration::from_secs(120)).await?;
            let kv_logged = d
                .event("model loaded")
                .and_then(|e| e.pointer("/fields/kv_cache").and_then(|v| v.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "(not logged)".into());
            let target = Target { name: name.into(), addr: d.addr, key: Some(d.key.clone()), pid: d.pid };
            sides.push(Side { target, kv: format!("{kv_logged}; flash attention auto"), idle: Rss::default(), after: None, rounds: Vec::new() });
            daemons.push(d);
        }
        let llama = match &skipped {
            Some(_) => None,
            None => {
                let l_dir = dir.join("llama-server");
                std::fs::create_dir_all(&l_dir).context("llama-server directory")?;
                let l = LlamaServer::start(&exe, model, shape, &l_dir).await?;
                let target = Target { name: "llama-server".into(), addr: l.addr, key: None, pid: l.pid() };
                sides.push(Side { target, kv: "f16/f16 per slot, flash attention auto (llama.cpp defaults; its log: see settings_logged)".into(), idle: Rss::default(), after: None, rounds: Vec::new() });
                Some(l)
            }
        };
        tokio::time::sleep(RSS_SETTLE).await;
        for s in &mut sides {
            s.idle = Rss::read(s.target.pid)?;
            // Not counted: the first request pays for cold pages.
            let hello = json!([{"role": "user", "content": "Hello."}]);
            server::stream_chat(&s.target, &hello, 4).await.with_context(|| format!("{}: warm-up", s.target.name))?;
        }
        for round in 0..SIDE_ROUNDS {
            let order: Vec<usize> = if round % 2 == 0 { (0..sides.len()).collect() } else { (0..sides.len()).rev().collect() };
            for i in order {
                progress(&format!("side by side, round {} of {SIDE_ROUNDS}: {}", round + 1, sides[i].target.name));
                let r = server::round(&sides[i].target, round).await.with_context(|| format!("{}, round {}", sides[i].target.name, round + 1))?;
                sides[i].rounds.push(r);
            }
        }
        tokio::time::sleep(RSS_SETTLE).await;
        for s in &mut sides {
            s.after = Some(Rss::read(s.target.pid)?);
        }
        let settings = llama.as_ref().map(LlamaServer::settings).unwrap_or_default();
        drop(llama);
        for d in daemons {
            d.stop().await?;
        }

        type Figure = (&'static str, &'static str, fn(&Round) -> Option<f64>);
        let fig: [Figure; 7] = [
            ("decode, one stream", "tok/s", |r| r.decode_tok_s),
            ("reading a new ~700-token system prompt (TTFT)", "ms", |r| r.new_prompt_ttft_s.map(|s| s * 1000.0)),
            ("same prompt again, new question (TTFT)", "ms", |r| r.same_prompt_ttft_s.map(|s| s * 1000.0)),
            ("tiny requests (1 token out, 4 clients)", "req/s", |r| r.tiny_req_s),
            ("  their p99", "ms", |r| r.tiny_p99_s.map(|s| s * 1000.0)),
            ("4 streams at once, aggregate", "tok/s", |r| r.aggregate_tok_s),
            ("a short request arriving while those 4 stream (TTFT)", "ms", |r| r.arrival_ttft_s.map(|s| s * 1000.0)),
        ];
        let llama_i = sides.iter().position(|s| s.target.name == "llama-server");
        t.section(&format!(
            "Side by side, OpenAI chat over HTTP: {threads} threads, {SLOTS} slots, context {N_CTX}, greedy; medians of {SIDE_ROUNDS} alternating rounds; ratio = edgeaid / llama-server"
        ));
        let mut rows = Vec::new();
        for (name, unit, f) in fig {
            let meds: Vec<Option<f64>> = sides.iter().map(|s| med(&s.rounds, f)).collect();
            let cells: Vec<String> = sides
                .iter()
                .zip(&meds)
                .map(|(s, m)| format!("{} {}", s.target.name, m.map(|v| format!("{v:.1} {unit}")).unwrap_or_else(|| "n/a".into())))
                .collect();
            let ratio = llama_i.and_then(|l| meds[0].zip(meds[l])).map(|(e, l)| e / l.max(1e-9));
            let text = format!("{}{}", cells.join(" | "), ratio.map(|r| format!(" | ratio {r:.2}")).unwrap_or_default());
            let target = match name {
                "reading a new ~700-token system prompt (TTFT)" => Some(("ratio <= 1.0", ratio.map(|r| r <= TARGET_READ_TTFT_RATIO))),
                "tiny requests (1 token out, 4 clients)" => Some(("ratio >= 1.5", ratio.map(|r| r >= TARGET_TINY_RATIO))),
                "  their p99" => Some(("ratio <= 1.0", ratio.map(|r| r <= 1.0))),
                "4 streams at once, aggregate" => Some(("ratio >= 1.3", ratio.map(|r| r >= TARGET_AGGREGATE_RATIO))),
                _ => None,
            };
            match target {
                Some((want, Some(pass))) => t.target(name, text, want, pass),
                _ => t.info(name, text),
            }
            rows.push(json!({"figure": name, "unit": unit,
                             "medians": sides.iter().zip(&meds).map(|(s, m)| json!({"server": s.target.name, "median": m})).collect::<Vec<_>>(),
                             "ratio_edgeaid_over_llama_server": ratio}));
        }
        for s in &sides {
            let after = s.after.unwrap_or_default();
            let under = s.rounds.iter().filter_map(|r| r.rss_under_load).map(|r| r.vm_rss_kb).max().unwrap_or_default();
            t.info(
                &format!("{}: RSS idle / under load (4 streams) / after / peak", s.target.name),
                format!(
                    "{:.1} / {:.1} / {:.1} / {:.1} MB",
                    mb(s.idle.vm_rss_kb),
                    mb(under),
                    mb(after.vm_rss_kb),
                    mb(after.vm_hwm_kb)
                ),
            );
            t.info(&format!("{}: KV cache", s.target.name), s.kv.clone());
        }
        match &skipped {
            Some(why) => t.info("llama-server column", format!("SKIPPED: {why}")),
            None => t.info("llama-server build", version.lines().collect::<Vec<_>>().join("; ")),
        }
        json.insert(
            "side_by_side".into(),
            json!({"threads": threads, "slots": SLOTS, "n_ctx": N_CTX, "rounds": SIDE_ROUNDS, "figures": rows,
                   "servers": sides.iter().map(|s| json!({"name": s.target.name, "kv": s.kv, "rss_idle": rss_json(&s.idle),
                       "rss_after": s.after.as_ref().map(rss_json),
                       "rounds": s.rounds.iter().map(|r| json!({"decode_tok_s": r.decode_tok_s, "new_prompt_ttft_s": r.new_prompt_ttft_s,
                           "same_prompt_ttft_s": r.same_prompt_ttft_s, "tiny_req_s": r.tiny_req_s, "tiny_p99_s": r.tiny_p99_s,
                           "aggregate_tok_s": r.aggregate_tok_s, "arrival_ttft_s": r.arrival_ttft_s,
                           "rss_under_load": r.rss_under_load.as_ref().map(rss_json)})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
                   "llama_server": {"binary": exe, "skipped": skipped, "version": version, "settings_logged": settings,
                                    "args": format!("-m MODEL -t {threads} -tb {threads} -np {SLOTS} -c {N_CTX} (everything else default)")},
                   "method": format!("both servers and edgeaid with f16/f16 KV started together, idle while another is measured; one untimed \
                       request each; per round and server, in order reversed every other round: one stream of {} tokens (decode = \
                       (content chunks - 1) / first..last chunk); a new ~700-token plant log as the system message + a question (TTFT = \
                       send -> first content chunk), the same log with another question; {} clients x {} blocking requests of max_tokens 1 \
                       on keep-alive connections (req/s = requests / wall, p99 of their latencies); {} streams of {} tokens with new prompts \
                       (aggregate = content chunks / first send..last chunk) and, {} ms after they start, a short request (its TTFT); \
                       RSS from /proc 1 s after start and 1 s after the rounds", server::DECODE_TOKENS, server::TINY_CLIENTS,
                       server::TINY_PER_CLIENT, server::STREAMS, server::DECODE_TOKENS, 1500)}),
        );
        Ok(())
    })
}

/// Rounds of the side-by-side phase.
const SIDE_ROUNDS: usize = 3;
/// Targets of the HTTP path phase (the issue's, for a cache hit and the full path).
const TARGET_FULL_PATH_REQ_S: f64 = 15_000.0;
const TARGET_FULL_PATH_P99_MS: f64 = 10.0;
const TARGET_CACHE_HIT_REQ_S: f64 = 40_000.0;
const TARGET_CACHE_HIT_P99_MS: f64 = 4.0;

/// Phase 15 (`--only http`): see bench/http.rs.
fn http_phase(
    t: &mut Table,
    json: &mut Map<String, Value>,
    rt: &Runtime,
    edgeaid: &Path,
    model: &Path,
    repo: &Path,
    dir: &Path,
) -> Result<()> {
    use bench::http::{self, CONNECTIONS, ROUNDS, SECONDS};
    use bench::load;
    if !load::wrk_available() {
        bail!("wrk is not installed (Debian package wrk; scripts/setup.sh installs it)");
    }
    let ceiling = load::sibling_bin("ceiling")?;
    let uds = load::sibling_bin("uds-load")?;
    let app = BenchApp { pre_prompt: PRE_PROMPT.to_owned(), max_tokens: 16 };
    // The local model answers the chat app once, to fill the response cache
    // the cache-hit cases read; the chatflow goes to the instant upstream.
    let mut launch = Launch {
        exe: edgeaid,
        dir,
        model: Some(model),
        threads: None,
        n_ctx: N_CTX,
        slots: SLOTS,
        batch: BATCH,
        chat_template: None,
        kv_types: None,
        app: &app,
        extra_config: String::new(),
        model_extra: String::new(),
        cache: true,
        synchronous: "full",
    };
    let dsl = std::fs::read_to_string(repo.join("tests/fixtures/dsl/chatflow.yml")).context("reading the chatflow fixture")?;
    let mut m = rt.block_on(http::measure(&mut launch, &dsl, &ceiling, &uds))?;
    // The writing paths again with `store.synchronous = "normal"` (commits
    // that do not wait for the disk), on a daemon of its own.
    let normal_dir = dir.join("synchronous-normal");
    std::fs::create_dir_all(&normal_dir).context("creating the synchronous-normal directory")?;
    launch.dir = &normal_dir;
    launch.synchronous = "normal";
    let normal = rt.block_on(http::measure(&mut launch, &dsl, &ceiling, &uds))?;
    m.cases.extend(normal.cases.into_iter().filter(|c| c.case.label.starts_with("POST")).map(|mut c| {
        c.case.label = c.case.label.replacen("POST /v1/chat-messages blocking", "POST chat, store.synchronous normal", 1);
        c
    }));
    let ceiling_rate = m
        .cases
        .iter()
        .find(|c| c.case.label.starts_with("ceiling"))
        .and_then(|c| median(&c.runs.iter().map(load::Figures::per_sec).collect::<Vec<_>>()));
    t.section(&format!(
        "HTTP path: wrk -t1 -c{CONNECTIONS} (TCP) / uds-load, 1 thread, {CONNECTIONS} connections (unix socket), {SECONDS} s per run, \
         separate processes on the same cores; medians of {ROUNDS} rounds"
    ));
    let mut cases = Vec::new();
    for c in &m.cases {
        let rate = median(&c.runs.iter().map(load::Figures::per_sec).collect::<Vec<_>>());
        let p50 = median(&c.runs.iter().map(|f| f.p50_ms).collect::<Vec<_>>());
        let p99 = median(&c.runs.iter().map(|f| f.p99_ms).collect::<Vec<_>>());
        let errors: u64 = c.runs.iter().map(|f| f.errors).sum();
        let of_ceiling = rate.zip(ceiling_rate).map(|(r, c)| r / c.max(1e-9));
        let text = format!(
            "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms{}{}",
            rate.unwrap_or(f64::NAN),
            p50.unwrap_or(f64::NAN),
            p99.unwrap_or(f64::NAN),
            of_ceiling.filter(|_| !c.case.label.starts_with("ceiling")).map(|r| format!(", {r:.2} of the ceiling")).unwrap_or_default(),
            if errors > 0 { format!(", {errors} non-2xx/socket errors") } else { String::new() }
        );
        if errors > 0 {
            t.error(&c.case.label, text.clone());
        } else if c.case.label.contains("cache hit") {
            let pass = rate.is_some_and(|r| r >= TARGET_CACHE_HIT_REQ_S) && p99.is_some_and(|p| p <= TARGET_CACHE_HIT_P99_MS);
            t.target(&c.case.label, text.clone(), ">= 40000 req/s, p99 <= 4 ms", pass);
        } else if c.case.label.contains("instant upstream") {
            let pass = rate.is_some_and(|r| r >= TARGET_FULL_PATH_REQ_S) && p99.is_some_and(|p| p <= TARGET_FULL_PATH_P99_MS);
            t.target(&c.case.label, text.clone(), ">= 15000 req/s, p99 <= 10 ms", pass);
        } else {
            t.info(&c.case.label, text.clone());
        }
        cases.push(json!({"label": c.case.label, "method": c.case.load.method, "path": c.case.load.path, "body": c.case.load.body,
                          "median_req_s": rate, "median_p50_ms": p50, "median_p99_ms": p99, "errors": errors,
                          "ratio_to_ceiling": of_ceiling,
                          "runs": c.runs.iter().map(|f| json!({"requests": f.requests, "seconds": f.seconds, "req_s": f.per_sec(),
                              "p50_ms": f.p50_ms, "p99_ms": f.p99_ms, "errors": f.errors,
                              "server_rss_max_kb": f.rss_under_load.map(|r| r.vm_rss_kb)})).collect::<Vec<_>>()}));
    }
    let under = m.under_load.unwrap_or_default();
    t.info(
        "edgeaid RSS idle / under load (max sampled) / peak",
        format!("{:.1} / {:.1} / {:.1} MB", mb(m.idle.vm_rss_kb), mb(under.vm_rss_kb), mb(m.end.vm_hwm_kb)),
    );
    json.insert(
        "http".into(),
        json!({"connections": CONNECTIONS, "seconds_per_run": SECONDS, "rounds": ROUNDS, "cases": cases,
               "rss_idle": rss_json(&m.idle), "rss_under_load_max": m.under_load.as_ref().map(rss_json), "rss_end": rss_json(&m.end),
               "upstream": m.upstream_url,
               "method": "edgeaid with the local model for the config's chat app (temperature 0, response cache on: one streamed answer fills it, then the cache-hit cases POST the same question blocking), tests/fixtures/dsl/chatflow.yml imported (a chatflow: start -> LLM -> answer, its gpt-4o-mini mapped to the upstream), [upstream] = the `ceiling upstream` bin (answers every chat completion at once, \
                          one streamed chunk), [model_map] default = upstream; TCP load: wrk -t1 -cN -dS with a generated Lua script \
                          (method, body, headers; its done hook prints requests, duration and latency percentiles); unix socket: the \
                          uds-load bin (one thread, N keep-alive connections); ceiling: the `ceiling sqlite` bin (hyper, 2 workers, \
                          one INSERT committed per request on a writer thread, WAL, synchronous NORMAL: no fsync per commit); \
                          every case once per round, order reversed every other round; RSS of edgeaid from /proc, sampled every \
                          100 ms under load"}),
    );
    Ok(())
}

/// Phase 16 (`--only replay`): see bench/replay.rs.
#[allow(clippy::too_many_arguments)]
fn replay_phase(
    t: &mut Table,
    json: &mut Map<String, Value>,
    rt: &Runtime,
    edgeaid: &Path,
    model: &Path,
    repo: &Path,
    dir: &Path,
    threads: Option<u32>,
) -> Result<()> {
    use bench::replay::{self, Kind, AFTER_RESTART, CLIENTS, LOG, MAX_TOKENS};
    use bench::ttft::quantile;
    let log_path = repo.join(LOG);
    let text = std::fs::read_to_string(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    let queries = replay::parse_log(&text).with_context(|| format!("parsing {}", log_path.display()))?;
    let app = BenchApp { pre_prompt: replay::PRE_PROMPT.to_owned(), max_tokens: MAX_TOKENS };
    let launch = Launch {
        exe: edgeaid,
        dir,
        model: Some(model),
        threads,
        n_ctx: N_CTX,
        slots: SLOTS,
        batch: BATCH,
        chat_template: None,
        kv_types: None,
        model_extra: String::new(),
        cache: true,
        synchronous: "full",
        app: &app,
        extra_config: String::new(),
    };
    progress(&format!("replaying {} queries of {LOG} from {CLIENTS} clients", queries.len()));
    let m = rt.block_on(replay::measure(&launch, &queries))?;

    let e = &m.expected;
    let hits = m.asked.iter().filter(|a| a.run.cache_hit).count();
    let misses = m.asked.len() - hits;
    let rate = hits as f64 / m.asked.len().max(1) as f64;
    let of_kind = |k: Kind| m.asked.iter().zip(&m.kinds).filter(move |(_, kind)| **kind == k).map(|(a, _)| a);
    let (answered, answered_hits) =
        (of_kind(Kind::RepeatAnswered).count(), of_kind(Kind::RepeatAnswered).filter(|a| a.run.cache_hit).count());
    let (in_flight, in_flight_hits) =
        (of_kind(Kind::RepeatInFlight).count(), of_kind(Kind::RepeatInFlight).filter(|a| a.run.cache_hit).count());
    let first_hits = of_kind(Kind::First).filter(|a| a.run.cache_hit).count();
    let latency = |hit: bool| -> Vec<f64> { m.asked.iter().filter(|a| a.run.cache_hit == hit).map(|a| a.run.latency_s()).collect() };
    let (hit_lat, miss_lat) = (latency(true), latency(false));
    let (hit_p50, hit_p99, miss_p50, miss_p99) =
        (quantile(&hit_lat, 0.5), quantile(&hit_lat, 0.99), quantile(&miss_lat, 0.5), quantile(&miss_lat, 0.99));
    let r = &m.restarted;
    let again_hits = r.asked.iter().filter(|a| a.run.cache_hit).count();
    let pct = |x: f64| format!("{:.1} %", x * 100.0);

    t.section(&format!(
        "Response cache on a replayed query log: {LOG}, {} new-conversation chat messages (blocking, max_tokens {MAX_TOKENS}, greedy), \
         {CLIENTS} clients in log order, {} threads, {SLOTS} slots; then a restart on the same store and the first {AFTER_RESTART} again",
        m.asked.len(),
        threads.map_or_else(|| "the daemon's choice of".to_owned(), |n| n.to_string())
    ));
    t.info("requests: hits / misses (answers = GET /admin/v1/cache)", format!("{}: {hits} / {misses}", m.asked.len()));
    t.info(
        "hit rate",
        format!(
            "{}; best the log allows {} ({} distinct keys; {} if case and trailing punctuation were folded too)",
            pct(rate),
            pct(e.best_hit_rate()),
            e.keys,
            pct(e.loose_hit_rate())
        ),
    );
    t.target(
        "repeats asked after an earlier answer arrived: hits",
        format!("{answered_hits} / {answered}"),
        "all",
        answered_hits == answered,
    );
    t.target("first askings of a key: hits", first_hits.to_string(), "0", first_hits == 0);
    t.info(
        "repeats asked while the first was being answered: hits",
        format!("{in_flight_hits} / {in_flight} (identical requests in flight are not coalesced)"),
    );
    t.info("cache hit latency", format!("p50 {} / p99 {} (n = {})", opt_ms(hit_p50), opt_ms(hit_p99), hit_lat.len()));
    t.info("cache miss latency", format!("p50 {} / p99 {} (n = {})", opt_ms(miss_p50), opt_ms(miss_p99), miss_lat.len()));
    t.info(
        "replay",
        format!(
            "{:.1} s, {:.1} req/s; other processes kept {:.2} cores busy meanwhile; inference threads {}, changed {} times",
            m.replay_s,
            m.asked.len() as f64 / m.replay_s.max(1e-9),
            m.foreign_cores,
            m.threads_at_start.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            m.thread_changes
        ),
    );
    t.info(
        "cache at the end: entries, bytes, evictions",
        format!(
            "{}, {:.1} kB of {:.1} MB, {}",
            m.stats.entries,
            m.stats.bytes as f64 / 1e3,
            m.stats.max_bytes as f64 / 1e6,
            m.stats.evictions
        ),
    );
    let under = m.under_load.unwrap_or_default();
    t.info(
        "edgeaid RSS idle / under load (max sampled) / peak",
        format!("{:.1} / {:.1} / {:.1} MB", mb(m.idle.vm_rss_kb), mb(under.vm_rss_kb), mb(m.end.vm_hwm_kb)),
    );
    t.target(
        "restart: entries before SIGTERM / loaded",
        format!("{} / {}", r.entries_before, r.entries_loaded),
        "all loaded",
        r.entries_loaded == r.entries_before,
    );
    t.target(
        &format!("restart: hit rate on the first {}", r.asked.len()),
        format!(
            "{again_hits} / {} = {} (repeats alone: {})",
            r.asked.len(),
            pct(again_hits as f64 / r.asked.len().max(1) as f64),
            pct(r.without_persistence)
        ),
        "every query asked before",
        again_hits == r.cached_before,
    );

    let kind_name = |k: Kind| match k {
        Kind::First => "first",
        Kind::RepeatAnswered => "repeat_answered",
        Kind::RepeatInFlight => "repeat_in_flight",
    };
    let ms_opt = |s: Option<f64>| s.map(|x| x * 1000.0);
    json.insert(
        "replay".into(),
        json!({"log": LOG, "clients": CLIENTS, "max_tokens": MAX_TOKENS, "threads": threads, "slots": SLOTS, "n_ctx": N_CTX,
               "requests": m.asked.len(), "hits": hits, "misses": misses, "hit_rate": rate,
               "distinct_keys": e.keys, "best_hit_rate": e.best_hit_rate(),
               "distinct_keys_case_punctuation_folded": e.loose_keys, "best_hit_rate_case_punctuation_folded": e.loose_hit_rate(),
               "repeats_answered": answered, "repeats_answered_hits": answered_hits,
               "repeats_in_flight": in_flight, "repeats_in_flight_hits": in_flight_hits, "first_askings_hits": first_hits,
               "hit_latency_ms": {"p50": ms_opt(hit_p50), "p99": ms_opt(hit_p99), "n": hit_lat.len()},
               "miss_latency_ms": {"p50": ms_opt(miss_p50), "p99": ms_opt(miss_p99), "n": miss_lat.len()},
               "replay_s": m.replay_s, "foreign_cores_during_replay": m.foreign_cores,
               "inference_threads_at_start": m.threads_at_start, "inference_thread_changes": m.thread_changes,
               "foreign_cores_per_second": m.foreign_per_s.iter().map(|(t, c)| json!([t, c])).collect::<Vec<_>>(),
               "cache_end": {"entries": m.stats.entries, "bytes": m.stats.bytes, "max_bytes": m.stats.max_bytes,
                             "evictions": m.stats.evictions, "daemon_hits": m.stats.hits, "daemon_misses": m.stats.misses},
               "rss_idle": rss_json(&m.idle), "rss_under_load_max": m.under_load.as_ref().map(rss_json),
               "rss_samples": m.samples, "rss_end": rss_json(&m.end),
               "restart": {"entries_before": r.entries_before, "entries_loaded": r.entries_loaded, "requests": r.asked.len(),
                           "hits": again_hits, "asked_before_restart": r.cached_before,
                           "hit_rate": again_hits as f64 / r.asked.len().max(1) as f64,
                           "hit_rate_from_repeats_alone": r.without_persistence},
               "per_request": m.asked.iter().zip(&m.kinds).map(|(a, k)| json!({"line": a.index + 1, "hit": a.run.cache_hit,
                   "kind": kind_name(*k), "sent_s": (a.run.sent - m.began).as_secs_f64(),
                   "latency_ms": a.run.latency_s() * 1000.0})).collect::<Vec<_>>(),
               "method": "edgeaid with the local model and cache.enabled = true (persisted, default budget), the config's chat app greedy \
                          (temperature 0) with max_tokens 16; one untimed warm-up question not in the log; then every line of the log \
                          as a blocking POST /v1/chat-messages of a new conversation, from 4 clients that each take the next line when \
                          their previous answer arrived (one connection per request); hit = the answer's metadata.cache.hit, and the \
                          hits and misses must equal the deltas of GET /admin/v1/cache over the unix socket (else the phase fails); \
                          best hit rate = 1 - distinct keys / requests, keys by the daemon's own normalise_query; a repeat is \
                          'answered' when an earlier request with its key had its answer before it was sent (must hit), 'in flight' \
                          otherwise; latency client-side, send to the whole answer, nearest-rank percentiles; RSS from /proc: idle 1 s \
                          after the warm-up, sampled every 100 ms during the replay, VmHWM at the end; then SIGTERM, a new edgeaid on \
                          the same directory (same store), its cache stats at READY, and the log's first 50 lines replayed the same way"}),
    );
    Ok(())
}

/// `--only vectors` / `--only knowledge` / `--only code` / `--only kv` /
/// `--only ttft` / `--only server` / `--only http` / `--only replay`: one phase alone (`figure` names
/// it in errors), with the machine facts, written to bench-results/bench-<only>.json.
fn only_phase(
    args: &Args,
    repo: &Path,
    only: &str,
    figure: &str,
    phase: impl FnOnce(&mut Table, &mut Map<String, Value>, &Path) -> Result<()>,
) -> Result<bool> {
    let work = tempfile::Builder::new().prefix("edgeai-bench-").tempdir().context("creating a temporary directory")?;
    let began = Instant::now();
    let load_start = loadavg();
    let mut table = Table::default();
    let mut json_out = Map::new();
    let mut errors = Vec::new();
    if let Err(e) = phase(&mut table, &mut json_out, work.path()) {
        let msg = format!("{e:#}");
        progress(&format!("{figure}: {msg}"));
        table.error(figure, msg.lines().next().unwrap_or_default().chars().take(60).collect());
        errors.push(msg);
    }
    let bench_exe = std::env::current_exe().context("locating the bench binary")?;
    let commit = git(repo, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(repo, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let elapsed = began.elapsed().as_secs_f64();
    let load_end = loadavg();
    let mut out = Map::new();
    out.insert("commit".into(), json!(commit));
    out.insert("worktree_dirty".into(), json!(dirty));
    out.insert("only".into(), json!(only));
    out.insert("duration_s".into(), json!(elapsed));
    out.insert(
        "machine".into(),
        json!({"cpu_model": cpu_model(),
               "available_parallelism": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
               "loadavg_start": load_start, "loadavg_end": load_end}),
    );
    out.insert(
        "build".into(),
        json!({"bench_binary": bench_exe, "bench_profile": profile_of(&bench_exe),
               "bench_debug_assertions": cfg!(debug_assertions), "bench_target_features": compiled_features()}),
    );
    out.extend(json_out);
    out.insert("table".into(), table.to_json());
    out.insert("errors".into(), json!(errors));
    println!("edgeai bench --only {only}  commit {commit}{}  {}", if dirty { " (dirty worktree)" } else { "" }, cpu_model());
    println!("  bench {} profile; load average {load_start} -> {load_end}; MB = 10^6 bytes", profile_of(&bench_exe));
    print!("{}", table.render());
    let path = args.out.clone().unwrap_or_else(|| repo.join(format!("bench-results/bench-{only}.json")));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&Value::Object(out)).context("serialising the results")?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {} ({elapsed:.0} s)", path.display());
    Ok(!table.has_errors())
}

/// Phases 1 to 7 (everything with a model); returns the start-up facts and
/// the thread count used, with where it came from.
fn model_phases(cx: &mut Ctx, args: &Args, repo: &Path, work: &Path) -> (Option<DaemonFacts>, u32, &'static str) {
    cx.table.section("Start-up (model loading excluded from READY)");
    let facts = match startup_with_model(cx, args.starts) {
        Ok(f) => Some(f),
        Err(e) => {
            cx.failed("start-up with the model", &e);
            None
        }
    };
    if let Err(e) = startup_without_model(cx) {
        cx.failed("start-up without a model", &e);
    }
    let (threads, threads_source) = match (args.threads, &facts) {
        (Some(t), _) => (t, "--threads (also given to the daemon as model.threads)"),
        (None, Some(f)) => (f.threads, "the daemon's choice: min(CPU affinity, cgroup cpu.max quota)"),
        (None, None) => (
            std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            "CPU affinity (the daemon did not report its choice)",
        ),
    };

    // One daemon with the model serves the rest, with the thread count
    // fixed: left on auto, its governor would see the alternating bare runs
    // as foreign load and drop to fewer threads than the baseline uses.
    cx.threads = Some(threads);
    let main = generation_phases(cx, threads, args);
    if let Err(e) = main {
        cx.failed("generation through the daemon", &e);
    }

    match args.gemma.clone().unwrap_or_else(|| Some(repo.join(".cache/models/gemma-3-270m-q4_k_m.gguf"))) {
        Some(gemma) if gemma.is_file() => {
            let dir = work.join("gemma");
            if let Err(e) = second_model(cx, &gemma, &dir, threads, args) {
                cx.failed("the second model (Gemma 3 270M)", &e);
            }
        }
        Some(gemma) => {
            progress(&format!("skipping the second model: {} is missing (scripts/fetch-gemma.sh)", gemma.display()));
            cx.json.insert("second_model".into(), json!({"skipped": format!("{} is missing", gemma.display())}));
        }
        None => {
            cx.json.insert("second_model".into(), json!({"skipped": "--gemma off"}));
        }
    }

    (facts, threads, threads_source)
}

fn run() -> Result<bool> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(true);
    };
    let repo = repo_root();
    if args.only_vectors {
        return only_phase(&args, &repo, "vectors", "the vector index", vector_index);
    }
    if args.only_knowledge {
        let edgeaid = locate_edgeaid(args.edgeaid.clone())?.canonicalize().context("resolving the edgeaid path")?;
        let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
        return only_phase(&args, &repo, "knowledge", "knowledge bases", |t, j, dir| {
            knowledge_phase(t, j, &rt, &edgeaid, &repo, dir, threads)
        });
    }
    if args.only_code {
        let edgeaid = locate_edgeaid(args.edgeaid.clone())?.canonicalize().context("resolving the edgeaid path")?;
        return only_phase(&args, &repo, "code", "code nodes", |t, j, dir| code_phase(t, j, &edgeaid, dir));
    }
    let model = args.model.clone().unwrap_or_else(|| repo.join(".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if !model.is_file() {
        bail!("model {} does not exist; run `make setup` (scripts/fetch-model.sh) or pass --model PATH", model.display());
    }
    let model = model.canonicalize().with_context(|| format!("resolving {}", model.display()))?;
    if args.only_http {
        let edgeaid = locate_edgeaid(args.edgeaid.clone())?.canonicalize().context("resolving the edgeaid path")?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
        return only_phase(&args, &repo, "http", "the HTTP path", |t, j, dir| http_phase(t, j, &rt, &edgeaid, &model, &repo, dir));
    }
    if args.only_replay {
        let edgeaid = locate_edgeaid(args.edgeaid.clone())?.canonicalize().context("resolving the edgeaid path")?;
        // Left to the daemon unless given: its governor lowers the thread
        // count while other processes hold the cores, as on a gateway.
        let threads = args.threads;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
        return only_phase(&args, &repo, "replay", "the replayed query log", |t, j, dir| {
            replay_phase(t, j, &rt, &edgeaid, &model, &repo, dir, threads)
        });
    }
    if args.only_ttft {
        let edgeaid = locate_edgeaid(args.edgeaid.clone())?.canonicalize().context("resolving the edgeaid path")?;
        let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
        return only_phase(&args, &repo, "ttft", "TTFT under load", |t, j, dir| ttft_phase(t, j, &rt, &edgeaid, &model, dir, threads));
    }
    if args.only_kv {
        let edgeaid = locate_edgeaid(args.edgeaid.clone())?.canonicalize().context("resolving the edgeaid path")?;
        let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
        return only_phase(&args, &repo, "kv", "KV cache types", |t, j, dir| {
            kv_phase(t, j, &rt, &edgeaid, &model, dir, threads, args.tokens)
        });
    }
    if args.only_server {
        let edgeaid = locate_edgeaid(args.edgeaid.clone())?.canonicalize().context("resolving the edgeaid path")?;
        let threads = args.threads.unwrap_or(SIDE_BY_SIDE_THREADS);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
        return only_phase(&args, &repo, "server", "side by side with llama-server", |t, j, dir| {
            server_phase(t, j, &rt, &edgeaid, &model, &repo, dir, threads)
        });
    }
    let edgeaid = locate_edgeaid(args.edgeaid.clone())?.canonicalize().context("resolving the edgeaid path")?;
    let bench_exe = std::env::current_exe().context("locating the bench binary")?;
    let stale = std::fs::metadata(&edgeaid)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| newer_source(&repo.join("daemon/src"), t).or_else(|| newer_source(&repo.join("common/src"), t)));
    if let Some(src) = &stale {
        progress(&format!("WARNING: {} is newer than {}: the daemon binary may be stale", src.display(), edgeaid.display()));
    }
    let work = tempfile::Builder::new().prefix("edgeai-bench-").tempdir().context("creating a temporary directory")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the tokio runtime")?;
    let began = Instant::now();
    let cpu_start = cpu::snapshot(None)?;
    let load_start = loadavg();
    progress(&format!("measuring {} with {} (load average {load_start})", edgeaid.display(), model.display()));

    let mut cx = Ctx {
        rt,
        edgeaid: edgeaid.clone(),
        model: model.clone(),
        dir_model: work.path().join("model"),
        dir_no_model: work.path().join("no-model"),
        threads: args.threads,
        app: BenchApp { pre_prompt: PRE_PROMPT.to_owned(), max_tokens: args.tokens },
        table: Table::default(),
        json: Map::new(),
        errors: Vec::new(),
    };

    let (facts, threads, threads_source) =
        if args.only_workflow { (None, 0, "not measured (--only workflow)") } else { model_phases(&mut cx, &args, &repo, work.path()) };
    if let Err(e) = workflow_engine(&mut cx, &repo, &work.path().join("workflow")) {
        cx.failed("the workflow engine", &e);
    }
    if !args.only_workflow {
        if let Err(e) = vector_index(&mut cx.table, &mut cx.json, &work.path().join("vectors")) {
            cx.failed("the vector index", &e);
        }
        let (edgeaid, dir) = (cx.edgeaid.clone(), work.path().join("knowledge"));
        if let Err(e) = knowledge_phase(&mut cx.table, &mut cx.json, &cx.rt, &edgeaid, &repo, &dir, threads) {
            cx.failed("knowledge bases", &e);
        }
        if let Err(e) = code_phase(&mut cx.table, &mut cx.json, &cx.edgeaid.clone(), &work.path().join("code")) {
            cx.failed("code nodes", &e);
        }
    }

    let llama_info = bare::system_info();
    let elapsed = began.elapsed().as_secs_f64();
    let load_end = loadavg();
    let foreign_all = cpu::snapshot(None).map(|end| cpu_start.foreign_cores_until(&end)).ok();
    let commit = git(&repo, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&repo, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let model_bytes = std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0);

    let mut out = Map::new();
    out.insert("commit".into(), json!(commit));
    out.insert("worktree_dirty".into(), json!(dirty));
    out.insert(
        "unix_time".into(),
        json!(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)),
    );
    out.insert("duration_s".into(), json!(elapsed));
    out.insert(
        "machine".into(),
        json!({"cpu_model": cpu_model(),
               "available_parallelism": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
               "loadavg_start": load_start, "loadavg_end": load_end,
               "foreign_cpu_cores_whole_bench": foreign_all}),
    );
    out.insert(
        "build".into(),
        json!({"bench_binary": bench_exe, "bench_profile": profile_of(&bench_exe),
               "bench_debug_assertions": cfg!(debug_assertions),
               "bench_target_features": compiled_features(),
               "edgeaid": edgeaid, "edgeaid_profile": profile_of(&edgeaid),
               "edgeaid_maybe_stale": stale.map(|p| p.display().to_string()),
               "edgeaid_cpu": facts.as_ref().map(|f| f.cpu.clone()),
               "llama_system_info": llama_info}),
    );
    out.insert(
        "setup".into(),
        json!({"model": model, "model_bytes": model_bytes, "threads": threads, "threads_source": threads_source,
               "daemon_threads_event": facts.as_ref().map(|f| f.threads_event.clone()),
               "generation_daemon_threads": "fixed with model.threads (the thread governor is off), so both sides run the same count",
               "n_ctx": N_CTX, "n_seq_max": SLOTS, "batch": BATCH, "kv_cache": "q8_0 K and V, unified",
               "sampling": "greedy (temperature 0); generation ends at max_tokens or an end-of-generation token",
               "max_tokens": args.tokens, "rounds": args.rounds, "starts": args.starts,
               "pre_prompt": PRE_PROMPT, "queries": TOPICS}),
    );
    for (k, v) in std::mem::take(&mut cx.json) {
        out.insert(k, v);
    }
    out.insert("table".into(), cx.table.to_json());
    out.insert("errors".into(), json!(cx.errors));

    println!("edgeai bench  commit {commit}{}  {}", if dirty { " (dirty worktree)" } else { "" }, cpu_model());
    println!("  edgeaid {} ({} profile); bench {} profile", edgeaid.display(), profile_of(&edgeaid), profile_of(&bench_exe));
    println!("  daemon CPU baseline: {}", facts.as_ref().map(|f| f.cpu.as_str()).unwrap_or("unknown"));
    println!("  llama.cpp: {llama_info}");
    println!("  model {} ({:.1} MB), {threads} threads ({threads_source})", model.display(), model_bytes as f64 / 1e6);
    println!(
        "  context {N_CTX}, {SLOTS} sequences, batch {BATCH}, f16 unified KV (the daemon's default, and the bare loop's); greedy, {} tokens; load average {load_start} -> {load_end}",
        args.tokens
    );
    let foreign_text = foreign_all.map(|f| format!("{f:.2}")).unwrap_or_else(|| "unknown".into());
    println!("  other processes' CPU during the whole bench: {foreign_text} cores on average");
    println!("  MB = 10^6 bytes; medians unless stated");
    print!("{}", cx.table.render());

    let path = args.out.clone().unwrap_or_else(|| repo.join("bench-results/bench.json"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&Value::Object(out)).context("serialising the results")?;
    std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("\nwrote {} ({elapsed:.0} s)", path.display());
    Ok(!cx.table.has_errors())
}

/// Phase 1: `--starts` starts with the model, each stopped with SIGTERM.
fn startup_with_model(cx: &mut Ctx, starts: usize) -> Result<DaemonFacts> {
    progress(&format!("start-up with the model: {starts} starts"));
    let mut samples = Vec::new();
    let mut facts = None;
    for i in 0..starts {
        let launch = cx.launch(&cx.dir_model, Some(&cx.model));
        let s = cx.rt.block_on(async {
            let mut d = Daemon::start(&launch).await?;
            let loaded = d.wait_model_ready(Duration::from_secs(120)).await?;
            let load_ms = d.event("model loaded").and_then(|e| e.pointer("/fields/load_ms").and_then(Value::as_u64));
            let threads_event = d.event_at(|m| m.starts_with("inference threads")).map(|(_, e)| e);
            let cpu = d.event("starting").and_then(|e| e.pointer("/fields/cpu").and_then(Value::as_str).map(str::to_owned));
            let sample = json!({
                "exec_to_ready_ms": (d.ready_at - d.spawned_at).as_secs_f64() * 1000.0,
                "daemon_ready_ms": d.ready_ms,
                "exec_to_model_ready_ms": (loaded - d.spawned_at).as_secs_f64() * 1000.0,
                "daemon_load_ms": load_ms,
            });
            let term = Instant::now();
            let status = d.stop().await?;
            if !status.success() {
                bail!("edgeaid exited with {status} after SIGTERM");
            }
            let mut sample = sample;
            sample["sigterm_to_exit_ms"] = json!(term.elapsed().as_secs_f64() * 1000.0);
            Ok::<_, anyhow::Error>((sample, threads_event, cpu))
        })?;
        let (sample, threads_event, cpu) = s;
        if i == 0 {
            let ev = threads_event.ok_or_else(|| anyhow!("the daemon logged no `inference threads` event"))?;
            let threads = ev
                .pointer("/fields/threads")
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("inference threads event without threads: {ev}"))?;
            facts = Some(DaemonFacts {
                threads: u32::try_from(threads).context("threads")?,
                threads_event: ev.get("fields").cloned().unwrap_or(Value::Null),
                cpu: cpu.unwrap_or_else(|| "unknown".into()),
            });
        }
        samples.push(sample);
        std::thread::sleep(SETTLE);
    }
    let col = |k: &str| samples.iter().filter_map(|s| s.get(k).and_then(Value::as_f64)).collect::<Vec<_>>();
    let ready = median(&col("exec_to_ready_ms"));
    let own = median(&col("daemon_ready_ms"));
    let model_ready = median(&col("exec_to_model_ready_ms"));
    let load = median(&col("daemon_load_ms"));
    let stop = median(&col("sigterm_to_exit_ms"));
    let t = &mut cx.table;
    let fmt = |v: Option<f64>| v.map(|x| format!("{x:.1} ms")).unwrap_or_else(|| "n/a".into());
    t.target(
        &format!("exec -> READY=1 (notify socket), {starts} starts"),
        fmt(ready),
        "<= 300 ms",
        ready.is_some_and(|v| v <= TARGET_READY_MS),
    );
    t.target("ready_ms (daemon's own log: main -> READY=1)", fmt(own), "<= 300 ms", own.is_some_and(|v| v <= TARGET_READY_MS));
    t.info("exec -> /ready 200 (model loaded)", fmt(model_ready));
    t.info("model load_ms (daemon's log)", fmt(load));
    t.info("SIGTERM -> exit (idle)", fmt(stop));
    cx.json.insert(
        "startup_with_model".into(),
        json!({"samples": samples, "median_exec_to_ready_ms": ready, "median_daemon_ready_ms": own,
               "median_exec_to_model_ready_ms": model_ready, "median_daemon_load_ms": load, "median_sigterm_to_exit_ms": stop}),
    );
    facts.ok_or_else(|| anyhow!("no start-up sample"))
}

/// Phase 2: starts with `model.enabled = false`: READY time and idle RSS.
fn startup_without_model(cx: &mut Ctx) -> Result<()> {
    progress(&format!("start-up without a model: {NO_MODEL_STARTS} starts, RSS after {RSS_SETTLE:?}"));
    let mut samples = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..NO_MODEL_STARTS {
        let launch = cx.launch(&cx.dir_no_model, None);
        let (sample, r) = cx.rt.block_on(async {
            let d = Daemon::start(&launch).await?;
            let ready_ms = (d.ready_at - d.spawned_at).as_secs_f64() * 1000.0;
            let own_ms = d.ready_ms;
            let health = client::get_status(d.addr, "/health").await?;
            tokio::time::sleep(RSS_SETTLE).await;
            let r = d.rss()?;
            let status = d.stop().await?;
            if !status.success() {
                bail!("edgeaid exited with {status} after SIGTERM");
            }
            Ok::<_, anyhow::Error>((
                json!({"exec_to_ready_ms": ready_ms, "daemon_ready_ms": own_ms, "health": health, "rss": rss_json(&r)}),
                r,
            ))
        })?;
        samples.push(sample);
        rss.push(r);
        std::thread::sleep(SETTLE);
    }
    let ready = median(&samples.iter().filter_map(|s| s["exec_to_ready_ms"].as_f64()).collect::<Vec<_>>());
    let vm = median(&rss.iter().map(|r| mb(r.vm_rss_kb)).collect::<Vec<_>>());
    let t = &mut cx.table;
    t.target(
        &format!("exec -> READY=1 without a model, {NO_MODEL_STARTS} starts"),
        ready.map(|v| format!("{v:.1} ms")).unwrap_or_default(),
        "<= 300 ms",
        ready.is_some_and(|v| v <= TARGET_READY_MS),
    );
    t.section("Memory (VmRSS from /proc/PID/status)");
    t.target(
        "idle RSS without a model (model.enabled = false)",
        vm.map(|v| format!("{v:.1} MB")).unwrap_or_default(),
        "<= 30 MB",
        vm.is_some_and(|v| v <= TARGET_RSS_NO_MODEL_MB),
    );
    if let Some(r) = rss.last() {
        t.info("  breakdown (last start)", rss_breakdown(r));
    }
    cx.json.insert("startup_without_model".into(), json!({"samples": samples, "median_exec_to_ready_ms": ready, "median_vm_rss_mb": vm}));
    Ok(())
}

/// Runs `f` and measures the other processes' CPU meanwhile (in cores).
fn timed<T>(daemon: u32, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let a = cpu::snapshot(Some(daemon))?;
    let v = f()?;
    let b = cpu::snapshot(Some(daemon))?;
    Ok((v, a.foreign_cores_until(&b)))
}

/// One daemon streaming run, as JSON.
fn stream_json(s: &StreamRun) -> Value {
    json!({"ttft_ms": s.ttft_s() * 1000.0, "gen_tok_s": s.gen_tok_s(), "e2e_ms": s.e2e_s() * 1000.0,
           "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens, "message_events": s.message_events})
}

fn bare_json(b: &BareRun) -> Value {
    json!({"ttft_ms": b.ttft_s * 1000.0, "prompt_tok_s": b.prompt_tok_s(), "gen_tok_s": b.gen_tok_s(),
           "prompt_tokens": b.prompt_tokens, "generated": b.generated, "ended_by_eog": b.ended_by_eog})
}

/// Starts a daemon, waits for its model, and lets its RSS settle.
fn start_loaded(cx: &Ctx, launch: &Launch) -> Result<Daemon> {
    cx.rt.block_on(async {
        let mut d = Daemon::start(launch).await?;
        d.wait_model_ready(Duration::from_secs(120)).await?;
        tokio::time::sleep(RSS_SETTLE).await;
        Ok(d)
    })
}

/// Phases 3 to 6 on one daemon with the model loaded.
fn generation_phases(cx: &mut Ctx, threads: u32, args: &Args) -> Result<()> {
    progress("starting the daemon for the generation runs");
    let launch = cx.launch(&cx.dir_model, Some(&cx.model));
    let daemon = start_loaded(cx, &launch)?;
    let idle = daemon.rss()?;
    cx.table.target(
        "idle RSS with the model loaded (1 s after /ready 200)",
        format!("{:.1} MB", mb(idle.vm_rss_kb)),
        "<= 200 MB",
        mb(idle.vm_rss_kb) <= TARGET_RSS_MODEL_MB,
    );
    cx.table.info("  breakdown", rss_breakdown(&idle));

    progress(&format!("loading the bare baseline ({threads} threads)"));
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init().context("llama.cpp backend")?;
    let model = LlamaModel::load_from_file(&backend, &cx.model, &LlamaModelParams::default())
        .with_context(|| format!("loading {}", cx.model.display()))?;
    let mut base = Baseline::new(&backend, &model, Shape { n_ctx: N_CTX, n_seq_max: SLOTS, batch: BATCH, threads })?;
    let prompts = TOPICS.iter().map(|q| bare::chat_prompt(&model, PRE_PROMPT, q)).collect::<Result<Vec<_>>>()?;

    let result = compare(cx, &daemon, &mut base, &prompts, args);
    let after = match result {
        Ok(single_e2e) => {
            if let Err(e) = concurrency(cx, &daemon, single_e2e) {
                cx.failed("concurrent clients", &e);
            }
            std::thread::sleep(RSS_SETTLE);
            daemon.rss()
        }
        Err(e) => {
            cx.failed("bare vs daemon", &e);
            daemon.rss()
        }
    }?;
    cx.table.section("Memory after generation (daemon idle again, 1 s settled)");
    cx.table.target(
        "RSS with the model loaded, after all generation runs",
        format!("{:.1} MB", mb(after.vm_rss_kb)),
        "<= 200 MB",
        mb(after.vm_rss_kb) <= TARGET_RSS_MODEL_MB,
    );
    cx.table.info("  breakdown", rss_breakdown(&after));
    let term = Instant::now();
    let status = cx.rt.block_on(daemon.stop())?;
    let stop_ms = term.elapsed().as_secs_f64() * 1000.0;
    cx.table.info("SIGTERM -> exit after the runs", format!("{stop_ms:.1} ms ({status})"));
    cx.json.insert(
        "memory".into(),
        json!({"idle_with_model": rss_json(&idle), "after_generation": rss_json(&after), "sigterm_to_exit_ms": stop_ms}),
    );
    Ok(())
}

/// Phase 7: the second model through the daemon alone (no bare loop):
/// idle RSS, streaming generation over at most SECOND_MODEL_ROUNDS rounds,
/// RSS after. Rounds are not filtered for a quiet machine; the other
/// processes' CPU is reported next to the figures instead.
fn second_model(cx: &mut Ctx, gguf: &Path, dir: &Path, threads: u32, args: &Args) -> Result<()> {
    progress(&format!("second model: {} ({threads} threads)", gguf.display()));
    let mut launch = cx.launch(dir, Some(gguf));
    launch.chat_template = Some(GEMMA_TEMPLATE);
    let daemon = start_loaded(cx, &launch)?;
    let idle = daemon.rss()?;
    let stream = |cx: &Ctx, q: &str| cx.rt.block_on(client::chat_stream(daemon.addr, &daemon.key, "bench", q));
    let first = stream(cx, TOPICS[0])?;
    std::thread::sleep(SETTLE);
    let mut runs = Vec::new();
    let mut foreign = Vec::new();
    for k in 1..=args.rounds.min(SECOND_MODEL_ROUNDS) {
        progress(&format!("  second model, round {k}"));
        let (run, f) = timed(daemon.pid, || stream(cx, TOPICS[k % TOPICS.len()]))?;
        runs.push(run);
        foreign.push(f);
        std::thread::sleep(SETTLE);
    }
    std::thread::sleep(RSS_SETTLE);
    let after = daemon.rss()?;
    cx.rt.block_on(daemon.stop())?;

    let gen = median(&runs.iter().filter_map(StreamRun::gen_tok_s).collect::<Vec<_>>());
    let ttft = median(&runs.iter().map(StreamRun::ttft_s).collect::<Vec<_>>());
    let tokens: Vec<String> = runs.iter().map(|r| r.completion_tokens.to_string()).collect();
    let model_mb = std::fs::metadata(gguf).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    let t = &mut cx.table;
    t.section(&format!(
        "Second model: {} ({model_mb:.1} MB, chat_template {GEMMA_TEMPLATE:?}), daemon only, {} rounds",
        gguf.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        runs.len()
    ));
    t.info("idle RSS with the model loaded (1 s after /ready 200)", format!("{:.1} MB ({})", mb(idle.vm_rss_kb), rss_breakdown(&idle)));
    t.info("generation (client-side, first..last message event)", tok_s(gen));
    t.info("TTFT, new query (system prompt prefix cached)", opt_ms(ttft));
    t.info("TTFT, first request after start", ms(first.ttft_s()));
    t.info("tokens generated per run", format!("{} (max {})", tokens.join("/"), args.tokens));
    t.info("other processes' CPU per run, median", format!("{:.2} cores", median(&foreign).unwrap_or(0.0)));
    t.info("RSS after the runs", format!("{:.1} MB ({})", mb(after.vm_rss_kb), rss_breakdown(&after)));
    cx.json.insert(
        "second_model".into(),
        json!({"model": gguf, "model_bytes": std::fs::metadata(gguf).map(|m| m.len()).unwrap_or(0),
               "chat_template": GEMMA_TEMPLATE, "threads": threads,
               "idle_with_model": rss_json(&idle), "after_generation": rss_json(&after),
               "median_gen_tok_s": gen, "median_ttft_ms": ttft.map(|s| s * 1000.0),
               "first_request": stream_json(&first), "runs": runs.iter().map(stream_json).collect::<Vec<_>>(),
               "foreign_cpu_cores": foreign}),
    );
    Ok(())
}

/// Phase 4: bare loop and daemon alternately, until `--rounds` rounds ran
/// on a quiet machine (at most three times as many attempts); returns the
/// daemon's median single-client end-to-end rate (completion tokens / e2e).
fn compare(cx: &mut Ctx, daemon: &Daemon, base: &mut Baseline<'_>, prompts: &[Vec<LlamaToken>], args: &Args) -> Result<f64> {
    let n = args.tokens;
    let stream = |cx: &Ctx, user: &str, q: &str| cx.rt.block_on(client::chat_stream(daemon.addr, &daemon.key, user, q));
    let pid = daemon.pid;

    progress("warm-up: one bare run and one daemon run (not counted)");
    base.run(&prompts[0], n)?;
    std::thread::sleep(SETTLE);
    let first = stream(cx, "bench", TOPICS[0])?;
    std::thread::sleep(SETTLE);

    let mut kept: Vec<(BareRun, StreamRun)> = Vec::new();
    let mut all: Vec<(BareRun, StreamRun)> = Vec::new();
    let mut rounds = Vec::new();
    let mut foreign = Vec::new();
    let mut last_topic = 0;
    let max_attempts = args.rounds * 3;
    let mut attempt = 0;
    while kept.len() < args.rounds && attempt < max_attempts {
        let k = (attempt + 1) % TOPICS.len();
        last_topic = k;
        let bare_first = attempt % 2 == 0;
        progress(&format!(
            "round {} ({} of {} kept): {}",
            attempt + 1,
            kept.len(),
            args.rounds,
            if bare_first { "bare, then daemon" } else { "daemon, then bare" }
        ));
        let ((b, fb), (d, fd)) = if bare_first {
            let b = timed(pid, || base.run(&prompts[k], n))?;
            std::thread::sleep(SETTLE);
            let d = timed(pid, || stream(cx, "bench", TOPICS[k]))?;
            (b, d)
        } else {
            let d = timed(pid, || stream(cx, "bench", TOPICS[k]))?;
            std::thread::sleep(SETTLE);
            let b = timed(pid, || base.run(&prompts[k], n))?;
            (b, d)
        };
        std::thread::sleep(SETTLE);
        attempt += 1;
        foreign.extend([fb, fd]);
        let quiet = fb <= QUIET_CORES && fd <= QUIET_CORES;
        if !quiet {
            progress(&format!("  not counted: other processes used {fb:.2} cores (bare) / {fd:.2} cores (daemon)"));
        }
        rounds.push(json!({"query": TOPICS[k], "bare": bare_json(&b), "daemon": stream_json(&d),
                           "ratio": d.gen_tok_s().zip(b.gen_tok_s()).map(|(x, y)| x / y),
                           "same_prompt_tokens": d.prompt_tokens == b.prompt_tokens as u64, "same_answer": d.answer == b.text,
                           "foreign_cpu_cores": {"bare": fb, "daemon": fd}, "counted": quiet}));
        if quiet {
            kept.push((b.clone(), d.clone()));
        }
        all.push((b, d));
    }
    // With no quiet round at all, report every round (and the validity MISS says why).
    let used = if kept.is_empty() { &all } else { &kept };

    progress("warm TTFT: the last query again, 3 times (prefix in the slot's KV cache)");
    let mut warm = Vec::new();
    for _ in 0..3 {
        warm.push(stream(cx, "bench", TOPICS[last_topic])?.ttft_s());
        std::thread::sleep(SETTLE);
    }

    let of = |f: &dyn Fn(&(BareRun, StreamRun)) -> Option<f64>| median(&used.iter().filter_map(f).collect::<Vec<_>>());
    let bare_gen = of(&|(b, _)| b.gen_tok_s());
    let bare_prompt = of(&|(b, _)| Some(b.prompt_tok_s()));
    let bare_ttft = of(&|(b, _)| Some(b.ttft_s));
    let d_gen = of(&|(_, d)| d.gen_tok_s());
    let d_ttft = of(&|(_, d)| Some(d.ttft_s()));
    let d_e2e = of(&|(_, d)| Some(d.e2e_s()));
    let d_e2e_rate = of(&|(_, d)| Some(d.completion_tokens as f64 / d.e2e_s()));
    let pair_ratio = of(&|(b, d)| d.gen_tok_s().zip(b.gen_tok_s()).map(|(x, y)| x / y));
    let warm_ttft = median(&warm);
    let ratio = d_gen.zip(bare_gen).map(|(d, b)| d / b);
    let tokens: Vec<u32> = used.iter().map(|(b, _)| b.generated).collect();
    let eog = used.iter().filter(|(b, _)| b.ended_by_eog).count();
    let same_prompt = used.iter().filter(|(b, d)| d.prompt_tokens == b.prompt_tokens as u64).count();
    let same_answer = used.iter().filter(|(b, d)| d.answer == b.text).count();
    let prompt_len = used.first().map(|(b, _)| b.prompt_tokens).unwrap_or(0);
    let changes = daemon.events("inference threads changed for the CPU load").len();

    let t = &mut cx.table;
    t.section(&format!("Validity (a round counts when other processes used <= {QUIET_CORES} cores during both runs)"));
    t.target("rounds counted", format!("{} of {attempt}", kept.len()), &format!("{} wanted", args.rounds), kept.len() == args.rounds);
    t.info("other processes' CPU per timed run, median / max", {
        let max = foreign.iter().copied().fold(0.0, f64::max);
        format!("{:.2} / {max:.2} cores", median(&foreign).unwrap_or(0.0))
    });
    t.info("daemon inference thread changes during the runs", changes.to_string());
    t.section(&format!("Bare llama-cpp-2 decode loop (in-process baseline), {} rounds", used.len()));
    t.info("prompt processing", tok_s(bare_prompt));
    t.info("generation", tok_s(bare_gen));
    t.info("time to first token (prompt decode + first sample)", opt_ms(bare_ttft));
    t.info(
        "tokens generated per run",
        format!("{} (max {n}; {eog} of {} ended by EOG)", tokens.iter().map(u32::to_string).collect::<Vec<_>>().join("/"), tokens.len()),
    );
    t.info("prompt tokens", format!("{prompt_len} (first query)"));
    t.section(&format!("Through the daemon: POST /v1/chat-messages, streaming, one client, {} rounds", used.len()));
    t.info("TTFT, new query (system prompt prefix cached)", opt_ms(d_ttft));
    t.info("TTFT, first request after start", ms(first.ttft_s()));
    t.info("TTFT, repeated query (whole prefix cached)", opt_ms(warm_ttft));
    t.info("generation (client-side, first..last message event)", tok_s(d_gen));
    t.info("end-to-end latency", opt_ms(d_e2e));
    t.info("end-to-end rate (completion tokens / e2e)", tok_s(d_e2e_rate));
    t.target(
        "ratio daemon / bare generation tok/s (of medians)",
        ratio.map(|r| format!("{r:.3}")).unwrap_or_else(|| "n/a".into()),
        ">= 0.95",
        ratio.is_some_and(|r| r >= TARGET_RATIO),
    );
    t.info("  median of per-round ratios", pair_ratio.map(|r| format!("{r:.3}")).unwrap_or_else(|| "n/a".into()));
    t.info("same prompt tokens as the bare loop", format!("{same_prompt} of {} rounds", used.len()));
    t.info("same answer text as the bare loop", format!("{same_answer} of {} rounds", used.len()));

    cx.json.insert(
        "generation".into(),
        json!({"rounds": rounds, "rounds_counted": kept.len(), "attempts": attempt,
               "bare": {"median_prompt_tok_s": bare_prompt, "median_gen_tok_s": bare_gen, "median_ttft_ms": bare_ttft.map(|s| s * 1000.0)},
               "daemon": {"median_ttft_ms": d_ttft.map(|s| s * 1000.0), "first_request": stream_json(&first),
                          "warm_ttft_ms": warm.iter().map(|s| s * 1000.0).collect::<Vec<_>>(),
                          "median_gen_tok_s": d_gen, "median_e2e_ms": d_e2e.map(|s| s * 1000.0), "median_e2e_tok_s": d_e2e_rate},
               "ratio_of_medians": ratio, "median_of_round_ratios": pair_ratio, "daemon_thread_changes": changes,
               "method": "generation tok/s = (tokens - 1) / (time of last token - time of first token); bare: sample times in-process; \
                          daemon: arrival of the first and last `message` SSE event, tokens = message_end usage.completion_tokens; \
                          TTFT = request sent -> first `message` event (daemon) or prompt decode + first sample (bare); \
                          medians over the counted rounds only"}),
    );
    d_e2e_rate.ok_or_else(|| anyhow!("no daemon run"))
}

/// Phase 5: `CLIENTS` streaming clients at once, until `CONCURRENT_ROUNDS`
/// rounds ran on a quiet machine (at most three times as many attempts).
fn concurrency(cx: &mut Ctx, daemon: &Daemon, single_e2e: f64) -> Result<()> {
    progress(&format!("{CLIENTS} concurrent clients, {CONCURRENT_ROUNDS} rounds"));
    let mut rounds = Vec::new();
    let mut kept: Vec<Vec<StreamRun>> = Vec::new();
    let mut all: Vec<Vec<StreamRun>> = Vec::new();
    let mut attempt = 0;
    while kept.len() < CONCURRENT_ROUNDS && attempt < CONCURRENT_ROUNDS * 3 {
        let (addr, key) = (daemon.addr, daemon.key.clone());
        let r = attempt;
        let (runs, fc) = timed(daemon.pid, || {
            cx.rt.block_on(async move {
                let mut set = tokio::task::JoinSet::new();
                for c in 0..CLIENTS {
                    // A query the slots have not seen, so each client reads its prompt.
                    let q = format!("Story number {}. {}", r * CLIENTS + c + 1, TOPICS[c % TOPICS.len()]);
                    let key = key.clone();
                    set.spawn(async move { client::chat_stream(addr, &key, &format!("client-{c}"), &q).await });
                }
                let mut runs = Vec::new();
                while let Some(j) = set.join_next().await {
                    runs.push(j.context("client task")??);
                }
                Ok::<_, anyhow::Error>(runs)
            })
        })?;
        std::thread::sleep(SETTLE);
        attempt += 1;
        let start = runs.iter().map(|s| s.sent).min().ok_or_else(|| anyhow!("no client ran"))?;
        let end = runs.iter().map(|s| s.end).max().ok_or_else(|| anyhow!("no client ran"))?;
        let total: u64 = runs.iter().map(|s| s.completion_tokens).sum();
        let wall = (end - start).as_secs_f64();
        let quiet = fc <= QUIET_CORES;
        if !quiet {
            progress(&format!("  not counted: other processes used {fc:.2} cores"));
        }
        rounds.push(json!({"wall_ms": wall * 1000.0, "completion_tokens": total, "aggregate_tok_s": total as f64 / wall,
                           "foreign_cpu_cores": fc, "counted": quiet,
                           "clients": runs.iter().map(stream_json).collect::<Vec<_>>()}));
        if quiet {
            kept.push(runs.clone());
        }
        all.push(runs);
    }
    let used = if kept.is_empty() { &all } else { &kept };
    let aggregate = |runs: &Vec<StreamRun>| -> Option<f64> {
        let start = runs.iter().map(|s| s.sent).min()?;
        let end = runs.iter().map(|s| s.end).max()?;
        Some(runs.iter().map(|s| s.completion_tokens).sum::<u64>() as f64 / (end - start).as_secs_f64())
    };
    let agg = median(&used.iter().filter_map(aggregate).collect::<Vec<_>>());
    let ttfts: Vec<f64> = used.iter().flatten().map(StreamRun::ttft_s).collect();
    let ttft = median(&ttfts);
    let max_ttft = ttfts.iter().copied().fold(f64::NAN, f64::max);
    let gen = median(&used.iter().flatten().filter_map(StreamRun::gen_tok_s).collect::<Vec<_>>());
    let t = &mut cx.table;
    t.section(&format!("{CLIENTS} concurrent streaming clients (continuous batching), {} of {attempt} rounds counted", kept.len()));
    t.target(
        "aggregate tokens/s (all completion tokens / wall time)",
        tok_s(agg),
        &format!("> single client {single_e2e:.1} tok/s e2e"),
        agg.is_some_and(|a| a > single_e2e),
    );
    t.info("TTFT per client, median / max", format!("{} / {}", opt_ms(ttft), ms(max_ttft)));
    t.info("generation per client", tok_s(gen));
    cx.json.insert(
        "concurrency".into(),
        json!({"clients": CLIENTS, "rounds": rounds, "rounds_counted": kept.len(), "median_aggregate_tok_s": agg,
               "single_client_e2e_tok_s": single_e2e,
               "median_ttft_ms": ttft.map(|s| s * 1000.0), "max_ttft_ms": max_ttft * 1000.0, "median_client_gen_tok_s": gen}),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn options_are_parsed_with_defaults() {
        let a = parse(&[]).expect("ok").expect("args");
        assert_eq!((a.tokens, a.rounds, a.starts, a.threads), (128, 9, 5, None));
        let a = parse(&["--tokens", "64", "--threads", "1", "--edgeaid", "/x/edgeaid"]).expect("ok").expect("args");
        assert_eq!((a.tokens, a.threads, a.edgeaid), (64, Some(1), Some(PathBuf::from("/x/edgeaid"))));
        assert_eq!(parse(&["--gemma", "off"]).expect("ok").expect("args").gemma, Some(None));
        assert_eq!(parse(&["--gemma", "/m/g.gguf"]).expect("ok").expect("args").gemma, Some(Some(PathBuf::from("/m/g.gguf"))));
        assert!(parse(&["--help"]).expect("ok").is_none());
        let a = parse(&["--only", "knowledge"]).expect("ok").expect("args");
        assert!(a.only_knowledge && !a.only_vectors && !a.only_workflow && !a.only_code);
        let a = parse(&["--only", "code"]).expect("ok").expect("args");
        assert!(a.only_code && !a.only_knowledge && !a.only_vectors && !a.only_workflow && !a.only_kv);
        let a = parse(&["--only", "kv"]).expect("ok").expect("args");
        assert!(a.only_kv && !a.only_code && !a.only_knowledge && !a.only_ttft);
        let a = parse(&["--only", "ttft"]).expect("ok").expect("args");
        assert!(a.only_ttft && !a.only_kv);
        let a = parse(&["--only", "server"]).expect("ok").expect("args");
        assert!(a.only_server && !a.only_http && !a.only_kv);
        let a = parse(&["--only", "http"]).expect("ok").expect("args");
        assert!(a.only_http && !a.only_server && !a.only_replay);
        let a = parse(&["--only", "replay"]).expect("ok").expect("args");
        assert!(a.only_replay && !a.only_http && !a.only_ttft);
        assert!(!parse(&[]).expect("ok").expect("args").only_code, "the full bench is the default");
        let msg = parse(&["--only", "nothing"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("`knowledge`") && msg.contains("`code`") && msg.contains("`replay`"), "{msg}");
    }

    #[test]
    fn bad_options_are_named() {
        let msg = |args: &[&str]| parse(args).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(&["--tokens"]).contains("--tokens needs a value"));
        assert!(msg(&["--tokens", "0"]).contains("--tokens must be a positive integer"));
        assert!(msg(&["--rounds", "many"]).contains("--rounds must be a positive integer, not \"many\""));
        assert!(msg(&["--fast", "1"]).contains("unknown option \"--fast\""));
    }

    #[test]
    fn profile_is_the_binary_directory() {
        assert_eq!(profile_of(Path::new("/t/release/edgeaid")), "release");
    }
}
