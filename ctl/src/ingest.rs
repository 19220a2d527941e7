//! `edgeaictl datasets ingest`: finds the supported files under the given
//! paths, uploads each through `create-by-file` (a multipart form over the
//! admin socket), then polls each document's `indexing-status` until it is
//! `completed` or `error`, showing progress: bars on a terminal, a line per
//! event otherwise, one JSON summary with `--json`. Ctrl-C stops the wait
//! (the daemon goes on indexing). A full ingestion queue (429) is waited
//! out: the rest is uploaded as the queue drains.
//!
//! Owns: the walk, the upload/poll loop and its output. Must not: choose
//! exit codes (see [`crate::error`]) or know HTTP beyond the client's errors.

use crate::commands::print;
use crate::datasets::{print_json, resolve_dataset};
use crate::error::CtlError;
use crate::{multipart, paths};
use edgeai_common::datasets::{CreateDataset, CreatedDocument, Dataset, IndexingStatus, IndexingStatusList};
use edgeai_common::{ClientError, UnixClient};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// File extensions the daemon can extract text from (lower case).
pub const SUPPORTED: [&str; 7] = ["txt", "md", "markdown", "html", "htm", "csv", "pdf"];
/// The `data` part of every upload: Dify's automatic chunking.
const FORM_DATA: &str = r#"{"process_rule":{"mode":"automatic"}}"#;
/// Between two rounds of `indexing-status`.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Deepest directory walked (a guard against symlink loops).
const MAX_DEPTH: usize = 32;

/// Files to upload, and what was passed over, with why.
#[derive(Debug, Default, PartialEq)]
pub struct Found {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<(PathBuf, String)>,
}

/// Walks `paths`: a directory recursively in name order (hidden entries
/// left out), a file by its extension. A path given that cannot be read is
/// an error; inside a directory, it is skipped with its reason.
pub fn collect(paths: &[PathBuf]) -> Result<Found, CtlError> {
    let mut found = Found::default();
    for path in paths {
        walk(path, 0, &mut found).map_err(|source| CtlError::ReadInput { path: path.clone(), source })?;
    }
    Ok(found)
}

fn walk(path: &Path, depth: usize, found: &mut Found) -> Result<(), std::io::Error> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        match kind(path) {
            Some(_) => found.files.push(path.to_owned()),
            None => found.skipped.push((path.to_owned(), format!("not a supported type ({})", SUPPORTED.join(", ")))),
        }
        return Ok(());
    }
    if !meta.is_dir() {
        found.skipped.push((path.to_owned(), "not a regular file".into()));
        return Ok(());
    }
    if depth >= MAX_DEPTH {
        found.skipped.push((path.to_owned(), format!("more than {MAX_DEPTH} directories deep")));
        return Ok(());
    }
    let mut entries = std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if let Err(e) = walk(&entry, depth + 1, found) {
            found.skipped.push((entry, format!("cannot read: {e}")));
        }
    }
    Ok(())
}

/// The supported extension of `path`, lower-cased.
fn kind(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    SUPPORTED.contains(&ext.as_str()).then_some(ext)
}

/// One uploaded file and what the daemon last said of its document.
struct Upload {
    file: PathBuf,
    name: String,
    id: String,
    batch: String,
    status: String,
    completed: u64,
    total: u64,
    error: Option<String>,
    /// Its bar while it is being indexed (terminal only).
    bar: Option<ProgressBar>,
}

impl Upload {
    fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "error")
    }

    fn update(&mut self, s: IndexingStatus) {
        self.status = s.indexing_status;
        self.completed = s.completed_segments;
        self.total = s.total_segments;
        self.error = s.error;
    }

    fn json(&self) -> Value {
        json!({"file": self.file.display().to_string(), "name": self.name, "id": self.id, "batch": self.batch,
               "indexing_status": self.status, "completed_segments": self.completed, "total_segments": self.total,
               "error": self.error})
    }
}

/// How progress is shown.
enum View {
    /// Stdout is a terminal: an overall bar, and one per document in progress.
    Bars { multi: MultiProgress, overall: ProgressBar },
    /// One line per upload, state change and result.
    Lines,
    /// Nothing until the JSON summary.
    Json,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

impl View {
    fn new(json: bool, files: usize, dataset: &str) -> View {
        if json {
            return View::Json;
        }
        if !std::io::stdout().is_terminal() {
            return View::Lines;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(ProgressBar::new(files as u64));
        overall.set_style(style("{prefix:.bold} [{bar:30}] {pos}/{len} documents {msg}"));
        overall.set_prefix(dataset.to_owned());
        View::Bars { multi, overall }
    }

    /// A note on stderr, above the bars if any.
    fn note(&self, text: &str) {
        match self {
            View::Bars { multi, .. } => multi.suspend(|| eprintln!("{text}")),
            View::Lines | View::Json => eprintln!("{text}"),
        }
    }

    fn line(&self, text: &str) -> Result<(), CtlError> {
        match self {
            View::Bars { multi, .. } => {
                let _ = multi.println(text);
                Ok(())
            }
            View::Lines => print(&format!("{text}\n")),
            View::Json => Ok(()),
        }
    }

    fn uploaded(&self, u: &Upload) -> Result<(), CtlError> {
        match self {
            View::Bars { overall, .. } => {
                overall.set_message(format!("(uploading: {} sent)", u.name));
                Ok(())
            }
            _ => self.line(&format!("uploaded {} (document {})", u.name, u.id)),
        }
    }

    /// After a poll that left `u` unfinished; `before` is its previous status.
    fn progress(&self, u: &mut Upload, before: &str) -> Result<(), CtlError> {
        match self {
            View::Bars { multi, overall } => {
                if u.bar.is_none() && u.status != "waiting" {
                    let bar = multi.add(ProgressBar::new(0));
                    bar.set_style(style("  {prefix:30!} [{bar:30}] {pos}/{len} segments {msg}"));
                    bar.set_prefix(u.name.clone());
                    u.bar = Some(bar);
                }
                if let Some(bar) = &u.bar {
                    bar.set_length(u.total);
                    bar.set_position(u.completed);
                    bar.set_message(u.status.clone());
                }
                overall.tick();
                Ok(())
            }
            View::Lines if u.status != before => self.line(&format!("{}: {} {}/{} segments", u.name, u.status, u.completed, u.total)),
            View::Lines | View::Json => Ok(()),
        }
    }

    /// `u` is `completed` or `error`.
    fn finished(&self, u: &mut Upload) -> Result<(), CtlError> {
        if let (View::Bars { overall, .. }, Some(bar)) = (self, u.bar.take()) {
            bar.finish_and_clear();
            overall.inc(1);
        } else if let View::Bars { overall, .. } = self {
            overall.inc(1);
        }
        match &u.error {
            Some(reason) if u.status == "error" => {
                self.note(&format!("edgeaictl: {}: indexing failed: {reason}", u.file.display()));
                Ok(())
            }
            _ if u.status == "error" => {
                self.note(&format!("edgeaictl: {}: indexing failed (no reason given)", u.file.display()));
                Ok(())
            }
            _ => self.line(&format!("indexed {}: {} segments", u.name, u.total)),
        }
    }

    /// A file that will not be indexed counts as done in the overall bar.
    fn refused(&self) {
        if let View::Bars { overall, .. } = self {
            overall.inc(1);
        }
    }

    /// After a poll round: how many of ours wait in the daemon's queue and how many it indexes.
    fn round(&self, uploads: &[Upload]) {
        if let View::Bars { overall, .. } = self {
            let waiting = uploads.iter().filter(|u| u.status == "waiting").count();
            let active = uploads.iter().filter(|u| !u.is_final() && u.status != "waiting").count();
            overall.set_message(format!("({active} indexing, {waiting} queued)"));
        }
    }

    fn clear(&self) {
        if let View::Bars { overall, .. } = self {
            overall.finish_and_clear();
        }
    }
}

/// What one upload attempt came to.
enum Step {
    /// Uploaded, or refused for good (the reason is kept).
    Done,
    /// 429: the daemon's queue is full; try again after a poll.
    QueueFull,
}

struct Run<'c> {
    client: &'c UnixClient,
    dataset: Dataset,
    view: View,
    to_upload: VecDeque<PathBuf>,
    uploads: Vec<Upload>,
    /// Files the daemon (or we) refused, with why.
    refused: Vec<(PathBuf, String)>,
    queue_full_noted: bool,
}

/// `datasets ingest`.
pub async fn ingest(client: &UnixClient, paths: &[PathBuf], dataset: &str, create: bool, json: bool) -> Result<(), CtlError> {
    let found = collect(paths)?;
    if found.files.is_empty() {
        for (file, reason) in &found.skipped {
            eprintln!("skipping {}: {reason}", file.display());
        }
        return Err(CtlError::NoFiles { paths: paths.iter().map(|p| p.display().to_string()).collect() });
    }
    // Before anything is uploaded, so that Ctrl-C never kills us half-way.
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| CtlError::Signal { source })?;
    let dataset = match resolve_dataset(client, dataset).await {
        Ok(d) => d,
        Err(CtlError::NotFound { .. }) if create => {
            let request = CreateDataset { name: dataset.to_owned(), description: None, indexing_technique: "high_quality".into() };
            let d: Dataset = client.post_json(&paths::datasets(), &request).await?;
            eprintln!("created dataset {:?} ({})", d.name, d.id);
            d
        }
        Err(e) => return Err(e),
    };
    let view = View::new(json, found.files.len(), &dataset.name);
    for (file, reason) in &found.skipped {
        view.note(&format!("skipping {}: {reason}", file.display()));
    }
    let mut run =
        Run { client, dataset, view, to_upload: found.files.into(), uploads: Vec::new(), refused: Vec::new(), queue_full_noted: false };
    let interrupted = run.drive(&mut sigint).await;
    run.view.clear();
    run.finish(&found.skipped, interrupted?)
}

impl Run<'_> {
    /// Uploads and polls until every document is final; `Ok(true)` when
    /// Ctrl-C stopped it first.
    async fn drive(&mut self, sigint: &mut Signal) -> Result<bool, CtlError> {
        loop {
            while let Some(file) = self.to_upload.front().cloned() {
                let step = tokio::select! {
                    biased;
                    _ = sigint.recv() => return Ok(true),
                    step = self.upload(&file) => step?,
                };
                match step {
                    Step::Done => {
                        self.to_upload.pop_front();
                    }
                    Step::QueueFull => break,
                }
            }
            if self.to_upload.is_empty() && self.pending() == 0 {
                return Ok(false);
            }
            tokio::select! {
                biased;
                _ = sigint.recv() => return Ok(true),
                polled = self.poll() => polled?,
            }
            if self.to_upload.is_empty() && self.pending() == 0 {
                return Ok(false);
            }
            tokio::select! {
                biased;
                _ = sigint.recv() => return Ok(true),
                () = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    }

    fn pending(&self) -> usize {
        self.uploads.iter().filter(|u| !u.is_final()).count()
    }

    async fn upload(&mut self, file: &Path) -> Result<Step, CtlError> {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = match tokio::fs::read(file).await {
            Ok(bytes) => bytes,
            Err(e) => return Ok(self.refuse(file, format!("cannot read: {e}"))),
        };
        let form = match multipart::file_form(FORM_DATA, &name, &bytes) {
            Ok(form) => form,
            Err(e) => return Ok(self.refuse(file, e.to_string())),
        };
        let path = paths::create_by_file(&self.dataset.id);
        match self.client.post_body::<CreatedDocument>(&path, &form.content_type, form.body).await {
            Ok(created) => {
                let d = created.document;
                let upload = Upload {
                    file: file.to_owned(),
                    name: d.name,
                    id: d.id,
                    batch: created.batch,
                    status: d.indexing_status,
                    completed: 0,
                    total: 0,
                    error: d.error,
                    bar: None,
                };
                self.view.uploaded(&upload)?;
                self.uploads.push(upload);
                Ok(Step::Done)
            }
            Err(ClientError::Api { status: 429, .. }) => {
                if !self.queue_full_noted {
                    self.view.note("the daemon's indexing queue is full: the rest is uploaded as it drains");
                    self.queue_full_noted = true;
                }
                Ok(Step::QueueFull)
            }
            // This file is refused (empty, too large, wrong type, bad name): go on with the others.
            Err(ClientError::Api { status: 400 | 413 | 415, code, message }) => Ok(self.refuse(file, format!("{code}: {message}"))),
            Err(e) => Err(e.into()),
        }
    }

    fn refuse(&mut self, file: &Path, reason: String) -> Step {
        self.view.note(&format!("edgeaictl: {}: not uploaded: {reason}", file.display()));
        self.view.refused();
        self.refused.push((file.to_owned(), reason));
        Step::Done
    }

    /// One `indexing-status` round over the unfinished documents.
    async fn poll(&mut self) -> Result<(), CtlError> {
        let Run { client, dataset, view, uploads, .. } = self;
        for u in uploads.iter_mut().filter(|u| !u.is_final()) {
            let before = u.status.clone();
            match client.get::<IndexingStatusList>(&paths::indexing_status(&dataset.id, &u.batch)).await {
                Ok(list) => {
                    if let Some(s) = list.data.into_iter().find(|s| s.id == u.id) {
                        u.update(s);
                    }
                }
                Err(ClientError::Api { status: 404, .. }) => {
                    u.status = "error".into();
                    u.error = Some("the document was deleted while it was indexed".into());
                }
                Err(e) => return Err(e.into()),
            }
            if u.is_final() {
                view.finished(u)?;
            } else {
                view.progress(u, &before)?;
            }
        }
        view.round(uploads);
        Ok(())
    }

    fn finish(self, skipped: &[(PathBuf, String)], interrupted: bool) -> Result<(), CtlError> {
        let failed = self.uploads.iter().filter(|u| u.status == "error").count() + self.refused.len();
        let pending: Vec<&Upload> = self.uploads.iter().filter(|u| !u.is_final()).collect();
        let indexed: Vec<&Upload> = self.uploads.iter().filter(|u| u.status == "completed").collect();
        let files = self.uploads.len() + self.refused.len() + self.to_upload.len();
        let path_reason = |(p, r): &(PathBuf, String)| json!({"file": p.display().to_string(), "reason": r});
        if let View::Json = self.view {
            print_json(&json!({
                "dataset": {"id": self.dataset.id, "name": self.dataset.name},
                "documents": self.uploads.iter().map(Upload::json).collect::<Vec<_>>(),
                "refused": self.refused.iter().map(path_reason).collect::<Vec<_>>(),
                "skipped": skipped.iter().map(path_reason).collect::<Vec<_>>(),
                "not_uploaded": self.to_upload.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "interrupted": interrupted,
            }))?;
        } else {
            let segments: u64 = indexed.iter().map(|u| u.total).sum();
            let mut out = format!("indexed {} of {files} files into {:?} ({segments} segments)", indexed.len(), self.dataset.name);
            if failed > 0 {
                out.push_str(&format!("; {failed} failed"));
            }
            if !skipped.is_empty() {
                out.push_str(&format!("; {} skipped", skipped.len()));
            }
            out.push('\n');
            if !pending.is_empty() {
                out.push_str(&format!("still indexing (the daemon goes on; see `edgeaictl datasets docs {}`):\n", self.dataset.id));
                let width = pending.iter().map(|u| u.name.chars().count()).max().unwrap_or(0);
                for u in &pending {
                    out.push_str(&format!("  {:<width$}  {} {}/{} segments\n", u.name, u.status, u.completed, u.total));
                }
            }
            if !self.to_upload.is_empty() {
                out.push_str("not uploaded:\n");
                for p in &self.to_upload {
                    out.push_str(&format!("  {}\n", p.display()));
                }
            }
            print(&out)?;
        }
        if failed > 0 {
            return Err(CtlError::IngestFailed { failed, files });
        }
        if interrupted {
            return Err(CtlError::Interrupted { pending: pending.len() });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn collect_walks_in_order_and_skips_other_types() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        for f in ["b.md", "a.TXT", "sub/c.pdf", "sub/deeper/d.csv", "notes.docx", ".hidden.md", "sub/e.HTM"] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/x.md"), "x").unwrap();
        let single = root.join("b.md");
        let found = collect(&[root.to_owned(), single.clone()]).unwrap();
        let rel: Vec<String> = found.files.iter().map(|p| p.strip_prefix(root).unwrap().display().to_string()).collect();
        assert_eq!(rel, ["a.TXT", "b.md", "sub/c.pdf", "sub/deeper/d.csv", "sub/e.HTM", "b.md"]);
        assert_eq!(found.skipped.len(), 1);
        assert_eq!(found.skipped[0].0, root.join("notes.docx"));
        assert!(found.skipped[0].1.contains("not a supported type"), "{}", found.skipped[0].1);
    }

    #[test]
    fn a_missing_path_is_an_input_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = collect(&[dir.path().join("gone")]).unwrap_err();
        assert!(matches!(err, CtlError::ReadInput { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 65);
    }

    #[test]
    fn supported_kinds_ignore_case() {
        assert_eq!(kind(Path::new("x/Manual.PDF")).as_deref(), Some("pdf"));
        assert_eq!(kind(Path::new("x/a.markdown")).as_deref(), Some("markdown"));
        assert_eq!(kind(Path::new("x/README")), None);
        assert_eq!(kind(Path::new("x/a.docx")), None);
    }
}
