//! kill -9 at every step of an update (docs/update.md, "Failpoints"): the
//! real edgeaid installs a signed bundle of itself with the fail point
//! `update-kill=return(STEP)`, which SIGKILLs the process at STEP; the test
//! then starts it again without fail points, as systemd would, and checks
//! that exactly one consistent version comes up: the running one when the
//! install had not reached the state file, else the new one (committed by
//! its health gate) or, after mark-bad, the old one with the conversation
//! the failed version served carried over. Every time the store opens, the
//! conversation acknowledged before the update is there, and no half
//! received bundle is left behind.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgeai_tests::daemon::{Daemon, DaemonBuilder};
use edgeai_tests::paths;
use serde_json::Value;

/// The version the bundle calls the built edgeaid.
const NEW: &str = "9.9.0";

const COMMITTED: &str = "update: committed; the version is good";

fn ctl_offline(args: &[&str]) {
    let out = Command::new(paths::edgeaictl()).args(args).output().expect("running edgeaictl");
    assert!(out.status.success(), "edgeaictl {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// A daemon with updates on, trusting a fresh key, and a bundle of the
/// built edgeaid signed with it; `kill_at` set as its fail point; the
/// health gate commits `commit_after_secs` after the start.
struct Setup {
    d: Daemon,
    bundle: PathBuf,
    _work: tempfile::TempDir,
}

fn setup(kill_at: &str, commit_after_secs: i64) -> Setup {
    setup_with(&format!("return({kill_at})"), commit_after_secs, false)
}

/// [`setup`] with the `update-kill` actions given whole; `migrating`: the
/// installed version's store schema is one newer than the running one's
/// (fail point `update-slot-migration`: a slot's process migrates to v7,
/// which the factory binary does not know).
fn setup_with(kill_actions: &str, commit_after_secs: i64, migrating: bool) -> Setup {
    let work = tempfile::tempdir().expect("tempdir");
    let trust = work.path().join("trust.d");
    std::fs::create_dir(&trust).expect("trust dir");
    let key = work.path().join("key");
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    ctl_offline(&["keys", "gen-signing", "--out", &s(&key)]);
    std::fs::copy(work.path().join("key.pub"), trust.join("key.pub")).expect("trusting the key");
    let bundle = work.path().join("new.bundle");
    let compatible = format!("edgeai-{}", std::env::consts::ARCH);
    ctl_offline(&["bundle", "create", "--version", NEW, "--compatible", &compatible, "--binary", &s(&paths::edgeaid()), &s(&bundle)]);
    ctl_offline(&["bundle", "sign", "--key", &s(&key), &s(&bundle)]);
    let d = DaemonBuilder::new()
        .set("update.enabled", true)
        .set("update.commit_after_secs", commit_after_secs)
        .set("update.max_attempts", 3)
        .set("update.trust_dir", s(&trust))
        .failpoint("update-kill", kill_actions);
    let d = if migrating { d.failpoint("update-slot-migration", "return") } else { d };
    let d = d.start();
    Setup { d, bundle, _work: work }
}

fn status(d: &Daemon) -> Value {
    let out = d.ctl(&["update", "status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("update status --json is JSON")
}

/// `edgeaictl update install` of the bundle; its output (it fails when the daemon dies under it).
fn install(d: &Daemon, bundle: &Path) -> std::process::Output {
    d.ctl(&["update", "install", bundle.to_str().expect("utf-8 path")])
}

fn assert_killed(d: &mut Daemon, step: &str) {
    let st = d.wait_exit(Duration::from_secs(120));
    assert_eq!(st.signal(), Some(9), "edgeaid should die by SIGKILL at step {step}: {st}\n{}", d.dump_logs());
}

/// A conversation's answers as the Dify API lists them.
fn answers(d: &Daemon, user: &str, conversation: &str) -> Vec<String> {
    let list = d.client().get(&format!("/v1/messages?user={user}&conversation_id={conversation}")).expect_json(200);
    list["data"].as_array().expect("data").iter().map(|m| m["answer"].as_str().unwrap_or_default().to_owned()).collect()
}

/// A chat turn acknowledged by the daemon: (conversation id, answer).
fn acknowledged_turn(d: &Daemon, user: &str) -> (String, String) {
    let a = d.client().chat_blocking("Name a colour.", user, None);
    (a["conversation_id"].as_str().expect("conversation_id").to_owned(), a["answer"].as_str().expect("answer").to_owned())
}

fn incoming_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("update"))
        .map(|rd| {
            rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("incoming-")).collect()
        })
        .unwrap_or_default()
}

/// Killed while the install had not written the state: the next start is
/// the running version, with no update state and nothing half received.
fn killed_before_the_state_is_written(step: &str) {
    let Setup { mut d, bundle, _work } = setup(step, 1);
    let dir = d.dir().to_path_buf();
    let (conv, answer) = acknowledged_turn(&d, "alice");
    let out = install(&d, &bundle);
    assert!(!out.status.success(), "the install cannot answer when killed at {step}");
    assert_killed(&mut d, step);
    assert!(!incoming_left(&dir).is_empty(), "the kill at {step} left the received bundle");
    d.set_failpoints(None);
    d.start_again();
    let removed =
        d.wait_log_message("update: removed a bundle an earlier start did not finish receiving or installing", Duration::from_secs(5));
    assert!(removed.field_u64("bytes").is_some_and(|b| b > 0), "{removed:?}");
    assert!(incoming_left(&dir).is_empty(), "{:?}", incoming_left(&dir));
    let s = status(&d);
    assert_eq!((s["running"].as_str(), s["state"].is_null()), (Some("factory"), true), "killed at {step}: {s}");
    assert!(!dir.join("update-state.json").exists());
    assert_eq!(answers(&d, "alice", &conv), vec![answer]);
    // The operator installs again and it goes through.
    assert!(install(&d, &bundle).status.success());
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    d.start_again();
    d.wait_log_message(COMMITTED, Duration::from_secs(120));
}

/// The next start (without fail points) commits the new version after
/// `attempts` counted starts; the conversation from before is there.
fn commits_after(d: &mut Daemon, step: &str, attempts: u64, conv: &str, answer: &str) {
    d.set_failpoints(None);
    d.start_again();
    let committed = d.wait_log_message(COMMITTED, Duration::from_secs(120));
    assert_eq!(committed.field_str("version").as_deref(), Some(NEW));
    let s = status(d);
    assert_eq!(
        (s["running"].as_str(), s["state"]["status"].as_str(), s["state"]["attempts"].as_u64(), s["state"]["version"].as_str()),
        (s["state"]["current"].as_str(), Some("good"), Some(attempts), Some(NEW)),
        "killed at {step}: {s}"
    );
    assert_ne!(s["running"], "factory", "{s}");
    assert!(incoming_left(d.dir()).is_empty());
    assert!(!d.dir().join("update/store-before.db").exists(), "the snapshot goes at the commit");
    assert_eq!(answers(d, "alice", conv), vec![answer.to_owned()]);
}

#[test]
fn killed_while_receiving_the_bundle() {
    killed_before_the_state_is_written("receive");
}

#[test]
fn killed_while_unpacking_into_the_slot() {
    killed_before_the_state_is_written("unpack");
}

#[test]
fn killed_after_the_slot_is_complete_before_the_state_says_pending() {
    killed_before_the_state_is_written("installed");
}

#[test]
fn killed_after_the_state_says_pending_before_the_link_moves() {
    let Setup { mut d, bundle, _work } = setup("state-written", 1);
    let (conv, answer) = acknowledged_turn(&d, "alice");
    assert!(!install(&d, &bundle).status.success());
    assert_killed(&mut d, "state-written");
    // The state is the truth: the launcher moves the link and starts attempt 1.
    commits_after(&mut d, "state-written", 1, &conv, &answer);
    assert!(d.logs_with_message("update: current link repaired to match the update state").len() == 1, "{}", d.dump_logs());
}

#[test]
fn killed_after_the_link_moved_before_the_restart() {
    let Setup { mut d, bundle, _work } = setup("switched", 1);
    let (conv, answer) = acknowledged_turn(&d, "alice");
    assert!(!install(&d, &bundle).status.success());
    assert_killed(&mut d, "switched");
    commits_after(&mut d, "switched", 1, &conv, &answer);
}

/// Install, exit 75, and the next start (fail point still on) dies at `step`.
fn installed_then_killed_at_start(step: &str) -> (Setup, String, String) {
    let mut s = setup(step, 1);
    let (conv, answer) = acknowledged_turn(&s.d, "alice");
    let out = install(&s.d, &s.bundle);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    s.d.start_again_no_wait();
    assert_killed(&mut s.d, step);
    (s, conv, answer)
}

#[test]
fn killed_in_the_launcher_after_the_store_snapshot() {
    let (mut s, conv, answer) = installed_then_killed_at_start("snapshot");
    assert!(s.d.dir().join("update/store-before.db").exists());
    // Not yet recorded: the next start takes it again, and this is attempt 1.
    commits_after(&mut s.d, "snapshot", 1, &conv, &answer);
}

#[test]
fn killed_in_the_launcher_after_counting_the_attempt() {
    let (mut s, conv, answer) = installed_then_killed_at_start("attempt");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(s.d.dir().join("update-state.json")).expect("state")).expect("json");
    assert_eq!((st["status"].as_str(), st["attempts"].as_u64()), (Some("pending"), Some(1)), "{st}");
    // The killed start used an attempt: the one that commits is the second.
    commits_after(&mut s.d, "attempt", 2, &conv, &answer);
}

#[test]
fn killed_during_the_health_gate() {
    let mut s = setup("gate", 1);
    let (conv, answer) = acknowledged_turn(&s.d, "alice");
    assert!(install(&s.d, &s.bundle).status.success());
    assert_eq!(s.d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    // READY comes before the gate: this start serves, then dies in the gate.
    s.d.start_again_no_wait();
    s.d.wait_log_message("update: health gate self-test passed", Duration::from_secs(120));
    assert_killed(&mut s.d, "gate");
    commits_after(&mut s.d, "gate", 2, &conv, &answer);
}

#[test]
fn killed_in_the_middle_of_a_rollback() {
    // A version that does not commit on its own for 10 minutes, marked bad by the operator.
    let mut s = setup("rollback", 600);
    let d = &mut s.d;
    let (conv, answer) = acknowledged_turn(d, "alice");
    assert!(install(d, &s.bundle).status.success());
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    d.start_again();
    assert_eq!(status(d)["state"]["status"], "pending");
    // A user talks to the pending version; the answer is acknowledged.
    let later = d.client().chat_blocking("Name another.", "alice", Some(&conv));
    let out = d.ctl(&["update", "mark-bad"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    d.start_again_no_wait();
    assert_killed(d, "rollback");
    d.set_failpoints(None);
    d.start_again();
    let st = status(d);
    assert_eq!(
        (st["running"].as_str(), st["state"]["status"].as_str(), st["state"]["failed_version"].as_str()),
        (Some("factory"), Some("rolled-back"), Some(NEW)),
        "{st}"
    );
    assert!(st["state"]["last_error"].as_str().is_some_and(|e| e.contains("marked bad by the operator")), "{st}");
    // Both turns: the one from before the update and the one the failed version served.
    assert_eq!(answers(d, "alice", &conv), vec![answer, later["answer"].as_str().expect("answer").to_owned()]);
    // The rollback was done twice; each set the live database aside, none overwritten.
    let kept: Vec<String> = std::fs::read_dir(d.dir().join("update"))
        .expect("update dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rolled-back-") && n.ends_with(".db"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
}

fn stop(d: &mut Daemon) {
    d.sigterm();
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(0));
}

/// The store's schema version (`PRAGMA user_version`), read while the daemon is stopped.
fn schema_version(d: &Daemon) -> u32 {
    let conn = rusqlite::Connection::open(d.dir().join("edgeai.db")).expect("opening the store");
    conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("user_version")
}

/// The installed version migrates the store (v6 to v7) and is killed with
/// the migration applied but not committed: SQLite drops it, the next start
/// (attempt 2) migrates again, commits, and the conversation is there.
#[test]
fn killed_inside_the_new_versions_store_migration() {
    // Installed without the kill; the restart after the install carries it.
    let Setup { mut d, bundle, _work } = setup_with("off", 1, true);
    let (conv, answer) = acknowledged_turn(&d, "alice");
    assert!(install(&d, &bundle).status.success());
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    let before = schema_version(&d);
    d.set_failpoints(Some("update-slot-migration=return;update-kill=return(migrate)"));
    d.start_again_no_wait();
    assert_killed(&mut d, "migrate");
    assert_eq!(schema_version(&d), before, "the killed migration was not committed");
    d.set_failpoints(Some("update-slot-migration=return"));
    d.start_again();
    d.wait_log_message(COMMITTED, Duration::from_secs(120));
    let migrated = d.logs_with_message("migrated the store schema");
    let last = migrated.last().and_then(|l| l.field_u64("version"));
    assert_eq!(last, Some(u64::from(before) + 1), "{migrated:?}");
    let s = status(&d);
    assert_eq!((s["state"]["status"].as_str(), s["state"]["attempts"].as_u64()), (Some("good"), Some(2)), "{s}");
    assert_eq!(answers(&d, "alice", &conv), vec![answer]);
    stop(&mut d);
    assert_eq!(schema_version(&d), before + 1);
}

/// The installed version migrates the store to a schema the factory binary
/// does not know, serves a turn, and is marked bad: the rollback restores
/// the snapshot, so the factory binary opens the schema it knows (it would
/// refuse v7 with schema_too_new), and the turn the failed version served
/// is carried over.
#[test]
fn a_version_that_migrated_the_store_is_rolled_back_to_the_old_schema_with_its_turns() {
    let Setup { mut d, bundle, _work } = setup_with("off", 600, true);
    let (conv, answer) = acknowledged_turn(&d, "alice");
    assert!(install(&d, &bundle).status.success());
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    let before = schema_version(&d);
    d.start_again();
    assert_eq!(status(&d)["state"]["status"], "pending");
    let later = d.client().chat_blocking("Name another.", "alice", Some(&conv));
    let out = d.ctl(&["update", "mark-bad"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    let kept: Vec<PathBuf> = std::fs::read_dir(d.dir().join("update"))
        .expect("update dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("rolled-back-")))
        .collect();
    assert!(kept.is_empty(), "nothing set aside before the rollback start: {kept:?}");
    d.start_again();
    let st = status(&d);
    assert_eq!((st["running"].as_str(), st["state"]["status"].as_str()), (Some("factory"), Some("rolled-back")), "{st}");
    assert_eq!(answers(&d, "alice", &conv), vec![answer, later["answer"].as_str().expect("answer").to_owned()]);
    stop(&mut d);
    assert_eq!(schema_version(&d), before, "the factory binary runs on the schema it knows");
    let aside: Vec<PathBuf> = std::fs::read_dir(d.dir().join("update"))
        .expect("update dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("rolled-back-") && n.to_string_lossy().ends_with(".db")))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let conn = rusqlite::Connection::open(&aside[0]).expect("the database set aside");
    let v: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("user_version");
    assert_eq!(v, before + 1, "the failed version's own database is kept aside as it was");
}
