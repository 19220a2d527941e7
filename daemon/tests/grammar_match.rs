//! The grammars `model::grammar` writes, run by llama.cpp's own grammar
//! engine over the default model's vocabulary: JSON that matches the schema
//! (as this converter defines it: declared key order, at most one blank
//! between tokens) is accepted, anything else is not. The model is loaded
//! once, vocabulary only.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

mod common;

use std::sync::OnceLock;

use edgeaid::model::grammar::{any_json_object_gbnf, json_schema_to_gbnf};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use serde_json::json;

/// One backend per process: every test shares it and the vocabulary.
fn vocab_model(test: &str) -> Option<&'static LlamaModel> {
    static MODEL: OnceLock<(LlamaBackend, LlamaModel)> = OnceLock::new();
    let path = common::model_or_skip(test)?;
    let (_, model) = MODEL.get_or_init(|| {
        let backend = LlamaBackend::init().unwrap();
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = LlamaModel::load_from_file(&backend, &path, &params).unwrap();
        (backend, model)
    });
    Some(model)
}

/// Whether llama.cpp's grammar engine lets `text` through `gbnf` to the end
/// (after the last token, end-of-generation is allowed).
fn accepts(model: &LlamaModel, gbnf: &str, text: &str) -> bool {
    let vocab = model.vocab();
    let mut grammar = LlamaSampler::grammar(model, gbnf, "root").unwrap_or_else(|e| panic!("llama.cpp rejects the grammar ({e}):\n{gbnf}"));
    let tokens = vocab.tokenize(text.as_bytes(), false, false);
    let pieces: Vec<u8> = tokens.iter().flat_map(|&t| vocab.token_to_piece(t, false, None)).collect();
    assert_eq!(String::from_utf8_lossy(&pieces), text, "the tokens spell the text exactly");
    let allowed = |grammar: &mut LlamaSampler, t: LlamaToken| {
        let mut candidates = LlamaTokenDataArray::new(vec![LlamaTokenData::new(t, 0.0, 0.0)], false);
        candidates.apply_sampler(grammar);
        candidates.data[0].logit().is_finite()
    };
    for t in tokens {
        if !allowed(&mut grammar, t) {
            return false;
        }
        grammar.accept(t);
    }
    allowed(&mut grammar, vocab.eos())
}

fn check(model: &LlamaModel, gbnf: &str, good: &[&str], bad: &[&str]) {
    for text in good {
        assert!(accepts(model, gbnf, text), "should accept {text:?} with\n{gbnf}");
    }
    for text in bad {
        assert!(!accepts(model, gbnf, text), "should refuse {text:?} with\n{gbnf}");
    }
}

#[test]
fn the_classifier_schema_admits_only_its_categories_and_an_integer() {
    let Some(model) = vocab_model("the_classifier_schema_admits_only_its_categories_and_an_integer") else { return };
    let schema = json!({
        "type": "object",
        "properties": {"category_id": {"enum": ["a", "b"]}, "n": {"type": "integer"}},
        "required": ["category_id", "n"],
    });
    let gbnf = json_schema_to_gbnf(&schema).unwrap();
    check(
        model,
        &gbnf,
        &[r#"{"category_id":"a","n":3}"#, r#"{ "category_id": "b", "n": -12 }"#, "{\"category_id\":\"a\",\n\"n\":0}\n"],
        &[
            r#"{"category_id":"c","n":3}"#,
            r#"{"category_id":"a"}"#,
            r#"{"category_id":"a","n":3.5}"#,
            r#"{"category_id":"a","n":01}"#,
            r#"{"category_id":"a","n":3,"x":1}"#,
            r#"{"n":3,"category_id":"a"}"#,
            r#"{"category_id":"a",  "n":3}"#,
            "{\"category_id\":\"a\",\n\n\"n\":3}",
            r#"{"category_id":"a","n":12345678901234567}"#,
            r#"["a",3]"#,
        ],
    );
}

#[test]
fn optional_properties_arrays_nesting_and_escapes() {
    let Some(model) = vocab_model("optional_properties_arrays_nesting_and_escapes") else { return };
    // serde_json keeps keys sorted: city, days, meta, tags, unit.
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1},
            "days": {"type": "integer"},
            "meta": {"type": "object", "properties": {"ok": {"type": "boolean"}, "score": {"type": ["number", "null"]}}, "required": ["ok"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "unit": {"enum": ["C", "F"]},
        },
        "required": ["city"],
    });
    let gbnf = json_schema_to_gbnf(&schema).unwrap();
    check(
        model,
        &gbnf,
        &[
            r#"{"city":"Paris"}"#,
            r#"{"city":"a \"b\" \\ \u00e9 ü 東京","days":3}"#,
            r#"{"city":"x","meta":{"ok":true,"score":null},"unit":"F"}"#,
            r#"{"city":"x","meta":{"ok":false,"score":-1.5e3}}"#,
            r#"{"city":"x","tags":[]}"#,
            r#"{"city":"x","tags":["a", "b"]}"#,
            r#"{"city":"x","days":1,"meta":{"ok":true},"tags":["t"],"unit":"C"}"#,
        ],
        &[
            "{}",
            r#"{"city":""}"#,
            r#"{"days":3}"#,
            r#"{"city":"x",}"#,
            r#"{,"city":"x"}"#,
            r#"{"city":"x" "days":3}"#,
            r#"{"city":"x","tags":["a","b","c"]}"#,
            "{\"city\":\"a\nb\"}",
            r#"{"city":"x","meta":{"score":1}}"#,
            r#"{"city":"x","unit":"K"}"#,
            r#"{"city":"\q"}"#,
        ],
    );
}

#[test]
fn any_json_object_takes_any_object_and_nothing_else() {
    let Some(model) = vocab_model("any_json_object_takes_any_object_and_nothing_else") else { return };
    check(
        model,
        &any_json_object_gbnf(),
        &["{}", r#"{"a":[1,{"b":null}],"c":"d","e":true}"#, "{\n\"a\": -0.5\n}"],
        &["[1]", r#""s""#, "{} {}", r#"{"a":1}  "#, r#"{"a":1,}"#, "{a:1}"],
    );
}
