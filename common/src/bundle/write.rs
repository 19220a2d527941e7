//! Writing bundles: `create` (unsigned) and `sign` (adds a signature).
//!
//! Owns: hashing the input files (a first pass), writing the archive into
//! a hidden temporary file beside the output (a second pass that checks each
//! input still has the size and hash the manifest records), fsync, and
//! putting it in place atomically: without `force` by a hard link that
//! fails if the output exists, with `force` (and for `sign`) by rename; the
//! directory is fsynced after. Nothing is left behind on error, and an
//! existing output is either untouched or wholly replaced.
//! Must not: read bundles other than through `read` (sign re-checks every
//! payload's hash while copying it, so a damaged bundle is never signed).

use std::fs::File;
use std::io::{BufWriter, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use super::archive::{TarWriter, CHUNK};
use super::keys::{key_id, parent_dir, sync_dir, SignatureFile};
use super::manifest::{Component, Kind, Manifest, FORMAT};
use super::read::{hex, Bundle, PayloadSink};
use super::{BundleError, MANIFEST_MEMBER, MAX_MANIFEST_BYTES, SIG_MEMBER};

/// One input file of `create`.
#[derive(Debug, Clone)]
pub struct CreateInput {
    pub kind: Kind,
    pub path: PathBuf,
}

/// What `create` puts into the manifest.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub version: semver::Version,
    pub compatible: String,
    pub min_previous_version: Option<semver::Version>,
    pub allow_downgrade: bool,
    /// The payloads, in the order they go into the bundle (their file names name them).
    pub inputs: Vec<CreateInput>,
    /// `created`; `None` is now.
    pub created: Option<String>,
}

/// Writes an unsigned bundle to `out`. Refuses an existing `out` unless
/// `force`. Inputs are read twice in 64 KiB pieces (hash, then copy with a
/// second hash that must agree), never loaded whole. `progress(done, total)`
/// follows the copy.
pub fn create(spec: &CreateSpec, out: &Path, force: bool, mut progress: impl FnMut(u64, u64)) -> Result<Manifest, BundleError> {
    if !force && out.symlink_metadata().is_ok() {
        return Err(BundleError::OutputExists { path: out.to_owned() });
    }
    let mut components = Vec::with_capacity(spec.inputs.len());
    for input in &spec.inputs {
        components.push(describe(input)?);
    }
    let created = match &spec.created {
        Some(c) => c.clone(),
        None => now_rfc3339(),
    };
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        version: spec.version.clone(),
        compatible: spec.compatible.clone(),
        min_previous_version: spec.min_previous_version.clone(),
        allow_downgrade: spec.allow_downgrade,
        created,
        components,
    };
    manifest.check().map_err(|reason| BundleError::Manifest { file: out.to_owned(), member: MANIFEST_MEMBER, reason })?;
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Manifest {
        file: out.to_owned(),
        member: MANIFEST_MEMBER,
        reason: e.to_string(),
    })?;
    manifest_bytes.push(b'\n');
    if manifest_bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(BundleError::TooLarge {
            file: out.to_owned(),
            member: MANIFEST_MEMBER.to_owned(),
            found: manifest_bytes.len() as u64,
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let total = manifest.payload_bytes();
    write_atomically(
        out,
        force,
        0o644,
        |tar| {
            tar.member(MANIFEST_MEMBER, &manifest_bytes, 0o644).map_err(|source| BundleError::Write { path: out.to_owned(), source })?;
            tar.member(SIG_MEMBER, &SignatureFile::default().to_bytes(), 0o644)
                .map_err(|source| BundleError::Write { path: out.to_owned(), source })?;
            let mut done = 0u64;
            progress(0, total);
            for (input, c) in spec.inputs.iter().zip(&manifest.components) {
                copy_input(tar, out, input, c, &mut |n| {
                    done += n;
                    progress(done, total);
                })?;
            }
            Ok(())
        },
        mtime_of(&manifest.created),
    )?;
    Ok(manifest)
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

fn mtime_of(created: &str) -> u64 {
    time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
        .map_or(0, |t| u64::try_from(t.unix_timestamp()).unwrap_or(0))
}

/// The first pass over an input: its name, size, sha256 and mode.
fn describe(input: &CreateInput) -> Result<Component, BundleError> {
    let path = &input.path;
    let bad = |reason: &str| BundleError::BadInput { path: path.clone(), reason: reason.to_owned() };
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| bad("has no UTF-8 file name"))?.to_owned();
    super::manifest::check_name(&name).map_err(|why| bad(&format!("has a file name that {why}")))?;
    let mut file = File::open(path).map_err(|source| BundleError::Input { path: path.clone(), source })?;
    let meta = file.metadata().map_err(|source| BundleError::Input { path: path.clone(), source })?;
    if !meta.is_file() {
        return Err(bad("is not a regular file"));
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).map_err(|source| BundleError::Input { path: path.clone(), source })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let mode = match input.kind {
        Kind::Binary => 0o755,
        _ => (meta.permissions().mode() & 0o755) | 0o400,
    };
    Ok(Component { kind: input.kind, name, size, sha256: hex(&hasher.finalize()), mode })
}

/// The second pass: copies the input into the archive and checks it did not change.
fn copy_input(
    tar: &mut TarWriter<BufWriter<File>>,
    out: &Path,
    input: &CreateInput,
    c: &Component,
    progress: &mut dyn FnMut(u64),
) -> Result<(), BundleError> {
    let path = &input.path;
    let read_err = |source| BundleError::Input { path: path.clone(), source };
    let write_err = |source| BundleError::Write { path: out.to_owned(), source };
    let changed = |what: String| BundleError::InputChanged { path: path.clone(), what };
    let file = File::open(path).map_err(read_err)?;
    let mut reader = file.take(c.size + 1);
    tar.header(&c.member(), c.size, c.mode).map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut copied = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > c.size {
            return Err(changed(format!("it grew past {} bytes", c.size)));
        }
        hasher.update(&buf[..n]);
        tar.data(&buf[..n]).map_err(write_err)?;
        progress(n as u64);
    }
    if copied != c.size {
        return Err(changed(format!("{copied} bytes now, {} before", c.size)));
    }
    if hex(&hasher.finalize()) != c.sha256 {
        return Err(changed("its sha256 differs".to_owned()));
    }
    tar.end_member(c.size).map_err(write_err)
}

/// Writes an archive through `fill` into a temporary file beside `out`,
/// fsyncs it and puts it at `out` (no-clobber unless `replace`); removes
/// the temporary file on any error.
fn write_atomically(
    out: &Path,
    replace: bool,
    mode: u32,
    fill: impl FnOnce(&mut TarWriter<BufWriter<File>>) -> Result<(), BundleError>,
    mtime: u64,
) -> Result<(), BundleError> {
    let dir = parent_dir(out);
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".to_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let write_err = |path: &Path, source| BundleError::Write { path: path.to_owned(), source };
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(|source| write_err(out, source))?;
    let result = (|| {
        let mut tar = TarWriter::new(BufWriter::with_capacity(CHUNK, file), mtime);
        fill(&mut tar)?;
        let buffered = tar.finish().map_err(|source| write_err(out, source))?;
        let file = buffered.into_inner().map_err(|e| write_err(out, e.into_error()))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|source| write_err(out, source))?;
        file.sync_all().map_err(|source| write_err(out, source))?;
        drop(file);
        place(&tmp, out, replace)?;
        sync_dir(&dir).map_err(|source| write_err(&dir, source))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `tmp` becomes `out`: by rename when replacing, else by a hard link that
/// fails if `out` exists (a file system without hard links falls back to a
/// rename after checking `out` is absent).
fn place(tmp: &Path, out: &Path, replace: bool) -> Result<(), BundleError> {
    let write_err = |source| BundleError::Write { path: out.to_owned(), source };
    if replace {
        return std::fs::rename(tmp, out).map_err(write_err);
    }
    match std::fs::hard_link(tmp, out) {
        Ok(()) => std::fs::remove_file(tmp).map_err(write_err),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(BundleError::OutputExists { path: out.to_owned() }),
        Err(_) if out.symlink_metadata().is_ok() => Err(BundleError::OutputExists { path: out.to_owned() }),
        Err(_) => std::fs::rename(tmp, out).map_err(write_err),
    }
}

/// What `sign` did.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The signing key's id.
    pub key_id: String,
    /// Whether a signature by that key was there already (and was replaced).
    pub replaced: bool,
    /// Every key id now in `manifest.sig`.
    pub key_ids: Vec<String>,
}

/// Adds `key`'s signature over the exact bytes of `manifest.json` to the
/// bundle at `path` (replacing an earlier one by the same key), rewriting
/// the file through a temporary file, fsync and rename. Every payload's
/// size and sha256 are checked while they are copied, so a damaged bundle
/// is refused and left as it was.
pub fn sign(path: &Path, key: &SigningKey) -> Result<Signed, BundleError> {
    let bundle = Bundle::inspect_file(path)?;
    let manifest_bytes = bundle.manifest_bytes().to_vec();
    let mut signatures = bundle.signatures().clone();
    let replaced = signatures.add(key, &manifest_bytes);
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
    let mtime = mtime_of(&bundle.manifest().created);
    write_atomically(
        path,
        true,
        mode,
        |tar| {
            tar.member(MANIFEST_MEMBER, &manifest_bytes, 0o644).map_err(|source| BundleError::Write { path: path.to_owned(), source })?;
            tar.member(SIG_MEMBER, &signatures.to_bytes(), 0o644).map_err(|source| BundleError::Write { path: path.to_owned(), source })?;
            let mut copier = Copier { tar, out: path };
            bundle.stream_payloads(&mut copier)?;
            Ok(())
        },
        mtime,
    )?;
    Ok(Signed { key_id: key_id(&key.verifying_key()), replaced, key_ids: signatures.key_ids() })
}

/// Copies payload members into another archive as they stream past.
struct Copier<'a> {
    tar: &'a mut TarWriter<BufWriter<File>>,
    out: &'a Path,
}

impl PayloadSink for Copier<'_> {
    fn begin(&mut self, c: &Component) -> Result<(), BundleError> {
        self.tar.header(&c.member(), c.size, c.mode).map_err(|source| BundleError::Write { path: self.out.to_owned(), source })
    }
    fn chunk(&mut self, _: &Component, bytes: &[u8]) -> Result<(), BundleError> {
        self.tar.data(bytes).map_err(|source| BundleError::Write { path: self.out.to_owned(), source })
    }
    fn end(&mut self, c: &Component) -> Result<(), BundleError> {
        self.tar.end_member(c.size).map_err(|source| BundleError::Write { path: self.out.to_owned(), source })
    }
}
