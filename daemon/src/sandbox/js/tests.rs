use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::super::{RunLimits, SandboxError};
use super::run;

fn limits() -> RunLimits {
    RunLimits { timeout: Duration::from_secs(2), memory_bytes: 64 * 1024 * 1024, max_output_bytes: 1024 * 1024 }
}

fn inputs(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("inputs must be an object"),
    }
}

fn ok(code: &str, args: Value) -> Value {
    Value::Object(run(code, &inputs(args), &limits()).unwrap_or_else(|e| panic!("{code}: {e}")))
}

fn err(code: &str, args: Value) -> SandboxError {
    run(code, &inputs(args), &limits()).expect_err(code)
}

#[test]
fn difys_default_code_runs() {
    let code = "function main({arg1, arg2}) {\n    return {\n        result: arg1 + arg2\n    }\n}\n";
    assert_eq!(ok(code, json!({"arg1": "a", "arg2": "b"})), json!({"result": "ab"}));
}

#[test]
fn every_json_type_goes_in_and_comes_out() {
    let args = json!({"s": "Grüße 设备", "n": 3, "f": 2.5, "b": true, "z": null, "a": [1, "x", {"k": [false]}], "o": {"deep": {"er": 1}}});
    let out = ok("function main(x) { return {echo: x, t: typeof x.n, len: x.a.length}; }", args.clone());
    assert_eq!(out, json!({"echo": args, "t": "number", "len": 3}));
}

#[test]
fn a_thrown_error_names_its_type_message_and_line() {
    let e = err("function main() {\n  const x = 1;\n  return {r: y};\n}", json!({}));
    assert_eq!(e, SandboxError::Code("ReferenceError: y is not defined (line 3)".into()));
    let e = err("function main() { throw new TypeError('bad code E42'); }", json!({}));
    assert!(matches!(&e, SandboxError::Code(m) if m.starts_with("TypeError: bad code E42")), "{e:?}");
    let e = err("function main() { throw 'plain'; }", json!({}));
    assert_eq!(e, SandboxError::Code("Uncaught: plain".into()));
    let e = err("function main( {", json!({}));
    assert!(matches!(&e, SandboxError::Code(m) if m.starts_with("SyntaxError")), "{e:?}");
}

#[test]
fn main_must_exist_and_return_an_object() {
    assert_eq!(err("function other() { return {}; }", json!({})), SandboxError::NoMain);
    assert_eq!(err("var main = 3;", json!({})), SandboxError::NoMain);
    assert_eq!(err("function main() { return [1]; }", json!({})), SandboxError::NotAnObject("array".into()));
    assert_eq!(err("function main() { return 'x'; }", json!({})), SandboxError::NotAnObject("string".into()));
    assert_eq!(err("function main() { }", json!({})), SandboxError::NotAnObject("undefined".into()));
    assert_eq!(err("function main() { return {toJSON() { return 5; }}; }", json!({})), SandboxError::NotAnObject("number".into()));
}

#[test]
fn an_endless_loop_stops_at_the_deadline() {
    let limits = RunLimits { timeout: Duration::from_millis(300), ..limits() };
    let started = Instant::now();
    let e = run("function main() { while (true) {} }", &Map::new(), &limits).expect_err("loop");
    assert_eq!(e, SandboxError::Timeout(Duration::from_millis(300)));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn allocating_past_the_heap_limit_fails_the_run() {
    let e = err("function main() { const a = []; for (;;) a.push(new Array(1e6).fill(1.5)); }", json!({}));
    assert_eq!(e, SandboxError::Memory(64 * 1024 * 1024));
    let e = err("function main() { return {s: 'x'.repeat(2 * 1024 * 1024 * 1024)}; }", json!({}));
    assert!(matches!(e, SandboxError::Memory(_) | SandboxError::Code(_)), "{e:?}");
}

#[test]
fn a_result_over_the_output_cap_is_refused() {
    let limits = RunLimits { max_output_bytes: 1000, ..limits() };
    let e = run("function main() { return {s: 'x'.repeat(2000)}; }", &Map::new(), &limits).expect_err("big");
    assert_eq!(e, SandboxError::OutputTooLarge(1000));
}

#[test]
fn deep_recursion_is_a_clean_error() {
    let e = err("function f(n) { return f(n + 1) + 1; } function main() { return {r: f(0)}; }", json!({}));
    assert!(matches!(&e, SandboxError::Code(m) if m.starts_with("RangeError: Maximum call stack size exceeded")), "{e:?}");
}

#[test]
fn the_host_is_out_of_reach() {
    for probe in ["require", "process", "fetch", "XMLHttpRequest", "os", "std", "setTimeout", "Deno", "Bun"] {
        let out = ok(&format!("function main() {{ return {{t: typeof {probe}}}; }}"), json!({}));
        assert_eq!(out, json!({"t": "undefined"}), "{probe} must not exist");
    }
    let e = err("function main() { return {m: require('fs').readFileSync('/etc/shadow')}; }", json!({}));
    assert!(matches!(&e, SandboxError::Code(m) if m.starts_with("ReferenceError: require is not defined")), "{e:?}");
    assert_eq!(ok("function main() { console.log('hi'); return {ok: true}; }", json!({})), json!({"ok": true}));
}

#[test]
fn prototype_pollution_stays_in_its_run() {
    let polluted = ok("function main() { Object.prototype.admin = true; Array.prototype.push = null; return {a: ({}).admin}; }", json!({}));
    assert_eq!(polluted, json!({"a": true}));
    let clean = ok("function main() { const a = []; a.push(1); return {a: ({}).admin === undefined, n: a.length}; }", json!({}));
    assert_eq!(clean, json!({"a": true, "n": 1}));
    // An inherited property is not part of the result.
    assert_eq!(ok("function main(x) { Object.prototype.leak = 1; return {k: Object.keys(x).length}; }", json!({"a": 1})), json!({"k": 1}));
}

#[test]
fn a_nul_in_the_code_is_a_syntax_error() {
    let e = err("function main() { return {}; }\0", json!({}));
    assert!(matches!(&e, SandboxError::Code(m) if m.starts_with("SyntaxError")), "{e:?}");
}
