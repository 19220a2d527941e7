//! Fuzz targets of the request body parsers: the bytes of a Dify
//! `/chat-messages`, `/completion-messages` and `/workflows/run` body, of
//! the Knowledge API's JSON bodies and of an OpenAI `/v1/chat/completions`
//! or `/v1/embeddings` body go through the same functions the handlers call
//! (`body::parse_json`, then the route's request function),
//! and an accepted Dify request on into the engine's checks (`Turn::new`,
//! `check_user`). Every input must end in `Ok` or an `ApiError`/`TurnError`,
//! never a panic. The loop is `crate::fuzz::run`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::body::parse_json;
use super::datasets::wire;
use super::dify::message_request;
use super::error::ApiError;
use super::openai::{chat_request, embeddings_request};
use super::workflow::run_request;
use crate::engine::turn::{check_user, Turn, TurnRequest};
use crate::engine::{AppDefinition, AppMode, CompletionParams};
use crate::fuzz::run;

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

fn seeds(values: &[Value]) -> Vec<Vec<u8>> {
    values.iter().map(|v| serde_json::to_vec(v).expect("seed")).collect()
}

/// A chat app whose form has one field of each kind, so inputs reach every check.
fn chat_app() -> Arc<AppDefinition> {
    let app: AppDefinition = serde_json::from_value(json!({
        "id": "fuzz", "name": "Fuzz", "mode": "chat", "pre_prompt": "About {{topic}} at {{level}}, {{count}} times: {{notes}}",
        "user_input_form": [
            {"text-input": {"label": "Topic", "variable": "topic", "required": true, "max_length": 48}},
            {"select": {"label": "Level", "variable": "level", "required": false, "options": ["low", "high"]}},
            {"number": {"label": "Count", "variable": "count", "required": false}},
            {"paragraph": {"label": "Notes", "variable": "notes", "required": false, "max_length": 200}}
        ]
    }))
    .expect("the fuzz app is valid");
    Arc::new(app)
}

#[test]
fn fuzz_dify_message_bodies() {
    let app = chat_app();
    let seeds = seeds(&[
        json!({"query": "hi", "inputs": {"topic": "pumps", "level": "low", "count": 3, "notes": "n"}, "user": "u1", "response_mode": "blocking"}),
        json!({"query": "again", "inputs": {"topic": "t"}, "user": "u1", "response_mode": "streaming",
               "conversation_id": "6f1c2b4e-9d7a-4c8e-b1a2-3f4d5e6a7b8c", "files": []}),
        json!({"inputs": {"topic": "t", "count": "7"}, "user": "u2"}),
    ]);
    run("dify_message_bodies", &seeds, DICT, true, |bytes| {
        let Ok(body) = parse_json(bytes) else { return false };
        let mut accepted = false;
        for route in [AppMode::Chat, AppMode::Completion] {
            if let Ok((req, _streaming)) = message_request(body.clone(), route, None) {
                let turn = TurnRequest { user: req.user, query: req.query, inputs: req.inputs };
                accepted |= Turn::new(Arc::clone(&app), turn, None).is_ok();
            }
        }
        accepted
    });
}

#[test]
fn fuzz_workflow_run_bodies() {
    let seeds = seeds(&[
        json!({"inputs": {"topic": "t"}, "user": "u1", "response_mode": "blocking"}),
        json!({"inputs": {}, "query": "q", "user": "u1", "response_mode": "streaming",
               "conversation_id": "6f1c2b4e-9d7a-4c8e-b1a2-3f4d5e6a7b8c", "files": [{"type": "document"}]}),
    ]);
    run("workflow_run_bodies", &seeds, DICT, true, |bytes| {
        let Ok(body) = parse_json(bytes) else { return false };
        let mut accepted = false;
        for chatflow in [false, true] {
            if let Ok((req, _streaming)) = run_request(body.clone(), Some("wf".into()), chatflow, None) {
                accepted |= check_user(&req.user).is_ok();
            }
        }
        accepted
    });
}

#[test]
fn fuzz_openai_chat_bodies() {
    let defaults = CompletionParams::default();
    let seeds = seeds(&[
        json!({"model": "local", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}),
        json!({"model": "local", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
               {"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}],
               "temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "stop": ["\n"], "stream": true, "seed": 1, "n": 1}),
        json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 4, "stop": "END"}),
    ]);
    run("openai_chat_bodies", &seeds, DICT, true, |bytes| parse_json(bytes).is_ok_and(|body| chat_request(body, &defaults).is_ok()));
}

#[test]
fn fuzz_knowledge_and_embedding_bodies() {
    let seeds = seeds(&[
        json!({"name": "Manuals", "description": "d", "indexing_technique": "high_quality", "permission": "only_me",
               "provider": "vendor", "retrieval_model": {"search_method": "hybrid_search", "top_k": 3}}),
        json!({"name": "doc.txt", "text": "Pump P-101 manual", "indexing_technique": "economy",
               "process_rule": {"mode": "custom", "rules": {"segmentation": {"separator": "\\n", "max_tokens": 200}}}}),
        json!({"segments": [{"content": "c", "answer": "a", "keywords": ["k"]}], "document_ids": ["d1", "d2"]}),
        json!({"segment": {"content": "c", "answer": "a", "keywords": ["k"], "enabled": true}}),
        json!({"query": "pump", "retrieval_model": {"search_method": "semantic_search", "top_k": 2, "score_threshold_enabled": false}}),
        json!({"input": ["a", "b"], "model": "m", "encoding_format": "base64", "dimensions": 8, "user": "u"}),
    ]);
    run("knowledge_and_embedding_bodies", &seeds, DICT, true, |bytes| {
        let Ok(body) = parse_json(bytes) else { return false };
        let results = [
            wire::create_dataset(&body).is_ok(),
            wire::patch_dataset(&body).is_ok(),
            wire::create_by_text(&body).is_ok(),
            wire::update_by_text(&body).is_ok(),
            wire::status_action("enable", &body).is_ok(),
            wire::new_segments(&body).is_ok(),
            wire::segment_update(&body).is_ok(),
            wire::retrieve(&body).is_ok(),
            embeddings_request(&body).is_ok(),
        ];
        results.contains(&true)
    });
}

/// What the mutator never builds: a body nested deep enough to overflow a
/// recursive parser's stack is a 400 `bad_request`, not a crash.
#[test]
fn fuzz_deeply_nested_body_is_bad_json() {
    let body = format!("{{\"inputs\": {{\"a\": {}{}}}, \"user\": \"u\"}}", "[".repeat(5000), "]".repeat(5000));
    assert!(matches!(parse_json(body.as_bytes()), Err(ApiError::BadJson(_))));
}
