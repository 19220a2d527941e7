//! The response cache end to end (real daemon, real model, real HTTP): a
//! repeated deterministic question is answered from the cache as a normal
//! stored message with zero usage and `metadata.cache`, blocking and
//! streaming, in Dify chat and completion apps and the OpenAI API (with
//! `x-edgeai-cache`); anything the answer depends on makes a miss; flush
//! (admin API and `edgeaictl cache`), app version changes, restarts, the
//! byte budget, the TTL, non-deterministic apps, stats, metrics and bad
//! config values.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::process::Command;
use std::time::Duration;

use edgeai_tests::daemon::{app_table, set_path};
use edgeai_tests::{completion_body, paths, DaemonBuilder};
use serde_json::{json, Value};

const RELOADED: &str = "configuration reloaded; apps applied, other settings apply at restart";

fn cached() -> DaemonBuilder {
    DaemonBuilder::new().set("cache.enabled", true)
}

fn usage(v: &Value) -> (u64, u64) {
    let u = &v["metadata"]["usage"];
    (u["prompt_tokens"].as_u64().unwrap(), u["completion_tokens"].as_u64().unwrap())
}

/// Asserts a Dify answer came from the cache: the marker and zero usage.
#[track_caller]
fn assert_hit(v: &Value) {
    let c = &v["metadata"]["cache"];
    assert_eq!(c["hit"], true, "not a cache hit: {v}");
    assert_eq!(c["kind"], "exact", "{v}");
    assert!(c["created_at"].as_i64().unwrap() > 1_700_000_000, "{v}");
    assert_eq!(usage(v), (0, 0), "a hit costs no tokens: {v}");
    assert_eq!(v["metadata"]["usage"]["total_price"], "0", "{v}");
}

/// Asserts the model answered: no marker, tokens used.
#[track_caller]
fn assert_miss(v: &Value) {
    assert!(v["metadata"].get("cache").is_none(), "unexpected cache marker: {v}");
    let (p, c) = usage(v);
    assert!(p > 0 && c > 0, "the model did not answer: {v}");
}

fn stats(d: &edgeai_tests::Daemon) -> Value {
    d.admin().get("/admin/v1/cache").unwrap()
}

/// `name value` of a Prometheus text sample.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_repeated_question_is_answered_from_the_cache_like_a_real_answer() {
    let d = cached().start();
    let c = d.client();
    let q = "What is a PLC? Answer in one sentence.";

    let first = c.chat_blocking(q, "alice", None);
    assert_miss(&first);
    let answer = first["answer"].as_str().unwrap().to_owned();

    // The same question, spaced differently, in a new conversation.
    let second = c.chat_blocking("  What is a PLC?   Answer in one sentence. ", "alice", None);
    assert_hit(&second);
    assert_eq!(second["answer"], answer.as_str());
    let conv = second["conversation_id"].as_str().unwrap();
    assert_ne!(conv, first["conversation_id"].as_str().unwrap(), "a hit starts its own conversation");
    let msgs = c.messages("alice", conv);
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(msgs[0]["id"], second["message_id"]);
    assert_eq!(msgs[0]["answer"], answer.as_str());
    assert_eq!(msgs[0]["status"], "normal");
    assert_eq!(c.conversations("alice").len(), 2);

    // Streaming: the same events as a real answer, marked in message_end.
    let s = c.chat_stream(q, "bob", None);
    assert_eq!(s.status, 200);
    let names: Vec<String> = s.events.iter().map(|e| e.name()).filter(|n| n != "ping").collect();
    assert_eq!(names.last().map(String::as_str), Some("message_end"), "{names:?}");
    assert!(names[..names.len() - 1].iter().all(|n| n == "message") && names.len() >= 2, "{names:?}");
    assert_eq!(s.answer, answer);
    assert_hit(s.end.as_ref().unwrap());
    let (_, msg, bob_conv) = s.ids();
    let msgs = c.messages("bob", &bob_conv);
    assert_eq!((msgs.len(), msgs[0]["id"].as_str().unwrap()), (1, msg.as_str()));

    // Whatever the answer depends on makes a miss: the query, the history.
    assert_miss(&c.chat_blocking("What is Modbus? Answer in one sentence.", "alice", None));
    let first_conv = first["conversation_id"].as_str().unwrap();
    let follow = c.chat_blocking(q, "alice", Some(first_conv));
    assert_miss(&follow);
    // ... and the same history again is a hit.
    let s2 = c.chat_blocking("And what does the abbreviation stand for?", "carol", None);
    let carol = s2["conversation_id"].as_str().unwrap().to_owned();
    let s2b = c.chat_blocking("And what does the abbreviation stand for?", "dave", None);
    assert_hit(&s2b);
    let dave = s2b["conversation_id"].as_str().unwrap().to_owned();
    let next_carol = c.chat_blocking("Say it again.", "carol", Some(&carol));
    assert_miss(&next_carol);
    assert_hit(&c.chat_blocking("Say it again.", "dave", Some(&dave)));

    // A completion app: the inputs are part of the key.
    let (_, summarise_key) = d.admin().create_key("summarise");
    let sc = c.with_key(&summarise_key);
    let text = "Pump 3 tripped twice overnight because its bearing overheated.";
    let r1 = sc.post_json("/v1/completion-messages", &completion_body(text, "u", "blocking")).expect_json(200);
    assert_miss(&r1);
    let r2 = sc.post_json("/v1/completion-messages", &completion_body(text, "u", "blocking")).expect_json(200);
    assert_hit(&r2);
    assert_eq!(r2["answer"], r1["answer"]);
    let other = "The conveyor stopped at noon and restarted at one.";
    assert_miss(&sc.post_json("/v1/completion-messages", &completion_body(other, "u", "blocking")).expect_json(200));

    // OpenAI: a header says hit or miss; usage is zero on a hit.
    let req = json!({"model": "any", "messages": [{"role": "user", "content": "Name one colour."}]});
    let o1 = c.post_json("/v1/chat/completions", &req);
    assert_eq!(o1.header("x-edgeai-cache"), Some("miss"), "{:?}", o1.headers);
    let o1 = o1.expect_json(200);
    assert!(o1["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let o2 = c.post_json("/v1/chat/completions", &req);
    assert_eq!(o2.header("x-edgeai-cache"), Some("hit"));
    let o2 = o2.expect_json(200);
    assert_eq!(o2["choices"][0]["message"]["content"], o1["choices"][0]["message"]["content"]);
    assert_eq!(o2["usage"], json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
    assert_eq!(o2["choices"][0]["finish_reason"], o1["choices"][0]["finish_reason"]);
    // An answer cut at max_tokens is replayed as cut ("length"), not as finished.
    let cut = json!({"model": "any", "messages": [{"role": "user", "content": "Describe a factory."}], "max_tokens": 3});
    let c1 = c.post_json("/v1/chat/completions", &cut).expect_json(200);
    assert_eq!(c1["choices"][0]["finish_reason"], "length", "{c1}");
    let c2 = c.post_json("/v1/chat/completions", &cut);
    assert_eq!(c2.header("x-edgeai-cache"), Some("hit"));
    assert_eq!(c2.expect_json(200)["choices"][0]["finish_reason"], "length");
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let mut sse = c.post_json_streaming("/v1/chat/completions", &streamed).into_sse();
    assert_eq!(sse.status(), 200);
    assert_eq!(sse.header("x-edgeai-cache"), Some("hit"));
    let mut content = String::new();
    let mut done = false;
    while let Some(ev) = sse.next_event().unwrap() {
        if ev.data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        content.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert!(done);
    assert_eq!(content, o1["choices"][0]["message"]["content"].as_str().unwrap());
    // Another temperature is another request.
    let hot = json!({"model": "any", "temperature": 0.0, "max_tokens": 8, "messages": [{"role": "user", "content": "Name one colour."}]});
    assert_eq!(c.post_json("/v1/chat/completions", &hot).header("x-edgeai-cache"), Some("miss"));

    // Stats and metrics move together.
    let st = stats(&d);
    assert_eq!(st["enabled"], true);
    assert_eq!(st["hits"], 8, "{st}");
    assert_eq!(st["misses"], 10, "{st}");
    assert!(st["entries"].as_u64().unwrap() >= 9 && st["bytes"].as_u64().unwrap() > 0, "{st}");
    assert!((st["hit_rate"].as_f64().unwrap() - 8.0 / 18.0).abs() < 1e-9, "{st}");
    assert_eq!(st["max_bytes"], 64 << 20, "derived without a cgroup limit: {st}");
    let metrics = d.unix_client().without_key().get("/metrics").text();
    assert_eq!(sample(&metrics, "edgeai_cache_hits_total"), 8.0);
    assert_eq!(sample(&metrics, "edgeai_cache_misses_total"), 10.0);
    assert_eq!(sample(&metrics, "edgeai_cache_entries"), st["entries"].as_f64().unwrap());
    assert_eq!(sample(&metrics, "edgeai_cache_bytes"), st["bytes"].as_f64().unwrap());

    // edgeaictl: stats, flush one app, an unknown app.
    let out = d.ctl(&["cache", "stats"]);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.lines().any(|l| l.starts_with("hits") && l.ends_with(" 8")) && shown.contains("hit rate"), "{shown}");
    let out = d.ctl(&["cache", "stats", "--json"]);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["hits"], 8);
    let out = d.ctl(&["cache", "flush", "--app", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"), "{out:?}");
    let out = d.ctl(&["cache", "flush", "--app", "demo", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["app"], "demo");
    assert!(j["flushed"].as_u64().unwrap() >= 6, "{j}");
    assert_miss(&c.chat_blocking(q, "erin", None));
    // The other app kept its entries until the admin API flushes them all.
    assert_hit(&sc.post_json("/v1/completion-messages", &completion_body(text, "u", "blocking")).expect_json(200));
    match d.admin().delete("/admin/v1/cache?app=nope") {
        Err(edgeai_common::ClientError::Api { status, code, .. }) => assert_eq!((status, code.as_str()), (404, "not_found")),
        other => panic!("flushing an unknown app: {other:?}"),
    }
    let out = d.ctl(&["cache", "flush"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("flushed "), "{out:?}");
    assert_eq!(stats(&d)["entries"], 0);
    assert_miss(&sc.post_json("/v1/completion-messages", &completion_body(text, "u", "blocking")).expect_json(200));
    d.admin().delete("/admin/v1/cache").unwrap();
    assert_eq!(stats(&d)["entries"], 0);
    assert_miss(&sc.post_json("/v1/completion-messages", &completion_body(text, "u", "blocking")).expect_json(200));
}

#[test]
fn cached_answers_survive_a_restart_and_go_with_the_app_version() {
    let mut d = cached().start();
    let q = "What is Modbus? Answer in one sentence.";
    let first = d.client().chat_blocking(q, "alice", None);
    assert_miss(&first);
    assert_hit(&d.client().chat_blocking(q, "alice", None));

    d.restart();
    d.wait_until_model_ready(Duration::from_secs(120));
    let after = d.client().chat_blocking(q, "alice", None);
    assert_hit(&after);
    assert_eq!(after["answer"], first["answer"]);
    assert_eq!(stats(&d)["entries"], 1);

    // A new version of the app (a reload with another pre-prompt) drops its
    // answers: the question reaches the model again.
    d.edit_config(|c| set_path(app_table(c, "demo"), "pre_prompt", "You are a terse assistant. Answer briefly.".into()));
    d.sighup();
    d.wait_log_message(RELOADED, Duration::from_secs(30));
    assert_eq!(stats(&d)["entries"], 0, "the old version's answer is gone");
    assert_miss(&d.client().chat_blocking(q, "alice", None));
    assert_hit(&d.client().chat_blocking(q, "alice", None));
}

#[test]
fn the_budget_ttl_and_non_deterministic_apps() {
    let random = |id: &str| {
        let mut app = toml::Table::new();
        app.insert("id".into(), id.into());
        app.insert("name".into(), id.into());
        app.insert("mode".into(), "chat".into());
        app.insert("pre_prompt".into(), "You are a helpful assistant.".into());
        let mut params = toml::Table::new();
        params.insert("temperature".into(), 0.9.into());
        params.insert("max_tokens".into(), 8.into());
        app.insert("completion_params".into(), toml::Value::Table(params));
        app
    };
    let d = cached()
        .set("cache.max_bytes", 3000)
        .set("cache.ttl_secs", 4)
        .set("cache.apps.warm.always", true)
        .add_app(random("warm"))
        .add_app(random("random"))
        .max_tokens(8)
        .start();
    let c = d.client();

    // Not deterministic and not opted in: never cached, not even counted.
    let (_, random_key) = d.admin().create_key("random");
    let r = c.with_key(&random_key);
    assert_miss(&r.chat_blocking("Hello there.", "u", None));
    assert_miss(&r.chat_blocking("Hello there.", "u", None));
    let st = stats(&d);
    assert_eq!((st["hits"].as_u64(), st["misses"].as_u64(), st["entries"].as_u64()), (Some(0), Some(0), Some(0)), "{st}");
    // Opted in: cached although sampling is random.
    let (_, warm_key) = d.admin().create_key("warm");
    let w = c.with_key(&warm_key);
    let first = w.chat_blocking("Hello there.", "u", None);
    assert_miss(&first);
    let again = w.chat_blocking("Hello there.", "u", None);
    assert_hit(&again);
    assert_eq!(again["answer"], first["answer"]);

    // The TTL: the same question after it is a miss.
    std::thread::sleep(Duration::from_secs(5));
    assert_miss(&w.chat_blocking("Hello there.", "u", None));

    // The byte budget: more answers than fit evict the oldest.
    for i in 0..8 {
        assert_miss(&c.chat_blocking(&format!("Count to {i}."), "u", None));
    }
    let st = stats(&d);
    assert_eq!(st["max_bytes"], 3000);
    assert!(st["bytes"].as_u64().unwrap() <= 3000, "{st}");
    // Nine answers of at least 460 bytes each (key, hash, overhead): at most six fit.
    assert!(st["evictions"].as_u64().unwrap() >= 3, "{st}");
    assert_hit(&c.chat_blocking("Count to 7.", "u", None));
    assert_miss(&c.chat_blocking("Count to 0.", "u", None));
    let metrics = d.unix_client().without_key().get("/metrics").text();
    assert_eq!(sample(&metrics, "edgeai_cache_evictions_total"), stats(&d)["evictions"].as_f64().unwrap());
    assert_eq!(sample(&metrics, "edgeai_cache_max_bytes"), 3000.0);
}

#[test]
fn bad_cache_settings_are_refused_with_the_key() {
    let mut b = cached().set("cache.max_bytes", 8 << 20).set("cache.apps.demo.semantic_threshold", 0.95);
    let config = b.write_config();
    let out = Command::new(paths::edgeaid()).arg("--check-config").arg("--config").arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("response cache: 8388608 bytes, answers served for 86400s, kept in the store; demo: semantic 0.95"),
        "{stdout}"
    );

    for (key, value, says) in [
        ("cache.max_bytes", toml::Value::from(100), "at least 1024"),
        ("cache.max_bytes", toml::Value::from(-1), "between 0 and 4294967296"),
        ("cache.ttl_secs", toml::Value::from(0), "between 1 and 31536000"),
        ("cache.persist", toml::Value::from("yes"), "expected true or false"),
        ("cache.apps.demo.always", toml::Value::from(1), "expected true or false"),
        ("cache.apps.demo.semantic_threshold", toml::Value::from(1.5), "above 0 and at most 1"),
        ("cache.apps.demo.semantic_threshold", toml::Value::from(0), "above 0 and at most 1"),
        ("cache.apps.demo.semantic_threshold", toml::Value::from("high"), "above 0 and at most 1"),
        ("cache.apps.demo.alway", toml::Value::from(true), "did you mean `cache.apps.demo.always`?"),
        ("cache.size", toml::Value::from(1), "unknown key"),
    ] {
        let mut b = DaemonBuilder::new().set(key, value);
        let config = b.write_config();
        let out = Command::new(paths::edgeaid()).arg("--check-config").arg("--config").arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{key}: {out:?}");
        assert!(stderr.contains(&format!("{key}: ")) && stderr.contains(says), "{key}: {stderr}");
    }
}

const PLC: &str = "To clear a PLC alarm, first remove the cause, then press the ACK button on the HMI alarm page, then press RESET on the operator panel.";
const BELT: &str = "Check the conveyor belt tension every week: it should deflect 15 to 20 mm under a 5 kg load.";

/// Adds a text document and waits until it is indexed; returns its id.
fn add_indexed(c: &edgeai_tests::Client, ds: &str, name: &str, text: &str) -> String {
    let body = json!({"name": name, "text": text, "indexing_technique": "high_quality", "process_rule": {"mode": "automatic"}});
    let v = c.post_json(&format!("/v1/datasets/{ds}/document/create-by-text"), &body).expect_json(200);
    let (doc, batch) = (v["document"]["id"].as_str().unwrap().to_owned(), v["batch"].as_str().unwrap().to_owned());
    for _ in 0..600 {
        let v = c.get(&format!("/v1/datasets/{ds}/documents/{batch}/indexing-status")).expect_json(200);
        if v["data"].as_array().unwrap().iter().all(|d| d["indexing_status"] == "completed") {
            return doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{name} was not indexed within 120 s");
}

/// An app with a knowledge base: the segments the question finds are part
/// of the key, so a hit cites them and a dataset change that changes them
/// reaches the model again.
#[test]
fn a_dataset_change_under_the_same_question_is_a_miss() {
    let d = cached().with_embedder().start();
    let (_, dkey) = d.admin().create_dataset_key();
    let kb = d.client().with_key(&dkey);
    let ds = kb.post_json("/v1/datasets", &json!({"name": "kb", "indexing_technique": "high_quality"})).expect_json(200)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let plc = add_indexed(&kb, &ds, "plc.txt", PLC);
    let yaml = concat!(
        "app: {name: Manual chat, mode: chat}\nkind: app\nversion: 0.3.1\nmodel_config:\n",
        "  pre_prompt: Answer briefly.\n",
        "  model: {provider: openai, name: gpt-4o-mini, mode: chat, completion_params: {max_tokens: 16, temperature: 0}}\n",
        "  dataset_configs:\n    retrieval_model: multiple\n    top_k: 1\n",
        "    datasets: {datasets: [{dataset: {enabled: true, id: 0a1b2c3d-dify}}]}\n",
    );
    let file = d.dir().join("kb.yml");
    std::fs::write(&file, yaml).unwrap();
    let out = d.ctl(&["apps", "import", file.to_str().unwrap(), "--id", "mchat", "--dataset", "0a1b2c3d-dify=kb"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, key) = d.admin().create_key("mchat");
    let app = d.client().with_key(&key);
    let q = "what do I press to acknowledge the alarm";

    let first = app.chat_blocking(q, "op", None);
    assert_miss(&first);
    let second = app.chat_blocking(q, "op", None);
    assert_hit(&second);
    assert_eq!(second["answer"], first["answer"]);
    assert_eq!(second["metadata"]["retriever_resources"][0]["content"], PLC, "a hit cites what the question found: {second}");

    // The manual is replaced: the question now finds another segment.
    assert_eq!(kb.request("DELETE", &format!("/v1/datasets/{ds}/documents/{plc}"), &[], None).status, 204);
    add_indexed(&kb, &ds, "belt.txt", BELT);
    let after = app.chat_blocking(q, "op", None);
    assert_miss(&after);
    assert_eq!(after["metadata"]["retriever_resources"][0]["content"], BELT, "{after}");
}

/// The semantic cache (per app, off by default): a question whose
/// embedding is close enough to a cached one's gets its answer, with the
/// similarity; an unrelated one does not.
#[test]
fn a_similar_question_is_answered_by_the_semantic_cache_with_its_similarity() {
    let d = cached().with_embedder().set("cache.apps.demo.semantic_threshold", 0.9).start();
    let c = d.client();
    let asked = "What is a PLC? Answer in one sentence.";
    let similar = "what is a plc, answer in one sentence";
    let unrelated = "Name three colours.";
    // The cosine similarities the cache will see, from the same embedder
    // (`query: ` is the configured query prefix).
    let inputs: Vec<String> = [asked, similar, unrelated].iter().map(|q| format!("query: {q}")).collect();
    let v = c.post_json("/v1/embeddings", &json!({"input": inputs, "model": "e5"})).expect_json(200);
    let vec = |i: usize| v["data"][i]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    let cos = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (close, far) = (cos(&vec(0), &vec(1)), cos(&vec(0), &vec(2)));
    assert!(close >= 0.9 && far < 0.9, "the test's questions do not straddle the threshold: {close} {far}");

    let first = c.chat_blocking(asked, "u", None);
    assert_miss(&first);
    let hit = c.chat_blocking(similar, "u", None);
    let m = &hit["metadata"]["cache"];
    assert_eq!((m["hit"].as_bool(), m["kind"].as_str()), (Some(true), Some("semantic")), "{hit}");
    assert!((m["similarity"].as_f64().unwrap() - close).abs() < 1e-3, "similarity {m} vs {close}");
    assert_eq!(hit["answer"], first["answer"]);
    assert_eq!(usage(&hit), (0, 0));
    assert_miss(&c.chat_blocking(unrelated, "u", None));
    // Only the same scope: with history, the similar question is a miss.
    let conv = first["conversation_id"].as_str().unwrap();
    assert_miss(&c.chat_blocking(similar, "u", Some(conv)));
    let st = stats(&d);
    assert_eq!((st["hits"].as_u64(), st["misses"].as_u64()), (Some(1), Some(3)), "{st}");
}
