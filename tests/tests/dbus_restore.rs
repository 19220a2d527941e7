//! D-Bus RestoreBackup against the real daemon on a private, real
//! `dbus-daemon`: a backup of daemon A restored into daemon B through
//! `edgeaictl --bus backup restore` (B exits 75, its next start swaps the
//! staged state in and keeps B's old state in restore.previous-*; B then
//! has A's rows); bad archives and options refused as InvalidArgument with
//! nothing staged and the daemon serving; a restore while a backup runs
//! refused as Busy; and a staged restore whose store does not open undone
//! at start, the old state served.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeai_tests::dbus::{ctl, daemon_on, fails, gdbus_call, json, ok, spawn_ctl, wait_for_operation, Bus, Monitor};
use edgeai_tests::{paths, Daemon};
use serde_json::Value;

const QUESTION: &str = "What is a PLC? Answer in one sentence.";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Entries of `dir` whose name starts with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// Nothing of a restore is staged in the daemon's state directory.
#[track_caller]
fn nothing_staged(d: &Daemon) {
    let left = named(d.dir(), "restore.");
    assert!(left.is_empty(), "a refused restore left {left:?}");
}

/// `edgeaictl --bus --json ARGS` on `d`'s bus, parsed, for comparing two daemons.
fn listing(bus: &Bus, d: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    json(&ctl(bus, d, &all))
}

/// A daemon's rows worth comparing: apps (without their key count, see
/// [`keys`]) and versions, datasets.
fn rows(bus: &Bus, d: &Daemon) -> Vec<Value> {
    let mut apps = listing(bus, d, &["apps", "list"]);
    for app in apps["data"].as_array_mut().unwrap() {
        app.as_object_mut().unwrap().remove("active_keys");
    }
    vec![
        apps,
        listing(bus, d, &["apps", "versions", "demo"]),
        serde_json::from_slice(&d.ctl(&["--json", "datasets", "list"]).stdout).unwrap(),
    ]
}

/// The API keys (never their secrets), one row each.
fn keys(bus: &Bus, d: &Daemon) -> Vec<Value> {
    listing(bus, d, &["keys", "list"])["data"].as_array().unwrap().clone()
}

#[test]
fn a_backup_restored_over_dbus_is_applied_as_the_daemon_restarts_and_the_old_state_is_kept() {
    // Daemon A: a key, a conversation, a dataset with a document.
    let bus_a = Bus::start();
    let a = daemon_on(&bus_a).start();
    a.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let (_, secret) = a.admin().create_key("demo");
    let ca = a.client().with_key(&secret);
    let first = ca.chat_blocking(QUESTION, "alice", None);
    let conv = first["conversation_id"].as_str().unwrap().to_owned();
    ca.chat_blocking("And a second question?", "alice", Some(&conv));
    let manual = paths::repo_root().join("configs/knowledge/plant-manuals/plc-alarms.md");
    ok(&a.ctl(&["datasets", "create", "manuals", "--economy"]));
    ok(&a.ctl(&["datasets", "ingest", s(&manual), "--dataset", "manuals"]));
    let archive = a.dir().join("a.tar");
    ok(&ctl(&bus_a, &a, &["backup", "create", s(&archive)]));
    let (a_rows, a_keys) = (rows(&bus_a, &a), keys(&bus_a, &a));
    assert_eq!(a_keys.len(), 2, "the demo key and ours: {a_keys:?}");
    let a_messages = ca.messages("alice", &conv);
    assert_eq!(a_messages.len(), 2);

    // Daemon B on a fresh data dir, with a conversation of its own.
    let bus_b = Bus::start();
    let mut b = daemon_on(&bus_b).start();
    b.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let b_old = b.client().chat_blocking(QUESTION, "bob", None);
    assert!(b_old["conversation_id"].is_string());

    let monitor = Monitor::start(&bus_b);
    let out = ok(&ctl(&bus_b, &b, &["backup", "restore", s(&archive)]));
    let signals = monitor.until_completed("RestoreBackup", Duration::from_secs(30));
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('RestoreBackup', uint32 0, 'started')"), "{signals}");
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('RestoreBackup', uint32 100, 'staged')"), "{signals}");
    assert!(signals.contains("org.edgeai.Daemon1.Completed ('RestoreBackup', 'ok: staged "), "{signals}");
    drop(monitor);
    assert!(out.contains(&format!("staged {}", archive.display())), "{out}");
    assert!(out.contains("not restored online: config/edgeaid.toml"), "the config files are skipped: {out}");
    assert!(out.contains("--config-dir /etc/edgeai"), "and the answer says how to restore them: {out}");
    assert!(out.contains("applied now: the daemon drains, exits with 75"), "{out}");
    let status = b.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(75), "the daemon stops with EX_TEMPFAIL so systemd restarts it");
    assert!(b.dir().join("restore.staged/edgeai.db").is_file(), "staged for the next start");
    assert!(b.dir().join("restore.staged/knowledge").is_dir());

    b.start_again();
    let applied =
        b.wait_log_message("restore applied: serving the restored state; the old state is kept in previous", Duration::from_secs(10));
    let previous = PathBuf::from(applied.field_str("previous").unwrap());
    assert_eq!(previous.parent(), Some(b.dir()), "{previous:?}");
    assert_eq!(named(b.dir(), "restore."), vec![previous.clone()], "only the previous state is left");
    assert_eq!(rows(&bus_b, &b), a_rows, "B has A's apps, versions and datasets");
    // B's demo key file names a key of B's old state: the start makes a new one (dev.demo_key_file).
    let b_keys = keys(&bus_b, &b);
    assert!(a_keys.iter().all(|k| b_keys.contains(k)), "B has A's keys, row by row: {a_keys:?} {b_keys:?}");
    assert_eq!(b_keys.len(), a_keys.len() + 1, "{b_keys:?}");
    let cb = b.client().with_key(&secret);
    assert_eq!(cb.messages("alice", &conv), a_messages, "A's conversation, row by row, and A's key opens it");
    assert!(cb.conversations("bob").is_empty(), "B's own conversation is not in the restored state");
    // B's old state is kept whole in restore.previous-*.
    let old = rusqlite::Connection::open_with_flags(previous.join("edgeai.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let bob: i64 = old.query_row("SELECT count(*) FROM conversations WHERE user = 'bob'", [], |r| r.get(0)).unwrap();
    assert_eq!(bob, 1, "B's conversation is in its previous state");
}

/// The archive's first member after the manifest: where its data starts and its size.
fn second_member(tar: &[u8]) -> (usize, usize) {
    let octal = |h: &[u8]| {
        usize::from_str_radix(std::str::from_utf8(&h[124..135]).unwrap().trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap()
    };
    let manifest_size = octal(&tar[..512]);
    let header = 512 + manifest_size.div_ceil(512) * 512;
    (header + 512, octal(&tar[header..header + 512]))
}

#[test]
fn bad_archives_and_options_are_refused_and_nothing_is_staged() {
    let bus = Bus::start();
    let d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let good = d.dir().join("good.tar");
    ok(&ctl(&bus, &d, &["backup", "create", s(&good)]));
    let bytes = std::fs::read(&good).unwrap();
    let apps_before = ok(&ctl(&bus, &d, &["apps", "list"]));

    let truncated = d.dir().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let altered = d.dir().join("altered.tar");
    let (start, size) = second_member(&bytes);
    let mut changed = bytes.clone();
    changed[start + size / 2] ^= 0xff;
    std::fs::write(&altered, &changed).unwrap();
    let not_tar = d.dir().join("not-a.tar");
    std::fs::write(&not_tar, "hello, this is not an archive\n".repeat(40)).unwrap();
    for (file, why) in [(&truncated, "truncated"), (&altered, "has sha256"), (&not_tar, "archive")] {
        let monitor = Monitor::start(&bus);
        let out = ctl(&bus, &d, &["backup", "restore", s(file)]);
        // edgeaictl's answer first: when it failed early, its stderr says why.
        fails(&out, 1, "org.edgeai.Error.InvalidArgument: the archive is not a good backup");
        // The signal may reach the monitor after the reply reached edgeaictl: wait for it.
        let signals = monitor.until_completed("RestoreBackup", Duration::from_secs(30));
        assert!(signals.contains("org.edgeai.Daemon1.Completed ('RestoreBackup', 'failed: the archive is not a good backup"), "{signals}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{}: {err}", file.display());
        nothing_staged(&d);
    }
    fails(&ctl(&bus, &d, &["backup", "restore", "/nonexistent/b.tar"]), 65, "cannot read the backup /nonexistent/b.tar");

    // Wrong option types and unknown options, as a raw client would send them.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let raw = |options: HashMap<&str, zbus::zvariant::Value<'_>>| -> String {
        rt.block_on(async {
            let conn = zbus::connection::Builder::address(bus.address.as_str()).unwrap().build().await.unwrap();
            let f = std::fs::File::open(&good).unwrap();
            let fd = zbus::zvariant::Fd::from(std::os::fd::AsFd::as_fd(&f));
            let got = conn
                .call_method(Some("org.edgeai.Daemon1"), "/org/edgeai/Daemon1", Some("org.edgeai.Daemon1"), "RestoreBackup", &(fd, options))
                .await;
            match got {
                Err(zbus::Error::MethodError(name, text, _)) => format!("{name}: {}", text.unwrap_or_default()),
                other => panic!("RestoreBackup with bad options answered {other:?}"),
            }
        })
    };
    let wrong_type = raw(HashMap::from([("restart", zbus::zvariant::Value::from("yes"))]));
    assert!(wrong_type.starts_with("org.edgeai.Error.InvalidArgument") && wrong_type.contains("restart"), "{wrong_type}");
    let unknown = raw(HashMap::from([("restar", zbus::zvariant::Value::from(false))]));
    assert!(unknown.contains("org.edgeai.Error.InvalidArgument") && unknown.contains("unknown option \"restar\""), "{unknown}");
    nothing_staged(&d);
    // Wrong argument types altogether (no descriptor).
    let no_fd = gdbus_call(&bus, None, "org.edgeai.Daemon1.RestoreBackup", &["{'restart': <false>}"]);
    assert!(!no_fd.status.success());

    assert_eq!(ok(&ctl(&bus, &d, &["apps", "list"])), apps_before, "still serving, nothing changed");
    assert!(d.client().chat_blocking(QUESTION, "carol", None)["answer"].is_string());
    nothing_staged(&d);
}

#[test]
fn a_restore_without_restart_is_staged_for_the_next_start() {
    let bus = Bus::start();
    let mut d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let archive = d.dir().join("b.tar");
    ok(&ctl(&bus, &d, &["backup", "create", s(&archive)]));
    let after_backup = d.client().chat_blocking(QUESTION, "dave", None);
    let answer = json(&ctl(&bus, &d, &["--json", "backup", "restore", s(&archive), "--no-restart"]));
    assert_eq!(answer["restore"]["restart"], false, "{answer}");
    assert!(answer["restore"]["applies"].as_str().unwrap().contains("next start"), "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.is_running(), "no restart was asked for");
    assert_eq!(d.client().conversations("dave").len(), 1, "the running state is untouched until the restart");
    d.restart();
    d.wait_log_message("restore applied: serving the restored state; the old state is kept in previous", Duration::from_secs(10));
    assert!(d.client().conversations("dave").is_empty(), "the conversation after the backup is gone: {after_backup}");
}

#[test]
fn a_restore_while_a_backup_runs_is_refused_busy() {
    let bus = Bus::start();
    let mut d = daemon_on(&bus).failpoint("backup-member", "sleep(400)").start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let first = d.dir().join("first.tar");
    let running = spawn_ctl(&bus, &d, &["backup", "create", first.to_str().unwrap()]);
    wait_for_operation(&bus, "CreateBackup");
    // Refused before the archive is read: any file will do.
    let archive = d.dir().join("any.tar");
    std::fs::write(&archive, b"not read").unwrap();
    fails(&ctl(&bus, &d, &["backup", "restore", s(&archive)]), 75, "org.edgeai.Error.Busy: CreateBackup is running");
    nothing_staged(&d);
    ok(&running.wait_with_output().unwrap());
    assert!(d.is_running(), "the refused restore did not stop the daemon");
}

#[test]
fn a_staged_restore_whose_store_does_not_open_is_undone_and_the_old_state_served() {
    let bus = Bus::start();
    let mut d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let kept = d.client().chat_blocking(QUESTION, "erin", None);
    let conv = kept["conversation_id"].as_str().unwrap().to_owned();
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    // Stage by hand a database newer than this daemon knows.
    let staged = d.dir().join("restore.staged");
    std::fs::create_dir_all(staged.join("knowledge")).unwrap();
    std::fs::copy(d.dir().join("edgeai.db"), staged.join("edgeai.db")).unwrap();
    let newer = rusqlite::Connection::open(staged.join("edgeai.db")).unwrap();
    newer.pragma_update(None, "journal_mode", "DELETE").unwrap();
    newer.pragma_update(None, "user_version", 100_000).unwrap();
    drop(newer);

    d.start_again();
    let logged = d.wait_log_message(
        "the restored store does not open: restore undone, serving the old state; the staged copy is kept in failed",
        Duration::from_secs(10),
    );
    assert!(logged.field_str("error").unwrap().contains("schema"), "{:?}", logged.field_str("error"));
    let failed = PathBuf::from(logged.field_str("failed").unwrap());
    assert!(failed.join("edgeai.db").is_file(), "the staged copy is kept: {failed:?}");
    assert_eq!(named(d.dir(), "restore."), vec![failed], "no staged copy, journal or previous state is left");
    assert_eq!(d.client().messages("erin", &conv).len(), 1, "the old state is served");
}
