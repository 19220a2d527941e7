//! A whole configuration file (TOML text) through the config reader and
//! its checks, as if it were the only file.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

/// The file the text claims to come from; it need not exist.
static PATH: LazyLock<PathBuf> = LazyLock::new(|| std::env::temp_dir().join("edgeai-fuzz.toml"));

fuzz_target!(|data: &[u8]| {
    edgeaid::fuzzing::config_text(&PATH, data);
});
