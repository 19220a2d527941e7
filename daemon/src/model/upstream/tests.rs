//! The upstream runtime against a real small hyper server in the test that
//! speaks OpenAI's streaming chat completions: normal streams, retries,
//! timeouts, refused connections, malformed and truncated streams, the
//! circuit breaker and what the request carries.

use super::*;
use crate::config::Secret;
use http::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;

/// What the server does with its n-th request (0-based).
enum Reply {
    /// An event stream: these `data:` payloads, `pause` apart, then `end`.
    Sse { events: Vec<String>, pause: Duration, end: End },
    /// A non-streaming answer.
    Status { code: u16, headers: Vec<(&'static str, String)>, body: String },
    /// Reads the request and never answers.
    Hang,
}

enum End {
    /// The body ends properly.
    Clean,
    /// The body ends properly, after this long.
    CleanAfter(Duration),
    /// The connection breaks off mid-body.
    Abort,
    /// The body stays open, sending nothing more.
    Hang,
}

/// One request as the server saw it.
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

struct Server {
    url: String,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen.lock().expect("lock").pop().expect("a request")
    }

    fn settings(&self) -> UpstreamSettings {
        UpstreamSettings {
            url: Some(self.url.clone()),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            retries: 2,
            retry_backoff: Duration::from_millis(10),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_millis(300),
            ..UpstreamSettings::default()
        }
    }
}

async fn server(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let (h, s, c) = (Arc::clone(&hits), Arc::clone(&seen), Arc::clone(&conns));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (hits, seen, script) = (Arc::clone(&h), Arc::clone(&s), Arc::clone(&script));
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (hits, seen, script) = (Arc::clone(&hits), Arc::clone(&seen), Arc::clone(&script));
                    async move {
                        let n = hits.fetch_add(1, Ordering::SeqCst);
                        let path = req.uri().path().to_owned();
                        let authorization = req.headers().get(AUTHORIZATION).map(|v| v.to_str().expect("ascii").to_owned());
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        let body = serde_json::from_slice(&body).expect("json body");
                        seen.lock().expect("lock").push(Seen { path, authorization, body });
                        Ok::<_, Infallible>(respond(script(n)).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Server { url, conns, hits, seen }
}

async fn respond(reply: Reply) -> Response<ChanBody> {
    let (tx, rx) = mpsc::channel(16);
    let body = ChanBody(rx);
    match reply {
        Reply::Hang => std::future::pending().await,
        Reply::Status { code, headers, body: text } => {
            let mut b = Response::builder().status(code);
            for (k, v) in headers {
                b = b.header(k, v);
            }
            tx.try_send(Ok(Bytes::from(text))).expect("room");
            b.body(body).expect("response")
        }
        Reply::Sse { events, pause, end } => {
            tokio::spawn(async move {
                for data in events {
                    tokio::time::sleep(pause).await;
                    if tx.send(Ok(Bytes::from(format!("data: {data}\n\n")))).await.is_err() {
                        return;
                    }
                }
                match end {
                    End::Clean => {}
                    End::CleanAfter(pause) => tokio::time::sleep(pause).await,
                    End::Abort => {
                        // Lets the text before it leave first.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                    }
                    End::Hang => {
                        let _keep = tx;
                        std::future::pending::<()>().await;
                    }
                }
            });
            Response::builder().header(CONTENT_TYPE, "text/event-stream").body(body).expect("response")
        }
    }
}

struct ChanBody(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|r| r.map(hyper::body::Frame::data)))
    }
}

fn text(t: &str) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]})
        .to_string()
}

fn finish(reason: &str) -> String {
    json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}).to_string()
}

fn usage(prompt: u32, completion: u32) -> String {
    json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
        .to_string()
}

/// A whole normal answer: "Hello", then finish, usage and [DONE].
fn hello() -> Reply {
    Reply::Sse {
        events: vec![text("Hel"), text("lo"), finish("stop"), usage(12, 2), "[DONE]".into()],
        pause: Duration::ZERO,
        end: End::Clean,
    }
}

fn status(code: u16) -> Reply {
    Reply::Status { code, headers: Vec::new(), body: format!("{{\"error\":{{\"message\":\"busy {code}\"}}}}") }
}

fn request() -> UpstreamRequest {
    UpstreamRequest {
        model: "qwen2.5-7b".into(),
        messages: vec![(Role::System, "Be brief.".into()), (Role::User, "Hi".into())],
        temperature: Some(0.5),
        top_p: None,
        max_tokens: Some(64),
        stop: vec!["###".into()],
        seed: Some(7),
        json_schema: None,
    }
}

async fn collect(mut rx: mpsc::Receiver<UpstreamEvent>) -> Vec<UpstreamEvent> {
    let mut out = Vec::new();
    while let Some(e) = rx.recv().await {
        out.push(e);
    }
    out
}

fn done(prompt_tokens: u32, completion_tokens: u32) -> UpstreamEvent {
    UpstreamEvent::Done { prompt_tokens, completion_tokens, finish_reason: "stop".into() }
}

fn failed(events: &[UpstreamEvent]) -> &str {
    match events.last() {
        Some(UpstreamEvent::Failed(reason)) => reason,
        other => panic!("expected Failed last, got {other:?} in {events:?}"),
    }
}

#[tokio::test]
async fn normal_stream_with_usage_and_the_request_it_sent() {
    let srv = server(|_| hello()).await;
    let up = Upstream::new(&srv.settings());
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert_eq!(events, [UpstreamEvent::Text("Hel".into()), UpstreamEvent::Text("lo".into()), done(12, 2)]);
    let seen = srv.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.authorization, None, "no key configured, none sent");
    assert_eq!(
        seen.body,
        json!({
            "model": "qwen2.5-7b",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.5,
            "max_tokens": 64,
            "seed": 7,
            "stop": ["###"],
        })
    );
    let st = up.status();
    assert_eq!((st.url.as_deref(), st.circuit, st.consecutive_failures), (Some(srv.url.as_str()), "closed", 0));
}

#[tokio::test]
async fn finished_answers_leave_the_connection_for_the_next_call() {
    // The body ends a little after [DONE], as a server's may.
    let srv = server(|_| Reply::Sse {
        events: vec![text("a"), finish("stop"), "[DONE]".into()],
        pause: Duration::ZERO,
        end: End::CleanAfter(Duration::from_millis(100)),
    })
    .await;
    let up = Upstream::new(&srv.settings());
    for _ in 0..3 {
        assert_eq!(collect(up.chat(request()).await.expect("chat")).await.last(), Some(&done(0, 0)));
        // The body's end is read after Done was sent.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!((srv.hits(), srv.conns.load(Ordering::SeqCst)), (3, 1), "one pooled connection for three calls");
}

#[tokio::test]
async fn api_key_and_response_format_are_sent() {
    let srv = server(|_| hello()).await;
    let mut settings = srv.settings();
    settings.api_key = Some(Secret::new("sk-test-123".into()));
    let up = Upstream::new(&settings);
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let req = UpstreamRequest { json_schema: Some(schema.clone()), ..request() };
    collect(up.chat(req).await.expect("chat")).await;
    let seen = srv.last();
    assert_eq!(seen.authorization.as_deref(), Some("Bearer sk-test-123"));
    assert_eq!(
        seen.body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": true}})
    );
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let srv = server(|n| {
        if n == 0 {
            Reply::Status { code: 429, headers: vec![("retry-after", "1".into())], body: "slow down".into() }
        } else {
            hello()
        }
    })
    .await;
    let up = Upstream::new(&srv.settings());
    let started = Instant::now();
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not honoured ({:?})", started.elapsed());
    assert_eq!(events.last(), Some(&done(12, 2)));
    assert_eq!(srv.hits(), 2);
}

#[tokio::test]
async fn repeated_5xx_fail_after_the_retries() {
    let srv = server(|_| status(503)).await;
    let up = Upstream::new(&srv.settings());
    let err = up.chat(request()).await.expect_err("fails");
    assert!(matches!(&err, UpstreamError::Status { code: 503, body, .. } if body.contains("busy 503")), "{err:?}");
    assert_eq!(srv.hits(), 3, "one try and two retries");
    let st = up.status();
    assert_eq!((st.circuit, st.consecutive_failures), ("closed", 1), "one failed call, not three");
    assert!(st.last_error.as_deref().is_some_and(|e| e.contains("answered 503")), "{st:?}");
}

#[tokio::test]
async fn a_4xx_is_neither_retried_nor_a_breaker_failure() {
    let srv = server(|_| status(400)).await;
    let up = Upstream::new(&srv.settings());
    let err = up.chat(request()).await.expect_err("fails");
    assert!(matches!(err, UpstreamError::Status { code: 400, .. }), "{err:?}");
    assert_eq!(srv.hits(), 1);
    assert_eq!(up.status().consecutive_failures, 0);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_without_a_retry() {
    let srv = server(|_| Reply::Hang).await;
    let mut settings = srv.settings();
    settings.read_timeout = Duration::from_millis(300);
    settings.connect_timeout = Duration::from_millis(300);
    let up = Upstream::new(&settings);
    let err = up.chat(request()).await.expect_err("times out");
    assert!(matches!(err, UpstreamError::Timeout { .. }), "{err:?}");
    assert_eq!(srv.hits(), 1, "a request that may be running upstream is not sent again");
}

#[tokio::test]
async fn a_stream_that_stalls_fails_after_the_read_timeout_keeping_its_text() {
    let srv = server(|_| Reply::Sse { events: vec![text("partial")], pause: Duration::ZERO, end: End::Hang }).await;
    let mut settings = srv.settings();
    settings.read_timeout = Duration::from_millis(300);
    let up = Upstream::new(&settings);
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert_eq!(events[0], UpstreamEvent::Text("partial".into()));
    assert!(failed(&events).contains("sent nothing for 300ms"), "{events:?}");
    assert_eq!(srv.hits(), 1, "never re-sent after text was forwarded");
}

#[tokio::test]
async fn connect_refused_is_unreachable_after_the_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let settings = UpstreamSettings {
        url: Some(format!("http://127.0.0.1:{port}/v1")),
        retries: 1,
        retry_backoff: Duration::from_millis(10),
        ..UpstreamSettings::default()
    };
    let up = Upstream::new(&settings);
    let err = up.chat(request()).await.expect_err("refused");
    assert!(matches!(err, UpstreamError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test]
async fn a_malformed_chunk_fails_the_answer_after_the_text_before_it() {
    let srv = server(|_| Reply::Sse {
        events: vec![text("ok"), "{\"choices\": [".into(), text("never")],
        pause: Duration::ZERO,
        end: End::Clean,
    })
    .await;
    let up = Upstream::new(&srv.settings());
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0], UpstreamEvent::Text("ok".into()));
    assert!(failed(&events).starts_with("malformed chunk from the upstream"), "{events:?}");
    assert_eq!(up.status().consecutive_failures, 1);
}

#[tokio::test]
async fn an_error_chunk_fails_with_its_message() {
    let error = json!({"error": {"message": "model overloaded", "type": "server_error"}}).to_string();
    let srv = server(move |_| Reply::Sse { events: vec![error.clone()], pause: Duration::ZERO, end: End::Clean }).await;
    let up = Upstream::new(&srv.settings());
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert_eq!(failed(&events), "the upstream reported an error: model overloaded");
}

#[tokio::test]
async fn truncated_streams_fail() {
    // The connection breaks off in the middle of the answer.
    let srv = server(|_| Reply::Sse { events: vec![text("half")], pause: Duration::ZERO, end: End::Abort }).await;
    let up = Upstream::new(&srv.settings());
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert_eq!(events[0], UpstreamEvent::Text("half".into()));
    assert!(failed(&events).contains("connection failed in the middle of the answer"), "{events:?}");
    assert_eq!(srv.hits(), 1);

    // The body ends cleanly, but without finish_reason or [DONE].
    let srv = server(|_| Reply::Sse { events: vec![text("half")], pause: Duration::ZERO, end: End::Clean }).await;
    let up = Upstream::new(&srv.settings());
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert!(failed(&events).contains("ended before the answer was complete"), "{events:?}");

    // A finish_reason without [DONE] is a complete answer.
    let srv = server(|_| Reply::Sse { events: vec![text("a"), finish("length")], pause: Duration::ZERO, end: End::Clean }).await;
    let up = Upstream::new(&srv.settings());
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert_eq!(events.last(), Some(&UpstreamEvent::Done { prompt_tokens: 0, completion_tokens: 0, finish_reason: "length".into() }));
}

#[tokio::test]
async fn an_endless_line_is_cut_off() {
    let long = format!("{{\"x\": \"{}\"}}", "y".repeat(MAX_LINE_BYTES + 10));
    let srv = server(move |_| Reply::Sse { events: vec![long.clone()], pause: Duration::ZERO, end: End::Clean }).await;
    let up = Upstream::new(&srv.settings());
    let events = collect(up.chat(request()).await.expect("chat")).await;
    assert_eq!(failed(&events), format!("the upstream sent a line longer than {MAX_LINE_BYTES} bytes"));
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_refused() {
    let srv = server(|_| Reply::Status { code: 200, headers: vec![("content-type", "application/json".into())], body: "{}".into() }).await;
    let up = Upstream::new(&srv.settings());
    let err = up.chat(request()).await.expect_err("not a stream");
    assert!(matches!(err, UpstreamError::NotEventStream { .. }), "{err:?}");
}

#[tokio::test]
async fn circuit_opens_after_n_failures_and_half_opens_after_the_cooldown() {
    // 0, 1: fail (opens); 2: the first trial fails (reopens); 3: a slow trial
    // that succeeds (closes); then normal answers.
    let srv = server(|n| match n {
        0..=2 => status(500),
        3 => {
            Reply::Sse { events: vec![text("probe"), finish("stop"), "[DONE]".into()], pause: Duration::from_millis(300), end: End::Clean }
        }
        _ => hello(),
    })
    .await;
    let settings = UpstreamSettings { retries: 0, breaker_failures: 2, ..srv.settings() };
    let cooldown = settings.breaker_cooldown;
    let up = Upstream::new(&settings);
    for _ in 0..2 {
        assert!(matches!(up.chat(request()).await, Err(UpstreamError::Status { code: 500, .. })));
    }
    let st = up.status();
    assert_eq!((st.circuit, st.consecutive_failures), ("open", 2), "{st:?}");
    assert!(st.open_until.is_some());
    let err = up.chat(request()).await.expect_err("open");
    assert!(matches!(err, UpstreamError::CircuitOpen { failures: 2, .. }), "{err:?}");
    assert_eq!(srv.hits(), 2, "an open circuit sends nothing");

    tokio::time::sleep(cooldown + Duration::from_millis(50)).await;
    assert!(matches!(up.chat(request()).await, Err(UpstreamError::Status { code: 500, .. })), "the trial call went through");
    assert_eq!(srv.hits(), 3);
    assert_eq!(up.status().circuit, "open", "a failed trial reopens at once");
    assert!(matches!(up.chat(request()).await, Err(UpstreamError::CircuitOpen { failures: 3, .. })));

    tokio::time::sleep(cooldown + Duration::from_millis(50)).await;
    let probe = up.chat(request()).await.expect("trial call");
    assert_eq!(up.status().circuit, "half-open");
    let err = up.chat(request()).await.expect_err("only one trial at a time");
    assert!(matches!(err, UpstreamError::CircuitProbing), "{err:?}");
    let events = collect(probe).await;
    assert_eq!(events.last(), Some(&done(0, 0)));
    let st = up.status();
    assert_eq!((st.circuit, st.consecutive_failures), ("closed", 0), "{st:?}");
    assert_eq!(collect(up.chat(request()).await.expect("closed again")).await.last(), Some(&done(12, 2)));
    assert_eq!(srv.hits(), 5);
}

#[tokio::test]
async fn an_abandoned_trial_lets_the_next_call_try() {
    let srv = server(|n| match n {
        0 => status(500),
        1 => Reply::Sse { events: vec![text("a")], pause: Duration::ZERO, end: End::Hang },
        _ => hello(),
    })
    .await;
    let settings = UpstreamSettings { retries: 0, breaker_failures: 1, ..srv.settings() };
    let up = Upstream::new(&settings);
    assert!(up.chat(request()).await.is_err());
    tokio::time::sleep(settings.breaker_cooldown + Duration::from_millis(50)).await;
    let mut probe = up.chat(request()).await.expect("trial");
    assert_eq!(probe.recv().await, Some(UpstreamEvent::Text("a".into())));
    drop(probe);
    // The reader notices the dropped receiver while it waits for the next bytes.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match up.chat(request()).await {
            Ok(rx) => {
                assert_eq!(collect(rx).await.last(), Some(&done(12, 2)));
                break;
            }
            Err(UpstreamError::CircuitProbing) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(up.status().circuit, "closed");
}

#[tokio::test]
async fn no_url_is_not_configured() {
    let up = Upstream::new(&UpstreamSettings::default());
    assert!(matches!(up.chat(request()).await, Err(UpstreamError::NotConfigured)));
    assert_eq!(up.status().url, None);
}

fn json_answer(body: Value) -> Reply {
    Reply::Status { code: 200, headers: vec![("content-type", "application/json".into())], body: body.to_string() }
}

fn texts() -> Vec<String> {
    vec!["PLC alarm".into(), "急停复位".into()]
}

#[tokio::test]
async fn embeddings_come_back_in_input_order_as_unit_vectors() {
    // Out of order and not normalised, as a server may answer.
    let srv =
        server(|_| json_answer(json!({"data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]}]}))).await;
    let up = Upstream::new(&srv.settings());
    let vectors = up.embed("bge-m3", &texts()).await.expect("embeddings");
    assert_eq!(vectors, [vec![0.6, 0.8], vec![0.0, 1.0]]);
    let seen = srv.last();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.body, json!({"model": "bge-m3", "input": ["PLC alarm", "急停复位"], "encoding_format": "float"}));
    assert_eq!(up.status().consecutive_failures, 0);
}

#[tokio::test]
async fn embeddings_are_retried_on_5xx() {
    let srv = server(|n| {
        if n == 0 {
            status(503)
        } else {
            json_answer(json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}]}))
        }
    })
    .await;
    let up = Upstream::new(&srv.settings());
    assert_eq!(up.embed("m", &texts()).await.expect("embeddings").len(), 2);
    assert_eq!(srv.hits(), 2);
}

#[tokio::test]
async fn embeddings_that_do_not_fit_the_inputs_are_breaker_failures() {
    let answers = [
        json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}]}),
        json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [1.0]}]}),
        json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}),
        json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [1.0]}]}),
        json!({"data": [{"index": 0, "embedding": [0.0]}, {"index": 1, "embedding": [1.0]}]}),
        json!({"object": "list"}),
    ];
    for (i, answer) in answers.into_iter().enumerate() {
        let srv = server(move |_| json_answer(answer.clone())).await;
        let up = Upstream::new(&srv.settings());
        let err = up.embed("m", &texts()).await.expect_err("refused");
        assert!(matches!(err, UpstreamError::BadEmbeddings { .. }), "answer {i}: {err:?}");
        assert_eq!(srv.hits(), 1, "answer {i}: a wrong answer is not retried");
        assert_eq!(up.status().consecutive_failures, 1, "answer {i}");
    }
}
