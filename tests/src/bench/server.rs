//! The side-by-side phase (`bench --only server`): edgeaid and llama.cpp's
//! own `llama-server` (built by scripts/build-llama-server.sh into
//! .cache/llama-server/bin) on the same model, threads, slots and context,
//! given the same OpenAI-chat workload over HTTP (`POST /v1/chat/completions`,
//! greedy), one server at a time, in alternating order over the rounds.
//! Owns the llama-server process it starts and the OpenAI-chat client side
//! of the workload; edgeaid is started through bench/daemon.rs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use edgeai_common::sse::SseDecoder;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use super::daemon::Rss;
use super::kv::long_prompt;
use super::report::median;

/// Tokens of a decode run and of each of the four concurrent streams.
pub const DECODE_TOKENS: u32 = 128;
/// Tiny requests: clients, requests per client per round, `max_tokens`.
pub const TINY_CLIENTS: usize = 4;
pub const TINY_PER_CLIENT: usize = 40;
/// Concurrent streams, and how long after they start the short request is sent.
pub const STREAMS: usize = 4;
const ARRIVAL_AFTER: Duration = Duration::from_millis(1500);
const SETTLE: Duration = Duration::from_millis(250);
const STORIES: [&str; 4] = [
    "Write a long story about a lighthouse keeper who finds a mysterious map.",
    "Write a long story about a robot that learns to paint.",
    "Write a long story about two friends who build a boat and sail around the world.",
    "Write a long story about a village that discovers a hidden garden.",
];

/// A server under test: where it listens, the key it wants (edgeaid), its pid.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub key: Option<String>,
    pub pid: u32,
}

use super::client::connect;

fn chat_request(t: &Target, messages: &Value, max_tokens: u32, stream: bool) -> Result<Request<Full<Bytes>>> {
    let body = json!({"model": "bench", "messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": stream});
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header(header::HOST, t.addr.to_string())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = &t.key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    req.body(Full::new(Bytes::from(body.to_string()))).context("building the request")
}

/// Client-side view of one streamed answer: content chunks (one token
/// each on both servers) and when they arrived.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub sent: Instant,
    pub first: Instant,
    pub last: Instant,
    pub chunks: u64,
}

impl Streamed {
    pub fn ttft_s(&self) -> f64 {
        (self.first - self.sent).as_secs_f64()
    }
    /// `(chunks - 1)` steps between the first and the last content chunk.
    pub fn decode_tok_s(&self) -> Option<f64> {
        let span = (self.last - self.first).as_secs_f64();
        (self.chunks >= 2 && span > 0.0).then(|| (self.chunks - 1) as f64 / span)
    }
}

/// Streams one chat completion up to `data: [DONE]`.
pub async fn stream_chat(t: &Target, messages: &Value, max_tokens: u32) -> Result<Streamed> {
    let mut sender = connect(t.addr).await?;
    let req = chat_request(t, messages, max_tokens, true)?;
    let sent = Instant::now();
    let resp = sender.send_request(req).await.with_context(|| format!("{}: POST /v1/chat/completions", t.name))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()).unwrap_or_default();
        bail!("{}: POST /v1/chat/completions answered {status}: {text}", t.name);
    }
    let mut decoder = SseDecoder::new();
    let (mut first, mut last, mut chunks, mut done) = (None, None, 0u64, false);
    while !done {
        let Some(frame) = body.frame().await else { break };
        let at = Instant::now();
        let Ok(data) = frame.context("reading the stream")?.into_data() else { continue };
        for ev in decoder.push(&data).context("decoding the stream")? {
            let Some(d) = ev.data else { continue };
            if d == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(&d).with_context(|| format!("{}: chunk is not JSON: {d}", t.name))?;
            if v.get("error").is_some() {
                bail!("{}: error chunk {v}", t.name);
            }
            let text = v.pointer("/choices/0/delta/content").and_then(Value::as_str).unwrap_or_default();
            if !text.is_empty() {
                first.get_or_insert(at);
                last = Some(at);
                chunks += 1;
            }
        }
    }
    if !done {
        bail!("{}: the stream ended without [DONE]", t.name);
    }
    match (first, last) {
        (Some(first), Some(last)) => Ok(Streamed { sent, first, last, chunks }),
        _ => bail!("{}: the stream had no content", t.name),
    }
}

/// `clients` keep-alive connections, each sending `per_client` blocking
/// chat completions of `max_tokens` 1 back to back; the latencies and the wall time.
pub async fn tiny(t: &Target, clients: usize, per_client: usize) -> Result<(Vec<f64>, f64)> {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let t = t.clone();
        set.spawn(async move {
            let mut sender = connect(t.addr).await?;
            let messages = json!([{"role": "user", "content": format!("Say hello to operator {c}.")}]);
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                sender.ready().await.context("connection closed")?;
                let req = chat_request(&t, &messages, 1, false)?;
                let sent = Instant::now();
                let resp = sender.send_request(req).await.with_context(|| format!("{}: tiny request", t.name))?;
                let status = resp.status();
                let bytes = resp.into_body().collect().await.context("reading the body")?.to_bytes();
                lat.push(sent.elapsed().as_secs_f64());
                if !status.is_success() {
                    bail!("{}: tiny request answered {status}: {}", t.name, String::from_utf8_lossy(&bytes));
                }
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = set.join_next().await {
        all.extend(r.context("client task")??);
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

/// Quantile `q` (0..=1) of `v`, nearest rank.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[(((v.len() - 1) as f64) * q).round() as usize])
}

/// What one round measured on one server.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub decode_tok_s: Option<f64>,
    pub new_prompt_ttft_s: Option<f64>,
    pub same_prompt_ttft_s: Option<f64>,
    pub tiny_req_s: Option<f64>,
    pub tiny_p99_s: Option<f64>,
    pub aggregate_tok_s: Option<f64>,
    pub arrival_ttft_s: Option<f64>,
    /// The server's RSS while the four streams decode (when the short request is sent).
    pub rss_under_load: Option<Rss>,
}

/// The plant log of round `round` as a system prompt (~700 tokens with the
/// chat template), and a question about it.
fn reading(round: usize, question: &str) -> Value {
    json!([{"role": "system", "content": long_prompt(round)}, {"role": "user", "content": question}])
}

/// One round of the workload on `t`. `round` picks the new system prompt
/// (the same one for every server in that round, new to each of them).
pub async fn round(t: &Target, round: usize) -> Result<Round> {
    let mut r = Round::default();
    let story = |i: usize| json!([{"role": "user", "content": STORIES[i % STORIES.len()]}]);

    let d = stream_chat(t, &story(round), DECODE_TOKENS).await.context("decode run")?;
    r.decode_tok_s = d.decode_tok_s();
    tokio::time::sleep(SETTLE).await;

    let first = stream_chat(t, &reading(100 + round, "Which machines were in alarm?"), 8).await.context("new system prompt")?;
    r.new_prompt_ttft_s = Some(first.ttft_s());
    tokio::time::sleep(SETTLE).await;
    let again = stream_chat(t, &reading(100 + round, "Which machine was the hottest?"), 8).await.context("same system prompt")?;
    r.same_prompt_ttft_s = Some(again.ttft_s());
    tokio::time::sleep(SETTLE).await;

    let (lat, wall) = tiny(t, TINY_CLIENTS, TINY_PER_CLIENT).await.context("tiny requests")?;
    r.tiny_req_s = Some(lat.len() as f64 / wall.max(1e-9));
    r.tiny_p99_s = quantile(&lat, 0.99);
    tokio::time::sleep(SETTLE).await;

    // Four streams with prompts new to the server, and a short request
    // arriving while they decode.
    let mut set = tokio::task::JoinSet::new();
    for (c, story) in STORIES.iter().enumerate().take(STREAMS) {
        let t = t.clone();
        let q = json!([{"role": "user", "content": format!("Story number {}. {story}", round * STREAMS + c + 1)}]);
        set.spawn(async move { stream_chat(&t, &q, DECODE_TOKENS).await });
    }
    tokio::time::sleep(ARRIVAL_AFTER).await;
    r.rss_under_load = Rss::read(t.pid).ok();
    let short = json!([{"role": "user", "content": format!("Operator {round} asks: is line 3 running?")}]);
    let arrival = stream_chat(t, &short, 4).await.context("short request during the streams")?;
    r.arrival_ttft_s = Some(arrival.ttft_s());
    let mut runs = Vec::new();
    while let Some(j) = set.join_next().await {
        runs.push(j.context("stream task")?.context("concurrent stream")?);
    }
    let start = runs.iter().map(|s| s.sent).min().ok_or_else(|| anyhow!("no stream ran"))?;
    let end = runs.iter().map(|s| s.last).max().ok_or_else(|| anyhow!("no stream ran"))?;
    r.aggregate_tok_s = Some(runs.iter().map(|s| s.chunks).sum::<u64>() as f64 / (end - start).as_secs_f64().max(1e-9));
    tokio::time::sleep(SETTLE).await;
    Ok(r)
}

/// Medians over rounds of one figure.
pub fn med(rounds: &[Round], f: impl Fn(&Round) -> Option<f64>) -> Option<f64> {
    median(&rounds.iter().filter_map(f).collect::<Vec<_>>())
}

/// A running llama-server started by the bench; killed (SIGTERM, then
/// SIGKILL) when dropped.
pub struct LlamaServer {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// Settings of the side-by-side runs, for both servers.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub threads: u32,
    pub slots: u32,
    pub n_ctx: u32,
}

impl LlamaServer {
    /// `llama-server -m MODEL -t T -tb T -np SLOTS -c N_CTX` on a free
    /// port, everything else at its defaults; waits for `/health` 200.
    pub async fn start(exe: &Path, model: &Path, shape: Shape, dir: &Path) -> Result<LlamaServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).context("picking a port")?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join("llama-server.log");
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("log handle")?;
        let (t, np, c) = (shape.threads.to_string(), shape.slots.to_string(), shape.n_ctx.to_string());
        let child = Command::new(exe)
            .arg("-m")
            .arg(model)
            .args(["-t", &t, "-tb", &t, "-np", &np, "-c", &c, "--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut s = LlamaServer { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(200) = super::client::get_status(addr, "/health").await {
                return Ok(s);
            }
            if let Some(st) = s.child.try_wait().context("waiting for llama-server")? {
                bail!("llama-server exited with {st}; its log: {}", s.log.display());
            }
            if Instant::now() > deadline {
                bail!("llama-server's /health is not 200 after 120 s; its log: {}", s.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines of its log that say how it set up the context and KV cache.
    pub fn settings(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let keys = ["flash_attn", "type_k", "K (", "kv_unified", "n_ctx_seq", "n_ubatch", "n_batch", "system_info", "build:"];
        let mut seen = Vec::new();
        for l in text.lines() {
            let l = l.trim();
            if keys.iter().any(|k| l.contains(k)) && !seen.iter().any(|s: &String| s == l) {
                seen.push(l.chars().take(240).collect());
            }
        }
        seen
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_rates_need_two_chunks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 0.5), Some(51.0));
        assert_eq!(quantile(&[], 0.5), None);
        let t0 = Instant::now();
        let s = |chunks| Streamed { sent: t0, first: t0 + Duration::from_millis(10), last: t0 + Duration::from_millis(110), chunks };
        assert!((s(11).decode_tok_s().unwrap_or_default() - 100.0).abs() < 1e-6);
        assert_eq!(s(1).decode_tok_s(), None);
    }
}
