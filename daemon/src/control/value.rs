//! The admin reports (edgeai-common's serde types) as D-Bus values: an
//! object becomes `a{sv}` (null fields left out), an array `av`, a number
//! `t` when unsigned, `x` when negative, `d` otherwise. Clients read them
//! back into the same types (edgeai-common's `dbus` module).

use std::collections::HashMap;

use serde_json::Value as Json;
use zbus::zvariant::{OwnedValue, Value};

use super::MethodError;

/// `a{sv}`.
pub type Dict = HashMap<String, OwnedValue>;

/// A report as `a{sv}`; it must serialise to a JSON object.
pub fn dict<T: serde::Serialize>(report: &T) -> Result<Dict, MethodError> {
    match serde_json::to_value(report) {
        Ok(Json::Object(map)) => map
            .into_iter()
            .filter_map(|(k, v)| value(v).map(|v| (k, v)))
            .map(|(k, v)| OwnedValue::try_from(v).map(|v| (k, v)).map_err(|e| MethodError::Failed(format!("encoding {e}"))))
            .collect(),
        Ok(other) => Err(MethodError::Failed(format!("internal error: a report encoded as {other}, not an object"))),
        Err(e) => Err(MethodError::Failed(format!("internal error encoding a report: {e}"))),
    }
}

/// A list of reports as `aa{sv}`.
pub fn dicts<T: serde::Serialize>(reports: &[T]) -> Result<Vec<Dict>, MethodError> {
    reports.iter().map(dict).collect()
}

fn value(v: Json) -> Option<Value<'static>> {
    Some(match v {
        Json::Null => return None,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::U64(u),
            (None, Some(i), _) => Value::I64(i),
            (None, None, Some(f)) => Value::F64(f),
            (None, None, None) => return None,
        },
        Json::String(s) => Value::from(s),
        Json::Array(items) => Value::from(items.into_iter().filter_map(value).collect::<Vec<Value<'static>>>()),
        Json::Object(map) => {
            Value::from(map.into_iter().filter_map(|(k, v)| value(v).map(|v| (k, v))).collect::<HashMap<String, Value<'static>>>())
        }
    })
}

/// A string option of an `a{sv}` argument; a value of another type is an error.
pub fn opt_str(options: &HashMap<String, OwnedValue>, key: &str) -> Result<Option<String>, MethodError> {
    match options.get(key) {
        None => Ok(None),
        Some(v) => match &**v {
            Value::Str(s) => Ok(Some(s.to_string())),
            other => Err(MethodError::InvalidArgument(format!("option {key:?} must be a string (s), not {}", other.value_signature()))),
        },
    }
}

/// An unsigned option (any unsigned or non-negative integer type).
pub fn opt_u32(options: &HashMap<String, OwnedValue>, key: &str) -> Result<Option<u32>, MethodError> {
    let bad = |sig: String| MethodError::InvalidArgument(format!("option {key:?} must be an unsigned integer (u), not {sig}"));
    match options.get(key) {
        None => Ok(None),
        Some(v) => {
            let n: Option<u64> = match &**v {
                Value::U8(n) => Some(u64::from(*n)),
                Value::U16(n) => Some(u64::from(*n)),
                Value::U32(n) => Some(u64::from(*n)),
                Value::U64(n) => Some(*n),
                Value::I16(n) => u64::try_from(*n).ok(),
                Value::I32(n) => u64::try_from(*n).ok(),
                Value::I64(n) => u64::try_from(*n).ok(),
                other => return Err(bad(other.value_signature().to_string())),
            };
            n.and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| bad("an out-of-range number".into()))
        }
    }
}

/// A signed option (unix seconds and the like); any integer type.
pub fn opt_i64(options: &HashMap<String, OwnedValue>, key: &str) -> Result<Option<i64>, MethodError> {
    let bad = |sig: String| MethodError::InvalidArgument(format!("option {key:?} must be an integer (x), not {sig}"));
    match options.get(key) {
        None => Ok(None),
        Some(v) => match &**v {
            Value::I16(n) => Ok(Some(i64::from(*n))),
            Value::I32(n) => Ok(Some(i64::from(*n))),
            Value::I64(n) => Ok(Some(*n)),
            Value::U8(n) => Ok(Some(i64::from(*n))),
            Value::U16(n) => Ok(Some(i64::from(*n))),
            Value::U32(n) => Ok(Some(i64::from(*n))),
            Value::U64(n) => i64::try_from(*n).map(Some).map_err(|_| bad("an out-of-range number".into())),
            other => Err(bad(other.value_signature().to_string())),
        },
    }
}

/// A boolean option.
pub fn opt_bool(options: &HashMap<String, OwnedValue>, key: &str) -> Result<Option<bool>, MethodError> {
    match options.get(key) {
        None => Ok(None),
        Some(v) => match &**v {
            Value::Bool(b) => Ok(Some(*b)),
            other => Err(MethodError::InvalidArgument(format!("option {key:?} must be a boolean (b), not {}", other.value_signature()))),
        },
    }
}

/// Refuses options this method does not know, so a typo is not ignored.
pub fn only(options: &HashMap<String, OwnedValue>, known: &[&str]) -> Result<(), MethodError> {
    match options.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(MethodError::InvalidArgument(format!(
            "unknown option {k:?}; this method takes {}",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_becomes_nested_dicts_without_nulls() {
        let d =
            dict(&serde_json::json!({"a": 1, "b": -2, "c": 0.5, "s": "x", "n": null, "o": {"k": true}, "l": ["p", "q"]})).expect("dict");
        assert!(!d.contains_key("n"), "null fields are left out");
        assert_eq!(d["a"].value_signature().to_string(), "t");
        assert_eq!(d["b"].value_signature().to_string(), "x");
        assert_eq!(d["c"].value_signature().to_string(), "d");
        assert_eq!(d["s"].value_signature().to_string(), "s");
        assert_eq!(d["o"].value_signature().to_string(), "a{sv}");
        assert_eq!(d["l"].value_signature().to_string(), "av");
        assert!(dict(&serde_json::json!([1])).is_err(), "a report must be an object");
    }

    #[test]
    fn options_are_typed_and_unknown_ones_refused() {
        let mut o = HashMap::new();
        o.insert("app".to_owned(), OwnedValue::from(7u32));
        let err = opt_str(&o, "app").expect_err("wrong type");
        assert!(matches!(err, MethodError::InvalidArgument(ref m) if m.contains("must be a string")), "{err:?}");
        assert_eq!(opt_u32(&o, "app").expect("u32"), Some(7));
        assert!(only(&o, &["version"]).is_err());
        assert!(only(&o, &["app"]).is_ok());
    }
}
