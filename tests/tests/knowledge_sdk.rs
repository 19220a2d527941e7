//! Real clients against the knowledge API, with the real embedding model:
//! Dify's Python SDK transport with a `dataset-…` key driving every
//! Knowledge API request of upstream's `KnowledgeBaseClient`
//! (tests/python/dify_knowledge_check.py; dify-client 0.1.10 on PyPI has
//! no such class, see the script), and OpenAI's Python SDK calling
//! `/v1/embeddings` with an app key (tests/python/openai_embeddings_check.py).
//! What the Dify checker saw is cross-checked through the HTTP API.
//! Dify's Node SDK (npm dify-client 2.3.2, its newest) has no knowledge
//! client, so there is no Node checker here.
//! A venv without the pinned `openai` fails under CI and prints a SKIP
//! line otherwise (scripts/setup.sh installs it).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::process::Command;

use edgeai_tests::sdk::run_checker;
use edgeai_tests::{paths, DaemonBuilder};
use serde_json::json;

#[test]
fn dify_python_sdk_drives_the_knowledge_api() {
    let d = DaemonBuilder::new().with_embedder().start();
    let (_, key) = d.admin().create_dataset_key();
    let files = d.dir().join("sdk-files");
    std::fs::create_dir_all(&files).unwrap();
    let script = paths::repo_root().join("tests/python/dify_knowledge_check.py");
    let args = [format!("http://{}/v1", d.addr()), key.clone(), files.to_str().unwrap().to_owned()];
    let seen = run_checker(&paths::venv_python(), &script, &args);

    let c = d.client().with_key(&key);
    let deleted = seen["deleted_dataset_id"].as_str().unwrap();
    c.get(&format!("/v1/datasets/{deleted}")).expect_dify_error(404, "not_found");
    let kept = seen["kept_dataset_id"].as_str().unwrap();
    let docs = c.get(&format!("/v1/datasets/{kept}/documents")).expect_json(200);
    let data = docs["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{docs}");
    assert_eq!(data[0]["id"], seen["kept_document_id"], "{docs}");
    assert_eq!(data[0]["indexing_status"], "completed", "{docs}");
    let doc = seen["kept_document_id"].as_str().unwrap();
    let segs = c.get(&format!("/v1/datasets/{kept}/documents/{doc}/segments")).expect_json(200);
    let mut ids: Vec<&str> = segs["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let want: Vec<&str> = seen["kept_segment_ids"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(!want.is_empty(), "{seen}");
    assert_eq!(ids, want, "{segs}");
    let body = json!({"query": "belt tension", "retrieval_model": {"search_method": "semantic_search", "top_k": 1,
        "reranking_enable": false, "score_threshold_enabled": false}});
    let hits = c.post_json(&format!("/v1/datasets/{kept}/retrieve"), &body).expect_json(200);
    assert_eq!(hits["records"][0]["segment"]["document_id"], seen["kept_document_id"], "{hits}");
}

/// Whether the venv's Python imports the `openai` package.
fn venv_has_openai() -> bool {
    let out = Command::new(paths::venv_python()).args(["-c", "import openai"]).output().unwrap();
    out.status.success()
}

#[test]
fn openai_python_sdk_embeds_with_an_app_key() {
    if !venv_has_openai() {
        assert!(std::env::var_os("CI").is_none(), "the venv lacks the pinned openai package under CI; run scripts/setup.sh");
        eprintln!("SKIP openai_python_sdk_embeds_with_an_app_key: the venv has no `openai` package (run scripts/setup.sh)");
        return;
    }
    let d = DaemonBuilder::new().with_embedder().start();
    let script = paths::repo_root().join("tests/python/openai_embeddings_check.py");
    let args = [format!("http://{}/v1", d.addr()), d.key().to_owned(), "multilingual-e5-small".to_owned()];
    let seen = run_checker(&paths::venv_python(), &script, &args);
    assert!(seen["sdk_version"].as_str().is_some_and(|v| !v.is_empty()), "{seen}");
}
