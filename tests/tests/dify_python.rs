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

use edgeai_tests::sdk::{run_checker, SdkDaemon};
use edgeai_tests::{is_uuid, paths};

fn script() -> std::path::PathBuf {
    paths::repo_root().join("tests/python/dify_client_check.py")
}

#[test]
fn dify_python_client_core_methods() {
    let sd = SdkDaemon::start();
    let seen = run_checker(&paths::venv_python(), &script(), &sd.args("core"));
    sd.cross_check_core(&seen);
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
