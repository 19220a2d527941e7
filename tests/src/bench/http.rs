//! The HTTP path phase (`bench --only http`): one edgeaid without a local
//! model, with a Dify chatflow imported from DSL (tests/fixtures/dsl/chatflow.yml)
//! whose model `[model_map]` sends to an instant OpenAI-compatible upstream
//! (`ceiling upstream`), loaded by `wrk -t1 -c32` over TCP and by
//! `uds-load` over its unix socket; next to it, in the same run, the bare
//! hyper + SQLite server (`ceiling sqlite`) as the ceiling. Each request
//! shape ([`Case`]) runs once per round, the order reversed every other
//! round; the daemon's RSS is read idle, sampled under load, and its peak
//! taken at the end.
//! Owns the `ceiling` processes it starts; edgeaid comes from bench/daemon.rs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, Context as _, Result};
use serde_json::{json, Value};

use super::daemon::{Daemon, Launch, Rss};
use super::load::{self, Figures, Load};

/// Connections and seconds per run, and rounds.
pub const CONNECTIONS: usize = 32;
pub const SECONDS: u32 = 5;
pub const ROUNDS: usize = 3;

/// A `ceiling` server process; killed when dropped.
pub struct Ceiling {
    child: Child,
    pub addr: SocketAddr,
}

impl Ceiling {
    /// Starts `exe` with `args` and reads its `listening ADDR` line.
    pub fn start(exe: &Path, args: &[&str]) -> Result<Ceiling> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout from ceiling"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("reading ceiling's address")?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("ceiling {args:?} printed {line:?}, not `listening ADDR`"))?;
        Ok(Ceiling { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a case sends its load.
#[derive(Debug, Clone)]
pub enum Via {
    /// wrk over TCP to this address; the RSS sampled is this pid's.
    Tcp(SocketAddr, u32),
    /// uds-load over this unix socket.
    Unix(PathBuf, u32),
}

/// One measured request shape.
#[derive(Debug, Clone)]
pub struct Case {
    pub label: String,
    pub load: Load,
    pub via: Via,
}

/// Every run of one case.
#[derive(Debug, Clone)]
pub struct CaseRuns {
    pub case: Case,
    pub runs: Vec<Figures>,
}

/// Everything the phase measured.
pub struct Measured {
    pub cases: Vec<CaseRuns>,
    pub idle: Rss,
    /// The largest RSS sampled while any case loaded the daemon.
    pub under_load: Option<Rss>,
    /// At the end (its VmHWM is the peak).
    pub end: Rss,
    pub upstream_url: String,
}

/// Runs one case once.
fn run_case(case: &Case, uds_exe: &Path, dir: &Path) -> Result<Figures> {
    match &case.via {
        Via::Tcp(addr, pid) => load::wrk(*addr, &case.load, CONNECTIONS, SECONDS, dir, Some(*pid)),
        Via::Unix(sock, pid) => load::uds(uds_exe, sock, &case.load, CONNECTIONS, SECONDS, Some(*pid)),
    }
}

/// Starts the instant upstream, edgeaid (its `[upstream]` pointed there,
/// `chat_dsl` imported as app `bench-chat`, a chatflow whose LLM node
/// `[model_map]` sends upstream) and the SQLite ceiling, then
/// runs every case `ROUNDS` times.
/// With a local model and the response cache on, one answer of the
/// config's chat app fills the cache and two cases (TCP, unix socket) ask
/// the same question again: the cache-hit path.
pub async fn measure(launch: &mut Launch<'_>, chat_dsl: &str, ceiling_exe: &Path, uds_exe: &Path) -> Result<Measured> {
    let upstream = Ceiling::start(ceiling_exe, &["upstream"])?;
    let upstream_url = format!("http://{}/v1", upstream.addr);
    launch.extra_config = format!("\n[upstream]\nurl = {upstream_url:?}\nmodel = \"instant\"\n\n[model_map]\ndefault = \"upstream\"\n");
    let db = launch.dir.join("ceiling.db");
    let db_str = db.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", db.display()))?;
    let sqlite = Ceiling::start(ceiling_exe, &["sqlite", db_str])?;
    let d = Daemon::start(launch).await?;
    let sock = launch.dir.join("edgeai.sock");
    let admin = edgeai_common::UnixClient::new(&sock);
    let imported: Value =
        admin.post_json("/admin/v1/apps/dsl", &json!({"yaml": chat_dsl, "id": "bench-chat"})).await.context("importing the chatflow")?;
    let created: Value = admin.post_json("/admin/v1/keys", &json!({"app": "bench-chat"})).await.context("creating its key")?;
    let chat_key = created["key"].as_str().ok_or_else(|| anyhow!("no key in {created}; the import said {imported}"))?;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let idle = d.rss()?;

    let chat = Load::post_json(
        "/v1/chat-messages",
        &json!({"inputs": {}, "query": "How often do I water it?", "response_mode": "blocking", "user": "bench"}),
    )
    .authed(chat_key);
    let params = Load::get("/v1/parameters").authed(&d.key);
    let (tcp, unix) = (Via::Tcp(d.addr, d.pid), Via::Unix(sock.clone(), d.pid));
    let mut cases = vec![
        Case { label: "GET /health (TCP)".into(), load: Load::get("/health"), via: tcp.clone() },
        Case { label: "GET /health (unix socket)".into(), load: Load::get("/health"), via: unix.clone() },
        Case { label: "GET /v1/parameters, app key (TCP)".into(), load: params.clone(), via: tcp.clone() },
        Case { label: "GET /v1/parameters, app key (unix socket)".into(), load: params, via: unix.clone() },
        Case {
            label: "ceiling: bare hyper + one SQLite commit (TCP)".into(),
            load: Load::get("/commit"),
            via: Via::Tcp(sqlite.addr, sqlite.pid()),
        },
        Case { label: "POST /v1/chat-messages blocking, instant upstream (TCP)".into(), load: chat.clone(), via: tcp.clone() },
        Case { label: "POST /v1/chat-messages blocking, instant upstream (unix socket)".into(), load: chat, via: unix.clone() },
    ];
    if launch.model.is_some() && launch.cache {
        let query = "What does a PLC do?";
        super::client::chat_stream(d.addr, &d.key, "bench", query).await.context("filling the response cache")?;
        let hit =
            Load::post_json("/v1/chat-messages", &json!({"inputs": {}, "query": query, "response_mode": "blocking", "user": "bench"}))
                .authed(&d.key);
        cases.push(Case { label: "POST /v1/chat-messages blocking, cache hit (TCP)".into(), load: hit.clone(), via: tcp.clone() });
        cases.push(Case { label: "POST /v1/chat-messages blocking, cache hit (unix socket)".into(), load: hit, via: unix.clone() });
    }
    let mut out: Vec<CaseRuns> = cases.into_iter().map(|case| CaseRuns { case, runs: Vec::new() }).collect();
    let mut under_load: Option<Rss> = None;
    for round in 0..ROUNDS {
        let order: Vec<usize> = if round % 2 == 0 { (0..out.len()).collect() } else { (0..out.len()).rev().collect() };
        for i in order {
            eprintln!("bench: http round {} of {ROUNDS}: {}", round + 1, out[i].case.label);
            let f = run_case(&out[i].case, uds_exe, launch.dir).with_context(|| out[i].case.label.clone())?;
            let on_daemon = match &out[i].case.via {
                Via::Tcp(_, pid) | Via::Unix(_, pid) => *pid == d.pid,
            };
            if let (true, Some(r)) = (on_daemon, f.rss_under_load) {
                if under_load.is_none_or(|m| r.vm_rss_kb > m.vm_rss_kb) {
                    under_load = Some(r);
                }
            }
            out[i].runs.push(f);
        }
    }
    let end = d.rss()?;
    let status = d.stop().await?;
    anyhow::ensure!(status.success(), "edgeaid exited with {status} after SIGTERM");
    drop((upstream, sqlite));
    Ok(Measured { cases: out, idle, under_load, end, upstream_url })
}
