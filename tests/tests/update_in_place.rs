//! A restart in place (daemon/src/reexec.rs) with the real binaries, playing
//! systemd's part: a notify socket and a unix socket passed as socket
//! activation does. After `edgeaictl update install` the daemon drains,
//! says RELOADING=1 and execs the installed binary in its own process: the
//! same pid goes on as the new version (no exit 75), adopts the same socket
//! at fd 3, says READY=1 again and commits itself. A request sent in the gap
//! waits in the socket's backlog and is answered. Without passed sockets the
//! new image binds its own. Without a notify socket the daemon exits 75 as
//! before (tests/tests/update_install.rs).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgeai_tests::bundle_server::SignedBundle;
use edgeai_tests::http::{Client, Target};
use edgeai_tests::{Daemon, DaemonBuilder, NotifySocket};
use serde_json::Value;

const ADOPTED: &str = "serving the unix socket systemd passed (socket activation)";

/// A daemon started as systemd would: a notify socket and a bound unix
/// socket passed as fd 3 (named `unix`), updates on and trusting `signed`'s
/// key, with `tune` applied to the builder. Returns the daemon, the notify
/// socket and the unix socket's path.
fn under_systemd(signed: &SignedBundle, tune: impl FnOnce(DaemonBuilder) -> DaemonBuilder) -> (Daemon, NotifySocket, PathBuf) {
    let mut b = DaemonBuilder::new();
    let sock = b.dir().join("edgeai.sock");
    let unix = UnixListener::bind(&sock).unwrap();
    let notify = b.notify_socket();
    let b = b.set("update.enabled", true).set("update.trust_dir", signed.trust.to_str().unwrap()).listen_fd(&unix, "unix");
    (tune(b).start(), notify, sock)
}

#[test]
fn an_update_under_systemd_restarts_in_place_keeping_the_pid_and_the_socket() {
    let signed = SignedBundle::new("9.9.0");
    let (mut d, notify, sock) = under_systemd(&signed, |b| b.set("update.commit_after_secs", 1));
    let pid = d.pid();
    let (ready_at, _) = notify.wait_for(0, Duration::from_secs(60), "READY=1", |n| n.has("READY=1"));

    // Clients poll /health across the switch; none may be refused.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (stop, client) = (stop.clone(), Client::new(Target::Unix(sock.clone())));
        std::thread::spawn(move || {
            let (mut n, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let status = client.get("/health").status;
                assert_eq!(status, 200, "a /health request across the switch");
                slowest = slowest.max(t.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (n, slowest)
        })
    };
    let out = d.ctl(&["update", "install", signed.path.to_str().unwrap()]);
    assert!(out.status.success(), "update install: {}", String::from_utf8_lossy(&out.stderr));

    // The same process becomes the new version: RELOADING=1, then READY=1 again.
    let (reloading_at, _) = notify.wait_for(ready_at + 1, Duration::from_secs(60), "RELOADING=1", |n| n.has("RELOADING=1"));
    notify.wait_for(reloading_at + 1, Duration::from_secs(120), "READY=1 from the new image", |n| n.has("READY=1"));
    let committed = d.wait_log_message("update: committed; the version is good", Duration::from_secs(120));
    assert_eq!(committed.field_str("version").as_deref(), Some("9.9.0"));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (polled, slowest) = poller.join().expect("the /health poller");
    eprintln!("/health polled {polled} times across the switch; slowest answer {slowest:?}");
    assert!(polled > 0);

    assert!(d.try_exit().is_none(), "the daemon exited instead of restarting in place\n{}", d.dump_logs());
    assert_eq!(d.pid(), pid);
    assert_eq!(d.logs_with_message("restarting in place: exec the installed binary (same pid, the sockets stay open)").len(), 1);
    let adopted = d.logs_with_message(ADOPTED);
    assert_eq!(adopted.len(), 2, "both images serve the passed socket: {}", d.dump_logs());
    assert_eq!(adopted[1].field_u64("fd"), Some(3), "{}", adopted[1].raw);
    let out = d.ctl(&["update", "status", "--json"]);
    let s: Value = serde_json::from_slice(&out.stdout).expect("update status --json");
    assert_eq!(
        (s["running"].as_str(), s["state"]["status"].as_str(), s["state"]["attempts"].as_u64()),
        (Some("a"), Some("good"), Some(1)),
        "{s}"
    );
    // The drain never said STOPPING=1: systemd would wait for the process to end.
    assert!(!notify.all().iter().any(|n| n.has("STOPPING=1")), "STOPPING=1 sent before a restart in place");
    let a = d.unix_client().chat_blocking("What is Modbus?", "ivan", None);
    assert!(!a["answer"].as_str().unwrap().trim().is_empty(), "{a}");

    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    assert!(notify.all().iter().any(|n| n.has("STOPPING=1")), "a real stop says STOPPING=1");
}

/// `systemctl stop` while a restart in place drains: the stop wins. The
/// daemon says STOPPING=1, exits 0 and does not exec; the pending version
/// runs at the next start. A slow inference (fail point
/// `inference-hang=sleep(500)`: every decode step waits 0.5 s) keeps a
/// chat in flight, so the drain lasts until the second SIGTERM.
#[test]
fn a_stop_during_the_restart_drain_stops_for_good() {
    let signed = SignedBundle::new("9.9.0");
    let (mut d, notify, _sock) = under_systemd(&signed, |b| b.failpoint("inference-hang", "sleep(500)"));
    let client = d.unix_client();
    let chat = std::thread::spawn(move || client.chat_blocking("Tell me a long story about a gateway.", "ivan", None));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!chat.is_finished(), "the slow chat should still run");
    let out = d.ctl(&["update", "install", signed.path.to_str().unwrap()]);
    assert!(out.status.success(), "update install: {}", String::from_utf8_lossy(&out.stderr));
    notify.wait_for(0, Duration::from_secs(30), "RELOADING=1", |n| n.has("RELOADING=1"));
    d.sigterm();
    let st = d.wait_exit(Duration::from_secs(60));
    assert_eq!(st.code(), Some(0), "{st}\n{}", d.dump_logs());
    assert_eq!(d.logs_with_message("the requested restart is cancelled by the stop signal").len(), 1, "{}", d.dump_logs());
    assert!(d.logs_with_message("restarting in place: exec the installed binary (same pid, the sockets stay open)").is_empty());
    assert!(notify.all().iter().any(|n| n.has("STOPPING=1")), "systemd must hear the stop");
    let _ = chat.join();
    let state: Value = serde_json::from_str(&std::fs::read_to_string(d.dir().join("update-state.json")).unwrap()).unwrap();
    assert_eq!((state["status"].as_str(), state["attempts"].as_u64()), (Some("pending"), Some(0)), "{state}");
}

/// Under systemd without socket activation (`edgeai.socket` not enabled):
/// the daemon bound its sockets itself, so the exec in place passes none;
/// the new image binds them again, the same pid serving on both.
#[test]
fn without_passed_sockets_the_new_image_binds_its_own() {
    let signed = SignedBundle::new("9.9.0");
    let mut b = DaemonBuilder::new();
    let notify = b.notify_socket();
    let mut d =
        b.set("update.enabled", true).set("update.commit_after_secs", 1).set("update.trust_dir", signed.trust.to_str().unwrap()).start();
    let pid = d.pid();
    let (ready_at, _) = notify.wait_for(0, Duration::from_secs(60), "READY=1", |n| n.has("READY=1"));
    let out = d.ctl(&["update", "install", signed.path.to_str().unwrap()]);
    assert!(out.status.success(), "update install: {}", String::from_utf8_lossy(&out.stderr));
    let (reloading_at, _) = notify.wait_for(ready_at + 1, Duration::from_secs(60), "RELOADING=1", |n| n.has("RELOADING=1"));
    notify.wait_for(reloading_at + 1, Duration::from_secs(120), "READY=1 from the new image", |n| n.has("READY=1"));
    d.wait_log_message("update: committed; the version is good", Duration::from_secs(120));
    assert!(d.try_exit().is_none(), "the daemon exited instead of restarting in place\n{}", d.dump_logs());
    assert_eq!(d.pid(), pid);
    assert!(d.logs_with_message(ADOPTED).is_empty(), "no socket was passed: {}", d.dump_logs());
    let a = d.unix_client().chat_blocking("What is Modbus?", "ivan", None);
    assert!(!a["answer"].as_str().unwrap().trim().is_empty(), "{a}");
    // The harness listens on port 0: the new image bound a port of its own.
    let readies = d.logs_with_message("ready");
    assert_eq!(readies.len(), 2, "{}", d.dump_logs());
    let tcp = readies[1].field_str("listen").unwrap().parse().unwrap();
    assert_eq!(Client::new(Target::Tcp(tcp)).get("/health").status, 200, "the new image serves TCP");
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
}
