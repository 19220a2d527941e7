//! Dify's node `data` shapes (serde, as Dify exports them) for the
//! executor's own node types, turned into the compiled specs of
//! [`graph`](super); refusals of the node types this build cannot run; error
//! strategies and retries. Errors are (field, message) pairs, fields as
//! dotted paths.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::nodes;
use super::super::vars::Template;
use super::super::{Capabilities, Role, VarType};
use super::{Case, Condition, ErrorMode, IterationSpec, Kind, LlmSpec, LoopInit, LoopSpec, Strategy};

/// Problems with a node's data: (field, message).
pub(super) type Errors = Vec<(String, String)>;

/// One field of the start node's form.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StartVar {
    pub variable: String,
    #[serde(default)]
    pub label: String,
    /// text-input, paragraph, select, number, file, file-list, checkbox, json_object.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub max_length: Option<u32>,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub default: Option<Value>,
}

impl StartVar {
    pub(super) fn var_type(&self) -> VarType {
        match self.kind.as_str() {
            "number" => VarType::Number,
            "file" => VarType::File,
            "file-list" => VarType::ArrayFile,
            "checkbox" => VarType::Boolean,
            "json_object" => VarType::Object,
            _ => VarType::String,
        }
    }
}

#[derive(Deserialize)]
struct StartData {
    #[serde(default)]
    variables: Vec<StartVar>,
}

#[derive(Deserialize)]
struct EndOutput {
    variable: String,
    value_selector: Vec<String>,
}

#[derive(Deserialize)]
struct EndData {
    #[serde(default)]
    outputs: Vec<EndOutput>,
}

#[derive(Deserialize)]
struct AnswerData {
    answer: String,
}

#[derive(Deserialize)]
struct ModelData {
    provider: String,
    name: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    completion_params: Map<String, Value>,
}

#[derive(Deserialize)]
struct PromptMsg {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    edition_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PromptData {
    Chat(Vec<PromptMsg>),
    Completion(PromptMsg),
}

#[derive(Deserialize)]
struct ContextData {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    variable_selector: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct WindowData {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    size: Option<u32>,
}

#[derive(Deserialize)]
struct MemoryData {
    #[serde(default)]
    window: Option<WindowData>,
    #[serde(default)]
    query_prompt_template: Option<String>,
}

#[derive(Deserialize)]
struct StructuredData {
    #[serde(default)]
    schema: Option<Value>,
}

#[derive(Deserialize)]
struct LlmData {
    model: ModelData,
    prompt_template: PromptData,
    #[serde(default)]
    context: Option<ContextData>,
    #[serde(default)]
    memory: Option<MemoryData>,
    #[serde(default)]
    structured_output_enabled: bool,
    #[serde(default)]
    structured_output: Option<StructuredData>,
}

#[derive(Deserialize)]
struct CondData {
    variable_selector: Vec<String>,
    comparison_operator: String,
    #[serde(default)]
    value: Value,
}

fn and() -> String {
    "and".into()
}

#[derive(Deserialize)]
struct CaseData {
    case_id: String,
    #[serde(default = "and")]
    logical_operator: String,
    #[serde(default)]
    conditions: Vec<CondData>,
}

#[derive(Deserialize)]
struct IfElseData {
    #[serde(default)]
    cases: Option<Vec<CaseData>>,
    #[serde(default)]
    logical_operator: Option<String>,
    #[serde(default)]
    conditions: Option<Vec<CondData>>,
}

#[derive(Deserialize)]
struct IterationData {
    iterator_selector: Vec<String>,
    output_selector: Vec<String>,
    #[serde(default)]
    output_type: Option<String>,
    start_node_id: String,
    #[serde(default)]
    is_parallel: bool,
    #[serde(default)]
    parallel_nums: Option<u32>,
    #[serde(default)]
    error_handle_mode: Option<String>,
    #[serde(default)]
    flatten_output: Option<bool>,
}

#[derive(Deserialize)]
struct LoopVarData {
    label: String,
    #[serde(default)]
    var_type: Option<String>,
    #[serde(default)]
    value_type: Option<String>,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct LoopData {
    loop_count: u32,
    #[serde(default)]
    break_conditions: Vec<CondData>,
    #[serde(default = "and")]
    logical_operator: String,
    #[serde(default)]
    loop_variables: Vec<LoopVarData>,
    start_node_id: String,
}

#[derive(Deserialize)]
struct DefaultValue {
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct RetryData {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    max_retries: u32,
    #[serde(default)]
    retry_interval: u64,
}

#[derive(Deserialize)]
pub(super) struct VarDecl {
    pub(super) name: String,
    #[serde(default)]
    pub(super) value_type: Option<String>,
    #[serde(default)]
    pub(super) value: Value,
    #[serde(default)]
    pub(super) description: Option<String>,
}

/// A Dify value type name as a [`VarType`].
pub fn var_type(name: &str) -> VarType {
    match name {
        "string" | "secret" | "paragraph" | "text-input" | "select" => VarType::String,
        "number" | "integer" => VarType::Number,
        "boolean" => VarType::Boolean,
        "object" => VarType::Object,
        "file" => VarType::File,
        "array[string]" => VarType::ArrayString,
        "array[number]" => VarType::ArrayNumber,
        "array[boolean]" => VarType::ArrayBoolean,
        "array[object]" => VarType::ArrayObject,
        "array[file]" => VarType::ArrayFile,
        _ => VarType::Any,
    }
}

pub(super) fn text_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

pub(super) fn parse<T: DeserializeOwned>(data: &Value) -> Result<T, Vec<(String, String)>> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "data".to_owned() } else { format!("data.{path}") };
        vec![(field, e.into_inner().to_string())]
    })
}

/// A node's kind from its type and data; refuses what this build cannot run.
pub(super) fn kind(node_type: &str, data: &Value, caps: &Capabilities, ids: &HashMap<String, usize>) -> Result<Kind, Errors> {
    match node_type {
        "start" => parse::<StartData>(data).map(|s| Kind::Start(s.variables)),
        "end" => parse::<EndData>(data).map(|e| Kind::End(e.outputs.into_iter().map(|o| (o.variable, o.value_selector)).collect())),
        "answer" => parse::<AnswerData>(data).map(|a| Kind::Answer(Template::parse(&a.answer))),
        "llm" => parse::<LlmData>(data).and_then(llm_spec).map(|s| Kind::Llm(Box::new(s))),
        "if-else" => parse::<IfElseData>(data).and_then(if_else_cases).map(Kind::IfElse),
        "iteration" => parse::<IterationData>(data).and_then(|it| iteration_spec(it, ids)).map(|s| Kind::Iteration(Box::new(s))),
        "iteration-start" => Ok(Kind::IterationStart),
        "loop" => parse::<LoopData>(data).and_then(|l| loop_spec(l, ids)).map(|s| Kind::Loop(Box::new(s))),
        "loop-start" => Ok(Kind::LoopStart),
        "loop-end" => Ok(Kind::LoopEnd),
        "code" => nodes::code::Code::build(data, caps).map(|c| Kind::Other(Box::new(c))),
        "tool" => {
            let provider = text_of(data, "provider_id").or_else(|| text_of(data, "provider_name")).unwrap_or("?");
            let tool = text_of(data, "tool_name").unwrap_or("?");
            Err(vec![("type".into(), format!("tool nodes need Dify's cloud marketplace; not supported offline: tool {provider}/{tool}"))])
        }
        "agent" => {
            let strategy = text_of(data, "agent_strategy_provider_name").unwrap_or("?");
            let name = text_of(data, "agent_strategy_name").unwrap_or("?");
            Err(vec![("type".into(), format!("agent nodes need Dify's cloud marketplace; not supported offline: agent {strategy}/{name}"))])
        }
        "" => Err(vec![("data.type".into(), "the node has no type".into())]),
        other => match nodes::build(other, data) {
            Some(r) => r.map(Kind::Other),
            None => Err(vec![(
                "type".into(),
                format!("node type {other:?} is not supported offline (plugin and unknown node types need Dify's cloud marketplace)"),
            )]),
        },
    }
}

/// The node's error strategy and retries (max retries, interval in ms).
pub(super) fn strategy(data: &Value) -> (Strategy, Option<(u32, u64)>, Errors) {
    let mut errs = Vec::new();
    let mut strategy = Strategy::Fail;
    match text_of(data, "error_strategy") {
        None | Some("none") | Some("") => {}
        Some("fail-branch") => strategy = Strategy::FailBranch,
        Some("default-value") => {
            let list = data.get("default_value").cloned().unwrap_or(Value::Array(Vec::new()));
            match parse::<Vec<DefaultValue>>(&list) {
                Ok(items) => strategy = Strategy::DefaultValue(items.into_iter().map(|x| (x.key, x.value)).collect()),
                Err(e) => errs.extend(e.into_iter().map(|(f, m)| (f.replacen("data", "data.default_value", 1), m))),
            }
        }
        Some(other) => errs.push(("data.error_strategy".into(), format!("unknown error strategy {other:?}"))),
    }
    let mut retry = None;
    if let Some(rc) = data.get("retry_config").filter(|v| !v.is_null()) {
        match parse::<RetryData>(rc) {
            Ok(r) if r.enabled && r.max_retries > 0 => retry = Some((r.max_retries, r.retry_interval)),
            Ok(_) => {}
            Err(e) => errs.extend(e.into_iter().map(|(f, m)| (f.replacen("data", "data.retry_config", 1), m))),
        }
    }
    (strategy, retry, errs)
}

fn conditions(list: Vec<CondData>, prefix: &str) -> Result<Vec<Condition>, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let mut out = Vec::new();
    for (j, c) in list.into_iter().enumerate() {
        if c.variable_selector.len() < 2 {
            errs.push((format!("{prefix}[{j}].variable_selector"), "the condition names no variable".into()));
        }
        let template = match &c.value {
            Value::String(s) => Some(Template::parse(s)),
            _ => None,
        };
        out.push(Condition { selector: c.variable_selector, operator: c.comparison_operator, template, literal: c.value });
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

fn if_else_cases(d: IfElseData) -> Result<Vec<Case>, Vec<(String, String)>> {
    match (d.cases, d.conditions) {
        (Some(cases), _) => {
            let mut out = Vec::new();
            let mut errs = Vec::new();
            for (j, c) in cases.into_iter().enumerate() {
                match conditions(c.conditions, &format!("data.cases[{j}].conditions")) {
                    Ok(conds) => out.push(Case { id: c.case_id, all: c.logical_operator != "or", conditions: conds }),
                    Err(e) => errs.extend(e),
                }
            }
            if errs.is_empty() {
                Ok(out)
            } else {
                Err(errs)
            }
        }
        (None, Some(conds)) => {
            let all = d.logical_operator.as_deref() != Some("or");
            Ok(vec![Case { id: "true".into(), all, conditions: conditions(conds, "data.conditions")? }])
        }
        (None, None) => Err(vec![("data.cases".into(), "missing field `cases`".into())]),
    }
}

fn llm_spec(d: LlmData) -> Result<LlmSpec, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let chat = d.model.mode.as_deref() != Some("completion");
    let msgs: Vec<(String, PromptMsg)> = match d.prompt_template {
        PromptData::Chat(list) => list.into_iter().enumerate().map(|(j, m)| (format!("data.prompt_template[{j}]"), m)).collect(),
        PromptData::Completion(m) => vec![("data.prompt_template".into(), m)],
    };
    let mut prompt = Vec::new();
    for (field, m) in msgs {
        if m.edition_type.as_deref() == Some("jinja2") {
            errs.push((
                format!("{field}.edition_type"),
                "Jinja2 prompts are not supported; use the basic editor's {{#node.var#}} references".into(),
            ));
        }
        let role = match m.role.as_deref() {
            Some("system") => Role::System,
            Some("assistant") => Role::Assistant,
            Some("user") | None => Role::User,
            Some(other) => {
                errs.push((format!("{field}.role"), format!("unknown role {other:?}")));
                Role::User
            }
        };
        prompt.push((role, Template::parse(&m.text)));
    }
    let p = &d.model.completion_params;
    let num = |k: &str| p.get(k).and_then(Value::as_f64);
    let stop = match p.get("stop") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        _ => Vec::new(),
    };
    let context = d.context.filter(|c| c.enabled).and_then(|c| c.variable_selector).filter(|s| !s.is_empty());
    let memory = d.memory.map(|m| {
        let size = m.window.filter(|w| w.enabled).and_then(|w| w.size);
        let q = m.query_prompt_template.filter(|q| !q.is_empty()).unwrap_or_else(|| "{{#sys.query#}}".into());
        (size, Template::parse(&q))
    });
    let json_schema = if d.structured_output_enabled {
        match d.structured_output.and_then(|s| s.schema) {
            Some(s) => {
                // The local model constrains the answer with a grammar made
                // from this schema: a schema it cannot express is refused now.
                let empty = s.as_object().is_some_and(|o| o.is_empty());
                if let (false, Err(e)) = (empty, crate::model::grammar::json_schema_to_gbnf(&s)) {
                    errs.push(("data.structured_output.schema".into(), e.to_string()));
                }
                Some(s)
            }
            None => {
                errs.push(("data.structured_output.schema".into(), "structured output is enabled but has no schema".into()));
                None
            }
        }
    } else {
        None
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(LlmSpec {
        provider: d.model.provider,
        model: d.model.name,
        chat,
        prompt,
        context,
        memory,
        temperature: num("temperature").map(|x| x as f32),
        top_p: num("top_p").map(|x| x as f32),
        max_tokens: num("max_tokens").map(|x| x as u32),
        seed: num("seed").map(|x| x as u32),
        stop,
        json_schema,
    })
}

fn iteration_spec(d: IterationData, ids: &HashMap<String, usize>) -> Result<IterationSpec, Vec<(String, String)>> {
    let Some(&start) = ids.get(&d.start_node_id) else {
        return Err(vec![("data.start_node_id".into(), format!("the body's start node {} does not exist", d.start_node_id))]);
    };
    let error_mode = match d.error_handle_mode.as_deref() {
        None | Some("terminated") => ErrorMode::Terminated,
        Some("continue-on-error") => ErrorMode::ContinueOnError,
        Some("remove-abnormal-output") => ErrorMode::RemoveAbnormal,
        Some(other) => return Err(vec![("data.error_handle_mode".into(), format!("unknown error mode {other:?}"))]),
    };
    if d.output_selector.len() < 2 {
        return Err(vec![("data.output_selector".into(), "the iteration names no output variable".into())]);
    }
    Ok(IterationSpec {
        iterator: d.iterator_selector,
        output: d.output_selector,
        output_type: d.output_type.as_deref().map(var_type).unwrap_or(VarType::Any),
        start,
        parallel: d.is_parallel.then(|| d.parallel_nums.unwrap_or(10).max(1) as usize),
        error_mode,
        flatten: d.flatten_output.unwrap_or(true),
    })
}

fn loop_spec(d: LoopData, ids: &HashMap<String, usize>) -> Result<LoopSpec, Vec<(String, String)>> {
    let Some(&start) = ids.get(&d.start_node_id) else {
        return Err(vec![("data.start_node_id".into(), format!("the body's start node {} does not exist", d.start_node_id))]);
    };
    let break_conditions = conditions(d.break_conditions, "data.break_conditions")?;
    let mut variables = Vec::new();
    for (j, v) in d.loop_variables.into_iter().enumerate() {
        let init = match (v.value_type.as_deref(), v.value) {
            (Some("variable"), Value::Array(a)) => {
                LoopInit::Selector(a.into_iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            }
            (Some("variable"), _) => {
                return Err(vec![(format!("data.loop_variables[{j}].value"), "a variable loop value must be a selector".into())])
            }
            // Dify writes constants as text ('0'): typed as declared.
            (_, value) => LoopInit::Constant(crate::engine::workflow::vars::coerce(value, v.var_type.as_deref().unwrap_or(""))),
        };
        variables.push((v.label, v.var_type.as_deref().map(var_type).unwrap_or(VarType::Any), init));
    }
    Ok(LoopSpec { count: d.loop_count, break_all: d.logical_operator != "or", break_conditions, variables, start })
}
