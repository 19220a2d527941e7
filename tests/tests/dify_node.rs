//! Dify's own Node SDK (npm `dify-client`, pinned in tests/node/package.json
//! and package-lock.json, installed by scripts/setup.sh with `npm ci`) works
//! against edgeaid unchanged: every SDK method that applies to chat and
//! completion apps is called by tests/node/check.mjs, which checks each
//! answer; what it saw is cross-checked here through the HTTP API.
//!
//! `core` and `newer` split the checks as in dify_python.rs. Without Node.js
//! on `$PATH` the tests print a SKIP line and pass; scripts/setup.sh installs
//! it (Debian `nodejs` and `npm`).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::PathBuf;

use edgeai_tests::sdk::{run_checker, SdkDaemon, USER};
use edgeai_tests::{is_uuid, paths};

/// `node` and the checker, or `None` (after a loud SKIP line) without Node.js.
fn node_and_script(test: &str) -> Option<(PathBuf, PathBuf)> {
    let Some(node) = paths::node() else {
        eprintln!("SKIP {test}: Node.js is not installed (no `node` on PATH); scripts/setup.sh installs Debian's nodejs and npm");
        return None;
    };
    Some((node, paths::node_checker_dir().join("check.mjs")))
}

#[test]
fn dify_node_client_core_methods() {
    let Some((node, script)) = node_and_script("dify_node_client_core_methods") else { return };
    let sd = SdkDaemon::start();
    let seen = run_checker(&node, &script, &sd.args("core"));
    let c = sd.daemon.client();

    // What the SDK saw is what the daemon stored.
    let conv = seen["conversation_id"].as_str().unwrap();
    let stored = c.messages(USER, conv);
    assert_eq!(stored.len(), 2, "{stored:#?}");
    assert_eq!(stored[0]["id"], seen["blocking_message_id"]);
    assert_eq!(stored[0]["answer"], seen["blocking_answer"]);
    assert_eq!(stored[1]["answer"], seen["streamed_answer"]);
    assert!(stored.iter().all(|m| m["status"] == "normal"), "{stored:#?}");
    assert_eq!(stored[0]["feedback"]["rating"], "like", "{:#}", stored[0]);
    let convs = c.conversations(USER);
    let names: Vec<&str> = convs.iter().filter_map(|x| x["name"].as_str()).collect();
    assert_eq!(names, ["Line 2 valve"], "{convs:#?}");
    let events: Vec<&str> = seen["events"].as_array().unwrap().iter().filter_map(|e| e.as_str()).collect();
    assert!(events.iter().filter(|e| **e == "message").count() >= 2, "{events:?}");
    assert!(seen["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let deleted = seen["deleted_conversation_id"].as_str().unwrap();
    c.get(&format!("/v1/messages?user={USER}&conversation_id={deleted}")).expect_dify_error(404, "not_found");

    let stopped_conv = seen["stopped_conversation_id"].as_str().unwrap();
    let stopped = c.with_key(&sd.long_key).messages(USER, stopped_conv);
    assert_eq!(stopped.len(), 1, "{stopped:#?}");
    assert_eq!(stopped[0]["id"], seen["stopped_message_id"]);
    assert_eq!(stopped[0]["status"], "stopped", "{:#}", stopped[0]);

    assert!(is_uuid(seen["completion_message_id"].as_str().unwrap()));
}

#[test]
fn dify_node_client_newer_routes() {
    let Some((node, script)) = node_and_script("dify_node_client_newer_routes") else { return };
    let mut sd = SdkDaemon::start();
    sd.import_suggest_app();
    let seen = run_checker(&node, &script, &sd.args("newer"));
    assert_eq!(sd.daemon.client().conversations("4711").len(), 1);
    assert!(seen["file_id"].as_str().is_some_and(is_uuid), "{seen}");
}
