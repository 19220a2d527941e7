//! Reading a bundle front to back: the manifest and its signatures first,
//! then each payload, hashed as it streams past.
//!
//! Owns: the member order (`manifest.json`, `manifest.sig`, then
//! `payload/<kind>/<name>` in manifest order, then the end), refusing
//! anything missing, extra, reordered, duplicated, truncated, oversized or
//! misnamed; the signature check before a payload byte is read
//! ([`Bundle::open`]); hashing every payload; and unpacking into a
//! directory ([`OpenBundle::unpack_into`]), undone on any error.
//! Must not: decide policy (see `policy`) or know about slots.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::archive::{TarReader, CHUNK, END_MARKER};
use super::keys::{sync_dir, SignatureFile, TrustStore};
use super::manifest::{Component, Manifest};
use super::{BundleError, MANIFEST_MEMBER, MAX_MANIFEST_BYTES, MAX_SIG_BYTES, SIG_MEMBER};

/// Where `unpack_into` writes the manifest before renaming it into place.
const MANIFEST_TMP: &str = ".manifest.json.tmp";

/// Entry points for reading bundles.
pub struct Bundle;

impl Bundle {
    /// Reads `manifest.json` (at most 1 MiB) and `manifest.sig` from
    /// `reader`, verifies that a key of `trust` signed the manifest's exact
    /// bytes, and parses and checks the manifest. No payload byte has been
    /// read when it returns. `origin` names the bundle in errors (a path,
    /// or a label such as `fd 5 from D-Bus`).
    pub fn open<R: Read>(reader: R, origin: &Path, trust: &TrustStore) -> Result<OpenBundle<R>, BundleError> {
        let (tar, manifest_bytes, signatures) = read_head(reader, origin)?;
        let signers = trust.verify(origin, &manifest_bytes, &signatures)?;
        let manifest = Manifest::parse(&manifest_bytes, origin)?;
        Ok(OpenBundle { head: Head { tar, file: origin.to_owned(), manifest, manifest_bytes, signatures }, signers })
    }

    /// [`Bundle::open`] of a file.
    pub fn open_file(path: &Path, trust: &TrustStore) -> Result<OpenBundle<BufReader<File>>, BundleError> {
        Bundle::open(open_reader(path)?, path, trust)
    }

    /// Reads the manifest and the signature list without checking any
    /// signature (for `bundle info` and `bundle sign`). The result cannot be unpacked.
    pub fn inspect<R: Read>(reader: R, origin: &Path) -> Result<UnverifiedBundle<R>, BundleError> {
        let (tar, manifest_bytes, signatures) = read_head(reader, origin)?;
        let manifest = Manifest::parse(&manifest_bytes, origin)?;
        Ok(UnverifiedBundle { head: Head { tar, file: origin.to_owned(), manifest, manifest_bytes, signatures } })
    }

    /// [`Bundle::inspect`] of a file.
    pub fn inspect_file(path: &Path) -> Result<UnverifiedBundle<BufReader<File>>, BundleError> {
        Bundle::inspect(open_reader(path)?, path)
    }
}

fn open_reader(path: &Path) -> Result<BufReader<File>, BundleError> {
    let file = File::open(path).map_err(|source| BundleError::Read { file: path.to_owned(), source })?;
    let meta = file.metadata().map_err(|source| BundleError::Read { file: path.to_owned(), source })?;
    if !meta.is_file() {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file");
        return Err(BundleError::Read { file: path.to_owned(), source });
    }
    Ok(BufReader::with_capacity(CHUNK, file))
}

/// The two leading members, bounded, unparsed.
fn read_head<R: Read>(reader: R, origin: &Path) -> Result<(TarReader<R>, Vec<u8>, SignatureFile), BundleError> {
    let mut tar = TarReader::new(reader, origin);
    let manifest = expect_member(&mut tar, origin, MANIFEST_MEMBER)?;
    let manifest_bytes = tar.small(&manifest, MAX_MANIFEST_BYTES)?;
    let sig = expect_member(&mut tar, origin, SIG_MEMBER)?;
    let sig_bytes = tar.small(&sig, MAX_SIG_BYTES)?;
    let signatures =
        SignatureFile::parse(&sig_bytes).map_err(|reason| BundleError::Manifest { file: origin.to_owned(), member: SIG_MEMBER, reason })?;
    Ok((tar, manifest_bytes, signatures))
}

fn expect_member<R: Read>(tar: &mut TarReader<R>, origin: &Path, name: &str) -> Result<super::archive::Member, BundleError> {
    match tar.next(name)? {
        None => Err(BundleError::MissingMember { file: origin.to_owned(), expected: name.to_owned() }),
        Some(m) if m.path == name => Ok(m),
        Some(m) => Err(BundleError::UnexpectedMember {
            file: origin.to_owned(),
            expected: name.to_owned(),
            found: m.path,
            why: "a bundle starts with manifest.json, then manifest.sig",
        }),
    }
}

/// What both kinds of open bundle share.
struct Head<R> {
    tar: TarReader<R>,
    file: PathBuf,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signatures: SignatureFile,
}

/// Receives each payload as it streams past; `end` is called only after the
/// payload's size and sha256 matched the manifest.
pub(super) trait PayloadSink {
    fn begin(&mut self, component: &Component) -> Result<(), BundleError>;
    fn chunk(&mut self, component: &Component, bytes: &[u8]) -> Result<(), BundleError>;
    fn end(&mut self, component: &Component) -> Result<(), BundleError>;
}

/// Hashes only.
struct Discard;

impl PayloadSink for Discard {
    fn begin(&mut self, _: &Component) -> Result<(), BundleError> {
        Ok(())
    }
    fn chunk(&mut self, _: &Component, _: &[u8]) -> Result<(), BundleError> {
        Ok(())
    }
    fn end(&mut self, _: &Component) -> Result<(), BundleError> {
        Ok(())
    }
}

impl<R: Read> Head<R> {
    /// Streams every payload through `sink` in manifest order, checking the
    /// member names, sizes and hashes, then that nothing follows.
    fn payloads(&mut self, sink: &mut dyn PayloadSink, progress: &mut dyn FnMut(u64, u64)) -> Result<(), BundleError> {
        let total = self.manifest.payload_bytes();
        let mut done = 0u64;
        progress(0, total);
        let components = &self.manifest.components;
        for (i, c) in components.iter().enumerate() {
            let expected = c.member();
            let Some(member) = self.tar.next(&expected)? else {
                return Err(BundleError::MissingMember { file: self.file.clone(), expected });
            };
            if member.path != expected {
                let why = if components[i + 1..].iter().any(|o| o.member() == member.path) {
                    "out of order: the manifest lists it later"
                } else if components[..i].iter().any(|o| o.member() == member.path) {
                    "a second copy of an earlier component"
                } else if member.path == MANIFEST_MEMBER || member.path == SIG_MEMBER {
                    "a second copy of a header member"
                } else {
                    "not in the manifest"
                };
                return Err(BundleError::UnexpectedMember { file: self.file.clone(), expected, found: member.path, why });
            }
            if member.size != c.size {
                return Err(BundleError::SizeMismatch {
                    file: self.file.clone(),
                    component: expected,
                    expected: c.size,
                    found: member.size,
                });
            }
            sink.begin(c)?;
            let mut hasher = Sha256::new();
            self.tar.data(member.size, &expected, |bytes| {
                hasher.update(bytes);
                sink.chunk(c, bytes)?;
                done += bytes.len() as u64;
                progress(done, total);
                Ok(())
            })?;
            let found = hex(&hasher.finalize());
            if found != c.sha256 {
                return Err(BundleError::HashMismatch { file: self.file.clone(), component: expected, expected: c.sha256.clone(), found });
            }
            sink.end(c)?;
        }
        if let Some(extra) = self.tar.next(END_MARKER)? {
            return Err(BundleError::ExtraMember { file: self.file.clone(), found: extra.path });
        }
        Ok(())
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A bundle whose manifest a trusted key signed; its payloads are still unread.
pub struct OpenBundle<R> {
    head: Head<R>,
    signers: Vec<String>,
}

impl<R: Read> OpenBundle<R> {
    pub fn manifest(&self) -> &Manifest {
        &self.head.manifest
    }

    /// The exact signed bytes of `manifest.json`.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.head.manifest_bytes
    }

    /// Ids of the trusted keys whose signatures verified.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }

    /// Every signature listed, trusted or not.
    pub fn signatures(&self) -> &SignatureFile {
        &self.head.signatures
    }

    /// The bundle's name in errors.
    pub fn file(&self) -> &Path {
        &self.head.file
    }

    /// Bytes an unpack writes (the sum of the component sizes), for a free-space check.
    pub fn payload_bytes(&self) -> u64 {
        self.head.manifest.payload_bytes()
    }

    /// Reads every payload and checks its size and sha256, writing nothing.
    pub fn verify_payloads(mut self, mut progress: impl FnMut(u64, u64)) -> Result<Manifest, BundleError> {
        self.head.payloads(&mut Discard, &mut progress)?;
        Ok(self.head.manifest)
    }

    /// Streams each payload into `dir/<kind dir>/<name>` (`bin/` 0755,
    /// `models/`, `apps/`, `config/` with the manifest's mode), hashing while
    /// writing; checks size and sha256; fsyncs every file and directory; then
    /// writes `dir/manifest.json` (the signed bytes; written beside, fsynced,
    /// renamed, directory fsynced) as the marker that the unpack is complete.
    /// `dir` must exist and hold no `manifest.json`; files are created, never
    /// replaced. On any error, every file and directory it created is removed
    /// and the error names the component. `progress(done, total)` is called
    /// after every chunk, in bytes.
    pub fn unpack_into(mut self, dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<Manifest, BundleError> {
        let target_err =
            |reason: &str| BundleError::UnpackTarget { file: self.head.file.clone(), dir: dir.to_owned(), reason: reason.to_owned() };
        match dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(target_err("is not a directory")),
            Err(e) => return Err(target_err(&format!("cannot be used: {e}"))),
        }
        if dir.join(MANIFEST_MEMBER).symlink_metadata().is_ok() {
            return Err(target_err("holds a manifest.json already (a finished unpack): use an empty directory"));
        }
        let mut unpacker =
            Unpacker { dir: dir.to_owned(), created_dirs: Vec::new(), created_files: Vec::new(), used_dirs: Vec::new(), current: None };
        let result = self.head.payloads(&mut unpacker, &mut progress).and_then(|()| unpacker.complete(&self.head.manifest_bytes));
        match result {
            Ok(()) => Ok(self.head.manifest),
            Err(e) => {
                unpacker.undo();
                Err(e)
            }
        }
    }
}

/// A bundle read without a signature check.
pub struct UnverifiedBundle<R> {
    head: Head<R>,
}

impl<R: Read> UnverifiedBundle<R> {
    pub fn manifest(&self) -> &Manifest {
        &self.head.manifest
    }

    pub fn manifest_bytes(&self) -> &[u8] {
        &self.head.manifest_bytes
    }

    pub fn signatures(&self) -> &SignatureFile {
        &self.head.signatures
    }

    pub fn file(&self) -> &Path {
        &self.head.file
    }

    /// Reads every payload and checks its size and sha256, writing nothing.
    pub fn verify_payloads(mut self, mut progress: impl FnMut(u64, u64)) -> Result<Manifest, BundleError> {
        self.head.payloads(&mut Discard, &mut progress)?;
        Ok(self.head.manifest)
    }

    /// Streams the payloads through `sink` (the signer copies them).
    pub(super) fn stream_payloads(mut self, sink: &mut dyn PayloadSink) -> Result<Manifest, BundleError> {
        self.head.payloads(sink, &mut |_, _| {})?;
        Ok(self.head.manifest)
    }
}

/// Writes payloads into a directory and remembers what it created.
struct Unpacker {
    dir: PathBuf,
    created_dirs: Vec<PathBuf>,
    created_files: Vec<PathBuf>,
    used_dirs: Vec<PathBuf>,
    current: Option<(PathBuf, File)>,
}

impl Unpacker {
    fn err(component: &Component, path: &Path, source: std::io::Error) -> BundleError {
        BundleError::Unpack { component: component.member(), path: path.to_owned(), source }
    }

    /// Writes the manifest last and syncs the directories.
    fn complete(&mut self, manifest: &[u8]) -> Result<(), BundleError> {
        let write_err = |path: &Path, source| BundleError::Write { path: path.to_owned(), source };
        for d in &self.used_dirs {
            sync_dir(d).map_err(|source| write_err(d, source))?;
        }
        let tmp = self.dir.join(MANIFEST_TMP);
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp).map_err(|source| write_err(&tmp, source))?;
        self.created_files.push(tmp.clone());
        file.write_all(manifest).and_then(|()| file.sync_all()).map_err(|source| write_err(&tmp, source))?;
        drop(file);
        let done = self.dir.join(MANIFEST_MEMBER);
        std::fs::rename(&tmp, &done).map_err(|source| write_err(&done, source))?;
        self.created_files.retain(|p| p != &tmp);
        self.created_files.push(done);
        sync_dir(&self.dir).map_err(|source| write_err(&self.dir, source))
    }

    /// Removes what this unpack created, files first.
    fn undo(&mut self) {
        self.current = None;
        for f in self.created_files.drain(..).rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.created_dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
        let _ = sync_dir(&self.dir);
    }
}

impl PayloadSink for Unpacker {
    fn begin(&mut self, c: &Component) -> Result<(), BundleError> {
        let kind_dir = self.dir.join(c.kind.dir());
        match kind_dir.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                let source = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory");
                return Err(Self::err(c, &kind_dir, source));
            }
            Err(_) => {
                std::fs::create_dir(&kind_dir).map_err(|source| Self::err(c, &kind_dir, source))?;
                self.created_dirs.push(kind_dir.clone());
            }
        }
        if !self.used_dirs.contains(&kind_dir) {
            self.used_dirs.push(kind_dir.clone());
        }
        let path = kind_dir.join(&c.name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Self::err(c, &path, source))?;
        self.created_files.push(path.clone());
        self.current = Some((path, file));
        Ok(())
    }

    fn chunk(&mut self, c: &Component, bytes: &[u8]) -> Result<(), BundleError> {
        let Some((path, file)) = self.current.as_mut() else { return Ok(()) };
        file.write_all(bytes).map_err(|source| Self::err(c, path, source))
    }

    fn end(&mut self, c: &Component) -> Result<(), BundleError> {
        let Some((path, file)) = self.current.take() else { return Ok(()) };
        let mode = std::os::unix::fs::PermissionsExt::from_mode(c.unpack_mode());
        file.set_permissions(mode).and_then(|()| file.sync_all()).map_err(|source| Self::err(c, &path, source))
    }
}
