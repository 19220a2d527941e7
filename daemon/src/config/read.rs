//! Turns the merged TOML table into typed [`Settings`]: one reader call per
//! key, each checking type and range and naming the file that set the key.
//! Every problem is collected; nothing stops at the first. Keys that no
//! reader asked for are reported as unknown. Owns no I/O.

use super::layers::Merged;
use super::workflow::MapEntry;
use super::{KvType, LogFormat, Problem, PythonChoice, Settings, Synchronous};
use crate::engine::AppDefinition;
use serde_path_to_error::Segment;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

/// The top-level key of the `[[apps]]` array.
const APPS: &str = "apps";
/// The section whose keys are the DSL's model names.
const MODEL_MAP: &str = "model_map";

/// Validates `merged` into settings (with `sources` left empty), or returns every problem.
pub(super) fn settings(merged: &Merged) -> Result<Settings, Vec<Problem>> {
    let mut r = Reader::new(merged);
    let s = read_all(&mut r);
    r.report_unknown();
    if r.problems.is_empty() {
        Ok(s)
    } else {
        Err(r.problems)
    }
}

/// Every dotted key the readers know, for tests that keep docs and code in step.
#[cfg(test)]
pub(super) fn known_keys() -> BTreeSet<String> {
    let merged = Merged::default();
    let mut r = Reader::new(&merged);
    read_all(&mut r);
    r.known
        .into_iter()
        .flat_map(|(s, keys)| keys.into_iter().map(move |k| if k.is_empty() { s.to_owned() } else { format!("{s}.{k}") }))
        .collect()
}

fn read_all(r: &mut Reader<'_>) -> Settings {
    let mut s = Settings::default();

    let v = &mut s.server;
    if let Some(listen) = r.listen("server", "listen") {
        v.listen = listen;
    }
    if let Some(socket) = r.optional_path("server", "socket") {
        v.socket = socket;
    }
    if let Some(mode) = r.socket_mode("server", "socket_mode") {
        v.socket_mode = mode;
    }
    if let Some(group) = r.group("server", "socket_group") {
        v.socket_group = group;
    }
    if let Some(group) = r.group("server", "admin_group") {
        v.admin_group = group;
    }
    r.int("server", "max_body_bytes", 1 << 10..=64 << 20, &mut v.max_body_bytes);
    r.int("server", "max_header_bytes", 1 << 10..=1 << 20, &mut v.max_header_bytes);
    r.secs("server", "request_timeout_secs", 1..=3600, &mut v.request_timeout);
    r.secs("server", "idle_timeout_secs", 1..=3600, &mut v.idle_timeout);
    r.int("server", "max_connections", 1..=65536, &mut v.max_connections);
    r.int("server", "max_connections_per_client", 0..=65536, &mut v.max_connections_per_client);
    r.secs("server", "shutdown_grace_secs", 0..=600, &mut v.shutdown_grace);
    r.secs("server", "sse_ping_secs", 1..=300, &mut v.sse_ping_interval);
    r.secs("server", "slow_client_timeout_secs", 1..=600, &mut v.slow_client_timeout);
    r.int("server", "client_requests_per_minute", 0..=1_000_000, &mut v.client_requests_per_minute);
    r.int("server", "client_burst", 1..=100_000, &mut v.client_burst);
    r.int("server", "key_requests_per_minute", 0..=1_000_000, &mut v.key_requests_per_minute);
    r.int("server", "key_burst", 1..=100_000, &mut v.key_burst);
    if let Some(allow) = r.networks("server", "allow_clients") {
        v.allow_clients = allow;
    }
    v.tls = r.tls();

    if let Some(path) = r.required_path("store", "path") {
        s.store.path = path;
    }
    if let Some(sync) = r.one_of("store", "synchronous", &[Synchronous::Full, Synchronous::Normal], Synchronous::as_str) {
        s.store.synchronous = sync;
    }

    // Unset or "": `files/` next to the store, wherever the store is.
    s.files.dir = match r.optional_path("files", "dir").flatten() {
        Some(dir) => dir,
        None => s.store.path.parent().unwrap_or(std::path::Path::new("")).join("files"),
    };
    r.int("files", "max_file_bytes", 1..=1 << 30, &mut s.files.max_file_bytes);

    // Unset or "": `knowledge/` next to the store.
    s.knowledge.dir = match r.optional_path("knowledge", "dir").flatten() {
        Some(dir) => dir,
        None => s.store.path.parent().unwrap_or(std::path::Path::new("")).join("knowledge"),
    };
    r.int("knowledge", "max_file_bytes", 1..=1 << 30, &mut s.knowledge.max_file_bytes);
    r.int("knowledge", "max_text_chars", 1000..=100_000_000, &mut s.knowledge.max_text_chars);
    r.int("knowledge", "queue", 1..=10_000, &mut s.knowledge.queue);
    r.int("knowledge", "embed_batch", 1..=256, &mut s.knowledge.embed_batch);

    let m = &mut s.model;
    r.bool("model", "enabled", &mut m.enabled);
    if let Some(name) = r.model_name("model", "name") {
        m.name = name;
    }
    if let Some(path) = r.required_path("model", "path") {
        m.path = path;
    }
    r.int("model", "context_size", 512..=131_072, &mut m.context_size);
    if let Some(t) = r.one_of("model", "kv_type_k", &KvType::ALL, KvType::as_str) {
        m.kv_type_k = t;
    }
    if let Some(t) = r.one_of("model", "kv_type_v", &KvType::ALL, KvType::as_str) {
        m.kv_type_v = t;
    }
    r.int("model", "slots", 1..=16, &mut m.slots);
    let mut threads: u32 = 0;
    if r.int("model", "threads", 0..=256, &mut threads) {
        m.threads = (threads != 0).then_some(threads);
    }
    r.int("model", "batch_size", 32..=8192, &mut m.batch_size);
    let mut budget_ms: u64 = 0;
    if r.int("model", "step_budget_ms", 0..=10_000, &mut budget_ms) {
        m.step_budget = Duration::from_millis(budget_ms);
    }
    let mut save_secs: u64 = 0;
    if r.int("model", "prefix_save_secs", 0..=86_400, &mut save_secs) {
        m.prefix_save = Duration::from_secs(save_secs);
    }
    r.int("model", "queue_depth", 1..=1024, &mut m.queue_depth);
    r.bool("model", "mlock", &mut m.use_mlock);
    let a = &mut s.admission;
    let mut n: usize = 0;
    if r.int("admission", "max_concurrent_per_app", 0..=16, &mut n) {
        a.max_concurrent_per_app = (n != 0).then_some(n);
    }
    let mut n: usize = 0;
    if r.int("admission", "max_queued_per_app", 0..=1024, &mut n) {
        a.max_queued_per_app = (n != 0).then_some(n);
    }
    r.secs("model", "load_timeout_secs", 1..=86_400, &mut m.load_timeout);
    if let Some(t) = r.template_name("model", "chat_template") {
        m.chat_template = t;
    }

    let em = &mut s.embedding;
    r.bool("embedding", "enabled", &mut em.enabled);
    if let Some(path) = r.required_path("embedding", "path") {
        em.path = path;
    }
    let mut threads: u32 = 0;
    if r.int("embedding", "threads", 0..=256, &mut threads) {
        em.threads = (threads != 0).then_some(threads);
    }
    r.int("embedding", "batch_texts", 1..=64, &mut em.batch_texts);
    r.int("embedding", "max_tokens", 16..=2048, &mut em.max_tokens);
    if let Some(prefix) = r.string("embedding", "query_prefix") {
        em.query_prefix = prefix.to_owned();
    }
    if let Some(prefix) = r.string("embedding", "passage_prefix") {
        em.passage_prefix = prefix.to_owned();
    }
    r.int("embedding", "queue", 1..=1024, &mut em.queue);
    if let Some(model) = r.string("embedding", "upstream_model") {
        em.upstream_model = (!model.trim().is_empty()).then(|| model.trim().to_owned());
    }

    if let Some(level) = r.log_level("log", "level") {
        s.log.level = level;
    }
    if let Some(format) = r.one_of("log", "format", &[LogFormat::Auto, LogFormat::Text, LogFormat::Json], LogFormat::as_str) {
        s.log.format = format;
    }

    let cache = &mut s.cache;
    r.bool("cache", "enabled", &mut cache.enabled);
    let mut max_bytes: u64 = 0;
    if r.int("cache", "max_bytes", 0..=1 << 32, &mut max_bytes) {
        if (1..1024).contains(&max_bytes) {
            r.problem("cache.max_bytes", format!("must be 0 (derived from the memory limit) or at least 1024, found {max_bytes}"));
        } else {
            cache.max_bytes = max_bytes;
        }
    }
    r.secs("cache", "ttl_secs", 1..=31_536_000, &mut cache.ttl);
    r.bool("cache", "persist", &mut cache.persist);
    s.cache.apps = r.cache_apps();

    if let Some(bus) = r.string("control", "bus") {
        match bus {
            "system" => s.control.bus = super::BusChoice::System,
            "session" => s.control.bus = super::BusChoice::Session,
            "off" => s.control.bus = super::BusChoice::Off,
            a if a.contains(':') && a.contains('=') => s.control.bus = super::BusChoice::Address(a.to_owned()),
            other => r.problem(
                "control.bus",
                format!("{other:?} is not \"system\", \"session\", \"off\" or a D-Bus address such as \"unix:path=/run/bus\""),
            ),
        }
    }
    r.bool("metrics", "enabled", &mut s.metrics.enabled);
    r.bool("metrics", "tcp", &mut s.metrics.tcp);

    if let Some(file) = r.optional_path("dev", "demo_key_file") {
        s.dev.demo_key_file = file;
    }
    if let Some(dir) = r.optional_path("dev", "demo_dataset_dir") {
        s.dev.demo_dataset_dir = dir;
    }
    if let Some(file) = r.optional_path("dev", "demo_rag_app") {
        s.dev.demo_rag_app = file;
    }
    if let Some(file) = r.optional_path("dev", "demo_rag_key_file") {
        s.dev.demo_rag_key_file = file;
    }

    let c = &mut s.code;
    match r.string("code", "python") {
        None => {}
        Some("auto") => c.python = PythonChoice::Auto,
        Some("off") => c.python = PythonChoice::Off,
        Some("") => r.problem("code.python", "must be \"auto\", \"off\" or the path of a python3"),
        Some(_) => {
            if let Some(Some(path)) = r.optional_path("code", "python") {
                c.python = PythonChoice::Path(path);
            }
        }
    }
    r.int("code", "python_pool", 0..=16, &mut c.python_pool);
    r.int("code", "max_concurrent", 1..=64, &mut c.max_concurrent);
    r.secs("code", "timeout_secs", 1..=3600, &mut c.timeout);
    r.secs("code", "max_timeout_secs", 1..=3600, &mut c.max_timeout);
    r.int("code", "memory_mb", 16..=65_536, &mut c.memory_mb);
    r.int("code", "max_memory_mb", 16..=65_536, &mut c.max_memory_mb);
    r.int("code", "max_output_bytes", 1 << 10..=64 << 20, &mut c.max_output_bytes);
    c.scratch_dir = match r.optional_path("code", "scratch_dir").flatten() {
        Some(dir) => dir,
        None => s.store.path.parent().unwrap_or(std::path::Path::new("")).join("code-scratch"),
    };
    if c.timeout > c.max_timeout {
        r.problem("code.timeout_secs", format!("{}s is above code.max_timeout_secs ({}s)", c.timeout.as_secs(), c.max_timeout.as_secs()));
    }
    if c.memory_mb > c.max_memory_mb {
        r.problem("code.memory_mb", format!("{} is above code.max_memory_mb ({})", c.memory_mb, c.max_memory_mb));
    }

    let w = &mut s.workflow.limits;
    r.int("workflow", "max_steps", 1..=100_000, &mut w.max_steps);
    r.secs("workflow", "node_timeout_secs", 1..=86_400, &mut w.node_timeout);
    r.secs("workflow", "run_timeout_secs", 1..=86_400, &mut w.run_timeout);
    r.int("workflow", "max_parallel", 1..=64, &mut w.max_parallel);
    r.int("workflow", "max_iterations", 1..=100_000, &mut w.max_iterations);
    r.int("workflow", "http_max_response_bytes", 1 << 10..=64 << 20, &mut w.http_max_response_bytes);
    let run_timeout_set = r.raw("workflow", "run_timeout_secs").is_some();
    if w.run_timeout > s.server.request_timeout && !run_timeout_set {
        // The default never outlasts the HTTP request that waits for the run.
        w.run_timeout = s.server.request_timeout;
        if r.raw("workflow", "node_timeout_secs").is_none() {
            w.node_timeout = w.node_timeout.min(w.run_timeout);
        }
    } else if w.run_timeout > s.server.request_timeout {
        let message = format!(
            "{}s is longer than server.request_timeout_secs ({}s): a run's own limit must end it (recorded as failed) before the HTTP request's does",
            w.run_timeout.as_secs(),
            s.server.request_timeout.as_secs()
        );
        r.problem("workflow.run_timeout_secs", message);
    }
    if w.node_timeout > w.run_timeout {
        let message = format!("{}s is longer than workflow.run_timeout_secs ({}s)", w.node_timeout.as_secs(), w.run_timeout.as_secs());
        r.problem("workflow.node_timeout_secs", message);
    }
    if let Some(allow) = r.http_allow("workflow", "http_allow") {
        s.workflow.http_allow = allow;
    }

    let u = &mut s.upstream;
    if let Some(url) = r.upstream_url("upstream", "url") {
        u.url = url;
    }
    if let Some(model) = r.string("upstream", "model") {
        u.model = (!model.is_empty()).then(|| model.to_owned());
    }
    let key = r.api_key("upstream", "api_key");
    let key_file = r.optional_path("upstream", "api_key_file");
    match (key, key_file) {
        (Some(Some(_)), Some(Some(_))) => {
            r.problem("upstream.api_key_file", "set either upstream.api_key or upstream.api_key_file, not both");
        }
        (key, file) => {
            u.api_key = key.flatten();
            u.api_key_file = file.flatten();
        }
    }
    r.secs("upstream", "connect_timeout_secs", 1..=300, &mut u.connect_timeout);
    r.secs("upstream", "read_timeout_secs", 1..=3600, &mut u.read_timeout);
    r.int("upstream", "retries", 0..=10, &mut u.retries);
    let mut backoff_ms: u64 = 0;
    if r.int("upstream", "retry_backoff_ms", 0..=60_000, &mut backoff_ms) {
        u.retry_backoff = Duration::from_millis(backoff_ms);
    }
    r.int("upstream", "breaker_failures", 1..=1000, &mut u.breaker_failures);
    r.secs("upstream", "breaker_cooldown_secs", 1..=3600, &mut u.breaker_cooldown);
    r.bool("upstream", "fallback_local", &mut u.fallback_local);

    s.model_map = r.model_map(s.upstream.url.is_some());
    s.model_map.upstream_model = s.upstream.model.clone();

    s.apps = r.apps();

    r.int("audit", "max_rows", 100..=10_000_000, &mut s.audit.max_rows);
    r.int("audit", "auth_failures_per_minute", 1..=100_000, &mut s.audit.auth_failures_per_minute);
    s.auth.jwt = r.jwt_issuers();

    r.bool("update", "enabled", &mut s.update.enabled);
    // Unset or "": the directory of the store, wherever the store is.
    s.update.dir = match r.optional_path("update", "dir").flatten() {
        Some(dir) => dir,
        None => s.store.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).to_path_buf(),
    };
    r.int("update", "max_attempts", 1..=10, &mut s.update.max_attempts);
    r.secs("update", "commit_after_secs", 1..=86_400, &mut s.update.commit_after);
    if let Some(dir) = r.optional_path("update", "trust_dir").flatten() {
        s.update.trust_dir = dir;
    }
    match r.string("update", "compatible") {
        // "": the default, "edgeai-<arch>".
        Some("") | None => {}
        Some(c) if c.trim().is_empty() || c.len() > 255 => {
            r.problem("update.compatible", "must be 1 to 255 characters (a bundle's compatible string must equal it)")
        }
        Some(c) => s.update.compatible = c.to_owned(),
    }
    r.int("update", "max_bundle_bytes", 1 << 20..=1 << 40, &mut s.update.max_bundle_bytes);
    if let Some(ca) = r.optional_path("update", "ca_file").flatten() {
        s.update.ca_file = ca;
    }
    s
}

struct Reader<'a> {
    merged: &'a Merged,
    problems: Vec<Problem>,
    /// Section -> keys read in it; a key `""` marks a top-level key that is not a section.
    known: BTreeMap<&'static str, BTreeSet<&'static str>>,
    /// Sections whose other keys are data, not settings (`[model_map]`),
    /// checked by their own reader instead of reported as unknown.
    open: BTreeSet<&'static str>,
}

impl<'a> Reader<'a> {
    fn new(merged: &'a Merged) -> Self {
        Reader { merged, problems: Vec::new(), known: BTreeMap::new(), open: BTreeSet::new() }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let file = self.merged.origin(key).map(|l| l.path.clone());
        self.problems.push(Problem { file, key: key.to_owned(), message: message.into() });
    }

    /// The value of `section.key` if set (registering the key as known).
    fn raw(&mut self, section: &'static str, key: &'static str) -> Option<&'a toml::Value> {
        self.known.entry(section).or_default().insert(key);
        match self.merged.table.get(section)? {
            toml::Value::Table(t) => t.get(key),
            // Reported once by `report_unknown`.
            _ => None,
        }
    }

    fn string(&mut self, section: &'static str, key: &'static str) -> Option<&'a str> {
        match self.raw(section, key)? {
            toml::Value::String(s) => Some(s),
            other => {
                self.problem(&format!("{section}.{key}"), format!("expected a string, found {}", describe(other)));
                None
            }
        }
    }

    /// Reads an integer in `range` into `out`; true when `out` was set.
    fn int<T: TryFrom<i64>>(&mut self, section: &'static str, key: &'static str, range: RangeInclusive<i64>, out: &mut T) -> bool {
        let Some(v) = self.raw(section, key) else { return false };
        let dotted = format!("{section}.{key}");
        let toml::Value::Integer(i) = v else {
            self.problem(&dotted, format!("expected an integer, found {}", describe(v)));
            return false;
        };
        match T::try_from(*i) {
            Ok(value) if range.contains(i) => {
                *out = value;
                true
            }
            _ => {
                self.problem(&dotted, format!("must be between {} and {}, found {i}", range.start(), range.end()));
                false
            }
        }
    }

    fn secs(&mut self, section: &'static str, key: &'static str, range: RangeInclusive<i64>, out: &mut Duration) {
        let mut secs: u64 = 0;
        if self.int(section, key, range, &mut secs) {
            *out = Duration::from_secs(secs);
        }
    }

    fn bool(&mut self, section: &'static str, key: &'static str, out: &mut bool) {
        match self.raw(section, key) {
            None => {}
            Some(toml::Value::Boolean(b)) => *out = *b,
            Some(other) => self.problem(&format!("{section}.{key}"), format!("expected true or false, found {}", describe(other))),
        }
    }

    /// A path resolved against the directory of the file that set it; `""` is `Some(None)`.
    fn optional_path(&mut self, section: &'static str, key: &'static str) -> Option<Option<PathBuf>> {
        let s = self.string(section, key)?;
        if s.is_empty() {
            return Some(None);
        }
        let path = PathBuf::from(s);
        if path.is_absolute() {
            return Some(Some(path));
        }
        let dir = self.merged.origin(&format!("{section}.{key}")).map(|l| l.dir.clone());
        Some(Some(match dir {
            Some(d) => d.join(path),
            None => path,
        }))
    }

    fn required_path(&mut self, section: &'static str, key: &'static str) -> Option<PathBuf> {
        match self.optional_path(section, key)? {
            Some(p) => Some(p),
            None => {
                self.problem(&format!("{section}.{key}"), "must not be empty");
                None
            }
        }
    }

    fn listen(&mut self, section: &'static str, key: &'static str) -> Option<Option<SocketAddr>> {
        let s = self.string(section, key)?;
        if s.is_empty() {
            return Some(None);
        }
        match s.parse::<SocketAddr>() {
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                self.problem(
                    &format!("{section}.{key}"),
                    format!("{s:?} is not IP:PORT (such as \"127.0.0.1:5001\" or \"[::1]:5001\"); \"\" disables TCP"),
                );
                None
            }
        }
    }

    fn socket_mode(&mut self, section: &'static str, key: &'static str) -> Option<u32> {
        let dotted = format!("{section}.{key}");
        let s = match self.raw(section, key)? {
            toml::Value::String(s) => s,
            other => {
                self.problem(&dotted, format!("expected a string of octal digits such as \"0660\", found {}", describe(other)));
                return None;
            }
        };
        parse_mode(s).map_err(|message| self.problem(&dotted, message)).ok()
    }

    fn group(&mut self, section: &'static str, key: &'static str) -> Option<Option<String>> {
        let s = self.string(section, key)?;
        if s.is_empty() {
            return Some(None);
        }
        if s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/') {
            self.problem(&format!("{section}.{key}"), format!("{s:?} is not a valid group name"));
            return None;
        }
        Some(Some(s.to_owned()))
    }

    fn model_name(&mut self, section: &'static str, key: &'static str) -> Option<String> {
        let s = self.string(section, key)?;
        let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !ok {
            self.problem(
                &format!("{section}.{key}"),
                format!("{s:?} must be non-empty and contain only A-Z, a-z, 0-9, '.', '_', ':' and '-'"),
            );
            return None;
        }
        Some(s.to_owned())
    }

    /// A llama.cpp built-in template name ("gemma", "chatml", "llama3", ...);
    /// "" means none. Whether llama.cpp knows the name is checked at model
    /// load (the list lives in llama.cpp).
    fn template_name(&mut self, section: &'static str, key: &'static str) -> Option<Option<String>> {
        let s = self.string(section, key)?;
        if s.is_empty() {
            return Some(None);
        }
        if s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            self.problem(
                &format!("{section}.{key}"),
                format!("{s:?} must be a llama.cpp template name (such as \"gemma\" or \"chatml\"): A-Z, a-z, 0-9, '.', '_', '-', at most 64 characters"),
            );
            return None;
        }
        Some(Some(s.to_owned()))
    }

    fn log_level(&mut self, section: &'static str, key: &'static str) -> Option<String> {
        let s = self.string(section, key)?;
        if let Err(message) = check_log_level(s) {
            self.problem(&format!("{section}.{key}"), message);
            return None;
        }
        Some(s.to_owned())
    }

    /// A string that must name one of `all` (by `name`).
    fn one_of<T: Copy>(&mut self, section: &'static str, key: &'static str, all: &[T], name: fn(T) -> &'static str) -> Option<T> {
        let s = self.string(section, key)?;
        let found = all.iter().copied().find(|&t| name(t) == s);
        if found.is_none() {
            let names: Vec<String> = all.iter().map(|&t| format!("{:?}", name(t))).collect();
            self.problem(&format!("{section}.{key}"), format!("{s:?} is not one of {}", names.join(", ")));
        }
        found
    }

    /// `server.allow_clients`: an array of address blocks (`10.20.0.0/16`,
    /// `::1/128`; a bare address is a block of one).
    fn networks(&mut self, section: &'static str, key: &'static str) -> Option<Vec<ipnet::IpNet>> {
        self.list(section, key, "an array of address blocks such as \"10.20.0.0/16\"", parse_network)
    }

    /// `workflow.http_allow`: an array of host patterns and CIDRs.
    fn http_allow(&mut self, section: &'static str, key: &'static str) -> Option<Vec<String>> {
        self.list(section, key, "an array of strings", |s| crate::service::outbound::Rule::parse(s).map(|_| s.to_owned()))
    }

    /// An array of strings, each through `parse`; every bad entry is a
    /// problem named `section.key[i]`, and then there is no value.
    fn list<T>(
        &mut self,
        section: &'static str,
        key: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let dotted = format!("{section}.{key}");
        let v = self.raw(section, key)?;
        let Some(list) = v.as_array() else {
            self.problem(&dotted, format!("expected {expected}, found {}", describe(v)));
            return None;
        };
        let mut out = Vec::new();
        let before = self.problems.len();
        for (i, item) in list.iter().enumerate() {
            let at = format!("{dotted}[{i}]");
            match item {
                toml::Value::String(s) => match parse(s) {
                    Ok(x) => out.push(x),
                    Err(message) => self.problem(&at, message),
                },
                other => self.problem(&at, format!("expected a string, found {}", describe(other))),
            }
        }
        (self.problems.len() == before).then_some(out)
    }

    /// `upstream.url`: `http://host[:port][/path]`, stored without a
    /// trailing `/`; `""` is `Some(None)`.
    fn upstream_url(&mut self, section: &'static str, key: &'static str) -> Option<Option<String>> {
        let s = self.string(section, key)?;
        if s.is_empty() {
            return Some(None);
        }
        let dotted = format!("{section}.{key}");
        if s.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://")) {
            self.problem(&dotted, format!("{s:?}: https is not supported in this build; use an http:// URL (a local proxy can add TLS)"));
            return None;
        }
        let ok = match s.parse::<http::Uri>() {
            Ok(uri) => {
                uri.scheme_str() == Some("http") && uri.host().is_some_and(|h| !h.is_empty()) && uri.query().is_none() && !s.contains('@')
            }
            Err(_) => false,
        };
        if !ok {
            self.problem(&dotted, format!("{s:?} is not an http:// URL such as \"http://10.0.0.5:8000/v1\" (no user, no query)"));
            return None;
        }
        Some(Some(s.trim_end_matches('/').to_owned()))
    }

    /// `upstream.api_key`: `""` is `Some(None)`; only visible ASCII, as a header allows.
    fn api_key(&mut self, section: &'static str, key: &'static str) -> Option<Option<super::Secret>> {
        let s = self.string(section, key)?;
        if s.is_empty() {
            return Some(None);
        }
        if let Err(message) = check_api_key(s) {
            self.problem(&format!("{section}.{key}"), message);
            return None;
        }
        Some(Some(super::Secret::new(s.to_owned())))
    }

    /// `[model_map]`: `default` and `"provider/name"` keys, each `"local"`,
    /// `"upstream"` or `"upstream:<model name>"`. Upstream targets need
    /// `upstream.url`.
    fn model_map(&mut self, has_upstream: bool) -> super::ModelMap {
        self.known.entry(MODEL_MAP).or_default().insert("default");
        self.open.insert(MODEL_MAP);
        let mut map = super::ModelMap::default();
        let Some(value) = self.merged.table.get(MODEL_MAP) else { return map };
        // Not a table: reported once by `report_unknown`.
        let Some(table) = value.as_table() else { return map };
        for (name, value) in table {
            let at = format!("{MODEL_MAP}.{name}");
            let entry = match value {
                toml::Value::String(s) => MapEntry::parse(s),
                other => Err(format!("expected \"local\", \"upstream\" or \"upstream:<model name>\", found {}", describe(other))),
            };
            let entry = match entry {
                Ok(entry) => entry,
                Err(message) => {
                    self.problem(&at, message);
                    continue;
                }
            };
            if matches!(entry, MapEntry::Upstream(_)) && !has_upstream {
                self.problem(&at, "maps to the upstream runtime, but upstream.url is not set");
                continue;
            }
            if name == "default" {
                map.default = entry;
            } else if name.split('/').count() < 2 || name.split('/').any(str::is_empty) {
                self.problem(&at, format!("{name:?} is not a DSL model as \"provider/name\" (such as \"openai/gpt-4o-mini\")"));
            } else {
                map.entries.insert(name.clone(), entry);
            }
        }
        map
    }

    /// `[server.tls]`: `cert_file` and `key_file` (both needed), optional
    /// `client_ca_file` and `min_version`; empty or absent: no TLS. Paths resolve like other paths;
    /// the files themselves are read by `config::finish`.
    fn tls(&mut self) -> Option<super::TlsSettings> {
        const KEYS: [&str; 4] = ["cert_file", "key_file", "client_ca_file", "min_version"];
        let value = self.raw("server", "tls")?;
        let Some(table) = value.as_table() else {
            self.problem("server.tls", format!("expected a table ([server.tls]), found {}", describe(value)));
            return None;
        };
        // An empty table (as in configs/reference.toml) is TLS off, like none.
        if table.is_empty() {
            return None;
        }
        let before = self.problems.len();
        let path = |r: &mut Self, key: &str| -> Option<PathBuf> {
            let at = format!("server.tls.{key}");
            match table.get(key) {
                None => None,
                Some(toml::Value::String(s)) if s.is_empty() => None,
                Some(toml::Value::String(s)) => {
                    let p = PathBuf::from(s);
                    let dir = if p.is_absolute() { None } else { r.merged.origin(&at).map(|l| l.dir.clone()) };
                    Some(match dir {
                        Some(d) => d.join(p),
                        None => p,
                    })
                }
                Some(other) => {
                    r.problem(&at, format!("expected a path, found {}", describe(other)));
                    None
                }
            }
        };
        let cert_file = path(self, "cert_file");
        let key_file = path(self, "key_file");
        let client_ca_file = path(self, "client_ca_file");
        let min_version = match table.get("min_version") {
            None => Some(super::TlsVersion::V1_2),
            Some(v) => {
                let found = v.as_str().and_then(|s| super::TlsVersion::ALL.into_iter().find(|t| t.as_str() == s));
                if found.is_none() {
                    self.problem("server.tls.min_version", format!("expected \"1.2\" or \"1.3\", found {}", describe(v)));
                }
                found
            }
        };
        for key in table.keys().filter(|k| !KEYS.contains(&k.as_str())) {
            let hint = suggestion(key, KEYS.into_iter(), "server.tls");
            self.problem(&format!("server.tls.{key}"), format!("unknown key{hint}"));
        }
        for (key, set) in [("cert_file", cert_file.is_some()), ("key_file", key_file.is_some())] {
            if !set && table.get(key).is_none_or(toml::Value::is_str) {
                self.problem(&format!("server.tls.{key}"), "must be set when [server.tls] is present (a PEM file)");
            }
        }
        match (cert_file, key_file, min_version) {
            (Some(cert_file), Some(key_file), Some(min_version)) if self.problems.len() == before => {
                Some(super::TlsSettings { cert_file, key_file, client_ca_file, min_version })
            }
            _ => None,
        }
    }

    /// `[cache.apps.<app id>]`: `always = bool`, `semantic_threshold` in (0, 1].
    fn cache_apps(&mut self) -> BTreeMap<String, super::AppCacheSettings> {
        let mut out = BTreeMap::new();
        let Some(value) = self.raw("cache", "apps") else { return out };
        let Some(table) = value.as_table() else {
            self.problem("cache.apps", format!("expected a table of apps ([cache.apps.<app id>]), found {}", describe(value)));
            return out;
        };
        for (id, v) in table {
            let at = format!("cache.apps.{id}");
            let Some(t) = v.as_table() else {
                self.problem(&at, format!("expected a table ([{at}]), found {}", describe(v)));
                continue;
            };
            let mut app = super::AppCacheSettings::default();
            for (k, v) in t {
                match (k.as_str(), v) {
                    ("always", toml::Value::Boolean(b)) => app.always = *b,
                    ("always", other) => {
                        self.problem(&format!("{at}.always"), format!("expected true or false, found {}", describe(other)))
                    }
                    ("semantic_threshold", v) => match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
                        Some(t) if t > 0.0 && t <= 1.0 => app.semantic_threshold = Some(t as f32),
                        _ => self.problem(
                            &format!("{at}.semantic_threshold"),
                            format!("must be a number above 0 and at most 1 (a cosine similarity), found {}", describe(v)),
                        ),
                    },
                    (other, _) => {
                        let hint = suggestion(other, ["always", "semantic_threshold"].into_iter(), &at);
                        self.problem(&format!("{at}.{other}"), format!("unknown key{hint}"));
                    }
                }
            }
            out.insert(id.clone(), app);
        }
        out
    }

    /// `[[auth.jwt]]`: each issuer with exactly one key source; HS256 only
    /// with `allow_hs256 = true` and a `secret_file`, never beside public-key
    /// algorithms (key confusion). Issuers must be unique. No file is read
    /// here: `api::jwt` loads the keys at start.
    fn jwt_issuers(&mut self) -> Vec<super::JwtIssuer> {
        const KEYS: [&str; 10] = [
            "issuer",
            "audience",
            "public_key_file",
            "jwks_file",
            "algorithms",
            "app_claim",
            "user_claim",
            "leeway_secs",
            "allow_hs256",
            "secret_file",
        ];
        let Some(value) = self.raw("auth", "jwt") else { return Vec::new() };
        let Some(list) = value.as_array() else {
            self.problem("auth.jwt", format!("expected an array of tables ([[auth.jwt]]), found {}", describe(value)));
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, v) in list.iter().enumerate() {
            let at = format!("auth.jwt[{i}]");
            let Some(t) = v.as_table() else {
                self.problem(&at, format!("expected a table ([[auth.jwt]]), found {}", describe(v)));
                continue;
            };
            let before = self.problems.len();
            for k in t.keys().filter(|k| !KEYS.contains(&k.as_str())) {
                let hint = suggestion(k, KEYS.into_iter(), &at);
                self.problem(&format!("{at}.{k}"), format!("unknown key{hint}"));
            }
            let issuer = self.jwt_text(t, &at, "issuer", None);
            let audience = self.jwt_text(t, &at, "audience", None);
            let app_claim = self.jwt_text(t, &at, "app_claim", Some("app"));
            let user_claim = self.jwt_text(t, &at, "user_claim", Some("sub"));
            let mut leeway: u64 = 60;
            match t.get("leeway_secs") {
                None => {}
                Some(toml::Value::Integer(n)) if (0..=600).contains(n) => leeway = n.unsigned_abs(),
                Some(other) => {
                    self.problem(&format!("{at}.leeway_secs"), format!("must be an integer between 0 and 600, found {}", describe(other)))
                }
            }
            let allow_hs256 = match t.get("allow_hs256") {
                None => false,
                Some(toml::Value::Boolean(b)) => *b,
                Some(other) => {
                    self.problem(&format!("{at}.allow_hs256"), format!("expected true or false, found {}", describe(other)));
                    false
                }
            };
            let algorithms = self.jwt_algorithms(t, &at);
            let path = |r: &mut Self, key: &str| -> Option<PathBuf> {
                match t.get(key)? {
                    toml::Value::String(p) if !p.is_empty() => {
                        let p = PathBuf::from(p);
                        let dir = r.merged.origin(&format!("{at}.{key}")).map(|l| l.dir.clone());
                        Some(match dir {
                            Some(d) if p.is_relative() => d.join(p),
                            _ => p,
                        })
                    }
                    other => {
                        r.problem(&format!("{at}.{key}"), format!("expected the path of a file, found {}", describe(other)));
                        None
                    }
                }
            };
            let sources = [
                path(self, "public_key_file").map(super::JwtKeySource::PublicKey),
                path(self, "jwks_file").map(super::JwtKeySource::Jwks),
                path(self, "secret_file").map(super::JwtKeySource::Secret),
            ];
            let mut sources = sources.into_iter().flatten();
            let keys = match (sources.next(), sources.next()) {
                (Some(k), None) => Some(k),
                (None, _) => {
                    self.problem(&at, "needs public_key_file or jwks_file (or secret_file with allow_hs256 = true)");
                    None
                }
                (Some(_), Some(_)) => {
                    self.problem(&at, "set only one of public_key_file, jwks_file and secret_file");
                    None
                }
            };
            let hs256 = algorithms.iter().flatten().any(|a| a == "HS256");
            match (&keys, hs256) {
                (Some(super::JwtKeySource::Secret(_)), _) if !allow_hs256 => self.problem(
                    &format!("{at}.secret_file"),
                    "HS256 shared secrets are refused unless allow_hs256 = true (prefer EdDSA, RS256 or ES256 public keys)",
                ),
                (_, true) if !allow_hs256 => self.problem(
                    &format!("{at}.algorithms"),
                    "HS256 is refused unless allow_hs256 = true (prefer EdDSA, RS256 or ES256 public keys)",
                ),
                (Some(super::JwtKeySource::Secret(_)), _) if algorithms.iter().flatten().any(|a| a != "HS256") => {
                    self.problem(&format!("{at}.algorithms"), "a secret_file issuer accepts only HS256")
                }
                (Some(super::JwtKeySource::Secret(_)), _) | (None, _) => {}
                (Some(_), true) => self.problem(
                    &format!("{at}.algorithms"),
                    "HS256 needs secret_file: a public key used as an HMAC secret is the key-confusion attack",
                ),
                (Some(_), false) => {}
            }
            if let Some(iss) = &issuer {
                if !seen.insert(iss.clone()) {
                    self.problem(&format!("{at}.issuer"), format!("issuer {iss:?} is configured twice"));
                }
            }
            if let (Some(issuer), Some(audience), Some(keys), Some(algorithms), Some(app_claim), Some(user_claim), true) =
                (issuer, audience, keys, algorithms, app_claim, user_claim, self.problems.len() == before)
            {
                out.push(super::JwtIssuer {
                    issuer,
                    audience,
                    keys,
                    algorithms,
                    app_claim,
                    user_claim,
                    leeway: Duration::from_secs(leeway),
                });
            }
        }
        out
    }

    /// A non-empty string of an `[[auth.jwt]]` table; `default` when unset
    /// (`None`: required).
    fn jwt_text(&mut self, t: &toml::Table, at: &str, key: &str, default: Option<&str>) -> Option<String> {
        match (t.get(key), default) {
            (None, Some(d)) => Some(d.to_owned()),
            (None, None) => {
                self.problem(&format!("{at}.{key}"), "is required");
                None
            }
            (Some(toml::Value::String(s)), _) if !s.trim().is_empty() => Some(s.clone()),
            (Some(other), _) => {
                self.problem(&format!("{at}.{key}"), format!("expected a non-empty string, found {}", describe(other)));
                None
            }
        }
    }

    /// `[[auth.jwt]].algorithms`: a non-empty array of known `alg` names.
    fn jwt_algorithms(&mut self, t: &toml::Table, at: &str) -> Option<Vec<String>> {
        let key = format!("{at}.algorithms");
        let Some(v) = t.get("algorithms") else {
            self.problem(&key, "is required (for example [\"EdDSA\"])");
            return None;
        };
        let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
            self.problem(&key, format!("expected a non-empty array of algorithm names, found {}", describe(v)));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in list.iter().enumerate() {
            match item.as_str() {
                Some(a) if super::JWT_ALGORITHMS.contains(&a) => out.push(a.to_owned()),
                Some(a) if a.eq_ignore_ascii_case("none") => {
                    self.problem(&format!("{key}[{i}]"), "\"none\" (unsigned tokens) is never accepted")
                }
                _ => self.problem(
                    &format!("{key}[{i}]"),
                    format!("expected one of {}, found {}", super::JWT_ALGORITHMS.join(", "), describe(item)),
                ),
            }
        }
        (out.len() == list.len()).then_some(out)
    }

    /// `[[apps]]`: each deserialised and validated; ids must be unique.
    fn apps(&mut self) -> Vec<AppDefinition> {
        self.known.entry(APPS).or_default().insert("");
        let list = match self.merged.table.get(APPS) {
            None => return Vec::new(),
            Some(toml::Value::Array(list)) => list,
            Some(other) => {
                self.problem(APPS, format!("expected an array of tables ([[apps]]), found {}", describe(other)));
                return Vec::new();
            }
        };
        let mut apps = Vec::new();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for (i, value) in list.iter().enumerate() {
            let at = format!("{APPS}[{i}]");
            if !value.is_table() {
                self.problem(&at, format!("expected a table ([[apps]]), found {}", describe(value)));
                continue;
            }
            let app: AppDefinition = match serde_path_to_error::deserialize(value.clone()) {
                Ok(app) => app,
                Err(e) => {
                    // The crate writes the value itself as ".".
                    let key = match e.path().to_string() {
                        path if path == "." => at,
                        path => format!("{at}.{path}"),
                    };
                    let message = e.inner().message().to_owned();
                    let message = match value_at(value, e.path()) {
                        // toml's enum deserializer names neither the value found nor the shapes accepted.
                        Some(found) if message.starts_with("invalid type: unit variant") => {
                            format!("expected a string or a table with exactly one key, found {}", describe(found))
                        }
                        _ => message,
                    };
                    self.problem(&key, message);
                    continue;
                }
            };
            for p in app.validate() {
                self.problem(&format!("{at}.{}", p.field), p.message);
            }
            if let Some(first) = ids.insert(app.id.clone(), i) {
                self.problem(&format!("{at}.id"), format!("duplicate app id {:?} (also {APPS}[{first}].id)", app.id));
            }
            apps.push(app);
        }
        apps
    }

    /// Reports every key no reader asked for, and sections that are not tables.
    fn report_unknown(&mut self) {
        let merged = self.merged;
        let sections: Vec<&'static str> = self.known.keys().copied().collect();
        for (name, value) in &merged.table {
            let Some(keys) = self.known.get(name.as_str()).cloned() else {
                let hint = suggestion(name, sections.iter().copied(), "");
                self.problem(name, format!("unknown key{hint}"));
                continue;
            };
            if keys.contains("") || (self.open.contains(name.as_str()) && value.is_table()) {
                continue;
            }
            let toml::Value::Table(table) = value else {
                self.problem(name, format!("expected a table ([{name}]), found {}", describe(value)));
                continue;
            };
            for key in table.keys() {
                if !keys.contains(key.as_str()) {
                    let hint = suggestion(key, keys.iter().copied(), name);
                    self.problem(&format!("{name}.{key}"), format!("unknown key{hint}"));
                }
            }
        }
    }
}

/// `"; did you mean `section.key`?"` for the closest candidate, or `""`.
fn suggestion<'k>(given: &str, candidates: impl Iterator<Item = &'k str>, section: &str) -> String {
    let best = candidates
        .map(|c| (strsim::levenshtein(given, c), c))
        .filter(|(d, c)| *d <= (given.len().max(c.len()) / 3).max(1) || c.starts_with(given) || given.starts_with(*c))
        .min();
    match best {
        Some((_, c)) if section.is_empty() => format!("; did you mean `{c}`?"),
        Some((_, c)) => format!("; did you mean `{section}.{c}`?"),
        None => String::new(),
    }
}

/// The part of `value` that `path` (from serde_path_to_error) points at.
fn value_at<'v>(value: &'v toml::Value, path: &serde_path_to_error::Path) -> Option<&'v toml::Value> {
    path.iter().try_fold(value, |v, segment| match segment {
        Segment::Seq { index } => v.as_array()?.get(*index),
        Segment::Map { key } | Segment::Enum { variant: key } => v.as_table()?.get(key),
        Segment::Unknown => None,
    })
}

/// A socket mode: 1 to 4 octal digits, at most 0777, not world-writable.
fn parse_mode(s: &str) -> Result<u32, String> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("{s:?} is not a mode of 1 to 4 octal digits such as \"0660\""));
    }
    let mode = u32::from_str_radix(s, 8).map_err(|e| format!("{s:?} is not an octal mode: {e}"))?;
    if mode > 0o777 {
        return Err(format!("{s:?} sets bits above 0777 (setuid, setgid or sticky)"));
    }
    if mode & 0o002 != 0 {
        return Err(format!("{s:?} makes the socket world-writable; grant access through server.socket_group instead (\"0660\")"));
    }
    Ok(mode)
}

/// An API key is sent as `Authorization: Bearer KEY`: visible ASCII only.
pub(super) fn check_api_key(s: &str) -> Result<(), String> {
    if s.len() > 4096 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be at most 4096 visible ASCII characters (no spaces or line breaks)".to_owned());
    }
    Ok(())
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Accepts a level or comma-separated `target=level` directives (a subset of
/// tracing's `EnvFilter` syntax).
fn check_log_level(s: &str) -> Result<(), String> {
    let is_level = |l: &str| LEVELS.iter().any(|v| v.eq_ignore_ascii_case(l));
    let expected = "expected a level (trace, debug, info, warn, error, off) or comma-separated target=level directives";
    if s.trim().is_empty() {
        return Err(format!("must not be empty; {expected}"));
    }
    for directive in s.split(',').map(str::trim) {
        let ok = match directive.split_once('=') {
            None => is_level(directive),
            Some((target, level)) => {
                !target.is_empty()
                    && target.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'))
                    && is_level(level)
            }
        };
        if !ok {
            let place = if directive == s.trim() { String::new() } else { format!(" in {s:?}") };
            return Err(format!("{directive:?}{place}: {expected}"));
        }
    }
    Ok(())
}

/// A value as named in messages: `string "x"`, `integer 5`, `a table`.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer {i}"),
        toml::Value::Float(f) => format!("float {f}"),
        toml::Value::Boolean(b) => format!("boolean {b}"),
        toml::Value::Datetime(d) => format!("datetime {d}"),
        toml::Value::Array(_) => "an array".to_owned(),
        toml::Value::Table(_) => "a table".to_owned(),
    }
}

/// One entry of `server.allow_clients`: `ADDRESS/PREFIX`, or a bare address
/// (a block of one). Host bits after the prefix are refused: `10.20.1.0/16`
/// is more likely a typo than a wish.
fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(addr) = s.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(addr));
    }
    let net: ipnet::IpNet =
        s.parse().map_err(|_| format!("{s:?} is not an address block (ADDRESS/PREFIX, such as \"10.20.0.0/16\" or \"::1/128\")"))?;
    if net.trunc() != net {
        return Err(format!("{s:?} has bits set after the prefix; did you mean \"{}\"?", net.trunc()));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_reject() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0"), Ok(0));
        for bad in ["", "0666", "0777", "abc", "0o660", "01660", "0888", "06600"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn log_levels_follow_envfilter_subset() {
        for good in ["info", "WARN", "off", "warn,edgeaid=debug", "edgeaid::server=trace, hyper=warn"] {
            assert_eq!(check_log_level(good), Ok(()), "{good}");
        }
        for bad in ["", "loud", "edgeaid=", "=debug", "info,,debug", "edge aid=info"] {
            assert!(check_log_level(bad).is_err(), "{bad:?} accepted");
        }
    }
}
