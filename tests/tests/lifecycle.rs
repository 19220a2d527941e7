//! Life under systemd and across restarts: sd_notify READY/STATUS/WATCHDOG/
//! STOPPING on a fake notify socket, the watchdog going quiet when the
//! inference thread hangs, SIGTERM draining an in-flight stream, and
//! kill -9 mid-stream leaving a store that opens with the interrupted
//! message marked failed and everything earlier intact.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::{Duration, Instant};

use edgeai_tests::{dify, DaemonBuilder, LONG_APP, LONG_QUERY};

const WATCHDOG_USEC: u64 = 1_000_000;

#[test]
fn notify_ready_status_watchdog_and_stopping() {
    let mut b = DaemonBuilder::new();
    let notify = b.notify_socket();
    let mut d = b.watchdog_usec(WATCHDOG_USEC).start();

    let all = notify.all();
    assert!(!all.is_empty(), "nothing arrived on NOTIFY_SOCKET");
    let first = &all[0];
    assert!(first.has("READY=1"), "the first notification is not READY=1: {:?}", first.text);
    assert!(first.get("STATUS").is_some_and(|s| !s.is_empty()), "READY=1 without STATUS=: {:?}", first.text);
    let (_, loaded) = notify.wait_for(1, Duration::from_secs(30), "STATUS= for the loaded model", |n| {
        n.get("STATUS").is_some_and(|s| s.contains("model loaded"))
    });
    assert!(!loaded.has("READY=1"), "READY=1 sent twice: {:?}", loaded.text);

    // Pings at half of WATCHDOG_USEC.
    let pings: Vec<Instant> = notify
        .wait_for_count(5, Duration::from_secs(10), "WATCHDOG=1", |_, n| n.has("WATCHDOG=1"))
        .into_iter()
        .map(|(_, n)| n.at)
        .collect();
    // The first ping comes at once, the rest every half timeout; none may
    // come late enough for systemd to count a missed deadline.
    let mut gaps: Vec<Duration> = pings.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(400) && median <= Duration::from_millis(650),
        "median ping gap {median:?}, want 500 ms: {gaps:?}"
    );
    assert!(*gaps.last().unwrap() < Duration::from_millis(1000), "a ping came after the 1 s watchdog deadline: {gaps:?}");
    assert!(notify.all().iter().all(|n| !n.has("STOPPING=1")));

    d.sigterm();
    let (_, stopping) = notify.wait_for(0, Duration::from_secs(10), "STOPPING=1", |n| n.has("STOPPING=1"));
    assert!(stopping.get("STATUS").is_some_and(|s| s.contains("stopping")), "{:?}", stopping.text);
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    d.wait_log_message("stopped", Duration::from_secs(1));
}

#[test]
fn watchdog_goes_quiet_when_the_inference_thread_hangs() {
    let mut b = DaemonBuilder::new();
    let notify = b.notify_socket();
    let d = b.watchdog_usec(WATCHDOG_USEC).hang_inference().start();
    let hang = d.wait_failpoint_hang();
    let unhealthy = d.wait_log_message("unhealthy: withholding watchdog pings", Duration::from_secs(5));
    assert!(unhealthy.field_str("reason").unwrap_or_default().contains("inference"), "{}", unhealthy.raw);
    let detected = unhealthy.at - hang.at;
    // Progress older than 3/4 of the timeout counts as stuck, checked every half timeout.
    assert!(detected <= Duration::from_millis(2500), "the hang was noticed after {detected:?}");
    let pings_before: Vec<Instant> = notify.all().iter().filter(|n| n.has("WATCHDOG=1")).map(|n| n.at).collect();
    assert!(pings_before.iter().any(|at| *at < unhealthy.at), "no WATCHDOG=1 while the daemon was healthy");

    // Two full seconds (four periods) without a single ping.
    std::thread::sleep(Duration::from_secs(2));
    let late: Vec<_> =
        notify.all().into_iter().filter(|n| n.has("WATCHDOG=1") && n.at > unhealthy.at + Duration::from_millis(50)).collect();
    assert!(late.is_empty(), "{} WATCHDOG=1 after the inference thread hung", late.len());
    assert!(
        notify.all().iter().any(|n| n.get("STATUS").is_some_and(|s| s.starts_with("unhealthy"))),
        "no STATUS= telling systemd why: {:?}",
        notify.all()
    );
}

#[test]
fn sigterm_lets_an_inflight_stream_finish_and_keeps_it() {
    const TOKENS: u64 = 96;
    let mut d = DaemonBuilder::new().long_app(TOKENS as u32).start();
    let (_, key) = d.admin().create_key(LONG_APP);
    let c = d.client().with_key(&key);
    let mut r = c.chat_stream_open(LONG_QUERY, "gina", None);
    let mut out = dify::StreamOutcome::default();
    let first = r.next_event().unwrap().expect("no first event");
    assert_eq!(first.name(), "message");
    dify::add(&mut out, first);

    d.sigterm();
    let stopping = d.wait_log_message("stopping: draining in-flight requests", Duration::from_secs(5));
    d.wait_log_message("stopped accepting; draining connections", Duration::from_secs(5));
    // New clients are turned away while the old one is served.
    let refused = std::net::TcpStream::connect_timeout(&d.addr(), Duration::from_secs(2));
    assert!(refused.is_err(), "a new TCP connection was accepted during the drain");
    assert!(!d.socket_path().exists(), "the unix socket file is still there during the drain");
    while let Some(ev) = r.next_event().unwrap() {
        dify::add(&mut out, ev);
    }
    let end = out.end.clone().expect("the stream was cut without message_end");
    // Precondition: the run was in flight when SIGTERM came (the model may
    // end an answer early, so this test counts on what it saw, not on TOKENS).
    assert_eq!(stopping.field_u64("in_flight"), Some(1), "precondition: the answer ended before SIGTERM: {}", stopping.raw);
    let (task, msg, conv) = out.ids();
    let completion = end["metadata"]["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion > 1 && completion <= TOKENS, "{end}");
    // Finished on its own (stop or length), not cancelled by the shutdown.
    let finished = d.wait_log(Duration::from_secs(10), "run finished for the task", |l| {
        l.message() == "run finished" && l.field_str("task_id").as_deref() == Some(task.as_str())
    });
    assert!(finished.at >= stopping.at, "the run finished before SIGTERM");
    assert_eq!(finished.field_str("status").as_deref(), Some("Normal"), "the drain cut the run: {}", finished.raw);
    assert_eq!(finished.field_u64("completion_tokens"), Some(completion));
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit status after draining");

    d.start_again();
    let c = d.client().with_key(&key);
    let stored = c.messages("gina", &conv);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], msg.as_str());
    assert_eq!(stored[0]["status"], "normal", "{:#}", stored[0]);
    assert_eq!(stored[0]["answer"].as_str().unwrap(), out.answer);
}

#[test]
fn kill9_mid_stream_marks_the_message_failed_and_keeps_the_rest() {
    let mut d = DaemonBuilder::new().long_app(1500).start();
    let (_, long_key) = d.admin().create_key(LONG_APP);
    let demo = d.client();
    let earlier = demo.chat_blocking("What is a PLC?", "hank", None);
    let earlier_conv = earlier["conversation_id"].as_str().unwrap().to_owned();
    let long = demo.with_key(&long_key);

    let mut r = long.chat_stream_open(LONG_QUERY, "hank", None);
    let mut out = dify::StreamOutcome::default();
    while out.named("message").len() < 3 {
        dify::add(&mut out, r.next_event().unwrap().expect("the stream ended early"));
    }
    let (_, msg, conv) = out.ids();
    d.kill9();
    drop(r);

    d.start_again();
    let open = d.wait_log_message("store open", Duration::from_secs(1));
    assert_eq!(open.field_u64("recovered_messages"), Some(1), "{}", open.raw);
    let demo = d.client();
    let before = demo.messages("hank", &earlier_conv);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["status"], "normal");
    assert_eq!(before[0]["answer"], earlier["answer"]);

    let long = demo.with_key(&long_key);
    let interrupted = long.messages("hank", &conv);
    assert_eq!(interrupted.len(), 1, "{interrupted:#?}");
    let m = &interrupted[0];
    assert_eq!(m["id"], msg.as_str());
    assert_eq!(m["status"], "error", "the interrupted message: {m:#}");
    assert!(m["error"].as_str().is_some_and(|e| !e.is_empty()), "no error text: {m:#}");
    assert_eq!(long.conversations("hank").len(), 1);
    // The store is writable again: the conversation goes on.
    let mut r = long.chat_stream_open(LONG_QUERY, "hank", Some(&conv));
    let o = {
        let mut o = dify::StreamOutcome::default();
        dify::add(&mut o, r.next_event().unwrap().expect("no event after restart"));
        o
    };
    assert_eq!(o.ids().2, conv);
    r.close();
}

#[test]
fn sigterm_past_the_drain_deadline_stores_cancelled_runs_as_stopped() {
    // One slot: the first run generates, the second waits in the queue.
    let mut d = DaemonBuilder::new().set("model.slots", 1).set("server.shutdown_grace_secs", 1).long_app(1500).start();
    let (_, key) = d.admin().create_key(LONG_APP);
    let c = d.client().with_key(&key);
    let mut running = c.chat_stream_open(LONG_QUERY, "ida", None);
    let mut out = dify::StreamOutcome::default();
    dify::add(&mut out, running.next_event().unwrap().expect("no first event"));
    let (_, running_msg, running_conv) = out.ids();
    let queued = c.chat_stream_open(LONG_QUERY, "jack", None);
    assert_eq!(queued.status(), 200);

    let asked = Instant::now();
    d.sigterm();
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit status after the drain deadline");
    // Precondition: both runs were in flight at the signal (the model did not
    // end the first answer on its own before it).
    let stopping = d.wait_log_message("stopping: draining in-flight requests", Duration::from_secs(1));
    assert_eq!(stopping.field_u64("in_flight"), Some(2), "precondition: two runs in flight at SIGTERM: {}", stopping.raw);
    assert!(asked.elapsed() < Duration::from_secs(10), "shutdown took {:?} with a 1 s grace", asked.elapsed());
    let drained = d.logs_with_message("drained");
    assert_eq!(drained.len(), 1);
    assert!(drained[0].field_u64("cancelled_runs").unwrap_or(0) >= 1, "{}", drained[0].raw);
    drop(running);
    drop(queued);

    d.start_again();
    let open = d.wait_log_message("store open", Duration::from_secs(1));
    assert_eq!(open.field_u64("recovered_messages"), Some(0), "a run was left pending: {}", open.raw);
    let c = d.client().with_key(&key);
    let m = &c.messages("ida", &running_conv)[0];
    assert_eq!(m["id"], running_msg.as_str());
    assert_eq!(m["status"], "stopped", "the run cut by the deadline: {m:#}");
    assert!(!m["answer"].as_str().unwrap().is_empty(), "the text generated before the deadline was lost: {m:#}");
    let jack = c.conversations("jack");
    assert_eq!(jack.len(), 1);
    let q = &c.messages("jack", jack[0]["id"].as_str().unwrap())[0];
    assert_eq!(q["status"], "stopped", "the run cancelled while queued: {q:#}");
}
