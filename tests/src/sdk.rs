//! Running Dify's client SDKs against a test daemon: the checker scripts
//! (tests/python/dify_client_check.py, tests/node/check.mjs) call every SDK
//! method and print one JSON line `{"checks": [{"name", "ok", "detail"}],
//! "seen": {...}}`. This module starts a daemon with the apps they need,
//! runs a checker, and fails the test listing every check that failed.
//! Owns only that protocol; what is checked lives in the scripts and in the
//! tests' cross-checks through the HTTP API.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::daemon::{Daemon, DaemonBuilder, LONG_APP};

/// The end user the checkers act as.
pub const USER: &str = "sdk-user";

/// Id of the chat app [`SdkDaemon::import_suggest_app`] imports.
pub const SUGGEST_APP: &str = "suggest";

/// A daemon with the base apps and the long app, and a key for each app.
pub struct SdkDaemon {
    pub daemon: Daemon,
    pub completion_key: String,
    pub long_key: String,
    /// The key of the [`SUGGEST_APP`] once imported, `-` before (or when the
    /// daemon refused the import).
    pub suggest_key: String,
}

impl SdkDaemon {
    pub fn start() -> SdkDaemon {
        // The long app runs until stopped; 400 tokens is ample and bounded.
        let daemon = DaemonBuilder::new().long_app(400).start();
        let (_, completion_key) = daemon.admin().create_key("summarise");
        let (_, long_key) = daemon.admin().create_key(LONG_APP);
        SdkDaemon { daemon, completion_key, long_key, suggest_key: "-".into() }
    }

    /// Imports (admin API) a chat app with Dify's suggested questions after
    /// answer turned on, and keeps its key. A daemon that refuses the import
    /// (one without the feature) leaves the key `-`, and the checker fails
    /// its checks of the feature; the refusal is printed here.
    pub fn import_suggest_app(&mut self) {
        let app = serde_json::json!({
            "id": SUGGEST_APP, "name": "Suggest", "mode": "chat", "pre_prompt": "You are a helpful assistant. Answer briefly.",
            "suggested_questions_after_answer": {"enabled": true},
            "completion_params": {"temperature": 0.0, "max_tokens": 32, "seed": 42},
        });
        match self.daemon.admin().post("/admin/v1/apps", &app) {
            Ok(_) => self.suggest_key = self.daemon.admin().create_key(SUGGEST_APP).1,
            Err(e) => eprintln!("importing the app {SUGGEST_APP:?} with suggested questions on failed: {e}"),
        }
    }

    /// `GROUP BASE_URL CHAT_KEY COMPLETION_KEY LONG_KEY SUGGEST_KEY USER`, the checkers' arguments.
    pub fn args(&self, group: &str) -> Vec<String> {
        let d = &self.daemon;
        let keys = [d.key(), &self.completion_key, &self.long_key, &self.suggest_key].map(str::to_owned);
        [vec![group.to_owned(), format!("http://{}/v1", d.addr())], keys.to_vec(), vec![USER.to_owned()]].concat()
    }
}

impl SdkDaemon {
    /// Cross-checks what a `core` checker saw against what the daemon
    /// stored, through the HTTP API: the answers, the last feedback, the
    /// rename, the deleted conversation, the stopped run.
    #[track_caller]
    pub fn cross_check_core(&self, seen: &Value) {
        let c = self.daemon.client();
        let field = |k: &str| seen[k].as_str().unwrap_or_else(|| panic!("the checker saw no {k}: {seen}")).to_owned();
        let stored = c.messages(USER, &field("conversation_id"));
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
        let events: Vec<&str> = seen["events"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        assert!(events.iter().filter(|e| **e == "message").count() >= 2, "{events:?}");
        assert!(seen["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0), "{seen}");
        // The deleted conversation is gone from the store.
        let deleted = field("deleted_conversation_id");
        c.get(&format!("/v1/messages?user={USER}&conversation_id={deleted}")).expect_dify_error(404, "not_found");
        // The stopped answer is stored as stopped, in its own conversation.
        let stopped = c.with_key(&self.long_key).messages(USER, &field("stopped_conversation_id"));
        assert_eq!(stopped.len(), 1, "{stopped:#?}");
        assert_eq!(stopped[0]["id"], seen["stopped_message_id"]);
        assert_eq!(stopped[0]["status"], "stopped", "{:#}", stopped[0]);
        assert!(crate::is_uuid(&field("completion_message_id")));
    }
}

/// Runs a checker, fails the test with every failed check, and returns `seen`.
#[track_caller]
pub fn run_checker(program: &Path, script: &Path, args: &[String]) -> Value {
    let out = Command::new(program)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {} {} failed: {e}", program.display(), script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed ({}):\n{stderr}\n{stdout}", script.display(), out.status);
    let report: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{} printed no JSON report ({e}):\n{stderr}\n{stdout}", script.display()));
    let checks = report["checks"].as_array().unwrap_or_else(|| panic!("no checks in {report}"));
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c["ok"] != Value::Bool(true))
        .map(|c| format!("  FAIL {}: {}", c["name"].as_str().unwrap_or("?"), c["detail"].as_str().unwrap_or("")))
        .collect();
    eprintln!("{}: {} checks, {} failed", script.display(), checks.len(), failed.len());
    assert!(!checks.is_empty(), "{} ran no checks", script.display());
    assert!(failed.is_empty(), "{} of {} SDK checks failed:\n{}\nstderr:\n{stderr}", failed.len(), checks.len(), failed.join("\n"));
    report["seen"].clone()
}
