//! The D-Bus end-to-end tests' shared pieces (`tests/tests/dbus*.rs`): a
//! private, real `dbus-daemon` per test, a daemon configured onto it, and
//! `edgeaictl --bus` / `gdbus call` runners with their checks.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{paths, Daemon, DaemonBuilder};

/// A private dbus-daemon on a socket in a world-readable temporary directory
/// (so another uid can reach it); everyone may connect, own and call, so
/// only the daemon's own checks decide.
pub struct Bus {
    _dir: tempfile::TempDir,
    child: Child,
    /// `unix:path=...`, for `--bus` and `control.bus`.
    pub address: String,
}

impl Bus {
    pub fn start() -> Bus {
        let dir = tempfile::Builder::new().prefix("edgeai-bus-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting dbus-daemon (Debian package dbus; scripts/setup.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not create {}", socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        Bus { _dir: dir, child, address: format!("unix:path={}", socket.display()) }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon whose control interface is on `bus`.
pub fn daemon_on(bus: &Bus) -> DaemonBuilder {
    DaemonBuilder::new().set("control.bus", bus.address.as_str())
}

/// `edgeaictl --bus ADDRESS ARGS` (its --socket points nowhere, so nothing goes through the socket).
pub fn ctl(bus: &Bus, d: &Daemon, args: &[&str]) -> Output {
    Command::new(paths::edgeaictl())
        .args(["--bus", &bus.address, "--socket"])
        .arg(d.dir().join("no-such.sock"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running edgeaictl")
}

/// The stdout of a successful edgeaictl.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "edgeaictl failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The stdout of a successful edgeaictl, as JSON.
pub fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// edgeaictl exited `code` and said `stderr_has`.
#[track_caller]
pub fn fails(out: &Output, code: i32, stderr_has: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {err}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains(stderr_has), "stderr lacks {stderr_has:?}: {err}");
}

/// `gdbus call` on the daemon's object, optionally as another uid.
pub fn gdbus_call(bus: &Bus, as_uid: Option<u32>, method: &str, args: &[&str]) -> Output {
    let mut cmd = match as_uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "gdbus"]);
            c
        }
        None => Command::new("gdbus"),
    };
    cmd.args(["call", "--address", &bus.address, "--dest", "org.edgeai.Daemon1", "--object-path", "/org/edgeai/Daemon1", "--method"])
        .arg(method)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running gdbus (Debian package libglib2.0-bin; scripts/setup.sh installs it)")
}

/// The error a failed gdbus call printed.
pub fn gdbus_error(out: &Output) -> String {
    assert!(!out.status.success(), "gdbus succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `gdbus monitor` of the daemon's signals on `bus`, started and ready.
pub struct Monitor {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    pub fn start(bus: &Bus) -> Monitor {
        let mut child = Command::new("gdbus")
            .args(["monitor", "--address", &bus.address, "--dest", "org.edgeai.Daemon1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running gdbus monitor (Debian package libglib2.0-bin)");
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(10)).expect("gdbus monitor started");
        assert!(first.contains("Monitoring"), "{first}");
        Monitor { child, lines }
    }

    /// The lines up to and including the first Completed signal of
    /// `operation`; panics (with what was seen) after `timeout`.
    #[track_caller]
    pub fn until_completed(&self, operation: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let done = format!("org.edgeai.Daemon1.Completed ('{operation}'");
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let end = line.contains(&done);
            seen.push(line);
            if end {
                return seen.join("\n");
            }
        }
        panic!("no Completed signal of {operation} within {timeout:?}; seen:\n{}", seen.join("\n"));
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end with piped output; panics (killing it) after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `edgeaictl --bus <bus> ARGS` in the background (output piped), for
/// a long job another call is to overlap.
pub fn spawn_ctl(bus: &Bus, d: &Daemon, args: &[&str]) -> Child {
    Command::new(paths::edgeaictl())
        .args(["--bus", &bus.address, "--socket"])
        .arg(d.dir().join("no-such.sock"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running edgeaictl")
}

/// The daemon's Operation property, as gdbus prints it.
pub fn operation(bus: &Bus) -> String {
    let out = gdbus_call(bus, None, "org.freedesktop.DBus.Properties.Get", &["org.edgeai.Daemon1", "Operation"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (up to 20 s) until the long job `job` shows as the Operation.
#[track_caller]
pub fn wait_for_operation(bus: &Bus, job: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !operation(bus).contains(job) {
        assert!(Instant::now() < deadline, "{job} never showed as the Operation");
        std::thread::sleep(Duration::from_millis(50));
    }
}
