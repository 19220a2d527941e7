//! `edgeaictl keys gen-signing` and `edgeaictl bundle create|sign|verify|info`,
//! the real binary on real files: a bundle of the built `edgeaid`, the test
//! model, a Dify DSL app from configs/ and a config fragment is created,
//! refused unsigned (77), signed (twice with one key: one signature; then
//! by a key openssl made), verified with its key ids (0), refused with a
//! trust directory of another key (77), and refused with the component
//! named (65) after one byte of a payload or of the manifest is flipped and
//! after truncation. openssl reads the keys `gen-signing` writes and agrees
//! on the public key and the key id. `create` never overwrites without
//! --force, and a bad app file or output is refused with its own code.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use edgeai_tests::paths;
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `edgeaictl ARGS`, which must exit `code`; its stdout and stderr.
#[track_caller]
fn ctl(args: &[&str], code: i32) -> (String, String) {
    let out = Command::new(paths::edgeaictl()).args(args).stdin(Stdio::null()).output().unwrap();
    check(&out, args, code)
}

#[track_caller]
fn check(out: &Output, args: &[&str], code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "edgeaictl {args:?}\nstdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

/// `sh -c SCRIPT` with openssl; its stdout.
#[track_caller]
fn openssl(script: &str) -> String {
    let have = Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    assert!(have, "this test checks the keys with the openssl command line tool: install openssl");
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// (member name, offset of its data, size) of every member, read from the
/// ustar headers (the names here are all shorter than 100 bytes).
fn members(path: &Path) -> Vec<(String, u64, u64)> {
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = Vec::new();
    let mut at = 0u64;
    while at + 512 <= len {
        let mut header = [0u8; 512];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut header).unwrap();
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let name = text(&header[..100]).trim_end_matches('\0').to_owned();
        let size = u64::from_str_radix(text(&header[124..136]).trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap();
        out.push((name, at + 512, size));
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn member(path: &Path, name: &str) -> (u64, u64) {
    members(path).into_iter().find(|m| m.0 == name).map(|m| (m.1, m.2)).unwrap_or_else(|| panic!("no member {name} in {}", path.display()))
}

/// XORs the byte at `offset` with `mask` in place (twice restores it).
fn flip(path: &Path, offset: u64, mask: u8) {
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ mask]).unwrap();
    f.sync_all().unwrap();
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn bundles_are_created_signed_verified_and_refused_when_altered() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_owned();

    // Keys.
    let (out, _) = ctl(&["keys", "gen-signing", "--out", &p("release")], 0);
    let release_id = out.lines().find_map(|l| l.strip_prefix("key id ")).unwrap().to_owned();
    assert_eq!(release_id.len(), 16, "{out}");
    let mode = |name: &str| std::fs::metadata(d.join(name)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("release"), 0o600);
    assert_eq!(mode("release.pub"), 0o644);
    let before = std::fs::read(d.join("release")).unwrap();
    let (_, err) = ctl(&["keys", "gen-signing", "--out", &p("release")], 73);
    assert!(err.contains("release") && err.contains("never overwritten"), "{err}");
    assert_eq!(std::fs::read(d.join("release")).unwrap(), before, "the private key is untouched");
    let (out, _) = ctl(&["--json", "keys", "gen-signing", "--out", &p("other")], 0);
    let other_id = json(&out)["key_id"].as_str().unwrap().to_owned();
    assert_ne!(other_id, release_id);

    // openssl reads both files and agrees on the public key and its id.
    let derived = openssl(&format!("openssl pkey -in '{}' -pubout", p("release")));
    assert_eq!(derived, std::fs::read_to_string(d.join("release.pub")).unwrap());
    let id = openssl(&format!("openssl pkey -pubin -in '{}' -outform DER | tail -c 32 | sha256sum | cut -c1-16", p("release.pub")));
    assert_eq!(id.trim(), release_id);
    // ...and a key openssl made signs bundles too.
    openssl(&format!("openssl genpkey -algorithm ed25519 -out '{}' && openssl pkey -in '{0}' -pubout -out '{0}.pub'", p("ossl")));

    let trust = d.join("trust.d");
    std::fs::create_dir(&trust).unwrap();
    std::fs::copy(d.join("release.pub"), trust.join("release.pub")).unwrap();
    let other_trust = d.join("other-trust.d");
    std::fs::create_dir(&other_trust).unwrap();
    std::fs::copy(d.join("other.pub"), other_trust.join("other.pub")).unwrap();
    let (trust, other_trust) = (trust.to_str().unwrap().to_owned(), other_trust.to_str().unwrap().to_owned());

    // A bundle of the real binary, the test model, a DSL app and a config fragment.
    let edgeaid = paths::edgeaid();
    let model = paths::model();
    let model_name = model.file_name().unwrap().to_str().unwrap().to_owned();
    let app = paths::repo_root().join("configs/rag-chatflow.yml");
    std::fs::write(d.join("50-site.toml"), "[server]\nlisten = \"127.0.0.1:5001\"\n").unwrap();
    let bundle = p("edgeai-1.4.0.bundle");
    let create_args = [
        "bundle",
        "create",
        "--version",
        "1.4.0",
        "--compatible",
        "edgeai-x86_64-v3",
        "--min-previous",
        "1.3.0",
        "--binary",
        edgeaid.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--app",
        app.to_str().unwrap(),
        "--config",
        &p("50-site.toml"),
        &bundle,
    ];
    let (out, err) = ctl(&create_args, 0);
    assert!(out.contains("4 components") && out.contains("unsigned"), "{out}");
    assert!(err.contains("bundle sign"), "{err}");
    let names: Vec<String> = members(Path::new(&bundle)).into_iter().map(|m| m.0).collect();
    assert_eq!(
        names,
        [
            "manifest.json".to_owned(),
            "manifest.sig".to_owned(),
            "payload/binary/edgeaid".to_owned(),
            format!("payload/model/{model_name}"),
            "payload/app/rag-chatflow.yml".to_owned(),
            "payload/config/50-site.toml".to_owned(),
        ]
    );

    // create never overwrites without --force.
    let stamp = |path: &str| {
        let m = std::fs::metadata(path).unwrap();
        (m.len(), m.modified().unwrap(), std::os::unix::fs::MetadataExt::ino(&m))
    };
    let kept = stamp(&bundle);
    let (_, err) = ctl(&create_args, 73);
    assert!(err.contains(&bundle) && err.contains("--force"), "{err}");
    assert_eq!(stamp(&bundle), kept, "the existing bundle is untouched");

    // Unsigned: info says so, verify refuses with 77.
    let (out, _) = ctl(&["bundle", "info", &bundle], 0);
    assert!(out.contains("unsigned") && out.contains("1.4.0") && out.contains("edgeai-x86_64-v3"), "{out}");
    let (_, err) = ctl(&["bundle", "verify", "--trust", &trust, &bundle], 77);
    assert!(err.contains("not signed") && err.contains(&bundle), "{err}");

    // Sign; signing again with the same key keeps one signature.
    let (out, _) = ctl(&["bundle", "sign", "--key", &p("release"), &bundle], 0);
    assert!(out.contains(&release_id), "{out}");
    let (out, _) = ctl(&["bundle", "sign", "--key", &p("release"), &bundle], 0);
    assert!(out.contains("replacing"), "{out}");
    let info = json(&ctl(&["--json", "bundle", "info", &bundle], 0).0);
    assert_eq!(info["signatures"], serde_json::json!([release_id]), "{info}");
    assert_eq!(info["manifest"]["version"], "1.4.0");
    assert_eq!(info["manifest"]["min_previous_version"], "1.3.0");
    assert_eq!(info["manifest"]["components"][1]["size"], std::fs::metadata(&model).unwrap().len());

    // Verified with the release key.
    let (out, _) = ctl(&["bundle", "verify", "--trust", &trust, &bundle], 0);
    assert!(out.contains("OK") && out.contains(&release_id) && out.contains(&model_name), "{out}");

    // Only another key trusted: 77, naming both sides.
    let (_, err) = ctl(&["bundle", "verify", "--trust", &other_trust, &bundle], 77);
    assert!(err.contains("no trusted key") && err.contains(&release_id) && err.contains(&other_id), "{err}");
    // A trust directory that does not exist: 65, named.
    let (_, err) = ctl(&["bundle", "verify", "--trust", &p("nowhere"), &bundle], 65);
    assert!(err.contains("nowhere"), "{err}");

    // One byte of the model flipped: 65 naming the model; restored: 0 again.
    let path = Path::new(&bundle);
    let model_member = format!("payload/model/{model_name}");
    let (at, size) = member(path, &model_member);
    flip(path, at + size / 2, 0x01);
    let (_, err) = ctl(&["bundle", "verify", "--trust", &trust, &bundle], 65);
    assert!(err.contains(&model_member) && err.contains("sha256"), "{err}");
    // sign refuses it too, and leaves it as it was.
    let (_, err) = ctl(&["bundle", "sign", "--key", &p("release"), &bundle], 65);
    assert!(err.contains(&model_member), "{err}");
    flip(path, at + size / 2, 0x01);

    // One byte of the manifest flipped (inside the compatible string): 65, the manifest named.
    let (at, size) = member(path, "manifest.json");
    let mut manifest = vec![0u8; size as usize];
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut manifest).unwrap();
    let pos = manifest.windows(6).position(|w| w == b"x86_64").unwrap() as u64;
    flip(path, at + pos, 0x20); // x -> X
    let (_, err) = ctl(&["bundle", "verify", "--trust", &trust, &bundle], 65);
    assert!(err.contains("manifest.json") && err.contains(&release_id) && err.contains("altered"), "{err}");
    flip(path, at + pos, 0x20);

    // A small bundle: verified as JSON, signed by a second key that openssl made,
    // truncated inside the app's data and before the config (65, each named), replaced with --force.
    let small = p("apps.bundle");
    ctl(
        &[
            "bundle",
            "create",
            "--version",
            "1.4.1",
            "--compatible",
            "edgeai-x86_64-v3",
            "--app",
            app.to_str().unwrap(),
            "--config",
            &p("50-site.toml"),
            &small,
        ],
        0,
    );
    ctl(&["bundle", "sign", "--key", &p("release"), &small], 0);
    let v = json(&ctl(&["--json", "bundle", "verify", "--trust", &trust, &small], 0).0);
    assert_eq!(v["verified"], true);
    assert_eq!(v["signers"], serde_json::json!([release_id]));
    assert_eq!(v["manifest"]["compatible"], "edgeai-x86_64-v3");
    assert_eq!(v["manifest"]["components"][0]["name"], "rag-chatflow.yml");
    // A second signature by openssl's key: trusted alone, it verifies.
    let (out, _) = ctl(&["bundle", "sign", "--key", &p("ossl"), &small], 0);
    assert!(out.contains(&release_id), "both signatures are listed: {out}");
    let ossl_trust = d.join("ossl-trust.d");
    std::fs::create_dir(&ossl_trust).unwrap();
    std::fs::copy(d.join("ossl.pub"), ossl_trust.join("ossl.pub")).unwrap();
    let v = json(&ctl(&["--json", "bundle", "verify", "--trust", ossl_trust.to_str().unwrap(), &small], 0).0);
    assert_eq!(v["signatures"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["signers"].as_array().unwrap().len(), 1, "{v}");

    let bytes = std::fs::read(&small).unwrap();
    let (app_at, app_size) = member(Path::new(&small), "payload/app/rag-chatflow.yml");
    let cut = p("cut.bundle");
    for (len, named) in
        [(app_at + app_size / 2, "payload/app/rag-chatflow.yml"), (app_at + app_size.div_ceil(512) * 512, "payload/config/50-site.toml")]
    {
        std::fs::write(&cut, &bytes[..len as usize]).unwrap();
        let (_, err) = ctl(&["bundle", "verify", "--trust", &trust, &cut], 65);
        assert!(err.contains(named) && err.contains(&cut), "cut at {len}: {err}");
    }
    std::fs::write(&cut, &bytes[..300]).unwrap();
    let (_, err) = ctl(&["bundle", "info", &cut], 65);
    assert!(err.contains("manifest.json") && err.contains("truncated"), "{err}");

    // --force replaces a bundle (and drops its signatures: it is a new, unsigned one).
    let small_args =
        ["bundle", "create", "--force", "--version", "1.4.2", "--compatible", "edgeai-x86_64-v3", "--config", &p("50-site.toml"), &small];
    ctl(&small_args, 0);
    let info = json(&ctl(&["--json", "bundle", "info", &small], 0).0);
    assert_eq!((info["manifest"]["version"].as_str(), info["signed"].as_bool()), (Some("1.4.2"), Some(false)), "{info}");
    ctl(&["bundle", "sign", "--key", &p("release"), &small], 0);
    ctl(&["bundle", "verify", "--trust", &trust, &small], 0);

    // Bad inputs: an app that is not YAML, a missing payload, no payload at
    // all, an unwritable output, a missing bundle.
    std::fs::write(d.join("broken.yml"), "app: [unclosed").unwrap();
    let base = ["bundle", "create", "--version", "2.0.0", "--compatible", "c"];
    let (_, err) = ctl(&[&base[..], &["--app", &p("broken.yml"), &p("x.bundle")]].concat(), 65);
    assert!(err.contains("broken.yml") && err.contains("YAML"), "{err}");
    let (_, err) = ctl(&[&base[..], &["--model", &p("missing.gguf"), &p("x.bundle")]].concat(), 65);
    assert!(err.contains("missing.gguf"), "{err}");
    let x = p("x.bundle");
    ctl(&[&base[..], &[x.as_str()]].concat(), 2);
    ctl(&["bundle", "create", "--version", "two", "--compatible", "c", "--config", &p("50-site.toml"), &p("x.bundle")], 2);
    let (_, err) = ctl(&[&base[..], &["--config", &p("50-site.toml"), &p("no-such-dir/x.bundle")]].concat(), 73);
    assert!(err.contains("x.bundle"), "{err}");
    assert!(!d.join("x.bundle").exists());
    let (_, err) = ctl(&["bundle", "verify", "--trust", &trust, &p("absent.bundle")], 65);
    assert!(err.contains("absent.bundle"), "{err}");
    // No temporary file is left behind by any of it.
    let hidden: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}
