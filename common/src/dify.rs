//! Dify's `POST /v1/chat-messages` request body and the events of its SSE
//! stream, as far as `edgeaictl` and the tests need them.
//!
//! Owns: the serde types only. Must not: parse SSE framing (that is
//! [`crate::sse`]) or hold any transport logic.

use serde::{Deserialize, Serialize};

/// `response_mode` asking for an SSE stream.
pub const RESPONSE_MODE_STREAMING: &str = "streaming";
/// `response_mode` asking for one JSON answer.
pub const RESPONSE_MODE_BLOCKING: &str = "blocking";

/// Body of `POST /v1/chat-messages` (and of the admin socket's
/// `POST /admin/v1/apps/{app_id}/chat-messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub query: String,
    /// Values for the app's `user_input_form` variables.
    #[serde(default)]
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// `"streaming"` or `"blocking"`.
    pub response_mode: String,
    /// End-user id; conversations are scoped by it.
    pub user: String,
    /// Continue this conversation; absent to start a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
}

/// One event of a chat-messages SSE stream, tagged by its `"event"` field.
/// Fields Dify sends that are not listed here are ignored when parsing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A piece of the answer. Completion apps have no conversation: "".
    Message {
        task_id: String,
        message_id: String,
        #[serde(default)]
        conversation_id: String,
        answer: String,
    },
    /// The answer is complete; `metadata` carries `usage` and retriever resources.
    MessageEnd {
        task_id: String,
        message_id: String,
        #[serde(default)]
        conversation_id: String,
        #[serde(default)]
        metadata: serde_json::Value,
    },
    /// The request failed after the stream started.
    Error { status: u16, code: String, message: String },
    /// Keep-alive.
    Ping,
    /// Any event this crate does not know (`agent_thought`, `tts_message`, ...).
    /// Only produced by parsing; serialising it is an error.
    #[serde(other, skip_serializing)]
    Other,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_request_omits_missing_conversation_and_defaults_inputs() {
        let req = ChatRequest {
            query: "hi".into(),
            inputs: serde_json::Map::new(),
            response_mode: RESPONSE_MODE_STREAMING.into(),
            user: "u".into(),
            conversation_id: None,
        };
        let value = serde_json::to_value(&req).unwrap();
        assert_eq!(value, json!({"query": "hi", "inputs": {}, "response_mode": "streaming", "user": "u"}));
        let parsed: ChatRequest = serde_json::from_value(json!({"query": "q", "response_mode": "blocking", "user": "u"})).unwrap();
        assert!(parsed.inputs.is_empty());
        assert_eq!(parsed.conversation_id, None);
    }

    #[test]
    fn parses_dify_events_and_ignores_extra_fields() {
        let message: StreamEvent = serde_json::from_str(
            r#"{"event":"message","task_id":"t","id":"m","message_id":"m","conversation_id":"c",
            "answer":"Hel","created_at":1700000000}"#,
        )
        .unwrap();
        assert_eq!(
            message,
            StreamEvent::Message { task_id: "t".into(), message_id: "m".into(), conversation_id: "c".into(), answer: "Hel".into() }
        );
        let end: StreamEvent = serde_json::from_str(
            r#"{"event":"message_end","task_id":"t","message_id":"m","conversation_id":"c",
            "metadata":{"usage":{"total_tokens":3}}}"#,
        )
        .unwrap();
        assert!(matches!(end, StreamEvent::MessageEnd { ref metadata, .. } if metadata["usage"]["total_tokens"] == 3));
        let error: StreamEvent = serde_json::from_str(r#"{"event":"error","status":400,"code":"invalid_param","message":"bad"}"#).unwrap();
        assert_eq!(error, StreamEvent::Error { status: 400, code: "invalid_param".into(), message: "bad".into() });
        assert_eq!(serde_json::from_str::<StreamEvent>(r#"{"event":"ping"}"#).unwrap(), StreamEvent::Ping);
        assert_eq!(serde_json::from_str::<StreamEvent>(r#"{"event":"agent_thought","thought":"x"}"#).unwrap(), StreamEvent::Other);
    }

    #[test]
    fn rejects_events_without_tag_or_with_missing_fields() {
        assert!(serde_json::from_str::<StreamEvent>(r#"{"answer":"x"}"#).is_err());
        assert!(serde_json::from_str::<StreamEvent>(r#"{"event":"message","answer":"x"}"#).is_err());
        assert!(serde_json::from_str::<StreamEvent>("not json").is_err());
    }

    #[test]
    fn serialises_known_events_with_tag() {
        let value = serde_json::to_value(StreamEvent::Ping).unwrap();
        assert_eq!(value, json!({"event": "ping"}));
        assert!(serde_json::to_value(StreamEvent::Other).is_err());
    }
}
