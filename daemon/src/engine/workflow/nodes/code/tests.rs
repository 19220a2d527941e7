use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::super::super::{Capabilities, CodeLanguage, CodeSupport, NodeKind, VarType};
use super::super::testing::{ctx, limits, FakeEffects, MapScope};
use super::outputs::{self, parse_schema, precision, Limits};
use super::Code;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Checks `result` against an `outputs` block written as Dify exports it.
fn check(schema: Value, result: Value) -> Result<Value, String> {
    let schema = parse_schema(&obj(schema), "outputs").expect("schema");
    outputs::transform(&obj(result), &schema, &Limits::default()).map(Value::Object)
}

fn caps(js: &[&str], py: &[&str]) -> Capabilities {
    let set = |m: &[&str]| CodeSupport::Available(Arc::new(m.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>()));
    Capabilities { javascript: set(js), python3: set(py) }
}

fn node(lang: &str, extra: Value) -> Value {
    let mut d = obj(json!({
        "type": "code", "title": "Parse", "code_language": lang,
        "code": "def main(a: str) -> dict:\n    return {'r': a}\n",
        "variables": [{"variable": "a", "value_selector": ["start", "q"]}],
        "outputs": {"r": {"type": "string", "children": null}},
    }));
    d.extend(obj(extra));
    Value::Object(d)
}

#[test]
fn every_declared_type_passes_when_the_value_fits() {
    let schema = json!({
        "s": {"type": "string"}, "n": {"type": "number"}, "b": {"type": "boolean"},
        "o": {"type": "object", "children": {"k": {"type": "number"}}},
        "as": {"type": "array[string]"}, "an": {"type": "array[number]"},
        "ab": {"type": "array[boolean]"}, "ao": {"type": "array[object]", "children": {"x": {"type": "string"}}},
        "free": {"type": "object", "children": null},
    });
    let result = json!({
        "s": "a\u{0}b", "n": 2.5, "b": true, "o": {"k": 1}, "as": ["x", null], "an": [1, true, 3.5],
        "ab": [true, null], "ao": [{"x": "y"}, null], "free": {"deep": {"list": [1, 2], "s": ["a"]}},
    });
    let out = check(schema, result).expect("valid");
    // NUL characters are dropped from strings, booleans in number arrays are 0/1, as in Dify.
    assert_eq!(out["s"], json!("ab"));
    assert_eq!(out["an"], json!([1, 1, 3.5]));
    assert_eq!(out["free"], json!({"deep": {"list": [1, 2], "s": ["a"]}}));
    assert_eq!(out["ao"], json!([{"x": "y"}, null]));
    // null is accepted for every type.
    let nulls = check(
        json!({"s": {"type": "string"}, "o": {"type": "object"}, "an": {"type": "array[number]"}}),
        json!({"s": null, "o": null, "an": null}),
    );
    assert_eq!(nulls, Ok(json!({"s": null, "o": null, "an": null})));
}

#[test]
fn type_mismatches_give_difys_messages() {
    let cases = [
        (json!({"r": {"type": "string"}}), json!({"r": 3}), "Output r must be a string, got int instead."),
        (json!({"r": {"type": "number"}}), json!({"r": "3"}), "Output r is not a number, got <class 'str'> instead."),
        (json!({"r": {"type": "object"}}), json!({"r": [1]}), "Output r is not an object, got <class 'list'> instead."),
        (json!({"r": {"type": "boolean"}}), json!({"r": "yes"}), "Output r is not a boolean, got <class 'str'> instead."),
        (json!({"r": {"type": "array[string]"}}), json!({"r": "x"}), "Output r is not an array, got <class 'str'> instead."),
        (json!({"r": {"type": "array[string]"}}), json!({"r": ["x", 1]}), "Output r[1] must be a string, got int instead."),
        (
            json!({"r": {"type": "array[number]"}}),
            json!({"r": [1, null]}),
            "The element at index 1 of output variable `r` must be a number.",
        ),
        (json!({"r": {"type": "array[boolean]"}}), json!({"r": [true, 0]}), "Output r[1] is not a boolean, got <class 'int'> instead."),
        (
            json!({"r": {"type": "array[object]"}}),
            json!({"r": [{}, 2.5]}),
            "Output r[1] is not an object, got <class 'float'> instead at index 1.",
        ),
        (json!({"r": {"type": "string"}}), json!({}), "Output r is missing."),
        (json!({"r": {"type": "string"}}), json!({"r": "a", "extra": 1}), "Not all output parameters are validated."),
        (
            json!({"o": {"type": "object", "children": {"k": {"type": "number"}}}}),
            json!({"o": {"k": "x"}}),
            "Output o.k is not a number, got <class 'str'> instead.",
        ),
        (json!({"o": {"type": "object", "children": {"k": {"type": "number"}}}}), json!({"o": {}}), "Output o.k is missing."),
        (
            json!({"o": {"type": "object"}}),
            json!({"o": {"l": [1, "a"]}}),
            "Output o.l is not a valid array. make sure all elements are of the same type.",
        ),
    ];
    for (schema, result, message) in cases {
        assert_eq!(check(schema.clone(), result.clone()), Err(message.to_owned()), "{schema} / {result}");
    }
}

#[test]
fn difys_limits_hold() {
    let l = Limits::default();
    let long = "é".repeat(l.max_string_length + 1);
    assert_eq!(
        check(json!({"r": {"type": "string"}}), json!({"r": long})),
        Err("The length of output variable `r` must be less than 80000 characters".into())
    );
    assert!(check(json!({"r": {"type": "string"}}), json!({"r": "é".repeat(l.max_string_length)})).is_ok(), "the limit itself is allowed");
    let range = "Output variable `r` is out of range, it must be between -9223372036854775807 and 9223372036854775807.";
    assert_eq!(check(json!({"r": {"type": "number"}}), json!({"r": u64::MAX})), Err(range.into()));
    assert_eq!(check(json!({"r": {"type": "number"}}), json!({"r": i64::MIN})), Err(range.into()));
    assert_eq!(check(json!({"r": {"type": "number"}}), json!({"r": 1e300})), Err(range.into()));
    assert_eq!(
        check(json!({"r": {"type": "number"}}), json!({"r": 1.234_567_890_123_456_7e-10})),
        Err("Output variable `r` has too high precision, it must be less than 20 digits.".into())
    );
    assert_eq!(
        check(json!({"r": {"type": "array[string]"}}), json!({"r": vec!["x"; 31]})),
        Err("The length of output variable `r` must be less than 30 elements.".into())
    );
    assert!(check(json!({"r": {"type": "array[string]"}}), json!({"r": vec!["x"; 30]})).is_ok());
    assert_eq!(
        check(json!({"r": {"type": "array[number]"}}), json!({"r": vec![1; 1001]})),
        Err("The length of output variable `r` must be less than 1000 elements.".into())
    );
    assert_eq!(
        check(json!({"r": {"type": "array[object]"}}), json!({"r": vec![json!({}); 31]})),
        Err("The length of output variable `r` must be less than 30 elements.".into())
    );
    let deep = json!({"r": {"a": {"b": {"c": {"d": {"e": 1}}}}}});
    assert_eq!(check(json!({"r": {"type": "object"}}), deep), Err("Depth limit 5 reached, object too deep.".into()));
    assert!(check(json!({"r": {"type": "object"}}), json!({"r": {"a": {"b": {"c": 1}}}})).is_ok());
}

#[test]
fn precision_counts_digits_as_python_does() {
    for (f, digits) in [(0.1, 1), (1.5e-3, 4), (123.456, 3), (1e21, 0), (2.0, 0), (1e-21, 21), (0.30000000000000004, 17)] {
        assert_eq!(precision(f), digits, "{f}");
    }
}

#[test]
fn import_refuses_what_cannot_run_here() {
    let unavailable = Capabilities { javascript: CodeSupport::Unchecked, python3: CodeSupport::Unavailable("no python3 on PATH".into()) };
    let e = Code::build(&node("python3", json!({})), &unavailable).expect_err("no python");
    assert_eq!(e, vec![("code_language".to_owned(), "python3 code nodes cannot run here: no python3 on PATH".to_owned())]);
    let e = Code::build(&node("ruby", json!({})), &caps(&[], &[])).expect_err("ruby");
    assert_eq!(e[0].0, "code_language");
    let deps = json!({"dependencies": [{"name": "json", "version": ""}, {"name": "numpy", "version": "1.26"}]});
    let e = Code::build(&node("python3", deps.clone()), &caps(&[], &["json"])).expect_err("numpy");
    assert_eq!(
        e,
        vec![(
            "dependencies.1.name".to_owned(),
            "module \"numpy\" is not available offline here (this python3 does not have it, or the sandbox refuses it as it does socket, subprocess and ctypes)".to_owned()
        )]
    );
    assert!(Code::build(&node("python3", deps), &caps(&[], &["json", "numpy"])).is_ok());
    let e = Code::build(&node("javascript", json!({"dependencies": [{"name": "lodash"}]})), &caps(&[], &[])).expect_err("lodash");
    assert!(e[0].1.contains("no npm modules"), "{e:?}");
    let e = Code::build(&node("python3", json!({"outputs": {"f": {"type": "file"}}})), &caps(&[], &[])).expect_err("file output");
    assert_eq!(e, vec![("outputs.f.type".to_owned(), "Output type file is not supported.".to_owned())]);
    let e = Code::build(&node("python3", json!({"timeout": 0})), &caps(&[], &[])).expect_err("timeout 0");
    assert_eq!(e[0].0, "timeout");
    let e = Code::build(&node("python3", json!({"code": "  "})), &caps(&[], &[])).expect_err("no code");
    assert_eq!(e[0].0, "code");
    // Apps loaded from the store are not checked again.
    assert!(Code::build(&node("python3", json!({"dependencies": [{"name": "numpy"}]})), &Capabilities::unchecked()).is_ok());
}

#[tokio::test]
async fn a_run_passes_the_variables_and_checks_the_result() {
    let c = Code::build(&node("python3", json!({"timeout": 2.5, "memory_limit_mb": 64})), &caps(&[], &[])).expect("build");
    assert_eq!(c.outputs(), vec![("r".to_owned(), VarType::String)]);
    assert_eq!(c.references(), vec![("variables.0.value_selector".to_owned(), vec!["start".to_owned(), "q".to_owned()])]);
    let fx = FakeEffects::default();
    fx.push_code(Ok(obj(json!({"r": "E42"}))));
    fx.push_code(Ok(obj(json!({"r": 42}))));
    fx.push_code(Err("ZeroDivisionError: division by zero (line 2)".into()));
    let scope = MapScope::with(&[("start.q", json!("fault E42"))]);
    let limits = limits();
    let out = c.run(ctx(&scope, &fx, &limits)).await.expect("run");
    assert_eq!(out.outputs, obj(json!({"r": "E42"})));
    assert_eq!(out.inputs, obj(json!({"a": "fault E42"})));
    let call = &fx.code_calls()[0];
    assert_eq!((call.language, call.timeout, call.memory_mb), (CodeLanguage::Python3, Some(Duration::from_millis(2500)), Some(64)));
    assert_eq!(call.inputs, obj(json!({"a": "fault E42"})));
    let e = c.run(ctx(&scope, &fx, &limits)).await.expect_err("wrong type");
    assert_eq!(e.to_string(), "Output r must be a string, got int instead.");
    let e = c.run(ctx(&scope, &fx, &limits)).await.expect_err("raised");
    assert_eq!(e.to_string(), "ZeroDivisionError: division by zero (line 2)");
}
