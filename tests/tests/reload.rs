//! SIGHUP re-reads the configuration without a restart: a changed app is
//! served at once by the same process (its `opening_statement` and its
//! `pre_prompt`), systemd hears RELOADING=1 then READY=1, and a config that
//! does not parse or does not validate is refused with an error log while
//! the running configuration stays in force.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::Duration;

use edgeai_tests::daemon::app_table;
use edgeai_tests::{Client, Daemon, DaemonBuilder};
use serde_json::Value;

const RELOADED: &str = "configuration reloaded; apps applied, other settings apply at restart";
const INVALID: &str = "reload: configuration invalid; keeping the running configuration";
const OPENING: &str = "Hello! I am the test assistant.";
const QUERY: &str = "What is a PLC?";

fn opening_statement(c: &Client) -> Value {
    c.get("/v1/parameters").expect_json(200)["opening_statement"].clone()
}

fn prompt_tokens(c: &Client, user: &str) -> u64 {
    c.chat_blocking(QUERY, user, None)["metadata"]["usage"]["prompt_tokens"].as_u64().unwrap()
}

/// The stored version of an app, from the admin API.
fn app_version(d: &Daemon, id: &str) -> u64 {
    let apps = d.admin().get("/admin/v1/apps").unwrap();
    let app = apps["data"].as_array().unwrap().iter().find(|a| a["id"] == id).cloned();
    app.unwrap_or_else(|| panic!("no app {id} in {apps}"))["version"].as_u64().unwrap()
}

#[test]
fn sighup_applies_a_changed_app_in_the_same_process() {
    let mut b = DaemonBuilder::new();
    let notify = b.notify_socket();
    let mut d = b.start();
    let pid = d.pid();
    let c = d.client();
    assert_eq!(opening_statement(&c), OPENING);
    let tokens_before = prompt_tokens(&c, "hup-before");
    assert_eq!(app_version(&d, "demo"), 1);

    let new_pre_prompt = "You are the maintenance assistant of the bottling plant in hall 3 of the Riverside works. \
                          Always answer in one short sentence and name the plant.";
    d.edit_config(|cfg| {
        let demo = app_table(cfg, "demo");
        demo.insert("opening_statement".into(), "Welcome back: reloaded.".into());
        demo.insert("pre_prompt".into(), new_pre_prompt.into());
    });
    let notified = notify.all().len();
    d.sighup();
    let reloaded = d.wait_log_message(RELOADED, Duration::from_secs(10));
    assert_eq!(reloaded.field_u64("apps_updated"), Some(1), "{}", reloaded.raw);
    assert!(d.is_running(), "edgeaid exited on SIGHUP");
    assert_eq!(d.pid(), pid);

    // The new definition is served at once, and stored as a new version.
    assert_eq!(opening_statement(&c), "Welcome back: reloaded.");
    let tokens_after = prompt_tokens(&c, "hup-after");
    assert!(
        tokens_after >= tokens_before + 15,
        "the longer pre_prompt is not in the prompt: {tokens_before} prompt tokens before the reload, {tokens_after} after"
    );
    assert_eq!(app_version(&d, "demo"), 2);

    // systemd's reload protocol: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    let (i, reloading) = notify.wait_for(notified, Duration::from_secs(5), "RELOADING=1", |n| n.has("RELOADING=1"));
    assert!(reloading.get("MONOTONIC_USEC").is_some_and(|v| v.parse::<u64>().is_ok()), "{:?}", reloading.text);
    notify.wait_for(i + 1, Duration::from_secs(5), "READY=1 after RELOADING=1", |n| n.has("READY=1"));

    // An unchanged file on the next SIGHUP changes nothing.
    d.sighup();
    let again = d.wait_log_count(RELOADED, 2, Duration::from_secs(10));
    assert_eq!(again[1].field_u64("apps_updated"), Some(0), "{}", again[1].raw);
    assert_eq!(app_version(&d, "demo"), 2);
}

#[test]
fn sighup_with_an_invalid_config_keeps_the_running_one() {
    let mut d = DaemonBuilder::new().start();
    let pid = d.pid();
    let c = d.client();
    let good = std::fs::read_to_string(d.config_path()).unwrap();

    // Not TOML at all.
    std::fs::write(d.config_path(), format!("{good}\nthis is = = not toml\n")).unwrap();
    d.sighup();
    let refused = d.wait_log_message(INVALID, Duration::from_secs(10));
    assert_eq!(refused.level(), "ERROR", "{}", refused.raw);
    let error = refused.field_str("error").unwrap_or_default();
    assert!(error.contains(&d.config_path().display().to_string()), "the error does not name the file: {error}");

    // Valid TOML, but the changed app breaks a rule (and a key is unknown).
    std::fs::write(d.config_path(), &good).unwrap();
    d.edit_config(|cfg| {
        let demo = app_table(cfg, "demo");
        demo.insert("opening_statement".into(), "must not be served".into());
        edgeai_tests::daemon::set_path(demo, "completion_params.temperature", 5.0.into());
    });
    d.sighup();
    let refusals = |d: &Daemon| {
        d.logs().into_iter().filter(|l| l.message() == INVALID || l.message() == "reload: app not applied").collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while refusals(&d).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no error log for an app with temperature 5.0");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = refusals(&d).pop().unwrap();
    assert_eq!(second.level(), "ERROR", "{}", second.raw);
    assert!(second.field_str("error").unwrap_or_default().contains("temperature"), "{}", second.raw);

    // Still the same process, serving the configuration it started with.
    assert!(d.is_running(), "edgeaid exited on a bad SIGHUP");
    assert_eq!(d.pid(), pid);
    assert_eq!(opening_statement(&c), OPENING);
    assert!(!c.chat_blocking(QUERY, "still-here", None)["answer"].as_str().unwrap().trim().is_empty());
    assert_eq!(app_version(&d, "demo"), 1);
    assert!(d.logs_with_message(RELOADED).iter().all(|l| l.field_u64("apps_updated") == Some(0)), "a bad reload applied an app");

    // A good file on the next SIGHUP applies again.
    std::fs::write(d.config_path(), &good).unwrap();
    d.edit_config(|cfg| {
        app_table(cfg, "demo").insert("opening_statement".into(), "Fixed.".into());
    });
    d.sighup();
    d.wait_log(Duration::from_secs(10), "a reload that applies the app", |l| {
        l.message() == RELOADED && l.field_u64("apps_updated") == Some(1)
    });
    assert_eq!(opening_statement(&c), "Fixed.");
}
