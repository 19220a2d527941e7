//! Knowledge bases end to end against the real daemon, the real embedding
//! model (multilingual-e5-small) and real SQLite: Dify's datasets API with
//! a `dataset-…` key (create, ingest by text and by file, indexing status,
//! retrieve by meaning, by words and both, in English and Chinese), a PDF
//! made by the tests (text layer and none), delete and re-ingest, kill -9
//! in the middle of an ingestion, every bad input with its Dify code, the
//! RAG chatflow answering with `retriever_resources`, and `/v1/embeddings`.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::{Duration, Instant};

use edgeai_tests::multipart::{field, file, post_form};
use edgeai_tests::{paths, pdf, Client, Daemon, DaemonBuilder};
use serde_json::{json, Value};

const UNKNOWN: &str = "3f0e8a52-9a5c-4c1e-8f43-2f3b8d3c9e11";

/// A daemon with the embedding model and a client holding a dataset key.
fn start(b: DaemonBuilder) -> (Daemon, Client) {
    let d = b.with_embedder().start();
    let (_, key) = d.admin().create_dataset_key();
    let c = d.client().with_key(&key);
    (d, c)
}

fn create_dataset(c: &Client, name: &str) -> String {
    let v = c.post_json("/v1/datasets", &json!({"name": name, "indexing_technique": "high_quality"})).expect_json(200);
    v["id"].as_str().unwrap().to_owned()
}

/// `create-by-text`; returns (document id, batch).
fn add_text(c: &Client, ds: &str, name: &str, text: &str) -> (String, String) {
    let body = json!({"name": name, "text": text, "indexing_technique": "high_quality", "process_rule": {"mode": "automatic"}});
    let v = c.post_json(&format!("/v1/datasets/{ds}/document/create-by-text"), &body).expect_json(200);
    assert_eq!(v["document"]["indexing_status"], "waiting", "{v}");
    (v["document"]["id"].as_str().unwrap().to_owned(), v["batch"].as_str().unwrap().to_owned())
}

/// `create-by-file` with a file part; returns the answer.
fn add_file(c: &Client, ds: &str, name: &str, mime: &str, bytes: &[u8]) -> edgeai_tests::Response {
    let data = r#"{"indexing_technique": "high_quality", "process_rule": {"mode": "automatic"}}"#;
    post_form(c, &format!("/v1/datasets/{ds}/document/create-by-file"), &[file("file", name, mime, bytes), field("data", data)])
}

/// Polls a batch's indexing status until every document has finished
/// (completed or error); returns the last status list.
fn wait_indexed(c: &Client, ds: &str, batch: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = c.get(&format!("/v1/datasets/{ds}/documents/{batch}/indexing-status")).expect_json(200);
        let data = v["data"].as_array().unwrap().clone();
        if data.iter().all(|d| d["indexing_status"] == "completed" || d["indexing_status"] == "error") {
            return data;
        }
        assert!(Instant::now() < deadline, "batch {batch} still indexing: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn retrieve(c: &Client, ds: &str, query: &str, method: &str) -> Vec<Value> {
    let body = json!({"query": query, "retrieval_model": {"search_method": method, "top_k": 3, "reranking_enable": false,
        "score_threshold_enabled": false, "weights": {"vector_setting": {"vector_weight": 0.7}, "keyword_setting": {"keyword_weight": 0.3}}}});
    let v = c.post_json(&format!("/v1/datasets/{ds}/retrieve"), &body).expect_json(200);
    assert_eq!(v["query"]["content"], query);
    v["records"].as_array().unwrap().clone()
}

fn contents(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| r["segment"]["content"].as_str().unwrap_or("").to_owned()).collect()
}

const PLC: &str = "To clear a PLC alarm, first remove the cause, then press the ACK button on the HMI alarm page, then press RESET on the operator panel.";
const BELT: &str = "Check the conveyor belt tension every week: it should deflect 15 to 20 mm under a 5 kg load.";
const ZH: &str = "空气滤芯每运行2000小时更换一次。当控制面板显示滤芯压差高时，要提前更换。";

#[test]
fn documents_are_indexed_and_found_by_meaning_words_and_both_in_english_and_chinese() {
    let (d, c) = start(DaemonBuilder::new());
    let ds = create_dataset(&c, "manuals");
    let (plc, b1) = add_text(&c, &ds, "plc.txt", PLC);
    let (_, b2) = add_text(&c, &ds, "belt.txt", BELT);
    let r = add_file(&c, &ds, "filter.md", "text/markdown", ZH.as_bytes());
    let v = r.expect_json(200);
    let b3 = v["batch"].as_str().unwrap().to_owned();
    assert_eq!(v["document"]["name"], "filter.md");
    for b in [&b1, &b2, &b3] {
        let st = wait_indexed(&c, &ds, b);
        assert_eq!(st[0]["indexing_status"], "completed", "{st:?}");
        assert!(st[0]["completed_segments"].as_i64().unwrap() >= 1, "{st:?}");
        assert_eq!(st[0]["completed_segments"], st[0]["total_segments"]);
    }
    // By meaning: a paraphrase with no word of the answer in common but "alarm".
    let sem = retrieve(&c, &ds, "how do I get rid of the alarm on the controller", "semantic_search");
    assert_eq!(contents(&sem)[0], PLC, "{sem:?}");
    assert_eq!(sem[0]["segment"]["document"]["name"], "plc.txt");
    let s0 = sem[0]["score"].as_f64().unwrap();
    assert!(s0 > 0.0 && s0 <= 1.0 && s0 >= sem[1]["score"].as_f64().unwrap(), "{sem:?}");
    // Chinese by meaning, and across languages.
    assert_eq!(contents(&retrieve(&c, &ds, "空压机的过滤器多久换", "semantic_search"))[0], ZH);
    assert_eq!(contents(&retrieve(&c, &ds, "how often to replace the air filter", "semantic_search"))[0], ZH);
    // By words: a Chinese substring of two characters, and an English word.
    let ft = retrieve(&c, &ds, "滤芯", "full_text_search");
    assert_eq!(contents(&ft), vec![ZH.to_owned()], "only the Chinese document has 滤芯");
    assert_eq!(contents(&retrieve(&c, &ds, "tension", "full_text_search")), vec![BELT.to_owned()]);
    assert!(retrieve(&c, &ds, "zebra", "full_text_search").is_empty());
    // Both.
    let hy = retrieve(&c, &ds, "ACK button", "hybrid_search");
    assert_eq!(contents(&hy)[0], PLC);
    // The document and its segments through the API.
    let doc = c.get(&format!("/v1/datasets/{ds}/documents/{plc}")).expect_json(200);
    assert_eq!(doc["indexing_status"], "completed", "{doc}");
    let segs = c.get(&format!("/v1/datasets/{ds}/documents/{plc}/segments")).expect_json(200);
    assert_eq!(segs["data"][0]["content"], PLC, "{segs}");
    let list = c.get(&format!("/v1/datasets/{ds}/documents")).expect_json(200);
    assert_eq!(list["total"], 3, "{list}");
    // A dataset records the embedding model it was indexed with.
    let info = c.get(&format!("/v1/datasets/{ds}")).expect_json(200);
    assert!(info["embedding_model"].as_str().unwrap_or("").starts_with("multilingual-e5-small"), "{info}");
    drop(d);
}

#[test]
fn a_deleted_document_is_gone_from_search_and_comes_back_when_ingested_again() {
    let (_d, c) = start(DaemonBuilder::new());
    let ds = create_dataset(&c, "again");
    let (doc, b) = add_text(&c, &ds, "plc.txt", PLC);
    wait_indexed(&c, &ds, &b);
    add_text(&c, &ds, "belt.txt", BELT);
    assert_eq!(contents(&retrieve(&c, &ds, "ACK button", "hybrid_search"))[0], PLC);
    let r = c.request("DELETE", &format!("/v1/datasets/{ds}/documents/{doc}"), &[], None);
    assert_eq!(r.status, 204, "{}", r.text());
    for method in ["semantic_search", "full_text_search", "hybrid_search"] {
        assert!(!contents(&retrieve(&c, &ds, "ACK button alarm", method)).contains(&PLC.to_owned()), "{method}");
    }
    c.get(&format!("/v1/datasets/{ds}/documents/{doc}")).expect_dify_error(404, "not_found");
    let (_, b) = add_text(&c, &ds, "plc.txt", PLC);
    wait_indexed(&c, &ds, &b);
    assert_eq!(contents(&retrieve(&c, &ds, "ACK button", "semantic_search"))[0], PLC);
}

#[test]
fn pdfs_are_read_by_their_text_layer_and_one_without_goes_to_error() {
    let (_d, c) = start(DaemonBuilder::new());
    let ds = create_dataset(&c, "pdfs");
    let text = pdf::text_pdf(&["Inverter fault F0002 means overvoltage while braking.", "Lengthen the ramp-down time."]);
    let b = add_file(&c, &ds, "inverter.pdf", "application/pdf", &text).expect_json(200)["batch"].as_str().unwrap().to_owned();
    assert_eq!(wait_indexed(&c, &ds, &b)[0]["indexing_status"], "completed");
    let found = contents(&retrieve(&c, &ds, "overvoltage", "full_text_search"));
    assert!(found.first().is_some_and(|s| s.contains("F0002")), "{found:?}");
    let zh = pdf::cjk_pdf("变频器过电压故障");
    let b = add_file(&c, &ds, "zh.pdf", "application/pdf", &zh).expect_json(200)["batch"].as_str().unwrap().to_owned();
    assert_eq!(wait_indexed(&c, &ds, &b)[0]["indexing_status"], "completed");
    assert!(contents(&retrieve(&c, &ds, "过电压", "full_text_search")).iter().any(|s| s.contains("过电压")));
    let scan = pdf::image_only_pdf();
    let b = add_file(&c, &ds, "scan.pdf", "application/pdf", &scan).expect_json(200)["batch"].as_str().unwrap().to_owned();
    let st = wait_indexed(&c, &ds, &b);
    assert_eq!(st[0]["indexing_status"], "error", "{st:?}");
    assert!(st[0]["error"].as_str().unwrap_or("").contains("text layer"), "{st:?}");
}

#[test]
fn bad_input_gets_difys_error_and_changes_nothing() {
    let (d, c) = start(DaemonBuilder::new().set("knowledge.max_file_bytes", 4096));
    let ds = create_dataset(&c, "strict");
    let base = format!("/v1/datasets/{ds}/document/create-by-file");
    let data = field("data", r#"{"indexing_technique": "high_quality"}"#);
    post_form(&c, &base, &[file("file", "empty.txt", "text/plain", b""), field("data", "{}")]).expect_dify_error(400, "empty_file");
    post_form(&c, &base, &[file("file", "tool.exe", "application/octet-stream", b"MZ\x90\x00")])
        .expect_dify_error(415, "unsupported_file_type");
    post_form(&c, &base, &[file("file", "big.txt", "text/plain", &vec![b'a'; 8192])]).expect_dify_error(413, "file_too_large");
    post_form(&c, &base, &[data]).expect_dify_error(400, "no_file_uploaded");
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    post_form(&c, &base, &[file("file", "garbage.txt", "text/plain", &garbage)]).expect_dify_error(400, "invalid_param");
    post_form(&c, &base, &[file("file", "fake.pdf", "application/pdf", b"not a pdf at all")]).expect_dify_error(400, "invalid_param");
    // A path in the file name: only its last component is kept.
    let v = post_form(&c, &base, &[file("file", "../../etc/passwd.txt", "text/plain", b"root is not here")]).expect_json(200);
    assert_eq!(v["document"]["name"], "passwd.txt");
    // Unknown dataset, unknown document.
    c.post_json(&format!("/v1/datasets/{UNKNOWN}/document/create-by-text"), &json!({"name": "a", "text": "b"}))
        .expect_dify_error(404, "not_found");
    c.get(&format!("/v1/datasets/{ds}/documents/{UNKNOWN}")).expect_dify_error(404, "not_found");
    c.post_json(&format!("/v1/datasets/{UNKNOWN}/retrieve"), &json!({"query": "x"})).expect_dify_error(404, "not_found");
    // Bad bodies.
    c.post_json("/v1/datasets", &json!({"name": ""})).expect_dify_error(400, "invalid_param");
    c.post_json("/v1/datasets", &json!({"name": "strict"})).expect_dify_error(409, "dataset_name_duplicate");
    c.post_json(&format!("/v1/datasets/{ds}/document/create-by-text"), &json!({"name": "a"})).expect_dify_error(400, "invalid_param");
    c.post_json(&format!("/v1/datasets/{ds}/retrieve"), &json!({"query": "x", "retrieval_model": {"search_method": "magic"}}))
        .expect_dify_error(400, "invalid_param");
    c.post_json(&format!("/v1/datasets/{ds}/retrieve"), &json!({"query": ""})).expect_dify_error(400, "invalid_param");
    let rule = json!({"name": "a", "text": "b", "process_rule": {"mode": "custom", "rules": {"segmentation": {"separator": "\n", "max_tokens": 5}}}});
    c.post_json(&format!("/v1/datasets/{ds}/document/create-by-text"), &rule).expect_dify_error(400, "invalid_param");
    // Keys: none, an app key, a revoked dataset key; a dataset key on an app route.
    c.without_key().get("/v1/datasets").expect_dify_error(401, "unauthorized");
    d.client().with_key(d.key()).get("/v1/datasets").expect_dify_error(401, "unauthorized");
    let (id, key) = d.admin().create_dataset_key();
    d.admin().revoke_key(&id);
    d.client().with_key(&key).get("/v1/datasets").expect_dify_error(401, "unauthorized");
    c.post_json("/v1/chat-messages", &json!({"query": "hi", "inputs": {}, "user": "u"})).expect_dify_error(401, "unauthorized");
    // Nothing was added but the one good document.
    let list = c.get(&format!("/v1/datasets/{ds}/documents")).expect_json(200);
    assert_eq!(list["total"], 1, "{list}");
    let all = c.get("/v1/datasets").expect_json(200);
    assert_eq!(all["total"], 1, "{all}");
}

#[test]
fn a_kill_during_ingestion_leaves_nothing_half_visible_and_the_document_is_indexed_after_restart() {
    // One segment embedded per batch, each batch slowed, so the kill lands mid-document.
    let b = DaemonBuilder::new().set("knowledge.embed_batch", 1).failpoint("knowledge-embed-batch", "sleep(400)");
    let mut d = b.with_embedder().start();
    let (_, key) = d.admin().create_dataset_key();
    let c = d.client().with_key(&key);
    let ds = create_dataset(&c, "crash");
    let sections: Vec<String> =
        (1..=12).map(|i| format!("Section {i}: valve V{i} is opened with key K{i} before the pump P{i} starts.")).collect();
    let text = sections.join("\n\n");
    let body = json!({"name": "valves.txt", "text": text, "process_rule": {"mode": "custom",
        "rules": {"pre_processing_rules": [], "segmentation": {"separator": "\n\n", "max_tokens": 50, "chunk_overlap": 0}}}});
    let v = c.post_json(&format!("/v1/datasets/{ds}/document/create-by-text"), &body).expect_json(200);
    let batch = v["batch"].as_str().unwrap().to_owned();
    // Wait until some, not all, segments are embedded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = c.get(&format!("/v1/datasets/{ds}/documents/{batch}/indexing-status")).expect_json(200);
        let done = st["data"][0]["completed_segments"].as_i64().unwrap_or(0);
        if st["data"][0]["indexing_status"] == "indexing" && done >= 2 {
            assert!(done < 12, "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "never saw the document indexing: {st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Half-way through, search shows none of it.
    for method in ["semantic_search", "full_text_search", "hybrid_search"] {
        assert!(retrieve(&c, &ds, "valve V1 key K1", method).is_empty(), "{method}: a half-indexed document is visible");
    }
    d.kill9();
    d.start_again();
    // The same state; a new TCP port.
    let c = d.client().with_key(&key);
    let st = wait_indexed(&c, &ds, &batch);
    assert_eq!(st[0]["indexing_status"], "completed", "{st:?}");
    assert_eq!(st[0]["total_segments"], 12, "{st:?}");
    let segs = c.get(&format!("/v1/datasets/{ds}/documents/{}/segments?limit=100", v["document"]["id"].as_str().unwrap())).expect_json(200);
    assert_eq!(segs["total"], 12, "no segment twice after the resume: {segs}");
    let found = contents(&retrieve(&c, &ds, "valve V7 key K7", "full_text_search"));
    assert!(found.first().is_some_and(|s| s.contains("V7")), "{found:?}");
    assert!(d.logs_with_message("indexing a document a restart interrupted").len() == 1, "{}", d.dump_logs());
}

#[test]
fn the_rag_chatflow_answers_with_the_segments_it_used() {
    let (d, c) = start(DaemonBuilder::new());
    let ds = create_dataset(&c, "plant-manuals");
    let (_, b) = add_text(&c, &ds, "plc.txt", PLC);
    wait_indexed(&c, &ds, &b);
    // The demo app names the dataset by its local name; a Dify id must be mapped.
    let app = paths::repo_root().join("configs/rag-chatflow.yml");
    let out = d.ctl(&["apps", "import", app.to_str().unwrap(), "--id", "rag"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let fixture = paths::repo_root().join("tests/fixtures/dsl/knowledge.yml");
    let out = d.ctl(&["apps", "import", fixture.to_str().unwrap(), "--id", "kr"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not on this gateway"));
    let map = "6f1c0a3e-0000-4000-8000-00000000aaaa=plant-manuals";
    let out = d.ctl(&["apps", "import", fixture.to_str().unwrap(), "--id", "kr", "--dataset", map]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = d.ctl(&["apps", "import", fixture.to_str().unwrap(), "--id", "kr2", "--dataset", "6f1c=nothing-here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no local dataset has the id or name"));

    let (_, key) = d.admin().create_key("rag");
    let rag = d.client().with_key(&key);
    let q = json!({"query": "How do I clear the PLC alarm?", "inputs": {}, "user": "op", "response_mode": "blocking"});
    let v = rag.post_json("/v1/chat-messages", &q).expect_json(200);
    let rr = v["metadata"]["retriever_resources"].as_array().unwrap();
    assert_eq!(rr.len(), 1, "{v}");
    assert_eq!(rr[0]["content"], PLC);
    assert_eq!(rr[0]["dataset_id"], ds.as_str());
    assert_eq!(rr[0]["document_name"], "plc.txt");
    assert_eq!(rr[0]["position"], 1);
    assert!(rr[0]["score"].as_f64().unwrap() > 0.5, "{v}");
    assert!(!v["answer"].as_str().unwrap().is_empty());
    // Streaming: message_end carries them too.
    let mut q = q;
    q["response_mode"] = json!("streaming");
    let mut sse = rag.post_json_streaming("/v1/chat-messages", &q).into_sse();
    let mut end = None;
    while let Some(ev) = sse.next_event().unwrap() {
        if let Some(j) = ev.json().filter(|j| j["event"] == "message_end") {
            end = Some(j);
        }
    }
    let end = end.expect("message_end");
    assert_eq!(end["metadata"]["retriever_resources"][0]["segment_id"], rr[0]["segment_id"], "{end}");
    // The workflow fixture returns the node's result as Dify shapes it.
    let (_, key) = d.admin().create_key("kr");
    let wf = d.client().with_key(&key);
    let v = wf
        .post_json("/v1/workflows/run", &json!({"inputs": {"query": "ACK button"}, "user": "op", "response_mode": "blocking"}))
        .expect_json(200);
    let result = &v["data"]["outputs"]["result"];
    assert_eq!(result[0]["content"], PLC, "{v}");
    assert_eq!(result[0]["metadata"]["_source"], "knowledge");
    assert_eq!(result[0]["title"], "plc.txt");
    // A dataset an app searches is not deleted (as Dify), and stays whole.
    let r = c.request("DELETE", &format!("/v1/datasets/{ds}"), &[], None);
    r.expect_dify_error(409, "dataset_in_use");
    assert_eq!(c.get(&format!("/v1/datasets/{ds}/documents")).expect_json(200)["total"], 1);
}

#[test]
fn embeddings_answer_in_openais_shape() {
    let (d, _) = start(DaemonBuilder::new());
    let c = d.client().with_key(d.key());
    let v = c
        .post_json("/v1/embeddings", &json!({"input": ["query: PLC alarm", "passage: 报警复位"], "model": "multilingual-e5-small"}))
        .expect_json(200);
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let e: Vec<f64> = data[0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(e.len(), 384);
    let norm: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 2, "{v}");
    let r = c.post_json("/v1/embeddings", &json!({"input": [], "model": "m"}));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = c.post_json("/v1/embeddings", &json!({"input": "x", "model": "m", "dimensions": 512}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{}", r.text());
}

#[test]
fn another_embedding_model_needs_a_reindex_and_edgeaictl_does_it() {
    let b = DaemonBuilder::new();
    // The same weights under another name: another file, so another model id.
    let copy = b.dir().join("e5-copy.gguf");
    edgeai_tests::gguf::rewrite(&paths::embed_model(), &copy, &[("general.name", edgeai_tests::gguf::MetaValue::Str("e5-copy".into()))])
        .unwrap();
    let (mut d, c) = start(b);
    let ds = create_dataset(&c, "models");
    let (_, batch) = add_text(&c, &ds, "plc.txt", PLC);
    wait_indexed(&c, &ds, &batch);
    d.edit_config(|t| {
        t["embedding"]["path"] = toml::Value::String(copy.display().to_string());
    });
    d.restart();
    let (_, key) = d.admin().create_dataset_key();
    let c = d.client().with_key(&key);
    let body = json!({"query": "ACK button", "retrieval_model": {"search_method": "semantic_search", "top_k": 3}});
    let e = c.post_json(&format!("/v1/datasets/{ds}/retrieve"), &body).expect_dify_error(409, "embedding_model_mismatch");
    assert!(e["message"].as_str().unwrap().contains("edgeaictl datasets reindex"), "{e}");
    assert_eq!(contents(&retrieve(&c, &ds, "ACK button", "full_text_search")), vec![PLC.to_owned()], "full text needs no vectors");
    let out = d.ctl(&["--json", "datasets", "reindex", "models"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let batch = answer["batches"][0].as_str().unwrap();
    assert_eq!(wait_indexed(&c, &ds, batch)[0]["indexing_status"], "completed");
    assert_eq!(contents(&retrieve(&c, &ds, "how do I get rid of the alarm", "semantic_search"))[0], PLC);
    let info = c.get(&format!("/v1/datasets/{ds}")).expect_json(200);
    assert!(info["embedding_model"].as_str().unwrap().starts_with("e5-copy@"), "{info}");
    // A key holder has no such route.
    c.post_json(&format!("/v1/datasets/{ds}/reindex"), &json!({})).expect_dify_error(404, "not_found");
}

#[test]
fn a_chat_app_with_datasets_answers_from_them_and_cites_them() {
    let (d, c) = start(DaemonBuilder::new());
    let ds = create_dataset(&c, "chat-kb");
    let (_, b) = add_text(&c, &ds, "plc.txt", PLC);
    wait_indexed(&c, &ds, &b);
    add_text(&c, &ds, "belt.txt", BELT);
    let yaml = concat!(
        "app: {name: Manual chat, mode: chat}\nkind: app\nversion: 0.3.1\nmodel_config:\n",
        "  pre_prompt: Answer briefly.\n",
        "  model: {provider: openai, name: gpt-4o-mini, mode: chat, completion_params: {max_tokens: 16, temperature: 0}}\n",
        "  dataset_configs:\n    retrieval_model: multiple\n    top_k: 1\n",
        "    datasets: {datasets: [{dataset: {enabled: true, id: 0a1b2c3d-dify}}]}\n",
    );
    let file = d.dir().join("chat-kb.yml");
    std::fs::write(&file, yaml).unwrap();
    let out = d.ctl(&["apps", "import", file.to_str().unwrap(), "--id", "mchat"]);
    assert_eq!(out.status.code(), Some(1), "an unmapped dataset fails the import");
    assert!(String::from_utf8_lossy(&out.stderr).contains("model_config.dataset_configs"));
    let out = d.ctl(&["apps", "import", file.to_str().unwrap(), "--id", "mchat", "--dataset", "0a1b2c3d-dify=chat-kb"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, key) = d.admin().create_key("mchat");
    let app = d.client().with_key(&key);
    let q = json!({"query": "what do I press to acknowledge the alarm", "inputs": {}, "user": "op", "response_mode": "blocking"});
    let v = app.post_json("/v1/chat-messages", &q).expect_json(200);
    let rr = v["metadata"]["retriever_resources"].as_array().unwrap();
    assert_eq!(rr.len(), 1, "top_k 1: {v}");
    assert_eq!(rr[0]["content"], PLC);
    assert_eq!(rr[0]["document_name"], "plc.txt");
    assert_eq!(rr[0]["retriever_from"], "api");
    let mut q = q;
    q["response_mode"] = json!("streaming");
    let mut sse = app.post_json_streaming("/v1/chat-messages", &q).into_sse();
    let mut end = None;
    while let Some(ev) = sse.next_event().unwrap() {
        if let Some(j) = ev.json().filter(|j| j["event"] == "message_end") {
            end = Some(j);
        }
    }
    assert_eq!(end.expect("message_end")["metadata"]["retriever_resources"][0]["content"], PLC);
    // The chat app searches the dataset: it is not deleted.
    c.request("DELETE", &format!("/v1/datasets/{ds}"), &[], None).expect_dify_error(409, "dataset_in_use");
}

#[test]
fn an_upstream_embedding_model_can_index_and_search() {
    use edgeai_tests::peer::{Peer, Reply};
    let one = |v: [f32; 4]| Reply::Json {
        code: 200,
        body: json!({"object": "list", "model": "bge-m3", "data": [{"object": "embedding", "index": 0, "embedding": v}], "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
    };
    let peer = Peer::start(one([0.5, 0.5, 0.5, 0.5]));
    let d = DaemonBuilder::new().set("upstream.url", peer.openai_url()).set("embedding.upstream_model", "bge-m3").start();
    let (_, key) = d.admin().create_dataset_key();
    let c = d.client().with_key(&key);
    let ds = create_dataset(&c, "remote");
    let (_, b) = add_text(&c, &ds, "plc.txt", PLC);
    assert_eq!(wait_indexed(&c, &ds, &b)[0]["indexing_status"], "completed");
    let info = c.get(&format!("/v1/datasets/{ds}")).expect_json(200);
    assert_eq!(info["embedding_model"], "upstream:bge-m3", "{info}");
    assert_eq!(contents(&retrieve(&c, &ds, "acknowledge", "semantic_search")), vec![PLC.to_owned()]);
    let sent: Vec<Value> = peer.received().iter().filter(|r| r.path.ends_with("/embeddings")).map(|r| r.json()).collect();
    assert_eq!(sent[0]["model"], "bge-m3");
    assert_eq!(sent[0]["input"][0], format!("passage: {PLC}"), "{sent:?}");
    assert_eq!(sent.last().unwrap()["input"][0], "query: acknowledge");
    // The upstream failing: the document goes to error with the reason.
    peer.set_default(Reply::Status { code: 500, retry_after: None });
    let (_, b) = add_text(&c, &ds, "belt.txt", BELT);
    let st = wait_indexed(&c, &ds, &b);
    assert_eq!(st[0]["indexing_status"], "error", "{st:?}");
    assert!(st[0]["error"].as_str().unwrap_or("").contains("upstream"), "{st:?}");
    // And a search that needs it answers 503, with full text still there.
    let body = json!({"query": "ACK", "retrieval_model": {"search_method": "semantic_search"}});
    c.post_json(&format!("/v1/datasets/{ds}/retrieve"), &body).expect_dify_error(503, "provider_not_initialize");
    assert_eq!(contents(&retrieve(&c, &ds, "ACK", "full_text_search")), vec![PLC.to_owned()]);
}
