//! The workflow engine's overhead over HTTP: many blocking
//! `POST /v1/workflows/run` of one workflow whose LLM node answers from an
//! instant upstream peer, from a few keep-alive connections at once, each
//! request timed from send to the whole body. The baseline in the same run
//! is `GET /v1/info` with the same key and connections: auth, routing and
//! HTTP, without the engine or the store.
//! Owns the client side of this phase; knows nothing of how the daemon is started.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub requests: usize,
    pub wall: Duration,
    pub latencies: Vec<Duration>,
}

impl Figures {
    pub fn per_sec(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self.latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// The request each worker repeats.
#[derive(Debug, Clone)]
pub struct Target {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    /// For a workflow run: the body's `data.status` must be `succeeded`.
    pub check_workflow: bool,
}

/// Sends `total` requests over `connections` keep-alive connections.
pub async fn hammer(addr: SocketAddr, key: &str, target: &Target, total: usize, connections: usize) -> Result<Figures> {
    let per = total.div_ceil(connections.max(1));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (key, target) = (key.to_owned(), target.clone());
        tasks.spawn(async move { worker(addr, &key, &target, per).await });
    }
    let mut latencies = Vec::with_capacity(per * connections);
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r.context("bench worker panicked")??);
    }
    Ok(Figures { requests: latencies.len(), wall: started.elapsed(), latencies })
}

async fn worker(addr: SocketAddr, key: &str, t: &Target, n: usize) -> Result<Vec<Duration>> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = t.body.as_ref().map(Value::to_string).unwrap_or_default();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        sender.ready().await.context("connection not ready")?;
        let req = Request::builder()
            .method(t.method.clone())
            .uri(&t.path)
            .header(header::HOST, addr.to_string())
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .context("building the request")?;
        let sent = Instant::now();
        let resp = sender.send_request(req).await.with_context(|| format!("{} {}", t.method, t.path))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.context("reading the body")?.to_bytes();
        out.push(sent.elapsed());
        if !status.is_success() {
            bail!("{} {} answered {status}: {}", t.method, t.path, String::from_utf8_lossy(&bytes));
        }
        if t.check_workflow {
            let v: Value = serde_json::from_slice(&bytes).context("workflow answer is not JSON")?;
            let st = v.pointer("/data/status").and_then(Value::as_str).ok_or_else(|| anyhow!("no data.status in {v}"))?;
            if st != "succeeded" {
                bail!("a workflow run ended {st}: {v}");
            }
        }
    }
    Ok(out)
}
