//! Fuzz targets of the request body parsers: the bytes of a Dify
//! `/chat-messages`, `/completion-messages` and `/workflows/run` body, of
//! the Knowledge API's JSON bodies and of an OpenAI `/v1/chat/completions`
//! or `/v1/embeddings` body go through the same functions the handlers call
//! (`body::parse_json`, then the route's request function),
//! and an accepted Dify request on into the engine's checks (`Turn::new`,
//! `check_user`). Every input must end in `Ok` or an `ApiError`/`TurnError`,
//! never a panic. The loop is `crate::fuzz::run`, the targets are in
//! `api/fuzzing.rs` (cargo-fuzz runs the same ones), the seeds in
//! `tests/fixtures/fuzz/<target>/`.

use super::body::parse_json;
use super::error::ApiError;
use super::fuzzing::{chat_app, dify_message_body, knowledge_or_embedding_body, openai_chat_body, workflow_run_body};
use crate::engine::CompletionParams;
use crate::fuzz::{files, run};

const DICT: &[&str] = &[
    "name",
    "text",
    "segments",
    "segment",
    "keywords",
    "enabled",
    "document_ids",
    "retrieval_model",
    "process_rule",
    "indexing_technique",
    "input",
    "encoding_format",
    "dimensions",
    "query",
    "inputs",
    "user",
    "response_mode",
    "streaming",
    "blocking",
    "conversation_id",
    "files",
    "00000000-0000-0000-0000-000000000000",
    "messages",
    "role",
    "content",
    "system",
    "assistant",
    "tool",
    "text",
    "image_url",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stream",
    "seed",
    "n",
    "topic",
    "level",
    "count",
    "model",
];

#[test]
fn fuzz_dify_message_bodies() {
    let app = chat_app();
    let seeds = files("tests/fixtures/fuzz/dify_message_body", "json");
    run("dify_message_bodies", &seeds, DICT, true, |bytes| dify_message_body(&app, bytes));
}

#[test]
fn fuzz_workflow_run_bodies() {
    let seeds = files("tests/fixtures/fuzz/workflow_run_body", "json");
    run("workflow_run_bodies", &seeds, DICT, true, workflow_run_body);
}

#[test]
fn fuzz_openai_chat_bodies() {
    let defaults = CompletionParams::default();
    let seeds = files("tests/fixtures/fuzz/openai_chat_body", "json");
    run("openai_chat_bodies", &seeds, DICT, true, |bytes| openai_chat_body(bytes, &defaults));
}

#[test]
fn fuzz_knowledge_and_embedding_bodies() {
    let seeds = files("tests/fixtures/fuzz/knowledge_body", "json");
    run("knowledge_and_embedding_bodies", &seeds, DICT, true, knowledge_or_embedding_body);
}

/// What the mutator never builds: a body nested deep enough to overflow a
/// recursive parser's stack is a 400 `bad_request`, not a crash.
#[test]
fn fuzz_deeply_nested_body_is_bad_json() {
    let body = format!("{{\"inputs\": {{\"a\": {}{}}}, \"user\": \"u\"}}", "[".repeat(5000), "]".repeat(5000));
    assert!(matches!(parse_json(body.as_bytes()), Err(ApiError::BadJson(_))));
}
