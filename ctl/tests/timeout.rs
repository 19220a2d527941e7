//! `edgeaictl --timeout` against a stuck daemon (issue 11, fault 11): real
//! `edgeaictl` binaries talk to fake daemons on real unix sockets that accept
//! and never answer, or answer a stream and then fall silent. Without the
//! time limits every case here hangs until the test's own bound fails it.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

/// What a fake daemon does on every connection, after accepting it.
#[derive(Clone)]
enum Script {
    /// Reads nothing and writes nothing, holding the connection open.
    Silent,
    /// Writes each chunk after its delay, then holds the connection open
    /// (`hang`) or closes it.
    Chunks { chunks: Vec<(u64, String)>, hang: bool },
}

/// A fake daemon on a socket in its own temporary directory; it lives as
/// long as the test's runtime.
struct Fake {
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fake {
    fn start(script: Script) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("edgeai.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let script = script.clone();
                tokio::spawn(async move {
                    let hang = match script {
                        Script::Silent => true,
                        Script::Chunks { chunks, hang } => {
                            for (delay_ms, text) in chunks {
                                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                                if stream.write_all(text.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            hang
                        }
                    };
                    if hang {
                        // Keep the connection open, answering nothing more.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    // End the body, then read the request away so closing
                    // does not reset the connection under the answer.
                    let _ = stream.shutdown().await;
                    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
                });
            }
        });
        Fake { socket, _dir: dir }
    }

    fn sock(&self) -> &str {
        self.socket.to_str().unwrap()
    }
}

/// An SSE response head; the body runs until the connection closes.
const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

fn message(answer: &str) -> String {
    format!(
        "event: message\ndata: {{\"event\":\"message\",\"task_id\":\"t\",\"message_id\":\"m\",\"conversation_id\":\"c\",\"answer\":\"{answer}\"}}\n\n"
    )
}

fn message_end() -> String {
    "event: message_end\ndata: {\"event\":\"message_end\",\"task_id\":\"t\",\"message_id\":\"m\",\"conversation_id\":\"c\",\"metadata\":{}}\n\n"
        .to_owned()
}

/// Runs edgeaictl; fails the test if it has not exited after 60 s (a hang).
async fn ctl(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeaictl"))
        .args(args)
        .env_remove("EDGEAI_SOCKET")
        .env_remove("EDGEAI_TIMEOUT")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("edgeaictl {args:?} hung: no time limit stopped it"))
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[tokio::test]
async fn daemon_that_accepts_and_never_answers_exits_69() {
    let fake = Fake::start(Script::Silent);
    for args in [vec!["status"], vec!["keys", "list"], vec!["chat", "demo", "--query", "hi"]] {
        let mut all = vec!["--socket", fake.sock(), "--timeout", "1s"];
        all.extend(&args);
        let out = ctl(&all).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(69), "{args:?}: {err}");
        assert!(err.contains(&format!("edgeaid at {} did not answer", fake.sock())) && err.contains("within 1s"), "{args:?}: {err}");
        assert!(err.contains("--timeout"), "{args:?}: {err}");
        assert_eq!(stdout(&out), "", "{args:?}");
    }
}

#[tokio::test]
async fn timeout_can_come_from_the_environment() {
    let fake = Fake::start(Script::Silent);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgeaictl"))
        .args(["--socket", fake.sock(), "status"])
        .env("EDGEAI_TIMEOUT", "500ms")
        .current_dir("/")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("edgeaictl hung").unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("within 500ms"), "{}", stderr(&out));
}

#[tokio::test]
async fn stream_that_falls_silent_exits_69_after_the_partial_answer() {
    let fake = Fake::start(Script::Chunks { chunks: vec![(0, SSE_HEAD.to_owned()), (0, message("half an"))], hang: true });
    let out = ctl(&["--socket", fake.sock(), "--timeout", "1s", "chat", "demo", "--query", "hi"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert_eq!(stdout(&out), "half an\n");
    assert!(err.contains("did not answer POST /admin/v1/apps/demo/chat-messages within 1s"), "{err}");
}

#[tokio::test]
async fn a_stream_longer_than_the_timeout_is_not_cut_while_events_keep_coming() {
    // 10 answer pieces 250 ms apart: 2.5 s in all against a 1 s limit per gap.
    let mut chunks = vec![(0, SSE_HEAD.to_owned())];
    chunks.extend((0..10).map(|i| (250, message(&format!("w{i} ")))));
    chunks.push((0, message_end()));
    let fake = Fake::start(Script::Chunks { chunks, hang: false });
    let out = ctl(&["--socket", fake.sock(), "--timeout", "1s", "chat", "demo", "--query", "hi"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 \n");
}

#[tokio::test]
async fn pings_keep_a_waiting_stream_alive() {
    // A request waiting for a slot gets only `event: ping` for 2.5 s, then its answer.
    let mut chunks = vec![(0, SSE_HEAD.to_owned())];
    chunks.extend((0..10).map(|_| (250, "event: ping\n\n".to_owned())));
    chunks.push((0, message("late")));
    chunks.push((0, message_end()));
    let fake = Fake::start(Script::Chunks { chunks, hang: false });
    let out = ctl(&["--socket", fake.sock(), "--timeout", "1s", "chat", "demo", "--query", "hi"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "late\n");
}
