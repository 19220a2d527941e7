//! A model that cannot be loaded (missing, not GGUF, corrupt, truncated)
//! leaves the daemon up: liveness 200, readiness and every model call 503
//! `provider_not_initialize` with the reason, the admin status says why,
//! and the process keeps running instead of crash-looping.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use edgeai_tests::{chat_body, DaemonBuilder};
use serde_json::json;

/// Starts a daemon on `model`, checks every promise above, and that the
/// reason contains `reason_has`.
fn assert_degraded(model: &Path, reason_has: &str) {
    let mut d = DaemonBuilder::new().model_path(model).wait_for_model(false).start();
    let failed = d.wait_log(Duration::from_secs(60), "the model failure", |l| l.message().starts_with("model unavailable"));
    assert_eq!(failed.level(), "ERROR");
    let error = failed.field_str("error").unwrap_or_default();
    assert!(error.contains(reason_has), "logged reason {error:?} lacks {reason_has:?}");

    let c = d.client();
    let anon = c.without_key();
    assert_eq!(anon.get("/health").expect_json(200)["status"], "ok");
    let ready = anon.get("/ready");
    let body = ready.expect_dify_error(503, "provider_not_initialize");
    assert!(body["message"].as_str().unwrap().contains(reason_has), "/ready: {body}");
    assert!(ready.header("retry-after").is_some(), "503 without Retry-After");

    for mode in ["blocking", "streaming"] {
        let r = c.post_json("/v1/chat-messages", &chat_body("Hello", "u", mode, None));
        let e = r.expect_dify_error(503, "provider_not_initialize");
        assert!(e["message"].as_str().unwrap().contains(reason_has), "{mode} chat: {e}");
    }
    let r = c.post_json("/v1/chat/completions", &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "provider_not_initialize");
    // Nothing was stored for the refused turns.
    assert!(c.conversations("u").is_empty());
    // Model-free endpoints keep working.
    assert_eq!(c.get("/v1/parameters").expect_json(200)["opening_statement"], "Hello! I am the test assistant.");

    let status = d.admin().status();
    assert_eq!(status["state"], "degraded", "{status}");
    assert_eq!(status["model"]["state"], "failed");
    assert!(status["model"]["error"].as_str().unwrap().contains(reason_has), "{status}");

    std::thread::sleep(Duration::from_millis(500));
    assert!(d.is_running(), "edgeaid exited after the model failed to load");
    anon.get("/health").expect_json(200);
}

#[test]
fn missing_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model.gguf");
    assert_degraded(&missing, "no-such-model.gguf");
}

#[test]
fn file_that_is_not_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-model.gguf");
    std::fs::write(&path, b"PK\x03\x04 this is a zip file, not a model").unwrap();
    assert_degraded(&path, "not a GGUF file");
}

#[test]
fn gguf_magic_followed_by_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.gguf");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"GGUF").unwrap();
    // Version 3, then absurd tensor and key-value counts, then noise.
    f.write_all(&3u32.to_le_bytes()).unwrap();
    f.write_all(&u64::MAX.to_le_bytes()).unwrap();
    f.write_all(&u64::MAX.to_le_bytes()).unwrap();
    let noise: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    f.write_all(&noise).unwrap();
    drop(f);
    assert_degraded(&path, "could not load");
}

#[test]
fn truncated_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.gguf");
    let full = std::fs::read(edgeai_tests::paths::model()).unwrap();
    std::fs::write(&path, &full[..full.len() / 3]).unwrap();
    assert_degraded(&path, "could not load");
}
