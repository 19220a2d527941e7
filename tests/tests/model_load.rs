//! Loading the model under systemd's watchdog: a load much longer than the
//! watchdog timeout keeps the WATCHDOG=1 pings coming (llama.cpp's load
//! progress beats the inference heartbeat), and a load longer than
//! `model.load_timeout_secs` is aborted, leaving the daemon up with the model
//! `failed` and every model call answering 503 `provider_not_initialize`.
//! Both slow the load down with the `model-load-progress` fail point, which
//! sleeps at every progress step (one per tensor).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::{Duration, Instant};

use edgeai_tests::{chat_body, DaemonBuilder};

const WATCHDOG_USEC: u64 = 1_000_000;
/// Per progress step; SmolLM2-135M has about 270 tensors, so about 8 s.
const SLOW_STEP: &str = "sleep(30)";

#[test]
fn watchdog_pings_continue_through_a_slow_model_load() {
    let mut b = DaemonBuilder::new().failpoint("model-load-progress", SLOW_STEP);
    let notify = b.notify_socket();
    let mut d = b.watchdog_usec(WATCHDOG_USEC).start();
    d.expect_failpoint("model-load-progress");
    let loaded = d.wait_log_message("model loaded", Duration::from_secs(1));
    let load = Duration::from_millis(loaded.field_u64("load_ms").unwrap());
    // Precondition: the load really lasted several watchdog timeouts.
    let watchdog = Duration::from_micros(WATCHDOG_USEC);
    assert!(load >= 4 * watchdog, "the load took only {load:?}; the fail point did not slow it down");

    let all = notify.all();
    assert!(all[0].has("READY=1"), "the first notification is not READY=1: {:?}", all[0].text);
    let (_, done) = notify.wait_for(1, Duration::from_secs(5), "STATUS= for the loaded model", |n| {
        n.get("STATUS").is_some_and(|s| s.contains("model loaded"))
    });
    let during: Vec<Instant> = all.iter().filter(|n| n.has("WATCHDOG=1") && n.at <= done.at).map(|n| n.at).collect();
    assert!(d.logs_with_message("unhealthy: withholding watchdog pings").is_empty(), "the watchdog counted the load as a hang");
    // From READY to the end of the load no gap reaches systemd's deadline.
    let mut marks = vec![all[0].at];
    marks.extend(&during);
    marks.push(done.at);
    let worst = marks.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(worst < watchdog, "{} pings during a {load:?} load, longest gap {worst:?}", during.len());
    assert!(during.len() as u32 >= (load.as_millis() / watchdog.as_millis()) as u32, "only {} pings in {load:?}", during.len());
    assert!(d.is_running());
}

#[test]
fn a_load_over_its_timeout_ends_failed_and_the_daemon_stays_up() {
    let mut d =
        DaemonBuilder::new().set("model.load_timeout_secs", 1).failpoint("model-load-progress", SLOW_STEP).wait_for_model(false).start();
    d.expect_failpoint("model-load-progress");
    let failed = d.wait_log(Duration::from_secs(60), "the model failure", |l| l.message().starts_with("model unavailable"));
    let error = failed.field_str("error").unwrap_or_default();
    assert!(error.contains("model.load_timeout_secs (1 s)"), "logged reason: {error:?}");
    assert!(d.logs_with_message("model loaded").is_empty(), "the model loaded despite the timeout");

    let c = d.client();
    let ready = c.without_key().get("/ready");
    let body = ready.expect_dify_error(503, "provider_not_initialize");
    assert!(body["message"].as_str().unwrap().contains("load_timeout_secs"), "/ready: {body}");
    let r = c.post_json("/v1/chat-messages", &chat_body("Hello", "u", "blocking", None));
    r.expect_dify_error(503, "provider_not_initialize");
    let status = d.admin().status();
    assert_eq!(status["model"]["state"], "failed", "{status}");

    std::thread::sleep(Duration::from_millis(500));
    assert!(d.is_running(), "edgeaid exited after the load timed out");
    c.without_key().get("/health").expect_json(200);
    d.sigterm();
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(0));
}
