//! `model.kv_type_k` / `model.kv_type_v`: the daemon builds its KV cache
//! with the configured types (the `model loaded` line reports them) and
//! answers with each mix; an unknown type is refused by `--check-config`
//! with exit 78 naming the key. Answers are not compared across types:
//! a different KV precision may change a greedy answer.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::process::Command;

use edgeai_tests::{paths, DaemonBuilder};

const QUESTION: &str = "What is a PLC?";

/// Starts the daemon with this KV mix, checks the log line names it and
/// that a greedy, seeded chat answers.
fn answers_with(k: &str, v: &str) {
    let d = DaemonBuilder::new().max_tokens(24).set("model.kv_type_k", k).set("model.kv_type_v", v).start();
    let loaded = d.logs_with_message("model loaded");
    assert_eq!(loaded.len(), 1, "one `model loaded` line");
    assert_eq!(loaded[0].field_str("kv_cache").as_deref(), Some(format!("{k}/{v}, unified").as_str()));
    let r = d.client().chat_blocking(QUESTION, "operator", None);
    let answer = r["answer"].as_str().unwrap();
    eprintln!("KV {k}/{v}: {answer:?}");
    assert!(!answer.trim().is_empty(), "empty answer with KV {k}/{v}: {r}");
}

#[test]
fn f16_keys_and_values_answer() {
    answers_with("f16", "f16");
}

#[test]
fn f16_keys_q8_0_values_answer() {
    answers_with("f16", "q8_0");
}

#[test]
fn unknown_kv_type_exits_78_naming_the_key() {
    let mut b = DaemonBuilder::new().set("model.kv_type_v", "q8");
    let config = b.write_config();
    let out = Command::new(paths::edgeaid()).arg("--check-config").arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(stderr.contains(&format!("{}: model.kv_type_v", config.display())), "{stderr}");
    assert!(stderr.contains(r#""q8" is not one of "f16", "q8_0", "q4_0""#), "{stderr}");
}
