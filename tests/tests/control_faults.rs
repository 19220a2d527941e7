//! Faults of the core's control paths, each reproduced end to end: stopping
//! a task that still waits in the admission queue, a second stop signal
//! during the drain, SIGHUP with apps removed from the configuration (and
//! imported apps kept), and the STATUS= line a reload sends when the model
//! failed to load.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::{Duration, Instant};

use edgeai_tests::{dify, Daemon, DaemonBuilder, LONG_APP, LONG_QUERY};
use serde_json::json;

/// Reads events until the first `message` event; returns the outcome so far.
fn first_message(r: &mut edgeai_tests::SseReader) -> dify::StreamOutcome {
    let mut out = dify::StreamOutcome::default();
    while out.named("message").is_empty() {
        let ev = r.next_event().unwrap().expect("the stream ended before its first message");
        assert_ne!(ev.name(), "message_end", "the generation ended before the test could act on it");
        dify::add(&mut out, ev);
    }
    out
}

/// The task id of the `n`-th (0-based) "run queued" log line.
fn queued_task(d: &Daemon, n: usize) -> String {
    d.wait_log_count("run queued", n + 1, Duration::from_secs(10))[n].field_str("task_id").unwrap()
}

#[test]
fn stopping_a_task_that_waits_in_the_queue_frees_its_place() {
    // One slot and one queue place: A generates, B waits, C is refused.
    let d = DaemonBuilder::new().set("model.slots", 1).set("model.queue_depth", 1).long_app(1500).start();
    let (_, key) = d.admin().create_key(LONG_APP);
    let c = d.client().with_key(&key);
    let mut a = c.chat_stream_open(LONG_QUERY, "ann", None);
    first_message(&mut a);
    let mut b = c.chat_stream_open(LONG_QUERY, "bob", None);
    assert_eq!(b.status(), 200, "the second request should wait in the queue");
    let b_task = queued_task(&d, 1);
    let refused = c.chat_stream_open(LONG_QUERY, "cat", None);
    assert_eq!(refused.status(), 429, "the queue of depth 1 should be full");
    refused.close();

    // Bob stops his queued task (while staying connected): its place frees at once.
    let stopped_at = Instant::now();
    let ok = c.post_json(&format!("/v1/chat-messages/{b_task}/stop"), &json!({"user": "bob"})).expect_json(200);
    assert_eq!(ok, json!({"result": "success"}));
    let mut out = dify::StreamOutcome::default();
    while let Some(ev) = b.next_event().unwrap() {
        dify::add(&mut out, ev);
    }
    let took = stopped_at.elapsed();
    assert!(took < Duration::from_secs(5), "the stopped queued task ended only after {took:?} (it waited for a slot)");
    let end = out.end.expect("the stopped queued stream ended without message_end");
    assert_eq!(end["metadata"]["usage"]["completion_tokens"], 0, "a stopped queued task generated text: {end}");
    let next = c.chat_stream_open(LONG_QUERY, "dan", None);
    assert_eq!(next.status(), 200, "the stopped queued task still holds its queue place");
    next.close();

    // Bob's message is stored as stopped, and Ann's run went on throughout.
    let bob = c.conversations("bob");
    let m = &c.messages("bob", bob[0]["id"].as_str().unwrap())[0];
    assert_eq!(m["status"], "stopped", "{m:#}");
    let a_task = queued_task(&d, 0);
    assert!(
        d.logs_with_message("run finished").iter().all(|l| l.field_str("task_id").as_deref() != Some(a_task.as_str())),
        "the running task ended early"
    );
    a.close();
}

#[test]
fn a_second_stop_signal_stops_at_once_and_records_the_runs() {
    // A long drain: the first SIGTERM would let the run go on for a minute.
    let mut d = DaemonBuilder::new().set("server.shutdown_grace_secs", 60).long_app(1500).start();
    let (_, key) = d.admin().create_key(LONG_APP);
    let c = d.client().with_key(&key);
    let mut r = c.chat_stream_open(LONG_QUERY, "eve", None);
    let out = first_message(&mut r);
    let (_, msg, conv) = out.ids();

    d.sigterm();
    d.wait_log_message("stopping: draining in-flight requests", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.is_running(), "the daemon did not wait for the in-flight run after the first SIGTERM");
    let asked = Instant::now();
    d.sigterm();
    let status = d.wait_exit(Duration::from_secs(20));
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "exit status after the second SIGTERM");
    assert!(took < Duration::from_secs(10), "the second SIGTERM took {took:?} to stop the daemon");
    d.wait_log_message(
        "second stop signal: stopping now without draining; runs in flight were recorded as stopped",
        Duration::from_secs(1),
    );
    drop(r);

    d.start_again();
    let open = d.wait_log_message("store open", Duration::from_secs(1));
    assert_eq!(open.field_u64("recovered_messages"), Some(0), "the run was left pending: {}", open.raw);
    let c = d.client().with_key(&key);
    let m = &c.messages("eve", &conv)[0];
    assert_eq!(m["id"], msg.as_str());
    assert_eq!(m["status"], "stopped", "{m:#}");
    assert!(!m["answer"].as_str().unwrap().is_empty(), "the text generated before the stop was lost: {m:#}");
}

#[test]
fn sighup_stops_serving_apps_removed_from_the_config_and_keeps_imported_ones() {
    let mut d = DaemonBuilder::new().start();
    let admin = d.admin();
    let (_, summarise_key) = admin.create_key("summarise");
    let imported = json!({"id": "imported", "name": "Imported", "mode": "chat", "pre_prompt": "Be brief."});
    assert_eq!(admin_post(&d, "/admin/v1/apps", &imported), 201, "importing a new app");
    let (_, imported_key) = admin.create_key("imported");
    let summarise = d.client().with_key(&summarise_key);
    assert_eq!(summarise.get("/v1/parameters").status, 200);

    // Remove `summarise` from the config file and reload.
    d.edit_config(|cfg| {
        let apps = cfg.get_mut("apps").and_then(toml::Value::as_array_mut).unwrap();
        apps.retain(|a| a.get("id").and_then(toml::Value::as_str) != Some("summarise"));
    });
    let pid = d.pid();
    d.sighup();
    d.wait_log_message("configuration reloaded; apps applied, other settings apply at restart", Duration::from_secs(10));
    assert_eq!(d.pid(), pid);

    // Dify's answer for a key whose app is gone.
    let body = summarise.get("/v1/parameters").expect_dify_error(403, "forbidden");
    assert_eq!(body["message"], "The app no longer exists.");
    // The imported app and the config's other app are still served.
    assert_eq!(d.client().with_key(&imported_key).get("/v1/parameters").status, 200);
    assert_eq!(d.client().get("/v1/parameters").status, 200, "the demo app went away on reload");

    // And so it stays after a restart.
    d.restart();
    let c = d.client().with_key(&summarise_key);
    c.get("/v1/parameters").expect_dify_error(403, "forbidden");
    assert_eq!(d.client().with_key(&imported_key).get("/v1/parameters").status, 200);
}

#[test]
fn a_reload_keeps_the_model_failure_in_the_status_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model.gguf");
    let mut b = DaemonBuilder::new().model_path(&missing).wait_for_model(false);
    let notify = b.notify_socket();
    let d = b.start();
    let (seen, _) = notify.wait_for(0, Duration::from_secs(30), "STATUS= naming the model failure", |n| {
        n.get("STATUS").is_some_and(|s| s.contains("serving without a model"))
    });
    d.sighup();
    let (_, ready) = notify.wait_for(seen + 1, Duration::from_secs(10), "READY=1 after the reload", |n| n.has("READY=1"));
    let status = ready.get("STATUS").unwrap_or_default();
    assert!(status.contains("serving without a model") && status.contains("no-such-model.gguf"), "after SIGHUP: {status:?}");
}

/// POSTs JSON to the admin API over the unix socket; returns the status.
fn admin_post(d: &Daemon, path: &str, body: &serde_json::Value) -> u16 {
    d.unix_client().post_json(path, body).status
}
