//! `edgeaictl backup create|verify|restore` against the real daemon: a
//! backup taken while a load generator writes (cached chat turns, each a
//! new conversation and message), verified offline, restored into a fresh
//! state directory and served by a second daemon: apps and their versions,
//! API keys, conversations and messages up to the snapshot (none started
//! after it), the knowledge base searchable by its restored vectors, and
//! the config files. Bad input: a missing file, a truncated archive, a
//! member with a wrong sha256, a restore into a running daemon's state
//! directory, an unwritable FILE and an unreachable daemon each fail with
//! their own error and replace nothing.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeai_tests::{paths, Daemon, DaemonBuilder};
use serde_json::Value;

const QUESTION: &str = "What is a PLC? Answer in one sentence.";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `edgeaictl ARGS` (with the daemon's socket), which must exit `code`; its stdout and stderr.
#[track_caller]
fn ctl(d: &Daemon, args: &[&str], code: i32) -> (String, String) {
    check(d.ctl(args), args, code)
}

/// `edgeaictl ARGS` without a daemon (offline commands).
#[track_caller]
fn offline(args: &[&str], code: i32) -> (String, String) {
    let out = std::process::Command::new(paths::edgeaictl()).args(args).stdin(std::process::Stdio::null()).output().unwrap();
    check(out, args, code)
}

#[track_caller]
fn check(out: Output, args: &[&str], code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "edgeaictl {args:?}\nstdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn write_app(dir: &Path, pre_prompt: &str) -> PathBuf {
    let path = dir.join("extra-app.json");
    let def = serde_json::json!({"id": "extra", "name": "Extra", "mode": "chat", "pre_prompt": pre_prompt});
    std::fs::write(&path, def.to_string()).unwrap();
    path
}

#[test]
fn a_backup_taken_under_load_restores_into_a_fresh_daemon() {
    let d1 = DaemonBuilder::new().set("cache.enabled", true).with_embedder().start();
    let dir1 = d1.dir().to_path_buf();

    // State worth keeping: an app with two versions, a key, a knowledge base, a chat.
    ctl(&d1, &["apps", "import", s(&write_app(&dir1, "Be brief."))], 0);
    ctl(&d1, &["apps", "import", s(&write_app(&dir1, "Be very brief."))], 0);
    let versions = ctl(&d1, &["--json", "apps", "versions", "extra"], 0).0;
    let (_, secret) = d1.admin().create_key("demo");
    let manual = paths::repo_root().join("configs/knowledge/plant-manuals/plc-alarms.md");
    ctl(&d1, &["datasets", "create", "manuals"], 0);
    ctl(&d1, &["datasets", "ingest", s(&manual), "--dataset", "manuals"], 0);
    let c1 = d1.client();
    let first = c1.chat_blocking(QUESTION, "alice", None);
    let alice_conv = first["conversation_id"].as_str().unwrap().to_owned();

    // The load generator: the same question from new users, answered from
    // the cache, each a new conversation and message; (user, conversation)
    // in the order they finished.
    let done: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (done, stop, c) = (Arc::clone(&done), Arc::clone(&stop), d1.client());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 2000 {
                let user = format!("load-{i}");
                let r = c.chat_blocking(QUESTION, &user, None);
                assert_eq!(r["metadata"]["cache"]["hit"], true, "the load is cached turns: {r}");
                done.lock().unwrap().push((user, r["conversation_id"].as_str().unwrap().to_owned()));
                i += 1;
            }
        })
    };
    let count = || done.lock().unwrap().len();
    let wait_for = |n: usize| {
        let started = Instant::now();
        while count() < n {
            assert!(started.elapsed() < Duration::from_secs(120), "the load generator is stuck at {} turns", count());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(3);

    let file = dir1.join("state.tar");
    let before = count();
    let (out, _) = ctl(&d1, &["backup", "create", s(&file)], 0);
    let after = count();
    assert!(out.contains(&format!("to {}", file.display())), "{out}");
    wait_for(after + 3);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let turns = done.lock().unwrap().clone();
    eprintln!("load: {before} turns before the backup, {after} when it ended, {} in all", turns.len());
    assert!(!listing(&dir1).iter().any(|n| n.contains(".partial") || n.starts_with(".backup-")), "{:?}", listing(&dir1));

    // verify: the manifest lists the database, the vector files and the config.
    let (out, _) = offline(&["--json", "backup", "verify", s(&file)], 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let m = &v["manifest"];
    assert_eq!(m["format"], "edgeai-backup/1", "{m:#}");
    assert_eq!(m["edgeai_version"], env!("CARGO_PKG_VERSION"));
    assert!(m["schema_version"].as_u64().unwrap() > 0);
    let names: Vec<&str> = m["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "store/edgeai.db", "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("knowledge/") && n.ends_with("/vectors/MANIFEST")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("knowledge/") && n.contains("/vectors/seg-")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("knowledge/") && n.contains("/sources/")), "{names:?}");
    assert!(names.contains(&"config/edgeaid.toml"), "{names:?}");
    let (out, _) = offline(&["backup", "verify", s(&file)], 0);
    assert!(out.contains(": ok: ") && out.contains("every sha256 matches, database integrity ok"), "{out}");

    // Restore into a fresh state directory and serve it from a second daemon.
    let b2 = DaemonBuilder::new().set("cache.enabled", true).with_embedder();
    let state = b2.dir().join("state");
    let etc = b2.dir().join("etc");
    let (out, _) = offline(&["backup", "restore", s(&file), "--state-dir", s(&state), "--config-dir", s(&etc)], 0);
    assert!(out.contains(&format!("into {}", state.display())), "{out}");
    assert!(!out.contains("previous"), "nothing was there before: {out}");
    assert_eq!(std::fs::read(etc.join("edgeaid.toml")).unwrap(), std::fs::read(d1.config_path()).unwrap());
    let d2 =
        b2.set("store.path", s(&state.join("edgeai.db")).to_owned()).set("knowledge.dir", s(&state.join("knowledge")).to_owned()).start();

    // Apps and versions, keys.
    assert_eq!(ctl(&d2, &["--json", "apps", "versions", "extra"], 0).0, versions);
    let c2 = d2.client().with_key(&secret);
    let alice = c2.messages("alice", &alice_conv);
    assert_eq!(alice.len(), 1, "{alice:#?}");
    assert_eq!(alice[0]["answer"], first["answer"]);
    // Conversations and messages: all finished before the backup began,
    // none begun after it ended, and whole ones in between.
    for (i, (user, conv)) in turns.iter().enumerate() {
        let convs = c2.conversations(user);
        if i < before {
            assert_eq!(convs.len(), 1, "turn {i} finished before the backup but is not restored");
        } else if i > after {
            assert!(convs.is_empty(), "turn {i} began after the backup but is restored: {convs:?}");
        }
        if !convs.is_empty() {
            assert_eq!(convs[0]["id"], conv.as_str());
            assert_eq!(c2.messages(user, conv).len(), 1, "turn {i}: a conversation without its message");
        }
    }
    // The knowledge base, found by its restored vectors.
    let hits: Value = serde_json::from_str(
        &ctl(&d2, &["--json", "datasets", "search", "manuals", "how do I clear the PLC alarm", "--method", "semantic"], 0).0,
    )
    .unwrap();
    let records = hits["records"].as_array().unwrap();
    assert!(!records.is_empty(), "no semantic hit after the restore: {hits:#}");
    assert_eq!(records[0]["segment"]["document"]["name"], "plc-alarms.md", "{hits:#}");
}

/// Offset of member `index` (0: the manifest) of an uncompressed tar, and its size.
fn member_at(bytes: &[u8], index: usize) -> (usize, usize) {
    let mut at = 0;
    for i in 0.. {
        let size_field = std::str::from_utf8(&bytes[at + 124..at + 135]).unwrap().trim_matches(|c: char| c == '\0' || c == ' ');
        let size = usize::from_str_radix(size_field, 8).unwrap();
        let name = std::str::from_utf8(&bytes[at..at + 100]).unwrap().trim_end_matches('\0');
        // A GNU long name takes a header and its data before the real one.
        if name == "././@LongLink" {
            at += 512 + size.div_ceil(512) * 512;
            continue;
        }
        if i == index {
            return (at + 512, size);
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    unreachable!()
}

#[test]
fn bad_archives_and_a_running_daemon_replace_nothing() {
    let mut d = DaemonBuilder::new().start();
    let dir = d.dir().to_path_buf();
    let good = dir.join("good.tar");
    ctl(&d, &["backup", "create", s(&good)], 0);
    let bytes = std::fs::read(&good).unwrap();

    // A state directory with something in it, to see nothing replaced.
    let state = dir.join("target-state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("marker"), "old").unwrap();
    let untouched = |why: &str| {
        assert_eq!(listing(&state), ["marker"], "{why}");
        let siblings: Vec<String> = listing(&dir).into_iter().filter(|n| n.starts_with("target-state.")).collect();
        assert!(siblings.is_empty(), "{why}: {siblings:?}");
    };

    // A missing file.
    let missing = dir.join("no-such.tar");
    let (_, err) = offline(&["backup", "verify", s(&missing)], 65);
    assert!(err.contains("cannot read the backup") && err.contains("No such file"), "{err}");
    let (_, err) = offline(&["backup", "restore", s(&missing), "--state-dir", s(&state)], 65);
    assert!(err.contains("cannot read the backup"), "{err}");
    untouched("missing file");

    // A truncated archive: cut inside the database.
    let (db_at, db_size) = member_at(&bytes, 1);
    let cut = dir.join("cut.tar");
    std::fs::write(&cut, &bytes[..db_at + db_size / 2]).unwrap();
    let (_, err) = offline(&["backup", "verify", s(&cut)], 65);
    assert!(err.contains("is not a good backup") && err.contains("truncated"), "{err}");
    let (_, err) = offline(&["backup", "restore", s(&cut), "--state-dir", s(&state)], 65);
    assert!(err.contains("truncated"), "{err}");
    untouched("truncated archive");

    // One byte of the database changed: its sha256 no longer matches.
    let mut altered = bytes.clone();
    altered[db_at + db_size - 10] ^= 0x5a;
    let bad_sha = dir.join("altered.tar");
    std::fs::write(&bad_sha, &altered).unwrap();
    let (_, err) = offline(&["backup", "verify", s(&bad_sha)], 65);
    assert!(err.contains("member store/edgeai.db has sha256") && err.contains("the manifest says"), "{err}");
    let (_, err) = offline(&["backup", "restore", s(&bad_sha), "--state-dir", s(&state)], 65);
    assert!(err.contains("has sha256"), "{err}");
    untouched("wrong sha256");

    // A restore into the running daemon's state directory is refused.
    let before = listing(&dir);
    let (_, err) = offline(&["backup", "restore", s(&good), "--state-dir", s(&dir)], 1);
    assert!(err.contains("in use by a running edgeaid") && err.contains(&format!("process {}", d.pid())), "{err}");
    assert_eq!(listing(&dir), before, "nothing changed in the daemon's directory");
    let parent_names = listing(dir.parent().unwrap());
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(!parent_names.iter().any(|n| n.starts_with(&format!("{name}."))), "{parent_names:?}");
    d.admin().status();

    // An unwritable FILE: exit 73, nothing left.
    let (_, err) = ctl(&d, &["backup", "create", s(&dir.join("no-dir/b.tar"))], 73);
    assert!(err.contains("cannot write the backup"), "{err}");

    // A good restore over an existing directory keeps the old one.
    let (out, _) = offline(&["backup", "restore", s(&good), "--state-dir", s(&state)], 0);
    let previous: Vec<String> = listing(&dir).into_iter().filter(|n| n.starts_with("target-state.previous-")).collect();
    assert_eq!(previous.len(), 1, "{:?}", listing(&dir));
    assert!(out.contains(&format!("the previous state is kept in {}", dir.join(&previous[0]).display())), "{out}");
    assert_eq!(std::fs::read_to_string(dir.join(&previous[0]).join("marker")).unwrap(), "old");
    assert!(listing(&state).contains(&"edgeai.db".to_owned()), "{:?}", listing(&state));
    assert!(!dir.join("target-state.restore-tmp").exists());

    // No daemon: exit 69, no file.
    d.sigterm();
    d.wait_exit(Duration::from_secs(60));
    let late = dir.join("late.tar");
    ctl(&d, &["backup", "create", s(&late)], 69);
    assert!(!late.exists());
    assert!(!listing(&dir).iter().any(|n| n.contains(".partial")), "{:?}", listing(&dir));
}
