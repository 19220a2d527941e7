//! `edgeaictl` against the real daemon over its unix socket: status, keys
//! (create → works over TCP, list, revoke → 401), apps (list, import a
//! file), and a one-question chat.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::os::unix::fs::PermissionsExt;

use edgeai_tests::{paths, DaemonBuilder};
use serde_json::Value;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "edgeaictl failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

#[test]
fn edgeaictl_manages_keys_and_apps_and_chats() {
    let mut d = DaemonBuilder::new().start();
    let mode = std::fs::metadata(d.socket_path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660, "default socket mode {mode:o}");

    let status = ok(&d.ctl(&["status"]));
    let line = |name: &str| {
        status.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("no {name} in:\n{status}")).to_owned()
    };
    assert!(line("state").ends_with("ready"), "{status}");
    assert!(line("model").contains("(ready)"), "{status}");
    assert!(line("listen").ends_with(&d.addr().to_string()), "{status}");

    // keys create prints only the key; it works over TCP for its app.
    let created = ok(&d.ctl(&["keys", "create", "--app", "demo"]));
    let key = created.trim();
    assert!(key.starts_with("app-") && !key.contains(char::is_whitespace), "stdout of keys create: {created:?}");
    let c = d.client().with_key(key);
    assert_eq!(c.get("/v1/info").expect_json(200)["name"], "Demo chat");

    let listed = ok(&d.ctl(&["keys", "list"]));
    let prefix: String = key.trim_start_matches("app-").chars().take(6).collect();
    assert!(listed.lines().next().unwrap_or("").starts_with("ID"), "{listed}");
    assert!(listed.contains(&prefix), "keys list does not show the new key ({prefix}):\n{listed}");
    let json: Value = serde_json::from_str(&ok(&d.ctl(&["--json", "keys", "list", "--app", "demo"]))).unwrap();
    let ours = json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| key.contains(k["prefix"].as_str().unwrap()))
        .cloned()
        .expect("the new key in keys list --json");
    let id = ours["id"].as_str().unwrap();
    assert!(ours["revoked_at"].is_null());

    let revoked = ok(&d.ctl(&["keys", "revoke", id]));
    assert!(revoked.contains(id), "{revoked}");
    c.get("/v1/info").expect_dify_error(401, "unauthorized");
    let json: Value = serde_json::from_str(&ok(&d.ctl(&["--json", "keys", "list"]))).unwrap();
    let ours = json["data"].as_array().unwrap().iter().find(|k| k["id"] == id).cloned().unwrap();
    assert!(ours["revoked_at"].is_i64(), "revoked key without revoked_at: {ours}");
    let again = d.ctl(&["keys", "revoke", "no-such-key"]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("not_found"), "{again:?}");

    // apps list and import.
    let apps = ok(&d.ctl(&["apps", "list"]));
    let row = |name: &str| apps.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no app {name} in:\n{apps}")).to_owned();
    assert!(row("demo ").contains("chat"), "{apps}");
    assert!(row("summarise ").contains("completion"), "{apps}");
    let file = paths::repo_root().join("configs/demo-app.json");
    let imported = ok(&d.ctl(&["apps", "import", file.to_str().unwrap()]));
    assert_eq!(imported.trim(), "imported summarise version 2", "the file differs from the test config, so it is a new version");
    let unchanged = ok(&d.ctl(&["apps", "import", file.to_str().unwrap()]));
    assert_eq!(unchanged.trim(), "summarise unchanged (version 2)");
    // An app that names a model this daemon does not serve is refused, and nothing is stored.
    let bad = d.dir().join("cloud-app.json");
    std::fs::write(&bad, r#"{"id": "cloudy", "name": "Cloudy", "mode": "chat", "model": "gpt-4o-mini"}"#).unwrap();
    let refused = d.ctl(&["apps", "import", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("invalid_param") && stderr.contains("gpt-4o-mini"), "{stderr}");
    assert!(!ok(&d.ctl(&["apps", "list"])).contains("cloudy"), "a refused app was stored");
    let json: Value = serde_json::from_str(&ok(&d.ctl(&["--json", "apps", "list"]))).unwrap();
    let summarise = json["data"].as_array().unwrap().iter().find(|a| a["id"] == "summarise").cloned().unwrap();
    assert_eq!(summarise["version"], 2);
    // The imported definition is the one served.
    let (_, skey) = d.admin().create_key("summarise");
    let params = d.client().with_key(&skey).get("/v1/parameters").expect_json(200);
    assert_eq!(params["user_input_form"][0]["paragraph"]["max_length"], 4000);

    // Keys and revocations survive a restart.
    d.restart();
    let c = d.client().with_key(key);
    c.get("/v1/info").expect_dify_error(401, "unauthorized");
    d.client().with_key(&skey).get("/v1/parameters").expect_json(200);

    // A one-question chat prints the streamed answer, stored like any other turn.
    let answer = ok(&d.ctl(&["chat", "demo", "--user", "ctl-user", "--query", "hi"]));
    assert!(!answer.trim().is_empty(), "edgeaictl chat printed nothing");
    let c = d.client();
    let convs = c.conversations("ctl-user");
    assert_eq!(convs.len(), 1, "{convs:#?}");
    let msgs = c.messages("ctl-user", convs[0]["id"].as_str().unwrap());
    assert_eq!(msgs[0]["query"], "hi");
    assert_eq!(msgs[0]["answer"].as_str().unwrap().trim(), answer.trim());

    // A completion app with a required input: --input fills the form; without it the
    // daemon's invalid_param comes through with exit 1.
    let missing = d.ctl(&["chat", "summarise", "--query", ""]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("invalid_param"), "{missing:?}");
    let summary = ok(&d.ctl(&["chat", "summarise", "--input", "text=Pump 3 tripped twice overnight.", "--query", ""]));
    assert!(!summary.trim().is_empty(), "no summary printed");
}

/// `edgeaictl run`: a workflow app's run over the admin socket, no key; JSON-looking
/// inputs go as JSON; a failed run and a chat app are errors (exit 1).
#[test]
fn edgeaictl_runs_a_workflow() {
    let d = DaemonBuilder::new().start();
    let dsl = paths::repo_root().join("tests/fixtures/dsl/workflow-branches.yml");
    ok(&d.ctl(&["apps", "import", dsl.to_str().unwrap(), "--id", "branches"]));
    let outputs: Value =
        serde_json::from_str(&ok(&d.ctl(&["run", "branches", "-i", "text=hello world", "-i", "count=5", "-i", "flag=yes"]))).unwrap();
    let s = outputs.to_string();
    assert!(s.contains("Greeting: hello world") && s.contains("HELLO WORLD"), "{outputs}");
    let whole: Value =
        serde_json::from_str(&ok(&d.ctl(&["--json", "run", "branches", "-i", "text=hello", "-i", "count=5", "-i", "flag=no"]))).unwrap();
    assert_eq!(whole["data"]["status"], "succeeded", "{whole}");
    assert!(whole["workflow_run_id"].is_string(), "{whole}");
    // count must be a number: a text is refused before the run starts.
    let bad = d.ctl(&["run", "branches", "-i", "text=hello", "-i", "count=five", "-i", "flag=no"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_param"), "{bad:?}");
    let chat = d.ctl(&["run", "demo"]);
    assert_eq!(chat.status.code(), Some(1), "{chat:?}");
    assert!(String::from_utf8_lossy(&chat.stderr).contains("not_workflow_app"), "{chat:?}");
    let ghost = d.ctl(&["run", "ghost"]);
    assert!(String::from_utf8_lossy(&ghost.stderr).contains("not_found"), "{ghost:?}");
}
