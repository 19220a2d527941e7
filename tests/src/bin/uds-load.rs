//! `uds-load`: a small HTTP/1 load generator over a unix socket, for the
//! bench's `--only http` phase (wrk speaks only TCP). Like `wrk -t1`: one
//! thread (a current-thread tokio runtime), `--connections` keep-alive
//! connections each sending the same request back to back for `--seconds`,
//! every request timed from send to the whole body. Prints one line
//! `WRK {json}` in the shape of the bench's wrk script (tests/src/bench/load.rs).
//!
//! Usage: uds-load --socket PATH --method M --path P [--header 'K: V']...
//!                 [--body TEXT] --connections N --seconds S

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

struct Args {
    socket: PathBuf,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    connections: usize,
    seconds: u64,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        socket: PathBuf::new(),
        method: Method::GET,
        path: "/".into(),
        headers: Vec::new(),
        body: String::new(),
        connections: 32,
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--socket" => a.socket = PathBuf::from(v),
            "--method" => a.method = v.parse().with_context(|| format!("--method {v:?}"))?,
            "--path" => a.path = v,
            "--header" => {
                let (k, val) = v.split_once(':').ok_or_else(|| anyhow!("--header {v:?} is not `Name: value`"))?;
                a.headers.push((k.trim().to_owned(), val.trim().to_owned()));
            }
            "--body" => a.body = v,
            "--connections" => a.connections = v.parse().with_context(|| format!("--connections {v:?}"))?,
            "--seconds" => a.seconds = v.parse().with_context(|| format!("--seconds {v:?}"))?,
            other => bail!("unknown option {other:?}"),
        }
    }
    if a.socket.as_os_str().is_empty() || a.connections == 0 {
        bail!("usage: uds-load --socket PATH --method M --path P [--header 'K: V']... [--body TEXT] --connections N --seconds S");
    }
    Ok(a)
}

/// Latencies of one connection's requests, and how many were not 2xx/3xx.
async fn connection(a: &Args, until: Instant) -> Result<(Vec<Duration>, u64)> {
    let stream = tokio::net::UnixStream::connect(&a.socket).await.with_context(|| format!("connecting to {}", a.socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let body = Bytes::from(a.body.clone());
    let (mut lat, mut bad) = (Vec::new(), 0);
    while Instant::now() < until {
        sender.ready().await.context("connection closed")?;
        let mut req = Request::builder().method(a.method.clone()).uri(&a.path).header(http::header::HOST, "localhost");
        for (k, v) in &a.headers {
            req = req.header(k, v);
        }
        let req = req.body(Full::new(body.clone())).context("building the request")?;
        let sent = Instant::now();
        let resp = sender.send_request(req).await.context("sending")?;
        let ok = resp.status().as_u16() < 400;
        resp.into_body().collect().await.context("reading the body")?;
        lat.push(sent.elapsed());
        bad += u64::from(!ok);
    }
    Ok((lat, bad))
}

fn main() -> Result<()> {
    let a = parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?;
    let local = tokio::task::LocalSet::new();
    let (mut lat, bad, wall) = local.block_on(&rt, async {
        let started = Instant::now();
        let until = started + Duration::from_secs(a.seconds);
        let runs = futures_join(&a, until).await?;
        let wall = started.elapsed();
        let mut lat = Vec::new();
        let mut bad = 0;
        for (l, b) in runs {
            lat.extend(l);
            bad += b;
        }
        Ok::<_, anyhow::Error>((lat, bad, wall))
    })?;
    lat.sort();
    let q = |p: f64| lat.get(((lat.len().saturating_sub(1)) as f64 * p).round() as usize).map_or(0, |d| d.as_micros());
    println!(
        "WRK {{\"requests\": {}, \"duration_us\": {}, \"p50_us\": {}, \"p99_us\": {}, \"status_errors\": {bad}, \"socket_errors\": 0}}",
        lat.len(),
        wall.as_micros(),
        q(0.5),
        q(0.99)
    );
    Ok(())
}

/// Runs the connections concurrently on this thread.
async fn futures_join(a: &Args, until: Instant) -> Result<Vec<(Vec<Duration>, u64)>> {
    let mut set = Vec::new();
    for _ in 0..a.connections {
        set.push(connection(a, until));
    }
    let mut out = Vec::new();
    for r in join_all(set).await {
        out.push(r?);
    }
    Ok(out)
}

/// Polls all futures on this task until each is done (no futures crate here).
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = (0..futs.len()).map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(outs.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}
