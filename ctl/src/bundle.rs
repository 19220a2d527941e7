//! `edgeaictl keys gen-signing` and `edgeaictl bundle create|sign|verify|info`:
//! the build side of updates, all offline (no daemon, no socket, no bus).
//!
//! Owns: turning the parsed options into calls of `edgeai_common::bundle`
//! (which owns the format, the keys and every check), checking that app
//! files parse before they go into a bundle, the progress bar on a
//! terminal, and what these commands print.
//! Must not: know the archive layout or the signature encoding, or talk to
//! the daemon.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use edgeai_common::bundle::{self, Bundle, BundleError, CreateInput, CreateSpec, ErrorClass, Kind, Manifest, TrustStore};
use serde_json::{json, Value};

use crate::cli::{BundleCommand, BundleCreateArgs};
use crate::commands::print;
use crate::error::{CtlError, EX_CANTCREAT, EX_DATAERR, EX_NOPERM};

/// App files larger than this are not app definitions.
const MAX_APP_BYTES: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleCmdError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("the app file {} cannot go into a bundle: {reason}", path.display())]
    App { path: PathBuf, reason: String },
}

impl BundleCmdError {
    pub fn exit_code(&self) -> u8 {
        match self {
            BundleCmdError::Bundle(e) => match e.class() {
                ErrorClass::Data | ErrorClass::Policy => EX_DATAERR,
                ErrorClass::Untrusted => EX_NOPERM,
                ErrorClass::Output => EX_CANTCREAT,
            },
            BundleCmdError::App { .. } => EX_DATAERR,
        }
    }
}

impl From<BundleError> for CtlError {
    fn from(e: BundleError) -> Self {
        CtlError::Bundle(BundleCmdError::Bundle(e))
    }
}

impl From<BundleCmdError> for CtlError {
    fn from(e: BundleCmdError) -> Self {
        CtlError::Bundle(e)
    }
}

/// `edgeaictl keys gen-signing --out PREFIX`.
pub fn gen_signing(prefix: &Path, json: bool) -> Result<(), CtlError> {
    let pair = bundle::write_signing_key(prefix)?;
    if json {
        let v = json!({"private": pair.private.display().to_string(), "public": pair.public.display().to_string(), "key_id": pair.key_id});
        return print(&format!("{v:#}\n"));
    }
    print(&format!(
        "wrote the private key {} (mode 0600) and the public key {}\nkey id {}\n",
        pair.private.display(),
        pair.public.display(),
        pair.key_id
    ))?;
    eprintln!(
        "keep {} secret; install {} into {}/ on the gateways that should trust it",
        pair.private.display(),
        pair.public.display(),
        TrustStore::DEFAULT_DIR
    );
    Ok(())
}

/// `edgeaictl bundle ...`.
pub fn run(command: BundleCommand, json: bool) -> Result<(), CtlError> {
    match command {
        BundleCommand::Create(args) => create(&args, json),
        BundleCommand::Sign { key, bundle } => sign(&key, &bundle, json),
        BundleCommand::Verify { trust, bundle } => verify(&trust, &bundle, json),
        BundleCommand::Info { bundle } => info(&bundle, json),
    }
}

fn create(args: &BundleCreateArgs, json: bool) -> Result<(), CtlError> {
    for app in &args.app {
        check_app(app)?;
    }
    let mut inputs = Vec::new();
    inputs.extend(args.binary.iter().map(|p| CreateInput { kind: Kind::Binary, path: p.clone() }));
    inputs.extend(args.model.iter().map(|p| CreateInput { kind: Kind::Model, path: p.clone() }));
    inputs.extend(args.app.iter().map(|p| CreateInput { kind: Kind::App, path: p.clone() }));
    inputs.extend(args.config.iter().map(|p| CreateInput { kind: Kind::Config, path: p.clone() }));
    let spec = CreateSpec {
        version: args.version.clone(),
        compatible: args.compatible.clone(),
        min_previous_version: args.min_previous.clone(),
        allow_downgrade: args.allow_downgrade,
        inputs,
        created: None,
    };
    let bar = Bar::new("writing");
    let manifest = bundle::create(&spec, &args.out, args.force, |done, total| bar.set(done, total))?;
    bar.clear();
    if json {
        let v = json!({"file": args.out.display().to_string(), "signed": false, "payload_bytes": manifest.payload_bytes(), "manifest": manifest});
        return print(&format!("{v:#}\n"));
    }
    print(&format!(
        "wrote {}: version {} for {}, {} components, {} bytes of payload; unsigned\n",
        args.out.display(),
        manifest.version,
        manifest.compatible,
        manifest.components.len(),
        manifest.payload_bytes()
    ))?;
    eprintln!("sign it with: edgeaictl bundle sign --key KEY {}", args.out.display());
    Ok(())
}

/// An app file must be a YAML or JSON object, by its extension.
fn check_app(path: &Path) -> Result<(), BundleCmdError> {
    let bad = |reason: String| BundleCmdError::App { path: path.to_owned(), reason };
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let yaml = match ext.as_deref() {
        Some("yml" | "yaml") => true,
        Some("json") => false,
        _ => return Err(bad("its name must end in .yml, .yaml (Dify DSL) or .json (an app definition)".to_owned())),
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_APP_BYTES + 1).read_to_end(&mut bytes).map_err(|e| bad(format!("cannot read it: {e}")))?;
    if bytes.len() as u64 > MAX_APP_BYTES {
        return Err(bad("it is larger than 16 MiB".to_owned()));
    }
    if yaml {
        match serde_norway::from_slice::<serde_norway::Value>(&bytes) {
            Ok(serde_norway::Value::Mapping(_)) => Ok(()),
            Ok(_) => Err(bad("it is YAML but not a mapping (a Dify DSL export is one)".to_owned())),
            Err(e) => Err(bad(format!("it is not valid YAML: {e}"))),
        }
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(_)) => Ok(()),
            Ok(_) => Err(bad("it is JSON but not an object (an app definition is one)".to_owned())),
            Err(e) => Err(bad(format!("it is not valid JSON: {e}"))),
        }
    }
}

fn sign(key_path: &Path, path: &Path, json: bool) -> Result<(), CtlError> {
    let key = bundle::load_signing_key(key_path)?;
    let signed = bundle::sign(path, &key)?;
    if json {
        let v =
            json!({"file": path.display().to_string(), "key_id": signed.key_id, "replaced": signed.replaced, "signatures": signed.key_ids});
        return print(&format!("{v:#}\n"));
    }
    let how = if signed.replaced { " (replacing its earlier signature)" } else { "" };
    print(&format!("signed {} with key {}{how}; signatures: {}\n", path.display(), signed.key_id, signed.key_ids.join(", ")))
}

fn verify(trust_dir: &Path, path: &Path, json: bool) -> Result<(), CtlError> {
    let trust = TrustStore::load(trust_dir)?;
    let opened = Bundle::open_file(path, &trust)?;
    let signers = opened.signers().to_vec();
    let all = opened.signatures().key_ids();
    let trusted_files: Vec<String> = signers
        .iter()
        .filter_map(|id| trust.keys().iter().find(|k| &k.key_id == id).map(|k| format!("{id} ({})", k.path.display())))
        .collect();
    let bar = Bar::new("checking");
    let manifest = opened.verify_payloads(|done, total| bar.set(done, total))?;
    bar.clear();
    if json {
        let v = json!({
            "file": path.display().to_string(),
            "verified": true,
            "signers": signers,
            "signatures": all,
            "payload_bytes": manifest.payload_bytes(),
            "manifest": manifest,
        });
        return print(&format!("{v:#}\n"));
    }
    let mut out = format!("{}: OK (signature, manifest and every payload's sha256)\n", path.display());
    out.push_str(&describe(&manifest));
    out.push_str(&format!("signed by    {}\n", trusted_files.join(", ")));
    let untrusted: Vec<&String> = all.iter().filter(|id| !signers.contains(id)).collect();
    if !untrusted.is_empty() {
        out.push_str(&format!("also signed  {} (not trusted here)\n", untrusted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
    }
    print(&out)
}

fn info(path: &Path, json: bool) -> Result<(), CtlError> {
    let opened = Bundle::inspect_file(path)?;
    let ids = opened.signatures().key_ids();
    let manifest = opened.manifest();
    if json {
        let v = json!({
            "file": path.display().to_string(),
            "verified": false,
            "signed": !ids.is_empty(),
            "signatures": ids,
            "payload_bytes": manifest.payload_bytes(),
            "manifest": manifest,
        });
        return print(&format!("{v:#}\n"));
    }
    let mut out = format!("{}: not verified (see `edgeaictl bundle verify`)\n", path.display());
    out.push_str(&describe(manifest));
    if ids.is_empty() {
        out.push_str("signatures   unsigned\n");
    } else {
        out.push_str(&format!("signatures   {} (not checked)\n", ids.join(", ")));
    }
    print(&out)
}

/// The manifest as aligned lines.
fn describe(m: &Manifest) -> String {
    let mut out = format!("version      {}\ncompatible   {}\n", m.version, m.compatible);
    out.push_str(&format!("min previous {}\n", m.min_previous_version.as_ref().map_or("-".to_owned(), ToString::to_string)));
    out.push_str(&format!("downgrade    {}\n", if m.allow_downgrade { "allowed" } else { "refused" }));
    out.push_str(&format!("created      {}\n", m.created));
    out.push_str(&format!("components   {} ({} bytes)\n", m.components.len(), m.payload_bytes()));
    let width = m.components.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in &m.components {
        out.push_str(&format!(
            "  {:<7} {:<width$}  {:>12} bytes  mode {:04o}  sha256 {}\n",
            c.kind.as_str(),
            c.name,
            c.size,
            c.unpack_mode(),
            c.sha256
        ));
    }
    out
}

/// A byte progress bar on stderr, only on a terminal.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(label: &str) -> Bar {
        Bar(std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(&format!("{label} {{bar:30}} {{bytes}}/{{total_bytes}}"))
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        }))
    }

    fn set(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }

    fn clear(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn app_files_must_parse_as_yaml_or_json_objects() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        check_app(&write("a.yml", "app:\n  name: x\n")).unwrap();
        check_app(&write("a.json", r#"{"id":"x"}"#)).unwrap();
        for (name, text, why) in [
            ("b.yml", "app: [unclosed", "not valid YAML"),
            ("c.yaml", "- a list\n", "not a mapping"),
            ("d.json", "{", "not valid JSON"),
            ("e.json", "[1]", "not an object"),
            ("f.txt", "app: x", ".yml, .yaml"),
        ] {
            let e = check_app(&write(name, text)).unwrap_err();
            assert!(e.to_string().contains(why) && e.to_string().contains(name), "{name}: {e}");
            assert_eq!(e.exit_code(), 65);
        }
        let e = check_app(&dir.path().join("missing.yml")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn bundle_errors_map_to_the_exit_code_contract() {
        let code = |e: BundleError| BundleCmdError::Bundle(e).exit_code();
        assert_eq!(code(BundleError::Unsigned { file: "b".into() }), 77);
        let untrusted = BundleError::Untrusted { file: "b".into(), signed_by: vec![], trust_dir: "t".into(), trusted: vec![] };
        assert_eq!(code(untrusted), 77);
        assert_eq!(code(BundleError::BadSignature { file: "b".into(), key_id: "k".into() }), 65);
        let hash =
            BundleError::HashMismatch { file: "b".into(), component: "payload/model/m".into(), expected: "a".into(), found: "b".into() };
        assert_eq!(code(hash), 65);
        assert_eq!(code(BundleError::OutputExists { path: "o".into() }), 73);
        assert_eq!(code(BundleError::KeyExists { path: "k".into() }), 73);
    }
}
