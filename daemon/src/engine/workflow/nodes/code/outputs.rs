//! outputs: a code node's declared `outputs` (type and, for objects,
//! children) and the check of what `main` returned against them, as Dify's
//! `CodeNode._transform_result` does it: the same rules, the same limits
//! (Dify's `CODE_MAX_*` defaults) and the same messages, with Python's type
//! names in them as Dify prints them. Two places are stricter than Dify: a
//! `boolean` output must be a boolean (Dify passes anything through), and a
//! JSON integer beyond i64 is out of range like any other number.

use serde_json::{Map, Number, Value};

use super::super::Problems;

/// Dify's `CodeNodeLimits` with its configuration defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_string_length: usize,
    pub max_number: i64,
    pub min_number: i64,
    pub max_precision: u32,
    pub max_depth: usize,
    pub max_number_array_length: usize,
    pub max_string_array_length: usize,
    pub max_object_array_length: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_string_length: 80_000,
            max_number: 9_223_372_036_854_775_807,
            min_number: -9_223_372_036_854_775_807,
            max_precision: 20,
            max_depth: 5,
            max_number_array_length: 1000,
            max_string_array_length: 30,
            max_object_array_length: 30,
        }
    }
}

/// The output types a code node may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    String,
    Number,
    Boolean,
    Object,
    ArrayString,
    ArrayNumber,
    ArrayBoolean,
    ArrayObject,
}

/// One declared output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub kind: OutputType,
    /// For `object` and `array[object]`: the declared fields; `None` checks
    /// the value by its own types only.
    pub children: Option<Vec<(String, OutputSpec)>>,
}

/// The node's `outputs` map (`{name: {type, children}}`), in order.
pub fn parse_schema(map: &Map<String, Value>, field: &str) -> Result<Vec<(String, OutputSpec)>, Problems> {
    let mut problems = Problems::new();
    let mut out = Vec::new();
    for (name, spec) in map {
        let at = format!("{field}.{name}");
        let kind = match spec.get("type").and_then(Value::as_str) {
            Some("string") => OutputType::String,
            Some("number") => OutputType::Number,
            Some("boolean") => OutputType::Boolean,
            Some("object") => OutputType::Object,
            Some("array[string]") => OutputType::ArrayString,
            Some("array[number]") => OutputType::ArrayNumber,
            Some("array[boolean]") => OutputType::ArrayBoolean,
            Some("array[object]") => OutputType::ArrayObject,
            Some(other) => {
                problems.push((format!("{at}.type"), format!("Output type {other} is not supported.")));
                continue;
            }
            None => {
                problems.push((format!("{at}.type"), "an output needs a type".into()));
                continue;
            }
        };
        let children = match spec.get("children") {
            Some(Value::Object(c)) if matches!(kind, OutputType::Object | OutputType::ArrayObject) => {
                match parse_schema(c, &format!("{at}.children")) {
                    Ok(c) => Some(c),
                    Err(mut p) => {
                        problems.append(&mut p);
                        None
                    }
                }
            }
            _ => None,
        };
        out.push((name.clone(), OutputSpec { kind, children }));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Checks `result` against `schema` and returns the outputs (strings with
/// NUL characters removed, booleans in number outputs as 0/1), or Dify's
/// message for the first violation.
pub fn transform(result: &Map<String, Value>, schema: &[(String, OutputSpec)], limits: &Limits) -> Result<Map<String, Value>, String> {
    Check { limits }.object(result, Some(schema), "", 1)
}

struct Check<'a> {
    limits: &'a Limits,
}

fn path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Python's name of the type a JSON value arrives as (`type(v).__name__`).
fn py_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `str(type(v))`: `<class 'str'>`.
fn py_class(v: &Value) -> String {
    format!("<class '{}'>", py_name(v))
}

impl Check<'_> {
    fn object(
        &self,
        result: &Map<String, Value>,
        schema: Option<&[(String, OutputSpec)]>,
        prefix: &str,
        depth: usize,
    ) -> Result<Map<String, Value>, String> {
        if depth > self.limits.max_depth {
            return Err(format!("Depth limit {} reached, object too deep.", self.limits.max_depth));
        }
        let Some(schema) = schema else {
            for (name, value) in result {
                self.untyped(name, value, prefix, depth)?;
            }
            return Ok(result.clone());
        };
        let mut out = Map::new();
        for (name, spec) in schema {
            let at = path(prefix, name);
            let Some(value) = result.get(name) else {
                return Err(format!("Output {at} is missing."));
            };
            out.insert(name.clone(), self.typed(value, spec, &at, depth)?);
        }
        if out.len() != result.len() {
            return Err("Not all output parameters are validated.".into());
        }
        Ok(out)
    }

    fn typed(&self, value: &Value, spec: &OutputSpec, at: &str, depth: usize) -> Result<Value, String> {
        match spec.kind {
            OutputType::Object => match value {
                Value::Null => Ok(Value::Null),
                Value::Object(m) => self.object(m, spec.children.as_deref(), at, depth + 1).map(Value::Object),
                other => Err(format!("Output {at} is not an object, got {} instead.", py_class(other))),
            },
            OutputType::Number => match value {
                Value::Null => Ok(Value::Null),
                Value::Bool(b) => Ok(Value::from(u8::from(*b))),
                Value::Number(n) => self.number(n, at).map(|()| value.clone()),
                other => Err(format!("Output {at} is not a number, got {} instead.", py_class(other))),
            },
            OutputType::String => match value {
                Value::Null => Ok(Value::Null),
                Value::String(s) => self.string(s, at).map(|()| Value::String(s.replace('\0', ""))),
                other => Err(format!("Output {at} must be a string, got {} instead.", py_name(other))),
            },
            OutputType::Boolean => match value {
                Value::Null | Value::Bool(_) => Ok(value.clone()),
                other => Err(format!("Output {at} is not a boolean, got {} instead.", py_class(other))),
            },
            OutputType::ArrayNumber => {
                let Some(items) = self.array(value, at, self.limits.max_number_array_length)? else { return Ok(Value::Null) };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Bool(b) => out.push(Value::from(u8::from(*b))),
                        Value::Number(n) => {
                            self.number(n, &format!("{at}[{i}]"))?;
                            out.push(item.clone());
                        }
                        _ => return Err(format!("The element at index {i} of output variable `{at}` must be a number.")),
                    }
                }
                Ok(Value::Array(out))
            }
            OutputType::ArrayString => {
                let Some(items) = self.array(value, at, self.limits.max_string_array_length)? else { return Ok(Value::Null) };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Null => out.push(Value::Null),
                        Value::String(s) => {
                            self.string(s, &format!("{at}[{i}]"))?;
                            out.push(Value::String(s.replace('\0', "")));
                        }
                        other => return Err(format!("Output {at}[{i}] must be a string, got {} instead.", py_name(other))),
                    }
                }
                Ok(Value::Array(out))
            }
            OutputType::ArrayBoolean => {
                let Some(items) = self.array(value, at, usize::MAX)? else { return Ok(Value::Null) };
                if let Some((i, other)) = items.iter().enumerate().find(|(_, v)| !matches!(v, Value::Null | Value::Bool(_))) {
                    return Err(format!("Output {at}[{i}] is not a boolean, got {} instead.", py_class(other)));
                }
                Ok(value.clone())
            }
            OutputType::ArrayObject => {
                let Some(items) = self.array(value, at, self.limits.max_object_array_length)? else { return Ok(Value::Null) };
                if let Some((i, other)) = items.iter().enumerate().find(|(_, v)| !matches!(v, Value::Null | Value::Object(_))) {
                    return Err(format!("Output {at}[{i}] is not an object, got {} instead at index {i}.", py_class(other)));
                }
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(m) => {
                            out.push(Value::Object(self.object(m, spec.children.as_deref(), &format!("{at}[{i}]"), depth + 1)?))
                        }
                        _ => out.push(Value::Null),
                    }
                }
                Ok(Value::Array(out))
            }
        }
    }

    /// An array output's items (`None` for null), within `max` items.
    fn array<'v>(&self, value: &'v Value, at: &str, max: usize) -> Result<Option<&'v Vec<Value>>, String> {
        match value {
            Value::Null => Ok(None),
            Value::Array(items) if items.len() > max => {
                Err(format!("The length of output variable `{at}` must be less than {max} elements."))
            }
            Value::Array(items) => Ok(Some(items)),
            other => Err(format!("Output {at} is not an array, got {} instead.", py_class(other))),
        }
    }

    /// A value under an object output without declared children.
    fn untyped(&self, name: &str, value: &Value, prefix: &str, depth: usize) -> Result<(), String> {
        let at = path(prefix, name);
        match value {
            Value::Object(m) => self.object(m, None, &at, depth + 1).map(drop),
            Value::Bool(_) | Value::Null => Ok(()),
            Value::Number(n) => self.number(n, &at),
            Value::String(s) => self.string(s, &at),
            Value::Array(items) => {
                let Some(first) = items.first().filter(|v| !v.is_null()) else { return Ok(()) };
                let all = |f: fn(&Value) -> bool| items.iter().all(|v| v.is_null() || f(v));
                if first.is_number() && all(Value::is_number) {
                    for (i, v) in items.iter().enumerate() {
                        if let Value::Number(n) = v {
                            self.number(n, &format!("{at}[{i}]"))?;
                        }
                    }
                } else if first.is_string() && all(Value::is_string) {
                    for (i, v) in items.iter().enumerate() {
                        if let Value::String(s) = v {
                            self.string(s, &format!("{at}[{i}]"))?;
                        }
                    }
                } else if (first.is_object() && all(Value::is_object)) || (first.is_array() && all(Value::is_array)) {
                    for (i, v) in items.iter().enumerate() {
                        match v {
                            Value::Object(m) => drop(self.object(m, None, &format!("{at}[{i}]"), depth + 1)?),
                            Value::Array(inner) => self.untyped_list(inner, &format!("{at}[{i}]"), depth + 1)?,
                            _ => {}
                        }
                    }
                } else {
                    return Err(format!("Output {at} is not a valid array. make sure all elements are of the same type."));
                }
                Ok(())
            }
        }
    }

    /// A list inside a list: Dify checks it as an object (its items by
    /// their own types), one level deeper.
    fn untyped_list(&self, items: &[Value], at: &str, depth: usize) -> Result<(), String> {
        if depth > self.limits.max_depth {
            return Err(format!("Depth limit {} reached, object too deep.", self.limits.max_depth));
        }
        for (i, v) in items.iter().enumerate() {
            self.untyped(&i.to_string(), v, at, depth)?;
        }
        Ok(())
    }

    fn string(&self, s: &str, at: &str) -> Result<(), String> {
        if s.chars().count() > self.limits.max_string_length {
            return Err(format!("The length of output variable `{at}` must be less than {} characters", self.limits.max_string_length));
        }
        Ok(())
    }

    fn number(&self, n: &Number, at: &str) -> Result<(), String> {
        let (min, max) = (self.limits.min_number, self.limits.max_number);
        let in_range = if let Some(i) = n.as_i64() {
            (min..=max).contains(&i)
        } else if n.is_u64() {
            false
        } else {
            let f = n.as_f64().unwrap_or(f64::NAN);
            f >= min as f64 && f <= max as f64
        };
        if !in_range {
            return Err(format!("Output variable `{at}` is out of range, it must be between {min} and {max}."));
        }
        if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
            if precision(f) > self.limits.max_precision {
                return Err(format!(
                    "Output variable `{at}` has too high precision, it must be less than {} digits.",
                    self.limits.max_precision
                ));
            }
        }
        Ok(())
    }
}

/// Digits after the decimal point of a float's shortest form, as Python's
/// `Decimal(str(f)).normalize()` counts them.
pub(super) fn precision(f: f64) -> u32 {
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let fraction = mantissa.split_once('.').map_or(0, |(_, frac)| frac.len() as i64);
    let exp: i64 = exp.parse().unwrap_or(0);
    u32::try_from((fraction - exp).max(0)).unwrap_or(u32::MAX)
}
