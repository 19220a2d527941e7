//! Unit tests of the bundle format: real files in temporary directories,
//! real keys, and hand-made archives for every refusal.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use super::archive::TarWriter;
use super::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn trust(keys: &[&SigningKey]) -> TrustStore {
    TrustStore::from_keys(PathBuf::from("/test/trust.d"), keys.iter().map(|k| k.verifying_key()))
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn component(kind: Kind, name: &str, data: &[u8]) -> Component {
    Component { kind, name: name.to_owned(), size: data.len() as u64, sha256: sha(data), mode: 0o644 }
}

fn manifest(components: Vec<Component>) -> Manifest {
    Manifest {
        format: FORMAT.to_owned(),
        version: semver::Version::new(1, 2, 0),
        compatible: "edgeai-x86_64-v3".to_owned(),
        min_previous_version: None,
        allow_downgrade: false,
        created: "2026-01-02T03:04:05Z".to_owned(),
        components,
    }
}

fn json(m: &Manifest) -> Vec<u8> {
    serde_json::to_vec_pretty(m).unwrap()
}

fn sigs(signers: &[&SigningKey], manifest: &[u8]) -> Vec<u8> {
    let mut file = SignatureFile::default();
    for k in signers {
        file.add(k, manifest);
    }
    file.to_bytes()
}

/// An archive of exactly these members, in this order.
fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = TarWriter::new(Vec::new(), 0);
    for (path, data) in members {
        tar.member(path, data, 0o644).unwrap();
    }
    tar.finish().unwrap()
}

/// A signed bundle of `payloads`, as members in manifest order.
fn signed_bundle(signer: &SigningKey, payloads: &[(Kind, &str, &[u8])]) -> (Manifest, Vec<u8>) {
    let m = manifest(payloads.iter().map(|(k, n, d)| component(*k, n, d)).collect());
    let mj = json(&m);
    let sig = sigs(&[signer], &mj);
    let names: Vec<String> = m.components.iter().map(Component::member).collect();
    let mut members: Vec<(&str, &[u8])> = vec![(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, &sig)];
    for (name, (_, _, data)) in names.iter().zip(payloads) {
        members.push((name, data));
    }
    (m, tar_of(&members))
}

fn open<'a>(bytes: &'a [u8], trust: &TrustStore) -> Result<OpenBundle<&'a [u8]>, BundleError> {
    Bundle::open(bytes, Path::new("test.bundle"), trust)
}

/// Opens (trusted by `signer`) and reads every payload.
fn verify_all(bytes: &[u8], signer: &SigningKey) -> Result<Manifest, BundleError> {
    open(bytes, &trust(&[signer]))?.verify_payloads(|_, _| {})
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(dir) {
        out.push(e.strip_prefix(dir).unwrap().display().to_string());
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

const PAYLOADS: &[(Kind, &str, &[u8])] = &[
    (Kind::Binary, "edgeaid", b"\x7fELF pretend binary"),
    (Kind::Model, "tiny.gguf", b"GGUF model bytes"),
    (Kind::App, "demo.yml", b"app:\n  name: demo\n"),
    (Kind::Config, "50-update.toml", b"[server]\n"),
];

#[test]
fn a_signed_bundle_unpacks_every_component_and_the_manifest_last() {
    let signer = key(1);
    let (m, bytes) = signed_bundle(&signer, PAYLOADS);
    let b = open(&bytes, &trust(&[&signer])).unwrap();
    assert_eq!(b.manifest(), &m);
    assert_eq!(b.signers(), &[key_id(&signer.verifying_key())]);
    let expected_total: u64 = PAYLOADS.iter().map(|p| p.2.len() as u64).sum();
    assert_eq!(b.payload_bytes(), expected_total);
    let signed = b.manifest_bytes().to_vec();

    let dir = tempfile::tempdir().unwrap();
    let mut calls = Vec::new();
    let got = b.unpack_into(dir.path(), |done, total| calls.push((done, total))).unwrap();
    assert_eq!(got, m);
    assert_eq!(calls.first(), Some(&(0, expected_total)));
    assert_eq!(calls.last(), Some(&(expected_total, expected_total)));
    assert_eq!(
        files_in(dir.path()),
        ["apps", "apps/demo.yml", "bin", "bin/edgeaid", "config", "config/50-update.toml", "manifest.json", "models", "models/tiny.gguf"]
    );
    for (kind, name, data) in PAYLOADS {
        let path = dir.path().join(kind.dir()).join(name);
        assert_eq!(std::fs::read(&path).unwrap(), *data, "{}", path.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, if *kind == Kind::Binary { 0o755 } else { 0o644 }, "{}", path.display());
    }
    assert_eq!(std::fs::read(dir.path().join("manifest.json")).unwrap(), signed, "the signed bytes are the marker");

    // A finished unpack is not overwritten.
    let again = open(&bytes, &trust(&[&signer])).unwrap().unpack_into(dir.path(), |_, _| {});
    assert!(matches!(again, Err(BundleError::UnpackTarget { .. })), "{again:?}");
}

#[test]
fn unsigned_untrusted_and_altered_manifests_are_refused_before_any_payload() {
    let signer = key(1);
    let other = key(2);
    let m = manifest(vec![component(Kind::Model, "m.gguf", b"data")]);
    let mj = json(&m);
    let unsigned = tar_of(&[(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, &sigs(&[], &mj)), ("payload/model/m.gguf", &b"data"[..])]);
    let e = open(&unsigned, &trust(&[&signer])).err().unwrap();
    assert!(matches!(e, BundleError::Unsigned { .. }), "{e}");
    assert_eq!(e.class(), ErrorClass::Untrusted);

    let by_other = tar_of(&[(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, &sigs(&[&other], &mj)), ("payload/model/m.gguf", &b"data"[..])]);
    let e = open(&by_other, &trust(&[&signer])).err().unwrap();
    let other_id = key_id(&other.verifying_key());
    assert!(matches!(&e, BundleError::Untrusted { signed_by, .. } if signed_by == &vec![other_id.clone()]), "{e}");
    assert!(e.to_string().contains(&other_id) && e.to_string().contains("/test/trust.d"), "{e}");
    assert_eq!(e.class(), ErrorClass::Untrusted);
    // An empty trust store trusts nothing.
    assert!(matches!(open(&by_other, &trust(&[])), Err(BundleError::Untrusted { .. })));
    // Either of two signatures is enough.
    let both = tar_of(&[(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, &sigs(&[&other, &signer], &mj)), ("payload/model/m.gguf", &b"data"[..])]);
    assert_eq!(open(&both, &trust(&[&signer])).unwrap().signers(), &[key_id(&signer.verifying_key())]);

    // The manifest changed after signing (here: the size of the payload).
    let mut altered = mj.clone();
    let pos = altered.windows(9).position(|w| w == b"\"size\": 4").unwrap();
    altered[pos + 8] = b'5';
    let tampered = tar_of(&[(MANIFEST_MEMBER, &altered[..]), (SIG_MEMBER, &sigs(&[&signer], &mj)), ("payload/model/m.gguf", &b"data"[..])]);
    let e = open(&tampered, &trust(&[&signer])).err().unwrap();
    assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");
    assert_eq!(e.class(), ErrorClass::Data);
}

#[test]
fn a_damaged_payload_is_named_and_its_unpack_removed() {
    let signer = key(1);
    let (_, mut bytes) = signed_bundle(&signer, PAYLOADS);
    // Flip one byte of the model's data.
    let pos = bytes.windows(16).position(|w| w == b"GGUF model bytes").unwrap();
    bytes[pos + 3] ^= 0x20;
    let e = verify_all(&bytes, &signer).unwrap_err();
    assert!(matches!(&e, BundleError::HashMismatch { component, .. } if component == "payload/model/tiny.gguf"), "{e}");
    assert_eq!(e.component(), Some("payload/model/tiny.gguf"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap(); // there before: kept
    let e = open(&bytes, &trust(&[&signer])).unwrap().unpack_into(dir.path(), |_, _| {}).unwrap_err();
    assert!(matches!(e, BundleError::HashMismatch { .. }), "{e}");
    assert_eq!(files_in(dir.path()), ["models"], "only what was there before remains");
}

#[test]
fn truncation_anywhere_is_refused_and_names_the_member() {
    let signer = key(1);
    let (_, bytes) = signed_bundle(&signer, PAYLOADS);
    let model_at = bytes.windows(16).position(|w| w == b"GGUF model bytes").unwrap();
    // Inside the model's data, inside the padding after it, at the start of
    // the next header, inside it, and inside the end marker.
    for cut in [
        model_at + 5,
        model_at + 100,
        model_at + 512 - (model_at % 512),
        model_at + 600,
        bytes.len() - 1024,
        bytes.len() - 700,
        bytes.len() - 100,
    ] {
        let e = verify_all(&bytes[..cut], &signer).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Data, "cut at {cut}: {e}");
        assert!(
            matches!(e, BundleError::Truncated { .. } | BundleError::MissingMember { .. } | BundleError::BadHeader { .. }),
            "cut at {cut}: {e}"
        );
        let dir = tempfile::tempdir().unwrap();
        open(&bytes[..cut], &trust(&[&signer])).unwrap().unpack_into(dir.path(), |_, _| {}).unwrap_err();
        assert!(files_in(dir.path()).is_empty(), "cut at {cut}: {:?}", files_in(dir.path()));
    }
    let e = verify_all(&bytes[..model_at + 5], &signer).unwrap_err();
    assert_eq!(e.component(), Some("payload/model/tiny.gguf"), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
    // Cut inside the manifest.
    let e = open(&bytes[..700], &trust(&[&signer])).err().unwrap();
    assert!(matches!(&e, BundleError::Truncated { member, .. } if member == MANIFEST_MEMBER), "{e}");
    // Cut before the app's header: the app is missing.
    let app_header = bytes.windows(20).position(|w| w == b"payload/app/demo.yml").unwrap();
    let e = verify_all(&bytes[..app_header], &signer).unwrap_err();
    assert!(matches!(&e, BundleError::MissingMember { expected, .. } if expected == "payload/app/demo.yml"), "{e}");
    assert!(matches!(open(&[][..], &trust(&[&signer])), Err(BundleError::MissingMember { .. })));
}

/// The manifest lists a.gguf then b.gguf; the archive holds `members`.
fn with_members(members: &[(&str, &[u8])]) -> Result<Manifest, BundleError> {
    let signer = key(1);
    let m = manifest(vec![component(Kind::Model, "a.gguf", b"AAAA"), component(Kind::Model, "b.gguf", &b"BBBB"[..])]);
    let mj = json(&m);
    let sig = sigs(&[&signer], &mj);
    let mut all: Vec<(&str, &[u8])> = vec![(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, &sig)];
    all.extend_from_slice(members);
    verify_all(&tar_of(&all), &signer)
}

#[test]
fn members_missing_extra_reordered_duplicated_oversized_or_misnamed_are_refused() {
    let a = ("payload/model/a.gguf", &b"AAAA"[..]);
    let b = ("payload/model/b.gguf", &b"BBBB"[..]);
    with_members(&[a, b]).unwrap();

    let e = with_members(&[a]).unwrap_err();
    assert!(matches!(&e, BundleError::MissingMember { expected, .. } if expected == "payload/model/b.gguf"), "{e}");
    let e = with_members(&[a, b, ("payload/model/c.gguf", &b"C"[..])]).unwrap_err();
    assert!(matches!(&e, BundleError::ExtraMember { found, .. } if found == "payload/model/c.gguf"), "{e}");
    let e = with_members(&[b, a]).unwrap_err();
    assert!(matches!(&e, BundleError::UnexpectedMember { why, .. } if why.contains("out of order")), "{e}");
    let e = with_members(&[a, a, b]).unwrap_err();
    assert!(matches!(&e, BundleError::UnexpectedMember { why, .. } if why.contains("second copy")), "{e}");
    let e = with_members(&[a, ("payload/model/../b.gguf", &b"BBBB"[..])]).unwrap_err();
    assert!(
        matches!(&e, BundleError::UnexpectedMember { found, why, .. } if found == "payload/model/../b.gguf" && why.contains("not in the manifest")),
        "{e}"
    );
    let e = with_members(&[a, ("payload/config/b.gguf", &b"BBBB"[..])]).unwrap_err();
    assert!(matches!(e, BundleError::UnexpectedMember { .. }), "{e}");
    let e = with_members(&[a, ("payload/model/b.gguf", &b"BBBBB"[..])]).unwrap_err();
    assert!(matches!(e, BundleError::SizeMismatch { expected: 4, found: 5, .. }), "{e}");
    let e = with_members(&[a, ("payload/model/b.gguf", &b"BBB"[..])]).unwrap_err();
    assert!(matches!(e, BundleError::SizeMismatch { expected: 4, found: 3, .. }), "{e}");
    let e = with_members(&[a, (MANIFEST_MEMBER, &b"{}"[..])]).unwrap_err();
    assert!(matches!(&e, BundleError::UnexpectedMember { why, .. } if why.contains("header member")), "{e}");
}

#[test]
fn the_header_members_must_come_first_and_be_bounded() {
    let signer = key(1);
    let m = manifest(vec![]);
    let mj = json(&m);
    let sig = sigs(&[&signer], &mj);
    let e = open(&tar_of(&[(SIG_MEMBER, &sig), (MANIFEST_MEMBER, &mj[..])]), &trust(&[&signer])).err().unwrap();
    assert!(
        matches!(&e, BundleError::UnexpectedMember { expected, found, .. } if expected == MANIFEST_MEMBER && found == SIG_MEMBER),
        "{e}"
    );
    let e = open(&tar_of(&[(MANIFEST_MEMBER, &mj[..])]), &trust(&[&signer])).err().unwrap();
    assert!(matches!(&e, BundleError::MissingMember { expected, .. } if expected == SIG_MEMBER), "{e}");
    // An empty bundle (no components) is fine.
    assert!(verify_all(&tar_of(&[(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, &sig)]), &signer).unwrap().components.is_empty());

    // A manifest member that claims 2 MiB is refused from its header alone.
    let mut tar = TarWriter::new(Vec::new(), 0);
    tar.header(MANIFEST_MEMBER, 2 << 20, 0o644).unwrap();
    let e = open(&tar.finish().unwrap(), &trust(&[&signer])).err().unwrap();
    assert!(matches!(e, BundleError::TooLarge { limit: MAX_MANIFEST_BYTES, .. }), "{e}");
    let big_sig = vec![b' '; (MAX_SIG_BYTES + 1) as usize];
    let e = open(&tar_of(&[(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, &big_sig)]), &trust(&[&signer])).err().unwrap();
    assert!(matches!(&e, BundleError::TooLarge { member, .. } if member == SIG_MEMBER), "{e}");
    // A signature list that is not the expected JSON.
    for bad in [&b"[]"[..], br#"{"signatures":[{"key_id":"zz","signature":""}]}"#, br#"{"signatures":[],"x":1}"#] {
        let e = open(&tar_of(&[(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, bad)]), &trust(&[&signer])).err().unwrap();
        assert!(matches!(&e, BundleError::Manifest { member, .. } if *member == SIG_MEMBER), "{e}");
    }
    let short = format!(r#"{{"signatures":[{{"key_id":"{}","signature":"AAAA"}}]}}"#, key_id(&signer.verifying_key()));
    let e = open(&tar_of(&[(MANIFEST_MEMBER, &mj[..]), (SIG_MEMBER, short.as_bytes())]), &trust(&[&signer])).err().unwrap();
    assert!(e.to_string().contains("not 64"), "{e}");
}

#[test]
fn symlinks_and_other_member_types_are_refused() {
    let signer = key(1);
    let m = manifest(vec![component(Kind::Model, "m.gguf", b"")]);
    let mj = json(&m);
    let sig = sigs(&[&signer], &mj);
    let mut tar = TarWriter::new(Vec::new(), 0);
    tar.member(MANIFEST_MEMBER, &mj, 0o644).unwrap();
    tar.member(SIG_MEMBER, &sig, 0o644).unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_path("payload/model/m.gguf").unwrap();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_link_name("/etc/shadow").unwrap();
    link.set_size(0);
    link.set_cksum();
    tar.data(link.as_bytes()).unwrap();
    let e = verify_all(&tar.finish().unwrap(), &signer).unwrap_err();
    assert!(
        matches!(&e, BundleError::MemberType { member, found, .. } if member == "payload/model/m.gguf" && found == "symbolic link"),
        "{e}"
    );
}

#[test]
fn broken_headers_and_trailing_data_are_refused() {
    let signer = key(1);
    let (_, bytes) = signed_bundle(&signer, PAYLOADS);
    let model_header = bytes.windows(22).position(|w| w == b"payload/model/tiny.ggu").unwrap();
    let mut bad = bytes.clone();
    bad[model_header + 2] ^= 1;
    let e = verify_all(&bad, &signer).unwrap_err();
    assert!(matches!(&e, BundleError::BadHeader { reason, .. } if reason.contains("checksum")), "{e}");
    let mut appended = bytes.clone();
    appended.extend_from_slice(b"more");
    let e = verify_all(&appended, &signer).unwrap_err();
    assert!(matches!(&e, BundleError::BadHeader { reason, .. } if reason.contains("after the end")), "{e}");
    // Zeros after the marker (tar's record padding) are fine.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0; 10240]);
    verify_all(&padded, &signer).unwrap();
}

#[test]
fn names_of_255_bytes_round_trip_through_long_names() {
    let signer = key(1);
    let name = format!("{}.gguf", "m".repeat(250));
    let (m, bytes) = signed_bundle(&signer, &[(Kind::Model, name.as_str(), &b"x"[..])]);
    assert_eq!(verify_all(&bytes, &signer).unwrap(), m);
    let dir = tempfile::tempdir().unwrap();
    open(&bytes, &trust(&[&signer])).unwrap().unpack_into(dir.path(), |_, _| {}).unwrap();
    assert_eq!(std::fs::read(dir.path().join("models").join(&name)).unwrap(), b"x");
}

fn manifest_error(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = serde_json::to_value(manifest(vec![component(Kind::Model, "m.gguf", b"x")])).unwrap();
    edit(&mut v);
    let bytes = serde_json::to_vec(&v).unwrap();
    match Manifest::parse(&bytes, Path::new("b.bundle")) {
        Ok(m) => panic!("accepted {m:?}"),
        Err(e) => {
            assert_eq!(e.class(), ErrorClass::Data);
            e.to_string()
        }
    }
}

#[test]
fn manifest_fields_are_checked() {
    let name = |n: &str| {
        let n = n.to_owned();
        manifest_error(move |v| v["components"][0]["name"] = n.into())
    };
    let long = "n".repeat(256);
    for (bad, why) in [
        ("a/b", "path separator"),
        ("..", "not a file name"),
        (".", "not a file name"),
        ("", "empty"),
        ("a\nb", "control character"),
        (long.as_str(), "255 bytes"),
    ] {
        let e = name(bad);
        assert!(e.contains(why) && e.contains("components[0].name"), "{bad:?}: {e}");
    }
    let e = manifest_error(|v| v["components"][0]["kind"] = "firmware".into());
    assert!(e.contains("firmware"), "{e}");
    let e = manifest_error(|v| v["extra"] = 1.into());
    assert!(e.contains("unknown field") && e.contains("extra"), "{e}");
    let e = manifest_error(|v| v["components"][0]["owner"] = "root".into());
    assert!(e.contains("unknown field"), "{e}");
    let e = manifest_error(|v| v["format"] = "edgeai-bundle/2".into());
    assert!(e.contains("unsupported bundle format \"edgeai-bundle/2\""), "{e}");
    let e = manifest_error(|v| v["version"] = "1.2".into());
    assert!(e.contains("version") || e.contains("unexpected end"), "{e}");
    let e = manifest_error(|v| v["created"] = "yesterday".into());
    assert!(e.contains("RFC 3339"), "{e}");
    let e = manifest_error(|v| v["compatible"] = "".into());
    assert!(e.contains("compatible"), "{e}");
    let e = manifest_error(|v| v["components"][0]["sha256"] = "ABC".into());
    assert!(e.contains("sha256"), "{e}");
    let e = manifest_error(|v| v["components"][0]["mode"] = 0o4755.into());
    assert!(e.contains("mode 4755"), "{e}");
    let e = manifest_error(|v| v["components"][0]["mode"] = 0o666.into());
    assert!(e.contains("mode 666"), "{e}");
    let e = manifest_error(|v| {
        let c = v["components"][0].clone();
        v["components"].as_array_mut().unwrap().push(c);
    });
    assert!(e.contains("listed twice"), "{e}");
    let e = manifest_error(|v| {
        let mut c = v["components"][0].clone();
        c["kind"] = "binary".into();
        let mut d = c.clone();
        d["name"] = "other".into();
        v["components"].as_array_mut().unwrap().extend([c, d]);
    });
    assert!(e.contains("second binary"), "{e}");
    // The same name under two kinds is fine; so are RFC 3339 offsets.
    let mut m = manifest(vec![component(Kind::Model, "x", b"1"), component(Kind::Config, "x", b"2")]);
    m.created = "2026-01-02T03:04:05.5+01:00".to_owned();
    Manifest::parse(&json(&m), Path::new("b")).unwrap();
}

#[test]
fn policy_checks_compatible_minimum_downgrade_and_same_version() {
    let v = |s: &str| semver::Version::parse(s).unwrap();
    let mut m = manifest(vec![]); // 1.2.0, edgeai-x86_64-v3
    let c = "edgeai-x86_64-v3";
    check_policy(&m, &v("1.1.9"), c, false, false).unwrap();
    let e = check_policy(&m, &v("1.1.9"), "edgeai-aarch64", false, false).unwrap_err();
    assert!(matches!(e, BundleError::Incompatible { .. }) && e.class() == ErrorClass::Policy, "{e}");
    assert!(e.to_string().contains("edgeai-aarch64") && e.to_string().contains(c), "{e}");
    let e = check_policy(&m, &v("1.2.0"), c, false, false).unwrap_err();
    assert!(matches!(e, BundleError::AlreadyInstalled { .. }), "{e}");
    check_policy(&m, &v("1.2.0"), c, false, true).unwrap();
    check_policy(&m, &v("1.2.0+build7"), c, false, false).unwrap_err(); // build metadata does not make it newer
                                                                        // Downgrades need both sides.
    for (requested, allowed, ok) in [(false, false, false), (true, false, false), (false, true, false), (true, true, true)] {
        m.allow_downgrade = allowed;
        let r = check_policy(&m, &v("1.3.0"), c, requested, false);
        assert_eq!(r.is_ok(), ok, "requested {requested} allowed {allowed}: {r:?}");
        if let Err(e) = r {
            assert!(matches!(e, BundleError::Downgrade { .. }), "{e}");
        }
    }
    check_policy(&m, &v("1.2.0-rc.1"), c, false, false).unwrap(); // a release is newer than its rc
    m.min_previous_version = Some(v("1.1.0"));
    let e = check_policy(&m, &v("1.0.5"), c, true, false).unwrap_err();
    assert!(matches!(e, BundleError::BelowMinimum { .. }) && e.to_string().contains("1.1.0"), "{e}");
    check_policy(&m, &v("1.1.0"), c, false, false).unwrap();
}

#[test]
fn keys_are_pem_files_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("release");
    let pair = write_signing_key(&prefix).unwrap();
    assert_eq!(pair.public, dir.path().join("release.pub"));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&prefix), 0o600);
    assert_eq!(mode(&pair.public), 0o644);
    let private = std::fs::read_to_string(&prefix).unwrap();
    assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{private}");
    let public = std::fs::read_to_string(&pair.public).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{public}");
    let signing = load_signing_key(&prefix).unwrap();
    assert_eq!(key_id(&signing.verifying_key()), pair.key_id);
    assert_eq!(pair.key_id.len(), 16);

    let before = std::fs::read(&prefix).unwrap();
    let e = write_signing_key(&prefix).unwrap_err();
    assert!(matches!(e, BundleError::KeyExists { .. }) && e.class() == ErrorClass::Output, "{e}");
    assert_eq!(std::fs::read(&prefix).unwrap(), before);
    // Only the .pub there: the private key is not created either.
    let lone = dir.path().join("lone");
    std::fs::write(dir.path().join("lone.pub"), "x").unwrap();
    assert!(matches!(write_signing_key(&lone), Err(BundleError::KeyExists { .. })));
    assert!(!lone.exists());

    let e = load_signing_key(&pair.public).unwrap_err();
    assert!(matches!(e, BundleError::Key { what: "private", .. }) && e.to_string().contains("release.pub"), "{e}");
}

#[test]
fn the_trust_store_reads_every_pub_file_and_names_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let a = write_signing_key(&keys.path().join("a")).unwrap();
    let b = write_signing_key(&keys.path().join("b")).unwrap();
    std::fs::copy(&a.public, dir.path().join("a.pub")).unwrap();
    std::fs::copy(&b.public, dir.path().join("b.pub")).unwrap();
    std::fs::copy(&a.public, dir.path().join("a-again.pub")).unwrap(); // the same key twice
    std::fs::write(dir.path().join("README"), "not a key").unwrap();
    let store = TrustStore::load(dir.path()).unwrap();
    let mut ids: Vec<&str> = store.keys().iter().map(|k| k.key_id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![a.key_id.as_str(), b.key_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    std::fs::write(dir.path().join("broken.pub"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
    let e = TrustStore::load(dir.path()).unwrap_err();
    assert!(matches!(e, BundleError::Key { what: "public", .. }) && e.to_string().contains("broken.pub"), "{e}");
    let e = TrustStore::load(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(e, BundleError::TrustDir { .. }), "{e}");
    assert!(TrustStore::load(keys.path().join("a").parent().unwrap()).is_ok());
}

/// Writes the payload files and returns create's inputs.
fn inputs(dir: &Path) -> Vec<CreateInput> {
    PAYLOADS
        .iter()
        .map(|(kind, name, data)| {
            let path = dir.join(name);
            std::fs::write(&path, data).unwrap();
            CreateInput { kind: *kind, path }
        })
        .collect()
}

fn spec(inputs: Vec<CreateInput>) -> CreateSpec {
    CreateSpec {
        version: semver::Version::new(2, 0, 0),
        compatible: "edgeai-x86_64-v3".to_owned(),
        min_previous_version: Some(semver::Version::new(1, 0, 0)),
        allow_downgrade: false,
        inputs,
        created: None,
    }
}

#[test]
fn create_then_sign_then_open_and_unpack() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("update.bundle");
    let m = create(&spec(inputs(dir.path())), &out, false, |_, _| {}).unwrap();
    assert_eq!(m.components.len(), 4);
    assert_eq!(m.components[0].mode, 0o755);
    // Standard tar: GNU tar lists it.
    let listed = std::process::Command::new("tar").arg("-tf").arg(&out).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "manifest.json\nmanifest.sig\npayload/binary/edgeaid\npayload/model/tiny.gguf\npayload/app/demo.yml\npayload/config/50-update.toml\n"
    );
    let unverified = Bundle::inspect_file(&out).unwrap();
    assert!(unverified.signatures().signatures.is_empty());
    assert_eq!(unverified.manifest(), &m);
    assert!(matches!(Bundle::open_file(&out, &trust(&[&key(1)])), Err(BundleError::Unsigned { .. })));

    let signed = sign(&out, &key(1)).unwrap();
    assert!(!signed.replaced);
    let again = sign(&out, &key(1)).unwrap();
    assert!(again.replaced);
    assert_eq!(again.key_ids, vec![key_id(&key(1).verifying_key())], "signing twice keeps one signature");
    let both = sign(&out, &key(2)).unwrap();
    assert_eq!(both.key_ids.len(), 2);
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o644);
    // No temporary files remain.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count(),
        0
    );

    let b = Bundle::open_file(&out, &trust(&[&key(2)])).unwrap();
    assert_eq!(b.signers(), &[key_id(&key(2).verifying_key())]);
    let target = tempfile::tempdir().unwrap();
    b.unpack_into(target.path(), |_, _| {}).unwrap();
    assert_eq!(std::fs::read(target.path().join("bin/edgeaid")).unwrap(), PAYLOADS[0].2);
}

#[test]
fn create_refuses_to_overwrite_unless_forced_and_leaves_nothing_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("update.bundle");
    std::fs::write(&out, "precious").unwrap();
    let e = create(&spec(inputs(dir.path())), &out, false, |_, _| {}).unwrap_err();
    assert!(matches!(e, BundleError::OutputExists { .. }) && e.class() == ErrorClass::Output, "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    create(&spec(inputs(dir.path())), &out, true, |_, _| {}).unwrap();
    Bundle::inspect_file(&out).unwrap();

    // A directory as a payload, a missing one, a bad version range: nothing written.
    let fresh = dir.path().join("fresh.bundle");
    let mut s = spec(vec![CreateInput { kind: Kind::Model, path: dir.path().to_owned() }]);
    let e = create(&s, &fresh, false, |_, _| {}).unwrap_err();
    assert!(matches!(e, BundleError::BadInput { .. }) && e.class() == ErrorClass::Data, "{e}");
    s.inputs = vec![CreateInput { kind: Kind::Model, path: dir.path().join("missing.gguf") }];
    assert!(matches!(create(&s, &fresh, false, |_, _| {}), Err(BundleError::Input { .. })));
    s.inputs = inputs(dir.path());
    s.compatible = "has space".to_owned();
    assert!(matches!(create(&s, &fresh, false, |_, _| {}), Err(BundleError::Manifest { .. })));
    s.compatible = "ok".to_owned();
    s.inputs.push(s.inputs[0].clone());
    let e = create(&s, &fresh, false, |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    assert!(!fresh.exists());
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn sign_refuses_a_damaged_bundle_and_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("update.bundle");
    create(&spec(inputs(dir.path())), &out, false, |_, _| {}).unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    let pos = bytes.windows(16).position(|w| w == b"GGUF model bytes").unwrap();
    bytes[pos] ^= 1;
    std::fs::write(&out, &bytes).unwrap();
    let e = sign(&out, &key(1)).unwrap_err();
    assert!(matches!(&e, BundleError::HashMismatch { component, .. } if component == "payload/model/tiny.gguf"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}

#[test]
fn unpack_refuses_a_kind_dir_that_is_a_file_and_cleans_up() {
    let signer = key(1);
    let (_, bytes) = signed_bundle(&signer, PAYLOADS);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apps"), "in the way").unwrap();
    let e = open(&bytes, &trust(&[&signer])).unwrap().unpack_into(dir.path(), |_, _| {}).unwrap_err();
    assert!(matches!(&e, BundleError::Unpack { component, .. } if component == "payload/app/demo.yml"), "{e}");
    assert_eq!(e.class(), ErrorClass::Output);
    assert_eq!(files_in(dir.path()), ["apps"]);
    let e = open(&bytes, &trust(&[&signer])).unwrap().unpack_into(&dir.path().join("nope"), |_, _| {}).unwrap_err();
    assert!(matches!(e, BundleError::UnpackTarget { .. }), "{e}");
}
