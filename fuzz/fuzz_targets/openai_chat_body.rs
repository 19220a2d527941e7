//! An OpenAI `/v1/chat/completions` body.
#![no_main]

use edgeaid::fuzzing::{openai_chat_body, CompletionParams};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openai_chat_body(data, &CompletionParams::default());
});
