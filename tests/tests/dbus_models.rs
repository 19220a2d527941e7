//! The chat model's lifecycle over D-Bus against the real daemon and model on
//! a private, real `dbus-daemon`: UnloadModel frees the weights and the KV
//! cache (the daemon's VmRSS drops) and chat requests answer 503
//! `provider_not_initialize` until LoadModel brings the model back (Progress
//! and Completed signals seen by `gdbus monitor`); a generation running at
//! the unload finishes first while new ones are refused; reload and a clean stop
//! while unloaded; a second load while one runs is Busy; ListModels shows
//! every model with its kind; bad names, wrong types and callers outside the
//! admin group get their specific errors; the admin socket (edgeaictl
//! without --bus) unloads and loads too.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::process::Command;
use std::time::{Duration, Instant};

use edgeai_tests::dbus::{
    ctl, daemon_on, fails, gdbus_call, gdbus_error, json, ok, operation, spawn_ctl, wait_for_operation, Bus, Monitor,
};
use edgeai_tests::{chat_body, paths, Daemon};
use serde_json::Value;

/// The daemon's resident memory (VmRSS of /proc/PID/status), in bytes.
fn rss(d: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

/// `busctl get-property` of the daemon's interface, as printed (e.g. `s "ready"`).
fn property(bus: &Bus, name: &str) -> String {
    let out = Command::new("busctl")
        .args(["--address", &bus.address, "get-property", "org.edgeai.Daemon1", "/org/edgeai/Daemon1", "org.edgeai.Daemon1", name])
        .output()
        .unwrap();
    ok(&out).trim().to_owned()
}

fn chat(d: &Daemon) -> edgeai_tests::Response {
    d.client().post_json("/v1/chat-messages", &chat_body("Hi", "models-test", "blocking", None))
}

/// The chat model's row of `models list --json`.
fn chat_row(bus: &Bus, d: &Daemon) -> Value {
    let models = json(&ctl(bus, d, &["--json", "models", "list"]));
    models["data"].as_array().unwrap().iter().find(|m| m["kind"] == "chat").cloned().unwrap_or_else(|| panic!("no chat model: {models}"))
}

#[test]
fn unload_frees_the_model_and_load_brings_it_back() {
    let bus = Bus::start();
    let mut d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    // A generation touches the weights and the KV cache, so both are resident.
    chat(&d).expect_json(200);
    assert_eq!(chat_row(&bus, &d)["state"], "ready");
    assert!(property(&bus, "ActiveModels").contains("\"smollm2-135m-instruct:ready\""), "{}", property(&bus, "ActiveModels"));
    let before = rss(&d);

    let unloaded = json(&ctl(&bus, &d, &["--json", "models", "unload"]));
    assert_eq!((unloaded["name"].as_str(), unloaded["state"].as_str()), (Some("smollm2-135m-instruct"), Some("unloaded")), "{unloaded}");
    assert_eq!(unloaded["already"], false, "{unloaded}");
    let after = rss(&d);
    // The weights alone are most of the 98 MB file; allow for allocator slack.
    let model_bytes = std::fs::metadata(paths::model()).unwrap().len();
    assert!(
        before.saturating_sub(after) > model_bytes / 2,
        "VmRSS went from {before} to {after} bytes: the model ({model_bytes} bytes) was not freed"
    );
    assert!(unloaded["rss_freed_bytes"].as_u64().is_some(), "the daemon measured what it freed: {unloaded}");

    // Everyone sees the truth: models list, status, State, ActiveModels, /ready, and chat requests.
    assert_eq!(chat_row(&bus, &d)["state"], "unloaded");
    let status = json(&ctl(&bus, &d, &["--json", "status"]));
    assert_eq!((status["state"].as_str(), status["model"]["state"].as_str()), (Some("degraded"), Some("unloaded")), "{status}");
    assert_eq!(property(&bus, "State"), "s \"degraded\"");
    assert!(property(&bus, "StatusText").contains("unloaded by an operator"), "{}", property(&bus, "StatusText"));
    assert!(!property(&bus, "ActiveModels").contains("smollm2"), "an unloaded model is not active: {}", property(&bus, "ActiveModels"));
    d.client().without_key().get("/ready").expect_dify_error(503, "provider_not_initialize");
    let refused = chat(&d).expect_dify_error(503, "provider_not_initialize");
    assert!(refused["message"].as_str().unwrap().contains("unloaded by an operator"), "{refused}");
    // Unloading again changes nothing.
    let again = json(&ctl(&bus, &d, &["--json", "models", "unload"]));
    assert_eq!((again["state"].as_str(), again["already"].as_bool()), (Some("unloaded"), Some(true)), "{again}");

    // A reload (SIGHUP) does not load it.
    d.sighup();
    d.wait_log_message("configuration reloaded; apps applied, other settings apply at restart", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(chat_row(&bus, &d)["state"], "unloaded", "a reload must not load an unloaded model");

    // LoadModel: Progress signals, Completed "ok", then chat answers again.
    let monitor = Monitor::start(&bus);
    let loaded = json(&ctl(&bus, &d, &["--json", "models", "load", "smollm2-135m-instruct"]));
    let signals = monitor.until_completed("LoadModel", Duration::from_secs(10));
    drop(monitor);
    assert_eq!((loaded["state"].as_str(), loaded["already"].as_bool()), (Some("ready"), Some(false)), "{loaded}");
    assert!(loaded["load_ms"].as_u64().is_some(), "{loaded}");
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('LoadModel', uint32 0, 'started')"), "{signals}");
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('LoadModel', uint32 100,"), "{signals}");
    assert!(signals.contains("org.edgeai.Daemon1.Completed ('LoadModel', 'ok: smollm2-135m-instruct ready in"), "{signals}");
    let answer = chat(&d).expect_json(200);
    assert!(answer["answer"].as_str().is_some_and(|a| !a.is_empty()), "{answer}");
    assert_eq!(property(&bus, "State"), "s \"ready\"");
    // Loading a loaded model answers at once.
    let already = json(&ctl(&bus, &d, &["--json", "models", "load"]));
    assert_eq!(already["already"], true, "{already}");
    let line = ok(&ctl(&bus, &d, &["models", "load"]));
    assert_eq!(line.trim(), "smollm2-135m-instruct is loaded already (ready)");
    assert!(d.is_running());
}

#[test]
fn the_admin_socket_unloads_and_loads_too_and_a_stop_while_unloaded_is_clean() {
    let mut d = edgeai_tests::DaemonBuilder::new().start();
    // edgeaictl without --bus: the admin socket's POST /admin/v1/models/{name}/unload and /load.
    let line = ok(&d.ctl(&["models", "unload"]));
    assert!(line.starts_with("smollm2-135m-instruct unloaded; ") && line.contains("MiB of memory freed"), "{line}");
    d.wait_log_message("model unloaded: the inference thread has ended", Duration::from_secs(5));
    chat(&d).expect_dify_error(503, "provider_not_initialize");
    let loaded: Value = serde_json::from_str(&ok(&d.ctl(&["--json", "models", "load"]))).unwrap();
    assert_eq!((loaded["state"].as_str(), loaded["already"].as_bool()), (Some("ready"), Some(false)), "{loaded}");
    chat(&d).expect_json(200);
    let line = ok(&d.ctl(&["models", "unload", "smollm2-135m-instruct"]));
    assert!(line.starts_with("smollm2-135m-instruct unloaded"), "{line}");
    // A clean stop while unloaded.
    d.sigterm();
    let status = d.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    d.wait_log_message("stopped", Duration::from_secs(1));
}

#[test]
fn a_second_load_while_one_runs_is_busy_and_progress_is_reported() {
    let bus = Bus::start();
    // Every load step sleeps: a load takes seconds, long enough to collide with it.
    let d = daemon_on(&bus).failpoint("model-load-progress", "sleep(30)").wait_for_model(false).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    // The load at start runs: LoadModel is Busy, UnloadModel too.
    fails(&ctl(&bus, &d, &["models", "load"]), 75, "org.edgeai.Error.Busy: the model is still loading");
    fails(&ctl(&bus, &d, &["models", "unload"]), 75, "org.edgeai.Error.Busy");
    d.wait_log_message("model loaded", Duration::from_secs(120));
    ok(&ctl(&bus, &d, &["models", "unload"]));

    let monitor = Monitor::start(&bus);
    let first = spawn_ctl(&bus, &d, &["--json", "models", "load"]);
    wait_for_operation(&bus, "LoadModel");
    fails(&ctl(&bus, &d, &["models", "load"]), 75, "org.edgeai.Error.Busy: the model is still loading");
    // A backup is a long job too: refused while the load runs.
    let backup = d.dir().join("during-load.tar");
    fails(&ctl(&bus, &d, &["backup", "create", backup.to_str().unwrap()]), 75, "org.edgeai.Error.Busy: LoadModel is running");
    let done = first.wait_with_output().unwrap();
    let answer: Value = serde_json::from_str(&ok(&done)).unwrap();
    assert_eq!(answer["state"], "ready", "{answer}");
    let signals = monitor.until_completed("LoadModel", Duration::from_secs(10));
    drop(monitor);
    // Percents between the start and the end, from the file read and llama.cpp's callback.
    let between = signals
        .lines()
        .filter_map(|l| l.split("Progress ('LoadModel', uint32 ").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u32>().ok())
        .filter(|p| (1..100).contains(p))
        .count();
    assert!(between >= 2, "the load's progress was reported on the way: {signals}");
    assert!(signals.contains("Completed ('LoadModel', 'ok: "), "{signals}");
    assert!(operation(&bus).contains("''"), "the job's place is free again: {}", operation(&bus));
    chat(&d).expect_json(200);
}

#[test]
fn list_models_has_every_model_and_bad_names_types_and_callers_are_refused() {
    let bus = Bus::start();
    let d = daemon_on(&bus).with_embedder().start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    d.wait_log_message("embedding model loaded", Duration::from_secs(60));

    let models = json(&ctl(&bus, &d, &["--json", "models", "list"]));
    let list = models["data"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{models}");
    let embedding = list.iter().find(|m| m["kind"] == "embedding").cloned().unwrap();
    assert_eq!(embedding["state"], "ready", "{models}");
    assert!(embedding["model_id"].as_str().is_some_and(|id| id.contains('@')), "{models}");
    assert_eq!(embedding["path"], paths::embed_model().display().to_string(), "{models}");
    let table = ok(&ctl(&bus, &d, &["models", "list"]));
    assert_eq!(table.lines().count(), 3, "a header and two models: {table}");
    assert!(table.lines().any(|l| l.starts_with("multilingual-e5-small ") && l.contains(" embedding ")), "{table}");
    assert!(property(&bus, "ActiveModels").contains(&format!("{}:ready", embedding["name"].as_str().unwrap())));

    // Names: unknown, the embedding model (by name and by id).
    fails(&ctl(&bus, &d, &["models", "load", "no-such-model"]), 1, "org.edgeai.Error.NotFound: no model \"no-such-model\"");
    fails(&ctl(&bus, &d, &["models", "unload", "no-such-model"]), 1, "org.edgeai.Error.NotFound");
    for name in [embedding["name"].as_str().unwrap(), embedding["model_id"].as_str().unwrap()] {
        fails(&ctl(&bus, &d, &["models", "unload", name]), 1, "only the chat model can be loaded or unloaded");
        fails(&ctl(&bus, &d, &["models", "load", name]), 1, "org.edgeai.Error.InvalidArgument");
    }
    assert_eq!(chat_row(&bus, &d)["state"], "ready", "nothing was unloaded");

    // Wrong types and unknown options, as a raw client would send them.
    let wrong = gdbus_error(&gdbus_call(&bus, None, "org.edgeai.Daemon1.UnloadModel", &["7", "{}"]));
    assert!(wrong.contains("InvalidArgs") || wrong.contains("Error"), "{wrong}");
    let missing = gdbus_error(&gdbus_call(&bus, None, "org.edgeai.Daemon1.LoadModel", &[""]));
    assert!(missing.contains("InvalidArgs") || missing.contains("Error"), "{missing}");
    let option = gdbus_error(&gdbus_call(&bus, None, "org.edgeai.Daemon1.UnloadModel", &["", "{'force': <true>}"]));
    assert!(option.contains("org.edgeai.Error.InvalidArgument") && option.contains("unknown option \"force\""), "{option}");
    assert_eq!(chat_row(&bus, &d)["state"], "ready", "nothing was unloaded");

    // The same names over the admin socket (edgeaictl without --bus).
    let over_socket: Value = serde_json::from_str(&ok(&d.ctl(&["--json", "models", "list"]))).unwrap();
    // (D-Bus leaves out null fields; JSON keeps them.)
    let fields = |v: &Value| -> Vec<Vec<Value>> {
        let keys = ["name", "kind", "state", "path", "model_id", "threads", "slots", "context_size"];
        v["data"].as_array().unwrap().iter().map(|m| keys.iter().map(|k| m[*k].clone()).collect()).collect()
    };
    assert_eq!(fields(&over_socket), fields(&models), "the socket lists the same models: {over_socket}");
    fails(&d.ctl(&["models", "unload", "no-such-model"]), 1, "no model \"no-such-model\"");
    fails(&d.ctl(&["models", "load", embedding["name"].as_str().unwrap()]), 1, "only the chat model can be loaded or unloaded");

    // A caller outside the admin group is refused by the daemon's own check.
    if nix::unistd::Uid::effective().is_root() {
        let refused = gdbus_error(&gdbus_call(&bus, Some(65534), "org.edgeai.Daemon1.UnloadModel", &["", "{}"]));
        assert!(refused.contains("org.edgeai.Error.PermissionDenied") && refused.contains("uid 65534"), "{refused}");
        let refused = gdbus_error(&gdbus_call(&bus, Some(65534), "org.edgeai.Daemon1.LoadModel", &["", "{}"]));
        assert!(refused.contains("org.edgeai.Error.PermissionDenied"), "{refused}");
        assert_eq!(chat_row(&bus, &d)["state"], "ready", "the refused call unloaded nothing");
    } else {
        eprintln!("SKIP the non-admin part of list_models_has_every_model_and_bad_names_types_and_callers_are_refused: needs root to call as uid 65534");
    }
}

#[test]
fn a_generation_running_when_the_model_unloads_finishes_first() {
    let bus = Bus::start();
    let d = daemon_on(&bus).long_app(400).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let (_, key) = d.admin().create_key(edgeai_tests::LONG_APP);
    let c = d.client().with_key(&key);
    let mut stream = c.chat_stream_open(edgeai_tests::LONG_QUERY, "unload-test", None);
    assert_eq!(stream.status(), 200);
    let mut out = edgeai_tests::StreamOutcome::default();
    while out.named("message").is_empty() {
        let ev = stream.next_event().unwrap().expect("the stream ended before its first token");
        edgeai_tests::dify::add(&mut out, ev);
    }
    assert!(out.end.is_none(), "the generation is still running");

    // The unload waits for the generation; meanwhile new requests are refused at once.
    let unload = spawn_ctl(&bus, &d, &["--json", "models", "unload"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while chat_row(&bus, &d)["state"] != "unloading" {
        assert!(Instant::now() < deadline, "the model never showed as unloading: {}", chat_row(&bus, &d));
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = chat(&d).expect_dify_error(503, "provider_not_initialize");
    assert!(refused["message"].as_str().unwrap().contains("being unloaded by an operator"), "{refused}");

    // The running generation ends on its own (message_end, not cancelled), then the unload answers.
    while let Some(ev) = stream.next_event().unwrap() {
        edgeai_tests::dify::add(&mut out, ev);
    }
    assert!(out.end.is_some(), "the stream ended without message_end: {:?}", out.events.last());
    assert!(out.named("error").is_empty(), "the generation failed: {:?}", out.named("error"));
    let end = out.end.clone().unwrap();
    assert_eq!(end["metadata"]["usage"]["completion_tokens"], 400, "it ran to max_tokens, not cut by the unload: {end}");
    let done = unload.wait_with_output().unwrap();
    let answer: Value = serde_json::from_str(&ok(&done)).unwrap();
    assert_eq!(answer["state"], "unloaded", "{answer}");
    assert_eq!(chat_row(&bus, &d)["state"], "unloaded");
}
