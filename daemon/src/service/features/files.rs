//! Uploaded files: which files are accepted (document types; images are
//! refused while no vision model is configured), streaming the bytes to a
//! temporary file under `files.dir` within `files.max_file_bytes`, then
//! moving them in place and recording them, and reading them back for the
//! app that owns them.
//!
//! Crash safety: bytes are fsynced and renamed to their id before the row
//! is inserted; a failed insert removes them, and an upload that does not
//! finish leaves no file behind (its temporary file is removed on drop, or,
//! after a crash, by [`sweep_unfinished_uploads`] at the next start).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use super::super::{new_id, Service};
use super::{FeatureError, Outcome};
use crate::config::FilesSettings;
use crate::engine::turn::check_user;
use crate::engine::AppDefinition;
use crate::store::{NewUploadFile, StoreError, UploadFile};

/// Document files an app may receive (Dify's document extensions, without
/// HTML, plus JSON).
const DOCUMENT_EXTENSIONS: &[&str] = &[
    "txt",
    "md",
    "markdown",
    "mdx",
    "csv",
    "json",
    "pdf",
    "xml",
    "docx",
    "doc",
    "xlsx",
    "xls",
    "pptx",
    "ppt",
    "vtt",
    "properties",
    "eml",
    "msg",
    "epub",
];

/// Images: refused while the daemon has no vision model.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "svg", "bmp", "tif", "tiff"];

/// Longest file name kept; longer names are cut, keeping the extension (as Dify does).
const MAX_NAME_CHARS: usize = 200;

/// What an upload says about its file before any byte is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadMeta {
    pub name: String,
    pub extension: String,
    pub mime_type: String,
}

/// Dify's checks on an uploaded part, in Dify's order: a content type, a
/// file name, no path separators in it, then an accepted type.
pub fn check_upload(file_name: Option<&str>, mime_type: Option<&str>) -> Result<UploadMeta, FeatureError> {
    let mime_type = match mime_type.map(str::trim) {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => return Err(FeatureError::UnsupportedFileType { reason: "the part has no content type".into() }),
    };
    let name = match file_name {
        Some(n) if !n.is_empty() => n,
        _ => return Err(FeatureError::FilenameMissing),
    };
    if name.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(FeatureError::FilenameInvalid);
    }
    let extension = match name.rsplit_once('.') {
        Some((_, ext)) => ext.to_ascii_lowercase(),
        None => String::new(),
    };
    if IMAGE_EXTENSIONS.contains(&extension.as_str()) {
        return Err(FeatureError::UnsupportedFileType { reason: format!(".{extension} is an image and no vision model is configured") });
    }
    if !DOCUMENT_EXTENSIONS.contains(&extension.as_str()) {
        return Err(FeatureError::UnsupportedFileType { reason: format!("{name:?} is not a document type this daemon accepts") });
    }
    let name = if name.chars().count() > MAX_NAME_CHARS {
        // Cut the stem, keep the extension, as Dify does.
        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
        let stem: String = stem.chars().take(MAX_NAME_CHARS).collect();
        format!("{stem}.{extension}")
    } else {
        name.to_owned()
    };
    Ok(UploadMeta { name, extension, mime_type })
}

/// An upload in progress: its bytes go to a temporary file, which is
/// removed unless [`Service::finish_upload`] keeps it.
pub struct Upload {
    meta: UploadMeta,
    id: String,
    tmp: PathBuf,
    file: tokio::fs::File,
    size: u64,
    limit: u64,
    kept: bool,
}

impl Upload {
    /// Appends a chunk; over `files.max_file_bytes` the upload is refused.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FeatureError> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(FeatureError::FileTooLarge { limit: self.limit });
        }
        self.file.write_all(chunk).await.map_err(|source| FeatureError::Io { path: self.tmp.clone(), source })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.kept {
            if let Err(e) = std::fs::remove_file(&self.tmp) {
                tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove an unfinished upload");
            }
        }
    }
}

/// Removes the temporary files of uploads a crash left unfinished
/// (`.<id>.part` in `files.dir`); returns how many. A missing directory has
/// none. Runs at start-up, before anything is served.
pub async fn sweep_unfinished_uploads(dir: &Path) -> std::io::Result<usize> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".part") && entry.file_type().await?.is_file() {
            tokio::fs::remove_file(entry.path()).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn stored_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(id)
}

impl Service {
    /// Starts an upload of a checked file: creates `files.dir` if needed and
    /// a temporary file in it.
    pub async fn begin_upload(&self, settings: &FilesSettings, meta: UploadMeta) -> Result<Upload, FeatureError> {
        let dir = &settings.dir;
        let io = |source| FeatureError::Io { path: dir.clone(), source };
        tokio::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir).await.map_err(io)?;
        let id = new_id();
        let tmp = dir.join(format!(".{id}.part"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&tmp)
            .await
            .map_err(|source| FeatureError::Io { path: tmp.clone(), source })?;
        Ok(Upload { meta, id, tmp, file, size: 0, limit: settings.max_file_bytes, kept: false })
    }

    /// Makes the upload durable under its id and records it for `app` and `user`.
    pub async fn finish_upload(&self, settings: &FilesSettings, app: &AppDefinition, user: &str, mut up: Upload) -> Outcome<UploadFile> {
        check_user(user)?;
        let tmp = up.tmp.clone();
        let io = |source| FeatureError::Io { path: tmp.clone(), source };
        if let Err(e) = up.file.flush().await.and(up.file.sync_all().await) {
            return Ok(Err(io(e)));
        }
        let path = stored_path(&settings.dir, &up.id);
        if let Err(source) = tokio::fs::rename(&up.tmp, &path).await {
            return Ok(Err(FeatureError::Io { path, source }));
        }
        up.kept = true;
        // The rename should survive a power loss before the row says the file exists.
        let synced = match tokio::fs::File::open(&settings.dir).await {
            Ok(d) => d.sync_all().await,
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            tracing::warn!(dir = %settings.dir.display(), error = %e, "could not fsync the upload directory");
        }
        let row = NewUploadFile {
            id: up.id.clone(),
            app_id: app.id.clone(),
            user: user.to_owned(),
            name: up.meta.name.clone(),
            size: up.size,
            extension: up.meta.extension.clone(),
            mime_type: up.meta.mime_type.clone(),
        };
        match self.store.insert_upload_file(row).await {
            Ok(f) => {
                tracing::info!(app = %app.id, file_id = %f.id, size = f.size, extension = %f.extension, "file uploaded");
                Ok(Ok(f))
            }
            Err(e) => {
                if let Err(rm) = tokio::fs::remove_file(&path).await {
                    tracing::warn!(path = %path.display(), error = %rm, "could not remove the bytes of an unrecorded upload");
                }
                Err(e.into())
            }
        }
    }

    /// A file of `app` with its bytes; another app's file is not found.
    pub async fn read_upload(&self, settings: &FilesSettings, app: &AppDefinition, id: &str) -> Outcome<(UploadFile, Vec<u8>)> {
        let f = match self.store.get_upload_file(&app.id, id).await {
            Ok(f) => f,
            Err(StoreError::NotFound { .. }) => return Ok(Err(FeatureError::FileNotFound { id: id.to_owned() })),
            Err(e) => return Err(e.into()),
        };
        let path = stored_path(&settings.dir, &f.id);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Ok((f, bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), file_id = %f.id, "an upload's bytes are missing");
                Ok(Err(FeatureError::FileNotFound { id: f.id }))
            }
            Err(source) => Ok(Err(FeatureError::Io { path, source })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(name: Option<&str>, mime: Option<&str>) -> FeatureError {
        check_upload(name, mime).expect_err("refused")
    }

    #[test]
    fn documents_pass_with_their_lower_case_extension() {
        let m = check_upload(Some("Report.PDF"), Some("application/pdf")).expect("pdf");
        assert_eq!(m, UploadMeta { name: "Report.PDF".into(), extension: "pdf".into(), mime_type: "application/pdf".into() });
        for ok in ["a.txt", "b.md", "c.csv", "d.json"] {
            assert!(check_upload(Some(ok), Some("text/plain")).is_ok(), "{ok}");
        }
    }

    #[test]
    fn checks_run_in_difys_order() {
        assert!(matches!(refused(Some(""), None), FeatureError::UnsupportedFileType { .. }), "no content type first");
        assert!(matches!(refused(None, Some("text/plain")), FeatureError::FilenameMissing));
        assert!(matches!(refused(Some(""), Some("text/plain")), FeatureError::FilenameMissing));
        assert!(matches!(refused(Some("../etc/passwd.txt"), Some("text/plain")), FeatureError::FilenameInvalid));
        assert!(matches!(refused(Some("a\\b.txt"), Some("text/plain")), FeatureError::FilenameInvalid));
        assert!(matches!(refused(Some("a\nb.txt"), Some("text/plain")), FeatureError::FilenameInvalid));
    }

    #[test]
    fn images_and_other_types_are_refused() {
        match refused(Some("photo.JPG"), Some("image/jpeg")) {
            FeatureError::UnsupportedFileType { reason } => assert!(reason.contains("vision"), "{reason}"),
            other => panic!("{other:?}"),
        }
        for bad in ["run.sh", "page.html", "noextension", "movie.mp4"] {
            assert!(matches!(refused(Some(bad), Some("text/plain")), FeatureError::UnsupportedFileType { .. }), "{bad}");
        }
    }

    #[test]
    fn long_names_are_cut_keeping_the_extension() {
        let long = format!("{}.txt", "é".repeat(250));
        let m = check_upload(Some(&long), Some("text/plain")).expect("long");
        assert_eq!(m.name.chars().count(), MAX_NAME_CHARS + 4);
        assert!(m.name.ends_with(".txt"));
        // Just over the limit: the stem is cut, not the extension.
        let near = format!("{}.txt", "x".repeat(MAX_NAME_CHARS - 2));
        let m = check_upload(Some(&near), Some("text/plain")).expect("near");
        assert_eq!(m.name, near, "a stem within the limit is kept whole");
    }

    #[tokio::test]
    async fn unfinished_uploads_of_a_crash_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for name in [".0b1c.part", ".9f.part", "0b1c-kept-id", ".hidden", "notes.part"] {
            std::fs::write(d.join(name), b"x").expect("write");
        }
        std::fs::create_dir(d.join(".dir.part")).expect("dir");
        assert_eq!(sweep_unfinished_uploads(d).await.expect("sweep"), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(d).expect("read").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, [".dir.part", ".hidden", "0b1c-kept-id", "notes.part"]);
        assert_eq!(sweep_unfinished_uploads(&d.join("missing")).await.expect("missing dir"), 0);
    }
}
