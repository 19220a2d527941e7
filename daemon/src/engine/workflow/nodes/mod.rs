//! The node types that implement [`NodeKind`](super::NodeKind): each module
//! owns one Dify node type's `data` shape (serde, as Dify exports it) and its
//! behaviour. start, end, answer, llm, iteration and loop are the executor's
//! (`run`); code is built by `graph` with the daemon's capabilities; tool
//! and agent are refused there.
//!
//! This module also holds what several nodes share: parsing `data` with the
//! failing field's path, the selectors inside `{{#node.var#}}` templates, a
//! DSL model block turned into an [`LlmCall`], and [`collect_llm`], which
//! reads a model's stream to its text and usage. Nodes own no I/O: they ask
//! [`Effects`](super::Effects) through their [`NodeCtx`](super::NodeCtx).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{LlmCall, LlmChunk, NodeKind, Role, VarType};

pub mod aggregator;
pub mod assigner;
pub mod classifier;
pub mod code;
pub mod compare;
pub mod doc_extractor;
pub mod http;
pub mod knowledge;
pub mod list_operator;
pub mod param_extractor;
pub mod template;

/// A build's problems: (field as a dotted path inside `data`, message).
pub type Problems = Vec<(String, String)>;

/// Compiles one node's `data` for the types this module knows; `None` for
/// any other type. Errors are (field, message) pairs, fields as dotted paths
/// inside `data`.
pub fn build(node_type: &str, data: &Value) -> Option<Result<Box<dyn NodeKind>, Problems>> {
    fn boxed<N: NodeKind + 'static>(r: Result<N, Problems>) -> Result<Box<dyn NodeKind>, Problems> {
        r.map(|n| Box::new(n) as Box<dyn NodeKind>)
    }
    Some(match node_type {
        "template-transform" => boxed(template::TemplateTransform::build(data)),
        // "variable-assigner" is the aggregator's name in older DSLs.
        "variable-aggregator" | "variable-assigner" => boxed(aggregator::Aggregator::build(data)),
        "assigner" => boxed(assigner::Assigner::build(data)),
        "list-operator" => boxed(list_operator::ListOperator::build(data)),
        "http-request" => boxed(http::HttpRequest::build(data)),
        "question-classifier" => boxed(classifier::QuestionClassifier::build(data)),
        "parameter-extractor" => boxed(param_extractor::ParameterExtractor::build(data)),
        "document-extractor" => boxed(doc_extractor::DocumentExtractor::build(data)),
        "knowledge-retrieval" => boxed(knowledge::KnowledgeRetrieval::build(data)),
        _ => return None,
    })
}

/// Deserialises `data` as `T`; the one problem serde finds, with its field.
pub(crate) fn parse<T: DeserializeOwned>(data: &Value) -> Result<T, Problems> {
    serde_path_to_error::deserialize::<_, T>(data).map_err(|e| {
        let mut field = dotted(&e.path().to_string());
        let message = e.inner().to_string();
        // serde names a missing field in the message, at its parent's path.
        if let Some(name) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            field = if field.is_empty() { name.to_owned() } else { format!("{field}.{name}") };
        }
        vec![(if field.is_empty() { "data".to_owned() } else { field }, message)]
    })
}

/// For `#[serde(deserialize_with)]`: an explicit `null` (which exports
/// write for fields the builder left empty) as the type's default.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// serde_path_to_error's `a[0].b` as `a.0.b`; its root `.` as "".
fn dotted(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    path.replace('[', ".").replace(']', "")
}

/// Checks a selector has a node (or `sys`/`env`/`conversation`) and a name.
pub(crate) fn check_selector(field: &str, selector: &[String], problems: &mut Problems) {
    if selector.len() < 2 || selector.iter().any(|s| s.is_empty()) {
        problems.push((field.to_owned(), format!("a variable selector needs a node id and a variable name, got {selector:?}")));
    }
}

/// The selectors a `{{#node_id.var.path#}}` template reads, in order, as
/// Dify's variable template parser finds them.
pub(crate) fn template_selectors(template: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{#") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("#}}") else { break };
        let inner = &after[..end];
        let parts: Vec<String> = inner.split('.').map(str::to_owned).collect();
        let valid = parts.len() >= 2
            && parts.len() <= 11
            && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if valid {
            out.push(parts);
            rest = &after[end + 3..];
        } else {
            rest = &rest[start + 3..];
        }
    }
    out
}

/// Adds every selector of `template` to `refs`, under `field`.
pub(crate) fn template_refs(field: &str, template: &str, refs: &mut Vec<(String, Vec<String>)>) {
    refs.extend(template_selectors(template).into_iter().map(|s| (field.to_owned(), s)));
}

/// Dify's type names (`string`, `array[number]`, ...) as [`VarType`].
pub(crate) fn var_type(name: &str) -> Option<VarType> {
    Some(match name {
        "string" | "secret" | "paragraph" | "text-input" | "select" => VarType::String,
        "number" | "integer" | "float" => VarType::Number,
        "boolean" | "bool" => VarType::Boolean,
        "object" => VarType::Object,
        "file" => VarType::File,
        "array[string]" => VarType::ArrayString,
        "array[number]" => VarType::ArrayNumber,
        "array[boolean]" | "array[bool]" => VarType::ArrayBoolean,
        "array[object]" => VarType::ArrayObject,
        "array[file]" => VarType::ArrayFile,
        "any" | "array[any]" | "array" => VarType::Any,
        _ => return None,
    })
}

/// A JSON value's type, as error messages name it.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as text, the way Dify prints a variable into a prompt: strings
/// as they are, anything else as JSON.
pub(crate) fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The upload id of a Dify file object (`related_id`, or `upload_file_id`
/// as the Service API takes it); only uploaded files can be read here.
pub(crate) fn upload_id(file: &Value) -> Result<String, String> {
    let Value::Object(f) = file else { return Err(format!("expected a file, got a {}", type_name(file))) };
    let method = f.get("transfer_method").and_then(Value::as_str).unwrap_or("local_file");
    if method == "remote_url" {
        let url = f.get("remote_url").or_else(|| f.get("url")).and_then(Value::as_str).unwrap_or("");
        return Err(format!("file {url:?} is a remote URL; only uploaded files can be read"));
    }
    ["related_id", "upload_file_id"]
        .iter()
        .find_map(|k| f.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .map(str::to_owned)
        .ok_or_else(|| "the file has no related_id or upload_file_id".to_owned())
}

// ---------------------------------------------------------------- models

/// A node's `model` block, as Dify exports it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ModelConfig {
    pub provider: String,
    pub name: String,
    #[serde(default = "chat_mode")]
    pub mode: String,
    #[serde(default)]
    pub completion_params: Map<String, Value>,
}

fn chat_mode() -> String {
    "chat".to_owned()
}

impl ModelConfig {
    /// The model call for `messages`, with the completion params Dify's
    /// builder sets (temperature, top_p, max_tokens, seed, stop).
    pub fn call(&self, node_id: &str, messages: Vec<(Role, String)>, json_schema: Option<Value>) -> LlmCall {
        let p = &self.completion_params;
        let float = |k: &str| p.get(k).and_then(Value::as_f64).map(|f| f as f32);
        let uint = |k: &str| p.get(k).and_then(Value::as_u64).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let stop = match p.get("stop") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
            _ => Vec::new(),
        };
        LlmCall {
            node_id: node_id.to_owned(),
            provider: self.provider.clone(),
            model: self.name.clone(),
            messages,
            temperature: float("temperature"),
            top_p: float("top_p"),
            max_tokens: uint("max_tokens"),
            seed: uint("seed"),
            stop,
            json_schema,
        }
    }
}

/// A model's whole answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LlmResult {
    pub text: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub finish_reason: String,
}

impl LlmResult {
    /// Dify's `usage` object (process_data, outputs).
    pub fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": u64::from(self.prompt_tokens) + u64::from(self.completion_tokens),
        })
    }
    pub fn total_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }
}

/// Reads a model call's stream to its end: the text, then the usage of its
/// `Done`. A `Failed` chunk, or a stream that closes before `Done`, is the
/// error.
pub async fn collect_llm(mut rx: mpsc::Receiver<LlmChunk>) -> Result<LlmResult, String> {
    let mut text = String::new();
    while let Some(chunk) = rx.recv().await {
        match chunk {
            LlmChunk::Text(t) => text.push_str(&t),
            LlmChunk::Done { prompt_tokens, completion_tokens, finish_reason } => {
                return Ok(LlmResult { text, prompt_tokens, completion_tokens, finish_reason });
            }
            LlmChunk::Failed(e) => return Err(e),
        }
    }
    Err("the model's answer ended before it was finished".to_owned())
}

/// Dify's prompt record for `process_data.prompts`.
pub(crate) fn prompts_for_saving(messages: &[(Role, String)]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|(role, text)| {
                let role = match role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                json!({ "role": role, "text": text, "files": [] })
            })
            .collect(),
    )
}

/// The first complete JSON object or array in a model's text (models wrap
/// JSON in prose or code fences), as Dify's extractors look for it.
pub(crate) fn first_json(text: &str) -> Option<Value> {
    for (start, c) in text.char_indices() {
        if c != '{' && c != '[' {
            continue;
        }
        let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        if let Some(Ok(v)) = stream.next() {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    /// Node `data` blocks as Dify's builder exports them (extra fields and all).
    fn exported() -> Vec<(&'static str, Value)> {
        vec![
            (
                "template-transform",
                json!({"desc": "", "selected": false, "title": "Table", "type": "template-transform",
                "template": "|URL|\n{% for d in arg1 -%}\n|{{d.url}}|\n{% endfor -%}",
                "variables": [{"value_selector": ["1720759755103", "result"], "variable": "arg1"}]}),
            ),
            (
                "variable-aggregator",
                json!({"desc": "", "output_type": "string", "selected": false, "title": "Agg", "type": "variable-aggregator",
                "variables": [["1736326851692", "text"], ["1736326851693", "text"]]}),
            ),
            ("variable-assigner", json!({"output_type": "string", "type": "variable-assigner", "variables": [["a", "text"]]})),
            (
                "assigner",
                json!({"desc": "", "items": [{"input_type": "constant", "operation": "set", "value": "start",
                "variable_selector": ["conversation", "status"], "write_mode": "over-write"}], "selected": false, "title": "Set", "type": "assigner", "version": "2"}),
            ),
            (
                "assigner",
                json!({"assigned_variable_selector": ["conversation", "x"], "input_variable_selector": ["llm", "text"],
                "title": "V1", "type": "assigner", "write_mode": "over-write"}),
            ),
            (
                "list-operator",
                json!({"desc": "", "extract_by": {"enabled": false, "serial": "1"},
                "filter_by": {"conditions": [{"comparison_operator": "in", "key": "type", "value": ["image"]}], "enabled": true},
                "limit": {"enabled": false, "size": 10}, "order_by": {"enabled": false, "key": "", "value": "asc"},
                "selected": false, "title": "List", "type": "list-operator", "var_type": "array[file]", "item_var_type": "file",
                "variable": ["sys", "files"]}),
            ),
            (
                "http-request",
                json!({"authorization": {"config": null, "type": "no-auth"},
                "body": {"data": [{"id": "key-value-1", "key": "", "type": "text", "value": "{\"q\": \"{{#sys.query#}}\"}"}], "type": "json"},
                "desc": "", "headers": "Accept:application/json", "method": "post", "params": null,
                "retry_config": {"max_retries": 3, "retry_enabled": true, "retry_interval": 100}, "selected": false,
                "timeout": {"max_connect_timeout": 0, "max_read_timeout": 0, "max_write_timeout": 0}, "title": "HTTP", "type": "http-request",
                "url": "https://api.example.com/search", "variables": [], "ssl_verify": true}),
            ),
            (
                "question-classifier",
                json!({"classes": [{"id": "1", "name": "after-sales"}, {"id": "2", "name": "sales"}],
                "desc": "", "instruction": "", "instructions": "",
                "model": {"completion_params": {"temperature": 0.7}, "mode": "chat", "name": "gpt-4o-mini", "provider": "openai"},
                "query_variable_selector": ["1711528708197", "sys.query"], "selected": false, "title": "QC", "topics": [],
                "type": "question-classifier", "vision": {"enabled": false}}),
            ),
            (
                "parameter-extractor",
                json!({"desc": "", "instruction": "", "model": {"completion_params": {}, "mode": "chat", "name": "gpt-4o-mini", "provider": "openai"},
                "parameters": [{"description": "city", "name": "city", "required": true, "type": "string"},
                    {"description": null, "name": "unit", "required": null, "type": "select", "options": null}],
                "query": ["1711528708197", "sys.query"], "reasoning_mode": "prompt", "selected": false, "title": "PE",
                "type": "parameter-extractor", "variables": [], "vision": {"enabled": false}}),
            ),
            (
                "document-extractor",
                json!({"desc": "", "is_array_file": true, "selected": false, "title": "Doc", "type": "document-extractor",
                "variable_selector": ["sys", "files"]}),
            ),
        ]
    }

    #[test]
    fn build_accepts_difys_exported_shapes() {
        for (kind, data) in exported() {
            match build(kind, &data) {
                Some(Ok(node)) => assert!(!node.references().is_empty(), "{kind} reads nothing"),
                Some(Err(e)) => panic!("{kind}: {e:?}"),
                None => panic!("{kind} is not built here"),
            }
        }
        for other in ["start", "end", "answer", "llm", "if-else", "iteration", "loop", "code", "tool", "agent"] {
            assert!(build(other, &json!({})).is_none(), "{other}");
        }
    }

    #[test]
    fn template_selectors_follow_difys_pattern() {
        let t = "a {{#start.q#}} b {{#node_1.body.x#}} {{#bad#}} {{#sys.query#}} {{ #x.y# }} {{#a.b-c#}}";
        assert_eq!(
            template_selectors(t),
            vec![
                vec!["start".to_owned(), "q".to_owned()],
                vec!["node_1".to_owned(), "body".to_owned(), "x".to_owned()],
                vec!["sys".to_owned(), "query".to_owned()],
            ]
        );
    }

    #[test]
    fn parse_names_the_field() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct D {
            a: Vec<Inner>,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            b: String,
        }
        let e = parse::<D>(&json!({"a": [{"b": "x"}, {"b": 3}]})).unwrap_err();
        assert_eq!(e[0].0, "a.1.b");
        let e = parse::<D>(&json!({"a": [{}]})).unwrap_err();
        assert_eq!(e[0].0, "a.0.b");
        let e = parse::<D>(&json!({})).unwrap_err();
        assert_eq!(e[0].0, "a");
    }

    #[tokio::test]
    async fn collect_llm_joins_text_and_reads_usage() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(LlmChunk::Text("he".into())).await.unwrap();
        tx.send(LlmChunk::Text("llo".into())).await.unwrap();
        tx.send(LlmChunk::Done { prompt_tokens: 3, completion_tokens: 2, finish_reason: "stop".into() }).await.unwrap();
        let r = collect_llm(rx).await.unwrap();
        assert_eq!(r.text, "hello");
        assert_eq!(r.total_tokens(), 5);
        assert_eq!(r.usage()["total_tokens"], 5);
    }

    #[tokio::test]
    async fn collect_llm_fails_on_failed_or_cut_streams() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(LlmChunk::Text("he".into())).await.unwrap();
        tx.send(LlmChunk::Failed("out of memory".into())).await.unwrap();
        assert_eq!(collect_llm(rx).await.unwrap_err(), "out of memory");
        let (tx, rx) = mpsc::channel(4);
        tx.send(LlmChunk::Text("he".into())).await.unwrap();
        drop(tx);
        assert!(collect_llm(rx).await.unwrap_err().contains("ended before"));
    }

    #[test]
    fn first_json_skips_prose_and_fences() {
        assert_eq!(first_json("Sure! ```json\n{\"a\": [1, 2]}\n``` done"), Some(json!({"a": [1, 2]})));
        assert_eq!(first_json("{broken {\"b\": 1}"), Some(json!({"b": 1})));
        assert_eq!(first_json("no json here"), None);
    }

    #[test]
    fn model_config_maps_completion_params() {
        let m: ModelConfig = parse(&json!({
            "provider": "openai", "name": "gpt-4o-mini", "mode": "chat",
            "completion_params": {"temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"], "seed": 7}
        }))
        .unwrap();
        let c = m.call("n", vec![(Role::User, "hi".into())], None);
        assert_eq!(c.temperature, Some(0.2));
        assert_eq!(c.max_tokens, Some(64));
        assert_eq!(c.seed, Some(7));
        assert_eq!(c.stop, vec!["\n\n".to_owned()]);
        assert_eq!(c.model, "gpt-4o-mini");
    }
}
