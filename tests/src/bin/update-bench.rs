//! `update-bench`: how long an on-device update of the daemon binary takes
//! and how long the daemon answers nothing meanwhile, with the real
//! binaries next to this one (`make bench` builds them in release), the
//! real model, and signed bundles of the built edgeaid. A bench, not a
//! test: it prints figures and writes `bench-results/bench-update.json`
//! (or `--out`), and exits non-zero only when a figure could not be
//! measured.
//!
//! Two daemons (updates on, `update.commit_after_secs = 1`, the model
//! loaded), one per way of switching, are each updated `--rounds` times
//! (default 3) to a newer version each time:
//! - `in_place`: as under systemd (a notify socket, the unix socket passed
//!   as socket activation does): the daemon execs the new version in its own
//!   process (daemon/src/reexec.rs), the socket stays open;
//! - `restart`: without systemd: the daemon exits 75 and the bench starts it
//!   again at once (systemd's `Restart=` would add `RestartSec=`), and it
//!   binds the socket again.
//!
//! A poller thread asks `GET /health` over the unix socket every 5 ms.
//! Each round: `edgeaictl update install BUNDLE` over the socket, then the
//! wait for the state `good`. Figures per round, medians over the rounds:
//! - `install_s`: the command, from start to the daemon's answer (receive,
//!   verify, unpack, fsync, switch);
//! - `downtime_s`: the longest time between two 200 answers from `/health`
//!   (refused requests in between, or one waiting in the backlog), across
//!   the drain, the exec or exit, the launcher's snapshot and exec, the store
//!   and listeners, next to the target of 1 s plus the model's load
//!   (`/health` answers before the model loads);
//! - `to_committed_s`: from the command to the state `good`, less the
//!   `commit_after_secs` the gate waits on purpose.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeai_tests::bundle_server::SignedBundle;
use edgeai_tests::daemon::DaemonBuilder;
use serde_json::{json, Value};

const USAGE: &str = "usage: update-bench [--rounds N (1..=10, default 3)] [--out FILE]";

/// How often the poller asks `/health`.
const POLL: Duration = Duration::from_millis(5);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("update-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut rounds = 3usize;
    let mut out = repo_root().join("bench-results/bench-update.json");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args.next().and_then(|v| v.parse().ok()).filter(|n| (1..=10).contains(n)).ok_or(USAGE)?;
            }
            "--out" => out = PathBuf::from(args.next().ok_or(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let profile = edgeai_tests::paths::bin_dir();
    eprintln!("update-bench: binaries from {}", profile.display());
    let versions: Vec<String> = (0..rounds).map(|i| format!("90.0.{i}")).collect();
    let signed = SignedBundle::new(&versions[0]);
    let mut bundles = vec![signed.path.clone()];
    for v in &versions[1..] {
        let p = signed.path.with_file_name(format!("edgeai-{v}.bundle"));
        signed.another(v, &p);
        bundles.push(p);
    }
    let bundle_bytes = std::fs::metadata(&bundles[0]).map_err(|e| format!("the bundle: {e}"))?.len();
    let commit_after = 1u64;
    let mut summary = json!({
        "profile": profile.display().to_string(),
        "bundle_bytes": bundle_bytes,
        "commit_after_secs": commit_after,
        "target": { "downtime_s": "<= 1 s plus the model's load (/health answers before it loads)" },
    });
    println!("binary-only update, {rounds} rounds per way, bundle {:.1} MB (medians):", bundle_bytes as f64 / 1e6);
    for mode in [Mode::InPlace, Mode::Restart] {
        let rows = measure(mode, &signed, &versions, &bundles, commit_after)?;
        let med = |k: &str| median(rows.iter().filter_map(|r| r[k].as_f64()).collect());
        println!("  {}:", mode.name());
        println!("    install (command to answer)    {:>8.3} s", med("install_s"));
        println!(
            "    /health downtime               {:>8.3} s   target <= 1 s + model load: {}",
            med("downtime_s"),
            if med("downtime_s") <= 1.0 { "PASS" } else { "MISS" }
        );
        println!("    install to committed           {:>8.3} s   (less the {commit_after} s the gate waits)", med("to_committed_s"));
        summary[mode.name()] = json!({
            "rounds": rows,
            "median": { "install_s": med("install_s"), "downtime_s": med("downtime_s"), "to_committed_s": med("to_committed_s") },
        });
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(&out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// How the daemon switches to the new version.
#[derive(Clone, Copy)]
enum Mode {
    InPlace,
    Restart,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::InPlace => "in_place",
            Mode::Restart => "restart",
        }
    }
}

/// One daemon updated once per bundle; a JSON row per round.
fn measure(mode: Mode, signed: &SignedBundle, versions: &[String], bundles: &[PathBuf], commit_after: u64) -> Result<Vec<Value>, String> {
    let mut b = DaemonBuilder::new()
        .set("update.enabled", true)
        .set("update.commit_after_secs", commit_after as i64)
        .set("update.trust_dir", signed.trust.to_str().ok_or("non-UTF-8 path")?);
    // Kept for the daemon's life: systemd's side of the sockets.
    let mut systemd_side = None;
    if let Mode::InPlace = mode {
        let sock = b.dir().join("edgeai.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).map_err(|e| format!("{}: {e}", sock.display()))?;
        let notify = b.notify_socket();
        b = b.listen_fd(&listener, "unix");
        systemd_side = Some((listener, notify));
    }
    let mut d = b.start();
    let socket = d.socket_path();
    let dir = d.dir().to_path_buf();
    let mut rows = Vec::new();
    for (i, (version, bundle)) in versions.iter().zip(bundles).enumerate() {
        let health = Poller::start(socket.clone());
        let t0 = Instant::now();
        let out = d.ctl(&["update", "install", bundle.to_str().ok_or("non-UTF-8 path")?]);
        let install = t0.elapsed();
        if !out.status.success() {
            return Err(format!("{} round {}: update install: {}", mode.name(), i + 1, String::from_utf8_lossy(&out.stderr)));
        }
        if let Mode::Restart = mode {
            let exit = d.wait_exit(Duration::from_secs(120));
            if exit.code() != Some(75) {
                return Err(format!("round {}: the daemon exited with {exit} instead of 75", i + 1));
            }
            d.start_again();
        }
        let committed = wait_good(&dir, version, Duration::from_secs(180))?;
        let to_committed = committed.duration_since(t0).saturating_sub(Duration::from_secs(commit_after));
        let downtime = health.stop();
        eprintln!(
            "update-bench: {} round {}: {version}: install {:.3} s, downtime {:.3} s, to committed {:.3} s (less the {commit_after} s wait)",
            mode.name(),
            i + 1,
            install.as_secs_f64(),
            downtime.as_secs_f64(),
            to_committed.as_secs_f64()
        );
        rows.push(json!({
            "version": version,
            "install_s": install.as_secs_f64(),
            "downtime_s": downtime.as_secs_f64(),
            "to_committed_s": to_committed.as_secs_f64(),
        }));
    }
    if d.try_exit().is_some() {
        return Err(format!("{}: the daemon is not running after the rounds", mode.name()));
    }
    drop(systemd_side);
    Ok(rows)
}

/// When `update-state.json` says `version` is good.
fn wait_good(dir: &Path, version: &str, timeout: Duration) -> Result<Instant, String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let st: Option<Value> = std::fs::read_to_string(dir.join("update-state.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
        if let Some(st) = st {
            if st["version"] == version && st["status"] == "good" {
                return Ok(Instant::now());
            }
            if st["status"] == "rolled-back" {
                return Err(format!("{version} was rolled back: {}", st["last_error"]));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("{version} did not commit within {timeout:?}"))
}

/// Asks `GET /health` over the unix socket every [`POLL`] and keeps the
/// longest time between two 200 answers (failures, or one long wait, between them).
struct Poller {
    stop: Arc<AtomicBool>,
    longest: Arc<Mutex<Duration>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(socket: PathBuf) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let longest = Arc::new(Mutex::new(Duration::ZERO));
        let (s, l) = (Arc::clone(&stop), Arc::clone(&longest));
        let thread = std::thread::spawn(move || {
            let mut last_ok = Instant::now();
            while !s.load(Ordering::Relaxed) {
                if healthy(&socket) {
                    let now = Instant::now();
                    let mut longest = l.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *longest = (*longest).max(now.duration_since(last_ok));
                    last_ok = now;
                }
                std::thread::sleep(POLL);
            }
        });
        Poller { stop, longest, thread: Some(thread) }
    }

    /// Stops polling; the longest outage seen.
    fn stop(mut self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *self.longest.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One `GET /health` over the socket answered 200.
fn healthy(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else { return false };
    // Long enough for a request that waits in the backlog across a switch.
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
