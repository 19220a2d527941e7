//! What the daemon crate's own model tests share: finding the default model.
//! Owns nothing else.

use std::path::PathBuf;

/// The default GGUF model (`$EDGEAI_TEST_MODEL`, else
/// `<repo>/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf`), or `None` after a
/// loud SKIP line when it is missing. Under CI (`CI` set) a missing model
/// fails the test instead: scripts/setup.sh fetches it there.
pub fn model_or_skip(test: &str) -> Option<PathBuf> {
    let path = match std::env::var_os("EDGEAI_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    if path.is_file() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "the test model {} is missing under CI: run scripts/setup.sh", path.display());
    eprintln!("SKIP {test}: the test model {} is missing (scripts/setup.sh fetches it, or set EDGEAI_TEST_MODEL)", path.display());
    None
}
