//! Dify chat and completion apps end to end: blocking and streaming turns,
//! conversation history and scoping by `user`, SSE framing and pings,
//! feedback, rename, delete, parameters/info/meta, and the OpenAI-compatible
//! endpoints.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::{Duration, Instant};

use edgeai_tests::{completion_body, is_uuid, DaemonBuilder};
use serde_json::{json, Value};

fn usage(v: &Value) -> (u64, u64, u64) {
    let u = &v["metadata"]["usage"];
    (u["prompt_tokens"].as_u64().unwrap(), u["completion_tokens"].as_u64().unwrap(), u["total_tokens"].as_u64().unwrap())
}

#[test]
fn blocking_chat_continues_a_conversation_scoped_by_user() {
    let d = DaemonBuilder::new().start();
    let c = d.client();
    let q1 = "What is a PLC? Answer in one sentence.";
    let a1 = c.chat_blocking(q1, "alice", None);
    assert_eq!(a1["event"], "message");
    assert_eq!(a1["mode"], "chat");
    let answer1 = a1["answer"].as_str().unwrap();
    assert!(!answer1.trim().is_empty(), "empty answer: {a1}");
    for k in ["id", "message_id", "conversation_id", "task_id"] {
        assert!(is_uuid(a1[k].as_str().unwrap_or("")), "{k} is not a UUID: {a1}");
    }
    assert_eq!(a1["id"], a1["message_id"]);
    let (p1, c1, t1) = usage(&a1);
    assert!(p1 > 0 && c1 > 0 && t1 == p1 + c1, "usage: {a1}");
    assert!(c1 <= 32, "completion_tokens {c1} exceeds the app's max_tokens 32");
    let conv = a1["conversation_id"].as_str().unwrap().to_owned();

    let q2 = "And what does the abbreviation stand for?";
    let a2 = c.chat_blocking(q2, "alice", Some(&conv));
    assert_eq!(a2["conversation_id"], conv.as_str(), "the second turn left the conversation");
    assert_ne!(a2["message_id"], a1["message_id"]);
    assert!(!a2["answer"].as_str().unwrap().trim().is_empty());
    // The history (first query and answer) is part of the second prompt.
    let (p2, _, _) = usage(&a2);
    assert!(p2 > p1 + c1 / 2, "second prompt ({p2} tokens) does not carry the first turn ({p1} + {c1})");

    let msgs = c.messages("alice", &conv);
    assert_eq!(msgs.len(), 2, "messages: {msgs:#?}");
    assert_eq!(msgs[0]["id"], a1["message_id"]);
    assert_eq!(msgs[0]["query"], q1);
    assert_eq!(msgs[0]["answer"], a1["answer"]);
    assert_eq!(msgs[1]["id"], a2["message_id"]);
    assert_eq!(msgs[1]["query"], q2);
    assert_eq!(msgs[1]["answer"], a2["answer"]);
    for m in &msgs {
        assert_eq!(m["conversation_id"], conv.as_str());
        assert_eq!(m["status"], "normal");
    }

    // Another user's conversations are separate, in both directions.
    let b = c.chat_blocking("Hello!", "bob", None);
    let bob_conv = b["conversation_id"].as_str().unwrap();
    assert_ne!(bob_conv, conv);
    let alice_list = c.conversations("alice");
    assert_eq!(alice_list.len(), 1, "{alice_list:#?}");
    assert_eq!(alice_list[0]["id"], conv.as_str());
    assert_eq!(alice_list[0]["name"], "What is a PLC? Answer in one sentence.");
    let bob_list = c.conversations("bob");
    assert_eq!(bob_list.len(), 1, "{bob_list:#?}");
    assert_eq!(bob_list[0]["id"], bob_conv);
    assert!(c.conversations("carol").is_empty());
    c.get(&format!("/v1/messages?user=bob&conversation_id={conv}")).expect_dify_error(404, "not_found");
}

#[test]
fn streaming_chat_sends_dify_events_and_stores_the_same_answer() {
    let d = DaemonBuilder::new().start();
    let c = d.client();
    let s = c.chat_stream("Name three colours.", "carol", None);
    assert_eq!(s.status, 200);
    assert!(s.content_type.starts_with("text/event-stream"), "content type {:?}", s.content_type);
    let names: Vec<String> = s.events.iter().map(|e| e.name()).filter(|n| n != "ping").collect();
    assert!(names.len() >= 2, "events: {names:?}");
    let (last, body) = names.split_last().unwrap();
    assert_eq!(last, "message_end", "events: {names:?}");
    assert!(body.iter().all(|n| n == "message"), "events before message_end: {names:?}");

    let (task, msg, conv) = s.ids();
    assert!(is_uuid(&task) && is_uuid(&msg) && is_uuid(&conv), "ids {task} {msg} {conv}");
    for e in s.events.iter().filter(|e| e.name() != "ping") {
        let v = e.json().expect("every non-ping event is JSON");
        assert_eq!(v["task_id"], task.as_str(), "{v}");
        assert_eq!(v["message_id"], msg.as_str(), "{v}");
        assert_eq!(v["conversation_id"], conv.as_str(), "{v}");
    }
    let end = s.end.clone().unwrap();
    let (p, ct, t) = usage(&end);
    assert!(p > 0 && ct > 0 && t == p + ct, "usage in message_end: {end}");
    assert!(!s.answer.trim().is_empty());

    let msgs = c.messages("carol", &conv);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["id"], msg.as_str());
    assert_eq!(msgs[0]["answer"].as_str().unwrap(), s.answer, "stored answer differs from the streamed one");
    assert_eq!(msgs[0]["status"], "normal");

    // A streamed turn continues the conversation like a blocking one.
    let s2 = c.chat_stream("Which of them is the warmest?", "carol", Some(&conv));
    assert_eq!(s2.ids().2, conv);
    assert!(s2.end.is_some());
    assert_eq!(c.messages("carol", &conv).len(), 2);
}

#[test]
fn idle_stream_gets_ping_events() {
    // With a hung inference thread the request waits in the queue forever,
    // so the only thing on the stream is the keep-alive.
    let d = DaemonBuilder::new().set("server.sse_ping_secs", 1).hang_inference().start();
    d.wait_failpoint_hang();
    let mut c = d.client();
    // Without pings the read below would block: fail fast instead.
    c.timeout = Duration::from_secs(5);
    let opened = Instant::now();
    let mut r = c.chat_stream_open("Hello?", "pinged", None);
    assert_eq!(r.status(), 200);
    assert!(r.header("content-type").unwrap_or("").starts_with("text/event-stream"));
    let mut pings = Vec::new();
    while pings.len() < 2 {
        let ev = r.next_event().unwrap().expect("the stream ended while waiting for pings");
        assert_eq!(ev.event.as_deref(), Some("ping"), "unexpected event {ev:?}");
        assert!(ev.data.is_empty(), "a ping carries no data: {ev:?}");
        pings.push(ev.at);
    }
    let first = pings[0] - opened;
    let gap = pings[1] - pings[0];
    assert!(first >= Duration::from_millis(700) && first <= Duration::from_secs(3), "first ping after {first:?}");
    assert!(gap >= Duration::from_millis(700) && gap <= Duration::from_secs(3), "pings {gap:?} apart");
    r.close();
}

#[test]
fn completion_app_blocking_streaming_and_mode_errors() {
    let d = DaemonBuilder::new().start();
    let (_, key) = d.admin().create_key("summarise");
    let chat = d.client();
    let comp = chat.with_key(&key);
    let text = "The pump in hall 3 stopped at 14:02 because its motor overheated; the spare was fitted and production resumed at 15:10.";

    let r = comp.post_json("/v1/completion-messages", &completion_body(text, "zoe", "blocking")).expect_json(200);
    assert_eq!(r["mode"], "completion");
    assert!(!r["answer"].as_str().unwrap().trim().is_empty(), "{r}");
    assert!(is_uuid(r["message_id"].as_str().unwrap()) && is_uuid(r["task_id"].as_str().unwrap()));
    let (p, ct, _) = usage(&r);
    assert!(p > 20 && ct > 0, "the input text must be part of the prompt: {r}");

    let s = edgeai_tests::dify::collect(
        comp.post_json_streaming("/v1/completion-messages", &completion_body(text, "zoe", "streaming")).into_sse(),
    );
    assert_eq!(s.status, 200);
    assert!(!s.named("message").is_empty() && s.end.is_some(), "events: {:?}", s.events);
    assert!(!s.answer.trim().is_empty());
    assert!(usage(s.end.as_ref().unwrap()).1 > 0);

    // A required input is missing.
    comp.post_json("/v1/completion-messages", &json!({"inputs": {}, "user": "zoe", "response_mode": "blocking"}))
        .expect_dify_error(400, "invalid_param");
    // Each route only serves its own app mode, with Dify's answers: a chat
    // route on a completion app is not_chat_app, the reverse app_unavailable.
    let e =
        comp.post_json("/v1/chat-messages", &edgeai_tests::chat_body("hi", "zoe", "blocking", None)).expect_dify_error(400, "not_chat_app");
    assert_eq!(e["message"], "Please check if your app mode matches the right API route.");
    comp.get("/v1/conversations?user=zoe").expect_dify_error(400, "not_chat_app");
    let e = chat.post_json("/v1/completion-messages", &completion_body(text, "zoe", "blocking")).expect_dify_error(400, "app_unavailable");
    assert_eq!(e["message"], "App unavailable, please check your app configurations.");
    chat.post_json("/v1/completion-messages/some-task/stop", &json!({"user": "zoe"})).expect_dify_error(400, "app_unavailable");
}

#[test]
fn feedback_rename_and_delete() {
    let d = DaemonBuilder::new().max_tokens(8).start();
    let c = d.client();
    let a = c.chat_blocking("Hi there", "dave", None);
    let (msg, conv) = (a["message_id"].as_str().unwrap().to_owned(), a["conversation_id"].as_str().unwrap().to_owned());
    let feedback = |rating: Value| c.post_json(&format!("/v1/messages/{msg}/feedbacks"), &json!({"rating": rating, "user": "dave"}));
    let stored_rating = || c.messages("dave", &conv)[0]["feedback"].clone();

    assert_eq!(feedback(json!("like")).expect_json(200), json!({"result": "success"}));
    assert_eq!(stored_rating(), json!({"rating": "like"}));
    feedback(json!("dislike")).expect_json(200);
    assert_eq!(stored_rating(), json!({"rating": "dislike"}));
    feedback(Value::Null).expect_json(200);
    assert_eq!(stored_rating(), Value::Null);
    feedback(json!("great")).expect_dify_error(400, "invalid_param");
    c.post_json(&format!("/v1/messages/{msg}/feedbacks"), &json!({"rating": "like", "user": "eve"})).expect_dify_error(404, "not_found");
    c.post_json("/v1/messages/00000000-0000-4000-8000-000000000000/feedbacks", &json!({"rating": "like", "user": "dave"}))
        .expect_dify_error(404, "not_found");
    assert_eq!(stored_rating(), Value::Null, "a rejected feedback changed the stored one");

    let renamed = c.post_json(&format!("/v1/conversations/{conv}/name"), &json!({"name": "Greetings", "user": "dave"})).expect_json(200);
    assert_eq!(renamed["id"], conv.as_str());
    assert_eq!(renamed["name"], "Greetings");
    assert_eq!(c.conversations("dave")[0]["name"], "Greetings");
    // A later turn: auto_generate must still name the conversation after its first question.
    c.chat_blocking("And another thing", "dave", Some(&conv));
    let auto = c.post_json(&format!("/v1/conversations/{conv}/name"), &json!({"auto_generate": true, "user": "dave"})).expect_json(200);
    assert_eq!(auto["name"], "Hi there");
    c.post_json(&format!("/v1/conversations/{conv}/name"), &json!({"user": "dave"})).expect_dify_error(400, "invalid_param");
    c.post_json(&format!("/v1/conversations/{conv}/name"), &json!({"name": "Mine", "user": "eve"})).expect_dify_error(404, "not_found");
    assert_eq!(c.conversations("dave")[0]["name"], "Hi there");

    // Only the owner can delete; afterwards the conversation is gone everywhere.
    c.delete_json(&format!("/v1/conversations/{conv}"), &json!({"user": "eve"})).expect_dify_error(404, "not_found");
    let del = c.delete_json(&format!("/v1/conversations/{conv}"), &json!({"user": "dave"}));
    assert!(del.status == 204 || del.status == 200, "delete answered {}: {}", del.status, del.text());
    c.get(&format!("/v1/messages?user=dave&conversation_id={conv}")).expect_dify_error(404, "not_found");
    assert!(c.conversations("dave").is_empty());
    c.delete_json(&format!("/v1/conversations/{conv}"), &json!({"user": "dave"})).expect_dify_error(404, "not_found");
    c.post_json("/v1/chat-messages", &edgeai_tests::chat_body("again", "dave", "blocking", Some(&conv)))
        .expect_dify_error(404, "not_found");
}

#[test]
fn parameters_info_and_meta() {
    let d = DaemonBuilder::new().start();
    let c = d.client();
    let p = c.get("/v1/parameters").expect_json(200);
    assert_eq!(p["opening_statement"], "Hello! I am the test assistant.");
    assert_eq!(p["suggested_questions"], json!(["What is a PLC?", "What is Modbus?"]));
    assert_eq!(p["user_input_form"], json!([]));
    assert_eq!(p["file_upload"]["image"]["enabled"], false);

    let (_, key) = d.admin().create_key("summarise");
    let p = c.with_key(&key).get("/v1/parameters").expect_json(200);
    let form = p["user_input_form"].as_array().unwrap();
    assert_eq!(form.len(), 1, "{p}");
    assert_eq!(form[0]["paragraph"]["variable"], "text");
    assert_eq!(form[0]["paragraph"]["required"], true);
    assert_eq!(form[0]["paragraph"]["label"], "Text to summarise");

    let info = c.get("/v1/info").expect_json(200);
    assert_eq!(info["name"], "Demo chat");
    assert_eq!(info["mode"], "chat");
    assert_eq!(info["description"], "The end-to-end tests' chat app.");
    assert_eq!(c.with_key(&key).get("/v1/info").expect_json(200)["mode"], "completion");
    assert_eq!(c.get("/v1/meta").expect_json(200), json!({"tool_icons": {}}));
    c.without_key().get("/v1/parameters").expect_dify_error(401, "unauthorized");
}

#[test]
fn openai_chat_completions_and_models() {
    let d = DaemonBuilder::new().start();
    let c = d.client();
    let models = c.get("/v1/models").expect_json(200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "smollm2-135m-instruct");

    let req = json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}], "max_tokens": 12});
    let r = c.post_json("/v1/chat/completions", &req).expect_json(200);
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    assert!(!r["choices"][0]["message"]["content"].as_str().unwrap().trim().is_empty(), "{r}");
    let finish = r["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(finish == "stop" || finish == "length", "{r}");
    let ct = r["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(ct > 0 && ct <= 12, "{r}");
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let mut sse = c.post_json_streaming("/v1/chat/completions", &streamed).into_sse();
    assert_eq!(sse.status(), 200);
    assert!(sse.header("content-type").unwrap_or("").starts_with("text/event-stream"));
    let mut datas = Vec::new();
    while let Some(ev) = sse.next_event().unwrap() {
        datas.push(ev.data);
    }
    assert_eq!(datas.last().map(String::as_str), Some("[DONE]"), "stream: {datas:#?}");
    let chunks: Vec<Value> = datas[..datas.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.len() >= 3, "{chunks:#?}");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!text.trim().is_empty());
    let last = chunks.last().unwrap();
    assert!(last["choices"][0]["finish_reason"].is_string(), "the last chunk carries finish_reason: {last}");
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c["choices"][0]["finish_reason"].is_null()));

    // OpenAI's error shape.
    let e = c.post_json("/v1/chat/completions", &json!({"model": "x", "messages": []}));
    assert_eq!(e.status, 400);
    assert_eq!(e.json()["error"]["code"], "invalid_param");
    let e = c.without_key().post_json("/v1/chat/completions", &req);
    assert_eq!(e.status, 401);
    assert_eq!(e.json()["error"]["code"], "unauthorized");
}

/// Sampling parameters reach llama.cpp: greedy decoding is reproducible, a
/// stop sequence cuts the answer before it (never sending the stop text), and
/// max_tokens bounds the answer with finish_reason "length".
#[test]
fn openai_sampling_parameters_take_effect() {
    let d = DaemonBuilder::new().start();
    let c = d.client();
    let ask = |extra: Value| {
        let mut req = json!({"model": "anything", "temperature": 0, "max_tokens": 40,
                             "messages": [{"role": "user", "content": "Write a long story about a robot."}]});
        req.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c.post_json("/v1/chat/completions", &req).expect_json(200)
    };
    let text = |r: &Value| r["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let full = ask(json!({}));
    let again = ask(json!({}));
    assert_eq!(text(&full), text(&again), "greedy decoding is not reproducible");

    // A word from the middle of the greedy answer as the stop sequence.
    let full_text = text(&full);
    let words: Vec<&str> = full_text.split_whitespace().collect();
    assert!(words.len() >= 6, "answer too short to pick a stop word: {full}");
    let stop = words[words.len() / 2].to_owned();
    let cut = ask(json!({"stop": [stop.clone()]}));
    let expected = &full_text[..full_text.find(stop.as_str()).unwrap()];
    assert_eq!(text(&cut), expected, "stop {stop:?} did not cut the answer where it first appears");
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");

    // max_tokens 5 can only be seen to cut an answer that goes on past 5
    // tokens on its own; the full greedy answer says whether this one does.
    let full_tokens = full["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(full_tokens > 5, "precondition: the greedy answer must be longer than 5 tokens to test max_tokens: {full}");
    let short = ask(json!({"max_tokens": 5}));
    assert_eq!(short["usage"]["completion_tokens"], 5, "{short}");
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert!(text(&full).starts_with(&text(&short)), "a shorter greedy answer is not a prefix of the longer one");
}
