//! Reference checks of a compiling graph: which nodes are upstream of which,
//! what each node produces and reads, and whether a selector names a
//! variable its reader can see.

use std::collections::{HashMap, HashSet};

use super::super::vars::Template;
use super::super::{VarType, WorkflowMode};
use super::{var_type, Condition, DeclaredVar, Draft, Edge, Kind, LoopInit, Strategy, SYS_CHAT_NAMES, SYS_NAMES};

pub(super) fn conditions_refs(refs: &mut Vec<(String, Vec<String>)>, prefix: &str, conds: &[Condition]) {
    for (j, c) in conds.iter().enumerate() {
        refs.push((format!("{prefix}[{j}].variable_selector"), c.selector.clone()));
        if let Some(t) = &c.template {
            refs.extend(t.selectors().map(|s| (format!("{prefix}[{j}].value"), s.clone())));
        }
    }
}

/// Whether `from` reaches `to` through one or more edges.
pub(super) fn reaches(edges: &[Edge], out: &[Vec<usize>], from: usize, to: usize) -> bool {
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
pub(super) struct Upstream {
    ancestors: Vec<HashSet<usize>>,
}

impl Upstream {
    pub(super) fn new(edges: &[Edge], inc: &[Vec<usize>]) -> Upstream {
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

pub(super) struct RefCtx<'a> {
    pub(super) drafts: &'a [Draft],
    pub(super) ids: &'a HashMap<String, usize>,
    pub(super) container: &'a [Option<usize>],
    pub(super) upstream: &'a Upstream,
    pub(super) env: &'a [DeclaredVar],
    pub(super) conversation: &'a [DeclaredVar],
    pub(super) mode: WorkflowMode,
}

impl RefCtx<'_> {
    /// Whether `node` may read from `source`: an ancestor in its own graph,
    /// or (inside a body) of its container, or the container itself.
    pub(super) fn can_read(&self, mut node: usize, source: usize) -> bool {
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
    pub(super) fn resolve(&self, reader: usize, sel: &[String]) -> Result<VarType, String> {
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

    pub(super) fn is_inside(&self, mut node: usize, container: usize) -> bool {
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
pub(super) fn outputs(kind: &Kind, inside: bool) -> Option<Vec<(String, VarType)>> {
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
pub(super) fn references(kind: &Kind) -> Vec<(String, Vec<String>)> {
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
