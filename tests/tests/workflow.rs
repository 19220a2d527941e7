//! Dify DSL apps end to end against the real daemon: import with
//! `edgeaictl apps import FILE.yml` (every problem of a bad DSL at once,
//! nothing stored), versions, activate and export; workflow runs blocking
//! and streaming with Dify's events in Dify's order, on the real local
//! model; a chatflow through `/chat-messages` with conversation variables;
//! run records and `/workflows/logs`; stop; http-request nodes against a
//! real local server and the allowlist; the upstream model runtime against
//! a real OpenAI-speaking server (429 retried, failures falling back to the
//! local model or failing the node). Fixtures: tests/fixtures/dsl/.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::PathBuf;
use std::time::Duration;

use edgeai_tests::peer::{Peer, Reply};
use edgeai_tests::{is_uuid, paths, Client, Daemon, DaemonBuilder};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    paths::repo_root().join("tests/fixtures/dsl").join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `edgeaictl apps import FIXTURE ARGS…`; panics with its output unless it exits `code`.
fn import(d: &Daemon, name: &str, args: &[&str], code: i32) -> (String, String) {
    let path = fixture(name);
    let mut all = vec!["apps", "import", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = d.ctl(&all);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "edgeaictl {all:?}\nstdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

/// Imports a fixture as `id` and returns a client with a key of it.
fn app(d: &Daemon, name: &str, id: &str) -> Client {
    import(d, name, &["--id", id], 0);
    let (_, key) = d.admin().create_key(id);
    d.client().with_key(&key)
}

fn run_body(inputs: Value, mode: &str) -> Value {
    json!({"inputs": inputs, "response_mode": mode, "user": "wf-user"})
}

/// Every event of a streaming response, in order (pings left out).
fn stream(c: &Client, path: &str, body: &Value) -> Vec<Value> {
    let mut sse = c.post_json_streaming(path, body).into_sse();
    assert_eq!(sse.status(), 200, "{path}");
    let mut out = Vec::new();
    while let Some(ev) = sse.next_event().unwrap() {
        if let Some(v) = ev.json() {
            out.push(v);
        }
    }
    out
}

fn names(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["event"].as_str().unwrap_or("?").to_owned()).collect()
}

fn app_ids(d: &Daemon) -> Vec<String> {
    let apps = d.admin().get("/admin/v1/apps").unwrap();
    let mut ids: Vec<String> = apps["data"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[test]
fn a_workflow_runs_blocking_and_streaming_on_the_local_model_and_is_recorded() {
    let d = DaemonBuilder::new().start();
    let (stdout, _) = import(&d, "workflow-llm.yml", &["--id", "ask"], 0);
    assert!(stdout.starts_with("imported ask"), "{stdout}");
    assert!(stdout.contains("version 1"), "{stdout}");
    // The cloud model the DSL names is mapped to the local model by default, and the import says so.
    assert!(stdout.contains("gpt-4o-mini -> local:"), "{stdout}");
    assert!(stdout.contains("(default)"), "{stdout}");
    let (_, key) = d.admin().create_key("ask");
    let c = d.client().with_key(&key);

    let p = c.get("/v1/parameters").expect_json(200);
    assert_eq!(p["user_input_form"][0]["paragraph"]["variable"], "question", "{p}");
    assert_eq!(c.get("/v1/info").expect_json(200)["mode"], "workflow");

    // Blocking.
    let b = c.post_json("/v1/workflows/run", &run_body(json!({"question": "What is a PLC?"}), "blocking")).expect_json(200);
    let run_id = b["workflow_run_id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&run_id) && is_uuid(b["task_id"].as_str().unwrap()), "{b}");
    assert_eq!(b["data"]["status"], "succeeded", "{b}");
    assert_eq!(b["data"]["id"], run_id.as_str());
    let answer = b["data"]["outputs"]["answer"].as_str().unwrap();
    assert!(!answer.trim().is_empty(), "{b}");
    assert_eq!(b["data"]["total_steps"], 3, "start, llm, end: {b}");
    assert!(b["data"]["total_tokens"].as_u64().unwrap() > 0, "{b}");

    // The run record.
    let r = c.get(&format!("/v1/workflows/run/{run_id}")).expect_json(200);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["inputs"]["question"], "What is a PLC?");
    assert_eq!(r["outputs"]["answer"], answer);
    assert_eq!(r["total_steps"], 3);

    // Streaming: Dify's events in Dify's order.
    let ev = stream(&c, "/v1/workflows/run", &run_body(json!({"question": "Name a fieldbus."}), "streaming"));
    let n = names(&ev);
    assert_eq!(n.first().map(String::as_str), Some("workflow_started"), "{n:?}");
    assert_eq!(n.last().map(String::as_str), Some("workflow_finished"), "{n:?}");
    let nodes: Vec<(String, String)> = ev
        .iter()
        .filter(|e| e["event"] == "node_started" || e["event"] == "node_finished")
        .map(|e| (e["event"].as_str().unwrap().to_owned(), e["data"]["node_type"].as_str().unwrap().to_owned()))
        .collect();
    let expect: Vec<(String, String)> = [
        ("node_started", "start"),
        ("node_finished", "start"),
        ("node_started", "llm"),
        ("node_finished", "llm"),
        ("node_started", "end"),
        ("node_finished", "end"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(nodes, expect);
    let run_id2 = ev[0]["workflow_run_id"].as_str().unwrap().to_owned();
    for e in &ev {
        assert_eq!(e["workflow_run_id"], run_id2.as_str(), "{e}");
        assert!(e["task_id"].as_str().is_some_and(is_uuid), "{e}");
    }
    assert_eq!(ev[0]["data"]["inputs"]["question"], "Name a fieldbus.");
    let llm_done = ev.iter().find(|e| e["event"] == "node_finished" && e["data"]["node_type"] == "llm").unwrap();
    for k in [
        "id",
        "node_id",
        "title",
        "index",
        "predecessor_node_id",
        "inputs",
        "process_data",
        "outputs",
        "status",
        "elapsed_time",
        "execution_metadata",
        "created_at",
        "finished_at",
    ] {
        assert!(llm_done["data"].get(k).is_some(), "node_finished lacks {k}: {llm_done}");
    }
    assert_eq!(llm_done["data"]["status"], "succeeded");
    assert_eq!(llm_done["data"]["predecessor_node_id"], "1732000000000");
    let streamed: String =
        ev.iter().filter(|e| e["event"] == "text_chunk").map(|e| e["data"]["text"].as_str().unwrap().to_owned()).collect();
    let fin = ev.last().unwrap();
    assert_eq!(fin["data"]["status"], "succeeded", "{fin}");
    assert!(!fin["data"]["outputs"]["answer"].as_str().unwrap().is_empty());
    if !streamed.is_empty() {
        assert_eq!(streamed, fin["data"]["outputs"]["answer"].as_str().unwrap(), "text chunks add up to the output");
    }

    // Logs: both runs, newest first, with Dify's filters and paging.
    let logs = c.get("/v1/workflows/logs").expect_json(200);
    assert_eq!(logs["total"], 2, "{logs}");
    assert_eq!(logs["data"][0]["workflow_run"]["id"], run_id2.as_str());
    assert_eq!(logs["data"][1]["workflow_run"]["id"], run_id.as_str());
    assert_eq!(c.get("/v1/workflows/logs?status=failed").expect_json(200)["total"], 0);
    let page = c.get("/v1/workflows/logs?limit=1&page=2").expect_json(200);
    assert_eq!((page["data"].as_array().unwrap().len(), page["has_more"].clone()), (1, json!(false)), "{page}");
    assert_eq!(c.get("/v1/workflows/logs?keyword=fieldbus").expect_json(200)["total"], 1);
}

#[test]
fn bad_requests_to_workflow_routes_get_difys_errors_and_store_nothing() {
    let d = DaemonBuilder::new().start();
    let c = app(&d, "workflow-llm.yml", "ask");
    let chat = d.client(); // the demo chat app's key
    chat.post_json("/v1/workflows/run", &run_body(json!({}), "blocking")).expect_dify_error(400, "not_workflow_app");
    c.post_json("/v1/chat-messages", &json!({"query": "hi", "inputs": {}, "user": "u"})).expect_dify_error(400, "not_chat_app");
    c.post_json("/v1/completion-messages", &json!({"inputs": {}, "user": "u"})).expect_dify_error(400, "app_unavailable");
    let e = c.post_json("/v1/workflows/run", &run_body(json!({}), "blocking")).expect_dify_error(400, "invalid_param");
    assert_eq!(e["message"], "question is required in input form", "{e}");
    let long = "x".repeat(1001);
    let e = c.post_json("/v1/workflows/run", &run_body(json!({"question": long}), "blocking")).expect_dify_error(400, "invalid_param");
    assert!(e["message"].as_str().unwrap().contains("must be less than 1000 characters"), "{e}");
    c.post_json("/v1/workflows/run", &json!({"inputs": {"question": "q"}, "response_mode": "blocking"}))
        .expect_dify_error(400, "invalid_param");
    c.post_json("/v1/workflows/run", &run_body(json!({"question": "q"}), "sometimes")).expect_dify_error(400, "invalid_param");
    c.get("/v1/workflows/run/5b2d8c1e-1111-4c1e-8f43-2f3b8d3c9e11").expect_dify_error(404, "not_found");
    c.post_json("/v1/workflows/5b2d8c1e-1111-4c1e-8f43-2f3b8d3c9e11/run", &run_body(json!({"question": "q"}), "blocking"))
        .expect_dify_error(404, "not_found");
    c.get("/v1/workflows/logs?status=weird").expect_dify_error(400, "invalid_param");
    c.get("/v1/workflows/logs?limit=0").expect_dify_error(400, "invalid_param");
    c.get("/v1/workflows/logs?created_at__after=yesterday").expect_dify_error(400, "invalid_param");
    // None of that started a run.
    assert_eq!(c.get("/v1/workflows/logs").expect_json(200)["total"], 0);
}

#[test]
fn a_bad_dsl_is_refused_with_every_problem_and_nothing_is_stored() {
    let d = DaemonBuilder::new().start();
    let before = app_ids(&d);
    for (name, needles) in [
        ("cycle.yml", vec!["cycle"]),
        ("dangling-edge.yml", vec!["dangling"]),
        ("bad-selector.yml", vec!["node"]),
        ("tool-node.yml", vec!["tool", "marketplace"]),
        ("knowledge.yml", vec!["dataset 6f1c0a3e-0000-4000-8000-00000000aaaa is not on this gateway", "--dataset"]),
        ("agent-chat.yml", vec!["agent"]),
    ] {
        let (_, stderr) = import(&d, name, &[], 1);
        let lower = stderr.to_lowercase();
        for n in needles {
            assert!(lower.contains(n), "{name}: {n:?} not in {stderr}");
        }
        assert!(stderr.contains("invalid_param"), "{name}: {stderr}");
    }
    // Not YAML, a newer DSL version, a JSON file given --name.
    let dir = d.dir().to_owned();
    let broken = dir.join("broken.yml");
    std::fs::write(&broken, "app: [unclosed\nkind: app\n").unwrap();
    let out = d.ctl(&["apps", "import", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("line"), "a YAML error names its line: {}", text(&out.stderr));
    let newer = dir.join("newer.yml");
    let src = std::fs::read_to_string(fixture("workflow-llm.yml")).unwrap();
    std::fs::write(&newer, src.replace("version: 0.3.1", "version: 9.0.0")).unwrap();
    let out = d.ctl(&["apps", "import", newer.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("9.0.0"), "{}", text(&out.stderr));
    let json_file = paths::repo_root().join("configs/demo-app.json");
    let out = d.ctl(&["apps", "import", json_file.to_str().unwrap(), "--name", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // A graph over the node cap (YAML is a superset of JSON, so JSON text will do).
    let huge = dir.join("huge.yml");
    std::fs::write(&huge, huge_dsl(1001).to_string()).unwrap();
    let out = d.ctl(&["apps", "import", huge.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("1000"), "{}", text(&out.stderr));
    assert_eq!(app_ids(&d), before, "a refused import stores nothing");
}

/// A workflow DSL of a start node, `n` template nodes in a chain, and an end node.
fn huge_dsl(n: usize) -> Value {
    let node = |id: &str, data: Value| json!({"id": id, "type": "custom", "data": data});
    let edge = |a: &str, b: &str| json!({"id": format!("{a}-{b}"), "source": a, "sourceHandle": "source", "target": b, "targetHandle": "target", "type": "custom"});
    let mut nodes = vec![node("start", json!({"type": "start", "title": "Start", "variables": []}))];
    let mut edges = Vec::new();
    let mut prev = "start".to_owned();
    for i in 0..n {
        let id = format!("t{i}");
        nodes.push(node(&id, json!({"type": "template-transform", "title": id, "template": "x", "variables": []})));
        edges.push(edge(&prev, &id));
        prev = id;
    }
    nodes.push(node("end", json!({"type": "end", "title": "End", "outputs": []})));
    edges.push(edge(&prev, "end"));
    json!({"app": {"name": "Huge", "mode": "workflow"}, "kind": "app", "version": "0.3.1",
           "workflow": {"graph": {"nodes": nodes, "edges": edges}, "features": {}, "environment_variables": [], "conversation_variables": []}})
}

#[test]
fn versions_activate_and_export_round_trip() {
    let d = DaemonBuilder::new().start();
    let c = app(&d, "workflow-llm.yml", "ask");
    let (stdout, _) = import(&d, "workflow-llm.yml", &["--id", "ask"], 0);
    assert!(stdout.starts_with("unchanged ask"), "the same DSL again stores nothing: {stdout}");
    let (stdout, _) = import(&d, "workflow-llm.yml", &["--id", "ask", "--name", "Ask v2"], 0);
    assert!(stdout.contains("version 2"), "{stdout}");
    let v = d.admin().get("/admin/v1/apps/ask/versions").unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{v}");
    assert_eq!((data[0]["version"].clone(), data[0]["active"].clone()), (json!(2), json!(true)));
    let wf_v1 = data[1]["workflow_id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&wf_v1));
    let out = d.ctl(&["apps", "versions", "ask"]);
    assert!(text(&out.stdout).contains(&wf_v1), "{}", text(&out.stdout));

    // A published version by its workflow id.
    let b = c.post_json(&format!("/v1/workflows/{wf_v1}/run"), &run_body(json!({"question": "hi"}), "blocking")).expect_json(200);
    assert_eq!(b["data"]["workflow_id"], wf_v1.as_str(), "{b}");

    // Instant rollback, then export and import back: the same graph.
    let out = d.ctl(&["apps", "activate", "ask", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(d.client().with_key(&d.admin().create_key("ask").1).get("/v1/info").expect_json(200)["name"], "workflow-llm");
    let exported = d.dir().join("ask-v1.yml");
    let out = d.ctl(&["apps", "export", "ask", "1", "-o", exported.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = d.ctl(&["apps", "import", exported.to_str().unwrap(), "--id", "ask"]);
    assert!(text(&out.stdout).starts_with("unchanged ask"), "export then import is the identical app: {}", text(&out.stdout));
    let out = d.ctl(&["apps", "activate", "ask", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not_found"), "{}", text(&out.stderr));
    let out = d.ctl(&["apps", "export", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_chatflow_answers_through_chat_messages_and_keeps_its_conversation_variables() {
    let d = DaemonBuilder::new().start();
    let c = app(&d, "chatflow.yml", "friendly");
    let ev = stream(&c, "/v1/chat-messages", &json!({"query": "Hello there", "inputs": {}, "user": "ann", "response_mode": "streaming"}));
    let n = names(&ev);
    assert_eq!(n.first().map(String::as_str), Some("workflow_started"), "{n:?}");
    assert_eq!(n.last().map(String::as_str), Some("message_end"), "message_end comes last: {n:?}");
    assert_eq!(n[n.len() - 2], "workflow_finished", "{n:?}");
    assert!(n.iter().any(|e| e == "message"), "{n:?}");
    let conv = ev[0]["conversation_id"].as_str().unwrap().to_owned();
    let msg = ev[0]["message_id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&conv) && is_uuid(&msg));
    let answer: String = ev.iter().filter(|e| e["event"] == "message").map(|e| e["answer"].as_str().unwrap().to_owned()).collect();
    assert!(!answer.trim().is_empty());

    // The assigner wrote the conversation variables.
    let vars = c.get(&format!("/v1/conversations/{conv}/variables?user=ann")).expect_json(200);
    let get = |vars: &Value, name: &str| vars["data"].as_array().unwrap().iter().find(|v| v["name"] == name).cloned().unwrap();
    assert_eq!(get(&vars, "last_question")["value"], "Hello there", "{vars}");
    assert_eq!(get(&vars, "turns")["value"], 1, "{vars}");
    // A second turn in the same conversation; blocking.
    let b = c
        .post_json(
            "/v1/chat-messages",
            &json!({"query": "And again", "inputs": {}, "user": "ann", "conversation_id": conv, "response_mode": "blocking"}),
        )
        .expect_json(200);
    assert_eq!(b["conversation_id"], conv.as_str());
    assert_eq!(b["mode"], "advanced-chat");
    let vars = c.get(&format!("/v1/conversations/{conv}/variables?user=ann")).expect_json(200);
    assert_eq!(get(&vars, "turns")["value"], 2, "{vars}");
    assert_eq!(c.get(&format!("/v1/messages?conversation_id={conv}&user=ann")).expect_json(200)["data"].as_array().unwrap().len(), 2);

    // PUT a variable; a wrong type and another user's conversation are refused.
    let id = get(&vars, "user_name")["id"].as_str().unwrap().to_owned();
    let v = c
        .request(
            "PUT",
            &format!("/v1/conversations/{conv}/variables/{id}"),
            &[("Content-Type", "application/json")],
            Some(br#"{"value": "Ann", "user": "ann"}"#),
        )
        .expect_json(200);
    assert_eq!(v["value"], "Ann");
    c.request(
        "PUT",
        &format!("/v1/conversations/{conv}/variables/{id}"),
        &[("Content-Type", "application/json")],
        Some(br#"{"value": 5, "user": "ann"}"#),
    )
    .expect_dify_error(400, "invalid_param");
    c.get(&format!("/v1/conversations/{conv}/variables?user=bob")).expect_dify_error(404, "not_found");
    assert_eq!(get(&c.get(&format!("/v1/conversations/{conv}/variables?user=ann")).expect_json(200), "user_name")["value"], "Ann");
}

#[test]
fn http_request_nodes_reach_allowlisted_hosts_only() {
    let peer = Peer::start(Reply::Json { code: 200, body: json!({"ok": true}) });
    let port = peer.addr().port();
    let d = DaemonBuilder::new().set("workflow.http_allow", vec!["127.0.0.1/32"]).start();
    let c = app(&d, "workflow-http.yml", "caller");
    let b =
        c.post_json("/v1/workflows/run", &run_body(json!({"port": port, "q": "pump3", "token": "s3cret"}), "blocking")).expect_json(200);
    assert_eq!(b["data"]["status"], "succeeded", "{b}");
    assert_eq!(b["data"]["outputs"]["status"], 200, "{b}");
    assert!(b["data"]["outputs"]["body"].as_str().unwrap().contains("true"), "{b}");
    let got = peer.received();
    let r = got.last().unwrap();
    assert_eq!(r.method, "POST");
    assert!(r.path.starts_with("/echo/pump3"), "{}", r.path);
    assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(r.header("x-query"), Some("pump3"));
    assert_eq!(r.json()["q"], "pump3");

    // The same app on a daemon that allows nothing: the node fails with a clear error, the peer sees nothing.
    let seen = peer.received().len();
    let d2 = DaemonBuilder::new().start();
    let c2 = app(&d2, "workflow-http.yml", "caller");
    let b = c2.post_json("/v1/workflows/run", &run_body(json!({"port": port, "q": "x", "token": "t"}), "blocking")).expect_json(200);
    assert_eq!(b["data"]["status"], "failed", "{b}");
    assert!(b["data"]["error"].as_str().unwrap().contains("http_allow"), "{b}");
    assert_eq!(peer.received().len(), seen, "a refused destination is never contacted");
}

#[test]
fn the_upstream_model_runtime_retries_falls_back_and_fails_clearly() {
    let peer = Peer::start(Reply::Stream { pieces: vec!["From ".into(), "upstream.".into()], delay: Duration::ZERO });
    let d = DaemonBuilder::new()
        .set("upstream.url", peer.openai_url())
        .set("upstream.model", "served-model")
        .set("upstream.retry_backoff_ms", 10)
        .set("model_map.default", "upstream")
        .start();
    let c = app(&d, "workflow-llm.yml", "ask");
    // A 429 first: retried, then answered upstream.
    peer.script([Reply::Status { code: 429, retry_after: None }]);
    let b = c.post_json("/v1/workflows/run", &run_body(json!({"question": "hi"}), "blocking")).expect_json(200);
    assert_eq!(b["data"]["outputs"]["answer"], "From upstream.", "{b}");
    let got = peer.received();
    assert_eq!(got.len(), 2, "the 429 was retried once");
    let sent = got[1].json();
    assert_eq!(sent["model"], "served-model");
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["messages"][1]["content"], "hi", "{sent}");

    // Upstream down: the local model answers (fallback_local = true by default).
    peer.set_default(Reply::Status { code: 500, retry_after: None });
    let b = c.post_json("/v1/workflows/run", &run_body(json!({"question": "hi"}), "blocking")).expect_json(200);
    assert_eq!(b["data"]["status"], "succeeded", "{b}");
    assert_ne!(b["data"]["outputs"]["answer"], "From upstream.");
    assert!(!b["data"]["outputs"]["answer"].as_str().unwrap().is_empty());

    // Without fallback the node fails with the upstream's error.
    let d2 = DaemonBuilder::new()
        .set("upstream.url", peer.openai_url())
        .set("upstream.fallback_local", false)
        .set("upstream.retries", 0)
        .set("model_map.default", "upstream")
        .start();
    let c2 = app(&d2, "workflow-llm.yml", "ask");
    let b = c2.post_json("/v1/workflows/run", &run_body(json!({"question": "hi"}), "blocking")).expect_json(200);
    assert_eq!(b["data"]["status"], "failed", "{b}");
    assert!(b["data"]["error"].as_str().unwrap().contains("500"), "{b}");
}

#[test]
fn a_running_workflow_stops_on_request() {
    // A slow upstream answer keeps the LLM node running.
    let pieces: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let peer = Peer::start(Reply::Stream { pieces, delay: Duration::from_millis(100) });
    let d = DaemonBuilder::new().set("upstream.url", peer.openai_url()).set("model_map.default", "upstream").start();
    let c = app(&d, "workflow-llm.yml", "ask");
    let mut sse = c.post_json_streaming("/v1/workflows/run", &run_body(json!({"question": "long"}), "streaming")).into_sse();
    let mut task = None;
    let mut events = Vec::new();
    while let Some(ev) = sse.next_event().unwrap() {
        let Some(v) = ev.json() else { continue };
        if v["event"] == "node_started" && v["data"]["node_type"] == "llm" {
            task = v["task_id"].as_str().map(str::to_owned);
            let t = task.clone().unwrap();
            c.post_json(&format!("/v1/workflows/tasks/{t}/stop"), &json!({"user": "wf-user"})).expect_json(200);
        }
        events.push(v);
    }
    assert!(task.is_some(), "{events:?}");
    let fin = events.last().unwrap();
    assert_eq!(fin["event"], "workflow_finished", "{fin}");
    assert_eq!(fin["data"]["status"], "stopped", "{fin}");
    assert_eq!(c.get("/v1/workflows/logs?status=stopped").expect_json(200)["total"], 1);
    // Another user's stop is ignored (as Dify does), and succeeds.
    c.post_json("/v1/workflows/tasks/unknown/stop", &json!({"user": "x"})).expect_json(200);
    c.post_json("/v1/workflows/tasks/unknown/stop", &json!({})).expect_dify_error(400, "invalid_param");
}

#[test]
fn a_node_that_hangs_times_out_and_fails_the_run() {
    // An upstream that accepts and never answers; the node's own limit ends it.
    let peer = Peer::start(Reply::Hang);
    let d = DaemonBuilder::new()
        .set("upstream.url", peer.openai_url())
        .set("upstream.fallback_local", false)
        .set("upstream.retries", 0)
        .set("model_map.default", "upstream")
        .set("workflow.node_timeout_secs", 1)
        .start();
    let c = app(&d, "workflow-llm.yml", "ask");
    let started = std::time::Instant::now();
    let b = c.post_json("/v1/workflows/run", &run_body(json!({"question": "hi"}), "blocking")).expect_json(200);
    assert_eq!(b["data"]["status"], "failed", "{b}");
    assert!(b["data"]["error"].as_str().unwrap().contains("timed out"), "{b}");
    assert!(started.elapsed() < Duration::from_secs(30), "the node limit, not the upstream's read timeout, ended it");
    let logs = c.get("/v1/workflows/logs?status=failed").expect_json(200);
    assert_eq!(logs["total"], 1, "{logs}");
}

#[test]
fn a_chatflow_run_stops_through_the_chat_stop_route() {
    let pieces: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let peer = Peer::start(Reply::Stream { pieces, delay: Duration::from_millis(100) });
    let d = DaemonBuilder::new().set("upstream.url", peer.openai_url()).set("model_map.default", "upstream").start();
    let c = app(&d, "chatflow.yml", "friendly");
    let mut sse = c
        .post_json_streaming("/v1/chat-messages", &json!({"query": "talk", "inputs": {}, "user": "ann", "response_mode": "streaming"}))
        .into_sse();
    let mut events = Vec::new();
    let mut stopped = false;
    while let Some(ev) = sse.next_event().unwrap() {
        let Some(v) = ev.json() else { continue };
        if v["event"] == "message" && !stopped {
            let t = v["task_id"].as_str().unwrap().to_owned();
            c.post_json(&format!("/v1/chat-messages/{t}/stop"), &json!({"user": "ann"})).expect_json(200);
            stopped = true;
        }
        events.push(v);
    }
    let fin = events.iter().find(|e| e["event"] == "workflow_finished").unwrap();
    assert_eq!(fin["data"]["status"], "stopped", "{fin}");
    let conv = events[0]["conversation_id"].as_str().unwrap();
    let msgs = c.get(&format!("/v1/messages?conversation_id={conv}&user=ann")).expect_json(200);
    assert_eq!(msgs["data"][0]["status"], "stopped", "{msgs}");
}

#[test]
fn secret_environment_values_never_reach_events_or_the_store() {
    let d = DaemonBuilder::new().start();
    // workflow-http.yml with a secret environment variable in the url, which
    // fails (https is refused here) with an error that quotes the url.
    let src = std::fs::read_to_string(fixture("workflow-http.yml")).unwrap();
    let yaml = src
        .replace(
            "  environment_variables: []",
            "  environment_variables:\n  - description: ''\n    id: 5e1c0c6e-0000-4000-8000-000000000009\n    name: api_key\n    selector: [env, api_key]\n    value: sk-very-secret-42\n    value_type: secret",
        )
        .replace(
            "url: http://127.0.0.1:{{#1732000000000.port#}}/echo/{{#1732000000000.q#}}",
            "url: https://127.0.0.1:{{#1732000000000.port#}}/echo?key={{#env.api_key#}}",
        );
    assert!(yaml.contains("sk-very-secret-42") && yaml.contains("{{#env.api_key#}}"), "the fixture changed shape");
    let path = d.dir().join("secret.yml");
    std::fs::write(&path, &yaml).unwrap();
    let out = d.ctl(&["apps", "import", path.to_str().unwrap(), "--id", "secret"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let c = d.client().with_key(&d.admin().create_key("secret").1);
    let ev = stream(&c, "/v1/workflows/run", &run_body(json!({"port": 9, "q": "x", "token": "t"}), "streaming"));
    let fin = ev.iter().find(|e| e["event"] == "workflow_finished").unwrap();
    assert_eq!(fin["data"]["status"], "failed", "{fin}");
    assert!(fin["data"]["error"].as_str().unwrap().contains("******"), "{fin}");
    let all = serde_json::to_string(&ev).unwrap();
    assert!(!all.contains("sk-very-secret-42"), "a secret in the events: {all}");
    let run = ev[0]["workflow_run_id"].as_str().unwrap();
    let rec = c.get(&format!("/v1/workflows/run/{run}")).expect_json(200);
    assert!(!rec.to_string().contains("sk-very-secret-42"), "{rec}");
    let db = std::fs::read(d.dir().join("edgeai.db")).unwrap();
    let wal = std::fs::read(d.dir().join("edgeai.db-wal")).unwrap_or_default();
    let needle = b"sk-very-secret-42";
    let stored = |b: &[u8]| b.windows(needle.len()).filter(|w| w == needle).count();
    // The app definition itself keeps the value (it is the app's configuration), nothing else does.
    let versions = d.admin().get("/admin/v1/apps/secret/versions").unwrap()["data"].as_array().unwrap().len();
    assert!(stored(&db) + stored(&wal) <= versions * 2, "the secret is stored beyond the app definition");
    assert!(!d.dump_logs().contains("sk-very-secret-42"), "a secret in the log");
    // An export blanks it.
    let e = d.admin().get("/admin/v1/apps/secret/export").unwrap();
    assert!(!e["yaml"].as_str().unwrap().contains("sk-very-secret-42"));
}

#[test]
fn a_client_that_leaves_stops_its_run_and_the_reason_is_stored() {
    let pieces: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let peer = Peer::start(Reply::Stream { pieces, delay: Duration::from_millis(100) });
    let d = DaemonBuilder::new().set("upstream.url", peer.openai_url()).set("model_map.default", "upstream").start();
    let c = app(&d, "workflow-llm.yml", "ask");
    let mut sse = c.post_json_streaming("/v1/workflows/run", &run_body(json!({"question": "long"}), "streaming")).into_sse();
    let mut run = None;
    while let Some(ev) = sse.next_event().unwrap() {
        let Some(v) = ev.json() else { continue };
        run = v["workflow_run_id"].as_str().map(str::to_owned);
        if v["event"] == "node_started" && v["data"]["node_type"] == "llm" {
            break;
        }
    }
    sse.close();
    let run = run.unwrap();
    let rec = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            c.get(&format!("/v1/workflows/run/{run}")).expect_json(200)
        })
        .find(|r| r["status"] != "running")
        .expect("the run ended after its client left");
    assert_eq!(rec["status"], "stopped", "{rec}");
    assert_eq!(rec["error"], "client disconnected", "{rec}");
}

#[test]
fn sigterm_lets_a_workflow_run_finish_and_stores_it() {
    let pieces: Vec<String> = (0..20).map(|i| format!("w{i} ")).collect();
    let peer = Peer::start(Reply::Stream { pieces, delay: Duration::from_millis(100) });
    let mut d = DaemonBuilder::new().set("upstream.url", peer.openai_url()).set("model_map.default", "upstream").start();
    import(&d, "workflow-llm.yml", &["--id", "ask"], 0);
    let (_, key) = d.admin().create_key("ask");
    let runner = {
        let c = d.client().with_key(&key);
        std::thread::spawn(move || c.post_json("/v1/workflows/run", &run_body(json!({"question": "q"}), "blocking")).expect_json(200))
    };
    d.wait_log_message("workflow run started", Duration::from_secs(10));
    d.sigterm();
    let b = runner.join().unwrap();
    assert_eq!(b["data"]["status"], "succeeded", "the drain waited for the run: {b}");
    assert!(d.wait_exit(Duration::from_secs(30)).success());
    d.start_again();
    let c = d.client().with_key(&key);
    let rec = c.get(&format!("/v1/workflows/run/{}", b["workflow_run_id"].as_str().unwrap())).expect_json(200);
    assert_eq!(rec["status"], "succeeded", "{rec}");
}

/// Uploads `data` as a text file of the app behind `c`; its id.
fn upload_text(c: &Client, name: &str, data: &[u8]) -> String {
    const B: &str = "edgeai-wf-boundary";
    let mut body = format!("--{B}\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nwf-user\r\n--{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: text/plain\r\n\r\n").into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{B}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={B}");
    let r = c.request("POST", "/v1/files/upload", &[("Content-Type", &ct)], Some(&body)).expect_json(201);
    r["id"].as_str().unwrap().to_owned()
}

/// Every runnable workflow fixture through HTTP on the real local model:
/// each node type in Dify's exported shape, with its outputs checked.
#[test]
fn every_workflow_fixture_runs_end_to_end() {
    let peer = Peer::start(Reply::Json { code: 200, body: json!({"ok": true}) });
    let d = DaemonBuilder::new().set("workflow.http_allow", vec!["127.0.0.1/32"]).start();
    let run = |fixture: &str, id: &str, inputs: Value| -> Value {
        let c = app(&d, fixture, id);
        let b = c.post_json("/v1/workflows/run", &run_body(inputs, "blocking")).expect_json(200);
        let status = b["data"]["status"].as_str().unwrap().to_owned();
        assert!(status == "succeeded" || status == "partial-succeeded", "{fixture}: {b}");
        b["data"].clone()
    };

    let t = run("workflow-six-nodes.yml", "six", json!({"name": "Ann", "mode": "template"}));
    assert_eq!(t["outputs"]["result"], "Hello, Ann! (plain)", "{t}");
    let m = run("workflow-six-nodes.yml", "six", json!({"name": "Ann", "mode": "model"}));
    assert!(!m["outputs"]["result"].as_str().unwrap().contains("(plain)"), "the model branch: {m}");

    let b = run("workflow-branches.yml", "branches", json!({"text": "hello world", "count": 5, "flag": "yes"}));
    let s = serde_json::to_string(&b["outputs"]).unwrap();
    // count 5 < 10, so the `start with hello` case routes; the parallel branches ran too.
    assert!(s.contains("Greeting: hello world") && !s.contains("Long:") && !s.contains("Else:"), "{b}");
    assert!(s.contains("HELLO WORLD") && s.contains("11"), "{b}");

    let it = run("workflow-iteration.yml", "iteration", json!({"items": {"list": ["a", "b", "c"]}}));
    let out = serde_json::to_string(&it["outputs"]).unwrap();
    assert!(out.contains('a') && out.contains('c'), "{it}");

    let l = run("workflow-loop.yml", "loop", json!({"limit": 3}));
    assert_eq!(l["outputs"]["num"], 3, "the loop broke when num reached the limit: {l}");

    let cl = run("workflow-classifier.yml", "classify", json!({"question": "The pump is leaking oil"}));
    let answer = cl["outputs"]["answer"].as_str().unwrap();
    let class = cl["outputs"]["class"].as_str().unwrap();
    // Whichever class the model chose, the branch of that class (and only it) answered.
    match class {
        "Plants and gardening" => assert_eq!(answer, "plants: The pump is leaking oil", "{cl}"),
        "Anything else" => assert_eq!(answer, "other: The pump is leaking oil", "{cl}"),
        other => panic!("class {other:?} is none of the two: {cl}"),
    }

    let ex = run("workflow-extractor.yml", "extract", json!({"text": "Pump 3 runs at 6 bar"}));
    let outs = ex["outputs"].as_object().unwrap();
    assert!(outs["ok"] == 0 || outs["ok"] == 1, "__is_success is reported: {ex}");
    assert!(outs.contains_key("city") && outs.contains_key("days") && outs.contains_key("reason"), "{ex}");
    if outs["ok"] == 1 {
        assert!(outs["city"].is_string() && outs["days"].is_number(), "a successful extraction has the parameters' types: {ex}");
    } else {
        assert!(outs["reason"].as_str().is_some_and(|r| !r.is_empty()), "a failed extraction says why: {ex}");
    }

    let lo =
        run("workflow-list-operator.yml", "lists", json!({"words": {"list": ["banana", "apple", "cherry", "avocado", "grape", "papaya"]}}));
    let s = serde_json::to_string(&lo["outputs"]).unwrap();
    assert!(s.contains("apple") && !s.contains("cherry"), "filtered by `contains a`, ordered, limited: {lo}");

    let er = run("workflow-error-strategy.yml", "errors", json!({"port": 9}));
    assert_eq!(er["status"], "partial-succeeded", "the fail branch handled the refused connection: {er}");

    let c = app(&d, "workflow-doc-extractor.yml", "doc");
    let file = upload_text(&c, "valve.txt", b"Line 2 valve V-17 replaced.\n");
    let doc = json!({"transfer_method": "local_file", "upload_file_id": file, "type": "document"});
    let b = c.post_json("/v1/workflows/run", &run_body(json!({"document": doc}), "blocking")).expect_json(200);
    assert_eq!(b["data"]["status"], "succeeded", "{b}");
    assert!(b["data"]["outputs"]["text"].as_str().unwrap().contains("V-17"), "{b}");
    drop(peer);
}

#[test]
fn iterations_and_loops_stream_difys_own_events() {
    let d = DaemonBuilder::new().start();
    let c = app(&d, "workflow-iteration.yml", "iteration");
    let ev = stream(&c, "/v1/workflows/run", &run_body(json!({"items": {"list": ["a", "b", "c"]}}), "streaming"));
    let n = names(&ev);
    let count = |name: &str| n.iter().filter(|e| *e == name).count();
    assert_eq!((count("iteration_started"), count("iteration_completed")), (1, 1), "{n:?}");
    assert_eq!(count("iteration_next"), 3, "one per item: {n:?}");
    let pos = |name: &str| n.iter().position(|e| e == name).unwrap();
    assert!(pos("iteration_started") < pos("iteration_next") && pos("iteration_next") < pos("iteration_completed"), "{n:?}");
    assert!(
        ev.iter().all(|e| !(e["event"] == "node_started" && e["data"]["node_type"] == "iteration")),
        "the iteration node itself is reported by iteration_* events"
    );
    let done = ev.iter().find(|e| e["event"] == "iteration_completed").unwrap();
    assert_eq!(done["data"]["steps"], 3, "{done}");
    assert_eq!(done["data"]["status"], "succeeded", "{done}");
    let body_node = ev.iter().find(|e| e["event"] == "node_started" && e["data"]["iteration_id"].is_string()).unwrap();
    assert_eq!(body_node["data"]["iteration_id"], done["data"]["node_id"], "{body_node}");
    assert!(body_node["data"]["iteration_index"].is_u64(), "{body_node}");

    let c = app(&d, "workflow-loop.yml", "loop");
    let ev = stream(&c, "/v1/workflows/run", &run_body(json!({"limit": 3}), "streaming"));
    let n = names(&ev);
    assert_eq!(n.iter().filter(|e| *e == "loop_started").count(), 1, "{n:?}");
    assert!(n.iter().filter(|e| *e == "loop_next").count() >= 1, "{n:?}");
    assert_eq!(n.iter().filter(|e| *e == "loop_completed").count(), 1, "{n:?}");
    let body_node = ev.iter().find(|e| e["event"] == "node_started" && e["data"]["loop_id"].is_string()).unwrap();
    assert!(body_node["data"]["loop_index"].is_u64(), "{body_node}");
    assert_eq!(ev.last().unwrap()["data"]["status"], "succeeded");
}

#[test]
fn a_run_in_flight_finishes_on_the_version_it_started_with() {
    // A slow upstream keeps version 1's llm node running while version 2
    // (another graph, whose end output is `result`, not `answer`) is imported.
    let pieces: Vec<String> = (0..15).map(|i| format!("w{i} ")).collect();
    let peer = Peer::start(Reply::Stream { pieces, delay: Duration::from_millis(100) });
    let d = DaemonBuilder::new().set("upstream.url", peer.openai_url()).set("model_map.default", "upstream").start();
    import(&d, "workflow-llm.yml", &["--id", "ask"], 0);
    let (_, key) = d.admin().create_key("ask");
    let v1 = d.admin().get("/admin/v1/apps/ask/versions").unwrap()["data"][0]["workflow_id"].as_str().unwrap().to_owned();
    let runner = {
        let c = d.client().with_key(&key);
        std::thread::spawn(move || c.post_json("/v1/workflows/run", &run_body(json!({"question": "q"}), "blocking")).expect_json(200))
    };
    d.wait_log_message("workflow run started", Duration::from_secs(10));
    let (stdout, _) = import(&d, "workflow-six-nodes.yml", &["--id", "ask"], 0);
    assert!(stdout.contains("version 2"), "{stdout}");
    let b = runner.join().unwrap();
    assert_eq!(b["data"]["status"], "succeeded", "{b}");
    assert_eq!(b["data"]["workflow_id"], v1.as_str(), "{b}");
    assert_eq!(b["data"]["outputs"]["answer"], serde_json::Value::String((0..15).map(|i| format!("w{i} ")).collect()), "{b}");
    // New runs take version 2.
    let c = d.client().with_key(&key);
    let b2 = c.post_json("/v1/workflows/run", &run_body(json!({"name": "Ann", "mode": "template"}), "blocking")).expect_json(200);
    assert_eq!(b2["data"]["outputs"]["result"], "Hello, Ann! (plain)", "{b2}");
}
