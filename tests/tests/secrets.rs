//! Secrets at rest and in the logs, against the real daemon started with a
//! permissive umask (022, as a shell's): the store (with its WAL and shared
//! memory), the demo key file, uploads, knowledge files and cached prefixes
//! are readable by nobody else; API keys (the demo key, one created with
//! edgeaictl, a wrong one a client sent) never appear in the daemon's log,
//! debug level included. (The dev banner on stdout, printed only with
//! `dev.demo_key_file`, shows the demo key by design; a gateway's config
//! has no `[dev]`.)

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use edgeai_tests::multipart::{field, file, post_form};
use edgeai_tests::DaemonBuilder;
use serde_json::json;

/// Every file and directory under `dir`, except the test's own config.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            walk(&path, out);
        }
        out.push(path);
    }
}

#[test]
fn the_daemons_files_are_private_and_keys_never_reach_the_log() {
    // The process umask is inherited by the daemon; 022 would leave files world-readable.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let d = DaemonBuilder::new().set("log.level", "debug").start();
    let demo_key = d.key().to_owned();

    // A conversation (store + WAL), an upload, a new key, and a wrong key sent by a client.
    let answer = d.client().chat_blocking("What is a PLC?", "alice", None);
    assert!(answer["answer"].is_string(), "{answer}");
    post_form(&d.client(), "/v1/files/upload", &[field("user", "alice"), file("file", "notes.txt", "text/plain", b"line one\n")])
        .expect_json(201);
    let created = d.ctl(&["keys", "create", "--app", "demo"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let new_key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(new_key.starts_with("app-"), "{new_key}");
    let wrong_key = "app-ThisIsNotAKeyButLooksLikeOne42";
    let refused = d.client().with_key(wrong_key).post_json("/v1/chat-messages", &json!({"query": "hi", "user": "mallory", "inputs": {}}));
    assert_eq!(refused.status, 401, "{}", refused.text());
    let used = d.client().with_key(&new_key).chat_blocking("And Modbus?", "bob", None);
    assert!(used["answer"].is_string(), "{used}");

    let mut files = Vec::new();
    walk(d.dir(), &mut files);
    let config = d.dir().join("edgeaid.toml");
    let mut checked = 0;
    for f in files.iter().filter(|f| **f != config) {
        let mode = std::fs::symlink_metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "{} is open to other users: mode {:o}", f.display(), mode & 0o7777);
        checked += 1;
    }
    for name in ["edgeai.db", "edgeai.db-wal", "demo-key", "files"] {
        assert!(files.iter().any(|f| f.ends_with(name)), "{name} was not created: {files:?}");
    }
    assert!(checked >= 5, "{files:?}");

    // The log of the whole run, debug included, holds none of the keys.
    let log: String = d.logs().into_iter().map(|l| l.raw + "\n").collect();
    assert!(log.lines().count() > 20, "too little logged to judge:\n{log}");
    for (what, key) in [("the demo key", demo_key.as_str()), ("a created key", new_key.as_str()), ("a wrong key", wrong_key)] {
        let secret = &key["app-".len()..];
        assert!(
            !log.contains(secret),
            "{what} appears in the log:\n{}",
            log.lines().filter(|l| l.contains(secret)).collect::<Vec<_>>().join("\n")
        );
    }
}
