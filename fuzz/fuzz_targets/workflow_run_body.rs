//! A Dify `/workflows/run` (or chatflow `/chat-messages`) body and its user.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgeaid::fuzzing::workflow_run_body(data);
});
