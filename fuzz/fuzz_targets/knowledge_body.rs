//! Any of the Knowledge API's JSON bodies, or a `/v1/embeddings` body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edgeaid::fuzzing::knowledge_or_embedding_body(data);
});
