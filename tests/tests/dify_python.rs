//! Dify's own Python SDK (`dify-client`, installed by scripts/setup.sh into
//! `.cache/venv`) works against edgeaid unchanged: blocking and streaming
//! chat, conversations, messages and a completion app
//! (tests/python/dify_client_check.py), cross-checked here through the API.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::process::Command;

use edgeai_tests::{paths, DaemonBuilder};
use serde_json::Value;

#[test]
fn dify_python_client_chats_streams_and_lists() {
    let python = paths::venv_python();
    let script = paths::repo_root().join("tests/python/dify_client_check.py");
    let d = DaemonBuilder::new().start();
    let (_, completion_key) = d.admin().create_key("summarise");
    let base_url = format!("http://{}/v1", d.addr());
    let out = Command::new(&python).arg(&script).args([base_url.as_str(), d.key(), completion_key.as_str(), "py-user"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed ({}):\n{stderr}\n{stdout}", script.display(), out.status);
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}): {stdout}"));

    let events: Vec<&str> = seen["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(events.last(), Some(&"message_end"), "{events:?}");
    assert!(events.iter().filter(|e| **e == "message").count() >= 2, "{events:?}");
    assert!(seen["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(seen["conversations"], 1);
    assert_eq!(seen["messages"], 2);

    // What the SDK saw is what the daemon stored.
    let conv = seen["conversation_id"].as_str().unwrap();
    let stored = d.client().messages("py-user", conv);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["answer"], seen["blocking_answer"]);
    assert_eq!(stored[1]["answer"], seen["streamed_answer"]);
    assert!(stored.iter().all(|m| m["status"] == "normal"));
}
