//! `manifest.json`: what a bundle holds and for which device and version.
//!
//! Owns: the manifest's schema (serde, unknown fields refused), its checks
//! (format string, component names, kinds, at most one binary, modes,
//! sha256 spelling, RFC 3339 time), and the names a component has inside
//! the archive and on disk.
//! Must not: do I/O; the reader bounds the bytes before they get here.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::BundleError;

/// The value of `format` this code reads and writes.
pub const FORMAT: &str = "edgeai-bundle/1";
/// Longest component name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest `compatible` string, in bytes.
pub const MAX_COMPATIBLE_BYTES: usize = 255;

/// The manifest. Its exact bytes are what the signatures cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The version this bundle installs.
    pub version: semver::Version,
    /// The device family it is for; must equal the device's exactly.
    pub compatible: String,
    /// The device must run at least this version before installing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_previous_version: Option<semver::Version>,
    /// Whether the bundle may replace a newer version (the installer must ask for it too).
    #[serde(default)]
    pub allow_downgrade: bool,
    /// When the bundle was made (RFC 3339).
    pub created: String,
    /// The payloads, in archive order.
    pub components: Vec<Component>,
}

/// One payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub kind: Kind,
    /// One path segment: no `/`, not `.` or `..`, no control characters, ≤ 255 bytes.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the payload.
    pub sha256: String,
    /// Permission bits of the unpacked file (no group/other write, no setuid);
    /// a binary is always unpacked 0755.
    pub mode: u32,
}

/// What a component is; decides its archive directory and where it unpacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The `edgeaid` executable (at most one).
    Binary,
    /// A model file (GGUF).
    Model,
    /// An app definition (Dify DSL YAML or JSON).
    App,
    /// A config file (a `conf.d` fragment).
    Config,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Binary, Kind::Model, Kind::App, Kind::Config];

    /// The word in the manifest and in `payload/<kind>/<name>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Binary => "binary",
            Kind::Model => "model",
            Kind::App => "app",
            Kind::Config => "config",
        }
    }

    /// The directory under the unpack target: `bin`, `models`, `apps`, `config`.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Binary => "bin",
            Kind::Model => "models",
            Kind::App => "apps",
            Kind::Config => "config",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Component {
    /// Its member name in the archive: `payload/<kind>/<name>`.
    pub fn member(&self) -> String {
        format!("payload/{}/{}", self.kind, self.name)
    }

    /// Where it unpacks, relative to the target: `<kind dir>/<name>`.
    pub fn relative_path(&self) -> PathBuf {
        PathBuf::from(self.kind.dir()).join(&self.name)
    }

    /// The mode it is unpacked with.
    pub fn unpack_mode(&self) -> u32 {
        match self.kind {
            Kind::Binary => 0o755,
            _ => self.mode,
        }
    }
}

impl Manifest {
    /// Bytes of all payloads: what an unpack writes.
    pub fn payload_bytes(&self) -> u64 {
        self.components.iter().map(|c| c.size).fold(0u64, u64::saturating_add)
    }

    /// Parses and checks `manifest.json`'s bytes; `file` names the bundle in errors.
    pub fn parse(bytes: &[u8], file: &std::path::Path) -> Result<Manifest, BundleError> {
        let bad = |reason: String| BundleError::Manifest { file: file.to_owned(), member: super::MANIFEST_MEMBER, reason };
        // The format first, so a newer format is named as such rather than
        // as an unknown field.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        match value.get("format") {
            Some(serde_json::Value::String(f)) if f == FORMAT => {}
            Some(serde_json::Value::String(f)) => return Err(BundleError::Format { file: file.to_owned(), found: f.clone() }),
            Some(other) => return Err(bad(format!("format is {other}, not a string"))),
            None => return Err(bad("missing field `format`".to_owned())),
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        manifest.check().map_err(bad)?;
        Ok(manifest)
    }

    /// The semantic checks; the reason names the field or component.
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is {:?}, not {FORMAT:?}", self.format));
        }
        check_compatible(&self.compatible)?;
        time::OffsetDateTime::parse(&self.created, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("created {:?} is not an RFC 3339 time: {e}", self.created))?;
        let mut seen = std::collections::HashSet::new();
        let mut binaries = 0;
        for (i, c) in self.components.iter().enumerate() {
            check_name(&c.name).map_err(|why| format!("components[{i}].name {:?} {why}", c.name))?;
            if !seen.insert((c.kind, c.name.as_str())) {
                return Err(format!("components[{i}]: {} is listed twice", c.member()));
            }
            if c.kind == Kind::Binary {
                binaries += 1;
                if binaries > 1 {
                    return Err(format!("components[{i}]: a second binary ({}); a bundle carries at most one", c.name));
                }
            }
            if c.sha256.len() != 64 || !c.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("components[{i}] ({}): sha256 {:?} is not 64 lower-case hex digits", c.member(), c.sha256));
            }
            if c.mode & !0o777 != 0 || c.mode & 0o022 != 0 {
                return Err(format!(
                    "components[{i}] ({}): mode {:o} is not allowed (permission bits only, no group or other write)",
                    c.member(),
                    c.mode
                ));
            }
        }
        Ok(())
    }
}

/// A component name: one path segment that is safe in a file system and a log line.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Err("is longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return Err("is not a file name");
    }
    if name.contains('/') || name.contains('\\') {
        return Err("contains a path separator; it must be one file name");
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    Ok(())
}

fn check_compatible(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("compatible is empty".to_owned());
    }
    if c.len() > MAX_COMPATIBLE_BYTES {
        return Err("compatible is longer than 255 bytes".to_owned());
    }
    if !c.chars().all(|ch| ch.is_ascii_graphic()) {
        return Err(format!("compatible {c:?} must be printable ASCII without spaces"));
    }
    Ok(())
}
