//! The fuzz targets' entry points, public under the `fuzzing` feature for
//! the coverage-guided cargo-fuzz crate (`fuzz/`), and used by the stable
//! mutation loop under `cargo test` (`fuzz.rs`, `api/fuzz_tests.rs`): both
//! fuzzers run the same code. Each function takes the raw input bytes,
//! returns whether they were accepted, and must never panic. The request
//! body targets live beside the private functions they call
//! (`api/fuzzing.rs`); the config reader's and the DSL importer's are here.

use std::path::Path;

pub use crate::api::fuzzing::{chat_app, dify_message_body, knowledge_or_embedding_body, openai_chat_body, workflow_run_body};
pub use crate::engine::workflow::dsl::ImportOptions;
pub use crate::engine::CompletionParams;

/// A whole configuration file's text, read as if it were the only file,
/// `path` (which need not exist). Not UTF-8 is refused as the daemon's
/// `read_to_string` refuses it.
pub fn config_text(path: &Path, bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| crate::config::load_text(path, text).is_ok())
}

/// A Dify DSL (YAML) text through the importer, as the API and edgeaictl
/// hand it over (a str).
pub fn dsl_text(bytes: &[u8], opts: &ImportOptions) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| crate::engine::workflow::dsl::import(text, opts).is_ok())
}
