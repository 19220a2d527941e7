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
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    log.lock().unwrap().push(Seen { method: method.clone(), target: target.clone(), host, body: body.clone() });

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
