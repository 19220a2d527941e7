//! Code nodes' per-call overhead (issue 14), a trivial `main` that returns
//! its input, measured two ways in one run, each next to a baseline:
//! - in this process, through edgeaid's own `Sandbox::run` on a runtime
//!   shaped like the daemon's (two tokio workers): JavaScript (and
//!   `js::run` alone, without the blocking-thread hop) against a serde_json
//!   round trip of the same inputs and result (the marshalling every code
//!   node pays around its engine: the cost of the transform without one);
//!   Python with `pool_size` 0 (a process per call) next to a bare
//!   `python3 -I -S -c pass` spawn and wait of the same interpreter (what
//!   any per-call process costs without our sandbox), then `pool_size` 1
//!   and 2 warm (a pause between calls long enough for the pool to refill)
//!   and back to back (the pool drained);
//! - end to end over HTTP through edgeaid (no model): a start → code → end
//!   workflow in JavaScript and in Python, and the same graph with a
//!   template-transform node (no sandbox) as the baseline, run blocking and
//!   sequentially over one keep-alive connection; the difference of the
//!   latencies is the code node's overhead through the whole stack; the
//!   daemon's RSS around the runs.
//!
//! Python being unavailable (no python3, no sandbox in this build) is a
//! figure of its own (`Err(why)`), never a failure of the JavaScript ones.
//! Owns this phase's workflows, client loop and measuring; knows nothing of
//! tables or JSON reports (bench.rs renders [`Figures`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use edgeaid::config::CodeSettings;
use edgeaid::sandbox::python::PythonConfig;
use edgeaid::sandbox::{js, Language, RunLimits, Sandbox, SandboxConfig};
use http::Method;
use serde_json::{json, Map, Value};

use super::cpu;
use super::daemon::{Daemon, Launch, Rss};
use super::knowledge::Http;

/// Calls per figure. JavaScript is timed in `ROUNDS` interleaved rounds
/// with its baseline; Python cold runs interleave with the bare spawns.
pub const JS_CALLS: usize = 500;
pub const PY_COLD_CALLS: usize = 100;
pub const PY_WARM_CALLS: usize = 200;
pub const PY_BURST_CALLS: usize = 100;
pub const HTTP_RUNS: usize = 2000;
pub const HTTP_PY_RUNS: usize = 100;
const ROUNDS: usize = 4;
/// Untimed calls before each series.
const WARM_UP: usize = 10;
/// The pools measured warm and back to back.
pub const POOLS: [usize; 2] = [1, 2];
/// The pause between warm calls: twice a cold call's median (a pool
/// process is started in less than a whole cold call), within these bounds;
/// the upper one when the cold calls could not be measured.
const MIN_GAP: Duration = Duration::from_millis(20);
const MAX_GAP: Duration = Duration::from_millis(250);

/// The trivial transforms.
pub const JS_MAIN: &str = "function main({a}) {\n    return {r: a};\n}\n";
pub const PY_MAIN: &str = "def main(a: str) -> dict:\n    return {\"r\": a}\n";
/// The template-transform baseline's template.
pub const TEMPLATE: &str = "{{ a }}";
/// The input every call sends, and expects back as `r`.
pub const INPUT: &str = "E42:PUMP3:OVERTEMP:87.5";

/// The workflows of the HTTP part, by app id.
pub const APP_TEMPLATE: &str = "bench-code-template";
pub const APP_JS: &str = "bench-code-js";
pub const APP_PY: &str = "bench-code-py";

fn progress(msg: &str) {
    eprintln!("bench: code: {msg}");
}

// ---- the figures -------------------------------------------------------------

/// One timed series and how busy the rest of the machine was meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub calls: Vec<Duration>,
    /// Cores other processes kept busy (Python sandbox processes count as
    /// other processes until reaped).
    pub foreign_cores: f64,
}

/// A pool size's two Python series.
#[derive(Debug, Clone)]
pub struct Pool {
    pub size: usize,
    /// With `Figures::gap` between calls.
    pub warm: Result<Series, String>,
    /// One call right after the other.
    pub burst: Result<Series, String>,
}

/// The Python part in this process.
#[derive(Debug, Clone)]
pub struct PythonFigures {
    /// `Sandbox::python_info`'s runtime.
    pub runtime: String,
    pub cold: Result<Series, String>,
    pub pools: Vec<Pool>,
    /// The pause between warm calls.
    pub gap: Duration,
}

/// The bare interpreter spawn baseline.
#[derive(Debug, Clone)]
pub struct SpawnFigures {
    pub executable: PathBuf,
    /// Where the executable came from.
    pub source: &'static str,
    pub series: Series,
}

/// One workflow over HTTP.
#[derive(Debug, Clone)]
pub struct HttpSeries {
    pub app: &'static str,
    pub series: Series,
}

/// The HTTP part.
#[derive(Debug, Clone)]
pub struct EndToEnd {
    pub template: HttpSeries,
    pub javascript: HttpSeries,
    /// `Err`: the import or the runs failed (no Python here).
    pub python: Result<HttpSeries, String>,
    /// The pause after each Python run (the in-process warm gap).
    pub python_gap: Duration,
    /// The daemon's RSS at each step.
    pub rss_steps: Vec<(&'static str, Rss)>,
    /// `edgeaictl status`'s code runtimes, from `GET /admin/v1/status`.
    pub status: Value,
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub limits: RunLimits,
    pub js_sandbox: Series,
    pub js_engine: Series,
    pub js_baseline: Series,
    pub spawn: Result<SpawnFigures, String>,
    /// `Err(why)`: Python code nodes cannot run in this process.
    pub python: Result<PythonFigures, String>,
    pub http: Result<EndToEnd, String>,
}

// ---- the workflows -------------------------------------------------------------

/// A start → `node` → end workflow: input `a`, output `r` from the middle
/// node's `output` variable. `node` is the YAML of that node's `data`, its
/// lines indented by 8 spaces.
fn workflow(name: &str, node: &str, output: &str) -> String {
    let edge = |from: &str, to: &str| {
        format!(
            "    - id: {from}-source-{to}-target\n      source: '{from}'\n      sourceHandle: source\n      target: '{to}'\n      \
             targetHandle: target\n      type: custom\n"
        )
    };
    let node_head = |id: &str| format!("    - id: '{id}'\n      type: custom\n      data:\n");
    [
        format!("app:\n  name: {name}\n  mode: workflow\n  description: 'bench: one node between start and end'\n"),
        "kind: app\nversion: 0.3.1\nworkflow:\n  graph:\n    edges:\n".into(),
        edge("1000", "1001"),
        edge("1001", "1002"),
        "    nodes:\n".into(),
        node_head("1000"),
        "        type: start\n        title: Start\n        variables:\n".into(),
        "        - variable: a\n          label: a\n          type: text-input\n          required: true\n          max_length: 256\n"
            .into(),
        node_head("1001"),
        node.to_owned(),
        node_head("1002"),
        "        type: end\n        title: End\n        outputs:\n".into(),
        format!("        - variable: r\n          value_selector: ['1001', {output}]\n          value_type: string\n"),
    ]
    .concat()
}

/// The input selector every middle node reads.
const INPUT_VARIABLES: &str =
    "        variables:\n        - variable: a\n          value_selector: ['1000', a]\n          value_type: string\n";

fn code_workflow(name: &str, language: Language, code: &str) -> String {
    // A JSON string is a YAML double-quoted scalar.
    let node = format!(
        "        type: code\n        title: Code\n        code_language: {}\n        code: {}\n{INPUT_VARIABLES}{}",
        language.as_str(),
        Value::String(code.to_owned()),
        "        outputs:\n          r:\n            type: string\n            children: null\n",
    );
    workflow(name, &node, "r")
}

/// The three workflows: (app id, YAML).
pub fn workflows() -> [(&'static str, String); 3] {
    let template = format!(
        "        type: template-transform\n        title: Template\n        template: {}\n{INPUT_VARIABLES}",
        Value::String(TEMPLATE.to_owned())
    );
    [
        (APP_TEMPLATE, workflow(APP_TEMPLATE, &template, "output")),
        (APP_JS, code_workflow(APP_JS, Language::JavaScript, JS_MAIN)),
        (APP_PY, code_workflow(APP_PY, Language::Python3, PY_MAIN)),
    ]
}

// ---- in this process -----------------------------------------------------------

/// The daemon's default limits of one run (`[code]` unset).
fn default_limits() -> RunLimits {
    let s = CodeSettings::default();
    RunLimits { timeout: s.timeout, memory_bytes: s.memory_mb * 1024 * 1024, max_output_bytes: s.max_output_bytes }
}

fn inputs() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("a".into(), Value::String(INPUT.into()));
    m
}

/// Checks a run's result is `{"r": INPUT}`.
fn check(out: &Map<String, Value>) -> Result<()> {
    match out.get("r").and_then(Value::as_str) {
        Some(INPUT) if out.len() == 1 => Ok(()),
        _ => bail!("the trivial main returned {}", Value::Object(out.clone())),
    }
}

/// One timed sandbox call, checked.
async fn call(sandbox: &Sandbox, language: Language, limits: &RunLimits, input: &Map<String, Value>) -> Result<Duration> {
    let code = match language {
        Language::JavaScript => JS_MAIN,
        Language::Python3 => PY_MAIN,
    };
    let t = Instant::now();
    let out = sandbox.run(language, code, input, limits).await;
    let took = t.elapsed();
    check(&out.map_err(|e| anyhow!("{e}"))?)?;
    Ok(took)
}

/// `n` sandbox calls, `gap` apart (not timed), after `WARM_UP` untimed ones.
async fn series(sandbox: &Sandbox, language: Language, limits: &RunLimits, n: usize, gap: Duration) -> Result<Series> {
    let input = inputs();
    for _ in 0..WARM_UP {
        call(sandbox, language, limits, &input).await?;
        tokio::time::sleep(gap).await;
    }
    let before = cpu::snapshot(None)?;
    let mut calls = Vec::with_capacity(n);
    for _ in 0..n {
        calls.push(call(sandbox, language, limits, &input).await?);
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    Ok(Series { calls, foreign_cores: before.foreign_cores_until(&cpu::snapshot(None)?) })
}

/// The JavaScript baseline: the inputs to JSON text and back, `{"r": a}`
/// built, to JSON text and back (what `js::run` does around the engine).
fn json_round_trip(input: &Map<String, Value>) -> Result<Map<String, Value>> {
    let text = serde_json::to_string(std::hint::black_box(input))?;
    let parsed: Map<String, Value> = serde_json::from_str(&text)?;
    let mut out = Map::new();
    out.insert("r".into(), parsed.get("a").cloned().unwrap_or(Value::Null));
    let text = serde_json::to_string(&out)?;
    Ok(std::hint::black_box(serde_json::from_str(&text)?))
}

/// JavaScript: `Sandbox::run`, `js::run` on this thread and the baseline,
/// `ROUNDS` rounds of each, interleaved.
async fn javascript(limits: &RunLimits) -> Result<(Series, Series, Series)> {
    let cfg = SandboxConfig { max_concurrent: CodeSettings::default().max_concurrent, python: None };
    let sandbox = tokio::task::spawn_blocking(move || Sandbox::start(cfg)).await.context("starting the sandbox")?;
    let input = inputs();
    let (mut sandboxed, mut engine, mut base) = (Series::default(), Series::default(), Series::default());
    let per = JS_CALLS / ROUNDS;
    series(&sandbox, Language::JavaScript, limits, 0, Duration::ZERO).await?;
    for _ in 0..WARM_UP {
        check(&js::run(JS_MAIN, &input, limits)?)?;
        check(&json_round_trip(&input)?)?;
    }
    let before = cpu::snapshot(None)?;
    for _ in 0..ROUNDS {
        for _ in 0..per {
            let t = Instant::now();
            let out = json_round_trip(&input)?;
            base.calls.push(t.elapsed());
            check(&out)?;
        }
        for _ in 0..per {
            let t = Instant::now();
            let out = js::run(JS_MAIN, &input, limits);
            engine.calls.push(t.elapsed());
            check(&out?)?;
        }
        for _ in 0..per {
            sandboxed.calls.push(call(&sandbox, Language::JavaScript, limits, &input).await?);
        }
    }
    let foreign = before.foreign_cores_until(&cpu::snapshot(None)?);
    for s in [&mut sandboxed, &mut engine, &mut base] {
        s.foreign_cores = foreign;
    }
    Ok((sandboxed, engine, base))
}

/// A sandbox whose Python side has `pool` processes, in `scratch`.
async fn python_sandbox(scratch: &Path, pool: usize) -> Result<Sandbox> {
    let dir = scratch.join(format!("pool-{pool}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = SandboxConfig {
        max_concurrent: CodeSettings::default().max_concurrent,
        python: Some(PythonConfig { interpreter: None, scratch_dir: dir, pool_size: pool, protected: Vec::new() }),
    };
    tokio::task::spawn_blocking(move || Sandbox::start(cfg)).await.context("starting the sandbox")
}

/// The real interpreter behind `python3` on PATH (`sys.executable`), as the
/// sandbox's probe finds it, for when the sandbox reports none.
fn python3_on_path() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-I", "-S", "-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .context("running python3 from PATH")?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || exe.is_empty() {
        bail!("python3 on PATH gave no sys.executable ({})", out.status);
    }
    Ok(PathBuf::from(exe))
}

/// One bare `python3 -I -S -c pass`, spawned and waited for.
fn bare_spawn(exe: &Path) -> Result<Duration> {
    let t = Instant::now();
    let status = Command::new(exe)
        .args(["-I", "-S", "-c", "pass"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("spawning {}", exe.display()))?;
    let took = t.elapsed();
    if !status.success() {
        bail!("{} -I -S -c pass exited with {status}", exe.display());
    }
    Ok(took)
}

/// The bare spawns and the pool-0 (cold) calls, interleaved in `ROUNDS`
/// rounds; the cold side is `None` when Python cannot run in the sandbox.
async fn spawn_and_cold(exe: &Path, cold: Option<&Sandbox>, limits: &RunLimits) -> (Result<Series, String>, Result<Series, String>) {
    let input = inputs();
    let per = PY_COLD_CALLS / ROUNDS;
    let mut spawn: Result<Series, String> = Ok(Series::default());
    let mut cold_s: Result<Series, String> = match cold {
        Some(_) => Ok(Series::default()),
        None => Err("Python is unavailable".into()),
    };
    for _ in 0..WARM_UP.min(3) {
        if let Err(e) = bare_spawn(exe) {
            spawn = Err(format!("{e:#}"));
        }
        if let (Some(sb), Ok(_)) = (cold, &cold_s) {
            if let Err(e) = call(sb, Language::Python3, limits, &input).await {
                cold_s = Err(format!("{e:#}"));
            }
        }
    }
    let before = cpu::snapshot(None).ok();
    for _ in 0..ROUNDS {
        if let Ok(s) = &mut spawn {
            for _ in 0..per {
                match bare_spawn(exe) {
                    Ok(d) => s.calls.push(d),
                    Err(e) => {
                        spawn = Err(format!("{e:#}"));
                        break;
                    }
                }
            }
        }
        if let (Some(sb), Ok(s)) = (cold, &mut cold_s) {
            for _ in 0..per {
                match call(sb, Language::Python3, limits, &input).await {
                    Ok(d) => s.calls.push(d),
                    Err(e) => {
                        cold_s = Err(format!("{e:#}"));
                        break;
                    }
                }
            }
        }
    }
    let foreign = before.zip(cpu::snapshot(None).ok()).map(|(a, b)| a.foreign_cores_until(&b)).unwrap_or(0.0);
    for s in [&mut spawn, &mut cold_s].into_iter().flatten() {
        s.foreign_cores = foreign;
    }
    (spawn, cold_s)
}

/// The pause between warm calls, from the cold calls' median.
pub fn warm_gap(cold: Option<&[Duration]>) -> Duration {
    let median = cold.filter(|c| !c.is_empty()).map(|c| {
        let mut v = c.to_vec();
        v.sort();
        v[v.len() / 2]
    });
    median.map_or(MAX_GAP, |m| (m * 2).clamp(MIN_GAP, MAX_GAP))
}

/// The Python part: `Err(why)` when the sandbox has no Python; the spawn
/// baseline is measured either way when an interpreter exists.
async fn python(scratch: &Path, limits: &RunLimits) -> (Result<SpawnFigures, String>, Result<PythonFigures, String>) {
    progress("Python, pool 0 (a process per call), next to bare interpreter spawns");
    let cold = match python_sandbox(scratch, 0).await {
        Ok(s) => s,
        Err(e) => return (Err(format!("{e:#}")), Err(format!("{e:#}"))),
    };
    let info = cold.python().map(|p| p.info().executable.clone());
    let runtime = cold.python_info();
    let (exe, source) = match info {
        Some(exe) => (Ok(exe), "the sandbox's PythonInfo.executable"),
        None => (python3_on_path(), "python3 on PATH: the sandbox has no Python"),
    };
    let (spawn_s, cold_s) = match &exe {
        Ok(exe) => spawn_and_cold(exe, runtime.is_ok().then_some(&cold), limits).await,
        Err(e) => (Err(format!("{e:#}")), Err(format!("{e:#}"))),
    };
    drop(cold);
    let spawn = match (exe, spawn_s) {
        (Ok(executable), Ok(series)) => Ok(SpawnFigures { executable, source, series }),
        (Err(e), _) => Err(format!("{e:#}")),
        (_, Err(e)) => Err(e),
    };
    let runtime = match runtime {
        Ok(info) => info.runtime,
        Err(why) => return (spawn, Err(why)),
    };
    let gap = warm_gap(cold_s.as_ref().ok().map(|s| s.calls.as_slice()));
    let mut pools = Vec::new();
    for size in POOLS {
        progress(&format!(
            "Python, pool {size}: {PY_WARM_CALLS} calls {:.0} ms apart, then {PY_BURST_CALLS} back to back",
            gap.as_secs_f64() * 1000.0
        ));
        let sandbox = match python_sandbox(scratch, size).await {
            Ok(s) if s.python().is_some() => s,
            Ok(s) => {
                let why = s.python_info().err().unwrap_or_default();
                pools.push(Pool { size, warm: Err(why.clone()), burst: Err(why) });
                continue;
            }
            Err(e) => {
                pools.push(Pool { size, warm: Err(format!("{e:#}")), burst: Err(format!("{e:#}")) });
                continue;
            }
        };
        // Let the pool start its processes before the first call.
        tokio::time::sleep(MAX_GAP * 2).await;
        let warm = series(&sandbox, Language::Python3, limits, PY_WARM_CALLS, gap).await.map_err(|e| format!("{e:#}"));
        tokio::time::sleep(MAX_GAP * 2).await;
        let burst = series(&sandbox, Language::Python3, limits, PY_BURST_CALLS, Duration::ZERO).await.map_err(|e| format!("{e:#}"));
        pools.push(Pool { size, warm, burst });
    }
    (spawn, Ok(PythonFigures { runtime, cold: cold_s, pools, gap }))
}

// ---- over HTTP -------------------------------------------------------------------

/// `n` blocking runs of the app with key `key`, sequential on `http`, `gap`
/// apart, each checked to succeed with `r` = the input.
async fn runs(http: &mut Http, key: &str, n: usize, gap: Duration) -> Result<Vec<Duration>> {
    let body = json!({"inputs": {"a": INPUT}, "response_mode": "blocking", "user": "bench"});
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (v, took) = http.json(Method::POST, "/v1/workflows/run", key, Some(&body)).await?;
        let data = v.get("data").ok_or_else(|| anyhow!("no data in {v}"))?;
        if data.get("status").and_then(Value::as_str) != Some("succeeded")
            || data.pointer("/outputs/r").and_then(Value::as_str) != Some(INPUT)
        {
            bail!("a run did not return its input: {v}");
        }
        out.push(took);
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    Ok(out)
}

/// Imports one workflow and makes a key for it.
async fn import(admin: &edgeai_common::UnixClient, id: &str, yaml: &str) -> Result<String> {
    let _: Value =
        admin.post_json("/admin/v1/apps/dsl", &json!({"yaml": yaml, "id": id})).await.with_context(|| format!("importing {id}"))?;
    let created: Value = admin.post_json("/admin/v1/keys", &json!({"app": id})).await.context("creating a key")?;
    created["key"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no key in {created}"))
}

async fn end_to_end(launch: &Launch<'_>, py_gap: Duration) -> Result<EndToEnd> {
    progress("starting edgeaid (no model) and importing the three workflows");
    let d = Daemon::start(launch).await?;
    let result = with_daemon(&d, launch.dir, py_gap).await;
    let status = d.stop().await?;
    let figures = result?;
    if !status.success() {
        bail!("edgeaid exited with {status} after SIGTERM");
    }
    Ok(figures)
}

async fn with_daemon(d: &Daemon, dir: &Path, py_gap: Duration) -> Result<EndToEnd> {
    let admin = edgeai_common::UnixClient::new(dir.join("edgeai.sock"));
    let [template, js, py] = workflows();
    let key_template = import(&admin, template.0, &template.1).await?;
    let key_js = import(&admin, js.0, &js.1).await?;
    let key_py = import(&admin, py.0, &py.1).await.map_err(|e| format!("{e:#}"));
    let status: Value = admin.get("/admin/v1/status").await.context("GET /admin/v1/status")?;
    let mut http = Http::connect(d.addr).await?;
    let mut rss_steps = vec![("after start and import", d.rss()?)];

    runs(&mut http, &key_template, WARM_UP, Duration::ZERO).await?;
    runs(&mut http, &key_js, WARM_UP, Duration::ZERO).await?;
    let mut py: Result<Series, String> = match &key_py {
        Ok(k) => runs(&mut http, k, WARM_UP, py_gap).await.map(|_| Series::default()).map_err(|e| format!("{e:#}")),
        Err(e) => Err(e.clone()),
    };
    rss_steps.push(("after the warm-up runs", d.rss()?));
    let (mut t, mut j) = (Series::default(), Series::default());
    let before = cpu::snapshot(Some(d.pid))?;
    for half in 0..2 {
        progress(&format!("HTTP round {} of 2: template, JavaScript, Python", half + 1));
        t.calls.extend(runs(&mut http, &key_template, HTTP_RUNS / 2, Duration::ZERO).await?);
        j.calls.extend(runs(&mut http, &key_js, HTTP_RUNS / 2, Duration::ZERO).await?);
        if let (Ok(k), Ok(s)) = (&key_py, &mut py) {
            match runs(&mut http, k, HTTP_PY_RUNS / 2, py_gap).await {
                Ok(c) => s.calls.extend(c),
                Err(e) => py = Err(format!("{e:#}")),
            }
        }
        rss_steps.push((if half == 0 { "after the first half of the runs" } else { "after all runs" }, d.rss()?));
    }
    let foreign = before.foreign_cores_until(&cpu::snapshot(Some(d.pid))?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    rss_steps.push(("1 s after the last run", d.rss()?));
    for s in [&mut t, &mut j] {
        s.foreign_cores = foreign;
    }
    if let Ok(s) = &mut py {
        s.foreign_cores = foreign;
    }
    Ok(EndToEnd {
        template: HttpSeries { app: APP_TEMPLATE, series: t },
        javascript: HttpSeries { app: APP_JS, series: j },
        python: py.map(|series| HttpSeries { app: APP_PY, series }),
        python_gap: py_gap,
        rss_steps,
        status: status.get("code").cloned().unwrap_or(status),
    })
}

// ---- the phase -------------------------------------------------------------------

/// Runs the whole phase: in this process on a two-worker runtime (the
/// daemon's shape), then through edgeaid started with `launch`.
pub fn measure(launch: &Launch<'_>) -> Result<Figures> {
    let dir = launch.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the tokio runtime")?;
    let limits = default_limits();
    rt.block_on(async {
        progress(&format!("JavaScript: {JS_CALLS} calls each of Sandbox::run, js::run and a serde_json round trip"));
        let (js_sandbox, js_engine, js_baseline) = javascript(&limits).await?;
        let (spawn, python) = python(&dir.join("scratch"), &limits).await;
        let gap = python.as_ref().map_or(MAX_GAP, |p| p.gap);
        let http = end_to_end(launch, gap).await.map_err(|e| format!("{e:#}"));
        Ok(Figures { limits, js_sandbox, js_engine, js_baseline, spawn, python, http })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeaid::engine::workflow::dsl::{import, ImportOptions};
    use edgeaid::engine::workflow::{Capabilities, CodeSupport};

    #[test]
    fn the_three_workflows_import() {
        let any = || CodeSupport::Available(Default::default());
        let opts = ImportOptions { caps: Capabilities { javascript: any(), python3: any() }, ..ImportOptions::default() };
        for (id, yaml) in workflows() {
            if let Err(p) = import(&yaml, &opts) {
                panic!("{id} does not import: {p:?}\n{yaml}");
            }
        }
    }

    #[test]
    fn the_json_baseline_returns_what_the_code_returns() {
        let out = json_round_trip(&inputs()).expect("round trip");
        check(&out).expect("{r: INPUT}");
        assert!(check(&Map::new()).is_err());
    }

    #[test]
    fn the_warm_gap_follows_the_cold_median_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(warm_gap(None), MAX_GAP);
        assert_eq!(warm_gap(Some(&[])), MAX_GAP);
        assert_eq!(warm_gap(Some(&[ms(30), ms(40), ms(90)])), ms(80));
        assert_eq!(warm_gap(Some(&[ms(1)])), MIN_GAP);
        assert_eq!(warm_gap(Some(&[ms(900)])), MAX_GAP);
    }
}
