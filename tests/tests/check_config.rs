//! `edgeaid --check-config`: exit 0 with a summary for a valid config; exit
//! 78 (EX_CONFIG) naming the file and the dotted key for a bad one.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::process::Command;

use edgeai_tests::{paths, DaemonBuilder};

fn check(b: &mut DaemonBuilder) -> (std::process::Output, std::path::PathBuf) {
    let config = b.write_config();
    let out = Command::new(paths::edgeaid()).arg("--check-config").arg("--config").arg(&config).output().unwrap();
    (out, config)
}

#[test]
fn valid_config_passes() {
    let mut b = DaemonBuilder::new();
    let (out, config) = check(&mut b);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(stdout.contains(&config.display().to_string()), "the summary names the file: {stdout}");
    assert!(stdout.contains("apps: 2 (demo, summarise)"), "{stdout}");
    // --check-config only checks: nothing is created.
    assert!(!b.dir().join("edgeai.db").exists() && !b.dir().join("edgeai.sock").exists());
}

#[test]
fn unknown_key_exits_78_naming_file_and_key() {
    let mut b = DaemonBuilder::new().set("server.listen_backlog", 64);
    let (out, config) = check(&mut b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(stderr.contains(&config.display().to_string()), "no file name in: {stderr}");
    assert!(stderr.contains("server.listen_backlog"), "no key in: {stderr}");
    assert!(out.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn wrong_type_and_unknown_app_key_exit_78() {
    let mut b = DaemonBuilder::new().set("model.slots", "four").app_set("demo", "colour", "blue");
    let (out, config) = check(&mut b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(stderr.contains(&format!("{}: model.slots", config.display())), "{stderr}");
    assert!(stderr.contains(&format!("{}: apps[0].colour: unknown field", config.display())), "{stderr}");
}

#[test]
fn https_upstream_and_upstream_mapping_without_url_exit_78() {
    let mut b = DaemonBuilder::new().set("upstream.url", "https://api.example.com/v1");
    let (out, config) = check(&mut b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(stderr.contains(&format!("{}: upstream.url: ", config.display())), "{stderr}");
    assert!(stderr.contains("https is not supported in this build"), "{stderr}");

    let mut b = DaemonBuilder::new().set("model_map.default", "upstream").set("workflow.http_allow", vec!["10.0.0.1/8"]);
    let (out, config) = check(&mut b);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let f = config.display();
    assert!(stderr.contains(&format!("{f}: model_map.default: maps to the upstream runtime, but upstream.url is not set")), "{stderr}");
    assert!(stderr.contains(&format!("{f}: workflow.http_allow[0]: \"10.0.0.1/8\" has bits set after the prefix")), "{stderr}");
}

#[test]
fn workflow_upstream_and_model_map_are_summarised() {
    let mut b = DaemonBuilder::new()
        .set("upstream.url", "http://10.0.0.5:8000/v1")
        .set("model_map.openai/gpt-4o-mini", "upstream:qwen")
        .set("workflow.http_allow", vec!["plc.local", "10.0.0.0/8"]);
    let (out, _config) = check(&mut b);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("http-request may reach plc.local, 10.0.0.0/8"), "{stdout}");
    assert!(stdout.contains("upstream: http://10.0.0.5:8000/v1 (no key, falls back to the local model)"), "{stdout}");
    assert!(stdout.contains("model map: openai/gpt-4o-mini -> upstream:qwen, default -> local"), "{stdout}");
}
