//! Chat templates llama.cpp does not know go through minijinja, and such a
//! template's `{{ bos_token }}` must not double the BOS that the model asks
//! llama.cpp to add. The model is the default one with its metadata
//! rewritten (tests/src/gguf.rs): a Jinja template outside llama.cpp's list
//! that renders `{{ bos_token }}`, `add_bos_token = true` as in Llama and
//! Gemma GGUFs, and `<|endoftext|>` (id 0) as BOS so it is not also the
//! ChatML turn marker `<|im_start|>`.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::Duration;

use edgeai_tests::gguf::{self, MetaValue};
use edgeai_tests::{paths, DaemonBuilder, LogLine};

/// ChatML, written so that llama.cpp's template detection (which looks for
/// substrings such as `<|im_start|>`) does not recognise it.
const JINJA_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}\
{{ '<|im_' ~ 'start|>' ~ message['role'] ~ '\\n' ~ message['content'] ~ '<|im_' ~ 'end|>\\n' }}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_' ~ 'start|>assistant\\n' }}{% endif %}";
const BOS_ID: u32 = 0;

fn prompt_lines(d: &edgeai_tests::Daemon) -> Vec<LogLine> {
    d.logs_with_message("prompt tokenised")
}

#[test]
fn a_minijinja_template_that_renders_bos_gets_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("smollm2-jinja.gguf");
    gguf::rewrite(
        &paths::model(),
        &model,
        &[
            ("tokenizer.chat_template", MetaValue::Str(JINJA_TEMPLATE.into())),
            ("tokenizer.ggml.add_bos_token", MetaValue::Bool(true)),
            ("tokenizer.ggml.bos_token_id", MetaValue::U32(BOS_ID)),
        ],
    )
    .unwrap();
    let d = DaemonBuilder::new().model_path(&model).set("log.level", "info,edgeaid::model=debug").start();
    let loaded = d.wait_log_message("model loaded", Duration::from_secs(1));
    assert_eq!(loaded.field_str("template").as_deref(), Some("model template (minijinja)"), "{}", loaded.raw);

    let c = d.client();
    let a = c.chat_blocking("What is a PLC?", "bo", None);
    assert!(!a["answer"].as_str().unwrap().is_empty(), "{a}");
    let lines = prompt_lines(&d);
    assert!(!lines.is_empty(), "no `prompt tokenised` debug line");
    for l in &lines {
        assert_eq!(l.field_u64("leading_bos"), Some(1), "{}", l.raw);
        assert!(l.field_str("first_tokens").unwrap().starts_with(&format!("[{BOS_ID}, ")), "{}", l.raw);
    }
    // llama.cpp's own check agrees.
    let warned: Vec<_> = d.logs().into_iter().filter(|l| l.raw.contains("2 BOS tokens")).collect();
    assert!(warned.is_empty(), "llama.cpp saw a double BOS: {:#?}", warned.iter().map(|l| &l.raw).collect::<Vec<_>>());
}

#[test]
fn a_template_llama_cpp_knows_keeps_the_model_s_bos_rule() {
    // The default model: ChatML rendered by llama.cpp, add_bos_token false,
    // so no BOS is added (its BOS token is `<|im_start|>`, id 1, which the
    // template writes as the turn marker: the first token).
    let d = DaemonBuilder::new().set("log.level", "info,edgeaid::model=debug").start();
    let loaded = d.wait_log_message("model loaded", Duration::from_secs(1));
    assert_eq!(loaded.field_str("template").as_deref(), Some("model template (llama.cpp)"), "{}", loaded.raw);
    d.client().chat_blocking("What is a PLC?", "bo", None);
    let lines = prompt_lines(&d);
    assert!(!lines.is_empty(), "no `prompt tokenised` debug line");
    for l in &lines {
        assert_eq!(l.field_u64("leading_bos"), Some(1), "{}", l.raw);
        assert!(l.field_str("first_tokens").unwrap().starts_with("[1, "), "{}", l.raw);
    }
}
