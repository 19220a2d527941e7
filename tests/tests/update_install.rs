//! `edgeaictl update install` end to end with the real binaries: a signing
//! key from `edgeaictl keys gen-signing`, a bundle of the built edgeaid from
//! `edgeaictl bundle create` + `sign`, sent over the admin socket; the daemon
//! verifies it, unpacks it into the slot that does not run, restarts (exit
//! 75) and the launcher starts the pending version, which commits itself
//! after its self-test generated and searched a knowledge base; one that
//! cannot open a knowledge base's vector index fails that gate and is
//! rolled back.
//! Before that, every refused bundle (unsigned, another device, an older
//! version, models in it, a corrupt copy) leaves the slots and the state as
//! they were.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgeai_tests::daemon::{Daemon, DaemonBuilder};
use edgeai_tests::paths;
use serde_json::Value;

/// The version the bundle calls the built edgeaid.
const NEW: &str = "9.9.0";

fn ctl_offline(args: &[&str]) {
    let out = Command::new(paths::edgeaictl()).args(args).output().expect("running edgeaictl");
    assert!(out.status.success(), "edgeaictl {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

/// A signing key from `edgeaictl keys gen-signing` under `work`, and a trust
/// directory holding its public half: (trust dir, private key).
fn signing_key(work: &Path) -> (PathBuf, PathBuf) {
    let trust = work.join("trust.d");
    std::fs::create_dir(&trust).expect("trust dir");
    let key = work.join("release-key");
    ctl_offline(&["keys", "gen-signing", "--out", key.to_str().expect("utf-8 path")]);
    std::fs::copy(work.join("release-key.pub"), trust.join("release.pub")).expect("trusting the key");
    (trust, key)
}

/// A signed bundle at `out`: `version`, `compatible`, the built edgeaid,
/// and the extra `create` arguments.
fn bundle(out: &Path, key: &Path, version: &str, compatible: &str, extra: &[&str], sign: bool) {
    let bin = paths::edgeaid();
    let mut args =
        vec!["bundle", "create", "--version", version, "--compatible", compatible, "--binary", bin.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    args.push(out.to_str().expect("utf-8 path"));
    ctl_offline(&args);
    if sign {
        ctl_offline(&["bundle", "sign", "--key", key.to_str().expect("utf-8 path"), out.to_str().expect("utf-8 path")]);
    }
}

/// `edgeaictl update install ARGS` is refused with `exit` and `code`.
fn refused(d: &Daemon, bundle: &Path, extra: &[&str], exit: i32, code: &str) {
    let mut args = vec!["update", "install", bundle.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    let out = d.ctl(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit), "edgeaictl {args:?}: {stderr}");
    assert!(stderr.contains(&format!("{code}: ")), "edgeaictl {args:?} should say {code}: {stderr}");
}

fn status(d: &Daemon) -> Value {
    let out = d.ctl(&["update", "status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("update status --json is JSON")
}

#[test]
fn a_signed_bundle_installs_restarts_and_commits_and_bad_ones_change_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let (trust, key) = signing_key(work.path());
    let compatible = format!("edgeai-{}", std::env::consts::ARCH);

    let mut d = DaemonBuilder::new()
        .set("update.enabled", true)
        .set("update.commit_after_secs", 1)
        .set("update.trust_dir", trust.to_str().expect("utf-8 path"))
        .with_embedder()
        .start();
    let dir = d.dir().to_path_buf();
    assert!(paths::update_files(&dir).is_empty(), "a fresh daemon has no update files");

    // Refusals, each before a byte is installed.
    let unsigned = work.path().join("unsigned.bundle");
    bundle(&unsigned, &key, NEW, &compatible, &[], false);
    refused(&d, &unsigned, &[], 77, "update_untrusted");
    let other_device = work.path().join("other.bundle");
    bundle(&other_device, &key, NEW, "acme-other-gateway", &[], true);
    refused(&d, &other_device, &[], 1, "update_not_applicable");
    let older = work.path().join("older.bundle");
    bundle(&older, &key, "0.0.1", &compatible, &[], true);
    refused(&d, &older, &[], 1, "update_not_applicable");
    let with_model = work.path().join("model.bundle");
    let model = paths::model();
    bundle(&with_model, &key, NEW, &compatible, &["--model", model.to_str().expect("utf-8 path")], true);
    refused(&d, &with_model, &[], 1, "update_unsupported");
    let good = work.path().join("good.bundle");
    bundle(&good, &key, NEW, &compatible, &[], true);
    // A corrupt copy: one byte of the payload flipped, past the manifest and signature.
    let corrupt = work.path().join("corrupt.bundle");
    let mut bytes = std::fs::read(&good).expect("reading the bundle");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&corrupt, &bytes).expect("writing the corrupt copy");
    refused(&d, &corrupt, &[], 1, "update_bad_bundle");
    assert!(paths::update_files(&dir).is_empty(), "refused bundles left files: {:?}", paths::update_files(&dir));
    assert!(status(&d)["state"].is_null(), "nothing is installed after the refusals");

    // A knowledge base the new version's health gate searches.
    let manual = work.path().join("manual.txt");
    std::fs::write(&manual, "The edgeai gateway applies an update from a signed bundle.\n").expect("writing the document");
    assert!(d.ctl(&["datasets", "create", "manuals"]).status.success());
    let ingest = d.ctl(&["datasets", "ingest", manual.to_str().expect("utf-8 path"), "--dataset", "manuals"]);
    assert!(ingest.status.success(), "datasets ingest: {}", String::from_utf8_lossy(&ingest.stderr));

    // The good bundle: installed into slot a, the daemon restarts (exit 75).
    let out = d.ctl(&["update", "install", good.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "update install: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("{NEW} installed in slot a (pending)")), "{said}");
    let code = d.wait_exit(Duration::from_secs(60));
    assert_eq!(code.code(), Some(75), "the daemon restarts into the new version: {code}");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("update-state.json")).expect("state")).expect("json");
    assert_eq!((st["status"].as_str(), st["current"].as_str(), st["version"].as_str()), (Some("pending"), Some("a"), Some(NEW)), "{st}");
    assert_eq!(std::fs::read_link(dir.join("current")).expect("current link"), Path::new("slots/a"));
    assert_eq!(
        std::fs::read(dir.join("slots/a/bin/edgeaid")).expect("the installed binary").len(),
        std::fs::metadata(paths::edgeaid()).expect("edgeaid").len() as usize
    );
    let received: Vec<_> = std::fs::read_dir(dir.join("update")).expect("update dir").filter_map(Result::ok).collect();
    assert!(received.is_empty(), "the received bundle is removed: {received:?}");

    // What systemd does next: start it again; the launcher runs slot a, which commits itself.
    d.start_again();
    d.wait_log_message("update: committed; the version is good", Duration::from_secs(120));
    let s = status(&d);
    assert_eq!(
        (s["running"].as_str(), s["state"]["status"].as_str(), s["state"]["version"].as_str()),
        (Some("a"), Some("good"), Some(NEW)),
        "{s}"
    );
    // The gate generated and searched the knowledge base before it committed.
    let committed = s["state"]["history"].as_array().and_then(|h| h.iter().find(|e| e["event"] == "committed")).cloned();
    let detail = committed.as_ref().and_then(|e| e["detail"].as_str()).unwrap_or_default();
    assert!(detail.contains("self-test generated") && detail.contains("retrieval searched 1 of 1 datasets: by words"), "{s}");
    assert!(detail.contains("1 by vectors (1 hits)"), "the query was embedded and the dataset's vectors searched: {detail}");

    // The same version again needs --reinstall.
    refused(&d, &good, &[], 1, "update_not_applicable");
    let audit = d.ctl(&["audit", "--json"]);
    assert!(String::from_utf8_lossy(&audit.stdout).contains("POST /admin/v1/update/install"), "the install is in the audit trail");
}

/// A small tmpfs as `update.dir` (root only: it mounts one; else a loud
/// SKIP): a bundle larger than the free space is refused with
/// `update_no_space` (507) naming the space it needs, before a byte is
/// written when its length is known, and when it is not (a chunked body)
/// once the file system is full, the partial copy removed. Nothing is
/// installed either way and the daemon goes on serving.
#[test]
fn a_bundle_that_does_not_fit_is_refused_with_the_space_it_needs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP a_bundle_that_does_not_fit_is_refused_with_the_space_it_needs: mounting a tmpfs needs root");
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let small = work.path().join("small");
    std::fs::create_dir(&small).expect("mount point");
    let mounted =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"]).arg(&small).status().expect("running mount");
    if !mounted.success() {
        eprintln!(
            "SKIP a_bundle_that_does_not_fit_is_refused_with_the_space_it_needs: mount -t tmpfs failed ({mounted}; no CAP_SYS_ADMIN here?)"
        );
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let (trust, key) = signing_key(work.path());
    let good = work.path().join("good.bundle");
    bundle(&good, &key, NEW, &format!("edgeai-{}", std::env::consts::ARCH), &[], true);
    let size = std::fs::metadata(&good).expect("bundle").len();
    assert!(size > 64 << 20, "the bundle ({size} bytes) must be larger than the tmpfs");

    let d = DaemonBuilder::new()
        .set("update.enabled", true)
        .set("update.dir", small.to_str().expect("utf-8 path"))
        .set("update.trust_dir", trust.to_str().expect("utf-8 path"))
        .wait_for_model(false)
        .start();
    let files =
        |dir: &Path| -> Vec<String> { walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap_or(&p).display().to_string()).collect() };
    let before = files(&small);
    // Its length known (edgeaictl sends Content-Length): refused before a byte is received.
    let out = d.ctl(&["update", "install", good.to_str().expect("utf-8 path")]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let needed = 2 * size + (64 << 20);
    assert!(stderr.contains("update_no_space: not enough free space in") && stderr.contains("the install needs"), "{stderr}");
    let said: u64 = stderr
        .split("the install needs ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {stderr}"));
    assert!(said >= needed, "it needs at least twice the bundle and the margin ({needed}): {stderr}");
    assert_eq!(files(&small), before, "nothing written");
    // A chunked body (no length): received until the tmpfs is full, then the same refusal and the copy removed.
    let sock = d.socket_path();
    let curl = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&sock)
        .args(["-X", "POST", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream", "--data-binary"])
        .arg(format!("@{}", good.display()))
        .arg("http://localhost/admin/v1/update/install")
        .output()
        .expect("running curl");
    let answer = String::from_utf8_lossy(&curl.stdout).into_owned();
    assert!(answer.ends_with("\n507") && answer.contains("\"code\":\"update_no_space\""), "{answer}");
    assert_eq!(files(&small), before, "the partial copy is removed: {:?}", files(&small));
    assert!(status(&d)["state"].is_null(), "nothing installed");
    assert_eq!(d.client().get("/health").status, 200);
}

/// Every file under `dir`, recursively (directories themselves left out).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// edgeaictl streams the file with its length; a daemon that refuses it
/// from the length alone (larger than update.max_bundle_bytes) reads and
/// drops the body before answering, so the client sees 413
/// `update_too_large` and not a broken pipe. Nothing is left behind.
#[test]
fn a_bundle_over_the_size_limit_is_refused_with_its_code_not_a_broken_pipe() {
    let b = edgeai_tests::bundle_server::SignedBundle::new(NEW);
    let d = DaemonBuilder::new()
        .set("model.enabled", false)
        .set("update.enabled", true)
        .set("update.max_bundle_bytes", 1 << 20)
        .set("update.trust_dir", b.trust.to_str().expect("utf-8 path"))
        .wait_for_model(false)
        .start();
    assert!(std::fs::metadata(&b.path).expect("bundle").len() > 1 << 20, "the built edgeaid is over 1 MiB");
    refused(&d, &b.path, &[], 1, "update_too_large");
    assert!(paths::update_files(d.dir()).is_empty(), "{:?}", paths::update_files(d.dir()));
    assert!(d.ctl(&["status"]).status.success(), "the daemon goes on serving");
}

/// Every file named `name` under `dir`.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    walk(dir).into_iter().filter(|p| p.file_name().is_some_and(|n| n == name)).collect()
}

/// The health gate's retrieval is a real check: a pending version that
/// cannot open a knowledge base's vector index (its MANIFEST names a format
/// this build does not read, as after an incompatible change) fails its
/// self-test and stops with exit 1; the next start rolls back to the
/// running version and says why.
#[test]
fn a_pending_version_whose_retrieval_fails_is_rolled_back() {
    let work = tempfile::tempdir().expect("tempdir");
    let (trust, key) = signing_key(work.path());
    let compatible = format!("edgeai-{}", std::env::consts::ARCH);
    let good = work.path().join("good.bundle");
    bundle(&good, &key, NEW, &compatible, &[], true);

    let mut d = DaemonBuilder::new()
        .set("update.enabled", true)
        .set("update.commit_after_secs", 1)
        .set("update.max_attempts", 1)
        .set("update.trust_dir", trust.to_str().expect("utf-8 path"))
        .with_embedder()
        .start();
    let manual = work.path().join("manual.txt");
    std::fs::write(&manual, "The edgeai gateway applies an update from a signed bundle.\n").expect("writing the document");
    assert!(d.ctl(&["datasets", "create", "manuals"]).status.success());
    let ingest = d.ctl(&["datasets", "ingest", manual.to_str().expect("utf-8 path"), "--dataset", "manuals"]);
    assert!(ingest.status.success(), "datasets ingest: {}", String::from_utf8_lossy(&ingest.stderr));
    let out = d.ctl(&["update", "install", good.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "update install: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.wait_exit(Duration::from_secs(60)).code(), Some(75));

    let manifests = files_named(d.dir(), "MANIFEST");
    assert_eq!(manifests.len(), 1, "one dataset, one vector index: {manifests:?}");
    let text = std::fs::read_to_string(&manifests[0]).expect("the vector index's MANIFEST");
    let mut m: Value = serde_json::from_str(&text).expect("MANIFEST is JSON");
    m["format"] = Value::from("edgeai-vectors/999");
    std::fs::write(&manifests[0], m.to_string()).expect("writing the MANIFEST");

    // Attempt 1 of 1: the gate's retrieval fails, exit 1.
    d.start_again();
    assert_eq!(d.wait_exit(Duration::from_secs(120)).code(), Some(1), "the failed gate stops the new version\n{}", d.dump_logs());
    // The next start rolls back and says why.
    d.start_again();
    let s = status(&d);
    assert_eq!(
        (s["running"].as_str(), s["state"]["status"].as_str(), s["state"]["failed_version"].as_str()),
        (Some("factory"), Some("rolled-back"), Some(NEW)),
        "{s}"
    );
    let last = s["state"]["last_error"].as_str().unwrap_or_default();
    assert!(
        last.contains("self-test retrieval failed") && last.contains("corrupt vector index file: format \"edgeai-vectors/999\""),
        "{s}"
    );
}
