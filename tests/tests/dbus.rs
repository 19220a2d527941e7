//! The D-Bus control interface against the real daemon on a private, real
//! `dbus-daemon` that each test starts: every method and property through
//! `edgeaictl --bus`, the StateChanged signal through `edgeaictl watch`,
//! named errors for bad input (and nothing changed), a caller outside the
//! admin group refused by the daemon's own uid check (run as another uid when
//! the test runs as root), a second daemon that cannot take the name, and the
//! checked-in introspection XML against what the daemon serves. The system
//! bus policy itself is tested under the real systemd (scripts/systemd-box-test.sh).

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use edgeai_tests::dbus::{
    ctl, daemon_on, fails, gdbus_call, gdbus_error, json, ok, operation, run_with_timeout, spawn_ctl, wait_for_operation, Bus,
};
use edgeai_tests::paths;
use serde_json::Value;

#[test]
fn edgeaictl_drives_every_method_and_property_over_dbus() {
    let bus = Bus::start();
    let mut d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));

    // GetStatus: the same report as the socket's.
    let over_bus = json(&ctl(&bus, &d, &["--json", "status"]));
    let over_socket: Value = serde_json::from_str(&String::from_utf8(d.ctl(&["--json", "status"]).stdout).unwrap()).unwrap();
    for field in ["version", "state", "listen", "socket"] {
        assert_eq!(over_bus[field], over_socket[field], "{field}: bus {over_bus} socket {over_socket}");
    }
    assert_eq!(over_bus["model"]["name"], "smollm2-135m-instruct");
    let table = ok(&ctl(&bus, &d, &["status"]));
    assert!(table.lines().any(|l| l.starts_with("state") && l.ends_with("ready")), "{table}");

    // ListApps, ImportApp (a DSL by descriptor, then the same again), ListAppVersions, ExportApp, ActivateAppVersion.
    let apps = json(&ctl(&bus, &d, &["--json", "apps", "list"]));
    assert!(apps["data"].as_array().unwrap().iter().any(|a| a["id"] == "demo"), "{apps}");
    let dsl = paths::repo_root().join("tests/fixtures/dsl/chatflow.yml");
    let dsl = dsl.to_str().unwrap();
    let imported = ok(&ctl(&bus, &d, &["apps", "import", dsl, "--id", "flow"]));
    assert!(imported.starts_with("imported flow (") && imported.contains("version 1"), "{imported}");
    assert!(imported.contains("node "), "the LLM node's model mapping is listed: {imported}");
    let again = ok(&ctl(&bus, &d, &["apps", "import", dsl, "--id", "flow"]));
    assert!(again.starts_with("unchanged flow"), "{again}");
    let renamed = ok(&ctl(&bus, &d, &["apps", "import", dsl, "--id", "flow", "--name", "Flow two"]));
    assert!(renamed.contains("version 2"), "{renamed}");
    let versions = json(&ctl(&bus, &d, &["--json", "apps", "versions", "flow"]));
    let list = versions["data"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{versions}");
    assert_eq!((list[0]["version"].as_u64(), list[0]["active"].as_bool()), (Some(2), Some(true)), "{versions}");
    let exported = ok(&ctl(&bus, &d, &["apps", "export", "flow", "1"]));
    assert!(exported.contains("mode: advanced-chat"), "{exported}");
    let activated = ok(&ctl(&bus, &d, &["apps", "activate", "flow", "1"]));
    assert_eq!(activated.trim(), "flow now serves version 1");
    let socket_apps: Value = serde_json::from_str(&String::from_utf8(d.ctl(&["--json", "apps", "list"]).stdout).unwrap()).unwrap();
    let flow = socket_apps["data"].as_array().unwrap().iter().find(|a| a["id"] == "flow").cloned().unwrap();
    assert_eq!(flow["version"], 1, "the socket sees the activation: {flow}");
    // A JSON definition, by descriptor too.
    let def = paths::repo_root().join("configs/demo-app.json");
    let json_import = ok(&ctl(&bus, &d, &["apps", "import", def.to_str().unwrap()]));
    assert!(json_import.starts_with("imported summarise version") || json_import.contains("unchanged"), "{json_import}");

    // CreateApiKey (works over HTTP), ListApiKeys, RevokeApiKey (then 401).
    let key = ok(&ctl(&bus, &d, &["keys", "create", "--app", "flow"])).trim().to_owned();
    assert!(key.starts_with("app-"), "{key}");
    let c = d.client().with_key(&key);
    c.get("/v1/parameters").expect_json(200);
    let keys = json(&ctl(&bus, &d, &["--json", "keys", "list", "--app", "flow"]));
    let ours = keys["data"].as_array().unwrap().iter().find(|k| key.contains(k["prefix"].as_str().unwrap())).cloned().unwrap();
    assert!(ours.get("revoked_at").is_none_or(Value::is_null), "{ours}");
    let id = ours["id"].as_str().unwrap().to_owned();
    assert!(ok(&ctl(&bus, &d, &["keys", "revoke", &id])).contains(&id));
    c.get("/v1/parameters").expect_dify_error(401, "unauthorized");
    let dataset_key = json(&ctl(&bus, &d, &["--json", "keys", "create", "--dataset"]));
    assert_eq!(dataset_key["kind"], "dataset", "{dataset_key}");

    // CacheStats (a property), FlushCache, ListModels.
    let stats = json(&ctl(&bus, &d, &["--json", "cache", "stats"]));
    assert_eq!(stats["enabled"], false, "the tests' config turns the cache off: {stats}");
    let flushed = json(&ctl(&bus, &d, &["--json", "cache", "flush", "--app", "demo"]));
    assert_eq!((flushed["app"].as_str(), flushed["flushed"].as_u64()), (Some("demo"), Some(0)), "{flushed}");
    let models = ok(&ctl(&bus, &d, &["models", "list"]));
    assert!(models.lines().nth(1).is_some_and(|l| l.starts_with("smollm2-135m-instruct") && l.contains("ready")), "{models}");

    // Reload: a new app in the config is served afterwards; an invalid config changes nothing.
    d.edit_config(|c| {
        let apps = c.get_mut("apps").and_then(toml::Value::as_array_mut).unwrap();
        let mut extra = toml::Table::new();
        for (k, v) in [("id", "added"), ("name", "Added"), ("mode", "chat")] {
            extra.insert(k.into(), toml::Value::String(v.into()));
        }
        apps.push(toml::Value::Table(extra));
    });
    let reloaded = json(&ctl(&bus, &d, &["--json", "reload"]));
    // `added`, and `summarise` back to the config's definition (the JSON import above changed it).
    assert!(reloaded["apps_updated"].as_u64().is_some_and(|n| n >= 1), "{reloaded}");
    assert!(ok(&ctl(&bus, &d, &["apps", "list"])).lines().any(|l| l.starts_with("added ")));
    d.edit_config(|c| {
        c.insert("bogus_section".into(), toml::Value::Table(toml::Table::new()));
    });
    let refused = ctl(&bus, &d, &["reload"]);
    fails(&refused, 1, "org.edgeai.Error.InvalidArgument: configuration invalid");
    assert!(ok(&ctl(&bus, &d, &["apps", "list"])).lines().any(|l| l.starts_with("added ")), "the running apps stay");

    // ExportLogs: the daemon writes into edgeaictl's file through a descriptor; the same bytes as over the socket.
    let answer = d.client().post_json("/v1/chat-messages", &edgeai_tests::chat_body("Hi", "bus-test", "blocking", None)).expect_json(200);
    assert!(answer["message_id"].is_string(), "{answer}");
    let (via_bus, via_socket) = (d.dir().join("bus.arrow"), d.dir().join("socket.arrow"));
    let exported = json(&ctl(&bus, &d, &["--json", "export", "logs", "--format", "arrow", via_bus.to_str().unwrap()]));
    assert_eq!(exported["rows"], 1, "{exported}");
    ok(&d.ctl(&["export", "logs", "--format", "arrow", via_socket.to_str().unwrap()]));
    for f in [&via_bus, &via_socket] {
        assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o077, 0, "{} is private", f.display());
    }
    let bytes = std::fs::read(&via_bus).unwrap();
    assert!(bytes.starts_with(b"ARROW1"), "an Arrow IPC file");
    assert_eq!(bytes, std::fs::read(&via_socket).unwrap(), "the same file over D-Bus and over the socket");
    fails(
        &ctl(&bus, &d, &["export", "logs", "--format", "arrow", "--app", "ghost", d.dir().join("x.arrow").to_str().unwrap()]),
        1,
        "org.edgeai.Error.NotFound",
    );
    assert!(!d.dir().join("x.arrow").exists(), "a refused export leaves no file");

    // CreateBackup: the archive comes through a descriptor and passes edgeaictl's own check;
    // the job is announced with Progress signals and ends with Completed (seen by gdbus monitor).
    let mut monitor = Command::new("gdbus")
        .args(["monitor", "--address", &bus.address, "--dest", "org.edgeai.Daemon1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = monitor.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(10)).expect("gdbus monitor started");
    assert!(first.contains("Monitoring"), "{first}");
    let archive = d.dir().join("bus-backup.tar");
    let created = json(&ctl(&bus, &d, &["--json", "backup", "create", archive.to_str().unwrap()]));
    // Keys' hashes and conversations are in it: never readable by others, whatever the umask.
    assert_eq!(std::fs::metadata(&archive).unwrap().permissions().mode() & 0o077, 0, "the backup is private");
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        let done = line.contains("org.edgeai.Daemon1.Completed");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = monitor.kill();
    let _ = monitor.wait();
    let signals = seen.join("\n");
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('CreateBackup', uint32 0, 'started')"), "{signals}");
    assert!(signals.contains("org.edgeai.Daemon1.Progress ('CreateBackup', uint32 100,"), "{signals}");
    assert!(signals.contains("org.edgeai.Daemon1.Completed ('CreateBackup', 'ok: "), "{signals}");
    assert_eq!(created["manifest"]["format"], "edgeai-backup/1", "{created}");
    let verified = json(&ctl(&bus, &d, &["--json", "backup", "verify", archive.to_str().unwrap()]));
    assert_eq!(verified["ok"], true, "{verified}");

    // Properties, read as busctl does.
    let state = Command::new("busctl")
        .args(["--address", &bus.address, "get-property", "org.edgeai.Daemon1", "/org/edgeai/Daemon1", "org.edgeai.Daemon1", "State"])
        .output()
        .unwrap();
    assert_eq!(ok(&state).trim(), "s \"ready\"");
    for property in ["Version", "StatusText", "ActiveModels", "MemoryCurrent", "MemoryLimit", "CacheStats"] {
        let out = Command::new("busctl")
            .args(["--address", &bus.address, "get-property", "org.edgeai.Daemon1", "/org/edgeai/Daemon1", "org.edgeai.Daemon1", property])
            .output()
            .unwrap();
        assert!(out.status.success(), "{property}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(d.is_running());
}

#[test]
fn state_changes_are_signalled_to_edgeaictl_watch() {
    let bus = Bus::start();
    // A slow load keeps the daemon `starting` long enough to subscribe first.
    let d = daemon_on(&bus).failpoint("model-load-progress", "sleep(40)").wait_for_model(false).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let out = run_with_timeout(
        Command::new(paths::edgeaictl()).args(["--bus", &bus.address, "--timeout", "2m", "--json", "watch", "--count", "1"]),
        Duration::from_secs(120),
    );
    let text = ok(&out);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "the state now, then one change: {text}");
    assert_eq!(lines[0]["state"], "starting", "{text}");
    assert_eq!(lines[1]["state"], "ready", "{text}");
    assert_eq!(lines[1]["status_text"], "serving; model loaded", "{text}");
}

#[test]
fn bad_input_over_dbus_gets_named_errors_and_changes_nothing() {
    let bus = Bus::start();
    let d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let apps_before = ok(&ctl(&bus, &d, &["apps", "list"]));

    fails(&ctl(&bus, &d, &["apps", "versions", "nope"]), 1, "org.edgeai.Error.NotFound");
    fails(&ctl(&bus, &d, &["apps", "activate", "demo", "9"]), 1, "org.edgeai.Error.NotFound");
    fails(&ctl(&bus, &d, &["keys", "revoke", "no-such-key"]), 1, "org.edgeai.Error.NotFound");
    fails(&ctl(&bus, &d, &["keys", "create", "--app", "ghost"]), 1, "org.edgeai.Error.NotFound");
    fails(&ctl(&bus, &d, &["apps", "import", "/nonexistent/app.yml"]), 65, "cannot read /nonexistent/app.yml");
    let bad = d.dir().join("broken.yml");
    std::fs::write(&bad, "app:\n  mode: chat\n  name: [unclosed\n").unwrap();
    fails(&ctl(&bus, &d, &["apps", "import", bad.to_str().unwrap()]), 1, "org.edgeai.Error.InvalidArgument");
    let not_object = d.dir().join("list.json");
    std::fs::write(&not_object, "[1, 2]").unwrap();
    fails(&ctl(&bus, &d, &["apps", "import", not_object.to_str().unwrap()]), 65, "not an app definition object");
    assert_eq!(ok(&ctl(&bus, &d, &["apps", "list"])), apps_before, "nothing was stored");

    // Wrong types and unknown options, as a raw client would send them.
    let wrong = gdbus_error(&gdbus_call(&bus, None, "org.edgeai.Daemon1.ActivateAppVersion", &["demo", "one"]));
    assert!(wrong.contains("InvalidArgs") || wrong.contains("Error"), "{wrong}");
    let option_type = gdbus_error(&gdbus_call(&bus, None, "org.edgeai.Daemon1.ExportApp", &["demo", "{'version': <'one'>}"]));
    assert!(option_type.contains("org.edgeai.Error.InvalidArgument") && option_type.contains("unsigned integer"), "{option_type}");
    let unknown = gdbus_error(&gdbus_call(&bus, None, "org.edgeai.Daemon1.FlushCache", &["{'ap': <'demo'>}"]));
    assert!(unknown.contains("org.edgeai.Error.InvalidArgument") && unknown.contains("unknown option \"ap\""), "{unknown}");
    let both = gdbus_error(&gdbus_call(&bus, None, "org.edgeai.Daemon1.CreateApiKey", &["{'app': <'demo'>, 'dataset': <true>}"]));
    assert!(both.contains("org.edgeai.Error.InvalidArgument"), "{both}");
    let none = gdbus_error(&gdbus_call(&bus, None, "org.edgeai.Daemon1.NoSuchMethod", &[]));
    assert!(none.contains("UnknownMethod"), "{none}");

    // Without --bus, the D-Bus-only commands say so (usage, exit 2).
    fails(&d.ctl(&["reload"]), 2, "works over D-Bus only");
    // A bus with no daemon on it: exit 69.
    let empty = Bus::start();
    let out = Command::new(paths::edgeaictl()).args(["--bus", &empty.address, "status"]).output().unwrap();
    fails(&out, 69, "edgeaid is not on the bus");
}

#[test]
fn a_second_long_job_is_refused_busy_while_the_first_runs() {
    let bus = Bus::start();
    // Each archive member takes 400 ms: the first backup runs for seconds.
    let d = daemon_on(&bus).failpoint("backup-member", "sleep(400)").start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let first = d.dir().join("first.tar");
    let running = spawn_ctl(&bus, &d, &["backup", "create", first.to_str().unwrap()]);
    wait_for_operation(&bus, "CreateBackup");
    let second = d.dir().join("second.tar");
    fails(&ctl(&bus, &d, &["backup", "create", second.to_str().unwrap()]), 75, "org.edgeai.Error.Busy: CreateBackup is running");
    assert!(!second.exists(), "a refused backup leaves no file");

    let done = running.wait_with_output().unwrap();
    ok(&done);
    assert!(operation(&bus).contains("''"), "the place is free again: {}", operation(&bus));
    ok(&d.ctl(&["backup", "verify", first.to_str().unwrap()]));
    // And the next job is taken.
    ok(&ctl(&bus, &d, &["backup", "create", second.to_str().unwrap()]));
}

#[test]
fn without_flags_an_installed_edgeaictl_finds_the_daemon_on_the_system_bus() {
    let bus = Bus::start();
    let d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    // The private bus plays the system bus (zbus reads DBUS_SYSTEM_BUS_ADDRESS); run outside
    // any source checkout, with neither --bus nor --socket.
    let elsewhere = tempfile::tempdir().unwrap();
    let bare = |dir: &Path, args: &[&str]| {
        Command::new(paths::edgeaictl())
            .args(args)
            .current_dir(dir)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env_remove("EDGEAI_BUS")
            .env_remove("EDGEAI_SOCKET")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // reload exists only on D-Bus: its answer proves the route.
    assert!(json(&bare(elsewhere.path(), &["--json", "reload"]))["apps_served"].is_u64());
    assert!(ok(&bare(elsewhere.path(), &["status"])).contains("ready"));
    // --socket, or a source checkout, keeps the control commands on the socket.
    let socket = d.socket_path();
    fails(&bare(elsewhere.path(), &["--socket", socket.to_str().unwrap(), "reload"]), 2, "works over D-Bus only");
    assert!(ok(&bare(elsewhere.path(), &["--socket", socket.to_str().unwrap(), "status"])).contains("ready"));
    fails(&bare(&paths::repo_root(), &["reload"]), 2, "run inside a source checkout");
}

#[test]
fn a_caller_outside_the_admin_group_is_refused_but_reads_properties() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP a_caller_outside_the_admin_group_is_refused_but_reads_properties: needs root to call as another uid (65534)");
        return;
    }
    let bus = Bus::start();
    let d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let refused = gdbus_error(&gdbus_call(&bus, Some(65534), "org.edgeai.Daemon1.ListApps", &[]));
    assert!(refused.contains("org.edgeai.Error.PermissionDenied") && refused.contains("uid 65534"), "{refused}");
    let key = gdbus_error(&gdbus_call(&bus, Some(65534), "org.edgeai.Daemon1.CreateApiKey", &["{'app': <'demo'>}"]));
    assert!(key.contains("org.edgeai.Error.PermissionDenied"), "{key}");
    let keys = json(&ctl(&bus, &d, &["--json", "keys", "list"]));
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "only the demo key: the refused call created none: {keys}");
    let logged = d.wait_log_message("D-Bus call refused: not root or in server.admin_group", Duration::from_secs(5));
    assert_eq!(logged.field_u64("uid"), Some(65534));
    // Properties are open to everyone.
    let state = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "gdbus", "call", "--address", &bus.address])
        .args(["--dest", "org.edgeai.Daemon1", "--object-path", "/org/edgeai/Daemon1"])
        .args(["--method", "org.freedesktop.DBus.Properties.Get", "org.edgeai.Daemon1", "State"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "(<'ready'>,)", "{}", String::from_utf8_lossy(&state.stderr));
    // Root is admitted by the same check.
    assert!(gdbus_call(&bus, Some(0), "org.edgeai.Daemon1.ListApps", &[]).status.success());
}

#[test]
fn a_second_daemon_cannot_take_the_bus_name() {
    let bus = Bus::start();
    let d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let mut config: toml::Table = std::fs::read_to_string(d.config_path()).unwrap().parse().unwrap();
    let second = d.dir().join("second");
    std::fs::create_dir(&second).unwrap();
    let set = |t: &mut toml::Table, section: &str, key: &str, v: PathBuf| {
        t.get_mut(section).and_then(toml::Value::as_table_mut).unwrap().insert(key.into(), toml::Value::String(v.display().to_string()));
    };
    set(&mut config, "server", "socket", second.join("edgeai.sock"));
    set(&mut config, "store", "path", second.join("edgeai.db"));
    set(&mut config, "dev", "demo_key_file", second.join("demo-key"));
    let path = second.join("edgeaid.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let out = run_with_timeout(Command::new(paths::edgeaid()).arg("--config").arg(&path), Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("org.edgeai.Daemon1 is already owned") && err.contains("another edgeaid"), "{err}");
    // The first one still answers.
    assert!(ok(&ctl(&bus, &d, &["status"])).contains("ready"));
}

#[test]
fn the_checked_in_introspection_xml_is_what_the_daemon_serves() {
    let bus = Bus::start();
    let d = daemon_on(&bus).start();
    d.wait_log_message("D-Bus control interface serving", Duration::from_secs(10));
    let out = Command::new("busctl")
        .args(["--address", &bus.address, "introspect", "--xml-interface", "org.edgeai.Daemon1", "/org/edgeai/Daemon1"])
        .output()
        .unwrap();
    let served = ok(&out);
    let file = paths::repo_root().join("systemd/org.edgeai.Daemon1.xml");
    let checked_in = std::fs::read_to_string(&file).unwrap();
    let served_iface = interface_block(&served);
    assert_eq!(
        normalise(&interface_block(&checked_in)),
        normalise(&served_iface),
        "{} differs from what the daemon serves; the daemon serves:\n{served_iface}",
        file.display()
    );
    // Every method, property and signal has a doc string.
    let members =
        served_iface.matches("<method ").count() + served_iface.matches("<property ").count() + served_iface.matches("<signal ").count();
    assert_eq!(served_iface.matches("<!--").count(), members, "a member without a doc string:\n{served_iface}");
    assert!(d.logs_with_message("D-Bus control interface serving").len() == 1);
}

/// `<interface name="org.edgeai.Daemon1">` … `</interface>`.
fn interface_block(xml: &str) -> String {
    let start = xml.find("<interface name=\"org.edgeai.Daemon1\">").expect("the interface in the XML");
    let end = xml[start..].find("</interface>").expect("its end") + start + "</interface>".len();
    xml[start..end].to_owned()
}

fn normalise(xml: &str) -> String {
    xml.split_whitespace().collect::<Vec<_>>().join(" ")
}
