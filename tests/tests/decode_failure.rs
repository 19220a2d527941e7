//! A llama.cpp decode that fails mid-request (the `decode-fail` fail point)
//! reaches the streaming client as Dify's `error` event, the message is
//! stored with status `error` and the reason, and the daemon keeps serving.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::Duration;

use edgeai_tests::{dify, DaemonBuilder};

#[test]
fn a_decode_failure_reaches_the_stream_as_an_error_event_and_is_stored() {
    // Only the first decode fails.
    let d = DaemonBuilder::new().failpoint("decode-fail", "1*return").start();
    d.expect_failpoint("decode-fail");
    let c = d.client();

    let out = dify::collect(c.chat_stream_open("What is a PLC?", "erin", None));
    assert_eq!(out.status, 200);
    let errors = out.named("error");
    assert_eq!(errors.len(), 1, "events: {:#?}", out.events);
    let e = &errors[0];
    assert_eq!(e["code"], "completion_request_error", "{e}");
    // Dify's error event: a failed generation is a 400, with the run's ids.
    assert_eq!(e["event"], "error", "{e}");
    assert_eq!(e["status"], 400, "{e}");
    assert!(e["task_id"].as_str().is_some_and(edgeai_tests::is_uuid), "{e}");
    assert!(e["created_at"].as_i64().is_some_and(|t| t > 0), "{e}");
    assert!(e["message"].as_str().unwrap().contains("decode failed"), "{e}");
    assert!(out.end.is_none(), "message_end after an error: {:#?}", out.events);
    assert!(out.answer.is_empty(), "text before the failed first decode: {:?}", out.answer);
    assert_eq!(out.events.last().map(|ev| ev.name()).as_deref(), Some("error"), "the error is not the last event");
    d.wait_log_message("decode failed", Duration::from_secs(5));

    // The message is stored as failed, with the reason.
    let convs = c.conversations("erin");
    assert_eq!(convs.len(), 1, "{convs:#?}");
    let msgs = c.messages("erin", convs[0]["id"].as_str().unwrap());
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(msgs[0]["id"], e["message_id"], "the error event names another message");
    assert_eq!(convs[0]["id"], e["conversation_id"], "the error event names another conversation");

    // A blocking request that fails is Dify's 400 completion_request_error.
    let d2 = DaemonBuilder::new().failpoint("decode-fail", "1*return").start();
    d2.expect_failpoint("decode-fail");
    let r = d2.client().post_json("/v1/chat-messages", &edgeai_tests::chat_body("What is a PLC?", "erin", "blocking", None));
    let body = r.expect_dify_error(400, "completion_request_error");
    assert!(body["message"].as_str().unwrap_or_default().contains("decode failed"), "{body}");
    assert_eq!(msgs[0]["status"], "error", "{:#}", msgs[0]);
    assert!(msgs[0]["error"].as_str().unwrap_or_default().contains("decode failed"), "{:#}", msgs[0]);
    assert_eq!(msgs[0]["answer"], "", "{:#}", msgs[0]);

    // The next request decodes normally.
    let ok = c.chat_stream("What is a PLC?", "erin", None);
    assert!(ok.named("error").is_empty(), "{:#?}", ok.events);
    assert!(ok.end.is_some() && !ok.answer.is_empty(), "{:#?}", ok.events);
}
