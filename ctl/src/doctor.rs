//! `edgeaictl doctor`: checks an installation and prints PASS, WARN or FAIL
//! per check with what to do about each WARN and FAIL. Local checks run
//! here: the config (through `edgeaid --check-config`, found next to
//! edgeaictl or on PATH), the socket's mode and group against the config,
//! the D-Bus policy file. The daemon's own checks (model file, model load,
//! limits, disk, database) come from `GET /admin/v1/doctor`; when the daemon
//! cannot be asked, each of them FAILs saying why.
//!
//! Owns: these local checks and the report's format. Must not: link the
//! daemon crate (it runs the `edgeaid` binary instead) or change anything.

use crate::error::CtlError;
use crate::paths;
use edgeai_common::admin::{CheckStatus, DoctorCheck, DoctorReport, DAEMON_CHECKS};
use edgeai_common::{ClientError, UnixClient};
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the packages install the D-Bus policy; either place counts.
const DBUS_POLICY: [&str; 2] = ["/usr/share/dbus-1/system.d/org.edgeai.Daemon1.conf", "/etc/dbus-1/system.d/org.edgeai.Daemon1.conf"];

/// What `doctor` was asked to check.
pub struct Doctor<'a> {
    /// `--config` files (none: the daemon's system config).
    pub configs: &'a [PathBuf],
    /// `--socket`/`EDGEAI_SOCKET`, if given: it wins over the config's.
    pub socket: Option<PathBuf>,
    /// The socket to use when neither `--socket` nor the config names one.
    pub default_socket: PathBuf,
    pub timeout: Duration,
    pub json: bool,
}

/// The config's `[server] socket`, `socket_mode` and `socket_group`, as
/// `edgeaid --check-config` prints them.
#[derive(Debug, PartialEq, Eq)]
struct SocketConfig {
    path: PathBuf,
    mode: u32,
    group: Option<String>,
}

/// What the config check learnt about the socket.
enum ConfigSocket {
    /// The config could not be read.
    Unknown,
    /// `server.socket` is not set.
    Disabled,
    Set(SocketConfig),
}

impl Doctor<'_> {
    pub async fn run(self) -> Result<(), CtlError> {
        let (config, socket_config) = check_config(find_edgeaid(), self.configs, self.timeout).await;
        let socket = match (&self.socket, &socket_config) {
            (Some(explicit), _) => explicit.clone(),
            (None, ConfigSocket::Set(c)) => c.path.clone(),
            (None, _) => self.default_socket.clone(),
        };
        let mut checks = vec![config, check_socket(&socket, &socket_config), check_dbus_policy(&DBUS_POLICY)];
        let client = UnixClient::new(socket.clone()).with_timeout(self.timeout);
        match client.get::<DoctorReport>(&paths::doctor()).await {
            Ok(report) => checks.extend(report.checks),
            Err(e) => {
                let (message, fix) = unreachable(&socket, &e);
                checks.extend(DAEMON_CHECKS.iter().map(|name| fail(name, message.clone(), &fix)));
            }
        }
        let failed = checks.iter().filter(|c| c.status == CheckStatus::Fail).count();
        if self.json {
            crate::commands::print(&format!("{:#}\n", serde_json::json!({ "ok": failed == 0, "checks": checks })))?;
        } else {
            crate::commands::print(&render(&checks))?;
        }
        if failed > 0 {
            return Err(CtlError::ChecksFailed { failed, total: checks.len() });
        }
        Ok(())
    }
}

/// One line per check: `PASS name: message`, and `-> fix: ...` for the others.
fn render(checks: &[DoctorCheck]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!("{} {}: {}", c.status.label(), c.name, c.message));
        if let Some(fix) = &c.fix {
            out.push_str(&format!(" -> fix: {fix}"));
        }
        out.push('\n');
    }
    out
}

fn check(name: &str, status: CheckStatus, message: String, fix: Option<String>) -> DoctorCheck {
    DoctorCheck { name: name.to_owned(), status, message, fix }
}

fn pass(name: &str, message: String) -> DoctorCheck {
    check(name, CheckStatus::Pass, message, None)
}

fn warn(name: &str, message: String, fix: &str) -> DoctorCheck {
    check(name, CheckStatus::Warn, message, Some(fix.to_owned()))
}

fn fail(name: &str, message: String, fix: &str) -> DoctorCheck {
    check(name, CheckStatus::Fail, message, Some(fix.to_owned()))
}

/// Why the daemon's checks could not run, and what to do.
fn unreachable(socket: &Path, e: &ClientError) -> (String, String) {
    let at = socket.display();
    match e {
        ClientError::Connect { source, .. } if source.kind() == ErrorKind::PermissionDenied => (
            format!("permission denied on {at}: {source}"),
            "run as root or as a member of the daemon's admin group (edgeai-admin)".to_owned(),
        ),
        ClientError::Connect { source, .. } => {
            (format!("daemon not reachable at {at} ({source})"), "start it with systemctl start edgeai".to_owned())
        }
        ClientError::Timeout { .. } => (e.to_string(), "see journalctl -u edgeai, or allow longer with --timeout".to_owned()),
        ClientError::Api { status: 403, .. } => {
            (e.to_string(), "run as root or as a member of the daemon's admin group (edgeai-admin)".to_owned())
        }
        ClientError::Api { status: 404, .. } => {
            (format!("{e} (the daemon at {at} has no doctor route)"), "update edgeaid to the version of edgeaictl".to_owned())
        }
        _ => (format!("asking the daemon at {at} failed: {e}"), "see journalctl -u edgeai".to_owned()),
    }
}

/// `edgeaid` next to this `edgeaictl`, else the first on PATH.
fn find_edgeaid() -> Option<PathBuf> {
    let sibling = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join("edgeaid")));
    let on_path =
        std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|d| d.join("edgeaid"));
    sibling.into_iter().chain(on_path).find(|p| p.is_file())
}

/// Runs `edgeaid --check-config` with the same `--config` files.
async fn check_config(edgeaid: Option<PathBuf>, configs: &[PathBuf], timeout: Duration) -> (DoctorCheck, ConfigSocket) {
    const NAME: &str = "config";
    let Some(edgeaid) = edgeaid else {
        let fix = "install edgeai, or put edgeaid next to edgeaictl or on PATH";
        return (fail(NAME, "edgeaid not found next to edgeaictl or on PATH".into(), fix), ConfigSocket::Unknown);
    };
    let mut cmd = tokio::process::Command::new(&edgeaid);
    cmd.arg("--check-config").stdin(std::process::Stdio::null()).kill_on_drop(true);
    for c in configs {
        cmd.arg("--config").arg(c);
    }
    let again = std::iter::once(format!("{} --check-config", edgeaid.display()))
        .chain(configs.iter().map(|c| format!("--config {}", c.display())))
        .collect::<Vec<_>>()
        .join(" ");
    let cannot =
        |why: String| (fail(NAME, format!("cannot run {}: {why}", edgeaid.display()), "check the edgeaid binary"), ConfigSocket::Unknown);
    let out = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return cannot(e.to_string()),
        Err(_) => return cannot(format!("no answer within {} (see --timeout)", humantime::format_duration(timeout))),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let problems: Vec<&str> =
            stderr.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "edgeaid: invalid configuration:").collect();
        let code = out.status.code().map_or_else(|| "a signal".to_owned(), |c| c.to_string());
        let message = format!("edgeaid --check-config exited with {code}: {}", problems.join("; "));
        let fix = format!("correct what it names, then run {again}");
        return (fail(NAME, message, &fix), ConfigSocket::Unknown);
    }
    let files = stdout.lines().find_map(|l| l.strip_prefix("config files: ")).unwrap_or("?");
    let socket = match stdout.lines().find_map(|l| l.strip_prefix("socket: ")) {
        Some("disabled") => ConfigSocket::Disabled,
        Some(line) => parse_socket(line).map_or(ConfigSocket::Unknown, ConfigSocket::Set),
        None => ConfigSocket::Unknown,
    };
    (pass(NAME, format!("valid ({files})")), socket)
}

/// `PATH (mode 0660, group edgeai)` or `PATH (mode 0660)`, as
/// `edgeaid --check-config` prints the socket.
fn parse_socket(line: &str) -> Option<SocketConfig> {
    let (path, rest) = line.rsplit_once(" (mode ")?;
    let rest = rest.strip_suffix(')')?;
    let (mode, group) = match rest.split_once(", group ") {
        Some((mode, group)) => (mode, Some(group.to_owned())),
        None => (rest, None),
    };
    Some(SocketConfig { path: PathBuf::from(path), mode: u32::from_str_radix(mode, 8).ok()?, group })
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// The socket exists, is a socket, and has the configured mode and group.
fn check_socket(socket: &Path, config: &ConfigSocket) -> DoctorCheck {
    const NAME: &str = "socket";
    let at = socket.display();
    let meta = match std::fs::metadata(socket) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return fail(
                NAME,
                format!("no socket at {at}"),
                "start the daemon with systemctl start edgeai, or point --socket at its socket",
            )
        }
        Err(e) => return fail(NAME, format!("cannot stat {at}: {e}"), "run as root or as a member of the daemon's admin group"),
    };
    if !meta.file_type().is_socket() {
        return fail(NAME, format!("{at} is not a socket"), "remove it, then systemctl restart edgeai");
    }
    let (mode, gid) = (meta.mode() & 0o7777, meta.gid());
    let found = format!("{at} has mode {mode:04o}, group {}", group_name(gid));
    let expected = match config {
        ConfigSocket::Set(c) => c,
        ConfigSocket::Unknown => return warn(NAME, format!("{found}; not compared, the config could not be read"), "fix the config first"),
        ConfigSocket::Disabled => {
            return warn(NAME, format!("{found}; the config sets no server.socket"), "set server.socket so that edgeaictl finds the daemon")
        }
    };
    let restart = "systemctl restart edgeai (the daemon sets mode and group when it binds)";
    if mode != expected.mode {
        let fix = format!("{restart}, or chmod {:04o} {at}", expected.mode);
        return fail(NAME, format!("{found}, the config (server.socket_mode) says {:04o}", expected.mode), &fix);
    }
    if let Some(group) = &expected.group {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) if g.gid.as_raw() == gid => {}
            Ok(Some(_)) => {
                let fix = format!("{restart}, or chgrp {group} {at}");
                return fail(NAME, format!("{found}, the config (server.socket_group) says {group}"), &fix);
            }
            _ => {
                let fix = "create the group (systemd-sysusers), or change server.socket_group";
                return fail(NAME, format!("{found}; the config's server.socket_group {group} does not exist"), fix);
            }
        }
    }
    if socket != expected.path {
        return warn(
            NAME,
            format!("{found}, as configured; but the config's socket is {}", expected.path.display()),
            "point --socket at the config's socket, or pass the daemon's --config files",
        );
    }
    pass(NAME, format!("{found}, as configured"))
}

fn check_dbus_policy(places: &[&str]) -> DoctorCheck {
    const NAME: &str = "D-Bus policy";
    match places.iter().find(|p| Path::new(p).is_file()) {
        Some(p) => pass(NAME, format!("installed at {p}")),
        None => warn(
            NAME,
            format!("not installed ({})", places.join(" or ")),
            "install systemd/org.edgeai.Daemon1.conf into /usr/share/dbus-1/system.d/ (the package does); until then the bus refuses edgeaictl's D-Bus calls",
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn parses_the_socket_line_of_check_config() {
        assert_eq!(
            parse_socket("/run/edgeai/edgeai.sock (mode 0660, group edgeai-admin)"),
            Some(SocketConfig { path: "/run/edgeai/edgeai.sock".into(), mode: 0o660, group: Some("edgeai-admin".into()) })
        );
        assert_eq!(
            parse_socket("/tmp/a (mode x)/s (mode 0600)"),
            Some(SocketConfig { path: "/tmp/a (mode x)/s".into(), mode: 0o600, group: None })
        );
        assert_eq!(parse_socket("/s (mode 9)"), None);
        assert_eq!(parse_socket("/s"), None);
    }

    #[test]
    fn socket_mode_is_compared_with_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        let config = |mode| ConfigSocket::Set(SocketConfig { path: path.clone(), mode, group: None });
        assert_eq!(check_socket(&path, &config(0o660)).status, CheckStatus::Pass);
        let wrong = check_socket(&path, &config(0o600));
        assert_eq!(wrong.status, CheckStatus::Fail);
        assert!(wrong.message.contains("mode 0660") && wrong.fix.unwrap().contains("chmod 0600"), "{}", wrong.message);
        assert_eq!(check_socket(&path, &ConfigSocket::Unknown).status, CheckStatus::Warn);
        let gone = check_socket(&dir.path().join("gone.sock"), &config(0o660));
        assert_eq!(gone.status, CheckStatus::Fail);
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(check_socket(&file, &config(0o660)).message.contains("not a socket"));
    }

    #[test]
    fn socket_group_is_compared_with_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        let gid = std::fs::metadata(&path).unwrap().gid();
        let config = |group: &str| ConfigSocket::Set(SocketConfig { path: path.clone(), mode, group: Some(group.to_owned()) });
        assert_eq!(check_socket(&path, &config(&group_name(gid))).status, CheckStatus::Pass);
        let missing = check_socket(&path, &config("edgeai-no-such-group"));
        assert!(missing.status == CheckStatus::Fail && missing.message.contains("does not exist"), "{missing:?}");
        // Another group that exists on this machine, if there is one.
        let other = ["nogroup", "daemon", "root"]
            .into_iter()
            .find(|g| nix::unistd::Group::from_name(g).ok().flatten().is_some_and(|grp| grp.gid.as_raw() != gid));
        match other {
            Some(g) => {
                let wrong = check_socket(&path, &config(g));
                assert!(wrong.status == CheckStatus::Fail && wrong.fix.unwrap().contains(&format!("chgrp {g}")), "{}", wrong.message);
            }
            None => eprintln!("SKIP: no second group on this machine to compare the socket's group with"),
        }
    }

    #[test]
    fn dbus_policy_in_either_place_passes() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("org.edgeai.Daemon1.conf");
        let missing = dir.path().join("missing.conf");
        let (there, missing) = (there.to_str().unwrap(), missing.to_str().unwrap());
        assert_eq!(check_dbus_policy(&[missing, there]).status, CheckStatus::Warn, "not written yet");
        std::fs::write(there, "<busconfig/>").unwrap();
        assert_eq!(check_dbus_policy(&[missing, there]).status, CheckStatus::Pass);
    }

    #[test]
    fn report_lines_carry_the_fix() {
        let text = render(&[pass("config", "valid".into()), fail("socket", "no socket at /s".into(), "start it")]);
        assert_eq!(text, "PASS config: valid\nFAIL socket: no socket at /s -> fix: start it\n");
    }
}
