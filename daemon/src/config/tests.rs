//! Unit tests of the config module: layering, provenance, every kind of bad
//! input, and the reference file and docs against the code.

use super::*;
use std::fs;
use tempfile::TempDir;

/// A fake root for the system scan.
struct Root(TempDir);

impl Root {
    fn new() -> Self {
        Root(tempfile::tempdir().expect("tempdir"))
    }

    /// Writes `rel` (like `etc/edgeai/edgeai.toml`) and returns its full path.
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, text).expect("write");
        path
    }

    fn load(&self) -> Result<Settings, ConfigError> {
        load_system_from_root(self.0.path())
    }
}

const USR: &str = "usr/lib/edgeai/edgeai.toml";
const ETC: &str = "etc/edgeai/edgeai.toml";

fn problems(r: Result<Settings, ConfigError>) -> Vec<Problem> {
    match r {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The only problem of `r`.
fn problem(r: Result<Settings, ConfigError>) -> Problem {
    let mut p = problems(r);
    assert_eq!(p.len(), 1, "{p:?}");
    p.remove(0)
}

fn load_text(text: &str) -> (Root, PathBuf, Result<Settings, ConfigError>) {
    let root = Root::new();
    let path = root.write("edgeai.toml", text);
    let r = load(&Sources::Files(vec![path.clone()]));
    (root, path, r)
}

const APP: &str = "[[apps]]\nid = \"demo\"\nname = \"Demo\"\nmode = \"chat\"\n";

#[test]
fn defaults_without_files() {
    let root = Root::new();
    let s = root.load().expect("defaults");
    assert_eq!(s, Settings::default());
    assert!(s.sources.is_empty());
    assert_eq!(s.server.listen, Some("127.0.0.1:5001".parse().expect("addr")));
    assert_eq!(s.server.socket.as_deref(), Some(Path::new("/run/edgeai/edgeai.sock")));
    assert_eq!(s.server.socket_mode, 0o660);
    assert_eq!(s.server.max_body_bytes, 1 << 20);
    assert_eq!(s.server.request_timeout, Duration::from_secs(300));
    assert_eq!(s.server.sse_ping_interval, Duration::from_secs(10));
    assert_eq!(s.model.slots, 4);
    assert_eq!(s.model.threads, None);
    assert!(s.model.enabled);
    assert_eq!(s.log.format, LogFormat::Auto);
    assert!(s.apps.is_empty());
    assert_eq!(s.dev.demo_key_file, None);
}

#[test]
fn empty_file_list_gives_defaults() {
    let s = load(&Sources::Files(Vec::new())).expect("defaults");
    assert_eq!(s, Settings::default());
}

#[test]
fn system_layers_apply_in_order() {
    let root = Root::new();
    let usr = root.write(USR, "[model]\nslots = 2\nthreads = 1\nbatch_size = 64\ncontext_size = 1024\n");
    let etc = root.write(ETC, "[model]\nslots = 3\nthreads = 2\nbatch_size = 128\n");
    let a = root.write("etc/edgeai/conf.d/10-a.toml", "[model]\nslots = 5\nthreads = 3\n");
    let b = root.write("etc/edgeai/conf.d/20-b.toml", "[model]\nslots = 6\n");
    let s = root.load().expect("load");
    assert_eq!((s.model.context_size, s.model.batch_size, s.model.threads, s.model.slots), (1024, 128, Some(3), 6));
    assert_eq!(s.sources, vec![usr, etc, a, b]);
}

#[test]
fn drop_ins_sort_by_name_and_skip_other_files() {
    let root = Root::new();
    // Byte order: "10-x" < "20-x" < "9-x".
    let nine = root.write("etc/edgeai/conf.d/9-last.toml", "[model]\nslots = 9\n");
    let ten = root.write("etc/edgeai/conf.d/10-first.toml", "[model]\nslots = 1\n");
    let twenty = root.write("etc/edgeai/conf.d/20-middle.toml", "[model]\nslots = 2\n");
    root.write("etc/edgeai/conf.d/30-backup.toml.orig", "not toml at all [");
    root.write("etc/edgeai/conf.d/.40-hidden.toml", "not toml at all [");
    root.write("etc/edgeai/conf.d/README", "not toml at all [");
    fs::create_dir_all(root.0.path().join("etc/edgeai/conf.d/50-dir.toml")).expect("mkdir");
    let s = root.load().expect("load");
    assert_eq!(s.model.slots, 9);
    assert_eq!(s.sources, vec![ten, twenty, nine]);
}

#[test]
fn missing_system_files_and_dir_are_skipped() {
    let root = Root::new();
    let etc = root.write(ETC, "[model]\nslots = 7\n");
    let s = root.load().expect("load");
    assert_eq!(s.model.slots, 7);
    assert_eq!(s.sources, vec![etc]);
}

#[test]
fn tables_merge_while_scalars_and_arrays_replace() {
    let root = Root::new();
    root.write(
        USR,
        &format!(
            "[server]\nlisten = \"127.0.0.1:6000\"\nmax_connections = 10\n[model]\nslots = 2\n\n{APP}\n[[apps]]\nid = \"two\"\nname = \"Two\"\nmode = \"completion\"\n"
        ),
    );
    root.write(
        ETC,
        "[server]\nmax_connections = 20\n\n[[apps]]\nid = \"only\"\nname = \"Only\"\nmode = \"completion\"\nsuggested_questions = [\"a\"]\n",
    );
    let s = root.load().expect("load");
    assert_eq!(s.server.listen, Some("127.0.0.1:6000".parse().expect("addr")));
    assert_eq!(s.server.max_connections, 20);
    assert_eq!(s.model.slots, 2);
    let ids: Vec<&str> = s.apps.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["only"]);
    assert_eq!(s.apps[0].mode, crate::engine::AppMode::Completion);
}

#[test]
fn error_after_merge_names_the_drop_in_that_set_the_key() {
    let root = Root::new();
    root.write(ETC, "[model]\nslots = 2\nname = \"m\"\n");
    let bad = root.write("etc/edgeai/conf.d/10-model.toml", "[model]\nslots = 20\n");
    root.write("etc/edgeai/conf.d/20-other.toml", "[model]\nbatch_size = 64\n");
    let p = problem(root.load());
    assert_eq!(p.file.as_deref(), Some(bad.as_path()));
    assert_eq!(p.key, "model.slots");
    assert_eq!(p.to_string(), format!("{}: model.slots: must be between 1 and 16, found 20", bad.display()));
}

#[test]
fn a_later_layer_overriding_a_bad_value_fixes_it() {
    let root = Root::new();
    root.write(ETC, "[model]\nslots = 20\n");
    root.write("etc/edgeai/conf.d/10-fix.toml", "[model]\nslots = 8\n");
    assert_eq!(root.load().expect("load").model.slots, 8);
}

#[test]
fn problem_in_first_layer_keeps_its_file_when_later_layers_touch_the_table() {
    let root = Root::new();
    let etc = root.write(ETC, "[server]\nidle_timeout_secs = 0\n");
    root.write("etc/edgeai/conf.d/10-x.toml", "[server]\nmax_connections = 5\n");
    let p = problem(root.load());
    assert_eq!((p.file.as_deref(), p.key.as_str()), (Some(etc.as_path()), "server.idle_timeout_secs"));
}

#[test]
fn unknown_key_names_file_key_and_suggestion() {
    let (_root, path, r) = load_text("[model]\nslot = 2\n");
    let p = problem(r);
    assert_eq!(p.file.as_deref(), Some(path.as_path()));
    assert_eq!(p.key, "model.slot");
    assert_eq!(p.message, "unknown key; did you mean `model.slots`?");
}

#[test]
fn unknown_section_and_unrelated_key() {
    let (_root, _path, r) = load_text("[sever]\nlisten = \"\"\n[server]\nbanana = 1\nrequest_timeout = 5\n");
    let p = problems(r);
    let lines: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    assert_eq!(
        lines,
        [
            "server.banana: unknown key",
            "server.request_timeout: unknown key; did you mean `server.request_timeout_secs`?",
            "sever: unknown key; did you mean `server`?",
        ]
    );
}

#[test]
fn type_errors_name_file_and_key() {
    let (_root, path, r) = load_text("[model]\nslots = \"four\"\nmlock = \"yes\"\n[store]\npath = 5\n[server]\nmax_body_bytes = 1.5\n");
    let p = problems(r);
    assert!(p.iter().all(|p| p.file.as_deref() == Some(path.as_path())));
    let lines: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    assert_eq!(
        lines,
        [
            "server.max_body_bytes: expected an integer, found float 1.5",
            "store.path: expected a string, found integer 5",
            "model.slots: expected an integer, found string \"four\"",
            "model.mlock: expected true or false, found string \"yes\"",
        ]
    );
}

#[test]
fn section_that_is_not_a_table() {
    let (_root, _path, r) = load_text("server = 1\napps = \"none\"\n");
    let p = problems(r);
    let lines: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    assert_eq!(
        lines,
        ["apps: expected an array of tables ([[apps]]), found string \"none\"", "server: expected a table ([server]), found integer 1"]
    );
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let (_root, path, r) = load_text("[server]\nlisten = \"127.0.0.1:5001\"\nsocket = /run/x\n");
    match r {
        Err(ConfigError::Parse { path: ref p, line, column, ref message }) => {
            assert_eq!(p, &path);
            assert_eq!((line, column), (3, 10));
            assert!(!message.is_empty());
        }
        other => panic!("expected Parse, got {other:?}"),
    }
    let shown = r.expect_err("parse error").to_string();
    assert!(shown.starts_with(&format!("{}: TOML syntax error at line 3, column 10: ", path.display())), "{shown}");
}

#[test]
fn duplicate_key_in_one_file_is_a_syntax_error() {
    let (_root, _path, r) = load_text("[model]\nslots = 1\nslots = 2\n");
    assert!(matches!(r, Err(ConfigError::Parse { line: 3, .. })), "{r:?}");
}

#[test]
fn syntax_error_in_drop_in() {
    let root = Root::new();
    root.write(ETC, "[model]\nslots = 2\n");
    let bad = root.write("etc/edgeai/conf.d/10-bad.toml", "[model\n");
    assert!(matches!(root.load(), Err(ConfigError::Parse { path, line: 1, .. }) if path == bad));
}

#[test]
fn relative_paths_resolve_against_their_own_file() {
    let root = Root::new();
    root.write(USR, "[store]\npath = \"state/edgeai.db\"\n");
    root.write(ETC, "[server]\nsocket = \"../run/edgeai.sock\"\n[dev]\ndemo_key_file = \"/abs/key\"\n");
    root.write("etc/edgeai/conf.d/10-model.toml", "[model]\npath = \"models/m.gguf\"\n");
    let s = root.load().expect("load");
    let r = root.0.path();
    assert_eq!(s.store.path, r.join("usr/lib/edgeai/state/edgeai.db"));
    assert_eq!(s.server.socket, Some(r.join("etc/edgeai/../run/edgeai.sock")));
    assert_eq!(s.model.path, r.join("etc/edgeai/conf.d/models/m.gguf"));
    assert_eq!(s.dev.demo_key_file, Some(PathBuf::from("/abs/key")));
}

#[test]
fn files_dir_follows_the_store_unless_set() {
    let (_r, _p, s) = load_text("[store]\npath = \"/srv/edgeai/state.db\"\n");
    let s = s.expect("load");
    assert_eq!(s.files.dir, PathBuf::from("/srv/edgeai/files"));
    assert_eq!(s.files.max_file_bytes, 15 << 20);
    let (_r, _p, s) = load_text("[store]\npath = \"/srv/edgeai/state.db\"\n[files]\ndir = \"\"\n");
    assert_eq!(s.expect("load").files.dir, PathBuf::from("/srv/edgeai/files"), "\"\" is next to the store");
    let (_r, path, s) = load_text("[files]\ndir = \"uploads\"\nmax_file_bytes = 4096\n");
    let s = s.expect("load");
    assert_eq!(s.files.dir, path.parent().expect("dir").join("uploads"), "relative to its file");
    assert_eq!(s.files.max_file_bytes, 4096);
    let p = problem(load_text("[files]\nmax_file_bytes = 0\n").2);
    assert_eq!(p.key, "files.max_file_bytes");
    let p = problem(load_text("[files]\nsize = 1\n").2);
    assert_eq!(p.key, "files.size");
}

#[test]
fn relative_config_file_still_gives_absolute_paths() {
    let root = Root::new();
    root.write("dev/edgeai.toml", "[store]\npath = \"../run/edgeai.db\"\n");
    // A relative `--config` path, made relative to the current directory.
    let cwd = std::env::current_dir().expect("cwd");
    let mut rel = PathBuf::new();
    for _ in cwd.components().skip(1) {
        rel.push("..");
    }
    let given = rel.join(root.0.path().strip_prefix("/").expect("absolute tempdir")).join("dev/edgeai.toml");
    let s = load(&Sources::Files(vec![given.clone()])).expect("load");
    assert!(s.store.path.is_absolute(), "{:?}", s.store.path);
    assert_eq!(s.sources, vec![given]);
    assert_eq!(s.store.path.file_name(), Some(std::ffi::OsStr::new("edgeai.db")));
}

#[test]
fn empty_strings_disable_listeners_and_clear_groups() {
    let root = Root::new();
    root.write(ETC, "[server]\nsocket_group = \"edgeai\"\nadmin_group = \"edgeai-admin\"\n[dev]\ndemo_key_file = \"k\"\n");
    root.write("etc/edgeai/conf.d/10.toml", "[server]\nlisten = \"\"\nsocket = \"\"\nadmin_group = \"\"\n[dev]\ndemo_key_file = \"\"\n");
    let s = root.load().expect("load");
    assert_eq!(s.server.listen, None);
    assert_eq!(s.server.socket, None);
    assert_eq!(s.server.socket_group.as_deref(), Some("edgeai"));
    assert_eq!(s.server.admin_group, None);
    assert_eq!(s.dev.demo_key_file, None);
}

#[test]
fn listen_accepts_ipv4_ipv6_and_port_zero_but_not_names() {
    let (_r, _p, s) = load_text("[server]\nlisten = \"[::1]:0\"\n");
    assert_eq!(s.expect("load").server.listen, Some("[::1]:0".parse().expect("addr")));
    for bad in ["localhost:5001", "127.0.0.1", "127.0.0.1:99999"] {
        let (_r, _p, res) = load_text(&format!("[server]\nlisten = \"{bad}\"\n"));
        let p = problem(res);
        assert_eq!(p.key, "server.listen");
        assert!(p.message.contains("is not IP:PORT"), "{}", p.message);
    }
}

#[test]
fn socket_mode_parses_octal_strings() {
    let (_r, _p, s) = load_text("[server]\nsocket_mode = \"0600\"\n");
    assert_eq!(s.expect("load").server.socket_mode, 0o600);
    let (_r, _p, s) = load_text("[server]\nsocket_mode = \"770\"\n");
    assert_eq!(s.expect("load").server.socket_mode, 0o770);
}

#[test]
fn socket_mode_rejects_world_writable_junk_and_integers() {
    for (value, needle) in [
        ("\"0666\"", "world-writable"),
        ("\"abc\"", "octal digits"),
        ("\"1770\"", "above 0777"),
        ("\"0o660\"", "octal digits"),
        ("660", "expected a string of octal digits"),
        ("0o660", "expected a string of octal digits"),
    ] {
        let (_r, path, res) = load_text(&format!("[server]\nsocket_mode = {value}\n"));
        let p = problem(res);
        assert_eq!((p.file.as_deref(), p.key.as_str()), (Some(path.as_path()), "server.socket_mode"));
        assert!(p.message.contains(needle), "{value}: {}", p.message);
    }
}

#[test]
fn out_of_range_numbers_each_name_their_range() {
    for (key, value, range) in [
        ("server.max_body_bytes", "100", "1024 and 67108864"),
        ("server.max_header_bytes", "2000000", "1024 and 1048576"),
        ("server.request_timeout_secs", "0", "1 and 3600"),
        ("server.idle_timeout_secs", "3601", "1 and 3600"),
        ("server.max_connections", "0", "1 and 65536"),
        ("server.shutdown_grace_secs", "-1", "0 and 600"),
        ("server.sse_ping_secs", "301", "1 and 300"),
        ("model.context_size", "256", "512 and 131072"),
        ("model.slots", "0", "1 and 16"),
        ("model.threads", "257", "0 and 256"),
        ("model.batch_size", "16", "32 and 8192"),
        ("model.queue_depth", "1025", "1 and 1024"),
    ] {
        let (section, name) = key.split_once('.').expect("dotted");
        let (_r, _p, res) = load_text(&format!("[{section}]\n{name} = {value}\n"));
        let p = problem(res);
        assert_eq!(p.key, key);
        assert_eq!(p.message, format!("must be between {range}, found {value}"));
    }
}

#[test]
fn range_edges_are_accepted_and_mapped() {
    let (_r, _p, s) = load_text(
        "[server]\nmax_body_bytes = 67108864\nshutdown_grace_secs = 0\nsse_ping_secs = 300\nrequest_timeout_secs = 1\n\
         [model]\nthreads = 256\nslots = 16\ncontext_size = 131072\nbatch_size = 32\nqueue_depth = 1024\nmlock = true\nenabled = false\n",
    );
    let s = s.expect("load");
    assert_eq!(s.server.max_body_bytes, 64 << 20);
    assert_eq!(s.server.shutdown_grace, Duration::ZERO);
    assert_eq!(s.server.sse_ping_interval, Duration::from_secs(300));
    assert_eq!(s.server.request_timeout, Duration::from_secs(1));
    // The workflow run limits left unset are lowered to the request's.
    assert_eq!((s.workflow.limits.run_timeout, s.workflow.limits.node_timeout), (Duration::from_secs(1), Duration::from_secs(1)));
    assert_eq!((s.model.threads, s.model.slots, s.model.context_size), (Some(256), 16, 131_072));
    assert_eq!((s.model.batch_size, s.model.queue_depth, s.model.use_mlock, s.model.enabled), (32, 1024, true, false));
}

#[test]
fn chat_template_names_a_builtin_or_is_empty() {
    let (_r, _p, s) = load_text("[model]\nchat_template = \"gemma\"\n");
    assert_eq!(s.expect("load").model.chat_template.as_deref(), Some("gemma"));
    let (_r, _p, s) = load_text("[model]\nchat_template = \"\"\n");
    assert_eq!(s.expect("load").model.chat_template, None);
    let (_r, path, s) = load_text("[model]\nchat_template = \"{{ messages }}\"\n");
    let p = problem(s);
    assert_eq!((p.file.as_deref(), p.key.as_str()), (Some(path.as_path()), "model.chat_template"));
    assert!(p.message.contains("llama.cpp template name"), "{}", p.message);
}

#[test]
fn threads_zero_means_auto() {
    let root = Root::new();
    root.write(ETC, "[model]\nthreads = 8\n");
    root.write("etc/edgeai/conf.d/1.toml", "[model]\nthreads = 0\n");
    assert_eq!(root.load().expect("load").model.threads, None);
}

#[test]
fn strings_are_checked() {
    let (_r, _p, res) = load_text(
        "[model]\nname = \"my model\"\npath = \"\"\n[store]\npath = \"\"\n[log]\nlevel = \"loud\"\nformat = \"xml\"\n[server]\nsocket_group = \"a:b\"\n",
    );
    let keys: Vec<String> = problems(res).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["server.socket_group", "store.path", "model.name", "model.path", "log.level", "log.format"]);
    let (_r, _p, s) =
        load_text("[model]\nname = \"qwen2.5:0.5b-Q4_K_M\"\n[log]\nlevel = \"info,edgeaid::server=debug\"\nformat = \"json\"\n");
    let s = s.expect("load");
    assert_eq!(s.model.name, "qwen2.5:0.5b-Q4_K_M");
    assert_eq!(s.log.level, "info,edgeaid::server=debug");
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn every_problem_is_reported_at_once_one_per_line() {
    let root = Root::new();
    let etc = root.write(ETC, "[server]\nsocket_mode = \"0666\"\nmax_connections = 0\n[model]\nslot = 1\n");
    let drop_in = root.write("etc/edgeai/conf.d/10.toml", "[model]\nslots = 99\n[log]\nformat = \"xml\"\n");
    let err = root.load().expect_err("invalid");
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 5, "{shown}");
    let (etc, drop_in) = (etc.display().to_string(), drop_in.display().to_string());
    assert!(lines[0].starts_with(&format!("{etc}: server.socket_mode: ")), "{shown}");
    assert_eq!(lines[1], format!("{etc}: server.max_connections: must be between 1 and 65536, found 0"));
    assert_eq!(lines[2], format!("{drop_in}: model.slots: must be between 1 and 16, found 99"));
    assert_eq!(lines[3], format!("{drop_in}: log.format: \"xml\" is not one of \"auto\", \"text\", \"json\""));
    assert_eq!(lines[4], format!("{etc}: model.slot: unknown key; did you mean `model.slots`?"));
}

#[test]
fn apps_load_with_their_fields() {
    let (_r, _p, s) = load_text(&format!(
        "{APP}pre_prompt = \"Be brief.\"\nuser_input_form = [{{ select = {{ label = \"L\", variable = \"lang\", options = [\"en\"] }} }}]\n\
         [apps.completion_params]\ntemperature = 0\nseed = 7\nstop = [\"###\"]\n"
    ));
    let s = s.expect("load");
    let app = &s.apps[0];
    assert_eq!((app.id.as_str(), app.pre_prompt.as_str(), app.history_turns), ("demo", "Be brief.", 10));
    assert_eq!(app.completion_params.temperature, 0.0);
    assert_eq!(app.completion_params.seed, Some(7));
    assert_eq!(app.completion_params.stop, ["###"]);
    assert!(matches!(app.user_input_form[0], crate::engine::FormField::Select(_)));
}

#[test]
fn duplicate_app_ids() {
    let (_r, path, res) = load_text(&format!("{APP}\n{APP}\n{APP}"));
    let p = problems(res);
    let lines: Vec<String> = p.iter().map(ToString::to_string).collect();
    let f = path.display();
    assert_eq!(
        lines,
        [
            format!("{f}: apps[1].id: duplicate app id \"demo\" (also apps[0].id)"),
            format!("{f}: apps[2].id: duplicate app id \"demo\" (also apps[1].id)"),
        ]
    );
}

#[test]
fn app_validation_problems_are_prefixed() {
    let (_r, path, res) =
        load_text("[[apps]]\nid = \"Bad Id\"\nname = \" \"\nmode = \"chat\"\n[apps.completion_params]\ntemperature = 3.0\n");
    let p = problems(res);
    assert!(p.iter().all(|p| p.file.as_deref() == Some(path.as_path())));
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["apps[0].id", "apps[0].name", "apps[0].completion_params.temperature"]);
}

#[test]
fn app_serde_errors_name_the_key() {
    let cases = [
        ("[apps.completion_params]\ntemperature = \"hot\"\n", "apps[0].completion_params.temperature", "invalid type: string \"hot\""),
        ("[apps.completion_params]\ntemprature = 1.0\n", "apps[0].completion_params.temprature", "unknown field `temprature`"),
        ("colour = \"red\"\n", "apps[0].colour", "unknown field `colour`"),
        ("history_turns = -1\n", "apps[0].history_turns", "invalid value: integer `-1`"),
        (
            "user_input_form = [{ text-input = { label = \"x\", variable = \"ok\" } }, { text-input = { label = \"y\", variable = 3 } }]\n",
            "apps[0].user_input_form[1].text-input.variable",
            "invalid type: integer `3`",
        ),
        (
            "user_input_form = [{ slider = { label = \"x\", variable = \"v\" } }]\n",
            "apps[0].user_input_form[0]",
            "unknown variant `slider`",
        ),
        ("user_input_form = [5]\n", "apps[0].user_input_form[0]", "expected a string or a table with exactly one key, found integer 5"),
    ];
    for (extra, key, needle) in cases {
        let (_r, path, res) = load_text(&format!("{APP}{extra}"));
        let p = problem(res);
        assert_eq!((p.file.as_deref(), p.key.as_str()), (Some(path.as_path()), key), "{extra}");
        assert!(p.message.contains(needle), "{extra}: {}", p.message);
    }
    // A workflow app's graph comes from its DSL, never from config.
    let (_r, _p, res) = load_text("[[apps]]\nid = \"x\"\nname = \"X\"\nmode = \"workflow\"\n");
    let p = problem(res);
    assert_eq!(p.key, "apps[0].workflow");
    assert!(p.message.contains("a workflow app needs its DSL's workflow graph"), "{}", p.message);
    let (_r, _p, res) = load_text("[[apps]]\nid = \"x\"\nname = \"X\"\nmode = \"agent-chat\"\n");
    let p = problem(res);
    assert_eq!(p.key, "apps[0].mode");
    assert!(p.message.contains("unknown variant `agent-chat`"), "{}", p.message);
    let (_r, _p, res) = load_text("[[apps]]\nid = \"x\"\nname = \"X\"\nmode = 5\n");
    let p = problem(res);
    assert_eq!(
        (p.key.as_str(), p.message.as_str()),
        ("apps[0].mode", "expected a string or a table with exactly one key, found integer 5")
    );
    let (_r, _p, res) = load_text("[[apps]]\nid = \"x\"\nmode = \"chat\"\n");
    let p = problem(res);
    assert_eq!((p.key.as_str(), p.message.as_str()), ("apps[0]", "missing field `name`"));
}

#[test]
fn every_bad_app_is_reported_not_only_the_first() {
    let (_r, _p, res) = load_text(&format!("{APP}colour = 1\n\n[[apps]]\nid = \"b\"\nname = \"B\"\nmode = 5\n\n{APP}\n"));
    let keys: Vec<String> = problems(res).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["apps[0].colour", "apps[1].mode"]);
}

#[test]
fn apps_error_names_the_file_that_set_the_list() {
    let root = Root::new();
    root.write(ETC, &format!("{APP}[model]\nslots = 2\n"));
    let apps =
        root.write("etc/edgeai/conf.d/20-apps.toml", "[[apps]]\nid = \"x\"\nname = \"X\"\nmode = \"chat\"\nhistory_turns = \"ten\"\n");
    let p = problem(root.load());
    assert_eq!((p.file.as_deref(), p.key.as_str()), (Some(apps.as_path()), "apps[0].history_turns"));
}

#[test]
fn config_files_exclude_system_files() {
    let root = Root::new();
    root.write(ETC, "[model]\nslots = 16\n");
    let a = root.write("mine/a.toml", "[model]\nslots = 2\nbatch_size = 64\n");
    let b = root.write("mine/b.toml", "[model]\nslots = 3\n");
    let s = load(&Sources::Files(vec![a.clone(), b.clone()])).expect("load");
    assert_eq!((s.model.slots, s.model.batch_size), (3, 64));
    assert_eq!(s.sources, vec![a, b]);
}

#[test]
fn named_config_file_must_exist() {
    let root = Root::new();
    let missing = root.0.path().join("nope.toml");
    match load(&Sources::Files(vec![missing.clone()])) {
        Err(ConfigError::Read { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Read, got {other:?}"),
    }
}

#[test]
fn unreadable_system_entry_is_an_error_not_a_skip() {
    let root = Root::new();
    // A directory where a file is expected cannot be read.
    fs::create_dir_all(root.0.path().join(ETC)).expect("mkdir");
    assert!(matches!(root.load(), Err(ConfigError::Read { path, .. }) if path == root.0.path().join(ETC)));
}

#[test]
fn describe_summarises_the_settings() {
    let (_r, path, s) = load_text(&format!("[model]\nthreads = 2\n[server]\nlisten = \"\"\nsocket_group = \"edgeai\"\n\n{APP}"));
    let text = s.expect("load").describe();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("listen: disabled"), "{text}");
    assert!(text.contains("socket: /run/edgeai/edgeai.sock (mode 0660, group edgeai)"), "{text}");
    assert!(text.contains("store: /var/lib/edgeai/edgeai.db"), "{text}");
    assert!(text.contains("SmolLM2-135M-Instruct.Q4_1.gguf (slots 4, context 4096, KV f16/f16, threads 2"), "{text}");
    assert!(text.contains("apps: 1 (demo)"), "{text}");
    let text = Settings::default().describe();
    assert!(text.contains("config files: none (built-in defaults)"), "{text}");
    assert!(text.contains("listen: 127.0.0.1:5001"), "{text}");
    assert!(text.contains("threads auto"), "{text}");
    assert!(text.contains("socket: /run/edgeai/edgeai.sock (mode 0660)\n"), "{text}");
}

const REFERENCE: &str = include_str!("../../../configs/reference.toml");

#[test]
fn reference_file_loads_to_the_defaults() {
    let (_r, path, s) = load_text(REFERENCE);
    let s = s.expect("reference.toml loads");
    assert_eq!(s, Settings { sources: vec![path], ..Settings::default() });
}

#[test]
fn reference_file_sets_every_known_key() {
    let table: toml::Table = REFERENCE.parse().expect("toml");
    let mut set = std::collections::BTreeSet::new();
    for (section, value) in &table {
        if let toml::Value::Table(t) = value {
            set.extend(t.keys().map(|k| format!("{section}.{k}")));
        }
    }
    let mut known = read::known_keys();
    assert!(known.remove("apps"));
    assert_eq!(set, known);
}

#[test]
fn reference_app_example_is_valid() {
    let start = REFERENCE.find("# [[apps]]").expect("example in reference.toml");
    let example: String = REFERENCE[start..].lines().map(|l| l.strip_prefix("# ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    let (_r, _p, s) = load_text(&example);
    let s = s.expect("example app loads");
    assert_eq!(s.apps.len(), 1);
    assert_eq!(s.apps[0].user_input_form.len(), 2);
    assert_eq!(s.apps[0].completion_params.seed, Some(42));
}

#[test]
fn module_doc_lists_every_key() {
    let doc = include_str!("mod.rs");
    for key in read::known_keys() {
        let shown = if key == "apps" { "`[[apps]]`".to_owned() } else { format!("`{key}`") };
        assert!(doc.contains(&format!("//! | {shown} |")), "module doc misses {key}");
    }
    for entry in SYSTEM_FILES {
        assert!(doc.contains(&format!("`{entry}`")), "module doc misses {entry}");
    }
}

#[test]
fn invalid_display_is_one_problem_per_line() {
    let err = ConfigError::Invalid(vec![
        Problem { file: Some(PathBuf::from("/etc/edgeai/edgeai.toml")), key: "model.slots".into(), message: "bad".into() },
        Problem { file: None, key: "log.level".into(), message: "worse".into() },
    ]);
    assert_eq!(err.to_string(), "/etc/edgeai/edgeai.toml: model.slots: bad\nlog.level: worse");
}

#[test]
fn workflow_settings_load_and_give_limits() {
    let s = Settings::default();
    let limits = &s.workflow.limits;
    assert_eq!((limits.max_steps, limits.max_parallel, limits.max_iterations), (500, 4, 1000));
    assert_eq!((limits.node_timeout, limits.run_timeout), (Duration::from_secs(120), Duration::from_secs(240)));
    assert_eq!(limits.http_max_response_bytes, 1 << 20);
    assert!(s.workflow.http_allow.is_empty());
    let (_r, _p, s) = load_text(
        "[workflow]\nmax_steps = 50\nnode_timeout_secs = 5\nrun_timeout_secs = 30\nmax_parallel = 2\nmax_iterations = 10\n\
         http_max_response_bytes = 2048\nhttp_allow = [\"plc.local\", \"*.plant.lan\", \"10.0.0.0/8\", \"127.0.0.1\", \"::1/128\"]\n",
    );
    let w = s.expect("load").workflow;
    let limits = &w.limits;
    assert_eq!((limits.max_steps, limits.max_parallel, limits.max_iterations, limits.http_max_response_bytes), (50, 2, 10, 2048));
    assert_eq!((limits.node_timeout, limits.run_timeout), (Duration::from_secs(5), Duration::from_secs(30)));
    assert_eq!(w.http_allow, ["plc.local", "*.plant.lan", "10.0.0.0/8", "127.0.0.1", "::1/128"]);
}

#[test]
fn workflow_bad_values_name_file_and_key() {
    let (_r, path, res) = load_text(
        "[workflow]\nmax_steps = 0\nmax_parallel = 65\nhttp_max_response_bytes = 10\n\
         http_allow = [\"ok.local\", \"10.0.0.1/8\", \"bad host\", 5, \"10.0.0.0/33\"]\nmax_step = 1\n",
    );
    let p = problems(res);
    assert!(p.iter().all(|p| p.file.as_deref() == Some(path.as_path())), "{p:?}");
    let lines: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    assert_eq!(lines.len(), 8, "{lines:#?}");
    assert_eq!(lines[0], "workflow.max_steps: must be between 1 and 100000, found 0");
    assert_eq!(lines[1], "workflow.max_parallel: must be between 1 and 64, found 65");
    assert_eq!(lines[2], "workflow.http_max_response_bytes: must be between 1024 and 67108864, found 10");
    assert_eq!(lines[3], "workflow.http_allow[1]: \"10.0.0.1/8\" has bits set after the prefix; did you mean \"10.0.0.0/8\"?");
    assert!(lines[4].starts_with("workflow.http_allow[2]: \"bad host\" is not a host name"), "{}", lines[4]);
    assert_eq!(lines[5], "workflow.http_allow[3]: expected a string, found integer 5");
    assert_eq!(lines[6], "workflow.http_allow[4]: \"10.0.0.0/33\": the prefix length must be 0 ..= 32");
    assert_eq!(lines[7], "workflow.max_step: unknown key; did you mean `workflow.max_steps`?");
    let p = problem(load_text("[workflow]\nnode_timeout_secs = 700\n").2);
    assert_eq!(
        (p.key.as_str(), p.message.as_str()),
        ("workflow.node_timeout_secs", "700s is longer than workflow.run_timeout_secs (240s)")
    );
    let p = problem(load_text("[server]\nrequest_timeout_secs = 60\n[workflow]\nnode_timeout_secs = 30\nrun_timeout_secs = 61\n").2);
    assert_eq!(p.key, "workflow.run_timeout_secs", "{p:?}");
    assert!(p.message.starts_with("61s is longer than server.request_timeout_secs (60s)"), "{p:?}");
    let p = problem(load_text("[workflow]\nhttp_allow = \"10.0.0.0/8\"\n").2);
    assert_eq!((p.key.as_str(), p.message.as_str()), ("workflow.http_allow", "expected an array of strings, found string \"10.0.0.0/8\""));
}

#[test]
fn allow_clients_loads_blocks_and_names_each_bad_entry() {
    let (_r, _p, s) = load_text("[server]\nallow_clients = [\"10.20.0.0/16\", \"127.0.0.1/32\", \"::1/128\", \"192.168.1.7\"]\n");
    let allow: Vec<String> = s.expect("load").server.allow_clients.iter().map(ToString::to_string).collect();
    assert_eq!(allow, ["10.20.0.0/16", "127.0.0.1/32", "::1/128", "192.168.1.7/32"]);
    let (_r, _p, res) = load_text("[server]\nallow_clients = [\"10.20.1.0/16\", \"plc.local\", 7, \"10.0.0.0/33\"]\n");
    let lines: Vec<String> = problems(res).iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(lines[0], "server.allow_clients[0]: \"10.20.1.0/16\" has bits set after the prefix; did you mean \"10.20.0.0/16\"?");
    assert!(lines[1].starts_with("server.allow_clients[1]: \"plc.local\" is not an address block"), "{}", lines[1]);
    assert_eq!(lines[2], "server.allow_clients[2]: expected a string, found integer 7");
    assert!(lines[3].starts_with("server.allow_clients[3]: \"10.0.0.0/33\" is not an address block"), "{}", lines[3]);
    let p = problem(load_text("[server]\nallow_clients = \"10.0.0.0/8\"\n").2);
    assert_eq!(p.key, "server.allow_clients");
    assert!(p.message.starts_with("expected an array of address blocks"), "{}", p.message);
}

#[test]
fn upstream_settings_load() {
    let (_r, _p, s) = load_text(
        "[upstream]\nurl = \"http://10.0.0.5:8000/v1/\"\nmodel = \"qwen\"\napi_key = \"sk-abc\"\nconnect_timeout_secs = 2\n\
         read_timeout_secs = 9\nretries = 0\nretry_backoff_ms = 50\nbreaker_failures = 3\nbreaker_cooldown_secs = 7\nfallback_local = false\n",
    );
    let u = s.expect("load").upstream;
    assert_eq!(u.url.as_deref(), Some("http://10.0.0.5:8000/v1"), "trailing / dropped");
    assert_eq!(u.model.as_deref(), Some("qwen"));
    assert_eq!(u.api_key.as_ref().map(Secret::expose), Some("sk-abc"));
    assert!(!format!("{u:?}").contains("sk-abc"), "Debug shows the key");
    assert_eq!((u.connect_timeout, u.read_timeout), (Duration::from_secs(2), Duration::from_secs(9)));
    assert_eq!((u.retries, u.retry_backoff, u.breaker_failures), (0, Duration::from_millis(50), 3));
    assert_eq!((u.breaker_cooldown, u.fallback_local), (Duration::from_secs(7), false));
    let s = Settings::default();
    assert_eq!((s.upstream.url.as_ref(), s.upstream.retries, s.upstream.fallback_local), (None, 2, true));
}

#[test]
fn upstream_url_is_http_only() {
    let p = problem(load_text("[upstream]\nurl = \"https://api.openai.com/v1\"\n").2);
    assert_eq!(p.key, "upstream.url");
    assert!(p.message.contains("https is not supported in this build"), "{}", p.message);
    for bad in ["10.0.0.5:8000", "ftp://x/v1", "http://", "http://user:pw@host/v1", "http://host/v1?x=1", "not a url"] {
        let p = problem(load_text(&format!("[upstream]\nurl = \"{bad}\"\n")).2);
        assert_eq!(p.key, "upstream.url", "{bad}");
        assert!(p.message.contains("is not an http:// URL"), "{bad}: {}", p.message);
    }
    let p = problem(load_text("[upstream]\napi_key = \"two words\"\n").2);
    assert_eq!(p.key, "upstream.api_key");
}

#[test]
fn upstream_key_file_is_read_and_checked() {
    use std::os::unix::fs::PermissionsExt;
    let root = Root::new();
    let key = root.write("etc/edgeai/upstream.key", "sk-from-file\n");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod");
    let conf = root.write("etc/edgeai/edgeai.toml", "[upstream]\nurl = \"http://h:1\"\napi_key_file = \"upstream.key\"\n");
    let s = load(&Sources::Files(vec![conf.clone()])).expect("load");
    assert_eq!(s.upstream.api_key.as_ref().map(Secret::expose), Some("sk-from-file"), "relative to its file, trimmed");
    assert_eq!(s.upstream.api_key_file, Some(key.clone()));
    assert!(s.describe().contains(&format!("key from {}", key.display())), "{}", s.describe());

    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let p = problem(load(&Sources::Files(vec![conf.clone()])));
    assert_eq!((p.file.as_deref(), p.key.as_str()), (Some(conf.as_path()), "upstream.api_key_file"));
    assert!(p.message.contains("readable by every user (mode 0644)"), "{}", p.message);

    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(&key, " \n").expect("write");
    let p = problem(load(&Sources::Files(vec![conf.clone()])));
    assert!(p.message.ends_with("is empty"), "{}", p.message);

    fs::remove_file(&key).expect("rm");
    let p = problem(load(&Sources::Files(vec![conf])));
    assert!(p.message.starts_with(&format!("cannot read {}", key.display())), "{}", p.message);

    let p = problem(load_text("[upstream]\napi_key = \"a\"\napi_key_file = \"/k\"\n").2);
    assert_eq!(
        (p.key.as_str(), p.message.as_str()),
        ("upstream.api_key_file", "set either upstream.api_key or upstream.api_key_file, not both")
    );
}

#[test]
fn model_map_resolves_and_reports_its_rule() {
    let s = Settings::default();
    assert_eq!(s.model_map.resolve("openai", "gpt-4o-mini"), (Target::Local, "default".to_owned()));
    let (_r, _p, s) = load_text(
        "[upstream]\nurl = \"http://10.0.0.5:8000/v1\"\nmodel = \"qwen2.5-7b\"\n\
         [model_map]\ndefault = \"upstream\"\n\"openai/gpt-4o-mini\" = \"local\"\n\"openai/gpt-4o\" = \"upstream:llama-3.1-70b\"\n\
         \"langgenius/openai/openai/o1\" = \"upstream\"\n",
    );
    let map = s.expect("load").model_map;
    assert_eq!(map.resolve("openai", "gpt-4o-mini"), (Target::Local, "openai/gpt-4o-mini".to_owned()));
    assert_eq!(map.resolve("openai", "gpt-4o"), (Target::Upstream { model: "llama-3.1-70b".into() }, "openai/gpt-4o".to_owned()));
    assert_eq!(
        map.resolve("langgenius/openai/openai", "o1"),
        (Target::Upstream { model: "qwen2.5-7b".into() }, "langgenius/openai/openai/o1".to_owned())
    );
    assert_eq!(map.resolve("anthropic", "claude"), (Target::Upstream { model: "qwen2.5-7b".into() }, "default".to_owned()));
    // Without upstream.model the DSL's own name goes upstream.
    let (_r, _p, s) = load_text("[upstream]\nurl = \"http://h:8000/v1\"\n[model_map]\n\"openai/gpt-4o\" = \"upstream\"\n");
    let map = s.expect("load").model_map;
    assert_eq!(map.resolve("openai", "gpt-4o"), (Target::Upstream { model: "gpt-4o".into() }, "openai/gpt-4o".to_owned()));
}

#[test]
fn model_map_bad_entries_name_the_key() {
    let (_r, path, res) = load_text(
        "[upstream]\nurl = \"http://h:8000/v1\"\n[model_map]\ndefault = \"cloud\"\n\"openai/a\" = \"upstream:\"\n\"openai/b\" = 3\n\
         gpt4 = \"local\"\n\"openai/c\" = \"Local\"\n",
    );
    let p = problems(res);
    assert!(p.iter().all(|p| p.file.as_deref() == Some(path.as_path())), "{p:?}");
    let lines: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    assert_eq!(
        lines,
        [
            "model_map.default: \"cloud\" is not \"local\", \"upstream\" or \"upstream:<model name>\"",
            "model_map.gpt4: \"gpt4\" is not a DSL model as \"provider/name\" (such as \"openai/gpt-4o-mini\")",
            "model_map.openai/a: \"upstream:\" is not \"local\", \"upstream\" or \"upstream:<model name>\"",
            "model_map.openai/b: expected \"local\", \"upstream\" or \"upstream:<model name>\", found integer 3",
            "model_map.openai/c: \"Local\" is not \"local\", \"upstream\" or \"upstream:<model name>\"",
        ]
    );
    let (_r, path, res) = load_text("[model_map]\ndefault = \"upstream\"\n\"openai/x\" = \"upstream:m\"\n\"openai/y\" = \"local\"\n");
    let lines: Vec<String> = problems(res).iter().map(ToString::to_string).collect();
    let f = path.display();
    assert_eq!(
        lines,
        [
            format!("{f}: model_map.default: maps to the upstream runtime, but upstream.url is not set"),
            format!("{f}: model_map.openai/x: maps to the upstream runtime, but upstream.url is not set"),
        ]
    );
    let p = problem(load_text("model_map = 1\n").2);
    assert_eq!((p.key.as_str(), p.message.as_str()), ("model_map", "expected a table ([model_map]), found integer 1"));
}

#[test]
fn describe_reports_workflow_upstream_and_map() {
    let text = Settings::default().describe();
    assert!(text.contains("http-request may reach nothing"), "{text}");
    assert!(text.contains("upstream: none\n"), "{text}");
    assert!(text.contains("model map: default -> local\n"), "{text}");
    let (_r, _p, s) = load_text(
        "[workflow]\nhttp_allow = [\"10.0.0.0/8\"]\n[upstream]\nurl = \"http://h:8000/v1\"\napi_key = \"k\"\n[model_map]\n\"openai/x\" = \"upstream:m\"\n",
    );
    let text = s.expect("load").describe();
    assert!(text.contains("http-request may reach 10.0.0.0/8"), "{text}");
    assert!(text.contains("upstream: http://h:8000/v1 (key set, falls back to the local model)"), "{text}");
    assert!(text.contains("model map: openai/x -> upstream:m, default -> local"), "{text}");
    assert!(!text.contains("k,"), "{text}");
}

#[test]
fn embedding_section_reads_paths_prefixes_and_ranges() {
    let (_r, path, s) = load_text(
        "[embedding]\npath = \"models/e5.gguf\"\nthreads = 1\nbatch_texts = 4\nmax_tokens = 256\nquery_prefix = \"\"\nqueue = 2\n",
    );
    let e = s.expect("loads").embedding;
    assert_eq!(e.path, path.parent().expect("dir").join("models/e5.gguf"));
    assert_eq!((e.threads, e.batch_texts, e.max_tokens, e.queue), (Some(1), 4, 256, 2));
    assert_eq!((e.query_prefix.as_str(), e.passage_prefix.as_str()), ("", "passage: "));
    let (_r, _p, s) = load_text("[embedding]\nbatch_texts = 0\nmax_tokens = 4096\npath = \"\"\nenabled = 1\n");
    let keys: Vec<String> = problems(s).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["embedding.enabled", "embedding.path", "embedding.batch_texts", "embedding.max_tokens"]);
}

#[test]
fn kv_types_default_to_f16_and_read_each_type() {
    let (_r, _p, res) = load_text("");
    let m = res.expect("defaults").model;
    assert_eq!((m.kv_type_k, m.kv_type_v), (KvType::F16, KvType::F16));
    for (k, v, want) in [
        ("q8_0", "q8_0", (KvType::Q8_0, KvType::Q8_0)),
        ("f16", "q8_0", (KvType::F16, KvType::Q8_0)),
        ("q4_0", "q4_0", (KvType::Q4_0, KvType::Q4_0)),
    ] {
        let (_r, _p, res) = load_text(&format!("[model]\nkv_type_k = \"{k}\"\nkv_type_v = \"{v}\"\n"));
        let m = res.expect("valid KV types").model;
        assert_eq!((m.kv_type_k, m.kv_type_v), want);
    }
}

#[test]
fn bad_kv_type_names_its_key_and_the_accepted_types() {
    for (key, value, found) in [
        ("kv_type_k", "\"q8\"", "\"q8\" is not one of \"f16\", \"q8_0\", \"q4_0\""),
        ("kv_type_v", "\"F16\"", "\"F16\" is not one of \"f16\", \"q8_0\", \"q4_0\""),
        ("kv_type_v", "8", "expected a string, found integer 8"),
    ] {
        let (_r, path, res) = load_text(&format!("[model]\n{key} = {value}\n"));
        let p = problem(res);
        assert_eq!((p.file.as_deref(), p.key.as_str()), (Some(path.as_path()), format!("model.{key}").as_str()));
        assert_eq!(p.message, found);
    }
}

#[test]
fn admission_limits_default_from_the_model_and_are_range_checked() {
    let (_r, _p, s) = load_text("[model]\nslots = 3\nqueue_depth = 10\n");
    let s = s.expect("loads");
    assert_eq!((s.admission.concurrent_per_app(&s.model), s.admission.queued_per_app(&s.model)), (3, 8), "slots, and 3/4 of the queue");
    let (_r, _p, s) = load_text("[model]\nqueue_depth = 4\n[admission]\nmax_concurrent_per_app = 1\nmax_queued_per_app = 9\n");
    let s = s.expect("loads");
    assert_eq!(s.admission.concurrent_per_app(&s.model), 1);
    assert_eq!(s.admission.queued_per_app(&s.model), 4, "never more than the whole queue");
    let (_r, _p, s) = load_text("[admission]\nmax_concurrent_per_app = 17\n");
    let p = problem(s);
    assert_eq!(p.message, "must be between 0 and 16, found 17");
}

#[test]
fn store_synchronous_defaults_to_full_and_reads_normal() {
    let (_r, _p, res) = load_text("");
    assert_eq!(res.expect("defaults").store.synchronous, crate::config::Synchronous::Full);
    let (_r, _p, res) = load_text("[store]\nsynchronous = \"normal\"\n");
    assert_eq!(res.expect("valid").store.synchronous, crate::config::Synchronous::Normal);
    let (_r, path, res) = load_text("[store]\nsynchronous = \"off\"\n");
    let text = res.expect_err("refused").to_string();
    assert!(text.contains(&format!("{}: store.synchronous: \"off\" is not one of \"full\", \"normal\"", path.display())), "{text}");
}

#[test]
fn audit_settings_default_and_are_range_checked() {
    let (_r, _p, s) = load_text("");
    assert_eq!(s.expect("defaults").audit, crate::config::AuditSettings { max_rows: 100_000, auth_failures_per_minute: 120 });
    let (_r, _p, s) = load_text("[audit]\nmax_rows = 500\nauth_failures_per_minute = 5\n");
    assert_eq!(s.expect("valid").audit, crate::config::AuditSettings { max_rows: 500, auth_failures_per_minute: 5 });
    for (text, key, message) in [
        ("[audit]\nmax_rows = 99\n", "audit.max_rows", "must be between 100 and 10000000, found 99"),
        ("[audit]\nauth_failures_per_minute = 0\n", "audit.auth_failures_per_minute", "must be between 1 and 100000, found 0"),
        ("[audit]\nmax_rows = \"lots\"\n", "audit.max_rows", "expected an integer, found string \"lots\""),
        ("[audit]\nkeep = 1\n", "audit.keep", ""),
    ] {
        let (_r, _p, s) = load_text(text);
        let p = problem(s);
        assert_eq!(p.key, key, "{text}");
        if !message.is_empty() {
            assert_eq!(p.message, message, "{text}");
        }
    }
}

/// A test CA's server certificate and key written into `root` as
/// `cert.pem` and `key.pem` (0600), and a second key that matches nothing.
fn tls_files(root: &Root) -> edgeai_tests::tls::Issued {
    let ca = edgeai_tests::tls::TestCa::new("config test CA");
    let issued = ca.server("config test server", 7);
    issued.write(&root.0.path().join("cert.pem"), &root.0.path().join("key.pem"));
    ca.write(&root.0.path().join("ca.pem"));
    ca.server("another server", 8)
}

#[test]
fn tls_settings_load_with_paths_relative_to_their_file() {
    let root = Root::new();
    tls_files(&root);
    let path = root.write("edgeai.toml", "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\nmin_version = \"1.3\"\n");
    let s = load(&Sources::Files(vec![path])).expect("valid TLS settings");
    let dir = std::path::absolute(root.0.path()).expect("absolute");
    let want =
        TlsSettings { cert_file: dir.join("cert.pem"), key_file: dir.join("key.pem"), client_ca_file: None, min_version: TlsVersion::V1_3 };
    assert_eq!(s.server.tls.as_ref(), Some(&want));
    assert!(s.describe().contains(&format!("(TLS 1.3+, certificate {})", want.cert_file.display())), "{}", s.describe());
    let path = root.write("b.toml", "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\nclient_ca_file = \"ca.pem\"\n");
    let tls = load(&Sources::Files(vec![path])).expect("valid").server.tls.expect("TLS on");
    assert_eq!((tls.min_version, tls.client_ca_file), (TlsVersion::V1_2, Some(dir.join("ca.pem"))));
    // An empty table is TLS off, as absent.
    let (_r, _p, s) = load_text("[server.tls]\n");
    assert_eq!(s.expect("valid").server.tls, None);
}

#[test]
fn tls_bad_values_name_their_keys() {
    let root = Root::new();
    tls_files(&root);
    let text = "[server.tls]\ncert_file = \"cert.pem\"\nkey = \"key.pem\"\nmin_version = \"1.1\"\n";
    let path = root.write("edgeai.toml", text);
    let p = problems(load(&Sources::Files(vec![path.clone()])));
    assert!(p.iter().all(|p| p.file.as_deref() == Some(path.as_path())), "{p:?}");
    let lines: Vec<String> = p.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
    assert_eq!(
        lines,
        [
            "server.tls.min_version: expected \"1.2\" or \"1.3\", found string \"1.1\"",
            "server.tls.key: unknown key; did you mean `server.tls.key_file`?",
            "server.tls.key_file: must be set when [server.tls] is present (a PEM file)",
        ]
    );
    let (_r, _p, s) = load_text("[server.tls]\ncert_file = 5\nkey_file = \"k.pem\"\n");
    let p = problem(s);
    assert_eq!((p.key.as_str(), p.message.as_str()), ("server.tls.cert_file", "expected a path, found integer 5"));
    let (_r, _p, s) = load_text("[server]\ntls = \"on\"\n");
    assert_eq!(problem(s).key, "server.tls");
}

#[test]
fn tls_bad_files_name_the_key_and_the_file() {
    let root = Root::new();
    let other = tls_files(&root);
    let dir = std::path::absolute(root.0.path()).expect("absolute");
    let write = |name: &str, text: &str, mode: u32| edgeai_tests::tls::write_mode(&dir.join(name), text, mode);
    write("garbage.pem", "not a certificate\n", 0o644);
    write("other-key.pem", &other.key_pem, 0o600);
    write("open-key.pem", &other.key_pem, 0o644);
    let cert_pem = fs::read_to_string(dir.join("cert.pem")).expect("cert");
    write("cert-as-key.pem", &cert_pem, 0o600);
    let cases = [
        ("missing.pem", "key.pem", "", "server.tls.cert_file", format!("cannot read {}", dir.join("missing.pem").display())),
        ("garbage.pem", "key.pem", "", "server.tls.cert_file", format!("{} holds no PEM certificate", dir.join("garbage.pem").display())),
        ("cert.pem", "missing.pem", "", "server.tls.key_file", format!("cannot read {}", dir.join("missing.pem").display())),
        (
            "cert.pem",
            "cert-as-key.pem",
            "",
            "server.tls.key_file",
            format!("{} holds no PEM private key", dir.join("cert-as-key.pem").display()),
        ),
        (
            "cert.pem",
            "open-key.pem",
            "",
            "server.tls.key_file",
            format!("{} is readable by every user (mode 0644)", dir.join("open-key.pem").display()),
        ),
        (
            "cert.pem",
            "other-key.pem",
            "",
            "server.tls.key_file",
            format!(
                "the private key in {} does not match the certificate in {}",
                dir.join("other-key.pem").display(),
                dir.join("cert.pem").display()
            ),
        ),
        (
            "cert.pem",
            "key.pem",
            "garbage.pem",
            "server.tls.client_ca_file",
            format!("{} holds no PEM certificate", dir.join("garbage.pem").display()),
        ),
        // A device named by mistake is refused, not read for ever.
        ("/dev/zero", "key.pem", "", "server.tls.cert_file", "/dev/zero is not a regular file of at most 1 MiB".to_owned()),
    ];
    for (cert, key, ca, want_key, want) in cases {
        let text = format!("[server.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{ca}\"\n");
        let path = root.write("edgeai.toml", &text);
        let p = problem(load(&Sources::Files(vec![path.clone()])));
        assert_eq!((p.file.as_deref(), p.key.as_str()), (Some(path.as_path()), want_key), "{text}");
        assert!(p.message.starts_with(&want), "{text}: {} does not start with {want}", p.message);
    }
}

const JWT: &str = "[[auth.jwt]]\nissuer = \"https://idp.test\"\naudience = \"edgeai\"\n";

#[test]
fn jwt_issuers_load_with_defaults_and_relative_paths() {
    let (_r, path, s) = load_text(&format!("{JWT}public_key_file = \"jwt/idp.pem\"\nalgorithms = [\"EdDSA\", \"ES256\"]\n"));
    let jwt = s.expect("loads").auth.jwt;
    let dir = std::path::absolute(&path).expect("absolute").parent().expect("dir").to_path_buf();
    assert_eq!(
        jwt,
        vec![JwtIssuer {
            issuer: "https://idp.test".into(),
            audience: "edgeai".into(),
            keys: JwtKeySource::PublicKey(dir.join("jwt/idp.pem")),
            algorithms: vec!["EdDSA".into(), "ES256".into()],
            app_claim: "app".into(),
            user_claim: "sub".into(),
            leeway: Duration::from_secs(60),
        }]
    );
    let (_r, _p, s) = load_text(&format!(
        "{JWT}jwks_file = \"/k.json\"\nalgorithms = [\"RS256\"]\napp_claim = \"edgeai_app\"\nuser_claim = \"email\"\nleeway_secs = 0\n"
    ));
    let j = &s.expect("loads").auth.jwt[0];
    assert_eq!(
        (j.keys.clone(), j.app_claim.as_str(), j.user_claim.as_str(), j.leeway),
        (JwtKeySource::Jwks("/k.json".into()), "edgeai_app", "email", Duration::ZERO)
    );
    let (_r, _p, s) = load_text(&format!("{JWT}secret_file = \"/s\"\nalgorithms = [\"HS256\"]\nallow_hs256 = true\n"));
    assert_eq!(s.expect("HS256 with the flag").auth.jwt[0].keys, JwtKeySource::Secret("/s".into()));
}

#[test]
fn bad_jwt_issuers_name_the_key() {
    let id = "issuer = \"https://idp.test\"\naudience = \"edgeai\"\n";
    let pem = format!("{id}public_key_file = \"/k.pem\"\n");
    for (body, key, says) in [
        (
            "issuer = 3\naudience = \"edgeai\"\njwks_file = \"/j\"\nalgorithms = [\"EdDSA\"]\n".to_owned(),
            "auth.jwt[0].issuer",
            "expected a non-empty string",
        ),
        (
            "issuer = \"i\"\naudience = \"\"\njwks_file = \"/j\"\nalgorithms = [\"EdDSA\"]\n".to_owned(),
            "auth.jwt[0].audience",
            "expected a non-empty string",
        ),
        (format!("{pem}algorithms = []\n"), "auth.jwt[0].algorithms", "non-empty array"),
        (pem.clone(), "auth.jwt[0].algorithms", "is required"),
        (format!("{pem}algorithms = [\"none\"]\n"), "auth.jwt[0].algorithms[0]", "never accepted"),
        (format!("{pem}algorithms = [\"HS512\"]\n"), "auth.jwt[0].algorithms[0]", "expected one of EdDSA"),
        (format!("{id}algorithms = [\"EdDSA\"]\n"), "auth.jwt[0]", "needs public_key_file or jwks_file"),
        (format!("{pem}jwks_file = \"/j\"\nalgorithms = [\"EdDSA\"]\n"), "auth.jwt[0]", "only one of"),
        (format!("{pem}algorithms = [\"HS256\"]\n"), "auth.jwt[0].algorithms", "HS256 is refused unless allow_hs256 = true"),
        (format!("{pem}algorithms = [\"RS256\", \"HS256\"]\nallow_hs256 = true\n"), "auth.jwt[0].algorithms", "key-confusion"),
        (format!("{id}secret_file = \"/s\"\nalgorithms = [\"HS256\"]\n"), "auth.jwt[0].secret_file", "unless allow_hs256 = true"),
        (
            format!("{id}secret_file = \"/s\"\nalgorithms = [\"HS256\", \"EdDSA\"]\nallow_hs256 = true\n"),
            "auth.jwt[0].algorithms",
            "only HS256",
        ),
        (format!("{pem}algorithms = [\"EdDSA\"]\nleeway_secs = 601\n"), "auth.jwt[0].leeway_secs", "between 0 and 600"),
        (format!("{pem}algorithms = [\"EdDSA\"]\nallow_hs256 = \"yes\"\n"), "auth.jwt[0].allow_hs256", "true or false"),
        (format!("{id}jwks_file = 1\nalgorithms = [\"EdDSA\"]\n"), "auth.jwt[0].jwks_file", "expected the path of a file, found integer 1"),
        (format!("{pem}algorithms = [\"EdDSA\"]\naudiance = \"x\"\n"), "auth.jwt[0].audiance", "did you mean `auth.jwt[0].audience`?"),
    ] {
        let (_r, path, s) = load_text(&format!("[[auth.jwt]]\n{body}"));
        let ps = problems(s);
        let p = ps.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("{body}: no problem at {key}: {ps:?}"));
        assert_eq!(p.file.as_deref(), Some(path.as_path()));
        assert!(p.message.contains(says), "{key}: {}", p.message);
    }
    let (_r, _p, s) =
        load_text(&format!("{JWT}jwks_file = \"/a\"\nalgorithms = [\"EdDSA\"]\n{JWT}jwks_file = \"/b\"\nalgorithms = [\"EdDSA\"]\n"));
    assert_eq!(problem(s).key, "auth.jwt[1].issuer", "an issuer configured twice");
    let (_r, _p, s) = load_text("[auth]\njwt = 1\n");
    assert_eq!(problem(s).message, "expected an array of tables ([[auth.jwt]]), found integer 1");
}

#[test]
fn update_settings_default_resolve_the_dir_and_are_range_checked() {
    let (_r, _p, s) = load_text("");
    let u = s.expect("defaults").update;
    assert_eq!(u, crate::config::UpdateSettings::default());
    assert_eq!(
        (u.enabled, u.dir.as_path(), u.max_attempts, u.commit_after),
        (false, Path::new("/var/lib/edgeai"), 3, Duration::from_secs(60))
    );
    // "" follows store.path; a relative dir is resolved against the file's directory.
    let (_r, _p, s) =
        load_text("[store]\npath = \"/data/e/edgeai.db\"\n[update]\nenabled = true\nmax_attempts = 10\ncommit_after_secs = 1\n");
    let u = s.expect("valid").update;
    assert_eq!((u.enabled, u.dir.as_path(), u.max_attempts, u.commit_after), (true, Path::new("/data/e"), 10, Duration::from_secs(1)));
    assert_eq!(
        (u.trust_dir.as_path(), u.compatible.as_str()),
        (Path::new("/etc/edgeai/trust.d"), format!("edgeai-{}", std::env::consts::ARCH).as_str())
    );
    let (_r, _p, s) = load_text("[update]\ntrust_dir = \"/opt/keys\"\ncompatible = \"acme-gw200\"\nmax_bundle_bytes = 1048576\n");
    let u = s.expect("valid").update;
    assert_eq!((u.trust_dir.as_path(), u.compatible.as_str(), u.max_bundle_bytes), (Path::new("/opt/keys"), "acme-gw200", 1 << 20));
    let (r, path, s) = load_text("[update]\ndir = \"upd\"\n");
    assert_eq!(s.expect("valid").update.dir, path.parent().expect("dir").join("upd"));
    drop(r);
    for (text, key, message) in [
        ("[update]\nmax_attempts = 0\n", "update.max_attempts", "must be between 1 and 10, found 0"),
        ("[update]\nmax_attempts = 11\n", "update.max_attempts", "must be between 1 and 10, found 11"),
        ("[update]\ncommit_after_secs = 0\n", "update.commit_after_secs", "must be between 1 and 86400, found 0"),
        ("[update]\nenabled = \"yes\"\n", "update.enabled", "expected true or false"),
        ("[update]\nslots = 2\n", "update.slots", ""),
        ("[update]\ncompatible = \" \"\n", "update.compatible", "must be 1 to 255 characters"),
        ("[update]\nmax_bundle_bytes = 1024\n", "update.max_bundle_bytes", "must be between 1048576 and 1099511627776, found 1024"),
    ] {
        let (_r, _p, s) = load_text(text);
        let e = s.expect_err(text).to_string();
        assert!(e.contains(key) && e.contains(message), "{text}: {e}");
    }
}
