//! `edgeaictl update install URL` end to end: the real daemon downloads a
//! signed bundle of the built edgeaid from a small real HTTP(S) server
//! (`edgeai_tests::bundle_server`) that cuts its answers mid-body or fails
//! on request. A cut download resumes with `Range` + `If-Range` in the same
//! install, through a redirect; a download that gives up keeps its bytes and
//! the next install of the same URL, after a restart, resumes there; https
//! works with the CA in `update.ca_file` and is refused at once (no retries)
//! with another. Bad URLs and server errors change nothing. Over D-Bus,
//! InstallUpdateFromUrl reports Progress and Completed and refuses with
//! UpdateDownloadFailed or InvalidArgument. A daemon killed (-9) mid-download
//! keeps what was written, and its next start plus install resume there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeai_tests::bundle_server::{Act, BundleServer, SignedBundle, ETAG};
use edgeai_tests::daemon::{Daemon, DaemonBuilder};
use edgeai_tests::paths;
use edgeai_tests::tls::TestCa;

/// The version the bundle calls the built edgeaid.
const NEW: &str = "9.9.0";

fn daemon(b: &SignedBundle) -> DaemonBuilder {
    DaemonBuilder::new().set("update.enabled", true).set("update.trust_dir", b.trust.to_str().expect("utf-8 path"))
}

/// `edgeaictl update install URL` fails with exit 1 and `code`; its stderr.
fn refused(d: &Daemon, url: &str, code: &str) -> String {
    let out = d.ctl(&["update", "install", url]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "update install {url}: {stderr}");
    assert!(stderr.contains(&format!("{code}: ")), "update install {url} should say {code}: {stderr}");
    stderr
}

/// `edgeaictl update install URL` succeeds; the daemon exits 75 into slot a, pending.
fn installs(d: &mut Daemon, url: &str) {
    let out = d.ctl(&["update", "install", url]);
    assert!(out.status.success(), "update install {url}: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("{NEW} installed in slot a (pending)")), "{said}");
    let code = d.wait_exit(Duration::from_secs(60));
    assert_eq!(code.code(), Some(75), "the daemon restarts into the new version: {code}");
    let dir = d.dir();
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("update-state.json")).expect("state")).expect("json");
    assert_eq!((st["status"].as_str(), st["current"].as_str(), st["version"].as_str()), (Some("pending"), Some("a"), Some(NEW)), "{st}");
    assert_eq!(
        std::fs::metadata(dir.join("slots/a/bin/edgeaid")).expect("the installed binary").len(),
        std::fs::metadata(paths::edgeaid()).expect("edgeaid").len()
    );
    assert!(update_dir(dir).is_empty(), "nothing is left in update/: {:?}", update_dir(dir));
}

fn update_dir(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("update")).map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default()
}

/// The requests for the bundle itself, as (Range, If-Range).
fn bundle_requests(server: &BundleServer) -> Vec<(Option<String>, Option<String>)> {
    server.seen().into_iter().filter(|s| s.path == "/edgeai.bundle").map(|s| (s.range, s.if_range)).collect()
}

#[test]
fn a_download_cut_halfway_resumes_with_range_through_a_redirect_and_installs() {
    let b = SignedBundle::new(NEW);
    let bytes = b.bytes();
    let half = bytes.len() / 2;
    let server = BundleServer::start(bytes);
    let mut d = daemon(&b).start();

    // Refusals first: the URL, then the server's 404. Nothing is kept.
    for (url, says) in [
        ("ftp://127.0.0.1/edgeai.bundle", "scheme \"ftp\""),
        ("http://user:secret@127.0.0.1/edgeai.bundle", "credentials"),
        ("edgeai.bundle.not-a-file", ""),
    ] {
        if says.is_empty() {
            // Not a URL and no such file: edgeaictl's own refusal, exit 65.
            let out = d.ctl(&["update", "install", url]);
            assert_eq!(out.status.code(), Some(65), "{}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        let stderr = refused(&d, url, "invalid_param");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(!stderr.contains("secret"), "a password in a URL is never echoed: {stderr}");
    }
    let stderr = refused(&d, &server.url("/missing.bundle"), "update_download_failed");
    assert!(stderr.contains("404"), "{stderr}");
    assert!(update_dir(d.dir()).is_empty(), "a refused download leaves nothing: {:?}", update_dir(d.dir()));
    assert!(!d.dir().join("update-state.json").exists(), "nothing is installed after the refusals");

    // The first answer stops after half the bytes; the daemon resumes there.
    server.script(&[Act::Cut(half)], Act::Serve);
    installs(&mut d, &server.url("/moved"));
    let asked = bundle_requests(&server);
    assert_eq!(asked.len(), 2, "one cut answer, one resumed: {asked:?}");
    assert_eq!(asked[0], (None, None), "the first request asks for everything");
    assert_eq!(asked[1], (Some(format!("bytes={half}-")), Some(ETAG.to_owned())), "the second resumes where the first stopped");
    let interrupted = d.wait_log_message("update: download interrupted; resuming", Duration::from_secs(5));
    assert_eq!(interrupted.field_u64("bytes"), Some(half as u64), "{:?}", interrupted.field("bytes"));
}

#[test]
fn a_download_that_gives_up_keeps_its_bytes_and_the_next_install_resumes_after_a_restart() {
    let b = SignedBundle::new(NEW);
    let bytes = b.bytes();
    let third = bytes.len() / 3;
    let server = BundleServer::start(bytes);
    let mut d = daemon(&b).start();
    let url = server.url("/edgeai.bundle");

    // A third of the bundle, then the server fails every try.
    server.script(&[Act::Cut(third)], Act::Status(503));
    let stderr = refused(&d, &url, "update_download_failed");
    assert!(stderr.contains("503") && stderr.contains(&format!("the {third} bytes received are kept")), "{stderr}");
    let kept = update_dir(d.dir());
    let part = kept.iter().find(|p| p.extension().is_some_and(|e| e == "part")).unwrap_or_else(|| panic!("a part file: {kept:?}"));
    assert_eq!(std::fs::metadata(part).expect("part").len(), third as u64);
    assert!(kept.iter().any(|p| p.extension().is_some_and(|e| e == "json")), "its description is kept: {kept:?}");
    assert!(!d.dir().join("update-state.json").exists(), "nothing is installed");

    // A restart keeps the part; the server is back; the install resumes at the third.
    d.restart();
    server.script(&[], Act::Serve);
    let before = bundle_requests(&server).len();
    installs(&mut d, &url);
    let asked = bundle_requests(&server);
    assert_eq!(asked.len(), before + 1, "one request finishes it: {asked:?}");
    assert_eq!(asked[before], (Some(format!("bytes={third}-")), Some(ETAG.to_owned())));
}

#[test]
fn https_is_trusted_through_update_ca_file_and_another_ca_is_refused_without_retrying() {
    let b = SignedBundle::new(NEW);
    let work = tempfile::tempdir().expect("tempdir");
    let (ca, stranger) = (TestCa::new("edgeai update test CA"), TestCa::new("someone else"));
    let (ca_file, stranger_file) = (work.path().join("ca.pem"), work.path().join("stranger.pem"));
    ca.write(&ca_file);
    stranger.write(&stranger_file);
    let server = BundleServer::start_tls(b.bytes(), &ca.server("bundles.test", 7));
    let url = server.url("/edgeai.bundle");
    let mut d = daemon(&b).set("update.ca_file", stranger_file.to_str().expect("utf-8 path")).start();

    let stderr = refused(&d, &url, "update_download_failed");
    assert!(stderr.contains("TLS handshake") && stderr.contains("update.ca_file"), "{stderr}");
    assert!(server.seen().is_empty(), "no request is sent over an untrusted connection");
    assert!(d.logs_with_message("update: download interrupted; resuming").is_empty(), "a certificate refusal is not retried");
    assert!(update_dir(d.dir()).is_empty(), "{:?}", update_dir(d.dir()));

    d.edit_config(|c| edgeai_tests::daemon::set_path(c, "update.ca_file", ca_file.to_str().expect("utf-8 path").into()));
    d.restart();
    installs(&mut d, &url);
    assert_eq!(bundle_requests(&server), vec![(None, None)]);
}

#[test]
fn over_d_bus_install_update_from_url_reports_progress_and_refuses_with_named_errors() {
    use edgeai_tests::dbus::{ctl, daemon_on, fails, ok, Bus, Monitor};
    let b = SignedBundle::new(NEW);
    let server = BundleServer::start(b.bytes());
    let bus = Bus::start();
    let mut d = daemon_on(&bus).set("update.enabled", true).set("update.trust_dir", b.trust.to_str().expect("utf-8 path")).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));

    fails(
        &ctl(&bus, &d, &["update", "install", &server.url("/missing.bundle")]),
        1,
        "org.edgeai.Error.UpdateDownloadFailed: update_download_failed: the download of http://",
    );
    fails(&ctl(&bus, &d, &["update", "install", "gopher://127.0.0.1/x"]), 1, "org.edgeai.Error.InvalidArgument: invalid_param: ");
    assert!(update_dir(d.dir()).is_empty(), "{:?}", update_dir(d.dir()));

    let monitor = Monitor::start(&bus);
    let said = ok(&ctl(&bus, &d, &["update", "install", &server.url("/edgeai.bundle")]));
    assert!(said.contains(&format!("{NEW} installed in slot a (pending)")), "{said}");
    let signals = monitor.until_completed("InstallUpdateFromUrl", Duration::from_secs(60));
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('InstallUpdateFromUrl', uint32 100, 'installed')"), "{signals}");
    assert!(
        signals.contains(&format!("org.edgeai.Daemon1.Completed ('InstallUpdateFromUrl', 'ok: {NEW} installed in slot a (pending)")),
        "{signals}"
    );
    let code = d.wait_exit(Duration::from_secs(60));
    assert_eq!(code.code(), Some(75), "{code}");
    assert!(update_dir(d.dir()).is_empty(), "{:?}", update_dir(d.dir()));
}

#[test]
fn a_daemon_killed_mid_download_keeps_the_bytes_and_its_next_install_resumes_there() {
    use std::os::unix::process::ExitStatusExt as _;
    let b = SignedBundle::new(NEW);
    let server = BundleServer::start(b.bytes());
    let url = server.url("/edgeai.bundle");
    // kill -9 after the 20th piece of the body was written.
    let mut d = daemon(&b).failpoint("update-kill", "20*off->return(receive)").start();
    let out = d.ctl(&["update", "install", &url]);
    assert!(!out.status.success(), "the daemon died mid-download: {}", String::from_utf8_lossy(&out.stdout));
    let code = d.wait_exit(Duration::from_secs(60));
    assert_eq!(code.signal(), Some(9), "killed at the kill point: {code}");
    let dir = d.dir().to_path_buf();
    let part = || update_dir(&dir).into_iter().find(|p| p.extension().is_some_and(|e| e == "part"));
    let have = std::fs::metadata(part().expect("the part file survives kill -9")).expect("part").len();
    assert!(have > 0, "some of the bundle was on disk");

    // As systemd would: started again (the launcher keeps the part), then the same URL again.
    d.set_failpoints(None);
    d.start_again();
    assert_eq!(part().map(|p| std::fs::metadata(p).expect("part").len()), Some(have), "the start kept the part");
    installs(&mut d, &url);
    let asked = bundle_requests(&server);
    assert_eq!(asked.last(), Some(&(Some(format!("bytes={have}-")), Some(ETAG.to_owned()))), "{asked:?}");
}
