//! `ceiling`: two bare hyper 1 HTTP/1 servers for the bench's `--only http`
//! phase (tests/src/bin/bench.rs), each on a tokio runtime shaped like
//! edgeaid's (two worker threads), run as their own process:
//! - `ceiling sqlite DB_PATH`: the upper bound for a request that touches
//!   the store. Commits one SQLite row per request (WAL) on one writer
//!   thread, then answers `200 ok`. No routing, no auth, no JSON: whatever
//!   edgeaid does per request on top of this is its overhead. The commit
//!   does not fsync (`synchronous = NORMAL`): with `FULL` every request
//!   would wait for the disk (a few hundred per second here), which is no
//!   ceiling for edgeaid's store, whose `FULL` commits are grouped.
//! - `ceiling upstream`: an instant OpenAI-compatible model for edgeaid's
//!   `[upstream]`: every request is answered at once with one streamed
//!   chat completion chunk (`ok`), usage and `[DONE]`. Unlike the tests'
//!   peer (tests/src/peer.rs) it records nothing, so hundreds of thousands
//!   of requests cost it no memory.
//!
//! Both bind 127.0.0.1 on a free port, print `listening ADDR` on stdout and
//! serve until killed.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::mpsc;

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rusqlite::Connection;

/// One request's commit: the path to record, and where to say it is done.
type Commit = (String, tokio::sync::oneshot::Sender<bool>);

const USAGE: &str = "usage: ceiling sqlite DB_PATH | ceiling upstream";

/// One streamed chat completion, whole: what the instant upstream answers.
const UPSTREAM_ANSWER: &str = concat!(
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"instant\",",
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"instant\",",
    "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"instant\",\"choices\":[],",
    "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":1,\"total_tokens\":8}}\n\n",
    "data: [DONE]\n\n"
);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["sqlite", db] => sqlite(db),
        ["upstream"] => serve(|_req| async { Ok(upstream_answer()) }),
        _ => bail!("{USAGE}"),
    }
}

fn upstream_answer() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(UPSTREAM_ANSWER.as_bytes())));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    r
}

fn sqlite(db: &str) -> Result<()> {
    let conn = Connection::open(db).with_context(|| format!("opening {db}"))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).context("journal_mode")?;
    anyhow::ensure!(mode.eq_ignore_ascii_case("wal"), "{db}: journal_mode stayed {mode}");
    conn.pragma_update(None, "synchronous", "NORMAL").context("synchronous")?;
    conn.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, path TEXT NOT NULL)", [])
        .context("creating the table")?;
    let (tx, rx) = mpsc::sync_channel::<Commit>(256);
    std::thread::Builder::new().name("ceiling-writer".into()).spawn(move || writer(conn, rx)).context("writer thread")?;
    serve(move |req| answer(tx.clone(), req))
}

/// Serves `handler` on 127.0.0.1:0 (printing the address) until killed.
fn serve<H, F>(handler: H) -> Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind")?;
        let addr = listener.local_addr().context("local addr")?;
        let mut out = std::io::stdout();
        writeln!(out, "listening {addr}").and_then(|()| out.flush()).context("stdout")?;
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(handler);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

/// Commits each row in its own transaction and acknowledges it.
fn writer(mut conn: Connection, rx: mpsc::Receiver<Commit>) {
    while let Ok((path, done)) = rx.recv() {
        let ok = (|| -> rusqlite::Result<()> {
            let t = conn.transaction()?;
            t.execute("INSERT INTO hits (at, path) VALUES (unixepoch('subsec') * 1000, ?1)", [&path])?;
            t.commit()
        })();
        let _ = done.send(ok.is_ok());
    }
}

async fn answer(tx: mpsc::SyncSender<Commit>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let _ = req.into_body().collect().await;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let committed = tx.send((path, done_tx)).is_ok() && done_rx.await.unwrap_or(false);
    let (status, text) = if committed { (StatusCode::OK, "ok") } else { (StatusCode::INTERNAL_SERVER_ERROR, "commit failed") };
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    Ok(r)
}
