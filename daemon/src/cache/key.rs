//! The response cache's key: everything an answer depends on, written as one
//! canonical string (app and served version, model, every sampling
//! parameter, the normalised query, the inputs as canonical JSON and the
//! conversation turns and the knowledge segments that go into the prompt),
//! and its SHA-256. The map is
//! keyed by the hash; a hit also compares the whole string, so a hash
//! collision can never serve another request's answer.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::model::{ChatMessage, Role, SamplingParams};

/// A request's cache key.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheKey {
    /// Hex SHA-256 of `text`.
    pub hash: String,
    /// The canonical serialisation (compared on a hit).
    pub text: String,
    pub app_id: String,
    pub app_version: u32,
    /// Hex SHA-256 of everything but the query (Dify turns): the entries a
    /// semantic lookup may compare the query with.
    pub scope: Option<String>,
    /// The query's embedding, when the app has a semantic cache.
    pub embedding: Option<QueryEmbedding>,
}

/// A normalised query's embedding (a unit vector) and the model that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryEmbedding {
    pub model: String,
    pub vector: Vec<f32>,
}

/// What a Dify chat or completion turn's answer depends on.
pub struct DifyParts<'a> {
    pub app_id: &'a str,
    pub app_version: u32,
    pub model: &'a str,
    pub params: &'a SamplingParams,
    pub query: &'a str,
    pub inputs: &'a Map<String, Value>,
    /// The conversation's earlier turns (query, answer), oldest first.
    pub history: &'a [(String, String)],
    /// The knowledge segments retrieved for the prompt (apps with
    /// datasets): a dataset change that changes them changes the key.
    pub context: Option<&'a str>,
}

impl CacheKey {
    /// The key of a Dify chat or completion turn.
    pub fn dify(p: &DifyParts<'_>) -> CacheKey {
        let history: Vec<Value> = p.history.iter().map(|(q, a)| Value::Array(vec![q.as_str().into(), a.as_str().into()])).collect();
        let mut body = serde_json::json!({
            "api": "dify",
            "inputs": canonical(&Value::Object(p.inputs.clone())),
            "history": history,
            "context": p.context,
        });
        let scope = Self::build(p.app_id, p.app_version, p.model, p.params, body.clone()).hash;
        body["query"] = normalise_query(p.query).into();
        CacheKey { scope: Some(scope), ..Self::build(p.app_id, p.app_version, p.model, p.params, body) }
    }

    /// The key of an OpenAI chat completion (its messages are the whole context).
    pub fn openai(app_id: &str, app_version: u32, model: &str, params: &SamplingParams, messages: &[ChatMessage]) -> CacheKey {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                Value::Array(vec![role.into(), normalise_query(&m.content).into()])
            })
            .collect();
        Self::build(app_id, app_version, model, params, serde_json::json!({"api": "openai", "messages": messages}))
    }

    fn build(app_id: &str, app_version: u32, model: &str, params: &SamplingParams, body: Value) -> CacheKey {
        let whole = serde_json::json!({
            "app": app_id,
            "version": app_version,
            "model": model,
            // f32 as its exact bits: 0.7 and 0.70000005 are different requests.
            "params": {
                "temperature": params.temperature.to_bits(),
                "top_p": params.top_p.to_bits(),
                "top_k": params.top_k,
                "max_tokens": params.max_tokens,
                "seed": params.seed,
                "stop": params.stop,
                "grammar": params.grammar,
            },
            "request": body,
        });
        let text = canonical(&whole).to_string();
        let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
        CacheKey { hash, text, app_id: app_id.to_owned(), app_version, scope: None, embedding: None }
    }
}

/// Whether a request may be cached: temperature 0 or a fixed seed give the
/// same answer again; anything else only when the app opts in (`always`).
pub fn deterministic(params: &SamplingParams) -> bool {
    params.temperature == 0.0 || params.seed.is_some()
}

/// The query as the key sees it: trimmed, every run of whitespace one space.
pub fn normalise_query(q: &str) -> String {
    q.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `v` with every object's keys sorted (whatever order serde_json keeps).
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams { temperature, top_p: 1.0, top_k: 40, max_tokens: 64, seed: None, stop: Vec::new(), grammar: None }
    }

    fn key(query: &str, inputs: Value, history: &[(String, String)], version: u32, p: &SamplingParams) -> CacheKey {
        let Value::Object(inputs) = inputs else { panic!("inputs must be an object") };
        CacheKey::dify(&DifyParts {
            app_id: "a",
            app_version: version,
            model: "m",
            params: p,
            query,
            inputs: &inputs,
            history,
            context: None,
        })
    }

    #[test]
    fn queries_are_normalised() {
        assert_eq!(normalise_query("  What is\t a   PLC? \n"), "What is a PLC?");
        assert_eq!(normalise_query(""), "");
        let p = params(0.0);
        assert_eq!(key("  hi   there ", serde_json::json!({}), &[], 1, &p), key("hi there", serde_json::json!({}), &[], 1, &p));
        assert_ne!(key("hi there", serde_json::json!({}), &[], 1, &p), key("hi  there!", serde_json::json!({}), &[], 1, &p));
    }

    #[test]
    fn inputs_are_canonical_whatever_their_order() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": [1, {"q": 1, "p": 2}]}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"a": {"x": [1, {"p": 2, "q": 1}], "y": 2}, "b": 1}"#).expect("json");
        assert_eq!(canonical(&a).to_string(), canonical(&b).to_string());
        let p = params(0.0);
        assert_eq!(key("q", a.clone(), &[], 1, &p), key("q", b, &[], 1, &p));
        assert_ne!(key("q", a, &[], 1, &p), key("q", serde_json::json!({"b": 2}), &[], 1, &p));
    }

    #[test]
    fn everything_the_answer_depends_on_changes_the_key() {
        let p = params(0.0);
        let base = key("q", serde_json::json!({}), &[], 1, &p);
        assert_eq!(base.hash.len(), 64);
        assert_ne!(base, key("q", serde_json::json!({}), &[], 2, &p), "app version");
        assert_ne!(base, key("q", serde_json::json!({}), &[("q0".into(), "a0".into())], 1, &p), "history");
        for changed in [
            SamplingParams { max_tokens: 65, ..p.clone() },
            SamplingParams { seed: Some(1), ..p.clone() },
            SamplingParams { top_k: 41, ..p.clone() },
            SamplingParams { top_p: 0.9, ..p.clone() },
            SamplingParams { stop: vec!["x".into()], ..p.clone() },
            SamplingParams { grammar: Some("root ::= \"a\"".into()), ..p.clone() },
            params(0.1),
        ] {
            assert_ne!(base, key("q", serde_json::json!({}), &[], 1, &changed), "{changed:?}");
        }
        let other_model = CacheKey::dify(&DifyParts {
            app_id: "a",
            app_version: 1,
            model: "m2",
            params: &p,
            query: "q",
            inputs: &Map::new(),
            history: &[],
            context: None,
        });
        assert_ne!(base, other_model, "model");
        let with_context = CacheKey::dify(&DifyParts {
            app_id: "a",
            app_version: 1,
            model: "m",
            params: &p,
            query: "q",
            inputs: &Map::new(),
            history: &[],
            context: Some("segment"),
        });
        assert_ne!(base, with_context, "retrieved knowledge");
        assert_ne!(base.scope, with_context.scope);
        assert_eq!(base.scope, key("another question", serde_json::json!({}), &[], 1, &p).scope, "the scope leaves the query out");
        assert_ne!(base.scope, key("q", serde_json::json!({}), &[], 2, &p).scope);
        let msgs = [ChatMessage { role: Role::User, content: "q".into() }];
        assert_ne!(base, CacheKey::openai("a", 1, "m", &p, &msgs), "API");
    }

    #[test]
    fn only_deterministic_requests_qualify_by_themselves() {
        assert!(deterministic(&params(0.0)));
        assert!(!deterministic(&params(0.7)));
        assert!(deterministic(&SamplingParams { seed: Some(42), ..params(0.7) }));
    }
}
