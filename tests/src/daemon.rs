//! Starting and stopping a real `edgeaid` for one test: a private temporary
//! directory with the config, store, unix socket and demo key; the child
//! process with its JSON log lines captured (and printed if the test
//! fails); the TCP port learnt from the `ready` log event; signals; restart
//! on the same directory. Owns the process; knows the config keys it writes
//! and the log events it waits for (`ready`, `model loaded`), nothing else.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{Client, Target};
use crate::notify::NotifySocket;
use crate::paths;

/// How long start-up may take until the `ready` log event.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long loading the model may take until `/ready` answers 200.
pub const MODEL_TIMEOUT: Duration = Duration::from_secs(120);

/// The config every test daemon starts from; [`DaemonBuilder::set`] and
/// [`DaemonBuilder::app_set`] change it, the builder fills in the paths.
/// Sampling is greedy (temperature 0) so answers are deterministic, and
/// answers are short so the suite stays fast on two cores. The response
/// cache is off: tests ask the same questions to see the model answer
/// (tests/tests/cache.rs turns it on).
const BASE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
socket_mode = "0660"
shutdown_grace_secs = 30
request_timeout_secs = 120

[model]
name = "smollm2-135m-instruct"
context_size = 2048
slots = 2
threads = 1
queue_depth = 8

[log]
level = "info"
format = "json"

[cache]
enabled = false

# Tests that use D-Bus start their own dbus-daemon and set control.bus to it;
# the others stay off the host's buses.
[control]
bus = "off"

[[apps]]
id = "demo"
name = "Demo chat"
mode = "chat"
description = "The end-to-end tests' chat app."
pre_prompt = "You are a helpful assistant. Answer briefly."
opening_statement = "Hello! I am the test assistant."
suggested_questions = ["What is a PLC?", "What is Modbus?"]
history_turns = 4

[apps.completion_params]
temperature = 0.0
top_p = 1.0
top_k = 40
max_tokens = 32
seed = 42

[[apps]]
id = "summarise"
name = "Summarise"
mode = "completion"
description = "Summarises a paragraph in one sentence."
pre_prompt = "Summarise in one sentence: {{text}}"
user_input_form = [{ paragraph = { label = "Text to summarise", variable = "text", required = true, max_length = 4000 } }]

[apps.completion_params]
temperature = 0.0
top_p = 1.0
top_k = 40
max_tokens = 32
seed = 42
"#;

/// Id of the app added by [`DaemonBuilder::long_app`].
pub const LONG_APP: &str = "long";
/// A query the test model answers at length at temperature 0 (it loops
/// until `max_tokens`), for generations that must still be running.
pub const LONG_QUERY: &str = "Write a long story about a robot in a factory.";

/// One line the daemon wrote to stderr.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: Instant,
    pub raw: String,
    /// The line parsed as JSON (`log.format = "json"`), if it is JSON.
    pub json: Option<Value>,
}

impl LogLine {
    /// `fields.message`, or the raw line when it is not a JSON event.
    pub fn message(&self) -> &str {
        self.json.as_ref().and_then(|j| j["fields"]["message"].as_str()).unwrap_or(&self.raw)
    }

    /// `fields.<name>`.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.json.as_ref().and_then(|j| j["fields"].get(name))
    }

    /// `fields.<name>` as text (strings as they are, other values as JSON).
    pub fn field_str(&self, name: &str) -> Option<String> {
        self.field(name).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    }

    /// `fields.<name>` as an unsigned number.
    pub fn field_u64(&self, name: &str) -> Option<u64> {
        self.field(name).and_then(Value::as_u64)
    }

    pub fn level(&self) -> &str {
        self.json.as_ref().and_then(|j| j["level"].as_str()).unwrap_or("")
    }
}

/// Log lines of one daemon process, appended by a reader thread.
#[derive(Default)]
struct LogBuf {
    lines: Mutex<Vec<LogLine>>,
    changed: Condvar,
    /// stderr reached EOF (the process exited or closed it).
    closed: AtomicBool,
}

impl LogBuf {
    fn push(&self, raw: String) {
        let json = serde_json::from_str(&raw).ok();
        lock(&self.lines).push(LogLine { at: Instant::now(), raw, json });
        self.changed.notify_all();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Take the lock so a waiter between its check and its wait sees it.
        drop(lock(&self.lines));
        self.changed.notify_all();
    }

    fn snapshot(&self) -> Vec<LogLine> {
        lock(&self.lines).clone()
    }
}

/// Locks a mutex even if a panicking test poisoned it: the log must still
/// be printed then.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What to start: config, environment, and what "started" means.
pub struct DaemonBuilder {
    dir: tempfile::TempDir,
    config: toml::Table,
    model_path: Option<PathBuf>,
    env: Vec<(String, String)>,
    wait_for_model: bool,
    watchdog_pid: bool,
    failpoints: Vec<String>,
    cgroup_procs: Option<PathBuf>,
    listen_fds: Vec<(OwnedFd, String)>,
    /// The CA file clients trust when the TCP listener speaks TLS.
    tls_ca: Option<PathBuf>,
}

/// Files [`DaemonBuilder::tls`] writes in the daemon's directory.
pub const TLS_CA_FILE: &str = "tls-ca.pem";
pub const TLS_CERT_FILE: &str = "tls-cert.pem";
pub const TLS_KEY_FILE: &str = "tls-key.pem";

impl Default for DaemonBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DaemonBuilder {
    /// A fresh temporary directory and the base config (see the crate docs).
    pub fn new() -> DaemonBuilder {
        let dir = tempfile::Builder::new().prefix("edgeai-e2e-").tempdir().expect("creating the test directory");
        let mut config: toml::Table = BASE_CONFIG.parse().expect("BASE_CONFIG is valid TOML");
        let p = |name: &str| toml::Value::String(dir.path().join(name).display().to_string());
        set_path(&mut config, "server.socket", p("edgeai.sock"));
        set_path(&mut config, "store.path", p("edgeai.db"));
        set_path(&mut config, "dev.demo_key_file", p("demo-key"));
        DaemonBuilder {
            dir,
            config,
            model_path: None,
            env: Vec::new(),
            wait_for_model: true,
            watchdog_pid: false,
            failpoints: Vec::new(),
            cgroup_procs: None,
            listen_fds: Vec::new(),
            tls_ca: None,
        }
    }

    /// The test's private directory (exists already, before `start`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sets a config key by its dotted name: `set("server.max_body_bytes", 4096)`.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        set_path(&mut self.config, key, value.into());
        self
    }

    /// Sets a key inside the app with this id: `app_set("demo", "completion_params.max_tokens", 400)`.
    pub fn app_set(mut self, app: &str, key: &str, value: impl Into<toml::Value>) -> Self {
        set_path(app_table(&mut self.config, app), key, value.into());
        self
    }

    /// Adds an app (a TOML table as in `[[apps]]`).
    pub fn add_app(mut self, app: toml::Table) -> Self {
        let apps = self.config.get_mut("apps").and_then(toml::Value::as_array_mut).expect("the config has [[apps]]");
        apps.push(toml::Value::Table(app));
        self
    }

    /// `completion_params.max_tokens` of every app.
    pub fn max_tokens(mut self, n: u32) -> Self {
        let ids: Vec<String> = self
            .config
            .get("apps")
            .and_then(toml::Value::as_array)
            .map(|a| a.iter().filter_map(|t| t.get("id").and_then(toml::Value::as_str).map(str::to_owned)).collect())
            .unwrap_or_default();
        for id in ids {
            self = self.app_set(&id, "completion_params.max_tokens", i64::from(n));
        }
        self
    }

    /// Serves TLS on TCP (`[server.tls]`) with a certificate for 127.0.0.1
    /// and localhost that `ca` issues (common name "edgeai test server",
    /// serial 1), written with the CA as [`TLS_CA_FILE`], [`TLS_CERT_FILE`]
    /// and [`TLS_KEY_FILE`] in the daemon's directory. The daemon's
    /// [`Daemon::client`] then speaks HTTPS trusting that CA.
    pub fn tls(mut self, ca: &crate::tls::TestCa) -> Self {
        let path = |name: &str| self.dir.path().join(name);
        let (ca_file, cert, key) = (path(TLS_CA_FILE), path(TLS_CERT_FILE), path(TLS_KEY_FILE));
        ca.write(&ca_file);
        ca.server("edgeai test server", 1).write(&cert, &key);
        self.tls_ca = Some(ca_file);
        self.set("server.tls.cert_file", cert.display().to_string()).set("server.tls.key_file", key.display().to_string())
    }

    /// Adds the chat app [`LONG_APP`]: greedy, with this `max_tokens`; with
    /// [`LONG_QUERY`] it generates until `max_tokens` (the model loops), for
    /// tests that need a generation still running (stop, disconnect,
    /// signals). Get a key with `daemon.admin().create_key(LONG_APP)`.
    pub fn long_app(self, max_tokens: u32) -> Self {
        let mut app = toml::Table::new();
        app.insert("id".into(), LONG_APP.into());
        app.insert("name".into(), "Long answers".into());
        app.insert("mode".into(), "chat".into());
        app.insert("pre_prompt".into(), "You are a storyteller.".into());
        let mut params = toml::Table::new();
        params.insert("temperature".into(), 0.0.into());
        params.insert("max_tokens".into(), i64::from(max_tokens).into());
        params.insert("seed".into(), 7.into());
        app.insert("completion_params".into(), toml::Value::Table(params));
        self.add_app(app)
    }

    /// Loads the embedding model (`[embedding] path`), for knowledge bases;
    /// without it the daemon runs them by full text only.
    pub fn with_embedder(self) -> Self {
        let path = paths::embed_model();
        self.set("embedding.path", path.display().to_string())
    }

    /// Uses this model file instead of the default test model.
    pub fn model_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.model_path = Some(path.into());
        self
    }

    /// Whether `start` waits for `/ready` 200 (default true). Turn it off
    /// for a model that is expected not to load.
    pub fn wait_for_model(mut self, wait: bool) -> Self {
        self.wait_for_model = wait;
        self
    }

    /// An environment variable for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Binds a fake notify socket in the test directory and gives it to the
    /// daemon as NOTIFY_SOCKET.
    pub fn notify_socket(&mut self) -> NotifySocket {
        let n = NotifySocket::bind(self.dir.path());
        self.env.push(("NOTIFY_SOCKET".into(), n.path().display().to_string()));
        n
    }

    /// Sets WATCHDOG_USEC, and WATCHDOG_PID to the daemon's own pid as
    /// systemd does (the daemon is exec'd from `sh` to learn its pid first).
    pub fn watchdog_usec(mut self, usec: u64) -> Self {
        self.env.push(("WATCHDOG_USEC".into(), usec.to_string()));
        self.watchdog_pid = true;
        self
    }

    /// Configures a fail point of the daemon (the `fail` crate, through
    /// FAILPOINTS; needs a build with the `failpoints` feature), e.g.
    /// `failpoint("model-load-progress", "sleep(30)")`. Repeatable.
    pub fn failpoint(mut self, name: &str, actions: &str) -> Self {
        self.failpoints.push(format!("{name}={actions}"));
        self
    }

    /// Starts the daemon inside a cgroup: its pid is written to this
    /// `cgroup.procs` before it execs, so everything it allocates, the
    /// model mapping included, is charged there.
    pub fn cgroup_procs(mut self, procs: impl Into<PathBuf>) -> Self {
        self.cgroup_procs = Some(procs.into());
        self
    }

    /// Passes this listening socket to the daemon as systemd's socket
    /// activation does: fds from 3 on, in the order added, with LISTEN_FDS,
    /// LISTEN_FDNAMES (`name`) and LISTEN_PID set to the daemon's pid. The
    /// test keeps its own copy (like systemd), also across restarts.
    pub fn listen_fd(mut self, fd: impl AsFd, name: &str) -> Self {
        // A close-on-exec copy numbered above the 3.. range the child gets,
        // so moving the copies into place cannot overwrite one another.
        let copy = nix::fcntl::fcntl(fd.as_fd().as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64)).expect("duplicating the listen fd");
        // SAFETY: fcntl just returned this new fd, owned by nothing else.
        let copy = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) };
        self.listen_fds.push((copy, name.to_owned()));
        self
    }

    /// The inference thread hangs once the model is loaded.
    pub fn hang_inference(self) -> Self {
        self.failpoint("inference-hang", "return")
    }

    /// Writes the config file and returns its path (also done by `start`).
    pub fn write_config(&mut self) -> PathBuf {
        if self.config.get("model").and_then(|m| m.get("path")).is_none() {
            let model = self.model_path.clone().unwrap_or_else(paths::model);
            set_path(&mut self.config, "model.path", toml::Value::String(model.display().to_string()));
        }
        let path = self.dir.path().join("edgeaid.toml");
        let text = toml::to_string(&self.config).expect("serialising the test config");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Starts the daemon and waits until it is ready (and, unless turned
    /// off, until its model is loaded).
    pub fn start(self) -> Daemon {
        let mut d = self.into_daemon();
        d.spawn();
        d
    }

    /// Starts the daemon without waiting for `ready`, for a start that is
    /// meant to fail: then `wait_exit` and `logs`.
    pub fn start_no_wait(self) -> Daemon {
        let mut d = self.into_daemon();
        d.spawn_process();
        d
    }

    fn into_daemon(mut self) -> Daemon {
        let config_path = self.write_config();
        if !self.failpoints.is_empty() {
            self.env.push(("FAILPOINTS".into(), self.failpoints.join(";")));
        }
        Daemon {
            dir: self.dir,
            config_path,
            env: self.env,
            watchdog_pid: self.watchdog_pid,
            cgroup_procs: self.cgroup_procs,
            listen_fds: self.listen_fds,
            wait_for_model: self.wait_for_model,
            child: None,
            exit: None,
            logs: Arc::new(LogBuf::default()),
            previous_logs: Vec::new(),
            stdout: Arc::new(Mutex::new(Vec::new())),
            addr: None,
            key: String::new(),
            tls_ca: self.tls_ca,
        }
    }
}

/// The `[[apps]]` table with this id in a config; panics if there is none.
pub fn app_table<'t>(config: &'t mut toml::Table, app: &str) -> &'t mut toml::Table {
    let apps = config.get_mut("apps").and_then(toml::Value::as_array_mut).expect("the config has [[apps]]");
    apps.iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(app))
        .unwrap_or_else(|| panic!("no app {app:?} in the config"))
}

/// Sets a dotted key (`"server.max_body_bytes"`) in a config table,
/// creating the tables on the way.
pub fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("a non-empty key");
    let mut t = table;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("config key {p} is not a table"));
    }
    t.insert(last.to_owned(), value);
}

/// A running (or stopped) `edgeaid` and its directory. Dropping it kills
/// the process; if the test is failing, its log is printed first.
pub struct Daemon {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    env: Vec<(String, String)>,
    watchdog_pid: bool,
    cgroup_procs: Option<PathBuf>,
    /// Sockets passed as systemd does (see [`DaemonBuilder::listen_fd`]).
    listen_fds: Vec<(OwnedFd, String)>,
    wait_for_model: bool,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    logs: Arc<LogBuf>,
    previous_logs: Vec<Vec<LogLine>>,
    stdout: Arc<Mutex<Vec<String>>>,
    addr: Option<SocketAddr>,
    key: String,
    /// Set when the TCP listener speaks TLS ([`DaemonBuilder::tls`]).
    tls_ca: Option<PathBuf>,
}

impl Daemon {
    fn spawn(&mut self) {
        self.spawn_process();
        let ready = self.wait_log(READY_TIMEOUT, "the `ready` event", |l| l.message() == "ready");
        let listen = ready.field_str("listen").unwrap_or_default();
        self.addr = Some(listen.parse().unwrap_or_else(|_| panic!("the ready event's listen field {listen:?} is not an address")));
        let key_file = self.dir.path().join("demo-key");
        self.key = std::fs::read_to_string(&key_file).unwrap_or_else(|e| panic!("reading {}: {e}", key_file.display())).trim().to_owned();
        if self.wait_for_model {
            self.wait_until_model_ready(MODEL_TIMEOUT);
        }
    }

    /// Starts the process and its log readers.
    fn spawn_process(&mut self) {
        let edgeaid = paths::edgeaid();
        let activated = !self.listen_fds.is_empty();
        let mut cmd = if self.watchdog_pid || self.cgroup_procs.is_some() || activated {
            // The shell learns the pid it will exec edgeaid as.
            let mut script = String::new();
            if self.watchdog_pid {
                script.push_str("WATCHDOG_PID=$$; export WATCHDOG_PID; ");
            }
            if activated {
                script.push_str("LISTEN_PID=$$; export LISTEN_PID; ");
            }
            let mut c = Command::new("/bin/sh");
            if let Some(procs) = &self.cgroup_procs {
                script.push_str("echo $$ > \"$EDGEAI_TEST_CGROUP_PROCS\" || exit 97; ");
                c.env("EDGEAI_TEST_CGROUP_PROCS", procs);
            }
            script.push_str("exec \"$0\" \"$@\"");
            c.arg("-c").arg(script).arg(&edgeaid);
            c
        } else {
            Command::new(&edgeaid)
        };
        cmd.arg("--config").arg(&self.config_path).current_dir(self.dir.path());
        for k in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
            "EDGEAI_LOG",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "FAILPOINTS",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if activated {
            let names: Vec<&str> = self.listen_fds.iter().map(|(_, n)| n.as_str()).collect();
            cmd.env("LISTEN_FDS", names.len().to_string()).env("LISTEN_FDNAMES", names.join(":"));
            let fds: Vec<i32> = self.listen_fds.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
            // SAFETY: between fork and exec only dup2 runs (async-signal-safe,
            // no allocation); it puts the sockets at 3, 4, ... without
            // close-on-exec, as systemd does.
            unsafe {
                cmd.pre_exec(move || {
                    for (i, fd) in fds.iter().enumerate() {
                        nix::unistd::dup2(*fd, 3 + i as i32)?;
                    }
                    Ok(())
                });
            }
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", edgeaid.display()));
        self.exit = None;
        self.addr = None;
        let logs = Arc::new(LogBuf::default());
        let stderr = child.stderr.take().expect("piped stderr");
        let l = Arc::clone(&logs);
        std::thread::Builder::new()
            .name("edgeaid-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    match line {
                        Ok(line) => l.push(line),
                        Err(_) => break,
                    }
                }
                l.close();
            })
            .expect("spawning the log reader");
        let stdout = child.stdout.take().expect("piped stdout");
        let out = Arc::clone(&self.stdout);
        std::thread::Builder::new()
            .name("edgeaid-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lock(&out).push(line);
                }
            })
            .expect("spawning the stdout reader");
        let old = std::mem::replace(&mut self.logs, logs);
        let old_lines = old.snapshot();
        if !old_lines.is_empty() {
            self.previous_logs.push(old_lines);
        }
        self.child = Some(child);
    }

    /// Polls `/ready` until it answers 200.
    pub fn wait_until_model_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let client = self.client().without_key();
        loop {
            let r = client.get("/ready");
            if r.status == 200 {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!("edgeaid exited ({status}) before its model was ready");
            }
            assert!(Instant::now() < deadline, "/ready still answers {} after {timeout:?}: {}", r.status, r.text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the daemon with SIGTERM if it runs (asserting a clean exit),
    /// then starts it again on the same directory (config, store, socket, key).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.sigterm();
            let status = self.wait_exit(Duration::from_secs(60));
            assert!(status.success(), "edgeaid exited with {status} on SIGTERM");
        }
        self.spawn();
    }

    /// Starts the daemon again after it exited (same as `restart` then).
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "start_again: the daemon still runs");
        self.spawn();
    }

    /// Starts the daemon again after it exited without waiting for `ready`
    /// (a start meant to die: then `wait_exit`).
    pub fn start_again_no_wait(&mut self) {
        assert!(!self.is_running(), "start_again_no_wait: the daemon still runs");
        self.spawn_process();
    }

    /// Replaces the fail points (FAILPOINTS) of the next starts; `None`: none.
    pub fn set_failpoints(&mut self, spec: Option<&str>) {
        self.env.retain(|(k, _)| k != "FAILPOINTS");
        if let Some(spec) = spec {
            self.env.push(("FAILPOINTS".into(), spec.into()));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the daemon reads (at start and on SIGHUP).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Rewrites the config file: `edit` changes the parsed table (see
    /// [`set_path`] and [`app_table`]). The daemon sees it at its next SIGHUP
    /// or restart.
    pub fn edit_config(&self, edit: impl FnOnce(&mut toml::Table)) {
        let path = &self.config_path;
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut config: toml::Table = text.parse().unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()));
        edit(&mut config);
        let text = toml::to_string(&config).expect("serialising the test config");
        std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("edgeai.sock")
    }

    /// The TCP address learnt from the `ready` event.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("the daemon has not reported its address")
    }

    /// The demo app's key (from `dev.demo_key_file`).
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("no child process")
    }

    /// A TCP client with the demo app's key (HTTPS trusting the test CA
    /// when the daemon serves TLS).
    pub fn client(&self) -> Client {
        Client::new(self.tcp_target()).with_key(&self.key)
    }

    /// The TCP listener as a client target: plain, or TLS with the test CA.
    pub fn tcp_target(&self) -> Target {
        match &self.tls_ca {
            Some(ca) => Target::Tls { addr: self.addr(), ca: ca.clone() },
            None => Target::Tcp(self.addr()),
        }
    }

    /// A client over the unix socket with the demo app's key.
    pub fn unix_client(&self) -> Client {
        Client::new(Target::Unix(self.socket_path())).with_key(&self.key)
    }

    /// The admin client of `edgeai-common` on this daemon's socket.
    pub fn admin(&self) -> crate::admin::Admin {
        crate::admin::Admin::new(self.socket_path())
    }

    /// Runs `edgeaictl --socket <socket> args...` to completion.
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(paths::edgeaictl())
            .arg("--socket")
            .arg(self.socket_path())
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("running edgeaictl")
    }

    /// What the daemon printed on stdout (the demo key banner).
    pub fn stdout(&self) -> Vec<String> {
        lock(&self.stdout).clone()
    }

    // ---- logs --------------------------------------------------------------

    /// Log lines of the current process so far.
    pub fn logs(&self) -> Vec<LogLine> {
        self.logs.snapshot()
    }

    /// Log lines of the current process with this `fields.message`.
    pub fn logs_with_message(&self, message: &str) -> Vec<LogLine> {
        self.logs().into_iter().filter(|l| l.message() == message).collect()
    }

    /// Waits for a log line of the current process matching `pred`; panics
    /// (with the log) on timeout, or if the process ends without it.
    #[track_caller]
    pub fn wait_log(&self, timeout: Duration, what: &str, pred: impl Fn(&LogLine) -> bool) -> LogLine {
        let deadline = Instant::now() + timeout;
        let mut lines = lock(&self.logs.lines);
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            if self.logs.closed.load(Ordering::Acquire) {
                drop(lines);
                panic!("edgeaid ended its log without {what} (its log follows)");
            }
            let now = Instant::now();
            if now >= deadline {
                drop(lines);
                panic!("no {what} in the log within {timeout:?} (the log follows)");
            }
            lines = self
                .logs
                .changed
                .wait_timeout(lines, (deadline - now).min(Duration::from_millis(200)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits for a line with this `fields.message`.
    #[track_caller]
    pub fn wait_log_message(&self, message: &str, timeout: Duration) -> LogLine {
        self.wait_log(timeout, &format!("log message {message:?}"), |l| l.message() == message)
    }

    /// Waits until at least `n` lines with this `fields.message` are in the
    /// log; returns all of them so far, oldest first.
    #[track_caller]
    pub fn wait_log_count(&self, message: &str, n: usize, timeout: Duration) -> Vec<LogLine> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.logs_with_message(message);
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "{} log lines {message:?} after {timeout:?}, want {n}", lines.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The start-up log line of a fail point set with
    /// [`DaemonBuilder::failpoint`]; panics with the build command if the
    /// binary was built without the `failpoints` feature (it would ignore them).
    #[track_caller]
    pub fn expect_failpoint(&self, name: &str) -> LogLine {
        let hint = format!("the fail point {name:?} configured (is edgeaid built with failpoints? `{}`)", paths::BUILD_COMMAND);
        self.wait_log(Duration::from_secs(10), &hint, |l| {
            l.message() == "failpoint configured" && l.field_str("name").as_deref() == Some(name)
        })
    }

    /// Waits for the inference thread to hang at the failpoint (see
    /// [`DaemonBuilder::hang_inference`]); panics with the build command if
    /// the binary was built without the `failpoints` feature.
    #[track_caller]
    pub fn wait_failpoint_hang(&self) -> LogLine {
        self.wait_log_message("model loaded", MODEL_TIMEOUT);
        let hint = format!("the failpoint log line (is edgeaid built with failpoints? `{}`)", paths::BUILD_COMMAND);
        self.wait_log(Duration::from_secs(10), &hint, |l| l.message() == "failpoint: the inference thread hangs now")
    }

    /// Every captured log line (earlier processes first), for a failure report.
    pub fn dump_logs(&self) -> String {
        let mut out = String::new();
        for (i, run) in self.previous_logs.iter().chain(std::iter::once(&self.logs.snapshot())).enumerate() {
            out.push_str(&format!("---- edgeaid log, process #{} ----\n", i + 1));
            for l in run {
                out.push_str(&l.raw);
                out.push('\n');
            }
        }
        out
    }

    // ---- process -----------------------------------------------------------

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("sending {sig} to edgeaid: {e}"));
    }

    pub fn sigterm(&self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// SIGHUP: the daemon re-reads its configuration.
    pub fn sighup(&self) {
        self.signal(nix::sys::signal::Signal::SIGHUP);
    }

    /// SIGKILL, then reaps the process.
    pub fn kill9(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "a SIGKILLed edgeaid cannot exit successfully");
    }

    /// The exit status if the process has ended (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.exit = c.try_wait().ok().flatten();
            }
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exit().is_none()
    }

    /// Waits for the process to end; panics after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(Instant::now() < deadline, "edgeaid did not exit within {timeout:?} (its log follows)");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.is_running() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.dump_logs());
            let out = self.stdout();
            if !out.is_empty() {
                eprintln!("---- edgeaid stdout ----\n{}", out.join("\n"));
            }
        }
    }
}
