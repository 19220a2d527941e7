//! Dify's own Node SDK (npm `dify-client`, pinned in tests/node/package.json
//! and package-lock.json, installed by scripts/setup.sh with `npm ci`) works
//! against edgeaid unchanged: every SDK method that applies to chat and
//! completion apps is called by tests/node/check.mjs, which checks each
//! answer; what it saw is cross-checked here through the HTTP API.
//!
//! `core` and `newer` split the checks as in dify_python.rs. Without Node.js
//! on `$PATH` the tests print a SKIP line and pass (under CI, `CI` set, they
//! fail instead); scripts/setup.sh installs
//! it (Debian `nodejs` and `npm`).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::PathBuf;

use edgeai_tests::sdk::{run_checker, SdkDaemon};
use edgeai_tests::{is_uuid, paths};

/// `node` and the checker, or `None` (after a loud SKIP line) without Node.js.
fn node_and_script(test: &str) -> Option<(PathBuf, PathBuf)> {
    let Some(node) = paths::node() else {
        assert!(std::env::var_os("CI").is_none(), "{test}: Node.js is missing under CI; scripts/setup.sh installs Debian's nodejs and npm");
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
    sd.cross_check_core(&seen);
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
