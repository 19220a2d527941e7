//! Dify's own Python SDK (`dify-client`, pinned in scripts/setup.sh, installed
//! into `.cache/venv`) works against edgeaid unchanged: every SDK method that
//! applies to chat and completion apps is called by
//! tests/python/dify_client_check.py, which checks each answer; what it saw
//! is cross-checked here through the HTTP API.
//!
//! `core` covers chat/completion (blocking and streaming), stop,
//! conversations (list, rename, delete), messages, feedback, parameters,
//! info and meta; `newer` the routes and behaviours Dify clients use that
//! issue 11 adds (files, audio, site, suggested questions, app feedbacks,
//! `user` as any scalar, `files` ignored, app_unavailable).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use edgeai_tests::sdk::{run_checker, SdkDaemon, USER};
use edgeai_tests::{is_uuid, paths};

fn script() -> std::path::PathBuf {
    paths::repo_root().join("tests/python/dify_client_check.py")
}

#[test]
fn dify_python_client_core_methods() {
    let sd = SdkDaemon::start();
    let seen = run_checker(&paths::venv_python(), &script(), &sd.args("core"));
    let c = sd.daemon.client();

    // What the SDK saw is what the daemon stored.
    let conv = seen["conversation_id"].as_str().unwrap();
    let stored = c.messages(USER, conv);
    assert_eq!(stored.len(), 2, "{stored:#?}");
    assert_eq!(stored[0]["id"], seen["blocking_message_id"]);
    assert_eq!(stored[0]["answer"], seen["blocking_answer"]);
    assert_eq!(stored[1]["answer"], seen["streamed_answer"]);
    assert!(stored.iter().all(|m| m["status"] == "normal"), "{stored:#?}");
    // The last feedback the SDK gave.
    assert_eq!(stored[0]["feedback"]["rating"], "like", "{:#}", stored[0]);
    let convs = c.conversations(USER);
    let names: Vec<&str> = convs.iter().filter_map(|x| x["name"].as_str()).collect();
    assert_eq!(names, ["Line 2 valve"], "{convs:#?}");
    let events: Vec<&str> = seen["events"].as_array().unwrap().iter().filter_map(|e| e.as_str()).collect();
    assert!(events.iter().filter(|e| **e == "message").count() >= 2, "{events:?}");
    assert!(seen["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // The deleted conversation is gone from the store.
    let deleted = seen["deleted_conversation_id"].as_str().unwrap();
    let r = c.get(&format!("/v1/messages?user={USER}&conversation_id={deleted}"));
    r.expect_dify_error(404, "not_found");

    // The stopped answer is stored as stopped, in its own conversation.
    let stopped_conv = seen["stopped_conversation_id"].as_str().unwrap();
    let long = c.with_key(&sd.long_key);
    let stopped = long.messages(USER, stopped_conv);
    assert_eq!(stopped.len(), 1, "{stopped:#?}");
    assert_eq!(stopped[0]["id"], seen["stopped_message_id"]);
    assert_eq!(stopped[0]["status"], "stopped", "{:#}", stopped[0]);

    assert!(is_uuid(seen["completion_message_id"].as_str().unwrap()));
}

#[test]
fn dify_python_client_newer_routes() {
    let mut sd = SdkDaemon::start();
    sd.import_suggest_app();
    let seen = run_checker(&paths::venv_python(), &script(), &sd.args("newer"));
    // The numeric user's conversation is stored under the user "4711".
    let c = sd.daemon.client();
    assert_eq!(c.conversations("4711").len(), 1);
    assert!(seen["file_id"].as_str().is_some_and(is_uuid), "{seen}");
}
