//! Daemon configuration: finds the TOML files, merges them in layers and
//! validates the result into typed [`Settings`].
//!
//! Owns reading and checking config files and nothing else: it opens no
//! sockets, checks no model file and touches no store. Every error names the
//! file and dotted key it is about, even after the layers were merged.
//!
//! # Where settings come from
//!
//! Without `--config`, built-in defaults are overlaid with these files, in this
//! order ([`SYSTEM_FILES`]); a missing file or directory is skipped:
//!
//! 1. `/usr/lib/edgeai/edgeai.toml` (the distribution's defaults),
//! 2. `/etc/edgeai/edgeai.toml` (the administrator's file),
//! 3. `/etc/edgeai/conf.d/*.toml`, sorted by file name (byte order, so
//!    `10-model.toml` comes before `20-apps.toml`); names starting with `.`
//!    and names not ending in `.toml` are ignored.
//!
//! With `--config FILE` (repeatable) only the named files are read, in the
//! order given, and each of them must exist.
//!
//! Layers merge as TOML: tables merge key by key, a later scalar or array
//! replaces an earlier one, and so does the `[[apps]]` array as a whole.
//! A relative path in a file is resolved against the directory of that file.
//! Unknown keys are errors, as are values of the wrong type or out of range;
//! all problems are reported at once, one per line, as
//! `FILE: KEY: what is wrong`.
//!
//! # Keys
//!
//! `configs/reference.toml` lists the same keys with their defaults; a unit
//! test checks that it loads to exactly the built-in defaults.
//!
//! | key | default | accepted |
//! |-----|---------|----------|
//! | `server.listen` | `"127.0.0.1:5001"` | `IP:PORT`; `""` disables TCP |
//! | `server.socket` | `"/run/edgeai/edgeai.sock"` | a path; `""` disables the unix socket |
//! | `server.socket_mode` | `"0660"` | a string of 1 to 4 octal digits, at most `"0777"`, not world-writable |
//! | `server.socket_group` | `""` (none) | group that owns the socket |
//! | `server.admin_group` | `""` (none) | group whose members may call the admin API (root always may) |
//! | `server.max_body_bytes` | `1048576` (1 MiB) | 1024 ..= 67108864 |
//! | `server.max_header_bytes` | `16384` (16 KiB) | 1024 ..= 1048576 |
//! | `server.request_timeout_secs` | `300` | 1 ..= 3600 |
//! | `server.idle_timeout_secs` | `60` | 1 ..= 3600 |
//! | `server.max_connections` | `256` | 1 ..= 65536 |
//! | `server.max_connections_per_client` | `0` (no limit) | 0 ..= 65536 open TCP connections from one client address; over it: 503 |
//! | `server.client_requests_per_minute` | `0` (no limit) | 0 ..= 1000000; over it a TCP client gets 429 + Retry-After |
//! | `server.client_burst` | `10` | 1 ..= 100000 requests at once within that rate |
//! | `server.key_requests_per_minute` | `0` (no limit) | 0 ..= 1000000; over it an API key gets 429 + Retry-After |
//! | `server.key_burst` | `10` | 1 ..= 100000 |
//! | `server.allow_clients` | `[]` (everyone) | address blocks a TCP client must come from (`10.20.0.0/16`, `::1/128`); others are closed at accept; the unix socket is not filtered |
//! | `server.shutdown_grace_secs` | `30` | 0 ..= 600 |
//! | `server.sse_ping_secs` | `10` | 1 ..= 300 |
//! | `server.slow_client_timeout_secs` | `30` | 1 ..= 600; a client that accepts no response bytes for this long is cut off |
//! | `server.tls` | `{}` (plain HTTP) | a table; with `cert_file` and `key_file` the TCP listener serves only TLS (HTTPS); the unix socket never does |
//! | `server.tls.cert_file` | none | PEM certificate chain of the TCP listener, server certificate first; read at start and on SIGHUP |
//! | `server.tls.key_file` | none | its PEM private key (PKCS#8, RSA or EC), matching the certificate, not readable by every user |
//! | `server.tls.client_ca_file` | `""` (no client certificates) | PEM CA certificates: a client must present a certificate they signed (mutual TLS) |
//! | `server.tls.min_version` | `"1.2"` | `"1.2"` or `"1.3"` |
//! | `store.path` | `"/var/lib/edgeai/edgeai.db"` | a non-empty path |
//! | `store.synchronous` | `"full"` | `"full"`: every commit waits for the disk (an answer survives a power cut); `"normal"`: commits do not wait (a power cut may lose the last ones, never the file; several times the write rate) |
//! | `files.dir` | `""` (`files/` next to `store.path`) | directory of the files uploaded through `POST /v1/files/upload` |
//! | `files.max_file_bytes` | `15728640` (15 MiB, Dify's limit) | 1 ..= 1073741824; a larger upload gets 413 `file_too_large` |
//! | `knowledge.dir` | `""` (`knowledge/` next to `store.path`) | vector files and document sources of the knowledge bases |
//! | `knowledge.max_file_bytes` | `15728640` | 1 ..= 1073741824; a larger document file gets 413 `file_too_large` |
//! | `knowledge.max_text_chars` | `2000000` | 1000 ..= 100000000; a document yielding more text goes to `error` |
//! | `knowledge.queue` | `64` | 1 ..= 10000; documents waiting to be indexed, more get 429 |
//! | `knowledge.embed_batch` | `16` | 1 ..= 256; segments per call to the embedding model |
//! | `model.enabled` | `true` | `false` runs without a model: every model call answers 503 |
//! | `model.name` | `"smollm2-135m-instruct"` | non-empty, `A-Z a-z 0-9 . _ : -` |
//! | `model.path` | `"/var/lib/edgeai/models/SmolLM2-135M-Instruct.Q4_1.gguf"` | a non-empty path; not checked here (a missing model leaves the daemon up answering 503) |
//! | `model.context_size` | `4096` | 512 ..= 131072; KV positions shared by all slots: one request may use them all, several share them |
//! | `model.kv_type_k` | `"f16"` | `"f16"`, `"q8_0"` or `"q4_0"`: the KV cache's key type (f16/f16 reads prompts about 1.3× faster; q8_0 takes half the memory) |
//! | `model.kv_type_v` | `"f16"` | `"f16"`, `"q8_0"` or `"q4_0"`: the KV cache's value type (a quantized one needs flash attention, which llama.cpp turns on for it) |
//! | `model.slots` | `4` | 1 ..= 16; parallel sequences |
//! | `model.threads` | `0` (auto) | 0 (auto) or 1 ..= 256 |
//! | `model.batch_size` | `512` | 32 ..= 8192 |
//! | `model.prefix_save_secs` | `60` | 0 ..= 86400; while idle, the cached prompt prefixes are saved (`kv-prefixes/` next to the store) at most this often when they changed, so a start after a crash or power cut is warm too; `0`: only at a clean stop |
//! | `model.step_budget_ms` | `60` | 0 ..= 10000; while other sequences generate, a decode step reads only as many prompt tokens as fit this time; `0`: up to `batch_size` (no time bound) |
//! | `model.queue_depth` | `16` | 1 ..= 1024; requests waiting for a slot |
//! | `admission.max_concurrent_per_app` | `0` (the slots) | 0 or 1 ..= 16; generations of one app running at once, the others wait in its lane |
//! | `admission.max_queued_per_app` | `0` (¾ of `model.queue_depth`) | 0 or 1 ..= 1024; places one app may hold in the admission queue, more get 429 (`model.queue_depth` bounds all apps together) |
//! | `model.mlock` | `false` | lock the model in RAM |
//! | `model.load_timeout_secs` | `300` | 1 ..= 86400; loading longer than this ends `failed` (the daemon stays up answering 503) |
//! | `model.chat_template` | `""` | a llama.cpp built-in template name ("gemma", "chatml", ...) used instead of the GGUF's own; `""`: the GGUF's |
//! | `embedding.enabled` | `true` | `false` runs without a local embedding model |
//! | `embedding.path` | `"/usr/lib/edgeai/models/multilingual-e5-small-q4_0.gguf"` | a non-empty path to an embedding GGUF (scripts/fetch-embedder.sh builds the default); not checked here |
//! | `embedding.threads` | `0` (the chat model's count) | 0 or 1 ..= 256 |
//! | `embedding.batch_texts` | `16` | 1 ..= 64; texts per llama.cpp batch |
//! | `embedding.max_tokens` | `512` | 16 ..= 2048, at most the model's context; longer inputs are cut |
//! | `embedding.query_prefix` | `"query: "` | put before search queries (e5's convention; `""` for none) |
//! | `embedding.passage_prefix` | `"passage: "` | put before indexed texts (e5's convention; `""` for none) |
//! | `embedding.queue` | `64` | 1 ..= 1024; embedding requests waiting, more are refused as busy |
//! | `embedding.upstream_model` | `""` (the local model) | embed through `[upstream]`'s `/embeddings` with this model (needs `upstream.url`); its vectors are tied to it like a local model's |
//! | `log.level` | `"info"` | `trace`, `debug`, `info`, `warn`, `error`, `off`, or comma-separated `target=level` directives |
//! | `log.format` | `"auto"` | `"auto"`, `"text"`, `"json"` |
//! | `cache.enabled` | `true` | `false`: no response cache (every request reaches the model) |
//! | `cache.max_bytes` | `0` (derived) | 0 or 1024 ..= 4294967296; 0: a 32nd of the cgroup memory limit, else 64 MiB, within 4 ..= 256 MiB |
//! | `cache.ttl_secs` | `86400` | 1 ..= 31536000; a cached answer is served this long after it was made |
//! | `cache.persist` | `true` | keep cached answers in the store, loaded at start (`false`: memory only) |
//! | `cache.apps` | `{}` | per app, `[cache.apps.<app id>]`: `always = true` caches non-deterministic requests too; `semantic_threshold` (0 < t ≤ 1, off when absent) answers a question whose embedding's cosine similarity with a cached one of the same app, version, inputs and history reaches it (needs the embedding model) |
//! | `control.bus` | `"system"` | the D-Bus bus of `org.edgeai.Daemon1`: `"system"`, `"session"`, `"off"`, or a bus address such as `"unix:path=/run/edgeai-test/bus"`; a bus that cannot be reached is a warning and a policy that refuses the name an error in the log (HTTP is served either way); a name owned by another process stops the start (exit 1) |
//! | `metrics.enabled` | `true` | `false`: no `GET /metrics` anywhere (404) |
//! | `metrics.tcp` | `false` | also serve `GET /metrics` on the TCP listener (always on the unix socket) |
//! | `workflow.max_steps` | `500` | 1 ..= 100000; node executions per run |
//! | `workflow.node_timeout_secs` | `120` | 1 ..= 86400, at most `workflow.run_timeout_secs`; a node running longer fails with a timeout |
//! | `workflow.run_timeout_secs` | `240` | 1 ..= 86400, at most `server.request_timeout_secs` (the default is lowered to it) |
//! | `workflow.max_parallel` | `4` | 1 ..= 64; branches / parallel iteration items at once |
//! | `workflow.max_iterations` | `1000` | 1 ..= 100000; items of an iteration, passes of a loop |
//! | `workflow.http_max_response_bytes` | `1048576` (1 MiB) | 1024 ..= 67108864; an http-request node's response body |
//! | `workflow.http_allow` | `[]` (nothing) | host names (`"plc.local"`), wildcards (`"*.plant.lan"`), IPs and CIDRs (`"10.0.0.0/8"`, `"::1/128"`) an http-request node may reach |
//! | `code.python` | `"auto"` | `"auto"` (python3 on PATH), `"off"`, or an interpreter's path |
//! | `code.python_pool` | `1` | 0 ..= 16; Python processes started ahead of runs |
//! | `code.max_concurrent` | `2` | 1 ..= 64; code runs at once, both languages |
//! | `code.timeout_secs` | `10` | 1 ..= 3600; a run's limit when its node sets no `timeout` |
//! | `code.max_timeout_secs` | `60` | 1 ..= 3600; caps a node's own `timeout` |
//! | `code.memory_mb` | `128` | 16 ..= 65536; a run's memory when its node sets no `memory_limit_mb` |
//! | `code.max_memory_mb` | `512` | 16 ..= 65536; caps a node's `memory_limit_mb` |
//! | `code.max_output_bytes` | `1048576` | 1024 ..= 67108864; the largest result (JSON) |
//! | `code.scratch_dir` | `""` (next to the store) | per-run scratch directories of Python code |
//! | `upstream.url` | `""` (none) | an `http://` base URL (`"http://10.0.0.5:8000/v1"`); `https://` is refused (no TLS in this build) |
//! | `upstream.model` | `""` (the DSL's name) | model name sent upstream when a mapping names none |
//! | `upstream.api_key` | `""` (none) | sent as `Authorization: Bearer`; visible ASCII |
//! | `upstream.api_key_file` | `""` (none) | a file holding the key, read at start, not readable by every user; not with `upstream.api_key` |
//! | `upstream.connect_timeout_secs` | `5` | 1 ..= 300 |
//! | `upstream.read_timeout_secs` | `60` | 1 ..= 3600; the longest gap between bytes of an answer |
//! | `upstream.retries` | `2` | 0 ..= 10; on connect errors, 429 and 5xx before any byte of an answer |
//! | `upstream.retry_backoff_ms` | `200` | 0 ..= 60000; doubled each retry; a longer `Retry-After` (capped) wins |
//! | `upstream.breaker_failures` | `5` | 1 ..= 1000; consecutive failed calls that open the circuit |
//! | `upstream.breaker_cooldown_secs` | `30` | 1 ..= 3600; then one call may try (half-open) |
//! | `upstream.fallback_local` | `true` | answer with the local model when upstream fails or its circuit is open |
//! | `model_map.default` | `"local"` | `"local"`, `"upstream"` or `"upstream:<model name>"`, for DSL models no other key names |
//! | `model_map."provider/name"` | none | the same forms, for one DSL model (`"openai/gpt-4o-mini" = "upstream"`); upstream forms need `upstream.url` |
//! | `dev.demo_key_file` | `""` (none) | development only: the daemon creates a key for the first app and writes it to this path |
//! | `dev.demo_dataset_dir` | `""` (none) | development only: documents seeded at start into the dataset named after the directory |
//! | `dev.demo_rag_app` | `""` (none) | development only: a Dify DSL app imported at start |
//! | `dev.demo_rag_key_file` | `""` (none) | development only: a key of `demo_rag_app` is written to this path |
//! | `auth.jwt` | `[]` (none) | `[[auth.jwt]]` issuers whose tokens open apps: `issuer`, `audience`, `public_key_file` or `jwks_file` (or `secret_file` with `allow_hs256 = true`), `algorithms`, `app_claim` (`"app"`), `user_claim` (`"sub"`), `leeway_secs` (60) |
//! | `[[apps]]` | none | chat and completion apps, see [`crate::engine::AppDefinition`] |
//! | `audit.max_rows` | `100000` | 100 ..= 10000000; the store keeps the newest this many audit entries |
//! | `audit.auth_failures_per_minute` | `120` | 1 ..= 100000; refused credentials recorded (journal and store) per minute; the rest are counted (`edgeai_audit_entries_total`) and summed up in the next one |
//! | `update.enabled` | `false` | A/B slots (`crate::update`, docs/update.md): at start the daemon runs the slot `current` points at, counts starts of a pending version and rolls it back after `update.max_attempts`; `false`: always the installed binary, slots ignored |
//! | `update.dir` | `""` (the directory of `store.path`) | where `slots/a`, `slots/b`, `current`, `update-state.json` and `update/` (store snapshots) live |
//! | `update.max_attempts` | `3` | 1 ..= 10; starts of a pending version before the next start rolls it back (keep it below the unit's StartLimitBurst) |
//! | `update.commit_after_secs` | `60` | 1 ..= 86400; how long a pending version must stay healthy (after its self-test) before it commits itself |
//! | `update.trust_dir` | `"/etc/edgeai/trust.d"` | the ed25519 public keys (`*.pub`, from `edgeaictl keys gen-signing`) an installed bundle must be signed with |
//! | `update.compatible` | `""` (`"edgeai-<arch>"`, e.g. `edgeai-x86_64`) | a bundle's `compatible` must equal it, else the install is refused |
//! | `update.max_bundle_bytes` | `4294967296` (4 GiB) | 1 MiB ..= 1 TiB; the largest bundle `POST /admin/v1/update/install` accepts (sent or downloaded) |
//! | `update.ca_file` | `"/etc/ssl/certs/ca-certificates.crt"` | the CA certificates (PEM) the server of an `https://` bundle URL must chain to (`edgeaictl update install https://...`) |
//!
//! For the keys whose default is "none", `""` sets them back to none, so a
//! later layer can undo an earlier one.

mod layers;
mod read;
#[cfg(test)]
mod tests;
mod workflow;

pub use workflow::{MapEntry, ModelMap, Secret, Target, UpstreamSettings, WorkflowSettings};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The system scan order (see the module documentation). An entry ending in
/// `/*.toml` is a drop-in directory whose `*.toml` files are read sorted by
/// name. [`load_system_from_root`] reads the same entries under another root.
pub const SYSTEM_FILES: &[&str] = &["/usr/lib/edgeai/edgeai.toml", "/etc/edgeai/edgeai.toml", "/etc/edgeai/conf.d/*.toml"];

/// Which files to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sources {
    /// The [`SYSTEM_FILES`] scan.
    System,
    /// Exactly these files, in this order (`--config FILE`, repeatable).
    Files(Vec<PathBuf>),
}

/// Loads the settings from `sources` over the built-in defaults.
pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    match sources {
        Sources::System => load_system_from_root(Path::new("/")),
        Sources::Files(files) => finish(layers::load_files(files)?),
    }
}

/// For tests: load with a different root instead of "/" for the system paths.
pub fn load_system_from_root(root: &Path) -> Result<Settings, ConfigError> {
    finish(layers::load_system(root)?)
}

/// Loads the settings from `text` as if it were the content of the only
/// file, `path` (which need not exist): the fuzz targets' way in.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn load_text(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let mut merged = layers::Merged::default();
    merged.add(path, text)?;
    finish(merged)
}

/// Validates the merged layers and records which files were read.
fn finish(merged: layers::Merged) -> Result<Settings, ConfigError> {
    let mut settings = read::settings(&merged).map_err(ConfigError::Invalid)?;
    if let Some(path) = &settings.upstream.api_key_file {
        let key = read_key_file(path).map_err(|message| {
            let file = merged.origin("upstream.api_key_file").map(|l| l.path.clone());
            ConfigError::Invalid(vec![Problem { file, key: "upstream.api_key_file".to_owned(), message }])
        })?;
        settings.upstream.api_key = Some(key);
    }
    if let Some(tls) = &settings.server.tls {
        // Read now so that a bad file stops the start (and --check-config)
        // naming it; the listener reads them again when it starts.
        crate::api::tls::server_config(tls).map_err(|e| {
            let key = e.key();
            let file = merged.origin(key).map(|l| l.path.clone());
            ConfigError::Invalid(vec![Problem { file, key: key.to_owned(), message: e.to_string() }])
        })?;
    }
    settings.sources = merged.layers.into_iter().map(|l| l.path).collect();
    Ok(settings)
}

/// The key in `upstream.api_key_file`: the file's content without the
/// surrounding whitespace; a file every user may read is refused.
fn read_key_file(path: &Path) -> Result<Secret, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(format!("{shown} is readable by every user (mode {mode:04o}); chmod o-r it"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    read::check_api_key(key).map_err(|m| format!("the key in {shown} {m}"))?;
    Ok(Secret::new(key.to_owned()))
}

/// Everything that can go wrong while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file exists (or was named with `--config`) but cannot be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The drop-in directory exists but cannot be listed.
    #[error("cannot list config directory {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid TOML.
    #[error("{}: TOML syntax error at line {line}, column {column}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    /// The files parse but their merged content is wrong; every problem found.
    #[error("{}", ProblemLines(.0))]
    Invalid(Vec<Problem>),
}

/// One thing wrong with the merged configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file that set the key; `None` when the key kept its default.
    pub file: Option<PathBuf>,
    /// Dotted key, e.g. `model.slots` or `apps[0].completion_params.temperature`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        write!(f, "{}: {}", self.key, self.message)
    }
}

struct ProblemLines<'a>(&'a [Problem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The validated configuration. `Default` is the built-in defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub files: FilesSettings,
    pub knowledge: KnowledgeSettings,
    pub model: ModelSettings,
    pub admission: AdmissionSettings,
    pub embedding: EmbeddingSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub control: ControlSettings,
    pub cache: CacheSettings,
    pub dev: DevSettings,
    pub workflow: WorkflowSettings,
    pub code: CodeSettings,
    pub upstream: UpstreamSettings,
    pub model_map: ModelMap,
    pub apps: Vec<crate::engine::AppDefinition>,
    /// Files actually read, in order.
    pub sources: Vec<PathBuf>,
    pub audit: AuditSettings,
    /// `[auth]`: how callers other than API key holders authenticate.
    pub auth: AuthSettings,
    /// `[update]`: A/B slots, health-gated commit and rollback.
    pub update: UpdateSettings,
}

/// `[update]`: A/B slots (see `crate::update` and docs/update.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSettings {
    /// `update.enabled`.
    pub enabled: bool,
    /// `update.dir`, resolved: the directory of `store.path` when unset.
    pub dir: PathBuf,
    /// `update.max_attempts`: starts of a pending version before rollback.
    pub max_attempts: u32,
    /// `update.commit_after_secs`.
    pub commit_after: Duration,
    /// `update.trust_dir`: the public keys (`*.pub`) a bundle must be signed with.
    pub trust_dir: PathBuf,
    /// `update.compatible`: a bundle's `compatible` must equal it.
    pub compatible: String,
    /// `update.max_bundle_bytes`: the largest bundle an install accepts.
    pub max_bundle_bytes: u64,
    /// `update.ca_file`: the certificates (PEM) an `https://` bundle URL's server must chain to.
    pub ca_file: PathBuf,
}

/// `update.compatible` when unset: the product and the CPU architecture
/// this edgeaid was built for (a bundle for another architecture is refused).
pub fn default_compatible() -> String {
    format!("edgeai-{}", std::env::consts::ARCH)
}

impl Default for UpdateSettings {
    fn default() -> Self {
        UpdateSettings {
            enabled: false,
            dir: PathBuf::from("/var/lib/edgeai"),
            max_attempts: 3,
            commit_after: Duration::from_secs(60),
            trust_dir: PathBuf::from(edgeai_common::bundle::TrustStore::DEFAULT_DIR),
            compatible: default_compatible(),
            max_bundle_bytes: 4 << 30,
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        }
    }
}

/// `[audit]`: the audit trail of admin actions and refused credentials (see `crate::audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditSettings {
    /// `audit.max_rows`: the store keeps the newest this many entries.
    pub max_rows: u64,
    /// `audit.auth_failures_per_minute`: refused credentials recorded (store
    /// and journal) per minute; the rest are counted and summed up in the next
    /// recorded one, so a flood of bad keys cannot flood the disk.
    pub auth_failures_per_minute: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings { max_rows: 100_000, auth_failures_per_minute: 120 }
    }
}

/// `[cache]`: the response cache (see [`crate::cache`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub enabled: bool,
    /// `cache.max_bytes`; 0: derived from the memory limit at start.
    pub max_bytes: u64,
    /// `cache.ttl_secs`.
    pub ttl: Duration,
    /// `cache.persist`: mirror the entries in the store.
    pub persist: bool,
    /// `[cache.apps.<app id>]`.
    pub apps: std::collections::BTreeMap<String, AppCacheSettings>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings { enabled: true, max_bytes: 0, ttl: Duration::from_secs(86_400), persist: true, apps: Default::default() }
    }
}

/// `[cache.apps.<app id>]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppCacheSettings {
    /// Cache this app's answers even when sampling is not deterministic.
    pub always: bool,
    /// Semantic cache: a question whose embedding's cosine similarity with
    /// a cached one reaches this gets its answer (`None`: exact match only).
    pub semantic_threshold: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// `server.listen`; `None` disables TCP.
    pub listen: Option<SocketAddr>,
    /// `server.socket`; `None` disables the unix socket.
    pub socket: Option<PathBuf>,
    /// `server.socket_mode`: permission bits of the socket file.
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    /// Members of this group may call the admin API; root always may.
    pub admin_group: Option<String>,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    /// `server.request_timeout_secs`.
    pub request_timeout: Duration,
    /// `server.idle_timeout_secs`.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// `server.max_connections_per_client`: open TCP connections one client
    /// address may hold (0: no limit beyond `max_connections`).
    pub max_connections_per_client: usize,
    /// `server.shutdown_grace_secs`: how long in-flight requests may drain.
    pub shutdown_grace: Duration,
    /// `server.sse_ping_secs`.
    pub sse_ping_interval: Duration,
    /// `server.slow_client_timeout_secs`: how long a response may wait for
    /// the client to read before the connection is cut off.
    pub slow_client_timeout: Duration,
    /// `server.allow_clients`: the address blocks a TCP client must come
    /// from; a connection from elsewhere is closed at accept, before a byte
    /// is read. Empty: every client (the unix socket is never filtered).
    pub allow_clients: Vec<ipnet::IpNet>,
    /// `server.client_requests_per_minute`: requests one TCP client address
    /// may make per minute (0: no limit); `server.client_burst` of them at once.
    pub client_requests_per_minute: u32,
    pub client_burst: u32,
    /// `server.key_requests_per_minute`: requests one API key may make per
    /// minute, over TCP and the socket together (0: no limit); `server.key_burst` at once.
    pub key_requests_per_minute: u32,
    pub key_burst: u32,
    /// `[server.tls]`: TLS on the TCP listener; `None` serves plain HTTP.
    pub tls: Option<TlsSettings>,
}

/// `[server.tls]`: the certificate the TCP listener presents (the unix
/// socket never uses TLS). The files are read when the configuration is
/// loaded (a bad one is a config problem) and again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// `server.tls.cert_file`: PEM certificate chain, the server's first.
    pub cert_file: PathBuf,
    /// `server.tls.key_file`: its PEM private key (PKCS#8, RSA or EC).
    pub key_file: PathBuf,
    /// `server.tls.client_ca_file`: PEM CA certificates; when set, a client
    /// must present a certificate one of them signed (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// `server.tls.min_version`.
    pub min_version: TlsVersion,
}

/// The oldest TLS version the listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    pub const ALL: [TlsVersion; 2] = [TlsVersion::V1_2, TlsVersion::V1_3];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 5001))),
            socket: Some(PathBuf::from("/run/edgeai/edgeai.sock")),
            socket_mode: 0o660,
            socket_group: None,
            admin_group: None,
            max_body_bytes: 1 << 20,
            max_header_bytes: 16 << 10,
            request_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_connections_per_client: 0,
            shutdown_grace: Duration::from_secs(30),
            sse_ping_interval: Duration::from_secs(10),
            slow_client_timeout: Duration::from_secs(30),
            allow_clients: Vec::new(),
            client_requests_per_minute: 0,
            client_burst: 10,
            key_requests_per_minute: 0,
            key_burst: 10,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// `store.path`: the SQLite database file.
    pub path: PathBuf,
    /// `store.synchronous`: when a commit waits for the disk.
    pub synchronous: Synchronous,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings { path: PathBuf::from("/var/lib/edgeai/edgeai.db"), synchronous: Synchronous::Full }
    }
}

/// SQLite's `synchronous` for the store (WAL mode either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit waits for an fsync of the WAL: an answer the API gave
    /// survives a power cut.
    Full,
    /// Commits do not wait for the disk (the WAL is synced at checkpoints):
    /// a power cut may lose the last commits, never the file's consistency;
    /// a crash of the daemon alone loses nothing.
    Normal,
}

impl Synchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    }
}

/// Uploaded files (`[files]`).
#[derive(Debug, Clone, PartialEq)]
pub struct FilesSettings {
    /// `files.dir`; `""` in a file means `files/` next to `store.path`.
    pub dir: PathBuf,
    /// `files.max_file_bytes`: the largest accepted upload.
    pub max_file_bytes: u64,
}

impl Default for FilesSettings {
    fn default() -> Self {
        FilesSettings { dir: PathBuf::from("/var/lib/edgeai/files"), max_file_bytes: 15 << 20 }
    }
}

/// `[knowledge]`: where knowledge bases keep their files, and their limits.
/// Which Python runs code nodes (`code.python`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonChoice {
    /// `"auto"`: `python3` on PATH, when there is one.
    Auto,
    /// `"off"`: Python code nodes are refused at import.
    Off,
    /// A path to an interpreter.
    Path(PathBuf),
}

/// `[code]`: the sandbox of workflow code nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeSettings {
    pub python: PythonChoice,
    /// `code.python_pool`: Python processes kept started, waiting for a run.
    pub python_pool: usize,
    /// `code.max_concurrent`: most code runs at once, both languages.
    pub max_concurrent: usize,
    /// `code.timeout_secs`: a run's limit when its node sets none.
    pub timeout: Duration,
    /// `code.max_timeout_secs`: the most a node's own `timeout` may ask for.
    pub max_timeout: Duration,
    /// `code.memory_mb`: a run's memory limit when its node sets none.
    pub memory_mb: u64,
    /// `code.max_memory_mb`: the most a node's `memory_limit_mb` may ask for.
    pub max_memory_mb: u64,
    /// `code.max_output_bytes`: the largest result a run may return.
    pub max_output_bytes: usize,
    /// `code.scratch_dir`; `""` in a file: `code-scratch/` next to the store.
    pub scratch_dir: PathBuf,
}

impl Default for CodeSettings {
    fn default() -> Self {
        CodeSettings {
            python: PythonChoice::Auto,
            python_pool: 1,
            max_concurrent: 2,
            timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(60),
            memory_mb: 128,
            max_memory_mb: 512,
            max_output_bytes: 1 << 20,
            scratch_dir: PathBuf::from("/var/lib/edgeai/code-scratch"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeSettings {
    /// `knowledge.dir`; `""` in a file means `knowledge/` next to `store.path`.
    /// Holds each dataset's vector files and document sources.
    pub dir: PathBuf,
    /// `knowledge.max_file_bytes`: the largest document file (413 above).
    pub max_file_bytes: u64,
    /// `knowledge.max_text_chars`: the most characters one document may yield.
    pub max_text_chars: usize,
    /// `knowledge.queue`: documents waiting to be indexed at most (429 above).
    pub queue: usize,
    /// `knowledge.embed_batch`: segments embedded per call to the embedder.
    pub embed_batch: usize,
}

impl Default for KnowledgeSettings {
    fn default() -> Self {
        KnowledgeSettings {
            dir: PathBuf::from("/var/lib/edgeai/knowledge"),
            max_file_bytes: 15 << 20,
            max_text_chars: 2_000_000,
            queue: 64,
            embed_batch: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    pub name: String,
    /// Not checked for existence here: a missing model leaves the daemon up answering 503.
    pub path: PathBuf,
    /// Total KV positions shared by all slots.
    pub context_size: u32,
    /// `model.kv_type_k`: the KV cache's key type.
    pub kv_type_k: KvType,
    /// `model.kv_type_v`: the KV cache's value type.
    pub kv_type_v: KvType,
    /// Parallel sequences (llama.cpp `n_seq_max`).
    pub slots: u32,
    /// `None`: chosen from CPU affinity and the cgroup quota.
    pub threads: Option<u32>,
    pub batch_size: u32,
    /// `model.step_budget_ms`: the time a decode step may take with prompt
    /// tokens while other sequences generate; zero means no time bound.
    pub step_budget: Duration,
    /// `model.prefix_save_secs`: while idle, the cached prompt prefixes are
    /// saved at most this often when they changed; zero: only at a clean stop.
    pub prefix_save: Duration,
    /// Admission queue in front of the slots.
    pub queue_depth: usize,
    /// `model.mlock`.
    pub use_mlock: bool,
    /// `model.load_timeout_secs`: a load still running after this is aborted.
    pub load_timeout: Duration,
    /// `model.chat_template`: a llama.cpp built-in template name used
    /// instead of the GGUF's own (for GGUFs that ship none, such as Gemma 3
    /// 270M); `None` uses the GGUF's template.
    pub chat_template: Option<String>,
    /// `false`: run without a model; every model call answers 503.
    pub enabled: bool,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            name: "smollm2-135m-instruct".to_owned(),
            path: PathBuf::from("/var/lib/edgeai/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            context_size: 4096,
            kv_type_k: KvType::F16,
            kv_type_v: KvType::F16,
            slots: 4,
            threads: None,
            batch_size: 512,
            step_budget: Duration::from_millis(60),
            prefix_save: Duration::from_secs(60),
            queue_depth: 16,
            use_mlock: false,
            load_timeout: Duration::from_secs(300),
            chat_template: None,
            enabled: true,
        }
    }
}

/// Fair admission between apps (`[admission]`); `model.queue_depth` is the
/// global bound.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdmissionSettings {
    /// `None`: up to `model.slots`.
    pub max_concurrent_per_app: Option<usize>,
    /// `None`: ¾ of `model.queue_depth` (at least 1), so one app's flood
    /// leaves room for the others.
    pub max_queued_per_app: Option<usize>,
}

impl AdmissionSettings {
    /// Generations of one app running at once.
    pub fn concurrent_per_app(&self, model: &ModelSettings) -> usize {
        self.max_concurrent_per_app.unwrap_or(model.slots as usize)
    }

    /// Places one app may hold in the admission queue.
    pub fn queued_per_app(&self, model: &ModelSettings) -> usize {
        self.max_queued_per_app.unwrap_or_else(|| (model.queue_depth * 3).div_ceil(4)).clamp(1, model.queue_depth.max(1))
    }
}

/// The local embedding model (`[embedding]`), for knowledge bases.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingSettings {
    /// `false`: no local embedding model.
    pub enabled: bool,
    /// Not checked for existence here (like `model.path`).
    pub path: PathBuf,
    /// `None`: the chat model's thread count.
    pub threads: Option<u32>,
    /// Texts per llama.cpp batch at most.
    pub batch_texts: usize,
    /// Tokens per input (prefix and special tokens included); longer inputs are cut.
    pub max_tokens: usize,
    pub query_prefix: String,
    pub passage_prefix: String,
    /// Embedding requests waiting for the embedding thread at most.
    pub queue: usize,
    /// Embed through `[upstream]`'s `/embeddings` with this model instead
    /// of the local one (`None`: the local model).
    pub upstream_model: Option<String>,
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        EmbeddingSettings {
            enabled: true,
            path: PathBuf::from("/usr/lib/edgeai/models/multilingual-e5-small-q4_0.gguf"),
            threads: None,
            batch_texts: 16,
            max_tokens: 512,
            query_prefix: "query: ".to_owned(),
            passage_prefix: "passage: ".to_owned(),
            queue: 64,
            upstream_model: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// `trace|debug|info|warn|error|off` or comma-separated `target=level`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings { level: "info".to_owned(), format: LogFormat::Auto }
    }
}

/// `[control]`: the D-Bus control interface (see `crate::control`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlSettings {
    pub bus: BusChoice,
}

/// `control.bus`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BusChoice {
    #[default]
    System,
    Session,
    Off,
    /// A D-Bus address (`unix:path=...`), for tests and development.
    Address(String),
}

/// `[metrics]`: where `GET /metrics` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    pub enabled: bool,
    /// Also on the TCP listener (the unix socket always has it when enabled).
    pub tcp: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { enabled: true, tcp: false }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Journald when `JOURNAL_STREAM` is set, text otherwise.
    Auto,
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// A KV cache element type (`model.kv_type_k`, `model.kv_type_v`): the
/// ones llama.cpp's CPU flash attention reads, f16 fastest, q4_0 smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F16,
    Q8_0,
    Q4_0,
}

impl KvType {
    pub const ALL: [KvType; 3] = [KvType::F16, KvType::Q8_0, KvType::Q4_0];

    pub fn as_str(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DevSettings {
    /// Development only: the daemon creates a key for the first app and writes it here.
    pub demo_key_file: Option<PathBuf>,
    /// Development only: a directory of documents seeded at start into the
    /// dataset named after it (new files only).
    pub demo_dataset_dir: Option<PathBuf>,
    /// Development only: a Dify DSL app imported at start (a new version
    /// only when it changed).
    pub demo_rag_app: Option<PathBuf>,
    /// Development only: a key of `demo_rag_app` is written here.
    pub demo_rag_key_file: Option<PathBuf>,
}

/// `[auth]`: bearer credentials besides API keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuthSettings {
    /// `[[auth.jwt]]`: the issuers whose signed tokens open an app
    /// (verified by [`crate::api::jwt`]).
    pub jwt: Vec<JwtIssuer>,
}

/// One `[[auth.jwt]]` table: an identity provider the daemon trusts.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtIssuer {
    /// The token's `iss` must equal this.
    pub issuer: String,
    /// The token's `aud` must contain this.
    pub audience: String,
    /// Where the verification keys are.
    pub keys: JwtKeySource,
    /// The `alg` header values accepted (JOSE names: `EdDSA`, `RS256`, `ES256`...).
    pub algorithms: Vec<String>,
    /// The claim naming the app id the token opens.
    pub app_claim: String,
    /// The claim that becomes Dify's `user` of the request.
    pub user_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// The key material of an issuer (exactly one per `[[auth.jwt]]`).
#[derive(Debug, Clone, PartialEq)]
pub enum JwtKeySource {
    /// `public_key_file`: one PEM public key (Ed25519, RSA or EC P-256/P-384).
    PublicKey(PathBuf),
    /// `jwks_file`: a JSON Web Key Set, keys chosen by `kid`.
    Jwks(PathBuf),
    /// `secret_file` with `allow_hs256 = true`: a shared HS256 secret.
    Secret(PathBuf),
}

impl JwtKeySource {
    /// The config key and the file it names, for messages.
    pub fn describe(&self) -> (&'static str, &Path) {
        match self {
            JwtKeySource::PublicKey(p) => ("public_key_file", p),
            JwtKeySource::Jwks(p) => ("jwks_file", p),
            JwtKeySource::Secret(p) => ("secret_file", p),
        }
    }
}

/// The `alg` values `[[auth.jwt]].algorithms` may list (`none` never).
pub const JWT_ALGORITHMS: [&str; 10] = ["EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "HS256"];

impl Settings {
    /// A short human summary, printed by `edgeaid --check-config`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let sources = if self.sources.is_empty() {
            "none (built-in defaults)".to_owned()
        } else {
            self.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        };
        out.push_str(&format!("config files: {sources}\n"));
        match (self.server.listen, &self.server.tls) {
            (Some(addr), None) => out.push_str(&format!("listen: {addr}\n")),
            (Some(addr), Some(tls)) => out.push_str(&format!(
                "listen: {addr} (TLS {}+, certificate {}{})\n",
                tls.min_version.as_str(),
                tls.cert_file.display(),
                if tls.client_ca_file.is_some() { ", client certificates required" } else { "" }
            )),
            (None, _) => out.push_str("listen: disabled\n"),
        }
        match &self.server.socket {
            Some(path) => {
                let group = self.server.socket_group.as_ref().map_or_else(String::new, |g| format!(", group {g}"));
                out.push_str(&format!("socket: {} (mode {:04o}{group})\n", path.display(), self.server.socket_mode));
            }
            None => out.push_str("socket: disabled\n"),
        }
        out.push_str(&format!("store: {} (synchronous {})\n", self.store.path.display(), self.store.synchronous.as_str()));
        out.push_str(&format!("files: {} (at most {} bytes each)\n", self.files.dir.display(), self.files.max_file_bytes));
        let m = &self.model;
        if m.enabled {
            let threads = m.threads.map_or_else(|| "auto".to_owned(), |t| t.to_string());
            out.push_str(&format!(
                "model: {} at {} (slots {}, context {}, KV {}/{}, threads {threads}, queue {})\n",
                m.name,
                m.path.display(),
                m.slots,
                m.context_size,
                m.kv_type_k.as_str(),
                m.kv_type_v.as_str(),
                m.queue_depth
            ));
            if let Some(t) = &m.chat_template {
                out.push_str(&format!("chat template: {t} (model.chat_template, llama.cpp built-in)\n"));
            }
        } else {
            out.push_str("model: disabled (model calls answer 503)\n");
        }
        let e = &self.embedding;
        if e.enabled {
            let threads = e.threads.map_or_else(|| "as the model".to_owned(), |t| t.to_string());
            out.push_str(&format!(
                "embedding: {} (threads {threads}, {} texts per batch, at most {} tokens each, queue {})\n",
                e.path.display(),
                e.batch_texts,
                e.max_tokens,
                e.queue
            ));
        } else {
            out.push_str("embedding: disabled\n");
        }
        let c = &self.cache;
        if c.enabled {
            let size = if c.max_bytes == 0 { "derived from the memory limit".to_owned() } else { format!("{} bytes", c.max_bytes) };
            let persist = if c.persist { "kept in the store" } else { "memory only" };
            let apps: Vec<String> = c
                .apps
                .iter()
                .map(|(id, a)| match (a.always, a.semantic_threshold) {
                    (true, Some(t)) => format!("{id}: always, semantic {t}"),
                    (true, None) => format!("{id}: always"),
                    (false, Some(t)) => format!("{id}: semantic {t}"),
                    (false, None) => format!("{id}: as the defaults"),
                })
                .collect();
            let apps = if apps.is_empty() { String::new() } else { format!("; {}", apps.join(", ")) };
            out.push_str(&format!("response cache: {size}, answers served for {}s, {persist}{apps}\n", c.ttl.as_secs()));
        } else {
            out.push_str("response cache: disabled\n");
        }
        let w = &self.workflow;
        let allow = if w.http_allow.is_empty() { "nothing".to_owned() } else { w.http_allow.join(", ") };
        out.push_str(&format!(
            "workflow: at most {} steps, node timeout {}s, run timeout {}s, {} in parallel; http-request may reach {allow}\n",
            w.limits.max_steps,
            w.limits.node_timeout.as_secs(),
            w.limits.run_timeout.as_secs(),
            w.limits.max_parallel
        ));
        let u = &self.upstream;
        match &u.url {
            Some(url) => {
                let key = match (&u.api_key_file, &u.api_key) {
                    (Some(file), _) => format!("key from {}", file.display()),
                    (None, Some(_)) => "key set".to_owned(),
                    (None, None) => "no key".to_owned(),
                };
                let fallback = if u.fallback_local { "falls back to the local model" } else { "no fallback" };
                out.push_str(&format!("upstream: {url} ({key}, {fallback})\n"));
            }
            None => out.push_str("upstream: none\n"),
        }
        let mut rules: Vec<String> = self.model_map.entries.iter().map(|(k, v)| format!("{k} -> {}", v.describe())).collect();
        rules.push(format!("default -> {}", self.model_map.default.describe()));
        out.push_str(&format!("model map: {}\n", rules.join(", ")));
        let up = &self.update;
        if up.enabled {
            out.push_str(&format!(
                "update: A/B slots in {} (rollback after {} starts of a pending version, commit after {}s healthy)\n",
                up.dir.display(),
                up.max_attempts,
                up.commit_after.as_secs()
            ));
        } else {
            out.push_str("update: disabled (the installed binary always runs)\n");
        }
        let ids: Vec<&str> = self.apps.iter().map(|a| a.id.as_str()).collect();
        out.push_str(&format!("apps: {}{}", ids.len(), if ids.is_empty() { String::new() } else { format!(" ({})", ids.join(", ")) }));
        out
    }
}
