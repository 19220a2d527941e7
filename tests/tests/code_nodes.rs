//! Workflow code nodes end to end against the real daemon: a Dify DSL with
//! JavaScript and Python code nodes imported with `edgeaictl apps import`
//! and run through `POST /v1/workflows/run` (the same transform in both
//! languages gives the same outputs of every type; Python reads what
//! JavaScript produced; Dify's default code in both); escapes tried through
//! a probe app whose code node runs the program in its input, each refused
//! with a clear node error while the daemon keeps serving and stays small;
//! import refusals (no python3, unavailable dependencies) naming the node;
//! `edgeaictl status` reporting the runtimes; Dify's Node SDK running the
//! workflow (tests/node/code_check.mjs). Fixtures: tests/fixtures/dsl/.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::path::PathBuf;

use edgeai_tests::sdk::run_checker;
use edgeai_tests::{paths, Client, Daemon, DaemonBuilder};
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    paths::repo_root().join("tests/fixtures/dsl").join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `edgeaictl apps import FIXTURE --id ID`; its (exit code, stdout, stderr).
fn import(d: &Daemon, name: &str, id: &str) -> (Option<i32>, String, String) {
    let path = fixture(name);
    let out = d.ctl(&["apps", "import", path.to_str().unwrap(), "--id", id]);
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

fn app(d: &Daemon, name: &str, id: &str) -> Client {
    let (code, stdout, stderr) = import(d, name, id);
    assert_eq!(code, Some(0), "import {name}\nstdout: {stdout}\nstderr: {stderr}");
    let (_, key) = d.admin().create_key(id);
    d.client().with_key(&key)
}

fn run(c: &Client, inputs: Value) -> Value {
    c.post_json("/v1/workflows/run", &json!({"inputs": inputs, "response_mode": "blocking", "user": "code-user"})).expect_json(200)
}

/// Runs `src` in the probe app; Ok(result) or Err(the node's error).
fn probe(c: &Client, src: &str) -> Result<String, String> {
    let b = run(c, json!({"src": src}));
    match b["data"]["status"].as_str() {
        Some("succeeded") => Ok(b["data"]["outputs"]["result"].as_str().unwrap_or_default().to_owned()),
        Some("failed") => Err(b["data"]["error"].as_str().unwrap_or_default().to_owned()),
        _ => panic!("unexpected run: {b}"),
    }
}

/// `v` with every number as a float, so `88` and `88.0` compare equal.
fn numbers_as_f64(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(numbers_as_f64).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_same_transform_in_javascript_and_python_gives_the_same_outputs() {
    let d = DaemonBuilder::new().start();
    let c = app(&d, "workflow-code.yml", "faults");
    let b = run(&c, json!({"fault": "E42:PUMP3:OVERTEMP:87.5", "limit": 80}));
    assert_eq!(b["data"]["status"], "succeeded", "{b}");
    let out = &b["data"]["outputs"];
    for k in ["code", "severity", "over", "detail", "words", "thresholds", "flags", "events"] {
        // Python writes 88.0 where JavaScript writes 88, as in Dify: compare numbers as numbers.
        assert_eq!(numbers_as_f64(&out[format!("js_{k}")]), numbers_as_f64(&out[format!("py_{k}")]), "{k} differs: {out}");
    }
    assert_eq!(out["js_code"], "E42");
    assert_eq!(out["js_severity"], 42);
    assert_eq!(out["js_over"], true);
    assert_eq!(out["js_detail"], json!({"device": "PUMP3", "kind": "overtemp", "value": 87.5}));
    assert_eq!(out["js_words"], json!(["E42", "PUMP3", "OVERTEMP", "87.5"]));
    assert_eq!(out["js_thresholds"], json!([80, 80.5, 88]));
    assert_eq!(out["js_flags"], json!([true, false]));
    assert_eq!(out["js_events"], json!([{"at": 1, "kind": "overtemp"}, {"at": 2, "kind": "ack"}]));
    // Python read the object and array JavaScript returned.
    assert_eq!(out["summary"], "PUMP3 overtemp at 87.5 (severity 42)");
    assert_eq!(out["count"], 4);
    // Dify's default code of each language.
    assert_eq!(out["default_py"], "E42:PUMP3:OVERTEMP:87.5E42");
    assert_eq!(out["default_js"], "E42:PUMP3:OVERTEMP:87.5E42");

    // The run record shows each code node's inputs and outputs.
    let run_id = b["workflow_run_id"].as_str().unwrap();
    let rec = c.get(&format!("/v1/workflows/run/{run_id}")).expect_json(200);
    assert_eq!(rec["status"], "succeeded", "{rec}");

    // An exception fails the run with the exception's message.
    let b = run(&c, json!({"fault": "E42:PUMP3:OVERTEMP:x", "limit": 80}));
    assert_eq!(b["data"]["status"], "failed", "{b}");
    let e = b["data"]["error"].as_str().unwrap();
    assert!(e.contains("ValueError: could not convert string to float: 'x'"), "{e}");
}

#[test]
fn escapes_from_python_code_are_refused_and_the_daemon_keeps_serving() {
    let d = DaemonBuilder::new().set("code.timeout_secs", 3).set("code.memory_mb", 128).start();
    let c = app(&d, "workflow-code-probe-py.yml", "probe-py");
    let ok = "def main():\n    return {'result': 'alive'}\n";
    assert_eq!(probe(&c, ok), Ok("alive".into()));
    let rss_before = rss_kb(d.pid());
    let store = d.dir().join("edgeai.db");
    let key = d.dir().join("demo-key");
    assert!(store.exists() && key.exists(), "the store and the key file exist");
    let read = |p: &std::path::Path| format!("def main():\n    return {{'result': open({:?}).read()}}\n", p.display().to_string());
    let cases: Vec<(String, String, &[&str])> = vec![
        ("/etc/shadow".into(), read(std::path::Path::new("/etc/shadow")), &["PermissionError", "Permission denied"]),
        ("the store".into(), read(&store), &["PermissionError", "Permission denied"]),
        ("the key file".into(), read(&key), &["PermissionError", "Permission denied"]),
        ("a socket".into(), "def main():\n    import socket\n    socket.create_connection(('127.0.0.1', 22))\n    return {'result': 'x'}\n".into(), &["not allowed"]),
        ("a raw socket".into(), "def main():\n    import sys, builtins, importlib.machinery as m\n    sys.meta_path[:] = [m.BuiltinImporter, m.FrozenImporter, m.PathFinder]\n    s = __import__('_socket').socket()\n    return {'result': str(s)}\n".into(), &["not allowed", "PermissionError", "Operation not permitted"]),
        ("a fork bomb".into(), "def main():\n    import os\n    while True:\n        os.fork()\n".into(), &["PermissionError", "Operation not permitted", "not allowed"]),
        ("ctypes".into(), "def main():\n    import ctypes\n    return {'result': 'x'}\n".into(), &["not allowed"]),
        ("an endless loop".into(), "def main():\n    while True:\n        pass\n".into(), &["timed out"]),
        ("2 GB".into(), "def main():\n    b = bytearray(2 * 1024 ** 3)\n    return {'result': str(len(b))}\n".into(), &["memory"]),
        ("writing outside the scratch dir".into(), format!("def main():\n    open({:?}, 'w').write('x')\n    return {{'result': 'x'}}\n", d.dir().join("owned").display().to_string()), &["PermissionError", "Permission denied"]),
        ("a huge output".into(), "def main():\n    return {'result': 'x' * (8 * 1024 * 1024)}\n".into(), &["exceeds"]),
    ];
    for (what, src, expected) in &cases {
        let e = probe(&c, src).expect_err(what);
        assert!(expected.iter().any(|x| e.contains(x)), "{what}: the node's error was {e:?}, expected one of {expected:?}");
        // Other runs go on.
        assert_eq!(probe(&c, ok), Ok("alive".into()), "after {what}");
    }
    assert!(!d.dir().join("owned").exists(), "nothing was written outside the scratch dir");
    // os.system cannot start a shell: it returns a failure status (or raises), never 0.
    match probe(&c, "def main():\n    import os\n    return {'result': str(os.system('id'))}\n") {
        Ok(status) => assert_ne!(status, "0", "os.system ran a program"),
        Err(e) => assert!(["PermissionError", "Operation not permitted", "not allowed"].iter().any(|x| e.contains(x)), "{e}"),
    }
    let rss_after = rss_kb(d.pid());
    assert!(rss_after < rss_before + 64 * 1024, "the daemon grew from {rss_before} kB to {rss_after} kB");
    // A scratch file is allowed and gone after the run.
    let scratch = "def main():\n    import os\n    open('note.txt', 'w').write('hi')\n    return {'result': open('note.txt').read() + ':' + os.getcwd()}\n";
    let out = probe(&c, scratch).unwrap();
    let (content, dir) = out.split_once(':').unwrap();
    assert_eq!(content, "hi");
    assert!(!std::path::Path::new(dir).exists(), "the scratch dir {dir} is removed after the run");
    assert!(d.logs().iter().all(|l| l.level() != "ERROR"), "{}", d.dump_logs());
}

#[test]
fn escapes_from_javascript_code_are_refused_and_the_daemon_keeps_serving() {
    let d = DaemonBuilder::new().set("code.timeout_secs", 2).set("code.memory_mb", 64).start();
    let c = app(&d, "workflow-code-probe-js.yml", "probe-js");
    let ok = "function main() { return {result: String(({}).polluted)}; }";
    assert_eq!(probe(&c, ok), Ok("undefined".into()));
    let rss_before = rss_kb(d.pid());
    let cases: &[(&str, &str, &str)] = &[
        (
            "require",
            "function main() { return {result: require('fs').readFileSync('/etc/shadow', 'utf8')}; }",
            "ReferenceError: require is not defined",
        ),
        ("process", "function main() { return {result: process.env.HOME}; }", "ReferenceError: process is not defined"),
        ("fetch", "function main() { fetch('http://127.0.0.1/'); return {result: 'x'}; }", "ReferenceError: fetch is not defined"),
        ("an endless loop", "function main() { for (;;) {} }", "timed out"),
        ("1 GB of arrays", "function main() { const a = []; for (;;) a.push(new Array(1e6).fill(0.5)); }", "memory limit"),
        ("a huge output", "function main() { return {result: 'x'.repeat(8 * 1024 * 1024)}; }", "exceeds"),
        (
            "deep recursion",
            "function f() { return f() + 1; } function main() { return {result: f()}; }",
            "Maximum call stack size exceeded",
        ),
        ("prototype pollution", "function main() { Object.prototype.polluted = 'yes'; return {result: 'polluted'}; }", ""),
    ];
    for (what, src, expected) in cases {
        match probe(&c, src) {
            Err(e) => assert!(!expected.is_empty() && e.contains(expected), "{what}: the node's error was {e:?}, expected {expected:?}"),
            Ok(r) => assert!(expected.is_empty(), "{what} succeeded with {r:?}"),
        }
        // Other runs go on, and see nothing of the run before.
        assert_eq!(probe(&c, ok), Ok("undefined".into()), "after {what}");
    }
    let rss_after = rss_kb(d.pid());
    assert!(rss_after < rss_before + 64 * 1024, "the daemon grew from {rss_before} kB to {rss_after} kB");
}

#[test]
fn import_refuses_code_nodes_that_cannot_run_here_naming_the_node() {
    let d = DaemonBuilder::new().set("code.python", "off").start();
    let (code, stdout, stderr) = import(&d, "workflow-code.yml", "faults");
    assert_ne!(code, Some(0), "{stdout}");
    assert!(stderr.contains("node 1732000000302 (\"Parse fault (Python)\")"), "{stderr}");
    assert!(stderr.contains("python3 code nodes cannot run here: Python code nodes are turned off"), "{stderr}");
    assert!(!stderr.contains("Parse fault (JavaScript)"), "JavaScript nodes run without python3: {stderr}");
    // The JavaScript-only probe imports and runs.
    let c = app(&d, "workflow-code-probe-js.yml", "probe-js");
    assert_eq!(probe(&c, "function main() { return {result: 'js'}; }"), Ok("js".into()));
    let status = d.ctl(&["status"]);
    let out = text(&status.stdout);
    let row = |name: &str| out.lines().find(|l| l.starts_with(name)).map(|l| l[name.len()..].trim_start().to_owned());
    assert_eq!(row("code: python3").as_deref(), Some("unavailable: Python code nodes are turned off (code.python = \"off\")"), "{out}");
    assert!(row("code: javascript").is_some_and(|v| v.starts_with("QuickJS")), "{out}");
    let apps = d.admin().get("/admin/v1/apps").unwrap();
    assert!(!apps.to_string().contains("\"faults\""), "nothing stored: {apps}");
}

#[test]
fn dependencies_must_be_available_offline_and_status_names_the_interpreter() {
    let d = DaemonBuilder::new().start();
    let dsl = std::fs::read_to_string(fixture("workflow-code.yml")).unwrap();
    let with_deps = dsl.replacen(
        "code_language: python3",
        "code_language: python3\n        dependencies:\n        - name: json\n          version: ''\n        - name: tensorflow_for_plc\n          version: 2.0.0",
        1,
    );
    assert_ne!(with_deps, dsl);
    let path = d.dir().join("deps.yml");
    std::fs::write(&path, with_deps).unwrap();
    let out = d.ctl(&["apps", "import", path.to_str().unwrap(), "--id", "deps"]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("dependencies.1.name: module \"tensorflow_for_plc\" is not available offline here"), "{stderr}");
    assert!(!stderr.contains("\"json\""), "json is in the standard library: {stderr}");
    let status = d.admin().get("/admin/v1/status").unwrap();
    let python = status["code"]["python"].as_str().unwrap_or_else(|| panic!("python3 runs here: {status}"));
    assert!(python.contains("python3") && python.contains('('), "{python}");
}

#[test]
fn difys_node_sdk_runs_a_workflow_with_code_nodes() {
    let Some(node) = paths::node() else {
        assert!(std::env::var_os("CI").is_none(), "Node.js is missing under CI; scripts/setup.sh installs Debian's nodejs and npm");
        eprintln!("SKIP difys_node_sdk_runs_a_workflow_with_code_nodes: Node.js is not installed (no `node` on PATH)");
        return;
    };
    let d = DaemonBuilder::new().start();
    let c = app(&d, "workflow-code.yml", "faults");
    let (_, key) = d.admin().create_key("faults");
    let script = paths::node_checker_dir().join("code_check.mjs");
    let seen = run_checker(&node, &script, &[format!("http://{}/v1", d.addr()), key, "sdk-user".to_owned()]);
    for run in [&seen["blocking_run_id"], &seen["streaming_run_id"]] {
        let rec = c.get(&format!("/v1/workflows/run/{}", run.as_str().unwrap())).expect_json(200);
        assert_eq!(rec["status"], "succeeded", "{rec}");
    }
}
