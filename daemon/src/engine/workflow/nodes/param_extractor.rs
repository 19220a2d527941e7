//! parameter-extractor: asks the node's model for its parameters as one JSON
//! object, constrained by the JSON schema the parameters make (the local
//! model turns it into a grammar; both of Dify's reasoning modes use it).
//! A bad extraction does not fail the node: as in Dify, `__is_success` is 0,
//! `__reason` says why, and every parameter gets a value of its type.

use serde::Deserialize;
use serde_json::{json, Map, Number, Value};

use super::super::{BoxFuture, NodeCtx, NodeError, NodeKind, NodeOutput, Role, VarType};
use super::{
    as_text, check_selector, collect_llm, first_json, nullable, parse, prompts_for_saving, template_refs, type_name, ModelConfig, Problems,
};

const SYSTEM_PROMPT: &str = "You are a helpful assistant tasked with extracting structured information based on specific criteria provided. Follow the guidelines below to ensure consistency and accuracy.
### Task
Always answer with one JSON object holding the parameters described by the structure. Ensure that the information extraction is contextual and aligns with the provided criteria.
### Instructions:
Some additional information is provided below. Always adhere to these instructions as closely as possible:
<instruction>
{instruction}
</instruction>";

const USER_PROMPT: &str = "### Structure
Here is the structure of the JSON object, you should always follow the structure.
<structure>
{structure}
</structure>

### Text to be converted to JSON
Inside <text></text> XML tags, there is a text that you should convert to a JSON object.
<text>
{text}
</text>";

#[derive(Debug, Deserialize)]
struct Data {
    query: Vec<String>,
    model: ModelConfig,
    #[serde(default)]
    parameters: Vec<Parameter>,
    #[serde(default)]
    instruction: Option<String>,
    #[serde(default)]
    reasoning_mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Parameter {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    description: String,
    #[serde(default, deserialize_with = "nullable")]
    required: bool,
    #[serde(default, deserialize_with = "nullable")]
    options: Vec<String>,
}

/// A parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Bool,
    Select,
    Array(Elem),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    String,
    Number,
    Object,
    Bool,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "string" => Kind::String,
            "number" => Kind::Number,
            "bool" | "boolean" => Kind::Bool,
            "select" => Kind::Select,
            "array[string]" => Kind::Array(Elem::String),
            "array[number]" => Kind::Array(Elem::Number),
            "array[object]" => Kind::Array(Elem::Object),
            "array[bool]" | "array[boolean]" => Kind::Array(Elem::Bool),
            _ => return None,
        })
    }
    fn var_type(self) -> VarType {
        match self {
            Kind::String | Kind::Select => VarType::String,
            Kind::Number => VarType::Number,
            Kind::Bool => VarType::Boolean,
            Kind::Array(Elem::String) => VarType::ArrayString,
            Kind::Array(Elem::Number) => VarType::ArrayNumber,
            Kind::Array(Elem::Object) => VarType::ArrayObject,
            Kind::Array(Elem::Bool) => VarType::ArrayBoolean,
        }
    }
    fn default_value(self) -> Value {
        match self {
            Kind::String | Kind::Select => json!(""),
            Kind::Number => json!(0),
            Kind::Bool => json!(false),
            Kind::Array(_) => json!([]),
        }
    }
}

impl Elem {
    fn schema(self) -> &'static str {
        match self {
            Elem::String => "string",
            Elem::Number => "number",
            Elem::Object => "object",
            Elem::Bool => "boolean",
        }
    }
    /// The item as this type (numeric strings become numbers), or `None`.
    fn coerce(self, v: &Value) -> Option<Value> {
        match (self, v) {
            (Elem::String, Value::String(_))
            | (Elem::Object, Value::Object(_))
            | (Elem::Bool, Value::Bool(_))
            | (Elem::Number, Value::Number(_)) => Some(v.clone()),
            (Elem::Number, Value::String(s)) => s.trim().parse::<Number>().ok().map(Value::Number),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Param {
    name: String,
    kind: Kind,
    description: String,
    required: bool,
    options: Vec<String>,
}

#[derive(Debug)]
pub struct ParameterExtractor {
    query: Vec<String>,
    model: ModelConfig,
    params: Vec<Param>,
    instruction: String,
    reasoning_mode: String,
}

impl ParameterExtractor {
    pub fn build(data: &Value) -> Result<ParameterExtractor, Problems> {
        let d: Data = parse(data)?;
        let mut problems = Problems::new();
        check_selector("query", &d.query, &mut problems);
        if d.model.name.is_empty() {
            problems.push(("model.name".into(), "the model has no name".into()));
        }
        if d.parameters.is_empty() {
            problems.push(("parameters".into(), "a parameter extractor needs at least one parameter".into()));
        }
        let mut params = Vec::new();
        for (i, p) in d.parameters.into_iter().enumerate() {
            if p.name.is_empty() || p.name.starts_with("__") {
                problems.push((format!("parameters.{i}.name"), format!("{:?} is not a usable parameter name", p.name)));
            } else if params.iter().any(|o: &Param| o.name == p.name) {
                problems.push((format!("parameters.{i}.name"), format!("two parameters are named {:?}", p.name)));
            }
            let Some(kind) = Kind::parse(&p.kind) else {
                problems.push((format!("parameters.{i}.type"), format!("unknown parameter type {:?}", p.kind)));
                continue;
            };
            params.push(Param { name: p.name, kind, description: p.description, required: p.required, options: p.options });
        }
        let reasoning_mode = d.reasoning_mode.unwrap_or_else(|| "function_call".into());
        if reasoning_mode != "function_call" && reasoning_mode != "prompt" {
            problems.push(("reasoning_mode".into(), format!("reasoning mode is function_call or prompt, got {reasoning_mode:?}")));
        }
        if problems.is_empty() {
            Ok(ParameterExtractor {
                query: d.query,
                model: d.model,
                params,
                instruction: d.instruction.unwrap_or_default(),
                reasoning_mode,
            })
        } else {
            Err(problems)
        }
    }

    /// Dify's parameter schema: one property per parameter.
    fn schema(&self) -> Value {
        let mut props = Map::new();
        for p in &self.params {
            let mut s = match p.kind {
                Kind::String => json!({"type": "string"}),
                Kind::Number => json!({"type": "number"}),
                Kind::Bool => json!({"type": "boolean"}),
                Kind::Select if p.options.is_empty() => json!({"type": "string"}),
                Kind::Select => json!({"type": "string", "enum": p.options}),
                Kind::Array(e) => json!({"type": "array", "items": {"type": e.schema()}}),
            };
            if let Value::Object(o) = &mut s {
                o.insert("description".into(), Value::String(p.description.clone()));
            }
            props.insert(p.name.clone(), s);
        }
        let required: Vec<&str> = self.params.iter().filter(|p| p.required).map(|p| p.name.as_str()).collect();
        json!({"type": "object", "properties": props, "required": required})
    }

    /// Every parameter's value (a default where the answer has none or a
    /// wrong one), and what was wrong.
    fn extract(&self, text: &str) -> (Map<String, Value>, Vec<String>) {
        let mut errors = Vec::new();
        let answer = match first_json(text) {
            Some(Value::Object(o)) => o,
            Some(other) => {
                errors.push(format!("invalid JSON: expected an object, got {}", type_name(&other)));
                Map::new()
            }
            None => {
                errors.push("invalid JSON: the model's answer holds no JSON object".into());
                Map::new()
            }
        };
        let no_json = !errors.is_empty();
        let mut out = Map::new();
        for p in &self.params {
            let value = match answer.get(&p.name) {
                None | Some(Value::Null) => {
                    if p.required && !no_json {
                        errors.push(format!("missing required parameter {}", p.name));
                    }
                    None
                }
                Some(v) => match self.check(p, v) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                },
            };
            out.insert(p.name.clone(), value.unwrap_or_else(|| p.kind.default_value()));
        }
        (out, errors)
    }

    fn check(&self, p: &Param, v: &Value) -> Result<Value, String> {
        let wrong = || format!("parameter {} should be {}, got {}", p.name, p.kind_name(), type_name(v));
        match p.kind {
            Kind::String => v.is_string().then(|| v.clone()).ok_or_else(wrong),
            Kind::Select => {
                let s = v.as_str().ok_or_else(wrong)?;
                if p.options.is_empty() || p.options.iter().any(|o| o == s) {
                    Ok(v.clone())
                } else {
                    Err(format!("parameter {} is {s:?}, which is not one of its options {:?}", p.name, p.options))
                }
            }
            Kind::Number => Elem::Number.coerce(v).ok_or_else(wrong),
            Kind::Bool => v.is_boolean().then(|| v.clone()).ok_or_else(wrong),
            Kind::Array(e) => {
                let items = v.as_array().ok_or_else(wrong)?;
                items.iter().map(|i| e.coerce(i).ok_or_else(wrong)).collect::<Result<Vec<_>, _>>().map(Value::Array)
            }
        }
    }
}

impl Param {
    fn kind_name(&self) -> String {
        match self.kind {
            Kind::String => "a string".into(),
            Kind::Select => "one of its options".into(),
            Kind::Number => "a number".into(),
            Kind::Bool => "a boolean".into(),
            Kind::Array(e) => format!("an array of {}", e.schema()),
        }
    }
}

impl NodeKind for ParameterExtractor {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        let mut refs = vec![("query".to_owned(), self.query.clone())];
        template_refs("instruction", &self.instruction, &mut refs);
        refs
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        let mut out: Vec<(String, VarType)> = self.params.iter().map(|p| (p.name.clone(), p.kind.var_type())).collect();
        out.push(("__is_success".into(), VarType::Number));
        out.push(("__reason".into(), VarType::String));
        out.push(("__usage".into(), VarType::Object));
        out
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let query = ctx.scope.get(&self.query).map(|v| as_text(&v)).unwrap_or_default();
            let instruction = ctx.scope.render(&self.instruction);
            let schema = self.schema();
            let messages = vec![
                (Role::System, SYSTEM_PROMPT.replace("{instruction}", &instruction)),
                (Role::User, USER_PROMPT.replace("{structure}", &schema.to_string()).replace("{text}", &query)),
            ];
            let mut process_data = Map::new();
            process_data.insert("model_mode".into(), Value::String(self.model.mode.clone()));
            process_data.insert("reasoning_mode".into(), Value::String(self.reasoning_mode.clone()));
            process_data.insert("prompts".into(), prompts_for_saving(&messages));
            let call = self.model.call(ctx.node_id, messages, Some(schema));
            let rx = ctx.effects.llm(call).await.map_err(NodeError::Failed)?;
            let answer = collect_llm(rx).await.map_err(NodeError::Failed)?;
            process_data.insert("usage".into(), answer.usage());
            process_data.insert("llm_text".into(), Value::String(answer.text.clone()));
            let (mut outputs, errors) = self.extract(&answer.text);
            outputs.insert("__is_success".into(), json!(if errors.is_empty() { 1 } else { 0 }));
            outputs.insert("__reason".into(), if errors.is_empty() { Value::Null } else { Value::String(errors.join("; ")) });
            outputs.insert("__usage".into(), answer.usage());
            let mut inputs = Map::new();
            inputs.insert("query".into(), Value::String(query));
            inputs.insert("instruction".into(), Value::String(instruction));
            Ok(NodeOutput { inputs, process_data, outputs, tokens: answer.total_tokens(), ..NodeOutput::default() })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ctx, limits, FakeEffects, MapScope};
    use super::*;

    fn node() -> ParameterExtractor {
        ParameterExtractor::build(&json!({
            "type": "parameter-extractor",
            "query": ["sys", "query"],
            "model": {"provider": "openai", "name": "gpt-4o-mini", "mode": "chat", "completion_params": {}},
            "reasoning_mode": "prompt",
            "instruction": "Dates are in {{#start.tz#}}",
            "parameters": [
                {"name": "city", "type": "string", "description": "the city", "required": true},
                {"name": "days", "type": "number", "description": "how many days", "required": false},
                {"name": "unit", "type": "select", "description": "unit", "required": false, "options": ["C", "F"]},
                {"name": "tags", "type": "array[string]", "description": "tags", "required": false},
                {"name": "hourly", "type": "bool", "description": "hourly?", "required": false}
            ]
        }))
        .unwrap()
    }

    async fn extract(answer: &str) -> Map<String, Value> {
        let scope = MapScope::with(&[("sys.query", json!("weather in Oslo for 3 days")), ("start.tz", json!("CET"))]);
        let fx = FakeEffects::llm_answers(&[answer]);
        let out = node().run(ctx(&scope, &fx, &limits())).await.unwrap();
        let call = &fx.llm_calls()[0];
        let schema = call.json_schema.as_ref().unwrap();
        assert_eq!(schema["required"], json!(["city"]));
        assert_eq!(schema["properties"]["unit"]["enum"], json!(["C", "F"]));
        assert_eq!(schema["properties"]["tags"]["items"]["type"], "string");
        assert!(call.messages[0].1.contains("Dates are in CET"));
        assert!(call.messages[1].1.contains("<text>\nweather in Oslo for 3 days\n</text>"));
        out.outputs
    }

    #[tokio::test]
    async fn extracts_typed_parameters() {
        let n = node();
        assert_eq!(n.outputs()[1], ("days".to_owned(), VarType::Number));
        assert_eq!(n.outputs()[5], ("__is_success".to_owned(), VarType::Number));
        assert_eq!(n.references()[1].0, "instruction");
        let out = extract(r#"{"city": "Oslo", "days": "3", "unit": "C", "tags": ["a"], "hourly": true}"#).await;
        assert_eq!(out["city"], "Oslo");
        assert_eq!(out["days"], 3);
        assert_eq!(out["tags"], json!(["a"]));
        assert_eq!(out["hourly"], true);
        assert_eq!(out["__is_success"], 1);
        assert_eq!(out["__reason"], Value::Null);
        assert_eq!(out["__usage"]["total_tokens"], 15);
        // Optional parameters the model leaves out get their type's empty value.
        let out = extract(r#"{"city": "Oslo"}"#).await;
        assert_eq!(out["__is_success"], 1);
        assert_eq!(out["days"], 0);
        assert_eq!(out["unit"], "");
        assert_eq!(out["tags"], json!([]));
        assert_eq!(out["hourly"], false);
    }

    #[tokio::test]
    async fn bad_extractions_report_without_failing() {
        let out = extract("no idea").await;
        assert_eq!(out["__is_success"], 0);
        assert!(out["__reason"].as_str().unwrap().starts_with("invalid JSON"));
        assert_eq!(out["city"], "");
        let out = extract(r#"{"days": 2}"#).await;
        assert_eq!(out["__is_success"], 0);
        assert_eq!(out["__reason"], "missing required parameter city");
        assert_eq!(out["days"], 2);
        let out = extract(r#"{"city": 5, "unit": "K", "tags": [1], "days": "many"}"#).await;
        assert_eq!(out["__is_success"], 0);
        let reason = out["__reason"].as_str().unwrap();
        assert!(reason.contains("parameter city should be a string, got number"), "{reason}");
        assert!(reason.contains("parameter unit is \"K\", which is not one of its options"), "{reason}");
        assert!(reason.contains("parameter tags should be an array of string"), "{reason}");
        assert!(reason.contains("parameter days should be a number, got string"), "{reason}");
        assert_eq!(out["city"], "");
        let out = extract("[1, 2]").await;
        assert_eq!(out["__reason"], "invalid JSON: expected an object, got array");
    }

    #[tokio::test]
    async fn model_failures_fail_the_node() {
        let scope = MapScope::default();
        let fx = FakeEffects::default();
        fx.push_llm(Err("no model mapped".into()));
        let e = node().run(ctx(&scope, &fx, &limits())).await.unwrap_err();
        assert_eq!(e.to_string(), "no model mapped");
    }

    #[test]
    fn bad_data_names_each_field() {
        let e = ParameterExtractor::build(&json!({
            "query": ["sys"],
            "model": {"provider": "openai", "name": "m"},
            "reasoning_mode": "vibes",
            "parameters": [
                {"name": "", "type": "string", "description": "", "required": false},
                {"name": "a", "type": "date", "description": "", "required": false},
                {"name": "b", "type": "number", "description": "", "required": false},
                {"name": "b", "type": "number", "description": "", "required": false}
            ]
        }))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(fields, vec!["query", "parameters.0.name", "parameters.1.type", "parameters.3.name", "reasoning_mode"]);
        let e = ParameterExtractor::build(
            &json!({"query": ["sys", "query"], "model": {"provider": "o", "name": "m"}, "parameters": [{"name": "x"}]}),
        )
        .unwrap_err();
        assert_eq!(e[0].0, "parameters.0.type");
    }
}
