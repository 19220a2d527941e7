//! A small real HTTP server for the daemon's outbound peers: an
//! OpenAI-compatible `/v1/chat/completions` (the upstream model runtime) and
//! any other path (targets of http-request nodes). It runs on its own thread
//! with its own runtime, answers from a script (one reply per request, then
//! the default), and records what it received, so tests can assert both
//! sides. Not a mock of our code: the daemon talks real HTTP to it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{json, Value};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// An OpenAI streaming answer in these pieces, then usage and `[DONE]`.
    Stream { pieces: Vec<String>, delay: Duration },
    /// A status with a JSON error body (and Retry-After seconds, if set).
    Status { code: u16, retry_after: Option<u32> },
    /// Accept and never answer.
    Hang,
    /// A stream chunk that is not JSON.
    Malformed,
    /// Some text, then the connection closes without finish_reason or `[DONE]`.
    Truncated { pieces: Vec<String> },
    /// A plain JSON body (for http-request targets).
    Json { code: u16, body: Value },
}

/// What the peer received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    received: Vec<Received>,
}

/// The running peer; stops when dropped.
pub struct Peer {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    /// Starts a peer on 127.0.0.1 (a free port) whose default answer is `default`.
    pub fn start(default: Reply) -> Peer {
        let shared = Arc::new(Mutex::new(Shared { default: Some(default), ..Shared::default() }));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind peer");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("peer addr");
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("peer runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("peer listener");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            // Small SSE writes must not wait for delayed ACKs (Nagle).
                            let _ = stream.set_nodelay(true);
                            let s = Arc::clone(&s);
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| answer(Arc::clone(&s), req));
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                            });
                        }
                    }
                }
            });
        });
        Peer { addr, shared, stop: Some(stop_tx), thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`, the upstream url for the daemon's config.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues replies for the next requests (before the default).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().expect("peer lock").script.extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.shared.lock().expect("peer lock").default = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().expect("peer lock").received.clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type PeerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(code: u16, body: Value) -> Response<PeerBody> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

fn chunk(v: Value) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(format!("data: {v}\n\n"))))
}

fn delta(text: &str) -> Value {
    json!({"id": "chatcmpl-peer", "object": "chat.completion.chunk", "model": "peer",
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
}

fn sse(frames: Vec<Result<Frame<Bytes>, Infallible>>, delay: Duration) -> Response<PeerBody> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        for f in frames {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(f).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
    r
}

/// A response body fed from a channel; it ends when the sender is dropped.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx)
    }
}

async fn answer(shared: Arc<Mutex<Shared>>, req: Request<Incoming>) -> Result<Response<PeerBody>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let headers = req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let reply = {
        let mut s = shared.lock().expect("peer lock");
        s.received.push(Received { method, path: path.clone(), headers, body });
        s.script.pop_front().or_else(|| s.default.clone())
    };
    let Some(reply) = reply else { return Ok(full(500, json!({"error": "no reply scripted"}))) };
    Ok(match reply {
        Reply::Json { code, body } => full(code, body),
        Reply::Status { code, retry_after } => {
            let mut r = full(code, json!({"error": {"message": format!("scripted {code}"), "type": "peer"}}));
            if let Some(s) = retry_after {
                r.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
            }
            r
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            full(504, json!({}))
        }
        Reply::Malformed => sse(vec![chunk(delta("ok")), Ok(Frame::data(Bytes::from_static(b"data: {not json\n\n")))], Duration::ZERO),
        Reply::Truncated { pieces } => sse(pieces.iter().map(|p| chunk(delta(p))).collect(), Duration::ZERO),
        Reply::Stream { pieces, delay } => {
            let n = pieces.len();
            let mut frames: Vec<_> = pieces.iter().map(|p| chunk(delta(p))).collect();
            frames.push(chunk(json!({"id": "chatcmpl-peer", "object": "chat.completion.chunk", "model": "peer",
                                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})));
            frames.push(chunk(json!({"id": "chatcmpl-peer", "object": "chat.completion.chunk", "model": "peer", "choices": [],
                                     "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}})));
            frames.push(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))));
            sse(frames, delay)
        }
    })
}
