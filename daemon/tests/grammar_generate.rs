//! Grammar-constrained generation with the real default model through
//! `LocalModel` (no API carries a grammar yet): the answer is JSON matching
//! the schema, greedy and sampled; a grammar llama.cpp cannot parse fails
//! the request at submit, before anything is queued.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgeaid::config::KvType;
use edgeaid::model::grammar::json_schema_to_gbnf;
use edgeaid::model::{
    CancelFlag, ChatMessage, FinishReason, GenEvent, LocalModel, ModelError, ModelRuntime, RuntimeConfig, SamplingParams,
};
use serde_json::{json, Value};

fn load(path: std::path::PathBuf) -> Arc<LocalModel> {
    let rt = ModelRuntime::new(
        RuntimeConfig {
            name: "default".into(),
            path,
            enabled: true,
            context_size: 2048,
            kv_type_k: KvType::Q8_0,
            kv_type_v: KvType::Q8_0,
            slots: 2,
            threads: 2,
            adaptive_threads: false,
            batch_size: 256,
            step_budget: Duration::ZERO,
            prefix_dir: None,
            prefix_save: Duration::ZERO,
            queue_depth: 1,
            max_queued_per_app: 1,
            max_concurrent_per_app: 2,
            use_mlock: false,
            load_timeout: Duration::from_secs(120),
            chat_template: None,
        },
        Arc::default(),
    );
    rt.start(|_| {});
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match rt.ready() {
            Ok(m) => return m,
            Err(ModelError::Loading) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the model did not load: {e}"),
        }
    }
}

/// Runs one generation to its end: the text and how it ended.
fn generate(model: &LocalModel, messages: &[ChatMessage], params: SamplingParams) -> Result<(String, FinishReason), ModelError> {
    let prompt = model.prompt(messages)?;
    let mut events = model.submit(model.admit("test")?, prompt, params, CancelFlag::default())?;
    let mut text = String::new();
    while let Some(ev) = events.blocking_recv() {
        match ev {
            GenEvent::Started { .. } => {}
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Done { reason, .. } => return Ok((text, reason)),
            GenEvent::Failed(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("the event stream ended without Done");
}

fn params(temperature: f32, grammar: Option<String>) -> SamplingParams {
    SamplingParams { temperature, top_p: 0.9, top_k: 40, max_tokens: 48, seed: Some(7), stop: Vec::new(), grammar }
}

#[test]
fn a_schema_grammar_makes_the_model_answer_matching_json() {
    let Some(path) = common::model_or_skip("a_schema_grammar_makes_the_model_answer_matching_json") else { return };
    let model = load(path);
    let schema = json!({
        "type": "object",
        "properties": {"category_id": {"enum": ["a", "b"]}, "n": {"type": "integer"}},
        "required": ["category_id", "n"],
    });
    let grammar = json_schema_to_gbnf(&schema).unwrap();
    let messages = [
        ChatMessage::system("Classify the user's message: category a is billing, category b is technical problems."),
        ChatMessage::user("My invoice charged me twice this month. How many times was I charged?"),
    ];
    for temperature in [0.0, 0.8] {
        let (text, reason) = generate(&model, &messages, params(temperature, Some(grammar.clone()))).unwrap();
        // Once the object is closed only end-of-generation is allowed.
        assert_eq!(reason, FinishReason::Stop, "temperature {temperature}: {text:?}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("temperature {temperature}: not JSON ({e}): {text:?}"));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 2, "{text}");
        assert!(matches!(o["category_id"].as_str(), Some("a" | "b")), "{text}");
        assert!(o["n"].is_i64(), "{text}");
    }
    // The same request without the grammar is not held to it: what the
    // small model writes then is not this JSON (so the grammar did the work).
    let (free, _) = generate(&model, &messages, params(0.0, None)).unwrap();
    let matches = serde_json::from_str::<Value>(&free).ok().is_some_and(|v| v["category_id"].is_string() && v["n"].is_i64());
    assert!(!matches, "without a grammar the model already answered in the schema: {free:?}");

    // A grammar llama.cpp cannot parse fails at submit, with nothing queued
    // (queue_depth is 1: the next request still gets its place).
    let bad = params(0.0, Some("root ::= undefined-rule".into()));
    match generate(&model, &messages, bad) {
        Err(ModelError::Inference(msg)) => assert!(msg.contains("grammar"), "{msg}"),
        other => panic!("a bad grammar must fail the request, got {other:?}"),
    }
    let (text, _) = generate(&model, &messages, params(0.0, Some(grammar.clone()))).unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text:?}");

    // A grammar that parses but allows no token at all: the request fails
    // (llama.cpp's own sampling would make the grammar accept a forbidden
    // token and abort the process), greedy and sampled.
    for temperature in [0.0, 0.8] {
        let dead_end = params(temperature, Some(r#"root ::= [^\x00-\U0010FFFF]"#.into()));
        let events = run_events(&model, &messages, dead_end);
        assert!(
            matches!(events.as_slice(), [GenEvent::Started { .. }, GenEvent::Failed(e), ..] if e.contains("grammar allows no token")),
            "temperature {temperature}: {events:?}"
        );
    }
    // The thread goes on serving.
    let (text, _) = generate(&model, &messages, params(0.0, Some(grammar))).unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text:?}");
}

/// Every event of one generation, to its end.
fn run_events(model: &LocalModel, messages: &[ChatMessage], params: SamplingParams) -> Vec<GenEvent> {
    let prompt = model.prompt(messages).unwrap();
    let mut rx = model.submit(model.admit("test").unwrap(), prompt, params, CancelFlag::default()).unwrap();
    let mut events = Vec::new();
    while let Some(ev) = rx.blocking_recv() {
        events.push(ev);
    }
    events
}
