//! Ending a generation early: Dify's stop endpoint (scoped to the task's
//! user) and a client that disconnects mid-stream. Both must end the run
//! promptly, free the model for others, and store the message as stopped
//! with the text generated so far.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::{Duration, Instant};

use edgeai_tests::{dify, Daemon, DaemonBuilder, LONG_APP, LONG_QUERY};
use serde_json::json;

const MAX_TOKENS: u64 = 1500;

fn long_daemon() -> (Daemon, edgeai_tests::Client) {
    let d = DaemonBuilder::new().long_app(MAX_TOKENS as u32).start();
    let (_, key) = d.admin().create_key(LONG_APP);
    let c = d.client().with_key(&key);
    (d, c)
}

/// Reads events until `n` message events arrived; returns them and the
/// outcome so far.
fn read_messages(r: &mut edgeai_tests::SseReader, n: usize) -> dify::StreamOutcome {
    let mut out = dify::StreamOutcome::default();
    while out.named("message").len() < n {
        let ev = r.next_event().unwrap().expect("the stream ended before the run was stopped");
        assert_ne!(ev.name(), "message_end", "the generation ended on its own before the test could stop it");
        dify::add(&mut out, ev);
    }
    out
}

#[test]
fn stop_ends_the_stream_and_stores_a_stopped_message() {
    let (d, c) = long_daemon();
    let mut r = c.chat_stream_open(LONG_QUERY, "erin", None);
    assert_eq!(r.status(), 200);
    let mut out = read_messages(&mut r, 1);
    let (task, msg, conv) = out.ids();

    // Stop needs the user; another user's stop is accepted (as in Dify) but does nothing.
    c.post_json(&format!("/v1/chat-messages/{task}/stop"), &json!({})).expect_dify_error(400, "invalid_param");
    let other = c.post_json(&format!("/v1/chat-messages/{task}/stop"), &json!({"user": "mallory"})).expect_json(200);
    assert_eq!(other, json!({"result": "success"}));
    let before = out.named("message").len();
    let more = read_messages(&mut r, 5);
    for ev in more.events {
        dify::add(&mut out, ev);
    }
    assert!(out.named("message").len() >= before + 5, "the run did not go on after another user's stop");

    let stopped_at = Instant::now();
    let ok = c.post_json(&format!("/v1/chat-messages/{task}/stop"), &json!({"user": "erin"})).expect_json(200);
    assert_eq!(ok, json!({"result": "success"}));
    while let Some(ev) = r.next_event().unwrap() {
        dify::add(&mut out, ev);
    }
    let took = stopped_at.elapsed();
    let end = out.end.clone().expect("the stopped stream ended without message_end");
    assert!(took < Duration::from_secs(5), "the stream took {took:?} to end after stop");
    assert_eq!(end["message_id"], msg.as_str());
    let completion = end["metadata"]["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion > 0 && completion < MAX_TOKENS, "completion_tokens {completion} after a stop");

    let stored = c.messages("erin", &conv);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "stopped", "{:#}", stored[0]);
    assert_eq!(stored[0]["answer"].as_str().unwrap(), out.answer, "stored text differs from what was streamed");
    let finished = d.wait_log(Duration::from_secs(5), "run finished for the task", |l| {
        l.message() == "run finished" && l.field_str("task_id").as_deref() == Some(task.as_str())
    });
    assert_eq!(finished.field_str("status").as_deref(), Some("Stopped"));

    // Stopping a finished or unknown task is harmless.
    c.post_json(&format!("/v1/chat-messages/{task}/stop"), &json!({"user": "erin"})).expect_json(200);
    // The model is free again: a new turn in the conversation starts, and stops too.
    let mut r2 = c.chat_stream_open(LONG_QUERY, "erin", Some(&conv));
    let mut o2 = read_messages(&mut r2, 1);
    let (t2, _, _) = o2.ids();
    c.post_json(&format!("/v1/chat-messages/{t2}/stop"), &json!({"user": "erin"})).expect_json(200);
    while let Some(ev) = r2.next_event().unwrap() {
        dify::add(&mut o2, ev);
    }
    assert!(o2.end.is_some(), "the second stopped stream ended without message_end");
    assert_eq!(c.messages("erin", &conv).len(), 2);
}

#[test]
fn client_disconnect_cancels_the_generation() {
    let (d, c) = long_daemon();
    let mut r = c.chat_stream_open(LONG_QUERY, "frank", None);
    let out = read_messages(&mut r, 3);
    let (task, _, conv) = out.ids();
    let closed_at = Instant::now();
    r.close();

    let finished = d.wait_log(Duration::from_secs(10), "run finished for the task", |l| {
        l.message() == "run finished" && l.field_str("task_id").as_deref() == Some(task.as_str())
    });
    let took = finished.at - closed_at;
    assert!(took < Duration::from_secs(5), "generation went on for {took:?} after the client left");
    assert_eq!(finished.field_str("status").as_deref(), Some("Stopped"), "{}", finished.raw);
    let completion = finished.field_u64("completion_tokens").unwrap();
    assert!(completion < MAX_TOKENS, "the whole answer ({completion} tokens) was generated for a client that left");

    let stored = c.messages("frank", &conv);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "stopped", "{:#}", stored[0]);
    assert!(stored[0]["answer"].as_str().unwrap().starts_with(&out.answer), "stored text is not what was generated");
}

#[test]
fn a_queued_run_whose_client_left_frees_its_queue_place() {
    let d = DaemonBuilder::new().set("model.slots", 1).set("model.queue_depth", 1).long_app(MAX_TOKENS as u32).start();
    let (_, key) = d.admin().create_key(LONG_APP);
    let c = d.client().with_key(&key);
    let mut running = c.chat_stream_open(LONG_QUERY, "kim", None);
    let first = read_messages(&mut running, 1);
    let queued = c.chat_stream_open(LONG_QUERY, "lea", None);
    assert_eq!(queued.status(), 200, "the second request should wait in the queue");
    queued.close();

    // The queue place of the client that left must come free while the first run goes on.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let next = c.chat_stream_open(LONG_QUERY, "max", None);
        if next.status() == 200 {
            next.close();
            break;
        }
        assert_eq!(next.status(), 429);
        assert!(Instant::now() < deadline, "the queue place of a client that left is still taken after 5 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (task, _, _) = first.ids();
    assert!(
        d.logs_with_message("run finished").iter().all(|l| l.field_str("task_id").as_deref() != Some(task.as_str())),
        "the first run ended early"
    );
    running.close();
}
