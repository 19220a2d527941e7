//! A run's `inputs` checked against the start node's form, with Dify's
//! messages (required, defaults, options, max_length, numbers).

use serde_json::{Map, Number, Value};

use super::super::graph::Workflow;

/// An input that breaks the start node's form; the message is the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// A list as Python prints it (Dify's messages show `['a', 'b']`).
fn py_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))).collect();
    format!("[{}]", quoted.join(", "))
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Checks and normalises `inputs`: defaults filled in, numbers as numbers,
/// keys the form does not declare dropped.
pub fn check_inputs(wf: &Workflow, inputs: &Map<String, Value>) -> Result<Map<String, Value>, InputError> {
    let mut out = Map::new();
    for field in wf.start_variables() {
        let name = field.variable.as_str();
        let given = inputs.get(name).filter(|v| !is_empty(v)).cloned();
        let value = match (given, field.default.clone().filter(|d| !is_empty(d))) {
            (Some(v), _) => v,
            (None, Some(d)) => d,
            (None, None) if field.required => return Err(InputError(format!("{name} is required in input form"))),
            (None, None) => continue,
        };
        let value = match field.kind.as_str() {
            "text-input" | "paragraph" | "select" => {
                let Value::String(s) = &value else { return Err(InputError(format!("{name} in input form must be a string"))) };
                // As Dify: NUL characters are dropped.
                let s = &s.replace('\0', "");
                if let Some(max) = field.max_length.filter(|&m| m > 0) {
                    if s.chars().count() > max as usize {
                        return Err(InputError(format!("{name} in input form must be less than {max} characters")));
                    }
                }
                if field.kind == "select" && !field.options.contains(s) {
                    return Err(InputError(format!("{name} in input form must be one of the following: {}", py_list(&field.options))));
                }
                Value::String(s.clone())
            }
            "number" => match &value {
                Value::Number(_) => value,
                Value::String(s) => {
                    let t = s.trim();
                    let n = t.parse::<i64>().ok().map(Number::from).or_else(|| t.parse::<f64>().ok().and_then(Number::from_f64));
                    match n {
                        Some(n) => Value::Number(n),
                        None => return Err(InputError(format!("{name} in input form must be a valid number"))),
                    }
                }
                _ => return Err(InputError(format!("{name} in input form must be a valid number"))),
            },
            "checkbox" => match &value {
                Value::Bool(_) => value,
                Value::String(s) if s == "true" || s == "false" => Value::Bool(s == "true"),
                _ => return Err(InputError(format!("{name} in input form must be a boolean"))),
            },
            _ => value,
        };
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}
