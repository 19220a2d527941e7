//! Update bundles: the one-file format that carries a new daemon binary,
//! models, apps and config to a gateway, signed with ed25519.
//!
//! Owns: the bundle format (a tar whose members are, in this order,
//! `manifest.json`, `manifest.sig`, then `payload/<kind>/<name>` for every
//! component in manifest order), the manifest's schema and checks
//! ([`manifest`]), signing keys, key ids and the trust store ([`keys`]), the
//! version policy ([`check_policy`]), reading a bundle front to back
//! ([`Bundle::open`], [`OpenBundle`]) and writing one ([`create`], [`sign`]).
//! Must not: depend on the daemon, know about slots, the `current` link or
//! restarts (that is `daemon::update`), or print anything.
//!
//! # The API the daemon uses
//!
//! ```text
//! let trust = TrustStore::load(Path::new(TrustStore::DEFAULT_DIR))?;       // every *.pub there
//! let bundle = Bundle::open_file(path, &trust)?;   // or Bundle::open(reader, origin, &trust)
//! // manifest.json read (at most 1 MiB), parsed, and its signature verified
//! // by a trusted key BEFORE this returns; no payload byte has been read.
//! check_policy(bundle.manifest(), &installed, "edgeai-x86_64-v3", allow_downgrade, reinstall)?;
//! let need = bundle.payload_bytes();              // free space the unpack needs
//! let manifest = bundle.unpack_into(slot_dir, |done, total| { /* progress */ })?;
//! // slot_dir/{bin,models,apps,config}/<name>, every file hashed while written,
//! // size and sha256 checked, fsynced, directories fsynced, and
//! // slot_dir/manifest.json written last (fsynced) as the "complete" marker.
//! // On any error, everything it wrote is removed and the error names the component.
//! ```
//!
//! Every read is streaming with a fixed 64 KiB buffer; only the manifest
//! (≤ [`MAX_MANIFEST_BYTES`]) and the signature list (≤ [`MAX_SIG_BYTES`])
//! are held whole, so memory does not grow with the payloads.

mod archive;
pub mod keys;
pub mod manifest;
mod policy;
mod read;
mod write;

use std::path::PathBuf;

pub use keys::{key_id, load_signing_key, write_signing_key, KeyPair, SignatureEntry, SignatureFile, TrustStore, TrustedKey};
pub use manifest::{Component, Kind, Manifest, FORMAT};
pub use policy::check_policy;
pub use read::{Bundle, OpenBundle, UnverifiedBundle};
pub use write::{create, sign, CreateInput, CreateSpec, Signed};

/// The largest `manifest.json` a reader accepts.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The largest `manifest.sig` a reader accepts.
pub const MAX_SIG_BYTES: u64 = 64 << 10;
/// The most signatures `manifest.sig` may list.
pub const MAX_SIGNATURES: usize = 32;
/// Name of the first member.
pub const MANIFEST_MEMBER: &str = "manifest.json";
/// Name of the second member.
pub const SIG_MEMBER: &str = "manifest.sig";

/// What kind of failure a [`BundleError`] is, so that callers map it to an
/// exit code or a D-Bus error without matching every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The bundle (or an input file of `create`, or a key file) is bad,
    /// corrupt, truncated or does not match its manifest.
    Data,
    /// No trusted key signed the bundle (unsigned, or signed by unknown keys).
    Untrusted,
    /// An output (the bundle, a key, an unpacked file) cannot be written.
    Output,
    /// The bundle is fine but is not for this device or this version.
    Policy,
}

/// Every way reading, writing, signing or unpacking a bundle fails. Each
/// names the file and, where there is one, the member or component.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {}", file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}: the archive ends inside {member} ({detail}): the file is truncated", file.display())]
    Truncated { file: PathBuf, member: String, detail: String },
    #[error("{}: broken tar header at byte {offset}: {reason}", file.display())]
    BadHeader { file: PathBuf, offset: u64, reason: String },
    #[error("{}: member {member} is a {found}, not a regular file", file.display())]
    MemberType { file: PathBuf, member: String, found: String },
    #[error("{}: expected member {expected}, found {found} ({why})", file.display())]
    UnexpectedMember { file: PathBuf, expected: String, found: String, why: &'static str },
    #[error("{}: member {expected} is missing: the archive ends before it", file.display())]
    MissingMember { file: PathBuf, expected: String },
    #[error("{}: member {found} follows the last component; a bundle holds only what its manifest lists", file.display())]
    ExtraMember { file: PathBuf, found: String },
    #[error("{}: {member} is {found} bytes, more than the {limit} allowed", file.display())]
    TooLarge { file: PathBuf, member: String, found: u64, limit: u64 },
    #[error("{}: {member} is not valid: {reason}", file.display())]
    Manifest { file: PathBuf, member: &'static str, reason: String },
    #[error("{}: unsupported bundle format {found:?} (this build reads {})", file.display(), FORMAT)]
    Format { file: PathBuf, found: String },
    #[error("{}: component {component}: its member is {found} bytes, the manifest says {expected}", file.display())]
    SizeMismatch { file: PathBuf, component: String, expected: u64, found: u64 },
    #[error("{}: component {component}: sha256 is {found}, the manifest says {expected}: the payload was altered or damaged", file.display())]
    HashMismatch { file: PathBuf, component: String, expected: String, found: String },
    #[error("{}: the bundle is not signed: sign it with `edgeaictl bundle sign --key KEY`", file.display())]
    Unsigned { file: PathBuf },
    #[error("{}: no trusted key signed this bundle (signed by {}; trusted in {}: {})", file.display(), key_list(signed_by), trust_dir.display(), key_list(trusted))]
    Untrusted { file: PathBuf, signed_by: Vec<String>, trust_dir: PathBuf, trusted: Vec<String> },
    #[error("{}: the signature by trusted key {key_id} does not match manifest.json: the manifest was altered after signing", file.display())]
    BadSignature { file: PathBuf, key_id: String },
    #[error("cannot read the trust directory {}", dir.display())]
    TrustDir { dir: PathBuf, source: std::io::Error },
    #[error("{}: not an ed25519 {what} key: {reason}", path.display())]
    Key { path: PathBuf, what: &'static str, reason: String },
    #[error("{} exists already; it is never overwritten (choose another --out, or remove it)", path.display())]
    KeyExists { path: PathBuf },
    #[error("{} exists already: give --force to replace it", path.display())]
    OutputExists { path: PathBuf },
    #[error("cannot write {}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("component {component}: cannot write {}", path.display())]
    Unpack { component: String, path: PathBuf, source: std::io::Error },
    #[error("{}: the unpack target {} {reason}", file.display(), dir.display())]
    UnpackTarget { file: PathBuf, dir: PathBuf, reason: String },
    #[error("cannot read the payload {}", path.display())]
    Input { path: PathBuf, source: std::io::Error },
    #[error("the payload {} {reason}", path.display())]
    BadInput { path: PathBuf, reason: String },
    #[error("the payload {} changed while the bundle was written ({what}); write the bundle again", path.display())]
    InputChanged { path: PathBuf, what: String },
    #[error("the bundle is for {found:?}, this device is {expected:?}")]
    Incompatible { expected: String, found: String },
    #[error("version {version} is installed already (give the reinstall option to install it again)")]
    AlreadyInstalled { version: String },
    #[error("version {bundle} is older than the installed {installed}: {reason}")]
    Downgrade { installed: String, bundle: String, reason: &'static str },
    #[error("the bundle needs at least version {minimum} installed before it, this device runs {installed}")]
    BelowMinimum { installed: String, minimum: String },
}

fn key_list(keys: &[String]) -> String {
    if keys.is_empty() {
        "no key".to_owned()
    } else {
        keys.join(", ")
    }
}

impl BundleError {
    /// The kind of failure (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            BundleError::Read { .. }
            | BundleError::Truncated { .. }
            | BundleError::BadHeader { .. }
            | BundleError::MemberType { .. }
            | BundleError::UnexpectedMember { .. }
            | BundleError::MissingMember { .. }
            | BundleError::ExtraMember { .. }
            | BundleError::TooLarge { .. }
            | BundleError::Manifest { .. }
            | BundleError::Format { .. }
            | BundleError::SizeMismatch { .. }
            | BundleError::HashMismatch { .. }
            | BundleError::BadSignature { .. }
            | BundleError::TrustDir { .. }
            | BundleError::Key { .. }
            | BundleError::Input { .. }
            | BundleError::BadInput { .. }
            | BundleError::InputChanged { .. } => ErrorClass::Data,
            BundleError::Unsigned { .. } | BundleError::Untrusted { .. } => ErrorClass::Untrusted,
            BundleError::KeyExists { .. }
            | BundleError::OutputExists { .. }
            | BundleError::Write { .. }
            | BundleError::Unpack { .. }
            | BundleError::UnpackTarget { .. } => ErrorClass::Output,
            BundleError::Incompatible { .. }
            | BundleError::AlreadyInstalled { .. }
            | BundleError::Downgrade { .. }
            | BundleError::BelowMinimum { .. } => ErrorClass::Policy,
        }
    }

    /// The component (or member) the error is about, when there is one.
    pub fn component(&self) -> Option<&str> {
        match self {
            BundleError::SizeMismatch { component, .. }
            | BundleError::HashMismatch { component, .. }
            | BundleError::Unpack { component, .. } => Some(component),
            BundleError::Truncated { member, .. } | BundleError::MemberType { member, .. } | BundleError::TooLarge { member, .. } => {
                Some(member)
            }
            BundleError::UnexpectedMember { expected, .. } | BundleError::MissingMember { expected, .. } => Some(expected),
            BundleError::ExtraMember { found, .. } => Some(found),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
