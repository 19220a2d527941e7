//! assigner (variable assigner v2, and v1 for older DSLs): writes
//! conversation variables. Each item applies one operation to one
//! conversation variable, checked against the variable's current type as
//! Dify's assigner checks it; the new values go to [`NodeOutput::assigned`],
//! which the executor keeps for the conversation. Items see the values the
//! items before them wrote.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::super::{BoxFuture, NodeCtx, NodeError, NodeKind, NodeOutput, VarType};
use super::{check_selector, parse, type_name, Problems};

/// Dify's v2 operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Operation {
    #[serde(rename = "over-write")]
    OverWrite,
    #[serde(rename = "clear")]
    Clear,
    #[serde(rename = "set")]
    Set,
    #[serde(rename = "append")]
    Append,
    #[serde(rename = "extend")]
    Extend,
    #[serde(rename = "+=")]
    Add,
    #[serde(rename = "-=")]
    Subtract,
    #[serde(rename = "*=")]
    Multiply,
    #[serde(rename = "/=")]
    Divide,
    #[serde(rename = "remove-first")]
    RemoveFirst,
    #[serde(rename = "remove-last")]
    RemoveLast,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::OverWrite => "over-write",
            Operation::Clear => "clear",
            Operation::Set => "set",
            Operation::Append => "append",
            Operation::Extend => "extend",
            Operation::Add => "+=",
            Operation::Subtract => "-=",
            Operation::Multiply => "*=",
            Operation::Divide => "/=",
            Operation::RemoveFirst => "remove-first",
            Operation::RemoveLast => "remove-last",
        }
    }
    /// Dify refuses a variable as input for these: they take a constant.
    fn constant_only(self) -> bool {
        matches!(self, Operation::Set | Operation::Add | Operation::Subtract | Operation::Multiply | Operation::Divide)
    }
    /// These take no value at all.
    fn takes_no_value(self) -> bool {
        matches!(self, Operation::Clear | Operation::RemoveFirst | Operation::RemoveLast)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum InputType {
    Variable,
    Constant,
}

#[derive(Debug, Deserialize)]
struct ItemData {
    variable_selector: Vec<String>,
    input_type: InputType,
    operation: Operation,
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Deserialize)]
struct V2 {
    #[serde(default)]
    items: Vec<ItemData>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum WriteMode {
    OverWrite,
    Append,
    Clear,
}

#[derive(Debug, Deserialize)]
struct V1 {
    assigned_variable_selector: Vec<String>,
    #[serde(default)]
    input_variable_selector: Vec<String>,
    write_mode: WriteMode,
}

/// Where an item's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    None,
    Variable(Vec<String>),
    Constant(Value),
}

#[derive(Debug)]
struct Item {
    /// The field the item came from (`items.0`, or "" for v1).
    field: String,
    name: String,
    target: Vec<String>,
    operation: Operation,
    input: Input,
}

#[derive(Debug)]
pub struct Assigner {
    items: Vec<Item>,
}

impl Assigner {
    pub fn build(data: &Value) -> Result<Assigner, Problems> {
        let v2 = data.get("version").and_then(Value::as_str) == Some("2") || data.get("items").is_some();
        let items = if v2 { Self::build_v2(data)? } else { Self::build_v1(data)? };
        Ok(Assigner { items })
    }

    fn build_v2(data: &Value) -> Result<Vec<Item>, Problems> {
        let data: V2 = parse(data)?;
        let mut problems = Problems::new();
        let mut items = Vec::new();
        for (i, d) in data.items.into_iter().enumerate() {
            let field = format!("items.{i}");
            check_target(&format!("{field}.variable_selector"), &d.variable_selector, &mut problems);
            let input = if d.operation.takes_no_value() {
                Input::None
            } else {
                match d.input_type {
                    InputType::Variable if d.operation.constant_only() => {
                        problems.push((
                            format!("{field}.input_type"),
                            format!("operation {:?} takes a constant, not a variable", d.operation.name()),
                        ));
                        Input::None
                    }
                    InputType::Variable => match serde_json::from_value::<Vec<String>>(d.value) {
                        Ok(sel) => {
                            check_selector(&format!("{field}.value"), &sel, &mut problems);
                            Input::Variable(sel)
                        }
                        Err(_) => {
                            problems.push((format!("{field}.value"), "a variable input needs a selector (an array of names)".into()));
                            Input::None
                        }
                    },
                    InputType::Constant => Input::Constant(d.value),
                }
            };
            let name = assigned_key(&d.variable_selector);
            items.push(Item { field, name, target: d.variable_selector, operation: d.operation, input });
        }
        if problems.is_empty() {
            Ok(items)
        } else {
            Err(problems)
        }
    }

    fn build_v1(data: &Value) -> Result<Vec<Item>, Problems> {
        let d: V1 = parse(data)?;
        let mut problems = Problems::new();
        check_target("assigned_variable_selector", &d.assigned_variable_selector, &mut problems);
        let (operation, input) = match d.write_mode {
            WriteMode::Clear => (Operation::Clear, Input::None),
            mode => {
                check_selector("input_variable_selector", &d.input_variable_selector, &mut problems);
                let op = if matches!(mode, WriteMode::Append) { Operation::Append } else { Operation::OverWrite };
                (op, Input::Variable(d.input_variable_selector))
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        let name = assigned_key(&d.assigned_variable_selector);
        Ok(vec![Item { field: String::new(), name, target: d.assigned_variable_selector, operation, input }])
    }
}

/// A target is a conversation variable (`["conversation", name]`) or a
/// variable of a loop the node is in (`[loop_id, name]`; the graph checks
/// that it names one).
fn check_target(field: &str, selector: &[String], problems: &mut Problems) {
    let ok = selector.len() == 2 && !selector[1].is_empty() && !matches!(selector[0].as_str(), "" | "sys" | "env");
    if !ok {
        problems.push((
            field.to_owned(),
            format!("the assigner writes conversation variables ([\"conversation\", name]) or loop variables ([loop_id, name]), got {selector:?}"),
        ));
    }
}

/// The key of an assignment in `NodeOutput::assigned`: a conversation
/// variable's name, or `loop_id.name` for a loop variable (the executor's rule).
fn assigned_key(selector: &[String]) -> String {
    match selector {
        [scope, name] if scope == "conversation" => name.clone(),
        [owner, name] => format!("{owner}.{name}"),
        _ => String::new(),
    }
}

/// The value `op` leaves, given the variable's `current` value and the
/// item's `value` (`None` for operations that take none).
fn apply(name: &str, op: Operation, current: &Value, value: Option<Value>) -> Result<Value, String> {
    let kind = type_name(current);
    let unsupported = || format!("operation {:?} does not apply to variable {name:?}, a {kind}", op.name());
    let invalid = |v: &Value| format!("operation {:?} on {name:?} (a {kind}) cannot take {} {v}", op.name(), type_name(v));
    let value = value.unwrap_or(Value::Null);
    match op {
        Operation::Clear => Ok(match current {
            Value::String(_) => Value::String(String::new()),
            Value::Number(_) => Value::from(0),
            Value::Bool(_) => Value::Bool(false),
            Value::Object(_) => Value::Object(Map::new()),
            Value::Array(_) | Value::Null => Value::Array(Vec::new()),
        }),
        Operation::OverWrite | Operation::Set => {
            if op == Operation::Set && matches!(current, Value::Array(_) | Value::Bool(_)) {
                return Err(unsupported());
            }
            // Setting an object from JSON text, as Dify does.
            let value = match (current, value) {
                (Value::Object(_), Value::String(s)) if op == Operation::Set => serde_json::from_str::<Value>(&s)
                    .map_err(|_| format!("operation \"set\" on {name:?} needs a JSON object, got {s:?}"))?,
                (_, v) => v,
            };
            if same_type(current, &value) {
                Ok(value)
            } else {
                Err(invalid(&value))
            }
        }
        Operation::Append => {
            let Value::Array(items) = current else { return Err(unsupported()) };
            if !fits_items(items, std::slice::from_ref(&value)) || value.is_array() {
                return Err(invalid(&value));
            }
            let mut items = items.clone();
            items.push(value);
            Ok(Value::Array(items))
        }
        Operation::Extend => {
            let Value::Array(items) = current else { return Err(unsupported()) };
            let Value::Array(more) = &value else { return Err(invalid(&value)) };
            if !fits_items(items, more) {
                return Err(invalid(&value));
            }
            let mut items = items.clone();
            items.extend(more.iter().cloned());
            Ok(Value::Array(items))
        }
        Operation::RemoveFirst | Operation::RemoveLast => {
            let Value::Array(items) = current else { return Err(unsupported()) };
            let mut items = items.clone();
            if !items.is_empty() {
                if op == Operation::RemoveFirst {
                    items.remove(0);
                } else {
                    items.pop();
                }
            }
            Ok(Value::Array(items))
        }
        Operation::Add | Operation::Subtract | Operation::Multiply | Operation::Divide => {
            let Value::Number(a) = current else { return Err(unsupported()) };
            let b = match &value {
                Value::Number(b) => b.clone(),
                // A constant typed into the builder's number box.
                Value::String(s) => s.trim().parse::<Number>().map_err(|_| invalid(&value))?,
                _ => return Err(invalid(&value)),
            };
            arithmetic(op, a, &b).ok_or_else(|| {
                if op == Operation::Divide {
                    format!("operation \"/=\" on {name:?} cannot divide by zero")
                } else {
                    format!("operation {:?} on {name:?} overflows", op.name())
                }
            })
        }
    }
}

/// Integers stay integers (as in Python) except through division.
fn arithmetic(op: Operation, a: &Number, b: &Number) -> Option<Value> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        let r = match op {
            Operation::Add => x.checked_add(y),
            Operation::Subtract => x.checked_sub(y),
            Operation::Multiply => x.checked_mul(y),
            _ => None,
        };
        if let Some(r) = r {
            return Some(Value::from(r));
        }
    }
    let (x, y) = (a.as_f64()?, b.as_f64()?);
    let r = match op {
        Operation::Add => x + y,
        Operation::Subtract => x - y,
        Operation::Multiply => x * y,
        _ if y == 0.0 => return None,
        _ => x / y,
    };
    Number::from_f64(r).map(Value::Number)
}

/// Same JSON type; an array's elements must fit its element type.
fn same_type(current: &Value, value: &Value) -> bool {
    match (current, value) {
        (Value::Array(a), Value::Array(b)) => fits_items(a, b),
        (Value::Null, _) => true,
        (a, b) => type_name(a) == type_name(b),
    }
}

/// Whether `new` items fit an array whose element type `items` shows (an
/// empty array takes anything but nested arrays or nulls).
fn fits_items(items: &[Value], new: &[Value]) -> bool {
    match items.first() {
        Some(first) => new.iter().all(|v| type_name(v) == type_name(first)),
        None => new.iter().all(|v| !v.is_null() && !v.is_array()),
    }
}

impl NodeKind for Assigner {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        let mut refs = Vec::new();
        for it in &self.items {
            let (target_field, value_field) = if it.field.is_empty() {
                ("assigned_variable_selector".to_owned(), "input_variable_selector".to_owned())
            } else {
                (format!("{}.variable_selector", it.field), format!("{}.value", it.field))
            };
            refs.push((target_field, it.target.clone()));
            if let Input::Variable(sel) = &it.input {
                refs.push((value_field, sel.clone()));
            }
        }
        refs
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        Vec::new()
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let mut assigned: BTreeMap<String, Value> = BTreeMap::new();
            let mut out = NodeOutput::default();
            for it in &self.items {
                let current = match assigned.get(&it.name) {
                    Some(v) => v.clone(),
                    None => ctx.scope.get(&it.target).ok_or_else(|| NodeError::Failed(format!("variable {:?} does not exist", it.name)))?,
                };
                let value = match &it.input {
                    Input::None => None,
                    Input::Constant(v) => Some(v.clone()),
                    Input::Variable(sel) => match ctx.scope.get(sel) {
                        // Dify skips an item whose input variable is unset.
                        None | Some(Value::Null) => continue,
                        Some(v) => Some(v),
                    },
                };
                let new = apply(&it.name, it.operation, &current, value).map_err(NodeError::Failed)?;
                assigned.insert(it.name.clone(), new);
            }
            out.inputs.insert(
                "items".into(),
                Value::Array(
                    self.items
                        .iter()
                        .map(|it| serde_json::json!({"variable_selector": it.target, "operation": it.operation.name()}))
                        .collect(),
                ),
            );
            out.process_data = assigned.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            out.assigned = assigned;
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{ctx, limits, FakeEffects, MapScope};
    use super::*;

    fn one(op: &str, input_type: &str, value: Value) -> Assigner {
        Assigner::build(&json!({
            "type": "assigner", "version": "2",
            "items": [{"variable_selector": ["conversation", "v"], "input_type": input_type, "operation": op, "value": value}]
        }))
        .unwrap_or_else(|e| panic!("{op}: {e:?}"))
    }

    async fn run_on(n: &Assigner, current: Value, extra: &[(&str, Value)]) -> Result<Value, String> {
        let mut pairs = vec![("conversation.v", current)];
        pairs.extend(extra.iter().cloned());
        let scope = MapScope::with(&pairs);
        let fx = FakeEffects::default();
        let out = n.run(ctx(&scope, &fx, &limits())).await.map_err(|e| e.to_string())?;
        assert!(out.outputs.is_empty());
        Ok(out.assigned.get("v").cloned().unwrap_or(Value::Null))
    }

    async fn op(op: &str, current: Value, value: Value) -> Result<Value, String> {
        run_on(&one(op, "constant", value), current, &[]).await
    }

    #[tokio::test]
    async fn every_operation() {
        assert_eq!(op("over-write", json!("a"), json!("b")).await.unwrap(), json!("b"));
        assert_eq!(op("over-write", json!([1]), json!([2, 3])).await.unwrap(), json!([2, 3]));
        assert_eq!(op("clear", json!("a"), Value::Null).await.unwrap(), json!(""));
        assert_eq!(op("clear", json!(5), Value::Null).await.unwrap(), json!(0));
        assert_eq!(op("clear", json!({"a": 1}), Value::Null).await.unwrap(), json!({}));
        assert_eq!(op("clear", json!([1, 2]), Value::Null).await.unwrap(), json!([]));
        assert_eq!(op("clear", json!(true), Value::Null).await.unwrap(), json!(false));
        assert_eq!(op("set", json!("a"), json!("z")).await.unwrap(), json!("z"));
        assert_eq!(op("set", json!(1), json!(2.5)).await.unwrap(), json!(2.5));
        assert_eq!(op("set", json!({}), json!("{\"k\": 1}")).await.unwrap(), json!({"k": 1}));
        assert_eq!(op("append", json!(["a"]), json!("b")).await.unwrap(), json!(["a", "b"]));
        assert_eq!(op("append", json!([]), json!({"k": 1})).await.unwrap(), json!([{"k": 1}]));
        assert_eq!(op("extend", json!([1]), json!([2, 3])).await.unwrap(), json!([1, 2, 3]));
        assert_eq!(op("+=", json!(2), json!(3)).await.unwrap(), json!(5));
        assert_eq!(op("+=", json!(2), json!("0.5")).await.unwrap(), json!(2.5));
        assert_eq!(op("-=", json!(2), json!(3)).await.unwrap(), json!(-1));
        assert_eq!(op("*=", json!(2.5), json!(2)).await.unwrap(), json!(5.0));
        assert_eq!(op("/=", json!(6), json!(4)).await.unwrap(), json!(1.5));
        assert_eq!(op("remove-first", json!([1, 2, 3]), Value::Null).await.unwrap(), json!([2, 3]));
        assert_eq!(op("remove-last", json!([1, 2, 3]), Value::Null).await.unwrap(), json!([1, 2]));
        assert_eq!(op("remove-last", json!([]), Value::Null).await.unwrap(), json!([]));
    }

    #[tokio::test]
    async fn type_checks_fail_clearly() {
        let e = op("append", json!("text"), json!("b")).await.unwrap_err();
        assert!(e.contains("operation \"append\" does not apply to variable \"v\", a string"), "{e}");
        let e = op("append", json!(["a"]), json!(1)).await.unwrap_err();
        assert!(e.contains("cannot take number 1"), "{e}");
        let e = op("extend", json!([1]), json!(2)).await.unwrap_err();
        assert!(e.contains("cannot take number 2"), "{e}");
        let e = op("extend", json!([1]), json!(["x"])).await.unwrap_err();
        assert!(e.contains("cannot take array"), "{e}");
        let e = op("+=", json!("a"), json!(1)).await.unwrap_err();
        assert!(e.contains("does not apply"), "{e}");
        let e = op("+=", json!(1), json!("one")).await.unwrap_err();
        assert!(e.contains("cannot take string"), "{e}");
        let e = op("/=", json!(1), json!(0)).await.unwrap_err();
        assert!(e.contains("divide by zero"), "{e}");
        let e = op("over-write", json!("a"), json!(1)).await.unwrap_err();
        assert!(e.contains("cannot take number"), "{e}");
        let e = op("set", json!([1]), json!([2])).await.unwrap_err();
        assert!(e.contains("does not apply"), "{e}");
        let e = op("set", json!({}), json!("not json")).await.unwrap_err();
        assert!(e.contains("needs a JSON object"), "{e}");
        let e = op("remove-first", json!(1), Value::Null).await.unwrap_err();
        assert!(e.contains("does not apply"), "{e}");
        let e = run_on(&one("clear", "constant", Value::Null), json!(1), &[]).await;
        assert!(e.is_ok());
        let n = one("over-write", "constant", json!("x"));
        let scope = MapScope::default();
        let fx = FakeEffects::default();
        let e = n.run(ctx(&scope, &fx, &limits())).await.unwrap_err();
        assert!(e.to_string().contains("variable \"v\" does not exist"));
    }

    #[tokio::test]
    async fn variable_inputs_and_sequential_items() {
        let n = Assigner::build(&json!({
            "version": "2",
            "items": [
                {"variable_selector": ["conversation", "hist"], "input_type": "variable", "operation": "append", "value": ["sys", "query"]},
                {"variable_selector": ["conversation", "hist"], "input_type": "variable", "operation": "append", "value": ["llm", "text"]},
                {"variable_selector": ["conversation", "count"], "input_type": "constant", "operation": "+=", "value": 1},
                {"variable_selector": ["conversation", "last"], "input_type": "variable", "operation": "over-write", "value": ["llm", "unset"]}
            ]
        }))
        .unwrap();
        let refs: Vec<String> = n.references().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            refs,
            vec![
                "items.0.variable_selector",
                "items.0.value",
                "items.1.variable_selector",
                "items.1.value",
                "items.2.variable_selector",
                "items.3.variable_selector",
                "items.3.value"
            ]
        );
        let scope = MapScope::with(&[
            ("conversation.hist", json!([])),
            ("conversation.count", json!(1)),
            ("conversation.last", json!("old")),
            ("sys.query", json!("hi")),
            ("llm.text", json!("hello")),
        ]);
        let fx = FakeEffects::default();
        let out = n.run(ctx(&scope, &fx, &limits())).await.unwrap();
        assert_eq!(out.assigned["hist"], json!(["hi", "hello"]));
        assert_eq!(out.assigned["count"], json!(2));
        // An unset input leaves the variable alone.
        assert!(!out.assigned.contains_key("last"));
        assert_eq!(out.process_data["count"], json!(2));
    }

    #[test]
    fn bad_data_names_each_field() {
        let e = Assigner::build(&json!({
            "version": "2",
            "items": [
                {"variable_selector": ["sys", "x"], "input_type": "constant", "operation": "over-write", "value": 1},
                {"variable_selector": ["conversation", "n"], "input_type": "variable", "operation": "+=", "value": ["a", "b"]},
                {"variable_selector": ["conversation", "n"], "input_type": "variable", "operation": "over-write", "value": "a.b"}
            ]
        }))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(fields, vec!["items.0.variable_selector", "items.1.input_type", "items.2.value"]);
        assert!(e[0].1.contains("conversation variables ([\"conversation\", name]) or loop variables"), "{e:?}");
        let e = Assigner::build(
            &json!({"version": "2", "items": [{"variable_selector": ["conversation", "n"], "input_type": "constant", "operation": "%="}]}),
        )
        .unwrap_err();
        assert_eq!(e[0].0, "items.0.operation");
    }

    #[tokio::test]
    async fn version_one() {
        let n = Assigner::build(&json!({
            "type": "assigner", "assigned_variable_selector": ["conversation", "v"],
            "input_variable_selector": ["llm", "text"], "write_mode": "append"
        }))
        .unwrap();
        assert_eq!(n.references()[1], ("input_variable_selector".to_owned(), vec!["llm".to_owned(), "text".to_owned()]));
        assert_eq!(run_on(&n, json!(["a"]), &[("llm.text", json!("b"))]).await.unwrap(), json!(["a", "b"]));
        let n = Assigner::build(&json!({"assigned_variable_selector": ["conversation", "v"], "write_mode": "clear"})).unwrap();
        assert_eq!(run_on(&n, json!("x"), &[]).await.unwrap(), json!(""));
        let e = Assigner::build(
            &json!({"assigned_variable_selector": ["env", "v"], "input_variable_selector": [], "write_mode": "over-write"}),
        )
        .unwrap_err();
        assert_eq!(e.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), vec!["assigned_variable_selector", "input_variable_selector"]);
    }
}
