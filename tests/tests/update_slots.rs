//! A/B slots with the real edgeaid (docs/update.md): a slot is prepared the
//! way an install will (the built edgeaid copied into
//! `<dir>/slots/b/bin/edgeaid`, `manifest.json` written last, the state
//! written pending, then `current` switched), and the daemon's own launcher
//! takes it from there: a healthy slot commits itself; a slot that dies at
//! start is rolled back after `update.max_attempts` starts (this test
//! restarts it as systemd would) with its store snapshot put back; the
//! operator's mark-bad (the conversations the failed version served are
//! carried into the restored store) and rollback; and the refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use edgeai_tests::daemon::{Daemon, DaemonBuilder};
use edgeai_tests::paths;
use serde_json::Value;

/// The version the test "installs" (the binary is the same build; the
/// manifest says what the update calls it).
const NEW: &str = "9.9.0";

fn builder(commit_after_secs: i64, max_attempts: i64) -> DaemonBuilder {
    DaemonBuilder::new()
        .set("update.enabled", true)
        .set("update.commit_after_secs", commit_after_secs)
        .set("update.max_attempts", max_attempts)
}

/// Prepares slot `slot` under `dir` as an install will, and switches to it:
/// 1. `slots/<slot>/bin/edgeaid`: the built edgeaid, mode 0755;
/// 2. `slots/<slot>/manifest.json` last (`{"version": ...}`; the marker that
///    the slot is complete);
/// 3. `update-state.json`, written atomically (temp file, fsync, rename), in
///    format 1: `current` (the slot), `previous` (`"a"`, `"b"` or
///    `"factory"`), `status` `"pending"`, `version`, `previous_version`,
///    `attempts` 0, `max_attempts`, `snapshot` `"none"` (the launcher takes
///    it before the first start), `switched_at` (unix seconds),
///    `committed_at`, `failed_version`, `last_error` null, `history` [];
/// 4. `current` -> `slots/<slot>` (a new link renamed over the old one).
fn install_pending(dir: &Path, slot: &str, max_attempts: u32) {
    let sdir = dir.join("slots").join(slot);
    std::fs::create_dir_all(sdir.join("bin")).expect("creating the slot");
    let bin = sdir.join("bin/edgeaid");
    std::fs::copy(paths::edgeaid(), &bin).expect("copying edgeaid into the slot");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    std::fs::write(sdir.join("manifest.json"), format!("{{\"version\": \"{NEW}\", \"compatible\": \"edgeai-test\"}}\n"))
        .expect("writing the manifest");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let state = serde_json::json!({
        "format": 1,
        "current": slot,
        "previous": "factory",
        "status": "pending",
        "version": NEW,
        "previous_version": env!("CARGO_PKG_VERSION"),
        "attempts": 0,
        "max_attempts": max_attempts,
        "snapshot": "none",
        "switched_at": now,
        "committed_at": null,
        "failed_version": null,
        "last_error": null,
        "history": [],
    });
    let tmp = dir.join(".update-state.json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).expect("creating the state");
        f.write_all(serde_json::to_string_pretty(&state).expect("json").as_bytes()).expect("writing the state");
        f.sync_all().expect("fsync");
    }
    std::fs::rename(&tmp, dir.join("update-state.json")).expect("renaming the state");
    let new_link = dir.join("current.new");
    let _ = std::fs::remove_file(&new_link);
    std::os::unix::fs::symlink(format!("slots/{slot}"), &new_link).expect("link");
    std::fs::rename(&new_link, dir.join("current")).expect("switching current");
}

fn state(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("update-state.json")).expect("reading update-state.json");
    serde_json::from_str(&text).expect("update-state.json is JSON")
}

fn ctl_ok(d: &Daemon, args: &[&str]) -> String {
    let out = d.ctl(args);
    assert!(out.status.success(), "edgeaictl {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `edgeaictl ARGS` fails with exit 1 and this Dify code on stderr.
fn ctl_refused(d: &Daemon, args: &[&str], code: &str) -> String {
    let out = d.ctl(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "edgeaictl {args:?}: {stderr}");
    assert!(stderr.contains(&format!("edgeaictl: {code}: ")), "edgeaictl {args:?}: {stderr}");
    stderr
}

fn status_json(d: &Daemon) -> Value {
    serde_json::from_str(&ctl_ok(d, &["update", "status", "--json"])).expect("update status --json is JSON")
}

fn key_count(db: &Path, id: &str) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
    c.query_row("SELECT count(*) FROM api_keys WHERE id = ?1", [id], |r| r.get(0)).expect("counting keys")
}

/// Every file under `dir` (links as their target) with its bytes, except
/// the daemon's own changing files (the store, its WAL, the socket).
fn snapshot_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in ["update-state.json", "current", "slots/b/manifest.json"] {
        let p = dir.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                out.push((name.to_owned(), std::fs::read_link(&p).expect("link").display().to_string().into_bytes()))
            }
            Ok(_) => out.push((name.to_owned(), std::fs::read(&p).expect("file"))),
            Err(_) => out.push((name.to_owned(), b"<absent>".to_vec())),
        }
    }
    out
}

#[test]
fn a_healthy_pending_slot_commits_itself_and_an_operator_can_roll_it_back() {
    let mut d = builder(2, 3).start();
    let dir = d.dir().to_path_buf();
    // The factory runs; nothing installed.
    let s = status_json(&d);
    assert_eq!((s["running"].as_str(), s["state"].is_null()), (Some("factory"), true), "{s}");
    ctl_refused(&d, &["update", "rollback"], "update_no_previous");
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());

    install_pending(&dir, "b", 3);
    d.start_again();
    // The launcher counted the attempt and exec'd the slot's binary (same pid, same log stream).
    let attempt = d.wait_log_message("update: starting the pending version; it commits itself once healthy, and the start after max_attempts starts without that rolls it back", Duration::from_secs(10));
    assert_eq!((attempt.field_u64("attempt"), attempt.field_str("slot").as_deref()), (Some(1), Some("b")));
    let slots: Vec<String> = d.logs_with_message("starting").iter().filter_map(|l| l.field_str("slot")).collect();
    assert_eq!(slots, vec!["b"]);
    let committed = d.wait_log_message("update: committed; the version is good", Duration::from_secs(120));
    assert_eq!(committed.field_str("version").as_deref(), Some(NEW));
    let st = state(&dir);
    assert_eq!((st["status"].as_str(), st["attempts"].as_u64(), st["current"].as_str()), (Some("good"), Some(1), Some("b")), "{st}");
    assert!(st["committed_at"].as_i64().is_some(), "{st}");
    assert!(!dir.join("update/store-before.db").exists(), "the snapshot goes at the commit");
    let text = ctl_ok(&d, &["update", "status"]);
    assert!(text.contains("status: good") && text.contains("running: b") && text.contains(&format!("version: {NEW} (slot b)")), "{text}");
    let metrics = d.unix_client().get("/metrics").text();
    assert!(metrics.contains(&format!("edgeai_update_info{{slot=\"b\",status=\"good\",version=\"{NEW}\"}} 1")), "{metrics}");

    // Starts of a good slot never count as attempts.
    d.restart();
    d.restart();
    let st = state(&dir);
    assert_eq!((st["status"].as_str(), st["attempts"].as_u64()), (Some("good"), Some(1)), "{st}");
    assert_eq!(status_json(&d)["running"], "b");

    // mark-bad is for a pending version only.
    ctl_refused(&d, &["update", "mark-bad"], "update_not_pending");
    // The operator rolls the committed version back: the daemon answers, drains, exits 75.
    let out = ctl_ok(&d, &["update", "rollback"]);
    assert!(out.contains("rolled back by the operator"), "{out}");
    let code = d.wait_exit(Duration::from_secs(60));
    assert_eq!(code.code(), Some(75), "{code}");
    assert!(std::fs::symlink_metadata(dir.join("current")).is_err(), "back to the factory: no current link");
    d.start_again();
    let s = status_json(&d);
    assert_eq!((s["running"].as_str(), s["state"]["status"].as_str()), (Some("factory"), Some("rolled-back")), "{s}");
    assert_eq!(s["state"]["failed_version"], NEW);
    // Nothing further back.
    let before = snapshot_files(&dir);
    ctl_refused(&d, &["update", "rollback"], "update_no_previous");
    assert_eq!(snapshot_files(&dir), before, "a refusal leaves the files as they were");
    // The admin API recorded the actions in the audit trail.
    let audit = ctl_ok(&d, &["audit", "--json"]);
    assert!(audit.contains("POST /admin/v1/update/rollback"), "{audit}");
}

#[test]
fn a_slot_that_crashes_at_start_is_rolled_back_with_its_store_snapshot() {
    let mut d = builder(600, 3).start();
    let dir = d.dir().to_path_buf();
    let db = dir.join("edgeai.db");
    let (old_key, _) = d.admin().create_key("demo");
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    install_pending(&dir, "b", 3);

    // Attempt 1: the new version runs (it would commit after 600 s) and
    // writes to the store; then it dies (as on a missed watchdog: SIGKILL).
    d.start_again();
    assert_eq!(status_json(&d)["running"], "b");
    assert!(dir.join("update/store-before.db").exists(), "the snapshot is taken before the first start");
    let (new_key, _) = d.admin().create_key("demo");
    d.kill9();
    assert_eq!(state(&dir)["attempts"], 1);

    // Attempts 2 and 3: the slot's binary dies at once (fail point
    // update-slot-crash, which only a process started from a slot obeys).
    for attempt in 2..=3 {
        let out = Command::new(paths::edgeaid())
            .arg("--config")
            .arg(d.config_path())
            .env("FAILPOINTS", "update-slot-crash=return")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("running edgeaid");
        let stderr = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(6), "attempt {attempt} should die of SIGABRT: {}\n{stderr}", out.status);
        assert!(stderr.contains("failpoint update-slot-crash"), "is edgeaid built with failpoints? `{}`\n{stderr}", paths::BUILD_COMMAND);
        let st = state(&dir);
        assert_eq!((st["status"].as_str(), st["attempts"].as_u64()), (Some("pending"), Some(attempt)), "{st}");
    }

    // The 4th start rolls back, before the store opens, and the factory serves.
    d.start_again();
    let rolled = d.wait_log_message("update: rolled back", Duration::from_secs(10));
    assert_eq!(rolled.level(), "ERROR");
    assert_eq!(rolled.field_str("reason").as_deref(), Some(&*format!("3 starts of {NEW} without becoming healthy")));
    let st = state(&dir);
    assert_eq!(
        (st["status"].as_str(), st["current"].as_str(), st["failed_version"].as_str()),
        (Some("rolled-back"), Some("factory"), Some(NEW)),
        "{st}"
    );
    assert_eq!(st["last_error"], format!("3 starts of {NEW} without becoming healthy"));
    assert!(std::fs::symlink_metadata(dir.join("current")).is_err());
    assert_eq!(status_json(&d)["running"], "factory");
    let text = ctl_ok(&d, &["update", "status"]);
    assert!(text.contains("status: rolled-back") && text.contains("without becoming healthy"), "{text}");

    // The store is the snapshot again: the key made before the switch is
    // there, the one the pending version made is not; that one is kept in
    // the pending version's database, set aside whole.
    let kept = dir.join(format!("update/rolled-back-{NEW}.db"));
    assert!(kept.exists(), "the new version's database is kept");
    assert_eq!(key_count(&kept, &new_key), 1);
    assert_eq!(key_count(&kept, &old_key), 1);
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    assert_eq!(key_count(&db, &old_key), 1);
    assert_eq!(key_count(&db, &new_key), 0);
    assert!(!dir.join("update/store-before.db").exists());
}

#[test]
fn mark_bad_restarts_and_the_next_start_rolls_back_keeping_the_conversations_it_served() {
    let mut d = builder(600, 3).start();
    let dir = d.dir().to_path_buf();
    // A conversation before the update.
    let first = d.client().chat_blocking("Name a colour.", "alice", None);
    let conv = first["conversation_id"].as_str().expect("conversation_id").to_owned();
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    install_pending(&dir, "b", 3);
    d.start_again();
    let s = status_json(&d);
    assert_eq!(
        (s["running"].as_str(), s["state"]["status"].as_str(), s["state"]["attempts"].as_u64()),
        (Some("b"), Some("pending"), Some(1)),
        "{s}"
    );
    // The pending version serves users: a turn in the old conversation and a new one.
    d.wait_until_model_ready(Duration::from_secs(120));
    let c = d.client();
    let second = c.chat_blocking("Name another.", "alice", Some(&conv));
    let fresh = c.chat_blocking("Name a fruit.", "bob", None);
    let fresh_conv = fresh["conversation_id"].as_str().expect("conversation_id").to_owned();
    let out = ctl_ok(&d, &["update", "mark-bad"]);
    assert!(out.contains("marked bad by the operator") && out.contains("restarting"), "{out}");
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    assert_eq!(state(&dir)["attempts"], 3);
    d.start_again();
    let s = status_json(&d);
    assert_eq!((s["running"].as_str(), s["state"]["status"].as_str()), (Some("factory"), Some("rolled-back")), "{s}");
    assert!(s["state"]["last_error"].as_str().is_some_and(|e| e.contains("marked bad by the operator")), "{s}");
    // The store is the snapshot again, with what users said to the failed version carried over.
    let c = d.client();
    let turns = c.get(&format!("/v1/messages?user=alice&conversation_id={conv}")).expect_json(200);
    let ids: Vec<&str> = turns["data"].as_array().expect("data").iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, vec![first["message_id"].as_str().expect("id"), second["message_id"].as_str().expect("id")], "{turns}");
    assert_eq!(turns["data"][1]["answer"], second["answer"], "{turns}");
    let turns = c.get(&format!("/v1/messages?user=bob&conversation_id={fresh_conv}")).expect_json(200);
    assert_eq!(turns["data"][0]["id"], fresh["message_id"], "{turns}");
    let carried = s["state"]["history"].as_array().expect("history").iter().find(|e| e["event"] == "carried").cloned();
    let detail = carried.as_ref().and_then(|e| e["detail"].as_str()).unwrap_or_default().to_owned();
    assert!(detail.starts_with("carried into the restored store: conversations 2, messages 2"), "{s}");
    assert!(detail.contains("audit_log"), "the mark-bad itself is an audit entry of the failed version: {s}");
    let logged = d.wait_log_message("update: rolled back", Duration::from_secs(5));
    assert_eq!(logged.field_str("carried").as_deref(), Some(detail.as_str()));
}

#[test]
fn a_failed_self_test_exits_non_zero_and_counts_an_attempt() {
    let mut d = builder(600, 2).failpoint("update-gate-fail", "return").wait_for_model(false).start();
    let dir = d.dir().to_path_buf();
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    install_pending(&dir, "b", 2);
    d.start_again();
    let failed = d.wait_log_message(
        "update: health gate failed; stopping (exit 1) so the next start counts another attempt",
        Duration::from_secs(120),
    );
    assert_eq!(failed.level(), "ERROR");
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(1));
    let st = state(&dir);
    assert_eq!((st["status"].as_str(), st["attempts"].as_u64()), (Some("pending"), Some(1)), "{st}");
    assert!(st["last_error"].as_str().is_some_and(|e| e.contains("self-test failed")), "{st}");
}

#[test]
fn refusals_update_disabled_and_a_corrupt_state() {
    // Disabled: the controls say so, status shows it.
    let d = DaemonBuilder::new().wait_for_model(false).start();
    let stderr = ctl_refused(&d, &["update", "rollback"], "update_disabled");
    assert!(stderr.contains("update.enabled = false"), "{stderr}");
    ctl_refused(&d, &["update", "mark-good"], "update_disabled");
    assert_eq!(status_json(&d)["enabled"], false);
    drop(d);

    // A corrupt state with a current link: the daemon refuses to guess,
    // serves as the installed binary, logs an error and leaves the files.
    let b = builder(600, 3).wait_for_model(false);
    let dir = b.dir().to_path_buf();
    install_pending(&dir, "b", 3);
    std::fs::write(dir.join("update-state.json"), "{\"format\": 1, \"current\": \"b\", \"stat").expect("corrupting the state");
    let before = snapshot_files(&dir);
    let d = b.start();
    let refused = d.wait_log_message(
        "update: refusing to guess which version is good; the installed binary serves and the update files are left as they are",
        Duration::from_secs(10),
    );
    assert_eq!(refused.level(), "ERROR");
    assert!(refused.field_str("error").is_some_and(|e| e.contains("update-state.json is corrupt")), "{refused:?}");
    let s = status_json(&d);
    assert_eq!((s["running"].as_str(), s["current_link"].as_str()), (Some("factory"), Some("b")), "{s}");
    assert!(s["state_error"].as_str().is_some_and(|e| e.contains("corrupt")), "{s}");
    ctl_refused(&d, &["update", "rollback"], "update_state_invalid");
    ctl_refused(&d, &["update", "mark-good"], "update_state_invalid");
    let text = ctl_ok(&d, &["update", "status"]);
    assert!(text.contains("state: UNUSABLE"), "{text}");
    assert_eq!(snapshot_files(&dir), before, "nothing touched the update files");
    assert!(!dir.join("update/store-before.db").exists());
}
