//! The compiled, validated graph of a DSL `workflow` section: nodes with
//! their data parsed once (the executor's own types here, every other type
//! through `nodes::build`), edges indexed both ways, iteration and loop
//! bodies, and every problem found at import (unsupported nodes, bad data,
//! dangling edges and handles, cycles, references to variables no upstream
//! node produces, templates naming missing variables).
//!
//! Does not run anything: `run` executes a [`Workflow`].

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::nodes;
use super::vars::Template;
use super::{Capabilities, NodeKind, Problem, VarType, WorkflowMode};

/// Most nodes a graph may have, iteration and loop bodies included.
pub const MAX_NODES: usize = 1000;

/// The `sys.*` names of every mode, and those only chatflows have.
const SYS_NAMES: [&str; 5] = ["user_id", "app_id", "workflow_id", "workflow_run_id", "files"];
const SYS_CHAT_NAMES: [&str; 3] = ["query", "conversation_id", "dialogue_count"];

// ---------------------------------------------------------------- node data (Dify's shapes)

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
    fn var_type(&self) -> VarType {
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
struct VarDecl {
    name: String,
    #[serde(default)]
    value_type: Option<String>,
    #[serde(default)]
    value: Value,
}

// ---------------------------------------------------------------- compiled types

/// One if-else / loop-break condition.
#[derive(Debug, Clone)]
pub struct Condition {
    pub selector: Vec<String>,
    pub operator: String,
    /// A string value, to render through the scope at run time.
    pub template: Option<Template>,
    /// Any other value (arrays for `in`, numbers, booleans), as written.
    pub literal: Value,
}

/// An if-else case.
#[derive(Debug, Clone)]
pub struct Case {
    pub id: String,
    /// `and` when true, `or` when false.
    pub all: bool,
    pub conditions: Vec<Condition>,
}

/// An llm node's compiled data.
#[derive(Debug, Clone)]
pub struct LlmSpec {
    pub provider: String,
    pub model: String,
    pub chat: bool,
    /// (role, template) in order.
    pub prompt: Vec<(super::Role, Template)>,
    pub context: Option<Vec<String>>,
    /// Memory: how many newest turns (None: all), and the query message.
    pub memory: Option<(Option<u32>, Template)>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u32>,
    pub stop: Vec<String>,
    pub json_schema: Option<Value>,
}

/// What an iteration does with an item whose pass failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    Terminated,
    ContinueOnError,
    RemoveAbnormal,
}

#[derive(Debug, Clone)]
pub struct IterationSpec {
    pub iterator: Vec<String>,
    pub output: Vec<String>,
    pub output_type: VarType,
    pub start: usize,
    pub parallel: Option<usize>,
    pub error_mode: ErrorMode,
}

/// A loop variable's initial value.
#[derive(Debug, Clone)]
pub enum LoopInit {
    Constant(Value),
    Selector(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct LoopSpec {
    pub count: u32,
    pub break_all: bool,
    pub break_conditions: Vec<Condition>,
    pub variables: Vec<(String, VarType, LoopInit)>,
    pub start: usize,
}

/// A node's compiled data and behaviour.
#[derive(Debug)]
pub enum Kind {
    Start(Vec<StartVar>),
    End(Vec<(String, Vec<String>)>),
    Answer(Template),
    Llm(Box<LlmSpec>),
    IfElse(Vec<Case>),
    Iteration(Box<IterationSpec>),
    IterationStart,
    Loop(Box<LoopSpec>),
    LoopStart,
    LoopEnd,
    Other(Box<dyn NodeKind>),
}

/// What a node does when it fails.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Fail,
    FailBranch,
    DefaultValue(Map<String, Value>),
}

/// A compiled node.
#[derive(Debug)]
pub struct Node {
    pub id: String,
    pub title: String,
    /// Dify's `data.type`.
    pub node_type: String,
    /// The iteration or loop whose body it is in.
    pub container: Option<usize>,
    pub kind: Kind,
    pub strategy: Strategy,
    /// (max retries, interval in ms).
    pub retry: Option<(u32, u64)>,
}

/// An edge: `source` chose `handle` → `target`.
#[derive(Debug, Clone)]
pub struct Edge {
    pub source: usize,
    pub target: usize,
    pub handle: String,
}

/// A variable declared by the DSL (environment or conversation).
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredVar {
    pub name: String,
    pub value_type: String,
    pub value: Value,
}

/// A top-level node whose text streams (a chatflow's answer; a workflow's
/// end, for the llm texts it outputs, as Dify streams them): what it sends,
/// and the nodes that must have finished before it may (branching ancestors
/// and earlier streaming nodes).
#[derive(Debug, Clone)]
pub struct AnswerPlan {
    pub node: usize,
    pub segments: Vec<super::vars::Segment>,
    pub gates: Vec<usize>,
    /// Ancestors that may assign conversation variables (nodes of other
    /// modules): `conversation.*` is final only once they have finished.
    pub assigners: Vec<usize>,
}

/// A compiled workflow graph.
#[derive(Debug)]
pub struct Workflow {
    raw: Value,
    mode: WorkflowMode,
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<Edge>,
    /// Edge indices by source.
    pub(crate) out: Vec<Vec<usize>>,
    /// Edge indices by target, only from nodes reachable from their graph's
    /// start (an edge from a node that never runs must not hold back its target).
    pub(crate) live_in: Vec<Vec<usize>>,
    pub(crate) start: usize,
    /// Node index by id.
    pub(crate) ids: HashMap<String, usize>,
    pub(crate) env: Vec<DeclaredVar>,
    pub(crate) conversation: Vec<DeclaredVar>,
    pub(crate) answers: Vec<AnswerPlan>,
}

impl Workflow {
    /// Compiles and validates the DSL's `workflow` section; every problem at once.
    pub fn compile(raw: &Value, mode: WorkflowMode, caps: Capabilities) -> Result<Workflow, Vec<Problem>> {
        let mut c = Compiler { mode, problems: Vec::new() };
        let wf = c.compile(raw, caps);
        let mut problems = c.problems;
        if problems.is_empty() {
            if let Some(wf) = wf {
                return Ok(wf);
            }
        }
        problems.sort_by(|a, b| (&a.node_id, &a.field, &a.message).cmp(&(&b.node_id, &b.field, &b.message)));
        problems.dedup();
        Err(problems)
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    pub fn mode(&self) -> WorkflowMode {
        self.mode
    }

    /// The start node's form fields, in order (for `/v1/parameters`).
    pub fn start_variables(&self) -> &[StartVar] {
        match &self.nodes[self.start].kind {
            Kind::Start(vars) => vars,
            _ => &[],
        }
    }

    /// The environment variables the DSL declares.
    pub fn environment_variables(&self) -> &[DeclaredVar] {
        &self.env
    }

    /// The conversation variables the DSL declares, with their defaults.
    pub fn conversation_variables(&self) -> &[DeclaredVar] {
        &self.conversation
    }

    /// The cloud models the llm nodes name (for model mapping).
    pub fn models(&self) -> Vec<super::ModelRef> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                Kind::Llm(spec) => Some(super::ModelRef {
                    node_id: n.id.clone(),
                    node_title: n.title.clone(),
                    provider: spec.provider.clone(),
                    name: spec.model.clone(),
                }),
                _ => None,
            })
            .collect()
    }
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

fn is_array(t: VarType) -> bool {
    matches!(
        t,
        VarType::ArrayString | VarType::ArrayNumber | VarType::ArrayBoolean | VarType::ArrayObject | VarType::ArrayFile | VarType::Any
    )
}

// ---------------------------------------------------------------- compiler

/// A node while compiling: its kind is `None` when its data was refused
/// (a problem says why) and references to it are not checked further.
struct Draft {
    id: String,
    title: String,
    node_type: String,
    parent: Option<String>,
    kind: Option<Kind>,
    strategy: Strategy,
    retry: Option<(u32, u64)>,
}

struct Compiler {
    mode: WorkflowMode,
    problems: Vec<Problem>,
}

fn text_of<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn parse<T: DeserializeOwned>(data: &Value) -> Result<T, Vec<(String, String)>> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "data".to_owned() } else { format!("data.{path}") };
        vec![(field, e.into_inner().to_string())]
    })
}

impl Compiler {
    fn problem(&mut self, node: Option<(&str, &str)>, field: &str, message: String) {
        self.problems.push(Problem {
            node_id: node.map(|n| n.0.to_owned()),
            node_title: node.map(|n| n.1.to_owned()),
            field: field.to_owned(),
            message,
        });
    }

    fn node_problem(&mut self, d: &Draft, field: &str, message: String) {
        self.problems.push(Problem { node_id: Some(d.id.clone()), node_title: Some(d.title.clone()), field: field.to_owned(), message });
    }

    fn declared(&mut self, raw: &Value, key: &str) -> Vec<DeclaredVar> {
        match raw.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => match parse::<Vec<VarDecl>>(v) {
                Ok(list) => list
                    .into_iter()
                    .map(|d| DeclaredVar { name: d.name, value_type: d.value_type.unwrap_or_default(), value: d.value })
                    .collect(),
                Err(errs) => {
                    for (field, msg) in errs {
                        self.problem(None, &field.replacen("data", key, 1), msg);
                    }
                    Vec::new()
                }
            },
        }
    }

    fn compile(&mut self, raw: &Value, caps: Capabilities) -> Option<Workflow> {
        let env = self.declared(raw, "environment_variables");
        let conversation = self.declared(raw, "conversation_variables");
        let Some(graph) = raw.get("graph") else {
            self.problem(None, "graph", "the workflow has no graph".into());
            return None;
        };
        let raw_nodes = match graph.get("nodes").and_then(Value::as_array) {
            Some(n) => n,
            None => {
                self.problem(None, "graph.nodes", "the graph has no node list".into());
                return None;
            }
        };
        let raw_edges: &[Value] = graph.get("edges").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let real: Vec<&Value> = raw_nodes.iter().filter(|n| text_of(n, "type") != Some("custom-note")).collect();
        if real.len() > MAX_NODES {
            self.problem(None, "graph.nodes", format!("the graph has {} nodes; at most {MAX_NODES} are allowed", real.len()));
            return None;
        }

        // Nodes: identity first, then data.
        let mut drafts: Vec<Draft> = Vec::with_capacity(real.len());
        let mut datas: Vec<&Value> = Vec::with_capacity(real.len());
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (i, n) in real.iter().enumerate() {
            let id = match n.get("id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(x)) => x.to_string(),
                _ => {
                    self.problem(None, &format!("graph.nodes[{i}].id"), "a node has no id".into());
                    continue;
                }
            };
            let data = n.get("data").unwrap_or(&Value::Null);
            let title = text_of(data, "title").unwrap_or("").to_owned();
            let node_type = text_of(data, "type").unwrap_or("").to_owned();
            let parent = text_of(n, "parentId")
                .or_else(|| text_of(data, "iteration_id").filter(|_| data.get("isInIteration") == Some(&Value::Bool(true))))
                .or_else(|| text_of(data, "loop_id").filter(|_| data.get("isInLoop") == Some(&Value::Bool(true))))
                .filter(|p| !p.is_empty())
                .map(str::to_owned);
            let d = Draft { id: id.clone(), title, node_type, parent, kind: None, strategy: Strategy::Fail, retry: None };
            if ids.contains_key(&id) {
                self.node_problem(&d, "id", format!("another node has the id {id}"));
                continue;
            }
            ids.insert(id, drafts.len());
            drafts.push(d);
            datas.push(data);
        }
        for (d, data) in drafts.iter_mut().zip(datas) {
            self.common(d, data);
            d.kind = self.kind(d, data, caps, &ids);
        }

        // Containers.
        let mut container = vec![None; drafts.len()];
        for (i, d) in drafts.iter().enumerate() {
            if let Some(p) = &d.parent {
                match ids.get(p) {
                    Some(&c)
                        if matches!(drafts[c].kind, Some(Kind::Iteration(_)) | Some(Kind::Loop(_)))
                            || matches!(drafts[c].node_type.as_str(), "iteration" | "loop") =>
                    {
                        container[i] = Some(c)
                    }
                    _ => {
                        self.node_problem(d, "parentId", format!("the node is inside {p}, which is not an iteration or loop of this graph"))
                    }
                }
            }
        }

        // Edges.
        let mut edges = Vec::new();
        for (i, e) in raw_edges.iter().enumerate() {
            let eid = text_of(e, "id").unwrap_or("").to_owned();
            let field = format!("graph.edges[{i}]");
            let (src, tgt) = (text_of(e, "source").unwrap_or(""), text_of(e, "target").unwrap_or(""));
            let (Some(&s), Some(&t)) = (ids.get(src), ids.get(tgt)) else {
                let missing = if ids.contains_key(src) { tgt } else { src };
                self.problem(None, &field, format!("dangling edge {eid}: node {missing:?} does not exist"));
                continue;
            };
            let handle = text_of(e, "sourceHandle").unwrap_or("source").to_owned();
            let valid = self.handles(&drafts[s]);
            if let Some(valid) = valid {
                if !valid.contains(&handle) {
                    let d = &drafts[s];
                    let list: Vec<&str> = valid.iter().map(String::as_str).collect();
                    self.node_problem(
                        d,
                        &field,
                        format!("edge {eid} leaves by handle {handle:?}, which this node cannot choose (it has {list:?})"),
                    );
                }
            }
            if container[s] != container[t] {
                self.node_problem(&drafts[t], &field, format!("edge {eid} crosses an iteration or loop boundary"));
                continue;
            }
            edges.push(Edge { source: s, target: t, handle });
        }
        let n = drafts.len();
        let mut out = vec![Vec::new(); n];
        let mut inc = vec![Vec::new(); n];
        for (k, e) in edges.iter().enumerate() {
            out[e.source].push(k);
            inc[e.target].push(k);
        }

        // The start nodes of the top level and of each body.
        let starts: Vec<usize> = (0..n).filter(|&i| container[i].is_none() && drafts[i].node_type == "start").collect();
        let start = match starts.as_slice() {
            [s] => Some(*s),
            [] => {
                self.problem(None, "graph.nodes", "the graph has no start node".into());
                None
            }
            more => {
                for &s in &more[1..] {
                    self.node_problem(&drafts[s], "type", "the graph has more than one start node".into());
                }
                Some(more[0])
            }
        };
        let mut roots: Vec<usize> = start.into_iter().collect();
        for (i, d) in drafts.iter().enumerate() {
            let body_start = match &d.kind {
                Some(Kind::Iteration(s)) => Some(s.start),
                Some(Kind::Loop(s)) => Some(s.start),
                _ => None,
            };
            if let Some(b) = body_start {
                if container[b] != Some(i) {
                    self.node_problem(d, "data.start_node_id", format!("the body's start node {} is not inside this node", drafts[b].id));
                } else {
                    roots.push(b);
                }
            }
        }

        // Cycles (edges never cross bodies, so one pass covers every graph).
        let mut indeg: Vec<usize> = inc.iter().map(Vec::len).collect();
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = queue.pop_front() {
            seen += 1;
            for &k in &out[i] {
                let t = edges[k].target;
                indeg[t] -= 1;
                if indeg[t] == 0 {
                    queue.push_back(t);
                }
            }
        }
        let cyclic = seen < n;
        if cyclic {
            for i in (0..n).filter(|&i| indeg[i] > 0) {
                if reaches(&edges, &out, i, i) {
                    self.node_problem(
                        &drafts[i],
                        "graph.edges",
                        "the node is part of a cycle (only iteration and loop may repeat nodes)".into(),
                    );
                }
            }
        }

        // Reachability from each graph's start.
        let mut reachable = vec![false; n];
        for &r in &roots {
            let mut stack = vec![r];
            while let Some(i) = stack.pop() {
                if !std::mem::replace(&mut reachable[i], true) {
                    stack.extend(out[i].iter().map(|&k| edges[k].target));
                }
            }
        }
        if let Some(s) = start {
            let top_reached = |ty: &str| (0..n).any(|i| reachable[i] && container[i].is_none() && drafts[i].node_type == ty);
            match self.mode {
                WorkflowMode::Workflow if !top_reached("end") => {
                    self.node_problem(&drafts[s], "graph", "a workflow needs an end node reachable from the start node".into())
                }
                WorkflowMode::AdvancedChat if !top_reached("answer") => {
                    self.node_problem(&drafts[s], "graph", "a chatflow needs an answer node reachable from the start node".into())
                }
                _ => {}
            }
        }

        // References.
        if !cyclic {
            let upstream = Upstream::new(&edges, &inc);
            for i in 0..n {
                self.check_references(i, &drafts, &ids, &container, &upstream, &env, &conversation);
            }
        }

        let live_in: Vec<Vec<usize>> = inc.iter().map(|ks| ks.iter().copied().filter(|&k| reachable[edges[k].source]).collect()).collect();
        let start = start?;
        if !self.problems.is_empty() {
            return None;
        }
        let mut nodes = Vec::with_capacity(n);
        for (i, d) in drafts.into_iter().enumerate() {
            let kind = d.kind?;
            nodes.push(Node {
                id: d.id,
                title: d.title,
                node_type: d.node_type,
                container: container[i],
                kind,
                strategy: d.strategy,
                retry: d.retry,
            });
        }
        let answers = answer_plans(&nodes, &edges, &inc, &ids);
        Some(Workflow { raw: raw.clone(), mode: self.mode, nodes, edges, out, live_in, start, ids, env, conversation, answers })
    }

    /// error_strategy, default_value, retry_config.
    fn common(&mut self, d: &mut Draft, data: &Value) {
        match text_of(data, "error_strategy") {
            None | Some("none") | Some("") => {}
            Some("fail-branch") => d.strategy = Strategy::FailBranch,
            Some("default-value") => {
                let list = data.get("default_value").cloned().unwrap_or(Value::Array(Vec::new()));
                match parse::<Vec<DefaultValue>>(&list) {
                    Ok(items) => d.strategy = Strategy::DefaultValue(items.into_iter().map(|x| (x.key, x.value)).collect()),
                    Err(errs) => {
                        for (f, m) in errs {
                            self.node_problem(d, &f.replacen("data", "data.default_value", 1), m);
                        }
                    }
                }
            }
            Some(other) => self.node_problem(d, "data.error_strategy", format!("unknown error strategy {other:?}")),
        }
        if let Some(rc) = data.get("retry_config").filter(|v| !v.is_null()) {
            match parse::<RetryData>(rc) {
                Ok(r) if r.enabled && r.max_retries > 0 => d.retry = Some((r.max_retries, r.retry_interval)),
                Ok(_) => {}
                Err(errs) => {
                    for (f, m) in errs {
                        self.node_problem(d, &f.replacen("data", "data.retry_config", 1), m);
                    }
                }
            }
        }
    }

    fn kind(&mut self, d: &Draft, data: &Value, caps: Capabilities, ids: &HashMap<String, usize>) -> Option<Kind> {
        let result: Result<Kind, Vec<(String, String)>> = match d.node_type.as_str() {
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
            "code" if !caps.code => Err(vec![("type".into(), "code nodes need the sandbox of issue 14, not in this build".into())]),
            "knowledge-retrieval" if !caps.knowledge => {
                Err(vec![("type".into(), "knowledge-retrieval needs knowledge bases (issue 13), not in this build".into())])
            }
            "tool" => {
                let provider = text_of(data, "provider_id").or_else(|| text_of(data, "provider_name")).unwrap_or("?");
                let tool = text_of(data, "tool_name").unwrap_or("?");
                Err(vec![(
                    "type".into(),
                    format!("tool nodes need Dify's cloud marketplace; not supported offline: tool {provider}/{tool}"),
                )])
            }
            "agent" => {
                let strategy = text_of(data, "agent_strategy_provider_name").unwrap_or("?");
                let name = text_of(data, "agent_strategy_name").unwrap_or("?");
                Err(vec![(
                    "type".into(),
                    format!("agent nodes need Dify's cloud marketplace; not supported offline: agent {strategy}/{name}"),
                )])
            }
            "" => Err(vec![("data.type".into(), "the node has no type".into())]),
            other => match nodes::build(other, data) {
                Some(r) => r.map(Kind::Other),
                None => Err(vec![(
                    "type".into(),
                    format!("node type {other:?} is not supported offline (plugin and unknown node types need Dify's cloud marketplace)"),
                )]),
            },
        };
        match result {
            Ok(k) => Some(k),
            Err(errs) => {
                for (f, m) in errs {
                    self.node_problem(d, &f, m);
                }
                None
            }
        }
    }

    /// The handles a node's edges may leave by; `None` when unknown (its
    /// data was refused).
    fn handles(&self, d: &Draft) -> Option<BTreeSet<String>> {
        let mut set = BTreeSet::new();
        match d.kind.as_ref()? {
            Kind::IfElse(cases) => {
                set.extend(cases.iter().map(|c| c.id.clone()));
                set.insert("false".into());
            }
            Kind::Other(k) => {
                let hs = k.handles();
                if hs.is_empty() {
                    set.insert("source".into());
                }
                set.extend(hs);
            }
            _ => {
                set.insert("source".into());
            }
        }
        if d.strategy == Strategy::FailBranch {
            set.insert("source".into());
            set.insert("success-branch".into());
            set.insert("fail-branch".into());
        }
        Some(set)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_references(
        &mut self,
        i: usize,
        drafts: &[Draft],
        ids: &HashMap<String, usize>,
        container: &[Option<usize>],
        upstream: &Upstream,
        env: &[DeclaredVar],
        conversation: &[DeclaredVar],
    ) {
        let d = &drafts[i];
        let Some(kind) = &d.kind else { return };
        let refs = references(kind);
        let ctx = RefCtx { drafts, ids, container, upstream, env, conversation, mode: self.mode };
        let mut found = Vec::new();
        for (field, sel) in &refs {
            if let Err(msg) = ctx.resolve(i, sel) {
                found.push((field.clone(), msg));
            }
        }
        if let Kind::Iteration(spec) = kind {
            let src = spec.output.first().and_then(|id| ids.get(id)).copied();
            match src {
                Some(s) if ctx.is_inside(s, i) => {
                    let name = spec.output.get(1).map(String::as_str).unwrap_or("");
                    let has = drafts[s].kind.as_ref().and_then(|k| outputs(k, false)).is_none_or(|o| o.iter().any(|(n, _)| n == name));
                    if !has {
                        found.push(("data.output_selector".into(), format!("node {} has no output {name:?}", drafts[s].id)));
                    }
                }
                _ => found.push((
                    "data.output_selector".into(),
                    format!("{} is not a variable of a node inside the iteration", spec.output.join(".")),
                )),
            }
            if let Ok(t) = ctx.resolve(i, &spec.iterator) {
                if !is_array(t) {
                    found.push(("data.iterator_selector".into(), format!("{} is a {t:?}, not an array", spec.iterator.join("."))));
                }
            }
        }
        if let Kind::Loop(spec) = kind {
            let mut refs = Vec::new();
            conditions_refs(&mut refs, "data.break_conditions", &spec.break_conditions);
            for (field, sel) in refs {
                let in_body = sel.first().and_then(|id| ids.get(id)).is_some_and(|&s| ctx.is_inside(s, i));
                if in_body {
                    continue;
                }
                if let Err(msg) = ctx.resolve(spec.start, &sel) {
                    found.push((field, msg));
                }
            }
        }
        for (f, m) in found {
            self.node_problem(d, &f, m);
        }
    }
}

fn conditions_refs(refs: &mut Vec<(String, Vec<String>)>, prefix: &str, conds: &[Condition]) {
    for (j, c) in conds.iter().enumerate() {
        refs.push((format!("{prefix}[{j}].variable_selector"), c.selector.clone()));
        if let Some(t) = &c.template {
            refs.extend(t.selectors().map(|s| (format!("{prefix}[{j}].value"), s.clone())));
        }
    }
}

/// Whether `from` reaches `to` through one or more edges.
fn reaches(edges: &[Edge], out: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut seen = HashSet::new();
    let mut stack: Vec<usize> = out[from].iter().map(|&k| edges[k].target).collect();
    while let Some(i) = stack.pop() {
        if i == to {
            return true;
        }
        if seen.insert(i) {
            stack.extend(out[i].iter().map(|&k| edges[k].target));
        }
    }
    false
}

/// Ancestors through edges, within each graph, memoised.
struct Upstream {
    ancestors: Vec<HashSet<usize>>,
}

impl Upstream {
    fn new(edges: &[Edge], inc: &[Vec<usize>]) -> Upstream {
        let n = inc.len();
        let mut ancestors = Vec::with_capacity(n);
        for i in 0..n {
            let mut seen = HashSet::new();
            let mut stack: Vec<usize> = inc[i].iter().map(|&k| edges[k].source).collect();
            while let Some(a) = stack.pop() {
                if seen.insert(a) {
                    stack.extend(inc[a].iter().map(|&k| edges[k].source));
                }
            }
            ancestors.push(seen);
        }
        Upstream { ancestors }
    }
}

struct RefCtx<'a> {
    drafts: &'a [Draft],
    ids: &'a HashMap<String, usize>,
    container: &'a [Option<usize>],
    upstream: &'a Upstream,
    env: &'a [DeclaredVar],
    conversation: &'a [DeclaredVar],
    mode: WorkflowMode,
}

impl RefCtx<'_> {
    /// Whether `node` may read from `source`: an ancestor in its own graph,
    /// or (inside a body) of its container, or the container itself.
    fn can_read(&self, mut node: usize, source: usize) -> bool {
        loop {
            if self.upstream.ancestors[node].contains(&source) {
                return true;
            }
            match self.container[node] {
                Some(c) if c == source => return true,
                Some(c) => node = c,
                None => return false,
            }
        }
    }

    /// The type of the variable `sel` names, or why it names none.
    fn resolve(&self, reader: usize, sel: &[String]) -> Result<VarType, String> {
        let (Some(head), Some(name)) = (sel.first(), sel.get(1)) else {
            return Err(format!("the selector {sel:?} must name a node and a variable"));
        };
        let nested = sel.len() > 2;
        let ty = match head.as_str() {
            "sys" => {
                let chat = self.mode == WorkflowMode::AdvancedChat;
                if SYS_NAMES.contains(&name.as_str()) || (chat && SYS_CHAT_NAMES.contains(&name.as_str())) {
                    match name.as_str() {
                        "files" => VarType::ArrayFile,
                        "dialogue_count" => VarType::Number,
                        _ => VarType::String,
                    }
                } else {
                    return Err(format!("sys.{name} does not exist in this kind of app"));
                }
            }
            "env" => match self.env.iter().find(|v| &v.name == name) {
                Some(v) => var_type(&v.value_type),
                None => return Err(format!("env.{name} is not an environment variable of this app")),
            },
            "conversation" => match self.conversation.iter().find(|v| &v.name == name) {
                Some(v) => var_type(&v.value_type),
                None => return Err(format!("conversation.{name} is not a conversation variable of this app")),
            },
            id => {
                let Some(&src) = self.ids.get(id) else {
                    return Err(format!("references node {id}, which does not exist"));
                };
                if !self.can_read(reader, src) {
                    return Err(format!("references node {id}, which is not upstream of this node"));
                }
                let Some(kind) = &self.drafts[src].kind else { return Ok(VarType::Any) };
                let inside = self.is_inside(reader, src);
                match outputs(kind, inside) {
                    None => VarType::Any,
                    Some(outs) => match outs.iter().find(|(n, _)| n == name) {
                        Some((_, t)) => *t,
                        None => match &self.drafts[src].strategy {
                            Strategy::FailBranch | Strategy::DefaultValue(_) if name == "error_message" || name == "error_type" => {
                                VarType::String
                            }
                            Strategy::DefaultValue(d) if d.contains_key(name) => VarType::Any,
                            _ => return Err(format!("node {id} has no output {name:?}")),
                        },
                    },
                }
            }
        };
        Ok(if nested { VarType::Any } else { ty })
    }

    fn is_inside(&self, mut node: usize, container: usize) -> bool {
        while let Some(c) = self.container[node] {
            if c == container {
                return true;
            }
            node = c;
        }
        false
    }
}

/// The variables a node produces (`inside`: as read from within its own
/// body, for iteration's item/index and loop variables); `None` when any
/// name is accepted.
fn outputs(kind: &Kind, inside: bool) -> Option<Vec<(String, VarType)>> {
    Some(match kind {
        Kind::Start(vars) => vars.iter().map(|v| (v.variable.clone(), v.var_type())).collect(),
        Kind::End(outs) => outs.iter().map(|(n, _)| (n.clone(), VarType::Any)).collect(),
        Kind::Answer(_) => vec![("answer".into(), VarType::String)],
        Kind::Llm(spec) => {
            let mut v =
                vec![("text".into(), VarType::String), ("usage".into(), VarType::Object), ("finish_reason".into(), VarType::String)];
            if spec.json_schema.is_some() {
                v.push(("structured_output".into(), VarType::Object));
            }
            v
        }
        Kind::IfElse(_) => vec![("result".into(), VarType::Boolean), ("selected_case_id".into(), VarType::String)],
        Kind::Iteration(_) if inside => vec![("item".into(), VarType::Any), ("index".into(), VarType::Number)],
        Kind::Iteration(spec) => vec![("output".into(), spec.output_type)],
        Kind::Loop(spec) => {
            let mut v: Vec<(String, VarType)> = spec.variables.iter().map(|(n, t, _)| (n.clone(), *t)).collect();
            v.push(if inside { ("index".into(), VarType::Number) } else { ("loop_round".into(), VarType::Number) });
            v
        }
        Kind::IterationStart | Kind::LoopStart | Kind::LoopEnd => Vec::new(),
        Kind::Other(k) => k.outputs(),
    })
}

/// Every selector a node reads, with its field.
fn references(kind: &Kind) -> Vec<(String, Vec<String>)> {
    let mut refs = Vec::new();
    let template = |refs: &mut Vec<(String, Vec<String>)>, field: String, t: &Template| {
        refs.extend(t.selectors().map(|s| (field.clone(), s.clone())));
    };
    match kind {
        Kind::End(outs) => {
            for (j, (_, sel)) in outs.iter().enumerate() {
                refs.push((format!("data.outputs[{j}].value_selector"), sel.clone()));
            }
        }
        Kind::Answer(t) => template(&mut refs, "data.answer".into(), t),
        Kind::Llm(spec) => {
            for (j, (_, t)) in spec.prompt.iter().enumerate() {
                template(&mut refs, format!("data.prompt_template[{j}].text"), t);
            }
            if let Some(sel) = &spec.context {
                refs.push(("data.context.variable_selector".into(), sel.clone()));
            }
            if let Some((_, t)) = &spec.memory {
                template(&mut refs, "data.memory.query_prompt_template".into(), t);
            }
        }
        Kind::IfElse(cases) => {
            for (j, c) in cases.iter().enumerate() {
                conditions_refs(&mut refs, &format!("data.cases[{j}].conditions"), &c.conditions);
            }
        }
        Kind::Iteration(spec) => {
            refs.push(("data.iterator_selector".into(), spec.iterator.clone()));
        }
        Kind::Loop(spec) => {
            for (j, (_, _, init)) in spec.variables.iter().enumerate() {
                if let LoopInit::Selector(sel) = init {
                    refs.push((format!("data.loop_variables[{j}].value"), sel.clone()));
                }
            }
        }
        Kind::Other(k) => refs.extend(k.references()),
        Kind::Start(_) | Kind::IterationStart | Kind::LoopStart | Kind::LoopEnd => {}
    }
    refs
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
            Some("system") => super::Role::System,
            Some("assistant") => super::Role::Assistant,
            Some("user") | None => super::Role::User,
            Some(other) => {
                errs.push((format!("{field}.role"), format!("unknown role {other:?}")));
                super::Role::User
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
            Some(s) => Some(s),
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
            (_, value) => LoopInit::Constant(value),
        };
        variables.push((v.label, v.var_type.as_deref().map(var_type).unwrap_or(VarType::Any), init));
    }
    Ok(LoopSpec { count: d.loop_count, break_all: d.logical_operator != "or", break_conditions, variables, start })
}

/// The segments a top-level node streams: an answer's template; an end's
/// outputs that are an llm's text.
fn streamed(nodes: &[Node], ids: &HashMap<String, usize>, node: &Node) -> Option<Vec<super::vars::Segment>> {
    if node.container.is_some() {
        return None;
    }
    match &node.kind {
        Kind::Answer(t) => Some(t.segments.clone()),
        Kind::End(outs) => {
            let mut segs: Vec<super::vars::Segment> = Vec::new();
            for (_, sel) in outs {
                let llm = sel.first().and_then(|id| ids.get(id)).is_some_and(|&s| matches!(nodes[s].kind, Kind::Llm(_)));
                let seg = super::vars::Segment::Var(sel.clone());
                if llm && sel.len() == 2 && sel[1] == "text" && !segs.contains(&seg) {
                    segs.push(seg);
                }
            }
            (!segs.is_empty()).then_some(segs)
        }
        _ => None,
    }
}

/// The top-level streaming nodes and what each waits for before streaming.
fn answer_plans(nodes: &[Node], edges: &[Edge], inc: &[Vec<usize>], ids: &HashMap<String, usize>) -> Vec<AnswerPlan> {
    let plans: Vec<(usize, Vec<super::vars::Segment>)> =
        nodes.iter().enumerate().filter_map(|(i, n)| streamed(nodes, ids, n).map(|s| (i, s))).collect();
    let streaming: HashSet<usize> = plans.iter().map(|(i, _)| *i).collect();
    plans
        .into_iter()
        .map(|(a, segments)| {
            let mut seen = HashSet::new();
            let mut stack: Vec<usize> = inc[a].iter().map(|&k| edges[k].source).collect();
            while let Some(x) = stack.pop() {
                if seen.insert(x) {
                    stack.extend(inc[x].iter().map(|&k| edges[k].source));
                }
            }
            let mut gates: Vec<usize> = seen
                .iter()
                .copied()
                .filter(|&x| {
                    let n = &nodes[x];
                    let branching = match &n.kind {
                        Kind::IfElse(_) => true,
                        Kind::Other(k) => !k.handles().is_empty(),
                        _ => streaming.contains(&x),
                    };
                    branching || n.strategy == Strategy::FailBranch
                })
                .collect();
            gates.sort_unstable();
            let mut assigners: Vec<usize> = seen.iter().copied().filter(|&x| matches!(nodes[x].kind, Kind::Other(_))).collect();
            assigners.sort_unstable();
            AnswerPlan { node: a, segments, gates, assigners }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
