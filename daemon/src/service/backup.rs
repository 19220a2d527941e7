//! `edgeaictl backup create`: a consistent online snapshot of the daemon's
//! state as one tar archive, taken while the daemon serves traffic.
//!
//! Owns: what goes into the archive and in which order. The archive holds
//! `manifest.json` first (format, version, schema version, created_at,
//! each member's size and sha256), then `store/edgeai.db` (the store's
//! online backup, see `store::backup`), `knowledge/...` (the knowledge
//! directory's files: each dataset's vector files as its vector manifest
//! names them, and the documents' sources) and `config/...` (the config
//! files the daemon read, `settings.sources`).
//!
//! Consistency: the database is copied first, then the knowledge files.
//! Vectors are appended before their segments are marked `completed` (see
//! `service::knowledge`), so every segment completed in the snapshot has its
//! vectors in the files copied after it; vectors of segments completed later
//! are ignored by search (only completed segments are returned). Vector
//! files never change once written and every member is opened (and hashed)
//! before the archive is streamed, so a compaction that deletes a file
//! meanwhile does not change what is copied. Left open: a segment deleted
//! and compacted away between the two copies is in the snapshot without
//! its vector (it is then only found by full-text search; a re-index of
//! the dataset brings it back).
//!
//! Memory: every file is read in 64 KiB pieces (to hash it, then to
//! stream it); only the manifests are held whole.
//! Must not: know HTTP (the caller gives a `Write`), or SQL (the store's).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use edgeai_common::admin::{
    BackupManifest, BackupMember, BACKUP_CONFIG_PREFIX, BACKUP_FORMAT, BACKUP_KNOWLEDGE_PREFIX, BACKUP_MANIFEST, BACKUP_STORE,
};
use sha2::{Digest, Sha256};

use crate::knowledge::vectors::{self, VectorError};
use crate::store::{Store, StoreError};

/// Times the vector files of a dataset are listed again when a compaction
/// removed one between reading its manifest and opening it.
const VECTOR_RETRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot snapshot the database")]
    Store(#[from] StoreError),
    #[error("cannot read the vector index of the knowledge base")]
    Vectors(#[from] VectorError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the vector files in {} kept changing while they were copied", dir.display())]
    VectorsChanging { dir: PathBuf },
    #[error("cannot write the archive")]
    Write(#[source] std::io::Error),
    #[error("the backup task panicked")]
    Panicked,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_path_buf(), source }
}

/// A member's bytes: an open file (read from its start) or a small buffer.
enum Content {
    File(File),
    Bytes(Vec<u8>),
}

/// Every member of the archive, opened and hashed; nothing is written yet.
pub struct Snapshot {
    manifest: BackupManifest,
    /// Parallel to `manifest.members`.
    contents: Vec<Content>,
}

impl Snapshot {
    /// Members in the archive after its manifest.
    pub fn members(&self) -> usize {
        self.manifest.members.len()
    }

    /// The members' bytes (the archive is a little larger: headers, the manifest).
    pub fn bytes(&self) -> u64 {
        self.manifest.members.iter().map(|m| m.size).sum()
    }

    /// Writes the archive (blocking: run it on a blocking thread). The
    /// writer sees the archive front to back and never seeks.
    pub fn write_to<W: Write>(self, out: W) -> Result<(), BackupError> {
        let manifest = serde_json::to_vec_pretty(&self.manifest).map_err(|e| BackupError::Write(e.into()))?;
        let mtime = u64::try_from(self.manifest.created_at).unwrap_or(0);
        let mut tar = tar::Builder::new(out);
        let mut append = |name: &str, size: u64, data: &mut dyn Read| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            header.set_mode(0o600);
            header.set_mtime(mtime);
            tar.append_data(&mut header, name, data.take(size)).map_err(BackupError::Write)
        };
        append(BACKUP_MANIFEST, manifest.len() as u64, &mut manifest.as_slice())?;
        for (member, content) in self.manifest.members.iter().zip(self.contents) {
            // Test builds: `backup-member=sleep(MS)` makes a backup slow enough to overlap another job.
            fail::fail_point!("backup-member");
            match content {
                Content::Bytes(b) => append(&member.name, member.size, &mut b.as_slice())?,
                Content::File(mut f) => {
                    f.seek(SeekFrom::Start(0)).map_err(BackupError::Write)?;
                    append(&member.name, member.size, &mut f)?;
                }
            }
        }
        let mut out = tar.into_inner().map_err(BackupError::Write)?;
        out.flush().map_err(BackupError::Write)
    }
}

/// Takes the snapshot: the database through SQLite's online backup (into
/// a temporary file beside it, unlinked once open), then the knowledge
/// files in `knowledge_dir` (if the knowledge service runs) and the config
/// files `config`.
pub async fn take(store: &Store, knowledge_dir: Option<&Path>, config: &[PathBuf]) -> Result<Snapshot, BackupError> {
    let db_dir = store.path().parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let created_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let tmp = db_dir.join(format!(".backup-{}.db", uuid::Uuid::new_v4()));
    let copied = store.snapshot_to(tmp.clone()).await;
    let knowledge_dir = knowledge_dir.map(Path::to_path_buf);
    let config = config.to_vec();
    tokio::task::spawn_blocking(move || {
        // Open before unlinking: the file lives as long as the snapshot.
        let opened = copied.map_err(BackupError::from).and_then(|v| File::open(&tmp).map(|f| (v, f)).map_err(io_err(&tmp)));
        for leftover in [tmp.clone(), PathBuf::from(format!("{}-journal", tmp.display()))] {
            if let Err(e) = std::fs::remove_file(&leftover) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %leftover.display(), error = %e, "cannot remove the backup's temporary database");
                }
            }
        }
        let (schema_version, db) = opened?;
        let mut b = Builder::default();
        b.add_file(BACKUP_STORE.to_owned(), db, &tmp, None)?;
        if let Some(dir) = knowledge_dir.filter(|d| d.is_dir()) {
            b.add_tree(&dir, BACKUP_KNOWLEDGE_PREFIX)?;
        }
        b.add_config(&config)?;
        let manifest = BackupManifest {
            format: BACKUP_FORMAT.to_owned(),
            edgeai_version: env!("CARGO_PKG_VERSION").to_owned(),
            schema_version,
            created_at,
            members: b.members,
        };
        let bytes: u64 = manifest.members.iter().map(|m| m.size).sum();
        tracing::info!(members = manifest.members.len(), bytes, schema_version, "backup snapshot taken");
        Ok(Snapshot { manifest, contents: b.contents })
    })
    .await
    .map_err(|_| BackupError::Panicked)?
}

#[derive(Default)]
struct Builder {
    members: Vec<BackupMember>,
    contents: Vec<Content>,
}

impl Builder {
    fn add_file(&mut self, name: String, mut file: File, path: &Path, source: Option<String>) -> Result<(), BackupError> {
        let (size, sha256) = hash(&mut file).map_err(io_err(path))?;
        self.members.push(BackupMember { name, size, sha256, source });
        self.contents.push(Content::File(file));
        Ok(())
    }

    fn add_bytes(&mut self, name: String, bytes: Vec<u8>) {
        let (size, sha256) = (bytes.len() as u64, hex(&Sha256::digest(&bytes)));
        self.members.push(BackupMember { name, size, sha256, source: None });
        self.contents.push(Content::Bytes(bytes));
    }

    /// Every regular file below `dir`, as `prefix` + its relative path; a
    /// `vectors` directory holding an index contributes only its live files.
    fn add_tree(&mut self, dir: &Path, prefix: &str) -> Result<(), BackupError> {
        let mut entries = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err(dir))?;
        entries.sort();
        for path in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "not backed up: the file name is not UTF-8");
                continue;
            };
            let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let member = format!("{prefix}{name}");
            if meta.is_dir() && name == "vectors" && self.add_vectors(&path, &member)? {
                continue;
            }
            if meta.is_dir() {
                self.add_tree(&path, &format!("{member}/"))?;
            } else if meta.is_file() {
                match File::open(&path) {
                    Ok(f) => self.add_file(member, f, &path, None)?,
                    // Removed meanwhile (a deleted document's source).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
        }
        Ok(())
    }

    /// The live files of the vector index in `dir`, opened together; false
    /// when `dir` holds no index.
    fn add_vectors(&mut self, dir: &Path, member: &str) -> Result<bool, BackupError> {
        for _ in 0..VECTOR_RETRIES {
            let Some(vectors::LiveFiles { manifest, files: names }) = vectors::live_files(dir)? else { return Ok(false) };
            let wanted = names.len();
            let mut opened = Vec::with_capacity(wanted);
            for name in names {
                let path = dir.join(&name);
                match File::open(&path) {
                    Ok(f) => opened.push((name, f, path)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => return Err(io_err(&path)(e)),
                }
            }
            if opened.len() < wanted {
                continue; // a compaction replaced the files: list them again
            }
            self.add_bytes(format!("{member}/MANIFEST"), manifest);
            for (name, f, path) in opened {
                self.add_file(format!("{member}/{name}"), f, &path, None)?;
            }
            return Ok(true);
        }
        Err(BackupError::VectorsChanging { dir: dir.to_path_buf() })
    }

    /// The config files, below `config/` by their path relative to the
    /// first one's directory (else by position and name).
    fn add_config(&mut self, config: &[PathBuf]) -> Result<(), BackupError> {
        let base = config.first().and_then(|p| p.parent()).map(Path::to_path_buf);
        for (i, path) in config.iter().enumerate() {
            let rel = match base.as_deref().and_then(|b| path.strip_prefix(b).ok()).and_then(Path::to_str) {
                Some(rel) => rel.to_owned(),
                None => format!("{i}/{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("config.toml")),
            };
            let f = File::open(path).map_err(io_err(path))?;
            self.add_file(format!("{BACKUP_CONFIG_PREFIX}{rel}"), f, path, Some(path.display().to_string()))?;
        }
        Ok(())
    }
}

/// Size and sha256 of `f` from its start, read in pieces.
fn hash(f: &mut File) -> std::io::Result<(u64, String)> {
    f.seek(SeekFrom::Start(0))?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&sha.finalize())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_archive_holds_the_database_the_live_vector_files_sources_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let (store, report) = Store::open(&dir.path().join("edgeai.db")).unwrap();
        let k = dir.path().join("knowledge");
        let vectors = k.join("d1/vectors");
        std::fs::create_dir_all(&vectors).unwrap();
        std::fs::create_dir_all(k.join("d1/sources")).unwrap();
        let manifest = r#"{"format":"edgeai-vectors/1","dims":4,"next_seq":3,"files":["seg-1.arrow"],"tombstones":"tomb-2.bin"}"#;
        std::fs::write(vectors.join("MANIFEST"), manifest).unwrap();
        std::fs::write(vectors.join("seg-1.arrow"), b"segment").unwrap();
        std::fs::write(vectors.join("tomb-2.bin"), b"tomb").unwrap();
        // Garbage of an interrupted change: not named, not copied.
        std::fs::write(vectors.join("seg-9.arrow"), b"garbage").unwrap();
        std::fs::write(k.join("d1/sources/doc1"), b"source text").unwrap();
        let config = dir.path().join("edgeaid.toml");
        std::fs::write(&config, b"[server]\n").unwrap();

        let snapshot = take(&store, Some(&k), std::slice::from_ref(&config)).await.unwrap();
        store.close().await.unwrap();
        let mut out = Vec::new();
        snapshot.write_to(&mut out).unwrap();
        assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".backup-")));

        let mut archive = tar::Archive::new(out.as_slice());
        let mut members = Vec::new();
        let mut manifest: Option<BackupManifest> = None;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            if name == BACKUP_MANIFEST {
                manifest = Some(serde_json::from_slice(&data).unwrap());
            } else {
                members.push((name, data));
            }
        }
        let manifest = manifest.unwrap();
        assert_eq!((manifest.format.as_str(), manifest.schema_version), (BACKUP_FORMAT, report.schema_version));
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                BACKUP_STORE,
                "knowledge/d1/sources/doc1",
                "knowledge/d1/vectors/MANIFEST",
                "knowledge/d1/vectors/seg-1.arrow",
                "knowledge/d1/vectors/tomb-2.bin",
                "config/edgeaid.toml"
            ]
        );
        for ((name, data), m) in members.iter().zip(&manifest.members) {
            assert_eq!((name, data.len() as u64, hex(&Sha256::digest(data))), (&m.name, m.size, m.sha256.clone()));
        }
        assert_eq!(manifest.members[5].source.as_deref(), Some(config.to_str().unwrap()));
    }
}
