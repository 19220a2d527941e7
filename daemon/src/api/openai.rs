//! The OpenAI-compatible API, authorised by the same app keys:
//! `POST /v1/chat/completions` (blocking, and streaming as OpenAI SSE chunks
//! ending in `data: [DONE]`), `POST /v1/embeddings` (the knowledge
//! service's embedding model) and `GET /v1/models`. Stateless: nothing is
//! stored. Any `model` name is accepted and answered by the local model,
//! so clients written for a cloud model work unchanged. The run's events
//! are consumed by `events`; this module is OpenAI's [`Encoder`] for them.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::{self, Body};
use super::error::ApiError;
use super::events::{self, Collected, Encoder, StreamLimits};
use super::stall::StallFlag;
use super::ApiState;
use crate::engine::{AppDefinition, CompletionParams};
use crate::model::{ChatMessage, FinishReason, Role, SamplingParams};
use crate::service::{OpenAiRequest, Usage};

#[derive(Deserialize)]
struct ChatCompletionBody {
    model: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: bool,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<Stop>,
    seed: Option<u32>,
    n: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    content: Content,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

fn to_messages(wire: Vec<WireMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if wire.is_empty() {
        return Err(ApiError::InvalidParam("messages must not be empty".into()));
    }
    wire.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => return Err(ApiError::InvalidParam(format!("messages[{i}].role {other:?} is not supported"))),
            };
            let content = match m.content {
                Content::Text(t) => t,
                Content::Parts(parts) => {
                    let mut s = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => s.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::InvalidParam(format!(
                                    "messages[{i}]: content part {kind:?} is not supported (text only)"
                                )))
                            }
                        }
                    }
                    s
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

pub async fn chat_completions(state: &Arc<ApiState>, app: Arc<AppDefinition>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let stall = req.extensions().get::<StallFlag>().cloned().unwrap_or_default();
    let (request, stream) = chat_request(body::read_json(req.into_body(), state.limits.max_body_bytes).await?, &app.completion_params)?;
    let run = state.service.start_openai(&app, request).await?;
    let enc = OpenAiEncoder { id: format!("chatcmpl-{}", run.task_id), created: run.created_at, model: state.model_name.clone() };
    // `x-edgeai-cache: hit|miss` on requests the response cache applies to.
    let cache = match run.cache {
        crate::cache::Mark::Hit(_) => Some("hit"),
        crate::cache::Mark::Miss => Some("miss"),
        crate::cache::Mark::Off => None,
    };
    let mut resp = if stream {
        let limits = StreamLimits {
            ping: state.limits.sse_ping_interval,
            deadline: state.limits.request_timeout,
            slow_client: state.limits.slow_client_timeout,
        };
        events::stream(events::Encoded { run, enc }, limits, stall)
    } else {
        events::blocking(run, enc).await?
    };
    if let Some(c) = cache {
        resp.headers_mut().insert("x-edgeai-cache", http::HeaderValue::from_static(c));
    }
    Ok(resp)
}

/// The request of `/v1/chat/completions` from its JSON body, with the app's
/// sampling defaults `d`, and whether it streams; every wrong field is
/// `invalid_param`.
pub(crate) fn chat_request(body: Value, d: &CompletionParams) -> Result<(OpenAiRequest, bool), ApiError> {
    let b: ChatCompletionBody = body::typed(body)?;
    if b.n.is_some_and(|n| n != 1) {
        return Err(ApiError::InvalidParam("n must be 1".into()));
    }
    let temperature = b.temperature.unwrap_or(d.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::InvalidParam(format!("temperature {temperature} is outside 0..=2")));
    }
    let top_p = b.top_p.unwrap_or(d.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::InvalidParam(format!("top_p {top_p} is outside (0, 1]")));
    }
    let max_tokens = b.max_completion_tokens.or(b.max_tokens).unwrap_or(d.max_tokens);
    if max_tokens == 0 {
        return Err(ApiError::InvalidParam("max_tokens must be at least 1".into()));
    }
    let stop = match b.stop {
        None => d.stop.clone(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 {
        return Err(ApiError::InvalidParam("at most 4 stop sequences".into()));
    }
    let params = SamplingParams { temperature, top_p, top_k: d.top_k, max_tokens, seed: b.seed.or(d.seed), stop, grammar: None };
    let _ = b.model;
    Ok((OpenAiRequest { messages: to_messages(b.messages)?, params }, b.stream))
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
    }
}

/// OpenAI's wire shapes of a run: `chat.completion`, or
/// `chat.completion.chunk`s ending in `data: [DONE]`.
struct OpenAiEncoder {
    id: String,
    created: i64,
    model: String,
}

impl OpenAiEncoder {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> bytes::Bytes {
        body::sse_data(&json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }))
    }
}

impl Encoder for OpenAiEncoder {
    fn open(&self) -> Vec<bytes::Bytes> {
        vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
    }

    fn text(&self, text: &str) -> bytes::Bytes {
        self.chunk(json!({"content": text}), None)
    }

    fn end(&self, _usage: &Usage, finish: FinishReason) -> bytes::Bytes {
        self.chunk(json!({}), Some(finish_str(finish)))
    }

    fn error(&self, e: &ApiError) -> bytes::Bytes {
        let m = e.mapped();
        let kind = if m.status.is_server_error() { "server_error" } else { "invalid_request_error" };
        body::sse_data(&json!({"error": {"message": m.message, "type": kind, "code": m.code}}))
    }

    fn close(&self) -> Vec<bytes::Bytes> {
        vec![bytes::Bytes::from_static(b"data: [DONE]\n\n")]
    }

    fn blocking(&self, c: Collected) -> Response<Body> {
        let u = &c.usage;
        body::json(
            StatusCode::OK,
            &json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": c.answer}, "finish_reason": finish_str(c.finish)}],
                "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                          "total_tokens": u.prompt_tokens + u.completion_tokens},
            }),
        )
    }
}

pub fn models(state: &ApiState) -> Response<Body> {
    let created = 0;
    body::json(
        StatusCode::OK,
        &json!({"object": "list", "data": [{"id": state.model_name, "object": "model", "created": created, "owned_by": "edgeai"}]}),
    )
}

/// Most texts one `/v1/embeddings` request may embed.
pub const MAX_EMBED_INPUTS: usize = 256;
/// Longest text (characters) one input may be.
pub const MAX_EMBED_INPUT_CHARS: usize = 16_384;

/// How the vectors are sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncodingFormat {
    Float,
    /// Little-endian f32 bytes in standard base64, as OpenAI's.
    Base64,
}

/// An embeddings request after checks.
#[derive(Debug, PartialEq)]
pub(crate) struct EmbeddingsRequest {
    texts: Vec<String>,
    format: EncodingFormat,
    dimensions: Option<usize>,
}

/// OpenAI's embeddings body: `input` (a string or a list of strings; token
/// arrays are not accepted), `model` (any name: the loaded embedding model
/// answers), `encoding_format`, `dimensions` and `user`.
pub(crate) fn embeddings_request(v: &Value) -> Result<EmbeddingsRequest, ApiError> {
    let bad = |m: String| ApiError::InvalidParam(m);
    let o = v.as_object().ok_or_else(|| bad("the body must be a JSON object".into()))?;
    let texts = match o.get("input") {
        None | Some(Value::Null) => return Err(bad("input is required".into())),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| t.as_str().map(str::to_owned).ok_or_else(|| bad(format!("input[{i}] must be a string"))))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad("input must be a string or an array of strings".into())),
    };
    if texts.is_empty() {
        return Err(bad("input must not be empty".into()));
    }
    if texts.len() > MAX_EMBED_INPUTS {
        return Err(bad(format!("input has {} items; at most {MAX_EMBED_INPUTS} are allowed", texts.len())));
    }
    for (i, t) in texts.iter().enumerate() {
        if t.is_empty() {
            return Err(bad(format!("input[{i}] must not be empty")));
        }
        if t.chars().count() > MAX_EMBED_INPUT_CHARS {
            return Err(bad(format!("input[{i}] is longer than {MAX_EMBED_INPUT_CHARS} characters")));
        }
    }
    match o.get("model") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => return Err(bad("model must be a string".into())),
    }
    let format = match o.get("encoding_format") {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(f)) if f == "float" => EncodingFormat::Float,
        Some(Value::String(f)) if f == "base64" => EncodingFormat::Base64,
        Some(other) => return Err(bad(format!("encoding_format must be \"float\" or \"base64\", not {other}"))),
    };
    let dimensions = match o.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(d) => match d.as_u64() {
            Some(n) if n >= 1 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Err(bad(format!("dimensions must be a positive integer, not {d}"))),
        },
    };
    Ok(EmbeddingsRequest { texts, format, dimensions })
}

/// Standard base64 (with padding) of `bytes`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn embedding_value(v: &[f32], format: EncodingFormat) -> Value {
    match format {
        EncodingFormat::Float => json!(v),
        EncodingFormat::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Value::String(base64(&bytes))
        }
    }
}

/// OpenAI's embeddings answer.
fn embeddings_json(vectors: &[Vec<f32>], tokens: u64, model: &str, format: EncodingFormat) -> Value {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": embedding_value(v, format)}))
        .collect();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// `POST /v1/embeddings`: the texts embedded by the knowledge service's
/// model. A `dimensions` other than the model's is refused (the vectors
/// are not truncated).
pub async fn embeddings(state: &Arc<ApiState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let r = embeddings_request(&body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
    let knowledge = state.knowledge.clone().ok_or(ApiError::KnowledgeUnavailable)?;
    let (vectors, tokens, model) = knowledge.embed(r.texts).await?;
    let dims = vectors.first().map_or(0, Vec::len);
    if let Some(d) = r.dimensions.filter(|d| *d != dims) {
        return Err(ApiError::InvalidParam(format!("dimensions {d} is not supported: {model} returns {dims}-dimensional embeddings")));
    }
    Ok(body::json(StatusCode::OK, &embeddings_json(&vectors, tokens, &model, r.format)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(v: Value) -> String {
        match embeddings_request(&v) {
            Err(e) => {
                let m = e.mapped();
                assert_eq!((m.status.as_u16(), m.code), (400, "invalid_param"), "{v}");
                m.message
            }
            Ok(r) => panic!("{v} was accepted: {r:?}"),
        }
    }

    #[test]
    fn embeddings_input_is_a_string_or_strings() {
        let r = embeddings_request(&json!({"input": "hi", "model": "x"})).expect("one");
        assert_eq!((r.texts, r.format, r.dimensions), (vec!["hi".to_owned()], EncodingFormat::Float, None));
        let r = embeddings_request(&json!({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 384})).expect("two");
        assert_eq!((r.texts.len(), r.format, r.dimensions), (2, EncodingFormat::Base64, Some(384)));
    }

    #[test]
    fn bad_embeddings_requests_name_the_field() {
        assert_eq!(refused(json!([])), "the body must be a JSON object");
        assert_eq!(refused(json!({"model": "m"})), "input is required");
        assert_eq!(refused(json!({"input": []})), "input must not be empty");
        assert_eq!(refused(json!({"input": [1, 2]})), "input[0] must be a string");
        assert_eq!(refused(json!({"input": 7})), "input must be a string or an array of strings");
        assert_eq!(refused(json!({"input": ["a", ""]})), "input[1] must not be empty");
        let many: Vec<&str> = vec!["a"; MAX_EMBED_INPUTS + 1];
        assert_eq!(refused(json!({ "input": many })), "input has 257 items; at most 256 are allowed");
        let long = "字".repeat(MAX_EMBED_INPUT_CHARS + 1);
        assert_eq!(refused(json!({ "input": long })), "input[0] is longer than 16384 characters");
        assert_eq!(refused(json!({"input": "a", "model": 3})), "model must be a string");
        assert_eq!(
            refused(json!({"input": "a", "encoding_format": "int8"})),
            "encoding_format must be \"float\" or \"base64\", not \"int8\""
        );
        assert_eq!(refused(json!({"input": "a", "dimensions": 0})), "dimensions must be a positive integer, not 0");
        assert_eq!(refused(json!({"input": "a", "dimensions": "384"})), "dimensions must be a positive integer, not \"384\"");
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn embeddings_answer_in_openai_shape() {
        let v = embeddings_json(&[vec![1.0, -0.5], vec![0.0, 0.25]], 7, "e5", EncodingFormat::Float);
        assert_eq!(
            v,
            json!({"object": "list", "data": [
                {"object": "embedding", "index": 0, "embedding": [1.0, -0.5]},
                {"object": "embedding", "index": 1, "embedding": [0.0, 0.25]}],
              "model": "e5", "usage": {"prompt_tokens": 7, "total_tokens": 7}})
        );
        // 1.0f32 little-endian is 00 00 80 3f.
        let v = embeddings_json(&[vec![1.0]], 1, "e5", EncodingFormat::Base64);
        assert_eq!(v["data"][0]["embedding"], json!("AACAPw=="));
    }
}
