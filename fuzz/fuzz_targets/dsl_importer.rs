//! A Dify DSL (YAML text) through the importer.
#![no_main]

use edgeaid::fuzzing::{dsl_text, ImportOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dsl_text(data, &ImportOptions::default());
});
