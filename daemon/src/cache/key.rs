//! The response cache's key: everything an answer depends on, written as one
//! canonical string (app and served version, model, every sampling
//! parameter, the normalised query, the inputs as canonical JSON and the
//! conversation turns and the knowledge segments that go into the prompt),
//! and its SHA-256. The map is
//! keyed by the hash; a hit also compares the whole string, so a hash
//! collision can never serve another request's answer.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
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
    pub fn dify(p: &DifyParts<'_>) -> Result<CacheKey, serde_json::Error> {
        let mut request = DifyRequest { api: "dify", context: p.context, history: p.history, inputs: Sorted(p.inputs), query: None };
        let scope = Self::build(p.app_id, p.app_version, p.model, p.params, &request)?.hash;
        let query = normalise_query(p.query);
        request.query = Some(&query);
        Ok(CacheKey { scope: Some(scope), ..Self::build(p.app_id, p.app_version, p.model, p.params, &request)? })
    }

    /// The key of an OpenAI chat completion (its messages are the whole context).
    pub fn openai(
        app_id: &str,
        app_version: u32,
        model: &str,
        params: &SamplingParams,
        messages: &[ChatMessage],
    ) -> Result<CacheKey, serde_json::Error> {
        let messages: Vec<(&str, String)> = messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                (role, normalise_query(&m.content))
            })
            .collect();
        Self::build(app_id, app_version, model, params, &OpenAiRequest { api: "openai", messages })
    }

    /// Writes the key's text straight from the request's parts (no
    /// intermediate JSON tree: this runs on every cacheable request and was
    /// an eighth of a cache hit's CPU). An error is serde_json's alone and
    /// cannot happen with these types (every map key is a string); the
    /// caller then treats the request as not cacheable.
    fn build(
        app_id: &str,
        app_version: u32,
        model: &str,
        params: &SamplingParams,
        request: &impl Serialize,
    ) -> Result<CacheKey, serde_json::Error> {
        let whole = Whole {
            app: app_id,
            model,
            // f32 as its exact bits: 0.7 and 0.70000005 are different requests.
            params: Params {
                grammar: params.grammar.as_deref(),
                max_tokens: params.max_tokens,
                seed: params.seed,
                stop: &params.stop,
                temperature: params.temperature.to_bits(),
                top_k: params.top_k,
                top_p: params.top_p.to_bits(),
            },
            request,
            version: app_version,
        };
        let text = serde_json::to_string(&whole)?;
        let hash = format!("{:x}", Sha256::digest(text.as_bytes()));
        Ok(CacheKey { hash, text, app_id: app_id.to_owned(), app_version, scope: None, embedding: None })
    }
}

// The key's text is canonical JSON: every object's keys in sorted order.
// The structs below list their fields sorted (serde writes them in
// declaration order), and `Sorted` sorts whatever order a client's object
// came in. The text is the same, byte for byte, as the JSON-tree version
// before it wrote, so entries persisted by an older daemon still hit
// (`the_text_is_canonical_json_and_stays_what_it_was`).

/// The whole key (fields sorted).
#[derive(Serialize)]
struct Whole<'a, R: Serialize> {
    app: &'a str,
    model: &'a str,
    params: Params<'a>,
    request: &'a R,
    version: u32,
}

/// Every sampling parameter (fields sorted).
#[derive(Serialize)]
struct Params<'a> {
    grammar: Option<&'a str>,
    max_tokens: u32,
    seed: Option<u32>,
    stop: &'a [String],
    temperature: u32,
    top_k: i32,
    top_p: u32,
}

/// A Dify turn's part (fields sorted); the scope leaves the query out.
#[derive(Serialize)]
struct DifyRequest<'a> {
    api: &'static str,
    context: Option<&'a str>,
    history: &'a [(String, String)],
    inputs: Sorted<'a, Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
}

/// An OpenAI completion's part (fields sorted).
#[derive(Serialize)]
struct OpenAiRequest<'a> {
    api: &'static str,
    messages: Vec<(&'a str, String)>,
}

/// A client's JSON written with every object's keys sorted, whatever order
/// serde_json keeps them in.
struct Sorted<'a, T>(&'a T);

impl Serialize for Sorted<'_, Map<String, Value>> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&String, &Value)> = self.0.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            map.serialize_entry(k, &Sorted(v))?;
        }
        map.end()
    }
}

impl Serialize for Sorted<'_, Value> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => Sorted(m).serialize(s),
            Value::Array(a) => s.collect_seq(a.iter().map(Sorted)),
            other => other.serialize(s),
        }
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
        .expect("key")
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
        let p = params(0.0);
        assert_eq!(key("q", a.clone(), &[], 1, &p).text, key("q", b.clone(), &[], 1, &p).text);
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
        })
        .expect("key");
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
        })
        .expect("key");
        assert_ne!(base, with_context, "retrieved knowledge");
        assert_ne!(base.scope, with_context.scope);
        assert_eq!(base.scope, key("another question", serde_json::json!({}), &[], 1, &p).scope, "the scope leaves the query out");
        assert_ne!(base.scope, key("q", serde_json::json!({}), &[], 2, &p).scope);
        let msgs = [ChatMessage { role: Role::User, content: "q".into() }];
        assert_ne!(base, CacheKey::openai("a", 1, "m", &p, &msgs).expect("key"), "API");
    }

    /// The texts (and hashes) the JSON-tree version of the key wrote, kept
    /// as they were: entries persisted by an older daemon must still hit.
    #[test]
    fn the_text_is_canonical_json_and_stays_what_it_was() {
        let inputs: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": "é\"\n", "x": [1, {"q": 1.5, "p": -2}]}}"#).expect("json");
        let Value::Object(inputs) = inputs else { panic!("object") };
        let p = SamplingParams {
            temperature: 0.7,
            top_p: 0.9,
            top_k: -1,
            max_tokens: 64,
            seed: Some(42),
            stop: vec!["\n\n".into()],
            grammar: Some("root ::= \"a\"".into()),
        };
        let history = [("q0".to_owned(), "a0 \"x\"".to_owned())];
        let k = CacheKey::dify(&DifyParts {
            app_id: "app-1",
            app_version: 3,
            model: "m",
            params: &p,
            query: "  What is\ta PLC? ",
            inputs: &inputs,
            history: &history,
            context: Some("seg\tment"),
        })
        .expect("key");
        let expected = r#"{"app":"app-1","model":"m","params":{"grammar":"root ::= \"a\"","max_tokens":64,"seed":42,"stop":["\n\n"],"temperature":1060320051,"top_k":-1,"top_p":1063675494},"request":{"api":"dify","context":"seg\tment","history":[["q0","a0 \"x\""]],"inputs":{"a":{"x":[1,{"p":-2,"q":1.5}],"y":"é\"\n"},"b":1},"query":"What is a PLC?"},"version":3}"#;
        assert_eq!(k.text, expected);
        assert_eq!(k.hash, "2079bf1c592cd70fcca72ced3ce88e4aec7086adf15a8df5406b02a1b4a8df5e");
        assert_eq!(k.scope.as_deref(), Some("bc0737ec0df028cb897b5df705f17bb39b522afea7a416cf78bfd04795cc720c"));
        let msgs = [
            ChatMessage { role: Role::System, content: "Be terse.".into() },
            ChatMessage { role: Role::User, content: "hi  there".into() },
        ];
        let p = SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 40, max_tokens: 16, seed: None, stop: Vec::new(), grammar: None };
        let o = CacheKey::openai("app-1", 3, "m", &p, &msgs).expect("key");
        assert_eq!(
            o.text,
            r#"{"app":"app-1","model":"m","params":{"grammar":null,"max_tokens":16,"seed":null,"stop":[],"temperature":0,"top_k":40,"top_p":1065353216},"request":{"api":"openai","messages":[["system","Be terse."],["user","hi there"]]},"version":3}"#
        );
        assert_eq!(o.hash, "8bee249f37f1dc2f3fd41953877af22ce49b96d6576299c2de78cff991f76cd7");
    }

    #[test]
    fn only_deterministic_requests_qualify_by_themselves() {
        assert!(deterministic(&params(0.0)));
        assert!(!deterministic(&params(0.7)));
        assert!(deterministic(&SamplingParams { seed: Some(42), ..params(0.7) }));
    }
}
