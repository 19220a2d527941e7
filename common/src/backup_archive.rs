//! The backup archive's checks, shared by `edgeaictl backup verify|restore`
//! (offline) and the daemon's `RestoreBackup` (online), so both refuse the
//! same archives for the same reasons.
//!
//! Owns: reading an archive front to back ([`read_archive`]: the manifest
//! first, then every member it lists, in order, each checked against its
//! size and sha256; nothing missing, extra, reordered, truncated or
//! altered), the manifest's own rules ([`check_manifest`]), where a member
//! is unpacked ([`unpack_target`], [`write_member`]) and the unpacked
//! database's `PRAGMA integrity_check` and schema version
//! ([`check_database`]).
//! Must not: decide what a restore replaces or when (the callers do), or
//! know the daemon's store beyond `PRAGMA user_version`. It opens the
//! database with rusqlite (the workspace's version, bundled SQLite), which
//! `edgeaictl` and the daemon link anyway: a callback would only move the
//! same dozen lines into both callers.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::admin::{
    BackupManifest, BackupMember, BACKUP_CONFIG_PREFIX, BACKUP_FORMAT, BACKUP_KNOWLEDGE_PREFIX, BACKUP_MANIFEST, BACKUP_STORE,
};

/// The largest manifest read (it lists every file; 16 MiB is about
/// 100 000 members).
const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// The database's file name in an unpacked state directory.
pub const STATE_DB: &str = "edgeai.db";
/// The knowledge directory's name in an unpacked state directory.
pub const STATE_KNOWLEDGE: &str = "knowledge";

/// Why an archive was not read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive itself is bad: the reason, for the operator.
    #[error("{0}")]
    Bad(String),
    /// The archive is fine so far, but its consumer could not take a member
    /// (a full disk, a directory that cannot be written).
    #[error("member {member}: {source}")]
    Sink { member: String, source: std::io::Error },
}

impl From<String> for ArchiveError {
    fn from(reason: String) -> Self {
        ArchiveError::Bad(reason)
    }
}

/// Where member `name` goes when unpacking below `state` (`edgeai.db`,
/// `knowledge/...`) and, for the config files, `config` (`None`: not
/// restored).
pub fn unpack_target(name: &str, state: &Path, config: Option<&Path>) -> Option<PathBuf> {
    if name == BACKUP_STORE {
        return Some(state.join(STATE_DB));
    }
    if let Some(rel) = name.strip_prefix(BACKUP_KNOWLEDGE_PREFIX) {
        return Some(state.join(STATE_KNOWLEDGE).join(rel));
    }
    let rel = name.strip_prefix(BACKUP_CONFIG_PREFIX)?;
    config.map(|c| c.join(rel))
}

/// Writes a member to a new file `path` (0600, its directories made), synced.
pub fn write_member(path: &Path, data: &mut dyn Read) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::os::unix::fs::OpenOptionsExt::mode(std::fs::OpenOptions::new().write(true).create_new(true), 0o600).open(path)?;
    std::io::copy(data, &mut out)?;
    out.sync_all()
}

/// `PRAGMA integrity_check` of the unpacked database, and its schema
/// version against the manifest's.
pub fn check_database(db: &Path, schema_version: u32) -> Result<(), String> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("the database does not open: {e}"))?;
    let lines: Vec<String> = conn
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| format!("the database cannot be checked: {e}"))?;
    if lines != ["ok"] {
        return Err(format!("the database fails PRAGMA integrity_check: {}", lines.join("; ")));
    }
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| format!("the database's schema version cannot be read: {e}"))?;
    if found != schema_version {
        return Err(format!("the database has schema version {found}, the manifest says {schema_version}"));
    }
    Ok(())
}

/// Reads a backup archive front to back: the manifest first (checked, then
/// handed to `on_manifest`), then every member it lists, in order, each handed to `sink` and checked against
/// its size and sha256 (a member `sink` leaves unread is read to its end).
/// Anything missing, extra, reordered, truncated or altered is an error.
pub fn read_archive<R: Read>(
    input: R,
    mut on_manifest: impl FnMut(&BackupManifest) -> std::io::Result<()>,
    mut sink: impl FnMut(&BackupMember, &mut dyn Read) -> std::io::Result<()>,
) -> Result<BackupManifest, ArchiveError> {
    let truncated = |e: std::io::Error| format!("not a whole tar archive ({e}); it may be truncated");
    let mut archive = tar::Archive::new(input);
    let mut entries = archive.entries().map_err(truncated)?;
    let mut first = entries.next().ok_or_else(|| "the archive is empty".to_owned())?.map_err(truncated)?;
    if entry_name(&first)? != BACKUP_MANIFEST {
        return Err(format!("the first member is not {BACKUP_MANIFEST}").into());
    }
    let want = first.size();
    if want > MAX_MANIFEST_BYTES {
        return Err(format!("{BACKUP_MANIFEST} has {want} bytes, more than a manifest may ({MAX_MANIFEST_BYTES})").into());
    }
    let mut text = Vec::new();
    first.read_to_end(&mut text).map_err(truncated)?;
    if text.len() as u64 != want {
        return Err(format!("{BACKUP_MANIFEST} is cut short; the archive is truncated").into());
    }
    let manifest: BackupManifest = serde_json::from_slice(&text).map_err(|e| format!("{BACKUP_MANIFEST} is not a backup manifest: {e}"))?;
    drop(first);
    check_manifest(&manifest)?;
    on_manifest(&manifest).map_err(|source| ArchiveError::Sink { member: BACKUP_MANIFEST.to_owned(), source })?;
    let mut expected = manifest.members.iter();
    for entry in entries {
        let mut entry = entry.map_err(truncated)?;
        let name = entry_name(&entry)?;
        let member = expected.next().ok_or_else(|| format!("member {name} is not in the manifest"))?;
        if name != member.name {
            return Err(format!("member {name} is not the manifest's next member {}", member.name).into());
        }
        let stored = entry.size();
        let mut hashing = Hashing { inner: &mut entry, sha: Sha256::new(), size: 0 };
        sink(member, &mut hashing).map_err(|source| ArchiveError::Sink { member: name.clone(), source })?;
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(truncated)?;
        let (size, sha256) = (hashing.size, hex(&hashing.sha.finalize()));
        if size < stored {
            return Err(format!("member {name} is cut short; the archive is truncated").into());
        }
        if size != member.size {
            return Err(format!("member {name} has {size} bytes, the manifest says {}", member.size).into());
        }
        if sha256 != member.sha256 {
            return Err(format!("member {name} has sha256 {sha256}, the manifest says {}", member.sha256).into());
        }
    }
    match expected.next() {
        Some(missing) => Err(format!("member {} of the manifest is missing; the archive may be truncated", missing.name).into()),
        None => Ok(manifest),
    }
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, String> {
    let path = entry.path().map_err(|e| format!("a member's name cannot be read: {e}"))?;
    path.to_str().map(str::to_owned).ok_or_else(|| format!("member name {} is not UTF-8", path.display()))
}

/// The manifest's own rules: the format, a database, and member names that
/// are unique, relative, without `..`, and under a known prefix.
pub fn check_manifest(m: &BackupManifest) -> Result<(), String> {
    if m.format != BACKUP_FORMAT {
        return Err(format!("the manifest's format is {:?}, not {BACKUP_FORMAT:?}", m.format));
    }
    let mut seen = std::collections::HashSet::new();
    for member in &m.members {
        let name = member.name.as_str();
        let path = Path::new(name);
        let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
        let known = name == BACKUP_STORE
            || [BACKUP_KNOWLEDGE_PREFIX, BACKUP_CONFIG_PREFIX].iter().any(|p| name.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        if name.is_empty() || !plain || !known {
            return Err(format!("the manifest names an unexpected member {name:?}"));
        }
        if member.sha256.len() != 64 || !member.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(format!("member {name}'s sha256 {:?} is not 64 lower-case hex digits", member.sha256));
        }
        if !seen.insert(name) {
            return Err(format!("the manifest names {name} twice"));
        }
    }
    if !seen.contains(BACKUP_STORE) {
        return Err(format!("the manifest has no {BACKUP_STORE}"));
    }
    Ok(())
}

/// Counts and hashes what is read through it.
struct Hashing<'a> {
    inner: &'a mut dyn Read,
    sha: Sha256,
    size: u64,
}

impl Read for Hashing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// Lower-case hex of `bytes` (a sha256 as the manifest writes it).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    fn member(name: &str, data: &[u8]) -> BackupMember {
        BackupMember { name: name.into(), size: data.len() as u64, sha256: hex(&Sha256::digest(data)), source: None }
    }

    fn manifest(members: Vec<BackupMember>) -> BackupManifest {
        BackupManifest { format: BACKUP_FORMAT.into(), edgeai_version: "0.1.0".into(), schema_version: 9, created_at: 1, members }
    }

    /// A tar of the manifest `m`, then `files` (name, bytes) in that order.
    fn archive(m: &BackupManifest, files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let text = serde_json::to_vec(m).unwrap();
        let all = std::iter::once((BACKUP_MANIFEST, text.as_slice())).chain(files.iter().copied());
        for (name, data) in all {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            tar.append_data(&mut h, name, data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn read(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut seen = Vec::new();
        read_archive(
            bytes,
            |_| Ok(()),
            |m, data| {
                let mut b = Vec::new();
                data.read_to_end(&mut b)?;
                seen.push((m.name.clone(), b));
                Ok(())
            },
        )
        .map(|_| seen)
        .map_err(|e| e.to_string())
    }

    const DB: &[u8] = b"database bytes";
    const VEC: &[u8] = b"vector bytes";

    fn good() -> (BackupManifest, Vec<u8>) {
        let m = manifest(vec![member(BACKUP_STORE, DB), member("knowledge/d1/vectors/seg-1.arrow", VEC)]);
        let bytes = archive(&m, &[(BACKUP_STORE, DB), ("knowledge/d1/vectors/seg-1.arrow", VEC)]);
        (m, bytes)
    }

    #[test]
    fn a_whole_archive_reads_back_member_by_member() {
        let (_, bytes) = good();
        let seen = read(&bytes).unwrap();
        assert_eq!(seen, vec![(BACKUP_STORE.to_owned(), DB.to_vec()), ("knowledge/d1/vectors/seg-1.arrow".to_owned(), VEC.to_vec())]);
    }

    #[test]
    fn altered_missing_extra_reordered_and_truncated_archives_are_refused() {
        let (m, bytes) = good();
        let wrong = archive(&m, &[(BACKUP_STORE, b"database bytez"), ("knowledge/d1/vectors/seg-1.arrow", VEC)]);
        assert!(read(&wrong).unwrap_err().contains("has sha256"), "{:?}", read(&wrong));
        let short = archive(&m, &[(BACKUP_STORE, b"database"), ("knowledge/d1/vectors/seg-1.arrow", VEC)]);
        assert!(read(&short).unwrap_err().contains("has 8 bytes, the manifest says 14"));
        let missing = archive(&m, &[(BACKUP_STORE, DB)]);
        assert!(read(&missing).unwrap_err().contains("seg-1.arrow of the manifest is missing"));
        let extra = archive(&m, &[(BACKUP_STORE, DB), ("knowledge/d1/vectors/seg-1.arrow", VEC), ("config/x.toml", b"x")]);
        assert!(read(&extra).unwrap_err().contains("config/x.toml is not in the manifest"));
        let swapped = archive(&m, &[("knowledge/d1/vectors/seg-1.arrow", VEC), (BACKUP_STORE, DB)]);
        assert!(read(&swapped).unwrap_err().contains("is not the manifest's next member"));
        for cut in [bytes.len() / 2, 700, 100] {
            let err = read(&bytes[..cut]).unwrap_err();
            assert!(err.contains("truncated") || err.contains("missing"), "cut at {cut}: {err}");
        }
        assert!(read(&[]).unwrap_err().contains("empty"));
        let no_manifest = {
            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(DB.len() as u64);
            tar.append_data(&mut h, BACKUP_STORE, DB).unwrap();
            tar.into_inner().unwrap()
        };
        assert!(read(&no_manifest).unwrap_err().contains("first member is not manifest.json"));
    }

    #[test]
    fn the_manifest_check_refuses_what_a_restore_must_not_write() {
        let ok = manifest(vec![member(BACKUP_STORE, DB), member("config/conf.d/10-x.toml", b"x")]);
        assert_eq!(check_manifest(&ok), Ok(()));
        let cases: Vec<(BackupManifest, &str)> = vec![
            (BackupManifest { format: "edgeai-backup/2".into(), ..ok.clone() }, "format"),
            (manifest(vec![member("config/a.toml", b"a")]), "no store/edgeai.db"),
            (manifest(vec![member(BACKUP_STORE, DB), member(BACKUP_STORE, DB)]), "twice"),
            (manifest(vec![member(BACKUP_STORE, DB), member("knowledge/../../etc/passwd", b"x")]), "unexpected member"),
            (manifest(vec![member(BACKUP_STORE, DB), member("/etc/passwd", b"x")]), "unexpected member"),
            (manifest(vec![member(BACKUP_STORE, DB), member("other/file", b"x")]), "unexpected member"),
            (manifest(vec![member(BACKUP_STORE, DB), member("knowledge/", b"x")]), "unexpected member"),
            (manifest(vec![BackupMember { sha256: "ABC".into(), ..member(BACKUP_STORE, DB) }]), "is not 64 lower-case hex digits"),
        ];
        for (m, why) in cases {
            let err = check_manifest(&m).unwrap_err();
            assert!(err.contains(why), "{err} (expected {why:?})");
        }
    }
}
