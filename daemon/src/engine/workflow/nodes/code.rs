//! code: Dify's code node. The program (`code_language` `javascript` or
//! `python3`) runs in the sandbox through
//! [`Effects::code`](super::super::Effects::code) with the node's variables
//! as `main`'s arguments; the object it returns is checked against the
//! node's declared `outputs` with Dify's rules, limits and messages
//! (`outputs`).
//!
//! At import, a language this daemon cannot run, an output type Dify does
//! not allow, or a `dependencies` entry naming a module that is not here
//! is refused with the node named. Beyond Dify's fields a node may carry
//! `timeout` (seconds) and `memory_limit_mb`, which the service caps by
//! its `[code]` limits.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::{BoxFuture, Capabilities, CodeCall, CodeLanguage, CodeSupport, NodeCtx, NodeError, NodeKind, NodeOutput, VarType};
use super::{check_selector, nullable, parse, Problems};

pub mod outputs;

use outputs::{OutputSpec, OutputType};

#[derive(Debug, Deserialize)]
struct Data {
    code: String,
    code_language: String,
    #[serde(default, deserialize_with = "nullable")]
    variables: Vec<Variable>,
    #[serde(default, deserialize_with = "nullable")]
    outputs: Map<String, Value>,
    #[serde(default, deserialize_with = "nullable")]
    dependencies: Vec<Dependency>,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    memory_limit_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    variable: String,
    #[serde(default, deserialize_with = "nullable")]
    value_selector: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    name: String,
}

/// The longest `timeout` a node may ask for; the config caps it further.
const MAX_TIMEOUT_SECS: f64 = 3600.0;

#[derive(Debug)]
pub struct Code {
    language: CodeLanguage,
    code: String,
    variables: Vec<Variable>,
    outputs: Vec<(String, OutputSpec)>,
    timeout: Option<Duration>,
    memory_mb: Option<u64>,
}

impl Code {
    pub fn build(data: &Value, caps: &Capabilities) -> Result<Code, Problems> {
        let d: Data = parse(data)?;
        let mut problems = Problems::new();
        let (language, support) = match d.code_language.as_str() {
            "javascript" => (CodeLanguage::JavaScript, &caps.javascript),
            "python3" => (CodeLanguage::Python3, &caps.python3),
            other => {
                problems.push(("code_language".into(), format!("must be python3 or javascript, got {other:?}")));
                return Err(problems);
            }
        };
        match support {
            CodeSupport::Unavailable(why) => {
                problems.push(("code_language".into(), format!("{} code nodes cannot run here: {why}", d.code_language)))
            }
            CodeSupport::Available(modules) => {
                for (i, dep) in d.dependencies.iter().enumerate() {
                    if !module_available(&dep.name, modules) {
                        let hint = match language {
                            CodeLanguage::JavaScript => "JavaScript code nodes run in the embedded QuickJS, which has no npm modules",
                            CodeLanguage::Python3 => {
                                "this python3 does not have it, or the sandbox refuses it as it does socket, subprocess and ctypes"
                            }
                        };
                        problems.push((
                            format!("dependencies.{i}.name"),
                            format!("module {:?} is not available offline here ({hint})", dep.name),
                        ));
                    }
                }
            }
            CodeSupport::Unchecked => {}
        }
        if d.code.trim().is_empty() {
            problems.push(("code".into(), "the node has no code".into()));
        }
        for (i, v) in d.variables.iter().enumerate() {
            if v.variable.is_empty() {
                problems.push((format!("variables.{i}.variable"), "a code variable needs a name".into()));
            }
            check_selector(&format!("variables.{i}.value_selector"), &v.value_selector, &mut problems);
        }
        let outputs = match outputs::parse_schema(&d.outputs, "outputs") {
            Ok(o) => o,
            Err(mut p) => {
                problems.append(&mut p);
                Vec::new()
            }
        };
        let timeout = match d.timeout {
            None => None,
            Some(t) if t > 0.0 && t <= MAX_TIMEOUT_SECS => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                problems.push(("timeout".into(), format!("must be between 0 and {MAX_TIMEOUT_SECS} seconds, got {t}")));
                None
            }
        };
        if d.memory_limit_mb == Some(0) {
            problems.push(("memory_limit_mb".into(), "must be at least 1".into()));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Code { language, code: d.code, variables: d.variables, outputs, timeout, memory_mb: d.memory_limit_mb })
    }
}

/// Whether a dependency names a module that is here: by its top-level name,
/// with a distribution's dashes as underscores (`python-dateutil` is
/// checked as `python_dateutil` and `dateutil`'s own name must be given).
fn module_available(name: &str, modules: &std::collections::BTreeSet<String>) -> bool {
    let top = name.trim().split(['.', '=', '<', '>', '~', '[', ' ']).next().unwrap_or("");
    !top.is_empty() && (modules.contains(top) || modules.contains(&top.replace('-', "_")))
}

impl NodeKind for Code {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        self.variables.iter().enumerate().map(|(i, v)| (format!("variables.{i}.value_selector"), v.value_selector.clone())).collect()
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        self.outputs.iter().map(|(name, spec)| (name.clone(), spec.kind.var_type())).collect()
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let inputs: Map<String, Value> =
                self.variables.iter().map(|v| (v.variable.clone(), ctx.scope.get(&v.value_selector).unwrap_or(Value::Null))).collect();
            let call = CodeCall {
                node_id: ctx.node_id.to_owned(),
                language: self.language,
                code: self.code.clone(),
                inputs: inputs.clone(),
                timeout: self.timeout,
                memory_mb: self.memory_mb,
            };
            let result = ctx.effects.code(call).await.map_err(NodeError::Failed)?;
            let outputs = outputs::transform(&result, &self.outputs, &outputs::Limits::default()).map_err(NodeError::Failed)?;
            Ok(NodeOutput { inputs, outputs, ..NodeOutput::default() })
        })
    }
}

impl OutputType {
    fn var_type(self) -> VarType {
        match self {
            OutputType::String => VarType::String,
            OutputType::Number => VarType::Number,
            OutputType::Boolean => VarType::Boolean,
            OutputType::Object => VarType::Object,
            OutputType::ArrayString => VarType::ArrayString,
            OutputType::ArrayNumber => VarType::ArrayNumber,
            OutputType::ArrayBoolean => VarType::ArrayBoolean,
            OutputType::ArrayObject => VarType::ArrayObject,
        }
    }
}

#[cfg(test)]
mod tests;
