//! Finding, reading, parsing and merging config files, while remembering
//! which file set each key (provenance). Knows nothing about what the keys
//! mean: `read` (which depends on this module, never the reverse) turns the
//! merged table into settings.

use super::{ConfigError, SYSTEM_FILES};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// One file that contributed to the merged table.
#[derive(Debug)]
pub(super) struct Layer {
    /// As named by the scan or by `--config`; used in messages.
    pub path: PathBuf,
    /// Absolute directory of the file; relative paths inside it resolve here.
    pub dir: PathBuf,
}

/// The merged TOML of all layers, with the layer that set each key.
#[derive(Debug, Default)]
pub(super) struct Merged {
    pub table: toml::Table,
    pub layers: Vec<Layer>,
    /// Dotted key (tables and leaves) -> index into `layers`.
    origins: BTreeMap<String, usize>,
}

impl Merged {
    /// Parses `text` (the content of `path`) and merges it over what is there.
    pub fn add(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let table = parse(path, text)?;
        let absolute = std::path::absolute(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let dir = absolute.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        let index = self.layers.len();
        self.layers.push(Layer { path: path.to_owned(), dir });
        merge(&mut self.table, table, "", index, &mut self.origins);
        Ok(())
    }

    /// The layer that set `key`, or the closest enclosing key that was set
    /// (`apps[0].id` falls back to `apps`). `None` means a built-in default.
    pub fn origin(&self, key: &str) -> Option<&Layer> {
        let mut k = key;
        loop {
            if let Some(&i) = self.origins.get(k) {
                return self.layers.get(i);
            }
            k = &k[..k.rfind(['.', '['])?];
        }
    }
}

/// Reads the system scan order under `root`, skipping what does not exist.
pub(super) fn load_system(root: &Path) -> Result<Merged, ConfigError> {
    let mut files = Vec::new();
    for entry in SYSTEM_FILES {
        let relative = entry.trim_start_matches('/');
        match relative.strip_suffix("/*.toml") {
            Some(dir) => files.extend(drop_ins(&root.join(dir))?),
            None => files.push(root.join(relative)),
        }
    }
    let mut merged = Merged::default();
    for path in &files {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                tracing::debug!(path = %path.display(), "reading config file");
                merged.add(path, &text)?;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "config file absent, skipped");
            }
            Err(source) => return Err(ConfigError::Read { path: path.clone(), source }),
        }
    }
    Ok(merged)
}

/// Reads exactly `files`, in order; each must exist.
pub(super) fn load_files(files: &[PathBuf]) -> Result<Merged, ConfigError> {
    let mut merged = Merged::default();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        tracing::debug!(path = %path.display(), "reading config file");
        merged.add(path, &text)?;
    }
    Ok(merged)
}

/// The `*.toml` files of a drop-in directory, sorted by file name; hidden
/// files and anything that is not a file are skipped. A missing directory
/// has no files.
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read_dir_error = |source| ConfigError::ReadDir { path: dir.to_owned(), source };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::debug!(path = %dir.display(), "config directory absent, skipped");
            return Ok(Vec::new());
        }
        Err(e) => return Err(read_dir_error(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_dir_error)?;
        let name = entry.file_name();
        let wanted = name.to_str().is_some_and(|n| n.ends_with(".toml") && !n.starts_with('.'));
        if !wanted {
            continue;
        }
        // Follows symlinks: a link to a file counts, a dangling link does not.
        if entry.path().is_file() {
            names.push(name);
        } else {
            tracing::warn!(path = %entry.path().display(), "config drop-in is not a readable file, skipped");
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn parse(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |span| line_column(text, span.start));
        ConfigError::Parse { path: path.to_owned(), line, column, message: e.message().trim().replace('\n', "; ") }
    })
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Tables merge key by key; anything else replaces. Every key the new layer
/// touches is attributed to it, and keys under a replaced value are forgotten.
fn merge(dst: &mut toml::Table, src: toml::Table, prefix: &str, layer: usize, origins: &mut BTreeMap<String, usize>) {
    for (k, v) in src {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => {
                origins.insert(key.clone(), layer);
                merge(d, s, &key, layer, origins);
            }
            (_, v) => {
                let below = format!("{key}.");
                origins.retain(|o, _| !o.starts_with(&below));
                attribute(&v, &key, layer, origins);
                dst.insert(k, v);
            }
        }
    }
}

fn attribute(v: &toml::Value, key: &str, layer: usize, origins: &mut BTreeMap<String, usize>) {
    origins.insert(key.to_owned(), layer);
    if let toml::Value::Table(t) = v {
        for (k, v) in t {
            attribute(v, &format!("{key}.{k}"), layer, origins);
        }
    }
}
