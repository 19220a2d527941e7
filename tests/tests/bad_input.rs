//! Every kind of bad input gets its exact HTTP status and Dify `code`, and
//! leaves the stored data untouched: malformed JSON, missing or mistyped
//! fields, unknown or foreign conversations, wrong/missing/revoked keys,
//! oversized and non-UTF-8 bodies, context overflow, unknown routes and
//! methods, the admin API over TCP or from a non-admin uid, and a burst
//! that overflows the admission queue (429 with Retry-After).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use edgeai_tests::{chat_body, DaemonBuilder, LONG_APP, LONG_QUERY};
use serde_json::json;

const MAX_BODY: usize = 8192;

#[test]
fn bad_requests_get_exact_status_and_code_and_change_nothing() {
    let d = DaemonBuilder::new().set("server.max_body_bytes", MAX_BODY as i64).set("model.context_size", 512).max_tokens(16).start();
    let c = d.client();
    let first = c.chat_blocking("Hello", "alice", None);
    let conv = first["conversation_id"].as_str().unwrap().to_owned();
    let chat = |body: serde_json::Value| c.post_json("/v1/chat-messages", &body);
    let raw_chat = |bytes: &[u8]| c.request("POST", "/v1/chat-messages", &[], Some(bytes));

    // Malformed bodies.
    raw_chat(b"{\"query\": \"hi\", \"user\": ").expect_dify_error(400, "bad_request");
    raw_chat(b"").expect_dify_error(400, "bad_request");
    raw_chat(b"{\"query\": \"caf\xff\xfe\", \"user\": \"alice\", \"inputs\": {}}").expect_dify_error(400, "bad_request");
    let big = format!(r#"{{"query": "{}", "user": "alice", "inputs": {{}}}}"#, "x".repeat(MAX_BODY * 2));
    raw_chat(big.as_bytes()).expect_dify_error(413, "request_entity_too_large");

    // Missing and mistyped fields.
    chat(json!({"query": "hi", "inputs": {}, "response_mode": "blocking"})).expect_dify_error(400, "invalid_param");
    chat(json!({"query": "hi", "inputs": {}, "user": "", "response_mode": "blocking"})).expect_dify_error(400, "invalid_param");
    chat(json!({"inputs": {}, "user": "alice", "response_mode": "blocking", "conversation_id": conv}))
        .expect_dify_error(400, "invalid_param");
    chat(json!({"query": 123, "inputs": {}, "user": "alice", "response_mode": "blocking"})).expect_dify_error(400, "invalid_param");
    chat(json!({"query": "hi", "inputs": {}, "user": [7], "response_mode": "blocking"})).expect_dify_error(400, "invalid_param");
    chat(json!({"query": "hi", "inputs": [], "user": "alice", "response_mode": "blocking"})).expect_dify_error(400, "invalid_param");
    chat(json!({"query": "hi", "inputs": {}, "user": "alice", "response_mode": "fast"})).expect_dify_error(400, "invalid_param");
    chat(json!({"query": "hi", "inputs": {}, "user": "alice", "conversation_id": "not-a-uuid"})).expect_dify_error(400, "invalid_param");

    // Conversations that do not exist, or are someone else's.
    chat(chat_body("hi", "alice", "blocking", Some("3f0e8a52-9a5c-4c1e-8f43-2f3b8d3c9e11"))).expect_dify_error(404, "not_found");
    chat(chat_body("hi", "mallory", "blocking", Some(&conv))).expect_dify_error(404, "not_found");
    chat(chat_body("hi", "mallory", "streaming", Some(&conv))).expect_dify_error(404, "not_found");
    c.get(&format!("/v1/messages?user=mallory&conversation_id={conv}")).expect_dify_error(404, "not_found");

    // A query longer than the whole context.
    let long_query = "word ".repeat(700);
    let e = chat(chat_body(&long_query, "alice", "blocking", Some(&conv))).expect_dify_error(400, "context_length_exceeded");
    assert!(e["message"].as_str().unwrap().contains("512"), "the message names the limit: {e}");
    chat(chat_body(&long_query, "alice", "streaming", None)).expect_dify_error(400, "context_length_exceeded");

    // Keys: missing, malformed, wrong, revoked.
    let anon = c.without_key();
    anon.post_json("/v1/chat-messages", &chat_body("hi", "alice", "blocking", None)).expect_dify_error(401, "unauthorized");
    anon.request("GET", "/v1/parameters", &[("Authorization", &format!("Basic {}", d.key()))], None).expect_dify_error(401, "unauthorized");
    c.with_key("app-thisisnotakey0000000000")
        .post_json("/v1/chat-messages", &chat_body("hi", "alice", "blocking", None))
        .expect_dify_error(401, "unauthorized");
    let (key_id, key) = d.admin().create_key("demo");
    let k = c.with_key(&key);
    k.get("/v1/parameters").expect_json(200);
    d.admin().revoke_key(&key_id);
    k.get("/v1/parameters").expect_dify_error(401, "unauthorized");
    k.post_json("/v1/chat-messages", &chat_body("hi", "alice", "blocking", Some(&conv))).expect_dify_error(401, "unauthorized");

    // Routes and methods.
    c.get("/v1/nope").expect_dify_error(404, "not_found");
    anon.get("/v1/nope").expect_dify_error(404, "not_found");
    c.get("/nope").expect_dify_error(404, "not_found");
    c.get("/v1/chat-messages").expect_dify_error(405, "method_not_allowed");
    c.request("PUT", "/v1/conversations", &[], None).expect_dify_error(405, "method_not_allowed");
    anon.request("DELETE", "/health", &[], None).expect_dify_error(405, "method_not_allowed");
    // The admin API does not exist over TCP, with or without a key.
    anon.get("/admin/v1/status").expect_dify_error(404, "not_found");
    c.get("/admin/v1/keys").expect_dify_error(404, "not_found");
    c.post_json("/admin/v1/keys", &json!({"app": "demo"})).expect_dify_error(404, "not_found");

    // Nothing above stored anything.
    let msgs = c.messages("alice", &conv);
    assert_eq!(msgs.len(), 1, "bad requests added messages: {msgs:#?}");
    assert_eq!(msgs[0]["answer"], first["answer"]);
    assert_eq!(c.conversations("alice").len(), 1);
    assert!(c.conversations("mallory").is_empty());
    let keys = d.admin().get("/admin/v1/keys?app=demo").unwrap();
    assert_eq!(keys["data"].as_array().unwrap().len(), 2, "{keys}");
    // And the daemon still answers normally.
    assert_eq!(c.chat_blocking("Thanks", "alice", Some(&conv))["conversation_id"], conv.as_str());
}

#[test]
fn a_burst_beyond_the_queue_gets_429_with_retry_after() {
    let d = DaemonBuilder::new().set("model.slots", 1).set("model.queue_depth", 1).long_app(1500).start();
    let (_, key) = d.admin().create_key(LONG_APP);
    let c = d.client().with_key(&key);
    const N: usize = 6;
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (c, barrier) = (c.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                c.post_json_streaming("/v1/chat-messages", &chat_body(LONG_QUERY, &format!("burst-{i}"), "streaming", None))
            })
        })
        .collect();
    let answers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let admitted = answers.iter().filter(|a| a.status == 200).count();
    assert!((1..=2).contains(&admitted), "{admitted} of {N} admitted with one slot and a queue of one");
    let mut streams = Vec::new();
    for a in answers {
        if a.status == 200 {
            streams.push(a);
            continue;
        }
        let retry = a.header("retry-after").map(str::to_owned);
        let r = a.finish().unwrap();
        r.expect_dify_error(429, "too_many_requests");
        let secs: u64 = retry.expect("429 without Retry-After").parse().expect("Retry-After in seconds");
        assert!(secs >= 1, "Retry-After {secs}");
    }
    // Rejected requests created no conversations.
    let with_conversation = (0..N).filter(|i| !c.conversations(&format!("burst-{i}")).is_empty()).count();
    assert_eq!(with_conversation, admitted, "conversations exist for rejected requests");
    for s in streams {
        s.close();
    }
    // Once the clients are gone the queue drains and new work is admitted.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = c.post_json_streaming("/v1/chat-messages", &chat_body("Hi", "after-burst", "streaming", None));
        if r.status == 200 {
            r.close();
            break;
        }
        assert_eq!(r.status, 429, "unexpected answer while the burst drains");
        assert!(std::time::Instant::now() < deadline, "the queue stayed full after every client left");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn admin_api_refuses_a_non_admin_uid() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP admin_api_refuses_a_non_admin_uid: needs root to run edgeaictl as uid 65534");
        return;
    }
    let nogroup =
        nix::unistd::Group::from_name("nogroup").ok().flatten().or_else(|| nix::unistd::Group::from_name("nobody").ok().flatten());
    let Some(group) = nogroup else {
        eprintln!("SKIP admin_api_refuses_a_non_admin_uid: no group nogroup/nobody on this machine");
        return;
    };
    let d = DaemonBuilder::new().set("server.socket_group", group.name.as_str()).start();
    // uid 65534 must reach the socket (dir searchable, socket group-writable) and run a copy of edgeaictl.
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let ctl = d.dir().join("edgeaictl");
    std::fs::copy(edgeai_tests::paths::edgeaictl(), &ctl).unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |as_nobody: bool| {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&ctl);
        cmd.arg("--socket").arg(d.socket_path()).arg("status").current_dir("/");
        if as_nobody {
            // std drops the supplementary groups when root sets a uid.
            cmd.uid(65534).gid(group.gid.as_raw());
        }
        cmd.output().unwrap()
    };
    let out = run(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "edgeaictl as uid 65534: {out:?}");
    assert!(stderr.contains("forbidden"), "stderr does not say why: {stderr}");
    let refused = d.wait_log(Duration::from_secs(5), "the refused admin request", |l| {
        l.message() == "request rejected" && l.field_u64("status") == Some(403)
    });
    assert_eq!(refused.field_str("code").as_deref(), Some("forbidden"));
    // The same command as root works: the refusal is about the uid.
    let out = run(false);
    assert!(out.status.success(), "edgeaictl as root: {out:?}");
}

/// A client that sends the head and then trickles (or withholds) its body
/// gets 504 `request_timeout` after `server.request_timeout_secs`, not a
/// connection held forever.
#[test]
fn a_body_that_never_arrives_times_out() {
    use std::io::{Read, Write};
    let d = DaemonBuilder::new().set("server.request_timeout_secs", 1).wait_for_model(false).start();
    let mut s = std::net::TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /v1/chat-messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"qu",
        d.key()
    );
    let started = std::time::Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&buf).contains("\"status\":504") {
        let n = s.read(&mut chunk).expect("the daemon answered before the read timeout");
        assert!(n > 0, "connection closed without an answer: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_millis(900), "answered before the timeout: {waited:?}");
}

/// Connection-level limits: a head over `server.max_header_bytes` gets 431;
/// a connection over `server.max_connections` gets 503 with Retry-After and is
/// closed; an idle connection is closed after `server.idle_timeout_secs`.
#[test]
fn connection_limits_hold() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;
    let d = DaemonBuilder::new()
        .set("server.max_header_bytes", 4096)
        .set("server.max_connections", 2)
        .set("server.idle_timeout_secs", 1)
        .wait_for_model(false)
        .start();
    let read_all = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };

    let mut big = TcpStream::connect(d.addr()).unwrap();
    big.write_all(format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(8000)).as_bytes()).unwrap();
    let answer = read_all(&mut big);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    drop(big);
    // The daemon frees the 431 connection's place when its task ends, a
    // moment after the client saw the close.
    std::thread::sleep(Duration::from_millis(300));

    // Two idle connections hold both places; the third is refused at once.
    let _one = TcpStream::connect(d.addr()).unwrap();
    let mut two = TcpStream::connect(d.addr()).unwrap();
    // The second did get a place: it is served, and stays open (keep-alive).
    two.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    two.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 64];
    let n = two.read(&mut head).unwrap();
    let served = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(served.starts_with("HTTP/1.1 200"), "the second of two allowed connections was not served: {served}");
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(d.addr()).unwrap();
    let answer = read_all(&mut third);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"code\":\"service_unavailable\""), "{answer}");

    // The idle ones are closed by the daemon after the idle timeout (read
    // returns end of file well before the test's own 10 s read timeout) ...
    let mut idle = _one;
    let started = std::time::Instant::now();
    let rest = read_all(&mut idle);
    assert!(started.elapsed() < Duration::from_secs(8), "an idle connection stayed open: {rest:?}");
    drop(two);
    std::thread::sleep(Duration::from_millis(300));
    // ... which frees their places.
    let mut again = TcpStream::connect(d.addr()).unwrap();
    again.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let answer = read_all(&mut again);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
