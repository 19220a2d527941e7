//! Dify's comparison operators, shared by if-else, loop break conditions and
//! list-operator filters: the semantics of Dify's condition processor
//! (`api/core/workflow/utils/condition/processor.py`), with an error instead
//! of a wrong answer where an operator does not apply to the value's type.

use serde_json::Value;

use super::type_name;

/// Whether `actual` (the variable's value; `None` when unset) satisfies
/// `op` against `expected` (the condition's value, already rendered).
///
/// Strings: contains, not contains, start with, end with, is, is not, empty,
/// not empty, in, not in. Numbers: =, ≠, >, <, ≥, ≤ (also `!=`, `>=`, `<=`),
/// null, not null; `expected` may be a numeric string. Arrays: contains,
/// not contains, empty, not empty, all of, in, not in. Booleans: is, is not,
/// =, ≠; `expected` may be `"true"`/`"false"`/`1`/`0`. Files: exists, not
/// exists. An unset variable satisfies only empty, null, not exists and the
/// negative operators that Dify lets it satisfy (not contains, not in).
pub fn compare(op: &str, actual: Option<&Value>, expected: &Value) -> Result<bool, String> {
    let actual = actual.filter(|v| !v.is_null());
    match op {
        "contains" => contains(op, actual, expected),
        "not contains" => contains(op, actual, expected).map(|b| !b),
        "start with" | "end with" => {
            let Some(v) = actual else { return Ok(false) };
            let Value::String(s) = v else { return Err(mismatch(op, v, "a string")) };
            let e = text(op, expected)?;
            Ok(if op == "start with" { s.starts_with(&e) } else { s.ends_with(&e) })
        }
        "is" | "is not" => {
            let Some(v) = actual else { return Ok(false) };
            let equal = match v {
                Value::String(s) => *s == text(op, expected)?,
                Value::Bool(b) => *b == boolean(op, expected)?,
                other => return Err(mismatch(op, other, "a string or a boolean")),
            };
            Ok(equal == (op == "is"))
        }
        "empty" => Ok(is_empty(actual)),
        "not empty" => Ok(!is_empty(actual)),
        "null" | "not exists" => Ok(actual.is_none()),
        "not null" | "exists" => Ok(actual.is_some()),
        "=" | "≠" | "!=" => {
            let Some(v) = actual else { return Ok(false) };
            let equal = match v {
                Value::Number(n) => n.as_f64() == Some(number(op, expected)?),
                Value::Bool(b) => *b == boolean(op, expected)?,
                other => return Err(mismatch(op, other, "a number or a boolean")),
            };
            Ok(equal == (op == "="))
        }
        ">" | "<" | "≥" | ">=" | "≤" | "<=" => {
            let Some(v) = actual else { return Ok(false) };
            let Some(a) = v.as_f64() else { return Err(mismatch(op, v, "a number")) };
            let e = number(op, expected)?;
            Ok(match op {
                ">" => a > e,
                "<" => a < e,
                "≥" | ">=" => a >= e,
                _ => a <= e,
            })
        }
        "in" | "not in" => {
            let Some(v) = actual.filter(|v| truthy(v)) else { return Ok(op == "not in") };
            let Value::Array(options) = expected else {
                return Err(format!("operator {op:?} needs a list of values to compare with, got a {}", type_name(expected)));
            };
            let found = options.iter().any(|o| loose_eq(v, o));
            Ok(found == (op == "in"))
        }
        "all of" => {
            let Value::Array(wanted) = expected else {
                return Err(format!("operator \"all of\" needs a list of values to compare with, got a {}", type_name(expected)));
            };
            let Some(v) = actual.filter(|v| truthy(v)) else { return Ok(false) };
            match v {
                Value::Array(items) => Ok(wanted.iter().all(|w| items.iter().any(|i| loose_eq(i, w)))),
                Value::String(s) => wanted.iter().map(|w| text(op, w).map(|w| s.contains(&w))).try_fold(true, |all, r| r.map(|b| all && b)),
                other => Err(mismatch(op, other, "a string or an array")),
            }
        }
        other => Err(format!("comparison operator {other:?} is not supported")),
    }
}

/// contains: a substring of a string, an element of an array.
fn contains(op: &str, actual: Option<&Value>, expected: &Value) -> Result<bool, String> {
    let Some(v) = actual.filter(|v| truthy(v)) else { return Ok(false) };
    match v {
        Value::String(s) => Ok(s.contains(&text(op, expected)?)),
        Value::Array(items) => Ok(items.iter().any(|i| loose_eq(i, expected))),
        other => Err(mismatch(op, other, "a string or an array")),
    }
}

/// Python's truthiness, which Dify's empty checks use: null, "", 0, false,
/// [] and {} are empty.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn is_empty(actual: Option<&Value>) -> bool {
    !actual.is_some_and(truthy)
}

/// Equality as a condition means it: the same JSON, or a number and the
/// numeric string the builder stored, or a boolean and "true"/"false".
fn loose_eq(item: &Value, expected: &Value) -> bool {
    if item == expected {
        return true;
    }
    match (item, expected) {
        (Value::Number(n), Value::String(s)) => s.trim().parse::<f64>().ok() == n.as_f64(),
        (Value::String(s), Value::Number(n)) => s.trim().parse::<f64>().ok() == n.as_f64(),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Bool(b), Value::String(s)) => parse_bool(s) == Some(*b),
        _ => false,
    }
}

fn text(op: &str, expected: &Value) -> Result<String, String> {
    match expected {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("operator {op:?} compares with a string, got a {}", type_name(other))),
    }
}

fn number(op: &str, expected: &Value) -> Result<f64, String> {
    match expected {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("operator {op:?}: {n} is not a usable number")),
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| format!("operator {op:?} compares with a number, got {s:?}")),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        other => Err(format!("operator {op:?} compares with a number, got a {}", type_name(other))),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "true" | "True" | "1" => Some(true),
        "false" | "False" | "0" => Some(false),
        _ => None,
    }
}

fn boolean(op: &str, expected: &Value) -> Result<bool, String> {
    match expected {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => Ok(n.as_f64().is_some_and(|f| f != 0.0)),
        Value::String(s) => {
            parse_bool(s).ok_or_else(|| format!("operator {op:?} compares a boolean with {s:?}, which is not true or false"))
        }
        other => Err(format!("operator {op:?} compares with a boolean, got a {}", type_name(other))),
    }
}

fn mismatch(op: &str, actual: &Value, wanted: &str) -> String {
    format!("operator {op:?} applies to {wanted}, but the variable is a {}", type_name(actual))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ok(op: &str, actual: Value, expected: Value) -> bool {
        compare(op, Some(&actual), &expected).unwrap_or_else(|e| panic!("{op} {actual} {expected}: {e}"))
    }
    fn unset(op: &str, expected: Value) -> bool {
        compare(op, None, &expected).unwrap_or_else(|e| panic!("{op} unset {expected}: {e}"))
    }
    fn err(op: &str, actual: Value, expected: Value) -> String {
        compare(op, Some(&actual), &expected).expect_err(&format!("{op} {actual} {expected} should fail"))
    }

    #[test]
    fn string_operators() {
        assert!(ok("contains", json!("hello world"), json!("lo w")));
        assert!(!ok("contains", json!("hello"), json!("x")));
        assert!(ok("not contains", json!("hello"), json!("x")));
        assert!(!ok("not contains", json!("hello"), json!("ell")));
        assert!(ok("start with", json!("hello"), json!("he")));
        assert!(!ok("start with", json!("hello"), json!("lo")));
        assert!(ok("end with", json!("hello"), json!("lo")));
        assert!(!ok("end with", json!("hello"), json!("he")));
        assert!(ok("is", json!("a"), json!("a")));
        assert!(!ok("is", json!("a"), json!("b")));
        assert!(ok("is not", json!("a"), json!("b")));
        assert!(!ok("is not", json!("a"), json!("a")));
        assert!(ok("empty", json!(""), json!(null)));
        assert!(!ok("empty", json!("x"), json!(null)));
        assert!(ok("not empty", json!("x"), json!(null)));
        assert!(!ok("not empty", json!(""), json!(null)));
        assert!(ok("in", json!("b"), json!(["a", "b"])));
        assert!(!ok("in", json!("c"), json!(["a", "b"])));
        assert!(ok("not in", json!("c"), json!(["a", "b"])));
        assert!(!ok("not in", json!("a"), json!(["a", "b"])));
        assert!(ok("all of", json!("a b c"), json!(["a", "c"])));
        assert!(!ok("all of", json!("a b"), json!(["a", "c"])));
        // A number typed into a string condition is compared as its text.
        assert!(ok("contains", json!("v42"), json!(42)));
    }

    #[test]
    fn number_operators_with_numeric_strings() {
        assert!(ok("=", json!(3), json!("3")));
        assert!(ok("=", json!(3.0), json!(3)));
        assert!(!ok("=", json!(3), json!("4")));
        assert!(ok("≠", json!(3), json!("4")));
        assert!(ok("!=", json!(3), json!(" 4 ")));
        assert!(!ok("≠", json!(3), json!("3")));
        assert!(ok(">", json!(10), json!("9")));
        assert!(!ok(">", json!(9), json!("9")));
        assert!(ok("<", json!(1.5), json!("2")));
        assert!(!ok("<", json!(2), json!(2)));
        assert!(ok("≥", json!(2), json!("2")));
        assert!(ok(">=", json!(3), json!(2)));
        assert!(!ok("≥", json!(1), json!(2)));
        assert!(ok("≤", json!(2), json!("2.0")));
        assert!(ok("<=", json!(-1), json!(0)));
        assert!(!ok("≤", json!(3), json!(2)));
        // Numerically, not as text: "10" > "9" would be false as strings.
        assert!(ok(">", json!(10), json!("9.5")));
        assert!(ok("null", json!(null), json!(null)));
        assert!(!ok("null", json!(0), json!(null)));
        assert!(ok("not null", json!(0), json!(null)));
        assert!(unset("null", json!(null)));
        assert!(!unset("not null", json!(null)));
        // Dify's empty is Python's falsiness: 0 is empty.
        assert!(ok("empty", json!(0), json!(null)));
        assert!(ok("not empty", json!(7), json!(null)));
    }

    #[test]
    fn array_operators() {
        assert!(ok("contains", json!(["a", "b"]), json!("b")));
        assert!(!ok("contains", json!(["a", "b"]), json!("c")));
        assert!(ok("contains", json!([1, 2, 3]), json!("2")));
        assert!(ok("not contains", json!([1, 2]), json!("3")));
        assert!(!ok("not contains", json!(["a"]), json!("a")));
        assert!(ok("empty", json!([]), json!(null)));
        assert!(!ok("empty", json!([1]), json!(null)));
        assert!(ok("not empty", json!([1]), json!(null)));
        assert!(ok("all of", json!(["a", "b", "c"]), json!(["a", "c"])));
        assert!(!ok("all of", json!(["a", "b"]), json!(["a", "c"])));
        assert!(ok("all of", json!([1, 2, 3]), json!(["1", "3"])));
        assert!(!ok("all of", json!([]), json!(["a"])));
        assert!(ok("empty", json!({}), json!(null)));
    }

    #[test]
    fn boolean_operators() {
        assert!(ok("is", json!(true), json!(true)));
        assert!(ok("is", json!(true), json!("true")));
        assert!(ok("is", json!(false), json!("0")));
        assert!(!ok("is", json!(false), json!("true")));
        assert!(ok("is not", json!(false), json!("true")));
        assert!(!ok("is not", json!(true), json!(1)));
        assert!(ok("=", json!(true), json!("1")));
        assert!(ok("≠", json!(true), json!(false)));
        assert!(ok("in", json!(true), json!(["true"])));
        assert!(err("is", json!(true), json!("maybe")).contains("not true or false"));
    }

    #[test]
    fn unset_variables() {
        assert!(!unset("contains", json!("a")));
        assert!(unset("not contains", json!("a")));
        assert!(!unset("start with", json!("a")));
        assert!(!unset("end with", json!("a")));
        assert!(!unset("is", json!("a")));
        assert!(!unset("is not", json!("a")));
        assert!(unset("empty", json!(null)));
        assert!(!unset("not empty", json!(null)));
        assert!(!unset("=", json!("1")));
        assert!(!unset("≠", json!("1")));
        assert!(!unset(">", json!("1")));
        assert!(!unset("<", json!("1")));
        assert!(!unset("≥", json!("1")));
        assert!(!unset("≤", json!("1")));
        assert!(!unset("in", json!(["a"])));
        assert!(unset("not in", json!(["a"])));
        assert!(!unset("all of", json!(["a"])));
        assert!(!unset("exists", json!(null)));
        assert!(unset("not exists", json!(null)));
        // A JSON null is unset too.
        assert!(!compare("contains", Some(&json!(null)), &json!("a")).unwrap());
    }

    #[test]
    fn files_exist_or_not() {
        let file = json!({"type": "document", "transfer_method": "local_file", "related_id": "f1"});
        assert!(ok("exists", file.clone(), json!(null)));
        assert!(!ok("not exists", file, json!(null)));
    }

    #[test]
    fn operators_that_do_not_apply_fail_clearly() {
        assert!(err("contains", json!(5), json!("5")).contains("applies to a string or an array, but the variable is a number"));
        assert!(err("start with", json!(["a"]), json!("a")).contains("applies to a string"));
        assert!(err("end with", json!(1), json!("1")).contains("applies to a string"));
        assert!(err("is", json!(1), json!("1")).contains("a string or a boolean"));
        assert!(err("is not", json!({"a": 1}), json!("1")).contains("is a object"));
        assert!(err("=", json!("3"), json!("3")).contains("a number or a boolean"));
        assert!(err(">", json!("3"), json!("1")).contains("applies to a number"));
        assert!(err("≤", json!(true), json!("1")).contains("applies to a number"));
        assert!(err(">", json!(3), json!("three")).contains("compares with a number, got \"three\""));
        assert!(err("in", json!("a"), json!("a,b")).contains("needs a list"));
        assert!(err("all of", json!(["a"]), json!("a")).contains("needs a list"));
        assert!(err("all of", json!(3), json!(["3"])).contains("a string or an array"));
        assert!(err("contains", json!("abc"), json!(["a"])).contains("compares with a string, got a array"));
        assert!(err("regex", json!("a"), json!("a")).contains("not supported"));
    }
}
