//! Cached prompt prefixes kept across a restart, so the first request after
//! it that shares an app's pre-prompt is warm. At a clean stop, and while
//! idle when a new prefix appeared (`model.prefix_save_secs`), each slot's
//! KV state is saved (llama.cpp's sequence state file) next to a manifest
//! naming what produced it and the SHA-256 of its bytes; at start only
//! states whose manifest matches this model file, context and KV layout,
//! and whose bytes still hash right, are handed to llama.cpp (which does not
//! check the KV data it reads). Anything else is logged and deleted: a cold
//! start, never a wrong cache. Owns the `kv-prefixes/` directory; a start
//! empties it after loading, and the disk holds at most one file per slot,
//! together no larger than the KV cache.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RuntimeConfig;

/// Bumped when the manifest or what it promises changes.
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub(super) enum PrefixError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a manifest of ours: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{path}: made for another model file, context or KV layout ({field} differs)")]
    Mismatch { path: PathBuf, field: &'static str },
    #[error("{path}: its bytes do not match its manifest (corrupt or truncated)")]
    Corrupt { path: PathBuf },
    #[error("{path}: llama.cpp could not {op} the sequence state ({reason})")]
    Llama { path: PathBuf, op: &'static str, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrefixError + '_ {
    move |source| PrefixError::Io { path: path.to_owned(), source }
}

/// What a saved state depends on: the same model file (path, size and
/// modification time), the same KV cache shape and element types, the same
/// slot count (sequence ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Fingerprint {
    format: u32,
    model_path: PathBuf,
    model_size: u64,
    model_mtime_ns: u128,
    n_ctx: u32,
    kv_type_k: String,
    kv_type_v: String,
    slots: u32,
}

impl Fingerprint {
    /// This daemon's fingerprint; `None` when the model file's metadata
    /// cannot be read (then nothing is saved or loaded).
    pub(super) fn of(cfg: &RuntimeConfig, n_ctx: u32) -> Option<Fingerprint> {
        let meta = std::fs::metadata(&cfg.path).ok()?;
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(Fingerprint {
            format: FORMAT,
            model_path: cfg.path.clone(),
            model_size: meta.len(),
            model_mtime_ns: mtime.as_nanos(),
            n_ctx,
            kv_type_k: cfg.kv_type_k.as_str().to_owned(),
            kv_type_v: cfg.kv_type_v.as_str().to_owned(),
            slots: cfg.slots,
        })
    }

    /// The first field that differs from `other`, if any.
    fn differs(&self, other: &Fingerprint) -> Option<&'static str> {
        [
            (self.format != other.format, "format"),
            (self.model_path != other.model_path, "model path"),
            (self.model_size != other.model_size, "model size"),
            (self.model_mtime_ns != other.model_mtime_ns, "model modification time"),
            (self.n_ctx != other.n_ctx, "context size"),
            (self.kv_type_k != other.kv_type_k, "KV key type"),
            (self.kv_type_v != other.kv_type_v, "KV value type"),
            (self.slots != other.slots, "slot count"),
        ]
        .into_iter()
        .find_map(|(differs, field)| differs.then_some(field))
    }
}

/// One saved slot: `slot-N.json` next to `slot-N.state`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    fingerprint: Fingerprint,
    slot: u32,
    tokens: usize,
    bytes: u64,
    sha256: String,
}

fn state_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("slot-{slot}.state"))
}

fn manifest_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("slot-{slot}.json"))
}

/// SHA-256 of a file and its length, read in chunks.
fn hash_file(path: &Path) -> Result<(String, u64), PrefixError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let (mut hasher, mut len, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(path)(e)),
        }
    }
    Ok((format!("{:x}", hasher.finalize()), len))
}

/// Deletes every file in `dir` (the directory is ours alone).
fn empty_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if let Err(err) = std::fs::remove_file(e.path()) {
            tracing::warn!(path = %e.path().display(), error = %err, "could not delete a saved prefix file");
        }
    }
}

/// Saves `slots` (sequence id, tokens its KV cache holds) of `ctx` into
/// `dir`, replacing whatever was there. A slot that fails is logged and
/// left out. Returns (slots saved, bytes written).
pub(super) fn save(dir: &Path, fp: &Fingerprint, ctx: &LlamaContext, slots: &[(usize, &[LlamaToken])]) -> (usize, u64) {
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot keep the cached prefixes for the next start");
        return (0, 0);
    }
    empty_dir(dir);
    let (mut saved, mut bytes) = (0, 0);
    for &(slot, tokens) in slots {
        match save_slot(dir, fp, ctx, slot, tokens) {
            Ok(n) => {
                saved += 1;
                bytes += n;
            }
            Err(e) => {
                tracing::warn!(slot, error = %e, "a cached prefix was not saved");
                let _ = std::fs::remove_file(state_path(dir, slot));
                let _ = std::fs::remove_file(manifest_path(dir, slot));
            }
        }
    }
    (saved, bytes)
}

/// The state first, then its manifest (written aside and renamed): a
/// manifest only ever names a complete state file.
fn save_slot(dir: &Path, fp: &Fingerprint, ctx: &LlamaContext, slot: usize, tokens: &[LlamaToken]) -> Result<u64, PrefixError> {
    let state = state_path(dir, slot);
    ctx.state_seq_save_file(&state, slot as i32, tokens).map_err(|e| PrefixError::Llama {
        path: state.clone(),
        op: "save",
        reason: e.to_string(),
    })?;
    let (sha256, bytes) = hash_file(&state)?;
    let manifest = Manifest { fingerprint: fp.clone(), slot: slot as u32, tokens: tokens.len(), bytes, sha256 };
    let path = manifest_path(dir, slot);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(&manifest).map_err(|e| PrefixError::Manifest { path: tmp.clone(), reason: e.to_string() })?;
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(bytes)
}

/// Loads every saved slot that belongs to this daemon into `ctx` and
/// returns (slot, tokens) for each; then empties `dir`. A slot whose
/// loading fails is cleared in `ctx` and logged.
pub(super) fn restore(dir: &Path, fp: &Fingerprint, ctx: &mut LlamaContext) -> Vec<(usize, Vec<LlamaToken>)> {
    let mut restored = Vec::new();
    for slot in 0..fp.slots as usize {
        if !manifest_path(dir, slot).exists() {
            continue;
        }
        match restore_slot(dir, fp, ctx, slot) {
            Ok(tokens) => restored.push((slot, tokens)),
            Err(e) => {
                let _ = ctx.kv_cache_seq_rm(slot as i32, None, None);
                tracing::warn!(slot, error = %e, "discarded a saved prefix: this slot starts cold");
            }
        }
    }
    // Loaded states live in the KV cache now; the rest (bad ones, slots
    // beyond the count, leftovers of an interrupted save) must not stay.
    empty_dir(dir);
    restored
}

fn restore_slot(dir: &Path, fp: &Fingerprint, ctx: &mut LlamaContext, slot: usize) -> Result<Vec<LlamaToken>, PrefixError> {
    let path = manifest_path(dir, slot);
    let text = std::fs::read(&path).map_err(io(&path))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| PrefixError::Manifest { path: path.clone(), reason: e.to_string() })?;
    if let Some(field) = manifest.fingerprint.differs(fp) {
        return Err(PrefixError::Mismatch { path, field });
    }
    if manifest.slot as usize != slot || manifest.tokens > fp.n_ctx as usize {
        return Err(PrefixError::Manifest { path, reason: "slot or token count out of range".into() });
    }
    let state = state_path(dir, slot);
    if hash_file(&state)? != (manifest.sha256, manifest.bytes) {
        return Err(PrefixError::Corrupt { path: state });
    }
    let llama = |reason: String| PrefixError::Llama { path: state.clone(), op: "load", reason };
    let (tokens, _) = ctx.state_seq_load_file(&state, slot as i32, manifest.tokens).map_err(|e| llama(e.to_string()))?;
    // The cache must hold exactly the tokens the slot will claim it holds.
    let held = ctx.kv_cache_seq_pos_max(slot as i32) + 1;
    if tokens.len() != manifest.tokens || held != tokens.len() as i32 {
        return Err(llama(format!("{} tokens and {held} positions, the manifest says {}", tokens.len(), manifest.tokens)));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp() -> Fingerprint {
        Fingerprint {
            format: FORMAT,
            model_path: "/m.gguf".into(),
            model_size: 10,
            model_mtime_ns: 5,
            n_ctx: 4096,
            kv_type_k: "q8_0".into(),
            kv_type_v: "q8_0".into(),
            slots: 4,
        }
    }

    #[test]
    fn any_difference_in_what_produced_a_state_is_named() {
        let a = fp();
        assert_eq!(a.differs(&fp()), None);
        assert_eq!(a.differs(&Fingerprint { model_mtime_ns: 6, ..fp() }), Some("model modification time"));
        assert_eq!(a.differs(&Fingerprint { n_ctx: 2048, ..fp() }), Some("context size"));
        assert_eq!(a.differs(&Fingerprint { kv_type_v: "f16".into(), ..fp() }), Some("KV value type"));
        assert_eq!(a.differs(&Fingerprint { slots: 2, ..fp() }), Some("slot count"));
    }

    #[test]
    fn files_are_hashed_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").expect("write");
        let (h, n) = hash_file(&p).expect("hash");
        assert_eq!(n, 3);
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
