//! The compiled, validated graph of a DSL `workflow` section: nodes with
//! their data parsed once (the executor's own types here, every other type
//! through `nodes::build`), edges indexed both ways, iteration and loop
//! bodies, and every problem found at import (unsupported nodes, bad data,
//! dangling edges and handles, cycles, references to variables no upstream
//! node produces, templates naming missing variables).
//!
//! Does not run anything: `run` executes a [`Workflow`].

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde_json::{Map, Value};

use super::vars::Template;
use super::{Capabilities, NodeKind, Problem, VarType, WorkflowMode};
use check::{conditions_refs, outputs, reaches, references, RefCtx, Upstream};
use data::{parse, text_of, VarDecl};

mod check;
mod data;

pub use data::{var_type, StartVar};

/// Most nodes a graph may have, iteration and loop bodies included.
pub const MAX_NODES: usize = 1000;

/// The `sys.*` names of every mode, and those only chatflows have.
const SYS_NAMES: [&str; 5] = ["user_id", "app_id", "workflow_id", "workflow_run_id", "files"];
const SYS_CHAT_NAMES: [&str; 3] = ["query", "conversation_id", "dialogue_count"];

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
    /// An output made of lists only becomes one list (Dify's flatten_output).
    pub flatten: bool,
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
    /// The cloud model its data names (`model.provider`, `model.name`):
    /// llm, question-classifier, parameter-extractor.
    pub model: Option<(String, String)>,
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
    pub description: String,
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
    pub fn compile(raw: &Value, mode: WorkflowMode, caps: &Capabilities) -> Result<Workflow, Vec<Problem>> {
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

    /// Every dataset id its knowledge-retrieval nodes search.
    pub fn dataset_ids(&self) -> Vec<String> {
        let nodes = self.raw.pointer("/graph/nodes").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        nodes
            .iter()
            .filter_map(|n| n.get("data"))
            .filter(|d| d.get("type").and_then(Value::as_str) == Some("knowledge-retrieval"))
            .filter_map(|d| d.get("dataset_ids").and_then(Value::as_array))
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
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
            .filter_map(|n| {
                let (provider, name) = n.model.clone()?;
                Some(super::ModelRef { node_id: n.id.clone(), node_title: n.title.clone(), provider, name })
            })
            .collect()
    }
}

fn is_array(t: VarType) -> bool {
    matches!(
        t,
        VarType::ArrayString | VarType::ArrayNumber | VarType::ArrayBoolean | VarType::ArrayObject | VarType::ArrayFile | VarType::Any
    )
}

// ---------------------------------------------------------------- compiler

/// A node id field: a string, or a number when YAML left the id unquoted.
fn id_of(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

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
    model: Option<(String, String)>,
}

struct Compiler {
    mode: WorkflowMode,
    problems: Vec<Problem>,
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
                    .map(|d| {
                        let value_type = d.value_type.unwrap_or_default();
                        let value = super::vars::coerce(d.value, &value_type);
                        DeclaredVar { name: d.name, value_type, value, description: d.description.unwrap_or_default() }
                    })
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

    fn compile(&mut self, raw: &Value, caps: &Capabilities) -> Option<Workflow> {
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
            let id = match id_of(n, "id") {
                id if !id.is_empty() => id,
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
            let model = data.get("model").and_then(|m| Some((text_of(m, "provider")?.to_owned(), text_of(m, "name")?.to_owned())));
            let d = Draft { id: id.clone(), title, node_type, parent, kind: None, strategy: Strategy::Fail, retry: None, model };
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
            let (src, tgt) = (id_of(e, "source"), id_of(e, "target"));
            let (Some(&s), Some(&t)) = (ids.get(&src), ids.get(&tgt)) else {
                let missing = if ids.contains_key(&src) { tgt } else { src };
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
                model: d.model,
            });
        }
        let answers = answer_plans(&nodes, &edges, &inc, &ids);
        Some(Workflow { raw: raw.clone(), mode: self.mode, nodes, edges, out, live_in, start, ids, env, conversation, answers })
    }

    /// error_strategy, default_value, retry_config.
    fn common(&mut self, d: &mut Draft, data: &Value) {
        let (strategy, retry, errs) = data::strategy(data);
        (d.strategy, d.retry) = (strategy, retry);
        for (f, m) in errs {
            self.node_problem(d, &f, m);
        }
    }

    fn kind(&mut self, d: &Draft, data: &Value, caps: &Capabilities, ids: &HashMap<String, usize>) -> Option<Kind> {
        match data::kind(&d.node_type, data, caps, ids) {
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
                    // A node that may retry would stream its text twice: wait for it.
                    branching || n.strategy == Strategy::FailBranch || n.retry.is_some()
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
