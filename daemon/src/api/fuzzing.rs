//! The request body fuzz targets: one function per route family that feeds
//! raw body bytes through the same functions the handlers call
//! (`body::parse_json`, then the route's request function; an accepted Dify
//! request on into the engine's checks, `Turn::new` and `check_user`).
//! Each returns whether the input was accepted and must never panic. Both
//! fuzzers call these: the stable mutation loop (`api/fuzz_tests.rs`, under
//! `cargo test`) and the coverage-guided cargo-fuzz targets (`fuzz/`, through
//! `crate::fuzzing` and the `fuzzing` feature).

use std::sync::Arc;

use serde_json::json;

use super::body::parse_json;
use super::datasets::wire;
use super::dify::message_request;
use super::openai::{chat_request, embeddings_request};
use super::workflow::run_request;
use crate::engine::turn::{check_user, Turn, TurnRequest};
use crate::engine::{AppDefinition, AppMode, CompletionParams};

/// A chat app whose form has one field of each kind, so inputs reach every
/// check of [`dify_message_body`].
pub fn chat_app() -> Arc<AppDefinition> {
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

/// A `/chat-messages` or `/completion-messages` body, then the turn it starts in `app`.
pub fn dify_message_body(app: &Arc<AppDefinition>, bytes: &[u8]) -> bool {
    let Ok(body) = parse_json(bytes) else { return false };
    let mut accepted = false;
    for route in [AppMode::Chat, AppMode::Completion] {
        if let Ok((req, _streaming)) = message_request(body.clone(), route, None) {
            let turn = TurnRequest { user: req.user, query: req.query, inputs: req.inputs };
            accepted |= Turn::new(Arc::clone(app), turn, None).is_ok();
        }
    }
    accepted
}

/// A `/workflows/run` (or chatflow `/chat-messages`) body and its user.
pub fn workflow_run_body(bytes: &[u8]) -> bool {
    let Ok(body) = parse_json(bytes) else { return false };
    let mut accepted = false;
    for chatflow in [false, true] {
        if let Ok((req, _streaming)) = run_request(body.clone(), Some("wf".into()), chatflow, None) {
            accepted |= check_user(&req.user).is_ok();
        }
    }
    accepted
}

/// An OpenAI `/v1/chat/completions` body.
pub fn openai_chat_body(bytes: &[u8], defaults: &CompletionParams) -> bool {
    parse_json(bytes).is_ok_and(|body| chat_request(body, defaults).is_ok())
}

/// Any of the Knowledge API's JSON bodies, or a `/v1/embeddings` body.
pub fn knowledge_or_embedding_body(bytes: &[u8]) -> bool {
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
}
