//! Dify's own SDKs against edgeaid's DSL apps, unchanged: the Node SDK's
//! `runWorkflow` and `createChatMessage` (tests/node/workflow_check.mjs)
//! and the Python SDK (tests/python/dify_workflow_check.py; its newest
//! release has no workflow class, so a workflow run goes through its own
//! `_send_request`). What they saw is cross-checked through the HTTP API.
//! Without Node.js the Node test prints a SKIP line (under CI it fails).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use edgeai_tests::sdk::run_checker;
use edgeai_tests::{paths, Client, Daemon, DaemonBuilder};

const USER: &str = "sdk-user";

/// A daemon with the workflow and chatflow fixtures imported, and a key of each.
fn daemon() -> (Daemon, String, String) {
    let d = DaemonBuilder::new().start();
    let mut keys = Vec::new();
    for (file, id) in [("workflow-llm.yml", "ask"), ("chatflow.yml", "friendly")] {
        let path = paths::repo_root().join("tests/fixtures/dsl").join(file);
        let out = d.ctl(&["apps", "import", path.to_str().unwrap(), "--id", id]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        keys.push(d.admin().create_key(id).1);
    }
    let chatflow = keys.pop().unwrap();
    let workflow = keys.pop().unwrap();
    (d, workflow, chatflow)
}

fn args(d: &Daemon, workflow: &str, chatflow: &str) -> Vec<String> {
    vec![format!("http://{}/v1", d.addr()), workflow.to_owned(), chatflow.to_owned(), USER.to_owned()]
}

/// The runs and the conversation the checker reports exist as the API stores them.
fn cross_check(c: &Client, chat: &Client, seen: &serde_json::Value) {
    let run = seen["run_id"].as_str().or_else(|| seen["blocking_run_id"].as_str()).unwrap();
    assert_eq!(c.get(&format!("/v1/workflows/run/{run}")).expect_json(200)["status"], "succeeded");
    let conv = seen["conversation_id"].as_str().unwrap();
    let msgs = chat.get(&format!("/v1/messages?conversation_id={conv}&user={USER}")).expect_json(200);
    assert_eq!(msgs["data"].as_array().unwrap().len(), 2, "{msgs}");
}

#[test]
fn dify_python_client_runs_workflows_and_chatflows() {
    let (d, wk, ck) = daemon();
    let script = paths::repo_root().join("tests/python/dify_workflow_check.py");
    let seen = run_checker(&paths::venv_python(), &script, &args(&d, &wk, &ck));
    cross_check(&d.client().with_key(&wk), &d.client().with_key(&ck), &seen);
}

#[test]
fn dify_node_client_runs_workflows_and_chatflows() {
    let Some(node) = paths::node() else {
        assert!(std::env::var_os("CI").is_none(), "Node.js is missing under CI; scripts/setup.sh installs Debian's nodejs and npm");
        eprintln!("SKIP dify_node_client_runs_workflows_and_chatflows: Node.js is not installed (no `node` on PATH)");
        return;
    };
    let (d, wk, ck) = daemon();
    let script = paths::node_checker_dir().join("workflow_check.mjs");
    let seen = run_checker(&node, &script, &args(&d, &wk, &ck));
    cross_check(&d.client().with_key(&wk), &d.client().with_key(&ck), &seen);
}
