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
