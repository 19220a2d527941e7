//! `edgeaictl doctor` against the real daemon: every check PASSes on a
//! healthy one (the D-Bus policy WARNs while it is not installed), and each
//! fault FAILs its own line and makes the exit code 1: a model whose sha256
//! does not match, a truncated model (the daemon starts without it), a socket
//! with the wrong mode, a bad config file, a daemon that is not running, and
//! a database with a damaged index page.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgeai_tests::{paths, Daemon, DaemonBuilder};
use serde_json::Value;

/// The default model's file name, which doctor knows the checksum of.
const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const CHECKS: [&str; 8] = ["config", "socket", "D-Bus policy", "model file", "model load", "limits", "disk", "database"];

struct Report {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Report {
    /// The line of check `name`; panics without one.
    fn line(&self, name: &str) -> &str {
        let prefix = format!(" {name}: ");
        self.stdout
            .lines()
            .find(|l| l.get(4..).is_some_and(|rest| rest.starts_with(&prefix)))
            .unwrap_or_else(|| panic!("no {name} line in:\n{self}"))
    }

    fn status(&self, name: &str) -> &str {
        &self.line(name)[..4]
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\nstdout:\n{}stderr:\n{}", self.code, self.stdout, self.stderr)
    }
}

fn doctor(d: &Daemon, config: &Path, extra: &[&str]) -> Report {
    let config = config.display().to_string();
    let out = d.ctl(&[&["doctor", "--config", &config], extra].concat());
    Report { code: out.status.code(), stdout: String::from_utf8(out.stdout).unwrap(), stderr: String::from_utf8(out.stderr).unwrap() }
}

/// What the D-Bus policy line must say on this machine.
fn dbus_expected() -> &'static str {
    let installed = ["/usr/share/dbus-1/system.d/org.edgeai.Daemon1.conf", "/etc/dbus-1/system.d/org.edgeai.Daemon1.conf"]
        .iter()
        .any(|p| Path::new(p).is_file());
    if installed {
        "PASS"
    } else {
        "WARN"
    }
}

/// A builder whose admin API also admits this test's own primary group, so
/// the tests do not need root.
fn builder() -> DaemonBuilder {
    let gid = nix::unistd::getegid();
    let group = nix::unistd::Group::from_gid(gid).unwrap().expect("the test's group has a name");
    DaemonBuilder::new().set("server.admin_group", group.name)
}

/// The default model under its own name in the test directory (a symlink),
/// so a `.sha256` can be put next to it without touching the shared cache.
fn linked_model(b: &DaemonBuilder) -> PathBuf {
    let real = paths::model();
    assert_eq!(
        real.file_name().and_then(|n| n.to_str()),
        Some(DEFAULT_MODEL),
        "these tests need the default model (its checksum is the one doctor knows); EDGEAI_TEST_MODEL points elsewhere"
    );
    let link = b.dir().join(DEFAULT_MODEL);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    link
}

#[test]
fn healthy_daemon_passes_and_each_fault_fails_its_line() {
    let b = builder();
    let model = linked_model(&b);
    let mut d = b.model_path(&model).start();
    let config = d.config_path().to_owned();

    let healthy = doctor(&d, &config, &[]);
    assert_eq!(healthy.code, Some(0), "{healthy}");
    let names: Vec<&str> = healthy.stdout.lines().map(|l| l[5..].split(": ").next().unwrap()).collect();
    assert_eq!(names, CHECKS, "{healthy}");
    for name in CHECKS {
        let expected = if name == "D-Bus policy" { dbus_expected() } else { "PASS" };
        assert_eq!(healthy.status(name), expected, "{name}: {healthy}");
    }
    assert!(healthy.line("model file").contains("sha256 matches the default model's published checksum"), "{healthy}");
    assert!(healthy.line("database").contains("integrity_check ok"), "{healthy}");
    assert!(healthy.line("socket").contains("mode 0660"), "{healthy}");
    assert!(healthy.line("limits").contains("1 inference threads (model.threads)"), "{healthy}");
    if dbus_expected() == "WARN" {
        assert!(healthy.line("D-Bus policy").contains("-> fix: install systemd/org.edgeai.Daemon1.conf"), "{healthy}");
    }

    let json = doctor(&d, &config, &["--json"]);
    assert_eq!(json.code, Some(0), "{json}");
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let statuses: Vec<(&str, &str)> =
        v["checks"].as_array().unwrap().iter().map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap())).collect();
    assert_eq!(statuses.len(), CHECKS.len(), "{json}");
    assert!(statuses.iter().all(|(n, s)| *s == "pass" || (*n == "D-Bus policy" && *s == "warn")), "{json}");

    // The route is the admin socket's only, and only for GET.
    d.unix_client().without_key().request("POST", "/admin/v1/doctor", &[], None).expect_dify_error(405, "method_not_allowed");
    d.client().get("/admin/v1/doctor").expect_dify_error(404, "not_found");

    // A checksum file next to the model that does not match it.
    let sidecar = PathBuf::from(format!("{}.sha256", model.display()));
    std::fs::write(&sidecar, format!("{}  {DEFAULT_MODEL}\n", "0".repeat(64))).unwrap();
    let bad_sum = doctor(&d, &config, &[]);
    std::fs::remove_file(&sidecar).unwrap();
    assert_eq!(bad_sum.code, Some(1), "{bad_sum}");
    let line = bad_sum.line("model file");
    assert!(line.starts_with("FAIL") && line.contains(&"0".repeat(64)) && line.contains("-> fix: fetch the model again"), "{bad_sum}");
    assert_eq!(bad_sum.status("database"), "PASS", "{bad_sum}");
    assert!(bad_sum.stderr.contains("edgeaictl: 1 of 8 doctor checks failed"), "{bad_sum}");

    // The socket opened to everyone while the config says 0660.
    let socket = d.socket_path();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let wide = doctor(&d, &config, &[]);
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();
    assert_eq!(wide.code, Some(1), "{wide}");
    let line = wide.line("socket");
    assert!(line.starts_with("FAIL") && line.contains("mode 0666") && line.contains("says 0660") && line.contains("chmod 0660"), "{wide}");
    assert_eq!(wide.status("model file"), "PASS", "{wide}");

    // A config file the daemon would refuse.
    let bad_config = d.dir().join("bad.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("[server]\n", "[server]\nlisten_backlog = 64\n");
    std::fs::write(&bad_config, text).unwrap();
    let invalid = doctor(&d, &bad_config, &[]);
    assert_eq!(invalid.code, Some(1), "{invalid}");
    let line = invalid.line("config");
    assert!(line.starts_with("FAIL") && line.contains("server.listen_backlog") && line.contains("exited with 78"), "{invalid}");
    assert!(line.contains("-> fix: correct what it names"), "{invalid}");
    assert_eq!(invalid.status("socket"), "WARN", "the mode cannot be compared without a config: {invalid}");

    // The daemon stopped: the local checks still run, the daemon's fail.
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    let down = doctor(&d, &config, &[]);
    assert_eq!(down.code, Some(1), "{down}");
    assert_eq!(down.status("config"), "PASS", "{down}");
    let unreachable = format!("daemon not reachable at {}", socket.display());
    for name in &CHECKS[3..] {
        let line = down.line(name);
        assert!(line.starts_with("FAIL") && line.contains(&unreachable), "{name}: {down}");
        assert!(line.ends_with("-> fix: start it with systemctl start edgeai"), "{name}: {down}");
    }
}

#[test]
fn truncated_model_fails_model_file_and_load() {
    let b = builder().wait_for_model(false);
    let model = b.dir().join(DEFAULT_MODEL);
    let head: Vec<u8> = std::fs::read(paths::model()).unwrap().into_iter().take(1 << 20).collect();
    std::fs::write(&model, head).unwrap();
    let d = b.model_path(&model).start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = serde_json::from_slice(&d.ctl(&["--json", "status"]).stdout).unwrap();
        if status["model"]["state"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "the truncated model did not fail to load: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = doctor(&d, d.config_path(), &[]);
    assert_eq!(r.code, Some(1), "{r}");
    let file = r.line("model file");
    assert!(file.starts_with("FAIL") && file.contains("1048576 bytes") && file.contains("98362432 bytes"), "{r}");
    let load = r.line("model load");
    assert!(load.starts_with("FAIL") && load.contains("failed: ") && load.contains("-> fix: "), "{r}");
    assert_eq!(r.status("database"), "PASS", "{r}");
}

#[test]
fn damaged_index_page_fails_the_integrity_check() {
    let mut d = builder().start();
    for _ in 0..3 {
        assert!(d.ctl(&["keys", "create", "--app", "demo"]).status.success());
    }
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());

    // Rewrite the app id inside the api_keys_by_app index ("demo" ->
    // "demp"): the table and the index disagree, which integrity_check finds
    // and which does not stop the daemon from opening the file.
    let db = d.dir().join("edgeai.db");
    let (page, size) = {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let page: i64 = c.query_row("SELECT rootpage FROM sqlite_master WHERE name = 'api_keys_by_app'", [], |r| r.get(0)).unwrap();
        let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (usize::try_from(page).unwrap(), usize::try_from(size).unwrap())
    };
    let mut bytes = std::fs::read(&db).unwrap();
    let region = &mut bytes[(page - 1) * size..page * size];
    let mut changed = 0;
    for i in 0..region.len() - 4 {
        if &region[i..i + 4] == b"demo" {
            region[i + 3] = b'p';
            changed += 1;
        }
    }
    assert!(changed >= 3, "the index page holds {changed} entries of demo");
    std::fs::write(&db, bytes).unwrap();

    d.start_again();
    let r = doctor(&d, d.config_path(), &[]);
    assert_eq!(r.code, Some(1), "{r}");
    let line = r.line("database");
    assert!(line.starts_with("FAIL") && line.contains("api_keys_by_app") && line.contains("-> fix: stop the daemon"), "{r}");
    assert_eq!(r.status("model file"), "PASS", "{r}");
}
