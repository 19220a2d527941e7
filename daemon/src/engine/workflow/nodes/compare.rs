//! Dify's comparison operators, shared by if-else, loop break conditions and
//! list-operator filters. (Skeleton: the full operator set is being written.)

use serde_json::Value;

/// Whether `actual` (the variable's value; `None` when unset) satisfies
/// `op` against `expected` (the condition's value, already rendered).
pub fn compare(op: &str, actual: Option<&Value>, expected: &Value) -> Result<bool, String> {
    match op {
        "is" | "=" => Ok(actual == Some(expected)),
        "empty" => Ok(actual.is_none_or(|v| v.is_null() || v.as_str() == Some(""))),
        other => Err(format!("comparison operator {other:?} is not supported")),
    }
}
