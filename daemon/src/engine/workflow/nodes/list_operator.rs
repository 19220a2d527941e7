//! list-operator: filters, picks the n-th, sorts and limits an array of
//! strings, numbers or files, in Dify's order (filter, extract, order,
//! limit), into `result`, `first_record` and `last_record`.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::{BoxFuture, NodeCtx, NodeError, NodeKind, NodeOutput, Scope, VarType};
use super::compare::compare;
use super::{check_selector, nullable, parse, template_refs, type_name, Problems};

/// File attributes a condition or the order may name.
const FILE_KEYS: &[&str] = &["name", "type", "extension", "mime_type", "transfer_method", "url", "size"];

#[derive(Debug, Deserialize)]
struct Data {
    variable: Vec<String>,
    #[serde(default)]
    filter_by: FilterBy,
    #[serde(default)]
    order_by: OrderBy,
    #[serde(default)]
    limit: Limit,
    #[serde(default)]
    extract_by: ExtractBy,
}

#[derive(Debug, Default, Deserialize)]
struct FilterBy {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    conditions: Vec<Condition>,
}

#[derive(Debug, Deserialize)]
struct Condition {
    #[serde(default, deserialize_with = "nullable")]
    key: String,
    comparison_operator: String,
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Default, Deserialize)]
struct OrderBy {
    #[serde(default)]
    enabled: bool,
    #[serde(default, deserialize_with = "nullable")]
    key: String,
    #[serde(default = "asc")]
    value: String,
}

fn asc() -> String {
    "asc".to_owned()
}

#[derive(Debug, Default, Deserialize)]
struct Limit {
    #[serde(default)]
    enabled: bool,
    /// Dify's default when disabled is -1.
    #[serde(default)]
    size: i64,
}

#[derive(Debug, Default, Deserialize)]
struct ExtractBy {
    #[serde(default)]
    enabled: bool,
    /// A position or a template; older exports write a number.
    #[serde(default, deserialize_with = "text_or_number")]
    serial: String,
}

fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    })
}

#[derive(Debug)]
pub struct ListOperator {
    data: Data,
}

impl ListOperator {
    pub fn build(data: &Value) -> Result<ListOperator, Problems> {
        let data: Data = parse(data)?;
        let mut problems = Problems::new();
        check_selector("variable", &data.variable, &mut problems);
        if data.filter_by.enabled {
            for (i, c) in data.filter_by.conditions.iter().enumerate() {
                // An operator compare() does not know is caught here, not mid-run.
                if let Err(e) = compare(&c.comparison_operator, None, &c.value) {
                    if e.contains("not supported") {
                        problems.push((format!("filter_by.conditions.{i}.comparison_operator"), e));
                    }
                }
                if !c.key.is_empty() && !FILE_KEYS.contains(&c.key.as_str()) {
                    problems.push((format!("filter_by.conditions.{i}.key"), format!("unknown file attribute {:?}", c.key)));
                }
            }
        }
        if data.order_by.enabled {
            if data.order_by.value != "asc" && data.order_by.value != "desc" {
                problems.push(("order_by.value".into(), format!("order is \"asc\" or \"desc\", got {:?}", data.order_by.value)));
            }
            if !data.order_by.key.is_empty() && !FILE_KEYS.contains(&data.order_by.key.as_str()) {
                problems.push(("order_by.key".into(), format!("unknown file attribute {:?}", data.order_by.key)));
            }
        }
        if data.limit.enabled && data.limit.size < 1 {
            problems.push(("limit.size".into(), "a limit needs a size of at least 1".into()));
        }
        if data.extract_by.enabled && data.extract_by.serial.trim().is_empty() {
            problems.push(("extract_by.serial".into(), "extracting needs the 1-based position of the item".into()));
        }
        if problems.is_empty() {
            Ok(ListOperator { data })
        } else {
            Err(problems)
        }
    }

    fn filter(&self, scope: &dyn Scope, items: Vec<Value>) -> Result<Vec<Value>, String> {
        let mut items = items;
        for c in &self.data.filter_by.conditions {
            let expected = match &c.value {
                Value::String(s) => Value::String(scope.render(s)),
                other => other.clone(),
            };
            let mut kept = Vec::with_capacity(items.len());
            for item in items {
                let subject = if c.key.is_empty() || !item.is_object() { Some(item.clone()) } else { file_attr(&item, &c.key) };
                if matches_condition(&c.comparison_operator, subject.as_ref(), &expected)? {
                    kept.push(item);
                }
            }
            items = kept;
        }
        Ok(items)
    }

    fn extract(&self, scope: &dyn Scope, items: Vec<Value>) -> Result<Vec<Value>, String> {
        let serial = scope.render(&self.data.extract_by.serial);
        let n: usize = serial.trim().parse().map_err(|_| format!("Invalid serial index: {serial:?} is not a whole number"))?;
        if n < 1 {
            return Err(format!("Invalid serial index: must be >= 1, got {n}"));
        }
        let len = items.len();
        items.into_iter().nth(n - 1).map(|v| vec![v]).ok_or_else(|| format!("Invalid serial index: must be <= {len}, got {n}"))
    }

    fn order(&self, items: &mut [Value]) {
        let key = &self.data.order_by.key;
        let sort_key = |v: &Value| if key.is_empty() || !v.is_object() { Some(v.clone()) } else { file_attr(v, key) };
        items.sort_by(|a, b| order_values(sort_key(a).as_ref(), sort_key(b).as_ref()));
        if self.data.order_by.value == "desc" {
            items.reverse();
        }
    }
}

/// One condition against one item. For strings, "in"/"not in" with a text
/// value test that the item occurs in the text, as Dify's list filter does.
fn matches_condition(op: &str, subject: Option<&Value>, expected: &Value) -> Result<bool, String> {
    match (op, subject, expected) {
        ("in" | "not in", Some(Value::String(s)), Value::String(text)) => Ok(text.contains(s.as_str()) == (op == "in")),
        _ => compare(op, subject, expected),
    }
}

/// A Dify file object's attribute, as list-operator names them.
fn file_attr(file: &Value, key: &str) -> Option<Value> {
    let field = match key {
        "name" => "filename",
        "url" => "remote_url",
        other => other,
    };
    let v = file.get(field).or_else(|| file.get(key)).cloned();
    match (key, v) {
        ("extension", Some(Value::String(e))) if !e.is_empty() && !e.starts_with('.') => Some(Value::String(format!(".{e}"))),
        (_, v) => v,
    }
}

/// Numbers numerically, strings by text; an unset key sorts first.
fn order_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (None, None) => Ordering::Equal,
    }
}

impl NodeKind for ListOperator {
    fn references(&self) -> Vec<(String, Vec<String>)> {
        let mut refs = vec![("variable".to_owned(), self.data.variable.clone())];
        if self.data.filter_by.enabled {
            for (i, c) in self.data.filter_by.conditions.iter().enumerate() {
                if let Value::String(s) = &c.value {
                    template_refs(&format!("filter_by.conditions.{i}.value"), s, &mut refs);
                }
            }
        }
        if self.data.extract_by.enabled {
            template_refs("extract_by.serial", &self.data.extract_by.serial, &mut refs);
        }
        refs
    }
    fn outputs(&self) -> Vec<(String, VarType)> {
        // The result has the input's type, which only the graph knows.
        vec![("result".into(), VarType::Any), ("first_record".into(), VarType::Any), ("last_record".into(), VarType::Any)]
    }
    fn run<'a>(&'a self, ctx: NodeCtx<'a>) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let value = ctx
                .scope
                .get(&self.data.variable)
                .ok_or_else(|| NodeError::Failed(format!("Variable not found for selector: {:?}", self.data.variable)))?;
            let items = match value {
                Value::Array(items) => items,
                Value::Null => Vec::new(),
                other => {
                    return Err(NodeError::Failed(format!(
                        "list-operator needs an array, but {:?} is a {}",
                        self.data.variable,
                        type_name(&other)
                    )))
                }
            };
            let mut inputs = Map::new();
            inputs.insert("variable".into(), Value::Array(items.clone()));
            let mut items = items;
            let d = &self.data;
            if d.filter_by.enabled {
                items = self.filter(ctx.scope, items).map_err(NodeError::Failed)?;
            }
            if d.extract_by.enabled && !items.is_empty() {
                items = self.extract(ctx.scope, items).map_err(NodeError::Failed)?;
            }
            if d.order_by.enabled {
                self.order(&mut items);
            }
            if d.limit.enabled {
                items.truncate(usize::try_from(d.limit.size).unwrap_or(0));
            }
            let mut outputs = Map::new();
            outputs.insert("first_record".into(), items.first().cloned().unwrap_or(Value::Null));
            outputs.insert("last_record".into(), items.last().cloned().unwrap_or(Value::Null));
            outputs.insert("result".into(), Value::Array(items));
            Ok(NodeOutput { process_data: inputs.clone(), inputs, outputs, ..NodeOutput::default() })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::{ctx, limits, FakeEffects, MapScope};
    use super::*;

    async fn run(data: Value, list: Value) -> Result<Map<String, Value>, String> {
        let n = ListOperator::build(&data).map_err(|e| format!("{e:?}"))?;
        let scope = MapScope::with(&[("start.list", list), ("start.k", json!("2"))]);
        let fx = FakeEffects::default();
        n.run(ctx(&scope, &fx, &limits())).await.map(|o| o.outputs).map_err(|e| e.to_string())
    }

    fn data(extra: Value) -> Value {
        let mut d = json!({"type": "list-operator", "variable": ["start", "list"],
            "filter_by": {"enabled": false, "conditions": []}, "order_by": {"enabled": false, "key": "", "value": "asc"},
            "limit": {"enabled": false, "size": 10}, "extract_by": {"enabled": false, "serial": "1"}});
        if let (Value::Object(d), Value::Object(e)) = (&mut d, extra) {
            d.extend(e);
        }
        d
    }

    #[tokio::test]
    async fn filter_order_limit_strings() {
        let out = run(
            data(json!({"filter_by": {"enabled": true, "conditions": [{"key": "", "comparison_operator": "contains", "value": "a"}]},
                        "order_by": {"enabled": true, "key": "", "value": "desc"}, "limit": {"enabled": true, "size": 2}})),
            json!(["banana", "cherry", "apple", "date", "avocado"]),
        )
        .await
        .unwrap();
        assert_eq!(out["result"], json!(["date", "banana"]));
        assert_eq!(out["first_record"], "date");
        assert_eq!(out["last_record"], "banana");
    }

    #[tokio::test]
    async fn numbers_compare_numerically_and_serial_is_templated() {
        let out = run(
            data(json!({"filter_by": {"enabled": true, "conditions": [{"comparison_operator": "≥", "value": "{{#start.k#}}"}]},
                        "order_by": {"enabled": true, "value": "asc"}})),
            json!([10, 1, 2, 30]),
        )
        .await
        .unwrap();
        assert_eq!(out["result"], json!([2, 10, 30]));
        let d = data(json!({"extract_by": {"enabled": true, "serial": "{{#start.k#}}"}}));
        assert_eq!(ListOperator::build(&d).unwrap().references()[1].0, "extract_by.serial");
        let out = run(d, json!(["a", "b", "c"])).await.unwrap();
        assert_eq!(out["result"], json!(["b"]));
        let e = run(data(json!({"extract_by": {"enabled": true, "serial": "5"}})), json!(["a"])).await.unwrap_err();
        assert!(e.contains("must be <= 1, got 5"), "{e}");
    }

    #[tokio::test]
    async fn files_by_attribute() {
        let files = json!([
            {"filename": "b.pdf", "extension": "pdf", "type": "document", "size": 300, "transfer_method": "local_file"},
            {"filename": "a.png", "extension": ".png", "type": "image", "size": 100, "transfer_method": "local_file"},
            {"filename": "c.txt", "extension": "txt", "type": "document", "size": 200, "transfer_method": "remote_url"}
        ]);
        let out = run(
            data(
                json!({"filter_by": {"enabled": true, "conditions": [{"key": "type", "comparison_operator": "in", "value": ["document"]}]},
                        "order_by": {"enabled": true, "key": "size", "value": "asc"}}),
            ),
            files.clone(),
        )
        .await
        .unwrap();
        let names: Vec<&str> = out["result"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["c.txt", "b.pdf"]);
        let out = run(
            data(
                json!({"filter_by": {"enabled": true, "conditions": [{"key": "extension", "comparison_operator": "is", "value": ".png"}]}}),
            ),
            files,
        )
        .await
        .unwrap();
        assert_eq!(out["first_record"]["filename"], "a.png");
    }

    #[tokio::test]
    async fn string_in_text_and_empty_inputs() {
        let out = run(
            data(json!({"filter_by": {"enabled": true, "conditions": [{"comparison_operator": "not in", "value": "a,b"}]}})),
            json!(["a", "c"]),
        )
        .await
        .unwrap();
        assert_eq!(out["result"], json!(["c"]));
        let out = run(data(json!({})), json!([])).await.unwrap();
        assert_eq!(out["result"], json!([]));
        assert_eq!(out["first_record"], Value::Null);
        let e = run(data(json!({})), json!("nope")).await.unwrap_err();
        assert!(e.contains("needs an array"), "{e}");
        let e =
            run(data(json!({"filter_by": {"enabled": true, "conditions": [{"comparison_operator": ">", "value": "1"}]}})), json!(["a"]))
                .await
                .unwrap_err();
        assert!(e.contains("applies to a number"), "{e}");
    }

    #[test]
    fn bad_data_names_each_field() {
        let e = ListOperator::build(&data(json!({
            "variable": ["x"],
            "filter_by": {"enabled": true, "conditions": [{"comparison_operator": "like", "value": "a"}, {"key": "colour", "comparison_operator": "is", "value": "a"}]},
            "order_by": {"enabled": true, "key": "weight", "value": "up"},
            "limit": {"enabled": true, "size": 0},
            "extract_by": {"enabled": true, "serial": ""}
        })))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "variable",
                "filter_by.conditions.0.comparison_operator",
                "filter_by.conditions.1.key",
                "order_by.value",
                "order_by.key",
                "limit.size",
                "extract_by.serial"
            ]
        );
        // Dify's own defaults and older shapes are accepted.
        let d = data(
            json!({"limit": {"enabled": false, "size": -1}, "extract_by": {"enabled": true, "serial": 2}, "order_by": {"enabled": false, "key": null, "value": "asc"}}),
        );
        assert!(ListOperator::build(&d).is_ok());
        let e = ListOperator::build(&json!({"filter_by": {}})).unwrap_err();
        assert_eq!(e[0].0, "variable");
    }
}
