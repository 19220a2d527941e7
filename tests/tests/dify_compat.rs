//! Dify's service API as its clients use it, checked against what Dify's own
//! controllers answer (`api/controllers/service_api/wraps.py`,
//! `app/completion.py`, `app/conversation.py`, `app/message.py`,
//! `libs/external_api.py`, the response converters): `user` as any JSON
//! scalar and optional on the GET lists, the Authorization scheme in any
//! case with `WWW-Authenticate` on 401, `files` ignored on an app without
//! upload, an app that is gone is 403, unknown paging ids, and the fields
//! of the streamed events and of `metadata.usage`.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use edgeai_tests::{chat_body, dify, DaemonBuilder};
use serde_json::json;

const UNKNOWN: &str = "3f0e8a52-9a5c-4c1e-8f43-2f3b8d3c9e11";

#[test]
fn user_is_any_scalar_and_optional_on_the_lists() {
    let d = DaemonBuilder::new().max_tokens(4).start();
    let c = d.client();
    let chat = |user: serde_json::Value| c.post_json("/v1/chat-messages", &json!({"query": "Hi", "inputs": {}, "user": user}));

    // Numbers and true are stringified as Dify's str() does.
    let a = chat(json!(42)).expect_json(200);
    let conv = a["conversation_id"].as_str().unwrap().to_owned();
    assert_eq!(c.conversations("42").len(), 1, "a numeric user is the user \"42\"");
    assert_eq!(c.messages("42", &conv).len(), 1);
    chat(json!(true)).expect_json(200);
    assert_eq!(c.conversations("True").len(), 1);
    // Absent, null and the other falsy values are missing: Dify's message.
    for missing in [json!(null), json!(""), json!(0), json!(false)] {
        let e = chat(missing.clone()).expect_dify_error(400, "invalid_param");
        assert_eq!(e["message"], "Arg user must be provided.", "user {missing}");
    }
    chat(json!({"id": 1})).expect_dify_error(400, "invalid_param");
    // Stop and feedback take a numeric user too.
    let mid = a["message_id"].as_str().unwrap();
    c.post_json(&format!("/v1/messages/{mid}/feedbacks"), &json!({"rating": "like", "user": 42})).expect_json(200);
    assert_eq!(c.messages("42", &conv)[0]["feedback"]["rating"], "like");

    // Without `user` the GET lists are Dify's "DEFAULT-USER"'s.
    let e = c.get("/v1/conversations").expect_json(200);
    assert_eq!(e["data"], json!([]), "{e}");
    let mine = chat(json!("DEFAULT-USER")).expect_json(200);
    let mine_conv = mine["conversation_id"].as_str().unwrap();
    let list = c.get("/v1/conversations").expect_json(200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["data"][0]["id"], mine_conv);
    let msgs = c.get(&format!("/v1/messages?conversation_id={mine_conv}")).expect_json(200);
    assert_eq!(msgs["data"][0]["id"], mine["message_id"]);
    // Another user's conversation stays invisible without a user.
    c.get(&format!("/v1/messages?conversation_id={conv}")).expect_dify_error(404, "not_found");
}

#[test]
fn unknown_paging_ids_get_difys_messages() {
    let d = DaemonBuilder::new().max_tokens(4).start();
    let c = d.client();
    let a = c.chat_blocking("Hi", "pat", None);
    let conv = a["conversation_id"].as_str().unwrap();
    let e = c.get(&format!("/v1/conversations?user=pat&last_id={UNKNOWN}")).expect_dify_error(404, "not_found");
    assert_eq!(e["message"], "Last Conversation Not Exists.");
    let e = c.get(&format!("/v1/messages?user=pat&conversation_id={conv}&first_id={UNKNOWN}")).expect_dify_error(404, "not_found");
    assert_eq!(e["message"], "First Message Not Exists.");
    let e = c.get(&format!("/v1/messages?user=pat&conversation_id={UNKNOWN}")).expect_dify_error(404, "not_found");
    assert_eq!(e["message"], "Conversation Not Exists.");
    // Known ids still page.
    let last = c.conversations("pat")[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(c.get(&format!("/v1/conversations?user=pat&last_id={last}")).expect_json(200)["data"], json!([]));
}

#[test]
fn authorization_scheme_in_any_case_and_www_authenticate_on_401() {
    let d = DaemonBuilder::new().wait_for_model(false).start();
    let anon = d.client().without_key();
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let r = anon.request("GET", "/v1/parameters", &[("Authorization", &format!("{scheme}  {}", d.key()))], None);
        r.expect_json(200);
    }
    let r = anon.get("/v1/parameters");
    let e = r.expect_dify_error(401, "unauthorized");
    assert_eq!(e["message"], "Authorization header must be provided and start with 'Bearer'");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"api\""));
    let r = anon.request("GET", "/v1/parameters", &[("Authorization", &format!("Basic {}", d.key()))], None);
    let e = r.expect_dify_error(401, "unauthorized");
    assert_eq!(e["message"], "Authorization scheme must be 'Bearer'");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"api\""));
    let r = anon.request("GET", "/v1/parameters", &[("Authorization", "bearer app-nosuchkey")], None);
    r.expect_dify_error(401, "unauthorized");
    assert!(r.header("www-authenticate").is_some());
}

#[test]
fn files_on_an_app_without_upload_are_ignored() {
    let d = DaemonBuilder::new().max_tokens(4).start();
    let c = d.client();
    let files = json!([{"type": "image", "transfer_method": "remote_url", "url": "http://example.invalid/a.png"}]);
    let mut body = chat_body("Hi", "fay", "blocking", None);
    body["files"] = files.clone();
    let plain = c.chat_blocking("Hi", "fay", None);
    let with = c.post_json("/v1/chat-messages", &body).expect_json(200);
    assert_eq!(with["answer"], plain["answer"], "the files changed the answer");
    // Still type-checked as Dify's list of objects.
    body["files"] = json!("a.png");
    c.post_json("/v1/chat-messages", &body).expect_dify_error(400, "invalid_param");
}

#[test]
fn events_and_usage_carry_difys_fields() {
    let d = DaemonBuilder::new().max_tokens(8).start();
    let c = d.client();
    let s = dify::collect(c.post_json_streaming("/v1/chat-messages", &chat_body("Hi", "gil", "streaming", None)).into_sse());
    let msgs = s.named("message");
    assert!(!msgs.is_empty());
    for m in &msgs {
        assert!(m.as_object().unwrap().contains_key("from_variable_selector"), "{m}");
        assert_eq!(m["from_variable_selector"], json!(null));
    }
    let usage = &s.end.as_ref().unwrap()["metadata"]["usage"];
    let ttft = usage["time_to_first_token"].as_f64().unwrap_or_else(|| panic!("no time_to_first_token: {usage}"));
    let gen = usage["time_to_generate"].as_f64().unwrap_or_else(|| panic!("no time_to_generate: {usage}"));
    let latency = usage["latency"].as_f64().unwrap();
    assert!(ttft > 0.0 && gen >= 0.0 && ttft + gen <= latency + 1e-6, "{usage}");

    let b = c.chat_blocking("Hi", "gil", None);
    let usage = &b["metadata"]["usage"];
    assert!(usage["time_to_first_token"].as_f64().is_some() && usage["time_to_generate"].as_f64().is_some(), "{usage}");
}

/// An app whose stored definition no longer loads (for example written by
/// a newer release) is gone: its keys get Dify's 403, not a 400.
#[test]
fn an_app_that_is_gone_is_403() {
    let mut d = DaemonBuilder::new().wait_for_model(false).start();
    let app = d.dir().join("gone.json");
    std::fs::write(&app, json!({"id": "gone", "name": "Gone", "mode": "chat", "pre_prompt": "x"}).to_string()).unwrap();
    let out = d.ctl(&["apps", "import", app.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, key) = d.admin().create_key("gone");
    d.client().with_key(&key).get("/v1/info").expect_json(200);

    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let db = rusqlite::Connection::open(d.dir().join("edgeai.db")).unwrap();
    let n = db.execute("UPDATE app_versions SET definition = '{\"id\": \"gone\"}' WHERE app_id = 'gone'", []).unwrap();
    assert!(n > 0, "no stored version of the app");
    drop(db);
    d.start_again();
    d.wait_log_message("stored app definition does not parse; app unavailable", Duration::from_secs(10));

    let k = d.client().with_key(&key);
    let e = k.get("/v1/info").expect_dify_error(403, "forbidden");
    assert_eq!(e["message"], "The app no longer exists.");
    k.post_json("/v1/chat-messages", &chat_body("Hi", "u", "blocking", None)).expect_dify_error(403, "forbidden");
}

/// An app with `enable_api = false` (Dify's flag): its keys get Dify's 403,
/// on every route, and nothing is stored; the operator's admin route still
/// reaches it.
#[test]
fn an_app_whose_api_is_disabled_is_403() {
    let mut d = DaemonBuilder::new().wait_for_model(false).app_set("demo", "enable_api", false).start();
    let c = d.client();
    let e = c.get("/v1/parameters").expect_dify_error(403, "forbidden");
    assert_eq!(e["message"], "The app's API service has been disabled.");
    c.post_json("/v1/chat-messages", &chat_body("Hi", "u", "blocking", None)).expect_dify_error(403, "forbidden");
    let r = c.post_json("/v1/chat/completions", &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 403, "{}", r.text());
    c.get("/v1/conversations?user=u").expect_dify_error(403, "forbidden");
    // The other app of the same daemon is served.
    let (_, key) = d.admin().create_key("summarise");
    d.client().with_key(&key).get("/v1/parameters").expect_json(200);
    // Nothing was stored for the refused requests.
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let db = rusqlite::Connection::open(d.dir().join("edgeai.db")).unwrap();
    let n: i64 = db.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "a refused request stored a message");
}

/// Over `server.max_connections`, a client that sends a request with a
/// body can send all of it and then read the whole 503: the daemon reads
/// the request head and lingers instead of closing on unread input, which
/// resets the connection (an HTTP client then fails while sending and never
/// sees the answer; on other stacks the reset also destroys the answer).
#[test]
fn a_refused_connection_reads_its_503() {
    let d = DaemonBuilder::new().set("server.max_connections", 1).wait_for_model(false).start();
    let _holder = TcpStream::connect(d.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let body = "x".repeat(32 << 10);
    for round in 0..5 {
        let mut s = TcpStream::connect(d.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The head first, then (after the daemon has had time to answer)
        // a body it never asked for.
        s.write_all(format!("POST /v1/chat-messages HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let sent = s.write_all(body.as_bytes());
        assert!(sent.is_ok(), "round {round}: the connection was reset while the request was sent: {sent:?}");
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(read.is_ok(), "round {round}: reading the refusal failed ({read:?}) after {text:?}");
        assert!(text.starts_with("HTTP/1.1 503"), "round {round}: {text:?}");
        assert!(
            text.ends_with(r#"{"code":"service_unavailable","message":"too many open connections; retry later","status":503}"#),
            "{text}"
        );
    }
}
