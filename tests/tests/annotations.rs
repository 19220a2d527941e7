//! Dify's annotation replies end to end, with the real embedding model and
//! the real chat model: `/v1/apps/annotations` CRUD with its bad inputs,
//! the `annotation-reply/{action}` jobs and their status, a paraphrased
//! query answered with the curated answer (blocking and streaming, with
//! `metadata.annotation_reply`, stored in the conversation, the hit
//! counted, no tokens generated), an unrelated query answered by the model,
//! and the model answering again once replies are disabled.
//!
//! Needs the embedding model (scripts/setup.sh builds it into .cache/models).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::{Duration, Instant};

use edgeai_tests::{is_uuid, Client, Daemon, DaemonBuilder};
use serde_json::{json, Value};

const QUESTION: &str = "How do I clear the PLC alarm on line 3?";
/// A paraphrase of [`QUESTION`] (no shared sentence).
const PARAPHRASE: &str = "how can I reset the line 3 PLC alarm";
/// Text the chat model would never write by itself.
const CURATED: &str = "Hold RESET on panel P3 for 3 s, then acknowledge on the HMI. [curated-7f3a]";
const THRESHOLD: f64 = 0.9;

fn put(c: &Client, path: &str, body: &Value) -> edgeai_tests::http::Response {
    c.request("PUT", path, &[], Some(body.to_string().as_bytes()))
}

fn reply_body(threshold: f64) -> Value {
    json!({"score_threshold": threshold, "embedding_provider_name": "local", "embedding_model_name": "multilingual-e5-small"})
}

/// Runs an annotation-reply job and waits (bounded) for it to complete.
fn run_job(d: &Daemon, c: &Client, action: &str, threshold: f64) {
    let started = c.post_json(&format!("/v1/apps/annotation-reply/{action}"), &reply_body(threshold)).expect_json(200);
    let job = started["job_id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&job), "{started}");
    assert!(matches!(started["job_status"].as_str(), Some("waiting" | "processing")), "{started}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = c.get(&format!("/v1/apps/annotation-reply/{action}/status/{job}")).expect_json(200);
        assert_eq!(s["job_id"], job.as_str());
        match s["job_status"].as_str().unwrap() {
            "completed" => {
                assert_eq!(s["error_msg"], "");
                return;
            }
            "waiting" | "processing" => {}
            other => panic!("{action} job ended {other}: {s}\n{}", d.dump_logs()),
        }
        assert!(Instant::now() < deadline, "{action} job still {s} after 120 s\n{}", d.dump_logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn list(c: &Client, query: &str) -> Value {
    c.get(&format!("/v1/apps/annotations{query}")).expect_json(200)
}

#[test]
fn annotation_replies_answer_a_paraphrase_with_the_curated_answer() {
    let mut d = DaemonBuilder::new().with_embedder().start();
    let c = d.client();
    let (_, other_key) = d.admin().create_key("summarise");
    let other = c.with_key(&other_key);

    // --- CRUD and its bad inputs ---
    let created = c.post_json("/v1/apps/annotations", &json!({"question": QUESTION, "answer": CURATED})).expect_json(200);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&id), "{created}");
    assert_eq!(
        (created["question"].as_str(), created["answer"].as_str(), created["hit_count"].as_i64()),
        (Some(QUESTION), Some(CURATED), Some(0))
    );
    assert!(created["created_at"].as_i64().unwrap() > 0, "{created}");
    let temp =
        c.post_json("/v1/apps/annotations", &json!({"question": "Where is the spare fuse?", "answer": "Cabinet B."})).expect_json(200);
    let temp_id = temp["id"].as_str().unwrap();

    for bad in [
        json!({"answer": "a"}),
        json!({"question": "q"}),
        json!({"question": "", "answer": "a"}),
        json!({"question": "  ", "answer": "a"}),
        json!({"question": 7, "answer": "a"}),
    ] {
        c.post_json("/v1/apps/annotations", &bad).expect_dify_error(400, "invalid_param");
    }
    c.request("POST", "/v1/apps/annotations", &[], Some(b"{not json")).expect_dify_error(400, "bad_request");
    let page = list(&c, "?page=1&limit=20");
    assert_eq!(
        (page["total"].as_i64(), page["page"].as_i64(), page["limit"].as_i64(), page["has_more"].as_bool()),
        (Some(2), Some(1), Some(20), Some(false)),
        "bad input stored something: {page}"
    );
    let page = list(&c, "?limit=1");
    assert_eq!((page["data"].as_array().unwrap().len(), page["has_more"].as_bool()), (1, Some(true)), "{page}");
    let found = list(&c, "?keyword=fuse");
    assert_eq!((found["total"].as_i64(), found["data"][0]["id"].as_str()), (Some(1), Some(temp_id)), "{found}");
    for q in ["?page=0", "?limit=0", "?limit=101", "?page=x"] {
        c.get(&format!("/v1/apps/annotations{q}")).expect_dify_error(400, "invalid_param");
    }

    let unknown = "00000000-0000-4000-8000-000000000000";
    put(&c, &format!("/v1/apps/annotations/{unknown}"), &json!({"question": "q", "answer": "a"})).expect_dify_error(404, "not_found");
    c.request("DELETE", &format!("/v1/apps/annotations/{unknown}"), &[], None).expect_dify_error(404, "not_found");
    c.request("DELETE", "/v1/apps/annotations/not-a-uuid", &[], None).expect_dify_error(404, "not_found");
    put(&c, &format!("/v1/apps/annotations/{temp_id}"), &json!({"question": "q"})).expect_dify_error(400, "invalid_param");
    // Another app's key sees none of this app's annotations.
    put(&other, &format!("/v1/apps/annotations/{temp_id}"), &json!({"question": "q", "answer": "a"})).expect_dify_error(404, "not_found");
    other.request("DELETE", &format!("/v1/apps/annotations/{temp_id}"), &[], None).expect_dify_error(404, "not_found");
    assert_eq!(list(&other, "")["total"], 0);
    c.without_key().get("/v1/apps/annotations").expect_dify_error(401, "unauthorized");

    let updated = put(
        &c,
        &format!("/v1/apps/annotations/{temp_id}"),
        &json!({"question": "Where is the spare fuse kept?", "answer": "Cabinet B, top shelf."}),
    )
    .expect_json(200);
    assert_eq!((updated["id"].as_str(), updated["answer"].as_str()), (Some(temp_id), Some("Cabinet B, top shelf.")));
    let r = c.request("DELETE", &format!("/v1/apps/annotations/{temp_id}"), &[], None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(list(&c, "")["total"], 1);

    // --- the jobs' bad inputs ---
    c.post_json("/v1/apps/annotation-reply/toggle", &reply_body(THRESHOLD)).expect_dify_error(400, "invalid_param");
    c.post_json("/v1/apps/annotation-reply/enable", &json!({"score_threshold": THRESHOLD})).expect_dify_error(400, "invalid_param");
    c.post_json("/v1/apps/annotation-reply/enable", &reply_body(1.5)).expect_dify_error(400, "invalid_param");
    c.get(&format!("/v1/apps/annotation-reply/enable/status/{unknown}")).expect_dify_error(404, "not_found");

    // --- before enabling, the model answers ---
    let before = c.chat_blocking(PARAPHRASE, "alice", None);
    assert_ne!(before["answer"], CURATED);
    assert!(before["metadata"].get("annotation_reply").is_none(), "{before}");

    // --- enabled: a paraphrase gets the curated answer, blocking and streaming ---
    run_job(&d, &c, "enable", THRESHOLD);
    let hit = c.chat_blocking(PARAPHRASE, "alice", None);
    assert_eq!(hit["answer"], CURATED, "{hit}\n{}", d.dump_logs());
    assert_eq!(hit["metadata"]["annotation_reply"]["id"], id.as_str(), "{hit}");
    assert!(hit["metadata"]["annotation_reply"]["account"]["name"].is_string(), "{hit}");
    assert_eq!(hit["metadata"]["usage"]["completion_tokens"], 0, "the model generated: {hit}");
    let conv = hit["conversation_id"].as_str().unwrap().to_owned();
    assert!(is_uuid(&conv) && is_uuid(hit["message_id"].as_str().unwrap()), "{hit}");

    // Streaming, continuing the conversation.
    let s = c.chat_stream("How do I reset the PLC alarm of line 3?", "alice", Some(&conv));
    assert_eq!(s.status, 200);
    assert_eq!(s.answer, CURATED, "{:?}", s.events);
    let end = s.end.clone().expect("message_end");
    assert_eq!(end["metadata"]["annotation_reply"]["id"], id.as_str(), "{end}");
    assert_eq!(end["conversation_id"], conv.as_str());
    let (_, message_id, _) = s.ids();
    assert_eq!(end["message_id"], message_id.as_str());

    // Both turns are stored with the curated answer; the hits are counted.
    let msgs = c.messages("alice", &conv);
    assert_eq!(msgs.len(), 2, "{msgs:#?}");
    assert!(msgs.iter().all(|m| m["answer"] == CURATED && m["status"] == "normal"), "{msgs:#?}");
    assert_eq!(list(&c, "")["data"][0]["hit_count"], 2);

    // Settings and question vectors survive a restart.
    d.restart();
    let c = d.client();
    let again = c.chat_blocking(PARAPHRASE, "alice", None);
    assert_eq!(
        (again["answer"].as_str(), again["metadata"]["annotation_reply"]["id"].as_str()),
        (Some(CURATED), Some(id.as_str())),
        "{again}"
    );

    // Chinese: a curated question and its paraphrase.
    let zh = c
        .post_json(
            "/v1/apps/annotations",
            &json!({"question": "如何清除3号线的PLC报警？", "answer": "按住P3面板的复位键3秒。[curated-zh]"}),
        )
        .expect_json(200);
    let zh_hit = c.chat_blocking("3号线PLC报警怎么复位", "carol", None);
    assert_eq!(
        (zh_hit["answer"].as_str(), zh_hit["metadata"]["annotation_reply"]["id"].as_str()),
        (Some("按住P3面板的复位键3秒。[curated-zh]"), zh["id"].as_str()),
        "{zh_hit}\n{}",
        d.dump_logs()
    );

    // An unrelated query goes to the model.
    let unrelated = c.chat_blocking("Name three colours.", "alice", None);
    assert_ne!(unrelated["answer"], CURATED);
    assert!(unrelated["metadata"].get("annotation_reply").is_none(), "{unrelated}");
    assert!(unrelated["metadata"]["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{unrelated}");

    // An annotation added while enabled is matched at once; edits follow.
    let fuse = c
        .post_json("/v1/apps/annotations", &json!({"question": "Where is the spare fuse kept?", "answer": "Cabinet B. [curated-fuse]"}))
        .expect_json(200);
    let fuse_hit = c.chat_blocking("where do we keep the spare fuse", "bob", None);
    assert_eq!(
        (fuse_hit["answer"].as_str(), fuse_hit["metadata"]["annotation_reply"]["id"].as_str()),
        (Some("Cabinet B. [curated-fuse]"), fuse["id"].as_str()),
        "{fuse_hit}"
    );
    let fuse_id = fuse["id"].as_str().unwrap();
    put(
        &c,
        &format!("/v1/apps/annotations/{fuse_id}"),
        &json!({"question": "Where is the spare fuse kept?", "answer": "Cabinet C. [curated-fuse-2]"}),
    )
    .expect_json(200);
    assert_eq!(c.chat_blocking("where do we keep the spare fuse", "bob", None)["answer"], "Cabinet C. [curated-fuse-2]");
    let r = c.request("DELETE", &format!("/v1/apps/annotations/{fuse_id}"), &[], None);
    assert_eq!(r.status, 204);
    let gone = c.chat_blocking("where do we keep the spare fuse", "bob", None);
    assert!(gone["metadata"].get("annotation_reply").is_none(), "a deleted annotation still answers: {gone}");

    // --- disabled: the model answers again ---
    run_job(&d, &c, "disable", THRESHOLD);
    let after = c.chat_blocking(PARAPHRASE, "alice", None);
    assert_ne!(after["answer"], CURATED);
    assert!(after["metadata"].get("annotation_reply").is_none(), "{after}");
    assert!(after["metadata"]["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{after}");
}

#[test]
fn enabling_without_an_embedding_model_is_provider_not_initialize() {
    let d = DaemonBuilder::new().start();
    let c = d.client();
    // CRUD works without the model; replies cannot be enabled.
    c.post_json("/v1/apps/annotations", &json!({"question": QUESTION, "answer": CURATED})).expect_json(200);
    c.post_json("/v1/apps/annotation-reply/enable", &reply_body(THRESHOLD)).expect_dify_error(503, "provider_not_initialize");
    let answer = c.chat_blocking(QUESTION, "alice", None);
    assert_ne!(answer["answer"], CURATED);
}
