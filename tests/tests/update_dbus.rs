//! The update controls over D-Bus against the real daemon on a private, real
//! `dbus-daemon`: GetUpdateStatus and the LastError and UpdateStatus
//! properties; refusals each with their named error and the Dify code
//! (unsigned, corrupt through a pipe, unknown and mistyped options, nothing
//! pending, nothing to roll back to, updates disabled, a bundle larger than
//! update.max_bundle_bytes through a pipe) with the slots, the state and
//! `update/` unchanged; and a signed bundle installed through
//! `edgeaictl --bus update install` (a descriptor, Progress and Completed
//! signals, exit 75, the state pending for slot a), then started as systemd
//! would, marked good and rolled back over D-Bus; and LastError after a new
//! version's failed health gate (failpoint `update-gate-fail`) made the next
//! start roll it back.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgeai_common::admin::UpdateStatus;
use edgeai_tests::dbus::{ctl, daemon_on, fails, gdbus_call, json, ok, Bus, Monitor};
use edgeai_tests::{paths, Daemon};
use serde_json::Value;
use zbus::zvariant::Value as DValue;

/// The version the bundle calls the built edgeaid.
const NEW: &str = "9.9.0";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ctl_offline(args: &[&str]) {
    let out = Command::new(paths::edgeaictl()).args(args).output().expect("running edgeaictl");
    assert!(out.status.success(), "edgeaictl {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// A bundle of the built edgeaid at `out`, signed with `key` when `sign`
/// (as tests/tests/update_install.rs builds them).
fn bundle(out: &Path, key: &Path, sign: bool) {
    let compatible = format!("edgeai-{}", std::env::consts::ARCH);
    let bin = paths::edgeaid();
    ctl_offline(&["bundle", "create", "--version", NEW, "--compatible", &compatible, "--binary", s(&bin), s(out)]);
    if sign {
        ctl_offline(&["bundle", "sign", "--key", s(key), s(out)]);
    }
}

/// A signing key, a trust dir holding its public half, and bundles signed
/// with it (good, corrupt) and not (unsigned).
struct Keys {
    _work: tempfile::TempDir,
    trust: PathBuf,
    good: PathBuf,
    unsigned: PathBuf,
    corrupt: PathBuf,
}

fn keys_and_bundles() -> Keys {
    let work = tempfile::tempdir().unwrap();
    let trust = work.path().join("trust.d");
    std::fs::create_dir(&trust).unwrap();
    let key = work.path().join("release-key");
    ctl_offline(&["keys", "gen-signing", "--out", s(&key)]);
    std::fs::copy(work.path().join("release-key.pub"), trust.join("release.pub")).unwrap();
    let (good, unsigned, corrupt) =
        (work.path().join("good.bundle"), work.path().join("unsigned.bundle"), work.path().join("corrupt.bundle"));
    bundle(&good, &key, true);
    bundle(&unsigned, &key, false);
    // One byte of the payload flipped, past the manifest and signature.
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&corrupt, &bytes).unwrap();
    Keys { _work: work, trust, good, unsigned, corrupt }
}

/// A property of the daemon's interface, as gdbus prints it (`(<'...'>,)`).
fn property(bus: &Bus, name: &str) -> String {
    ok(&gdbus_call(bus, None, "org.freedesktop.DBus.Properties.Get", &["org.edgeai.Daemon1", name]))
}

/// InstallUpdate as a raw client calls it: the bundle's bytes written into a
/// pipe by a thread (so the daemon reads a descriptor of unknown size), with
/// `options`; the error's name and message, or the answer.
fn install_through_pipe(bus: &Bus, bytes: Vec<u8>, options: HashMap<&str, DValue<'_>>) -> Result<String, String> {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut w = std::fs::File::from(writer);
        // The daemon may stop reading (too large, refused): a broken pipe is expected then.
        let _ = w.write_all(&bytes);
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let got = rt.block_on(async {
        let conn = zbus::connection::Builder::address(bus.address.as_str()).unwrap().build().await.unwrap();
        let fd = zbus::zvariant::Fd::from(reader.as_fd());
        conn.call_method(Some("org.edgeai.Daemon1"), "/org/edgeai/Daemon1", Some("org.edgeai.Daemon1"), "InstallUpdate", &(fd, options))
            .await
    });
    drop(reader);
    feeder.join().unwrap();
    match got {
        Ok(reply) => Ok(format!("{:?}", reply.body().deserialize::<HashMap<String, zbus::zvariant::OwnedValue>>().unwrap())),
        Err(zbus::Error::MethodError(name, text, _)) => Err(format!("{name}: {}", text.unwrap_or_default())),
        Err(other) => panic!("InstallUpdate failed without a method error: {other:?}"),
    }
}

/// `edgeaictl --bus --json update status`.
fn update_status(bus: &Bus, d: &Daemon) -> Value {
    json(&ctl(bus, d, &["--json", "update", "status"]))
}

#[test]
fn a_signed_bundle_installs_over_dbus_and_refusals_change_nothing() {
    let k = keys_and_bundles();
    let bus = Bus::start();
    let mut d = daemon_on(&bus)
        .set("update.enabled", true)
        // The new version does not commit itself during the test: MarkGood does.
        .set("update.commit_after_secs", 600)
        .set("update.trust_dir", s(&k.trust))
        .start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let dir = d.dir().to_path_buf();

    // GetUpdateStatus: the report of GET /admin/v1/update (null fields left out over D-Bus).
    let over_bus = update_status(&bus, &d);
    let over_socket: Value = serde_json::from_slice(&d.ctl(&["update", "status", "--json"]).stdout).unwrap();
    let typed = |v: &Value| serde_json::from_value::<UpdateStatus>(v.clone()).unwrap();
    assert_eq!(typed(&over_bus), typed(&over_socket), "bus {over_bus} socket {over_socket}");
    assert_eq!((over_bus["enabled"].as_bool(), over_bus["running"].as_str()), (Some(true), Some("factory")), "{over_bus}");
    assert!(over_bus["state"].is_null(), "nothing installed: {over_bus}");
    let text = ok(&ctl(&bus, &d, &["update", "status"]));
    assert!(text.contains("state: nothing installed"), "{text}");
    assert_eq!(property(&bus, "UpdateStatus").trim(), "(<'none'>,)");
    assert_eq!(property(&bus, "LastError").trim(), "(<''>,)");

    // Nothing pending, nothing to go back to.
    fails(&ctl(&bus, &d, &["update", "mark-good"]), 1, "org.edgeai.Error.UpdateNotPending: update_not_pending: nothing is pending");
    fails(&ctl(&bus, &d, &["update", "mark-bad"]), 1, "org.edgeai.Error.UpdateNotPending: update_not_pending: ");
    fails(&ctl(&bus, &d, &["update", "rollback"]), 1, "org.edgeai.Error.UpdateNoPrevious: update_no_previous: nothing to roll back to");

    // Unsigned: refused as the socket's 403 (exit 77), with a failed Completed.
    let monitor = Monitor::start(&bus);
    fails(&ctl(&bus, &d, &["update", "install", s(&k.unsigned)]), 77, "org.edgeai.Error.UpdateUntrusted: update_untrusted: ");
    let signals = monitor.until_completed("InstallUpdate", Duration::from_secs(60));
    assert!(signals.contains("org.edgeai.Daemon1.Completed ('InstallUpdate', 'failed: update_untrusted: "), "{signals}");
    drop(monitor);
    // Corrupt, through a pipe: read to its end, then refused by its hashes.
    let corrupt = install_through_pipe(&bus, std::fs::read(&k.corrupt).unwrap(), HashMap::new()).unwrap_err();
    assert!(corrupt.starts_with("org.edgeai.Error.UpdateBadBundle: update_bad_bundle: "), "{corrupt}");
    assert!(corrupt.contains("the payload was altered or damaged"), "the whole pipe was read and hashed: {corrupt}");
    // Unknown and mistyped options, before a byte is read.
    let unknown = install_through_pipe(&bus, b"never read".to_vec(), HashMap::from([("restrat", DValue::from(false))])).unwrap_err();
    assert!(unknown.starts_with("org.edgeai.Error.InvalidArgument: unknown option \"restrat\""), "{unknown}");
    let mistyped = install_through_pipe(&bus, b"never read".to_vec(), HashMap::from([("reinstall", DValue::from("yes"))])).unwrap_err();
    assert!(mistyped.starts_with("org.edgeai.Error.InvalidArgument: option \"reinstall\" must be a boolean"), "{mistyped}");
    fails(&ctl(&bus, &d, &["update", "install", "/nonexistent/x.bundle"]), 65, "cannot read /nonexistent/x.bundle");
    assert!(paths::update_files(&dir).is_empty(), "refusals left files: {:?}", paths::update_files(&dir));
    assert!(update_status(&bus, &d)["state"].is_null(), "nothing is installed after the refusals");
    assert!(d.is_running());

    // The signed bundle, by descriptor: Progress, Completed, the answer, exit 75.
    let monitor = Monitor::start(&bus);
    let said = ok(&ctl(&bus, &d, &["update", "install", s(&k.good)]));
    assert!(said.contains(&format!("{NEW} installed in slot a (pending)")), "{said}");
    let signals = monitor.until_completed("InstallUpdate", Duration::from_secs(60));
    drop(monitor);
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('InstallUpdate', uint32 0, 'started')"), "{signals}");
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('InstallUpdate', uint32 100, 'installed')"), "{signals}");
    assert!(
        signals.contains(&format!("org.edgeai.Daemon1.Completed ('InstallUpdate', 'ok: {NEW} installed in slot a (pending)")),
        "{signals}"
    );
    let code = d.wait_exit(Duration::from_secs(60));
    assert_eq!(code.code(), Some(75), "the daemon restarts into the new version: {code}");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("update-state.json")).unwrap()).unwrap();
    assert_eq!((st["status"].as_str(), st["current"].as_str(), st["version"].as_str()), (Some("pending"), Some("a"), Some(NEW)), "{st}");
    assert_eq!(std::fs::read_link(dir.join("current")).unwrap(), Path::new("slots/a"));
    assert_eq!(std::fs::metadata(dir.join("slots/a/bin/edgeaid")).unwrap().len(), std::fs::metadata(paths::edgeaid()).unwrap().len());
    let left: Vec<_> = std::fs::read_dir(dir.join("update")).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
    assert!(left.is_empty(), "the received bundle is removed: {left:?}");

    // As systemd would: started again, the launcher runs slot a, pending.
    d.start_again();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(30));
    let s1 = update_status(&bus, &d);
    assert_eq!(
        (s1["running"].as_str(), s1["state"]["status"].as_str(), s1["state"]["attempts"].as_u64()),
        (Some("a"), Some("pending"), Some(1)),
        "{s1}"
    );
    assert_eq!(property(&bus, "UpdateStatus").trim(), "(<'pending'>,)");
    // Another install waits for the pending one's outcome.
    fails(&ctl(&bus, &d, &["update", "install", s(&k.good)]), 1, "org.edgeai.Error.UpdatePending: update_pending: ");
    // MarkGood commits it; Rollback goes back to the factory binary and restarts.
    let good = ok(&ctl(&bus, &d, &["update", "mark-good"]));
    assert!(good.contains(&format!("{NEW} in a is good (committed by the operator)")), "{good}");
    assert_eq!(update_status(&bus, &d)["state"]["status"], "good");
    let back = json(&ctl(&bus, &d, &["--json", "update", "rollback"]));
    assert_eq!((back["status"].as_str(), back["restarting"].as_bool()), (Some("rolled-back"), Some(true)), "{back}");
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    d.start_again();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(30));
    assert_eq!(update_status(&bus, &d)["running"], "factory");
    assert_eq!(property(&bus, "UpdateStatus").trim(), "(<'rolled-back'>,)");
    let last = property(&bus, "LastError");
    assert!(last.contains(&format!("rolled back by the operator from {NEW} in a")), "{last}");

    // Each call is in the audit trail, the refused ones with their error's name.
    let audit = String::from_utf8(d.ctl(&["audit", "--json", "--limit", "100"]).stdout).unwrap();
    for want in ["D-Bus InstallUpdate", "D-Bus MarkGood", "D-Bus Rollback", "org.edgeai.Error.UpdateUntrusted"] {
        assert!(audit.contains(want), "{want} in the audit trail: {audit}");
    }
}

#[test]
fn updates_disabled_and_a_bundle_too_large_are_refused_with_nothing_written() {
    // Disabled (the default): every control says so; status shows it.
    let bus = Bus::start();
    let d = daemon_on(&bus).wait_for_model(false).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    assert_eq!(update_status(&bus, &d)["enabled"], false);
    let any = d.dir().join("any.bundle");
    std::fs::write(&any, b"not read: updates are off").unwrap();
    fails(&ctl(&bus, &d, &["update", "install", s(&any)]), 1, "org.edgeai.Error.UpdateDisabled: update_disabled: updates are disabled");
    fails(&ctl(&bus, &d, &["update", "rollback"]), 1, "org.edgeai.Error.UpdateDisabled: update_disabled: ");
    fails(&ctl(&bus, &d, &["update", "mark-good"]), 1, "org.edgeai.Error.UpdateDisabled: update_disabled: ");
    assert!(paths::update_files(d.dir()).is_empty(), "{:?}", paths::update_files(d.dir()));
    drop(d);

    // Larger than update.max_bundle_bytes, through a pipe: refused once the
    // limit is passed, the received part removed.
    let d = daemon_on(&bus).wait_for_model(false).set("update.enabled", true).set("update.max_bundle_bytes", 1 << 20).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let big = install_through_pipe(&bus, vec![0x42; 3 << 20], HashMap::new()).unwrap_err();
    assert!(big.starts_with("org.edgeai.Error.UpdateTooLarge: update_too_large: "), "{big}");
    assert!(big.contains("1048576 bytes"), "{big}");
    assert!(paths::update_files(d.dir()).is_empty(), "{:?}", paths::update_files(d.dir()));
    assert_eq!(property(&bus, "Operation").trim(), "(<''>,)", "the job's place is free again");
}

#[test]
fn last_error_says_why_a_version_installed_over_dbus_was_rolled_back() {
    let k = keys_and_bundles();
    let bus = Bus::start();
    // The new version's self-test fails (the installed binary never runs the gate).
    let mut d = daemon_on(&bus)
        .set("update.enabled", true)
        .set("update.max_attempts", 1)
        .set("update.trust_dir", s(&k.trust))
        .failpoint("update-gate-fail", "return")
        .wait_for_model(false)
        .start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    ok(&ctl(&bus, &d, &["update", "install", s(&k.good)]));
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));
    // Attempt 1 of 1: the gate fails, exit 1.
    d.start_again();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(30));
    assert_eq!(d.wait_exit(Duration::from_secs(120)).code(), Some(1), "the failed gate stops the new version");
    // The next start rolls back; a Completed signal, LastError and GetUpdateStatus say why.
    let monitor = Monitor::start(&bus);
    d.start_again();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(30));
    let signals = monitor.until_completed("Rollback", Duration::from_secs(30));
    assert!(
        signals.contains(&format!(
            "org.edgeai.Daemon1.Completed ('Rollback', 'ok: rolled back at start from slot a ({NEW}) to factory ({}): 1 starts of {NEW}; last error: self-test failed",
            env!("CARGO_PKG_VERSION")
        )),
        "{signals}"
    );
    drop(monitor);
    assert_eq!(property(&bus, "UpdateStatus").trim(), "(<'rolled-back'>,)");
    let last = property(&bus, "LastError");
    assert!(last.contains(&format!("1 starts of {NEW}; last error: self-test failed")), "{last}");
    let st = update_status(&bus, &d);
    assert_eq!((st["running"].as_str(), st["state"]["failed_version"].as_str()), (Some("factory"), Some(NEW)), "{st}");
    assert!(st["state"]["last_error"].as_str().is_some_and(|e| last.contains(e)), "{st}");
}
