//! Dify Service API helpers for tests: request bodies, a blocking chat that
//! asserts success, a streamed chat collected into a [`StreamOutcome`], and
//! the list endpoints. These helpers assert only what every caller needs
//! (2xx, parseable); tests assert the rest.

use serde_json::{json, Value};

use crate::http::{encode, Client};
use crate::sse::{SseEvent, SseReader};

/// Body of `POST /v1/chat-messages`.
pub fn chat_body(query: &str, user: &str, mode: &str, conversation_id: Option<&str>) -> Value {
    let mut b = json!({"query": query, "inputs": {}, "user": user, "response_mode": mode});
    if let Some(c) = conversation_id {
        b["conversation_id"] = json!(c);
    }
    b
}

/// Body of `POST /v1/completion-messages` for the `summarise` app.
pub fn completion_body(text: &str, user: &str, mode: &str) -> Value {
    json!({"inputs": {"text": text}, "user": user, "response_mode": mode})
}

/// Whether `s` is a UUID in its canonical hyphenated form.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

/// A whole SSE answer.
#[derive(Debug, Clone, Default)]
pub struct StreamOutcome {
    pub status: u16,
    pub content_type: String,
    /// Every event, pings included, in order.
    pub events: Vec<SseEvent>,
    /// The `answer` of every `message` event, concatenated.
    pub answer: String,
    /// The `message_end` event's JSON, if one came.
    pub end: Option<Value>,
    pub pings: usize,
}

impl StreamOutcome {
    /// The JSON of every event named `name`.
    pub fn named(&self, name: &str) -> Vec<Value> {
        self.events.iter().filter(|e| e.name() == name).filter_map(SseEvent::json).collect()
    }

    /// `(task_id, message_id, conversation_id)` of the first `message` event.
    pub fn ids(&self) -> (String, String, String) {
        let m = self.named("message").into_iter().next().or_else(|| self.end.clone()).expect("no message or message_end event");
        let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
        (s("task_id"), s("message_id"), s("conversation_id"))
    }
}

/// Reads an SSE stream to its end.
pub fn collect(mut r: SseReader) -> StreamOutcome {
    let mut out = StreamOutcome {
        status: r.status(),
        content_type: r.header("content-type").unwrap_or_default().to_owned(),
        ..StreamOutcome::default()
    };
    while let Some(ev) = r.next_event().unwrap_or_else(|e| panic!("reading the event stream failed: {e}")) {
        add(&mut out, ev);
    }
    out
}

/// Adds one event to an outcome (for tests that read events themselves).
pub fn add(out: &mut StreamOutcome, ev: SseEvent) {
    match ev.name().as_str() {
        "ping" => out.pings += 1,
        "message" => {
            if let Some(a) = ev.json().and_then(|v| v["answer"].as_str().map(str::to_owned)) {
                out.answer.push_str(&a);
            }
        }
        "message_end" => out.end = ev.json(),
        _ => {}
    }
    out.events.push(ev);
}

impl Client {
    /// A blocking chat turn that must succeed; returns Dify's answer object.
    #[track_caller]
    pub fn chat_blocking(&self, query: &str, user: &str, conversation_id: Option<&str>) -> Value {
        self.post_json("/v1/chat-messages", &chat_body(query, user, "blocking", conversation_id)).expect_json(200)
    }

    /// Opens a streaming chat turn (headers read, events not yet).
    pub fn chat_stream_open(&self, query: &str, user: &str, conversation_id: Option<&str>) -> SseReader {
        self.post_json_streaming("/v1/chat-messages", &chat_body(query, user, "streaming", conversation_id)).into_sse()
    }

    /// A streaming chat turn read to its end.
    pub fn chat_stream(&self, query: &str, user: &str, conversation_id: Option<&str>) -> StreamOutcome {
        collect(self.chat_stream_open(query, user, conversation_id))
    }

    /// `GET /v1/messages` for a conversation (must succeed): the `data` array.
    #[track_caller]
    pub fn messages(&self, user: &str, conversation_id: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/messages?user={}&conversation_id={}&limit=100", encode(user), encode(conversation_id)));
        r.expect_json(200)["data"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /v1/conversations` for a user (must succeed): the `data` array.
    #[track_caller]
    pub fn conversations(&self, user: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/conversations?user={}&limit=100", encode(user)));
        r.expect_json(200)["data"].as_array().cloned().unwrap_or_default()
    }
}
