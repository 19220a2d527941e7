//! Runs the real `edgeaictl` binary against a fake admin server on a real
//! unix socket and checks its output and exit-code contract (0/1/2/65/69/77).
//! The fake answers canned JSON; the daemon's own end-to-end tests cover the
//! real server.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    host: String,
    body: Value,
    content_type: String,
    raw: Bytes,
}

struct Fake {
    socket: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

impl Fake {
    async fn start() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("edgeai.sock");
        let seen = serve(&socket);
        Fake { socket, seen, _dir: dir }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves the fake admin API on `socket` until the test's runtime ends.
fn serve(socket: &Path) -> Arc<Mutex<Vec<Seen>>> {
    let listener = UnixListener::bind(socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, log.clone()));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    seen
}

const STATUS: &str = r#"{"version":"0.1.0","state":"ready","uptime_secs":3723,"listen":"127.0.0.1:5001",
"socket":"/run/edgeai/edgeai.sock","in_flight":1,"model":{"name":"smollm2-135m","path":"/var/cache/m.gguf",
"state":"ready","error":null,"threads":2,"slots":1,"context_size":2048,"cpu_features":"avx2 fma"}}"#;

const KEYS: &str = r#"{"data":[
{"id":"k1","app_id":"demo","prefix":"app-Ab3","created_at":1700000000,"revoked_at":null,"last_used_at":1700000060},
{"id":"k2","app_id":"other","prefix":"app-Zz9","created_at":0,"revoked_at":86400,"last_used_at":null}]}"#;

fn json_reply(status: u16, body: &str) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())).boxed())
        .unwrap()
}

fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    json_reply(status, &json!({"code": code, "message": message, "status": status}).to_string())
}

/// A body fed frame by frame from a channel, so the client sees a real stream.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// An SSE answer whose chunks arrive a few milliseconds apart, cut at awkward places.
fn sse_reply(events: Vec<Value>) -> Reply {
    let mut text = String::from(": stream opened\n\nevent: ping\n\n");
    for event in events {
        text.push_str(&format!("event: {}\ndata: {event}\n\n", event["event"].as_str().unwrap()));
    }
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let bytes = text.into_bytes();
        for chunk in bytes.chunks(7) {
            if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    Response::builder().header("content-type", "text/event-stream; charset=utf-8").body(ChannelBody(rx).boxed()).unwrap()
}

fn message(conversation: &str, answer: &str) -> Value {
    json!({"event": "message", "task_id": "t1", "id": "m1", "message_id": "m1",
           "conversation_id": conversation, "answer": answer, "created_at": 1700000000})
}

fn message_end(conversation: &str) -> Value {
    json!({"event": "message_end", "task_id": "t1", "id": "m1", "message_id": "m1",
           "conversation_id": conversation, "metadata": {"usage": {"total_tokens": 5}}})
}

async fn handle(req: Request<Incoming>, log: Arc<Mutex<Vec<Seen>>>) -> Result<Reply, Infallible> {
    let method = req.method().to_string();
    let target = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    let content_type = req.headers().get("content-type").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let polls = log.lock().unwrap().iter().filter(|s| s.method == method && s.target == target).count();
    let uploads = log.lock().unwrap().iter().filter(|s| s.target.ends_with("/create-by-file")).count();
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        host,
        body: body.clone(),
        content_type,
        raw: bytes.clone(),
    });
    if let Some(rest) = target.strip_prefix("/admin/v1/datasets") {
        return Ok(datasets_reply(&method, rest, &body, &bytes, polls, uploads));
    }

    let reply = match (method.as_str(), target.as_str()) {
        ("GET", "/admin/v1/status") => json_reply(200, STATUS),
        ("GET", "/admin/v1/apps") => error_reply(403, "forbidden", "uid 1000 is not in the admin group"),
        ("POST", "/admin/v1/apps") => match body["id"].as_str() {
            Some("demo") => {
                json_reply(201, r#"{"id":"demo","name":"Demo","mode":"chat","version":2,"created_at":1,"updated_at":2,"active_keys":1}"#)
            }
            Some("same") => {
                json_reply(200, r#"{"id":"same","name":"Same","mode":"chat","version":1,"created_at":1,"updated_at":1,"active_keys":0}"#)
            }
            _ => error_reply(400, "invalid_param", "mode: must be chat or completion"),
        },
        ("GET", "/admin/v1/keys") => json_reply(200, KEYS),
        ("GET", "/admin/v1/keys?app=demo") => {
            let all: Value = serde_json::from_str(KEYS).unwrap();
            json_reply(200, &json!({"data": [all["data"][0]]}).to_string())
        }
        ("GET", "/admin/v1/keys?app=boom") => Response::builder()
            .status(500)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from_static(b"kaboom\n")).boxed())
            .unwrap(),
        ("POST", "/admin/v1/keys") if body["app"] == "demo" => {
            json_reply(201, r#"{"id":"k3","app_id":"demo","key":"app-9fQ2sXw7LmN4","created_at":1700000000}"#)
        }
        ("POST", "/admin/v1/keys") if body == json!({"dataset": true}) => {
            json_reply(201, r#"{"id":"k4","kind":"dataset","app_id":"","key":"dataset-Pq7rT2vW9xYz","created_at":1}"#)
        }
        ("POST", "/admin/v1/keys") => error_reply(404, "not_found", "app nope does not exist"),
        ("DELETE", "/admin/v1/keys/k1") => {
            Response::builder().status(StatusCode::NO_CONTENT).body(Full::new(Bytes::new()).boxed()).unwrap()
        }
        ("DELETE", _) => error_reply(404, "not_found", "no key k9"),
        ("POST", "/admin/v1/apps/demo/chat-messages") => {
            let conversation = body["conversation_id"].as_str().unwrap_or("conv-1").to_owned();
            let answer = format!("echo: {}", body["query"].as_str().unwrap_or_default());
            let (head, tail) = answer.split_at(3);
            sse_reply(vec![
                message(&conversation, head),
                message(&conversation, tail),
                json!({"event": "agent_thought", "thought": "ignored"}),
                message_end(&conversation),
            ])
        }
        ("POST", "/admin/v1/apps/broken/chat-messages") => sse_reply(vec![
            message("conv-2", "partial"),
            json!({"event": "error", "task_id": "t1", "message_id": "m1", "status": 500,
                   "code": "completion_request_error", "message": "inference thread died"}),
        ]),
        ("POST", "/admin/v1/apps/cut/chat-messages") => sse_reply(vec![message("conv-3", "half an answ")]),
        ("POST", "/admin/v1/apps/locked/chat-messages") => error_reply(403, "forbidden", "not an admin"),
        _ => error_reply(404, "not_found", "no such route"),
    };
    Ok(reply)
}

const MANUALS: &str = "11111111-1111-4111-8111-111111111111";
const DUP_1: &str = "22222222-2222-4222-8222-222222222222";
const DUP_2: &str = "33333333-3333-4333-8333-333333333333";
const CREATED: &str = "44444444-4444-4444-8444-444444444444";
const DOC_PLC: &str = "55555555-5555-4555-8555-555555555555";

fn dataset_json(id: &str, name: &str) -> Value {
    json!({"id": id, "name": name, "description": "", "provider": "vendor", "indexing_technique": "high_quality",
           "document_count": 2, "word_count": 1234, "created_at": 1700000000, "embedding_model": "multilingual-e5-small",
           "retrieval_model_dict": {"search_method": "semantic_search", "top_k": 2, "weights": null}, "tags": []})
}

fn document_json(id: &str, name: &str, status: &str, error: Option<&str>) -> Value {
    let display = match status {
        "completed" => "available",
        "error" => "error",
        "waiting" => "queuing",
        _ => "indexing",
    };
    json!({"id": id, "position": 1, "name": name, "indexing_status": status, "display_status": display, "enabled": true,
           "word_count": 321, "tokens": 90, "error": error, "created_at": 1700000000, "hit_count": 0})
}

fn status_json(name: &str, status: &str, done: u64, total: u64, error: Option<&str>) -> Value {
    json!({"data": [{"id": format!("doc-{name}"), "indexing_status": status, "completed_segments": done,
                     "total_segments": total, "error": error, "completed_at": null}]})
}

fn no_content() -> Reply {
    Response::builder().status(StatusCode::NO_CONTENT).body(Full::new(Bytes::new()).boxed()).unwrap()
}

/// `%XX` decoding of a query value.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn query_param(rest: &str, name: &str) -> Option<String> {
    let query = rest.split_once('?')?.1;
    query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(unescape))
}

/// The fake Knowledge API under /admin/v1/datasets. `polls`: earlier
/// requests with this method and target; `uploads`: earlier uploads.
fn datasets_reply(method: &str, rest: &str, body: &Value, raw: &[u8], polls: usize, uploads: usize) -> Reply {
    let path = rest.split('?').next().unwrap();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let ok = |v: Value| json_reply(200, &v.to_string());
    match (method, segs.as_slice()) {
        ("GET", []) => {
            let all = [dataset_json(MANUALS, "plant-manuals"), dataset_json(DUP_1, "dup"), dataset_json(DUP_2, "dup")];
            match query_param(rest, "keyword") {
                Some(k) => {
                    let data: Vec<&Value> = all.iter().filter(|d| d["name"].as_str().unwrap().contains(&k)).collect();
                    ok(json!({"data": data, "has_more": false, "limit": 100, "total": data.len(), "page": 1}))
                }
                // Two pages, to be followed.
                None if query_param(rest, "page").as_deref() == Some("2") => {
                    ok(json!({"data": [all[2]], "has_more": false, "limit": 2, "total": 3, "page": 2}))
                }
                None => ok(json!({"data": [all[0], all[1]], "has_more": true, "limit": 2, "total": 3, "page": 1})),
            }
        }
        ("POST", []) => {
            let mut d = dataset_json(CREATED, body["name"].as_str().unwrap());
            d["indexing_technique"] = body["indexing_technique"].clone();
            ok(d)
        }
        ("GET", [id]) if [MANUALS, DUP_1, DUP_2].contains(id) => ok(dataset_json(id, if *id == MANUALS { "plant-manuals" } else { "dup" })),
        ("GET", [_]) => error_reply(404, "not_found", "Dataset not found."),
        ("DELETE", [id]) if *id == MANUALS => no_content(),
        ("POST", [_, "document", "create-by-file"]) => {
            let text = String::from_utf8_lossy(raw);
            let name = text.split("filename=\"").nth(1).and_then(|t| t.split('"').next()).unwrap_or("").to_owned();
            match name.as_str() {
                "empty.txt" => error_reply(400, "empty_file", "File is empty."),
                "full.md" if uploads == 0 => {
                    error_reply(429, "too_many_requests", "too many documents are waiting to be indexed (1); retry later")
                }
                _ => {
                    ok(json!({"document": document_json(&format!("doc-{name}"), &name, "waiting", None), "batch": format!("batch-{name}")}))
                }
            }
        }
        ("GET", [_, "documents", batch, "indexing-status"]) => {
            let name = batch.trim_start_matches("batch-");
            match (name, polls) {
                ("slow.md", n) => ok(status_json(name, "indexing", n.min(2) as u64, 5, None)),
                ("broken.pdf", 0) => ok(status_json(name, "parsing", 0, 0, None)),
                ("broken.pdf", _) => ok(status_json(name, "error", 0, 0, Some("the PDF has no text layer"))),
                (_, 0) => ok(status_json(name, "indexing", 1, 3, None)),
                (_, _) => ok(status_json(name, "completed", 3, 3, None)),
            }
        }
        ("GET", [_, "documents"]) => {
            let all = [
                document_json(DOC_PLC, "plc-alarms.md", "completed", None),
                document_json("66666666-6666-4666-8666-666666666666", "scan.pdf", "error", Some("the PDF has no text layer")),
            ];
            let k = query_param(rest, "keyword").unwrap_or_default();
            let data: Vec<&Value> = all.iter().filter(|d| d["name"].as_str().unwrap().contains(&k)).collect();
            ok(json!({"data": data, "has_more": false, "limit": 100, "total": data.len(), "page": 1}))
        }
        ("GET", [_, "documents", doc]) if *doc == DOC_PLC => {
            let mut d = document_json(DOC_PLC, "plc-alarms.md", "completed", None);
            d["segment_count"] = json!(12);
            ok(d)
        }
        ("GET", [_, "documents", doc]) if doc.starts_with("6666") => {
            let mut d = document_json(doc, "scan.pdf", "error", Some("the PDF has no text layer"));
            d["segment_count"] = json!(0);
            ok(d)
        }
        ("GET", [_, "documents", _]) => error_reply(404, "not_found", "Document not found."),
        ("DELETE", [_, "documents", doc]) if *doc == DOC_PLC => no_content(),
        ("POST", [_, "retrieve"]) => ok(json!({"query": {"content": body["query"]}, "records": [
            {"segment": {"id": "s1", "position": 2, "document_id": DOC_PLC, "content": "## Alarm E17\n\nTo clear the PLC alarm, fix the cause, then press RESET on the panel for two seconds; if it comes back, check the sensor wiring.",
                         "document": {"id": DOC_PLC, "name": "plc-alarms.md", "doc_type": null}}, "score": 0.8312, "child_chunks": []},
            {"segment": {"id": "s2", "position": 1, "document_id": "x", "content": "Lockout before opening the cabinet.",
                         "document": {"id": "x", "name": "lockout-tagout.html"}}, "score": 0.41}]})),
        _ => error_reply(404, "not_found", "no such route"),
    }
}

/// Runs edgeaictl with `args` (and `stdin`, if any) from a neutral directory.
async fn ctl(args: &[&str], stdin: Option<&str>) -> Output {
    ctl_with(args, stdin, |_| {}).await
}

async fn ctl_with(args: &[&str], stdin: Option<&str>, adjust: impl FnOnce(&mut tokio::process::Command)) -> Output {
    run_ctl(Path::new(env!("CARGO_BIN_EXE_edgeaictl")), args, stdin, adjust).await
}

/// Runs the edgeaictl binary at `program` (the built one or a copy).
async fn run_ctl(program: &Path, args: &[&str], stdin: Option<&str>, adjust: impl FnOnce(&mut tokio::process::Command)) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_remove("EDGEAI_SOCKET")
        .env("USER", "tester")
        .current_dir("/")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    adjust(&mut cmd);
    let mut child = spawn(&mut cmd).await;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("edgeaictl hung").unwrap()
}

/// Spawns `cmd`, retrying while the kernel says ETXTBSY: a freshly copied
/// binary (see `reachable_dir`) stays "busy" while a child forked by another
/// test thread still holds the copy's write descriptor, until that child execs.
async fn spawn(cmd: &mut tokio::process::Command) -> tokio::process::Child {
    const ETXTBSY: i32 = 26; // Linux
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => tokio::time::sleep(Duration::from_millis(20)).await,
            spawned => return spawned.unwrap(),
        }
    }
    panic!("{cmd:?} stayed busy (ETXTBSY) for 2 s");
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("edgeaictl was killed by a signal")
}

#[tokio::test]
async fn status_table_and_json() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();

    let out = ctl(&["--socket", sock, "status"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("state         ready\n"), "{text}");
    assert!(text.contains("uptime        1h 2m 3s\n"), "{text}");
    assert!(text.contains("model         smollm2-135m (ready)\n"), "{text}");
    assert!(!text.contains("model error"), "{text}");

    let out = ctl(&["status", "--json", "--socket", sock], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed, serde_json::from_str::<Value>(STATUS).unwrap());

    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.method == "GET" && s.target == "/admin/v1/status" && s.host == "localhost"));
}

#[tokio::test]
async fn socket_from_environment_and_from_dev_checkout() {
    let fake = Fake::start().await;
    let out = ctl_with(&["status"], None, |cmd| {
        cmd.env("EDGEAI_SOCKET", &fake.socket);
    })
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let checkout = tempfile::tempdir().unwrap();
    std::fs::write(checkout.path().join("Cargo.toml"), "[workspace]\n").unwrap();
    std::fs::create_dir_all(checkout.path().join("configs")).unwrap();
    std::fs::write(checkout.path().join("configs/dev.toml"), "").unwrap();
    std::fs::create_dir_all(checkout.path().join("run")).unwrap();
    std::fs::create_dir_all(checkout.path().join("ctl/src")).unwrap();
    let dev_seen = serve(&checkout.path().join("run/edgeai.sock"));
    let out = ctl_with(&["status"], None, |cmd| {
        cmd.current_dir(checkout.path().join("ctl/src"));
    })
    .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(dev_seen.lock().unwrap().len(), 1, "the dev checkout's socket was used");
}

#[tokio::test]
async fn keys_create_prints_only_the_key() {
    let fake = Fake::start().await;
    let out = ctl(&["--socket", fake.socket.to_str().unwrap(), "keys", "create", "--app", "demo"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "app-9fQ2sXw7LmN4\n");
    assert!(stderr(&out).contains("k3") && stderr(&out).contains("demo"), "{}", stderr(&out));
    let seen = fake.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("POST", "/admin/v1/keys"));
    assert_eq!(seen[0].body, json!({"app": "demo"}));
}

#[tokio::test]
async fn keys_create_dataset_prints_only_the_dataset_key() {
    let fake = Fake::start().await;
    let out = ctl(&["--socket", fake.socket.to_str().unwrap(), "keys", "create", "--dataset"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "dataset-Pq7rT2vW9xYz\n");
    assert!(stderr(&out).contains("k4") && stderr(&out).contains("Knowledge API"), "{}", stderr(&out));
    assert_eq!(fake.seen()[0].body, json!({"dataset": true}));
}

#[tokio::test]
async fn keys_list_table_filter_and_json() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();

    let out = ctl(&["--socket", sock, "keys", "list"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
ID  KIND  APP    PREFIX   CREATED               REVOKED               LAST USED
k1  app   demo   app-Ab3  2023-11-14T22:13:20Z  -                     2023-11-14T22:14:20Z
k2  app   other  app-Zz9  1970-01-01T00:00:00Z  1970-01-02T00:00:00Z  -
"
    );

    let out = ctl(&["--socket", sock, "keys", "list", "--app", "demo", "--json"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed["data"].as_array().unwrap().len(), 1);
    assert_eq!(fake.seen()[1].target, "/admin/v1/keys?app=demo");
}

#[tokio::test]
async fn api_errors_exit_1_with_code_and_message() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();

    let out = ctl(&["--socket", sock, "keys", "revoke", "k1"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "revoked key k1\n");

    let out = ctl(&["--socket", sock, "keys", "revoke", "k9"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "edgeaictl: not_found: no key k9\n");
    assert_eq!(stdout(&out), "");

    let out = ctl(&["--socket", sock, "keys", "create", "--app", "nope"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "edgeaictl: not_found: app nope does not exist\n");
    assert_eq!(stdout(&out), "", "no key on stdout when creation fails");

    // A non-JSON error body still reports the HTTP status.
    let out = ctl(&["--socket", sock, "keys", "list", "--app", "boom"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "edgeaictl: internal_server_error: HTTP 500: kaboom\n");
}

#[tokio::test]
async fn forbidden_exits_77() {
    let fake = Fake::start().await;
    let out = ctl(&["--socket", fake.socket.to_str().unwrap(), "apps", "list"], None).await;
    assert_eq!(code(&out), 77);
    assert_eq!(stderr(&out), "edgeaictl: forbidden: uid 1000 is not in the admin group\n");
    let out = ctl(&["--socket", fake.socket.to_str().unwrap(), "chat", "locked", "--query", "hi"], None).await;
    assert_eq!(code(&out), 77);
}

#[tokio::test]
async fn apps_import_new_unchanged_and_bad_files() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };

    let demo = write("demo.json", r#"{"id":"demo","name":"Demo","mode":"chat","pre_prompt":"Be brief."}"#);
    let out = ctl(&["--socket", sock, "apps", "import", &demo], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "imported demo version 2\n");
    assert_eq!(fake.seen()[0].body["pre_prompt"], "Be brief.");

    let same = write("same.json", r#"{"id":"same","name":"Same","mode":"chat"}"#);
    let out = ctl(&["--socket", sock, "apps", "import", &same], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "same unchanged (version 1)\n");

    let invalid = write("invalid.json", r#"{"id":"x","name":"X","mode":"workflow"}"#);
    let out = ctl(&["--socket", sock, "apps", "import", &invalid], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "edgeaictl: invalid_param: mode: must be chat or completion\n");
    let requests = fake.seen().len();

    let missing = dir.path().join("missing.json");
    let out = ctl(&["--socket", sock, "apps", "import", missing.to_str().unwrap()], None).await;
    assert_eq!(code(&out), 65);
    assert!(stderr(&out).contains("cannot read") && stderr(&out).contains("missing.json"), "{}", stderr(&out));

    let broken = write("broken.json", "{\"id\": \"demo\",");
    let out = ctl(&["--socket", sock, "apps", "import", &broken], None).await;
    assert_eq!(code(&out), 65);
    assert!(stderr(&out).contains("broken.json is not valid JSON"), "{}", stderr(&out));

    // A .yml/.yaml file is a Dify DSL for the daemon to check; one that is not text never leaves.
    let yaml = dir.path().join("app.yml");
    std::fs::write(&yaml, b"app:\n  name: \xff\xfe\n").unwrap();
    let out = ctl(&["--socket", sock, "apps", "import", yaml.to_str().unwrap()], None).await;
    assert_eq!(code(&out), 65);
    assert!(stderr(&out).contains("app.yml is not UTF-8 text"), "{}", stderr(&out));
    // --name and --id belong to DSL imports.
    let out = ctl(&["--socket", sock, "apps", "import", &same, "--name", "N"], None).await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--name, --id and --dataset apply to a Dify DSL file"), "{}", stderr(&out));

    let list = write("list.json", "[]");
    let out = ctl(&["--socket", sock, "apps", "import", &list], None).await;
    assert_eq!(code(&out), 65);
    assert!(stderr(&out).contains("an array"), "{}", stderr(&out));

    assert_eq!(fake.seen().len(), requests, "bad files never reach the daemon");
}

#[tokio::test]
async fn chat_one_question() {
    let fake = Fake::start().await;
    let out = ctl(&["--socket", fake.socket.to_str().unwrap(), "chat", "demo", "--query", "Grüße?"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "echo: Grüße?\n");
    assert_eq!(stderr(&out), "");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/admin/v1/apps/demo/chat-messages");
    assert_eq!(seen[0].body, json!({"query": "Grüße?", "inputs": {}, "response_mode": "streaming", "user": "edgeaictl-tester"}));
}

#[tokio::test]
async fn chat_interactive_keeps_the_conversation() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();
    let out = ctl(&["--socket", sock, "chat", "demo", "--user", "line-3"], Some("first\n\n  second  \n/exit\nthird\n")).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "echo: first\necho: second\n");
    assert_eq!(stderr(&out), "", "no prompt when stdin is not a terminal");
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "the empty line is skipped and /exit ends the session");
    assert!(seen[0].body.get("conversation_id").is_none());
    assert_eq!(seen[1].body["conversation_id"], "conv-1");
    assert_eq!(seen[1].body["user"], "line-3");

    // End of input ends the session as well.
    let out = ctl(&["--socket", sock, "chat", "demo"], Some("only\n")).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "echo: only\n");
}

#[tokio::test]
async fn chat_json_prints_each_event() {
    let fake = Fake::start().await;
    let out = ctl(&["--socket", fake.socket.to_str().unwrap(), "--json", "chat", "demo", "-q", "hi"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let events: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["message", "message", "agent_thought", "message_end"]);
    assert_eq!(events[3]["metadata"]["usage"]["total_tokens"], 5);
}

#[tokio::test]
async fn chat_stream_errors_exit_1() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();

    let out = ctl(&["--socket", sock, "chat", "broken", "--query", "hi"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "partial\n");
    assert_eq!(stderr(&out), "edgeaictl: completion_request_error: inference thread died\n");

    let out = ctl(&["--socket", sock, "chat", "cut", "--query", "hi"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "half an answ\n");
    assert!(stderr(&out).contains("ended before its message_end"), "{}", stderr(&out));

    let out = ctl(&["--socket", sock, "chat", "ghost", "--query", "hi"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "edgeaictl: not_found: no such route\n");

    // Interactive: a failed turn is reported and the session goes on.
    let out = ctl(&["--socket", sock, "chat", "broken"], Some("one\ntwo\n")).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stdout(&out), "partial\npartial\n");
    let err = stderr(&out);
    assert_eq!(err.matches("completion_request_error").count(), 2, "{err}");
    assert!(err.ends_with("edgeaictl: 2 of 2 chat turns failed\n"), "{err}");
}

#[tokio::test]
async fn unreachable_socket_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.sock");
    let out = ctl(&["--socket", missing.to_str().unwrap(), "status"], None).await;
    assert_eq!(code(&out), 69);
    let err = stderr(&out);
    assert!(err.contains(missing.to_str().unwrap()) && err.contains("systemctl status edgeai"), "{err}");
    assert!(err.contains("--socket"), "{err}");

    // A stale socket file with nobody listening: connection refused.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let out = ctl(&["--socket", stale.to_str().unwrap(), "keys", "list"], None).await;
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

/// A fresh directory that any uid can reach (every ancestor searchable by
/// others, itself 0755), for tests that run edgeaictl under another uid: the
/// checkout (and so target/) may lie under a 0700 directory such as root's
/// home or a `mktemp -d` dir. `None` when no candidate qualifies.
fn reachable_dir() -> Option<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let searchable = |dir: &Path| dir.ancestors().all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    let candidates = [std::env::temp_dir(), PathBuf::from("/tmp"), PathBuf::from("/var/tmp"), PathBuf::from("/dev/shm")];
    let base = candidates.into_iter().find(|d| d.is_dir() && searchable(d))?;
    let dir = tempfile::Builder::new().prefix("edgeaictl-test-").tempdir_in(base).ok()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).ok()?;
    Some(dir)
}

#[tokio::test]
async fn socket_permission_denied_exits_77() {
    use std::os::unix::fs::PermissionsExt;
    let is_root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap();
    let out = if is_root {
        // Root bypasses file modes: run edgeaictl as nobody against a 0600
        // socket. Nobody must reach both the binary and the socket's
        // directory, wherever the checkout lies, so both go to a reachable
        // directory: a copy of edgeaictl, and the fake server's socket.
        let Some(dir) = reachable_dir() else {
            eprintln!(
                "SKIP socket_permission_denied_exits_77: no directory that uid 65534 can reach \
                 ($TMPDIR, /tmp, /var/tmp, /dev/shm all have a parent without o+x)"
            );
            return;
        };
        let ctl = dir.path().join("edgeaictl");
        std::fs::copy(env!("CARGO_BIN_EXE_edgeaictl"), &ctl).unwrap();
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("edgeai.sock");
        let seen = serve(&socket);
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = run_ctl(&ctl, &["--socket", socket.to_str().unwrap(), "status"], None, |cmd| {
            cmd.uid(65534).gid(65534);
        })
        .await;
        assert!(seen.lock().unwrap().is_empty());
        out
    } else {
        let fake = Fake::start().await;
        std::fs::set_permissions(&fake.socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        let out = ctl(&["--socket", fake.socket.to_str().unwrap(), "status"], None).await;
        assert!(fake.seen().is_empty());
        out
    };
    assert_eq!(code(&out), 77, "{}", stderr(&out));
    assert!(stderr(&out).contains("permission denied on"), "{}", stderr(&out));
}

#[tokio::test]
async fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let out = ctl(&["keys", "create"], None).await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--app"), "{}", stderr(&out));
    assert_eq!(code(&ctl(&["chat"], None).await), 2);
    assert_eq!(code(&ctl(&["reboot"], None).await), 2);

    let out = ctl(&["--help"], None).await;
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    for needle in ["Exit codes", "69", "77", "65", "EDGEAI_SOCKET", "/run/edgeai/edgeai.sock"] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let out = ctl(&["keys", "create", "--help"], None).await;
    assert!(stdout(&out).contains("KEY=$(edgeaictl keys create --app demo)"), "{}", stdout(&out));
}

#[tokio::test]
async fn datasets_list_follows_pages_and_show_resolves_names() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();

    let out = ctl(&["--socket", sock, "datasets", "list"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ID  "), "{text}");
    assert_eq!(text.lines().count(), 4, "header and the three datasets of both pages:\n{text}");
    assert!(text.contains(&format!("{MANUALS}  plant-manuals  high_quality  2     1234")), "{text}");
    let out = ctl(&["--socket", sock, "--json", "datasets", "list"], None).await;
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed["total"], 3);

    // By name: the keyword filter, then the exact name.
    let out = ctl(&["--socket", sock, "datasets", "show", "plant-manuals"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("id               {MANUALS}\n")), "{text}");
    assert!(text.contains("embedding model  multilingual-e5-small\n") && text.contains("search method    semantic_search\n"), "{text}");
    assert!(fake.seen().iter().any(|s| s.target == "/admin/v1/datasets?keyword=plant-manuals&page=1&limit=100"));
    // By id: one GET, no list.
    let before = fake.seen().len();
    let out = ctl(&["--socket", sock, "datasets", "show", MANUALS], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let seen = fake.seen();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(seen[before].target, format!("/admin/v1/datasets/{MANUALS}"));

    // A part of a name is not a name; two of a name are ambiguous; an unknown id is looked up as a name.
    let out = ctl(&["--socket", sock, "datasets", "show", "plant"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "edgeaictl: no dataset is named \"plant\" or has that id\n");
    let out = ctl(&["--socket", sock, "datasets", "delete", "dup"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), format!("edgeaictl: 2 datasets are named \"dup\" ({DUP_1}, {DUP_2}): give the id\n"));
    let out = ctl(&["--socket", sock, "datasets", "show", CREATED], None).await;
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("no dataset is named"), "{}", stderr(&out));
    assert!(!fake.seen().iter().any(|s| s.method == "DELETE"), "nothing deleted on an ambiguous name");

    let out = ctl(&["--socket", sock, "datasets", "delete", "plant-manuals"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("deleted dataset \"plant-manuals\" ({MANUALS})\n"));
}

#[tokio::test]
async fn datasets_create_prints_the_id() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();
    let out = ctl(&["--socket", sock, "datasets", "create", "fault codes", "--economy", "--description", "E-codes"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{CREATED}\n"));
    assert!(stderr(&out).contains("economy"), "{}", stderr(&out));
    assert_eq!(fake.seen()[0].body, json!({"name": "fault codes", "description": "E-codes", "indexing_technique": "economy"}));
}

fn manuals_dir(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

#[tokio::test]
async fn datasets_ingest_uploads_waits_and_reports_failures() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();
    let dir = manuals_dir(&[
        ("a.md", b"# Alarms\nE17: press RESET.\n"),
        ("b.txt", "空压机 维护".as_bytes()),
        ("broken.pdf", b"%PDF-1.4 no text"),
        ("empty.txt", b""),
        ("notes.docx", b"PK"),
    ]);
    let root = dir.path().to_str().unwrap();
    let out = ctl(&["--socket", sock, "datasets", "ingest", root, "--dataset", "plant-manuals"], None).await;
    assert_eq!(code(&out), 1, "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let (text, err) = (stdout(&out), stderr(&out));
    // Not a terminal: lines, no bar.
    assert!(!text.contains('['), "{text}");
    for line in [
        "uploaded a.md (document doc-a.md)\n",
        "a.md: indexing 1/3 segments\n",
        "indexed a.md: 3 segments\n",
        "indexed b.txt: 3 segments\n",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(text.ends_with("indexed 2 of 4 files into \"plant-manuals\" (6 segments); 2 failed; 1 skipped\n"), "{text}");
    assert!(err.contains("notes.docx: not a supported type"), "{err}");
    assert!(err.contains("empty.txt: not uploaded: empty_file: File is empty."), "{err}");
    assert!(err.contains("broken.pdf: indexing failed: the PDF has no text layer"), "{err}");
    assert!(err.ends_with("edgeaictl: 2 of 4 files were not indexed\n"), "{err}");

    // Each upload is one multipart form: the options, then the file byte for byte.
    let seen = fake.seen();
    let upload = seen.iter().find(|s| String::from_utf8_lossy(&s.raw).contains("filename=\"b.txt\"")).unwrap();
    assert_eq!(upload.target, format!("/admin/v1/datasets/{MANUALS}/document/create-by-file"));
    let boundary = upload.content_type.strip_prefix("multipart/form-data; boundary=").unwrap();
    let body = String::from_utf8(upload.raw.to_vec()).unwrap();
    assert!(
        body.starts_with(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{{\"process_rule\":{{\"mode\":\"automatic\"}}}}\r\n"
        )),
        "{body}"
    );
    assert!(body.ends_with(&format!("\r\n\r\n空压机 维护\r\n--{boundary}--\r\n")), "{body}");
    assert!(!seen.iter().any(|s| String::from_utf8_lossy(&s.raw).contains("notes.docx")), "unsupported files are not sent");
}

#[tokio::test]
async fn datasets_ingest_json_summary_creates_and_waits_out_a_full_queue() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();
    let dir = manuals_dir(&[("full.md", b"first answered 429"), ("z.md", b"z")]);
    let out = ctl(
        &["--socket", sock, "--json", "datasets", "ingest", dir.path().to_str().unwrap(), "--dataset", "new manuals", "--create"],
        None,
    )
    .await;
    assert_eq!(code(&out), 0, "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let summary: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(summary["dataset"], json!({"id": CREATED, "name": "new manuals"}));
    let docs = summary["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2);
    assert!(docs.iter().all(|d| d["indexing_status"] == "completed" && d["total_segments"] == 3), "{summary:#}");
    assert_eq!(summary["interrupted"], false);
    assert!(stderr(&out).contains("indexing queue is full"), "{}", stderr(&out));
    let seen = fake.seen();
    assert!(seen.iter().any(|s| s.target == "/admin/v1/datasets?keyword=new%20manuals&page=1&limit=100"));
    assert_eq!(seen.iter().filter(|s| s.method == "POST" && s.target == "/admin/v1/datasets").count(), 1);
    let uploads = seen.iter().filter(|s| s.target.ends_with("/create-by-file")).count();
    assert_eq!(uploads, 3, "full.md is sent again after the 429");
}

#[tokio::test]
async fn datasets_ingest_without_files_or_dataset() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();
    let dir = manuals_dir(&[("notes.docx", b"PK")]);
    let out = ctl(&["--socket", sock, "datasets", "ingest", dir.path().to_str().unwrap(), "--dataset", "plant-manuals"], None).await;
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    assert!(stderr(&out).contains("no file to ingest"), "{}", stderr(&out));
    let out = ctl(&["--socket", sock, "datasets", "ingest", "/nonexistent/manuals", "--dataset", "plant-manuals"], None).await;
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    let ok_dir = manuals_dir(&[("a.md", b"a")]);
    let out = ctl(&["--socket", sock, "datasets", "ingest", ok_dir.path().to_str().unwrap(), "--dataset", "nope"], None).await;
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no dataset is named \"nope\""), "{}", stderr(&out));
    assert!(!fake.seen().iter().any(|s| s.method == "POST"), "nothing uploaded or created without --create");
}

#[tokio::test]
async fn datasets_ingest_ctrl_c_stops_waiting_and_lists_what_still_indexes() {
    let fake = Fake::start().await;
    let dir = manuals_dir(&[("slow.md", b"never finishes")]);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeaictl"));
    cmd.args(["--socket", fake.socket.to_str().unwrap(), "datasets", "ingest", dir.path().to_str().unwrap(), "--dataset", MANUALS])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = spawn(&mut cmd).await;
    let pid = child.id().unwrap();
    // Wait (bounded) until it polls, then interrupt it as a terminal's Ctrl-C would.
    let polling = || fake.seen().iter().filter(|s| s.target.ends_with("/indexing-status")).count() >= 2;
    for _ in 0..300 {
        if polling() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(polling(), "edgeaictl never polled: {:?}", fake.seen());
    let killed = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await.expect("edgeaictl ignored Ctrl-C").unwrap();
    assert_eq!(code(&out), 130, "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("still indexing (the daemon goes on"), "{text}");
    assert!(text.contains("  slow.md  indexing "), "{text}");
    assert!(stderr(&out).contains("the daemon goes on indexing them"), "{}", stderr(&out));
}

#[tokio::test]
async fn datasets_docs_rm_doc_and_search() {
    let fake = Fake::start().await;
    let sock = fake.socket.to_str().unwrap();

    let out = ctl(&["--socket", sock, "datasets", "docs", "plant-manuals"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ID  ") && text.contains("SEGMENTS"), "{text}");
    assert!(text.contains(&format!("{DOC_PLC}  plc-alarms.md  available  12        321    -")), "{text}");
    assert!(text.contains("scan.pdf       error      0         321    the PDF has no text layer"), "{text}");

    let out = ctl(&["--socket", sock, "datasets", "rm-doc", "plant-manuals", "plc-alarms.md"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(fake.seen().iter().any(|s| s.method == "DELETE" && s.target == format!("/admin/v1/datasets/{MANUALS}/documents/{DOC_PLC}")));
    let out = ctl(&["--socket", sock, "datasets", "rm-doc", "plant-manuals", "plc"], None).await;
    assert_eq!(code(&out), 1);
    assert_eq!(stderr(&out), "edgeaictl: no document is named \"plc\" or has that id\n");

    let out = ctl(&["--socket", sock, "datasets", "search", "plant-manuals", "how do I clear the PLC alarm"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "SCORE  DOCUMENT             EXCERPT");
    assert!(lines[1].starts_with("0.831  plc-alarms.md        ## Alarm E17 To clear the PLC alarm"), "{text}");
    assert!(lines[1].ends_with('…') && lines[1].chars().count() < 140, "one cut line: {text}");
    let retrieve = fake.seen().into_iter().rfind(|s| s.target.ends_with("/retrieve")).unwrap();
    assert_eq!(retrieve.body, json!({"query": "how do I clear the PLC alarm"}), "the dataset's own settings");

    let out = ctl(&["--socket", sock, "--json", "datasets", "search", MANUALS, "q", "--method", "hybrid", "--top-k", "3"], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let printed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(printed["records"].as_array().unwrap().len(), 2);
    let retrieve = fake.seen().into_iter().rfind(|s| s.target.ends_with("/retrieve")).unwrap();
    assert_eq!(retrieve.body["retrieval_model"]["search_method"], "hybrid_search");
    assert_eq!(retrieve.body["retrieval_model"]["top_k"], 3);
}

#[tokio::test]
async fn datasets_help_shows_examples_and_exit_codes() {
    let out = ctl(&["datasets", "ingest", "--help"], None).await;
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    for needle in ["--create", "Ctrl-C", "130", "Exit codes", "69", "txt, md, markdown, html, htm, csv, pdf"] {
        assert!(help.contains(needle), "ingest --help lacks {needle}:\n{help}");
    }
}
