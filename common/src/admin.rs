//! JSON shapes of the admin API served on the daemon's unix socket
//! (`/admin/v1/...`), and Dify's error body used by every endpoint.
//!
//! Owns: the serde types only. Must not: know about HTTP, sockets or the
//! store; the daemon maps its own state into these types at the boundary.

use serde::{Deserialize, Serialize};

/// Path prefix of every admin endpoint.
pub const ADMIN_PREFIX: &str = "/admin/v1";

/// `GET /admin/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: String,
    /// `"starting"`, `"ready"`, `"degraded"` or `"stopping"`.
    pub state: String,
    pub uptime_secs: u64,
    /// TCP listen address, if the daemon listens on TCP.
    pub listen: Option<String>,
    /// Unix socket path, if the daemon listens on one.
    pub socket: Option<String>,
    /// Requests being served right now.
    pub in_flight: u64,
    pub model: ModelStatus,
    /// Workflow code nodes; absent from daemons before code nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeStatus>,
    /// The memory governor; absent from daemons before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStatus>,
}

/// The memory governor, in [`StatusResponse::memory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStatus {
    /// `"normal"`, `"shrinking"` (caches asked to give memory back) or
    /// `"shedding"` (new generations refused with 503).
    pub pressure: String,
    /// The cgroup's hard limit (v2 `memory.max`, v1 `memory.limit_in_bytes`).
    pub limit_bytes: Option<u64>,
    /// The cgroup's v2 `memory.high`.
    pub high_bytes: Option<u64>,
    /// The cgroup's usage less its inactive file cache (what reclaim cannot
    /// easily take back), as the watermarks see it.
    pub working_set_bytes: Option<u64>,
    /// What the daemon itself needs, computed at start.
    pub budget: MemoryBudget,
}

/// The daemon's own memory budget, in [`MemoryStatus::budget`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBudget {
    /// The model file, mapped.
    pub model_file_bytes: u64,
    /// KV cells × bytes per cell for the configured KV types; absent until
    /// the model is loaded (its shape is read from it).
    pub kv_cache_bytes: Option<u64>,
    /// Per-request buffers (an estimate: logits and batch buffers of the
    /// slots, and the queued requests' channels).
    pub request_buffer_bytes: u64,
    /// The response cache's byte budget (absent from a daemon before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_cache_bytes: Option<u64>,
    pub total_bytes: u64,
}

/// What runs workflow code nodes, in [`StatusResponse::code`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeStatus {
    /// The embedded JavaScript engine.
    pub javascript: String,
    /// The Python interpreter (`/usr/bin/python3.11 (3.11.2)`), when
    /// Python code nodes can run.
    pub python: Option<String>,
    /// Why Python code nodes cannot run, when they cannot.
    pub python_unavailable: Option<String>,
    /// Most code runs at once.
    pub max_concurrent: u32,
}

/// The local model as reported in [`StatusResponse::model`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStatus {
    pub name: String,
    pub path: String,
    /// `"disabled"`, `"loading"`, `"ready"`, `"failed"`, `"unloading"` or
    /// `"unloaded"` (an operator's `edgeaictl models unload`).
    pub state: String,
    /// Why loading failed, when `state` is `"failed"`.
    pub error: Option<String>,
    pub threads: u32,
    pub slots: u32,
    pub context_size: u32,
    pub cpu_features: String,
    /// In `ListModels`: `"chat"` or `"embedding"`; absent in the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The embedding model's id (`general.name@<sha256 prefix>`, or `upstream:<model>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
}

/// `GET /admin/v1/cache`: the response cache's counters since start and its size now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    /// `cache.enabled`.
    pub enabled: bool,
    pub hits: u64,
    /// Cacheable requests the cache could not answer.
    pub misses: u64,
    /// hits / (hits + misses); 0 before any cacheable request.
    pub hit_rate: f64,
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Answers evicted to stay within `max_bytes` (or to give memory back).
    pub evictions: u64,
}

/// `DELETE /admin/v1/cache[?app=ID]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheFlushResponse {
    /// The app flushed; `None`: every app.
    pub app: Option<String>,
    /// Cached answers dropped.
    pub flushed: u64,
}

/// One app as listed by `GET /admin/v1/apps` and returned by an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub id: String,
    pub name: String,
    /// `"chat"`, `"completion"`, `"workflow"` or `"advanced-chat"`.
    pub mode: String,
    /// Active version; each import that changes the definition adds one.
    pub version: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
    /// Keys of this app that are not revoked.
    pub active_keys: u32,
}

/// `GET /admin/v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppList {
    pub data: Vec<AppInfo>,
}

/// Which API a key opens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// An `app-…` key: one app's Dify and OpenAI routes.
    #[default]
    App,
    /// A `dataset-…` key: the Knowledge API (`/v1/datasets`), every dataset.
    Dataset,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::App => "app",
            KeyKind::Dataset => "dataset",
        }
    }
}

/// One API key as listed by `GET /admin/v1/keys`; the secret is never listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    /// Absent from older daemons, which had app keys only.
    #[serde(default)]
    pub kind: KeyKind,
    /// The key's app; empty for a dataset key.
    pub app_id: String,
    /// The first characters of the key, enough to recognise it.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// Unix seconds.
    pub last_used_at: Option<i64>,
}

/// `GET /admin/v1/keys[?app=ID]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub data: Vec<KeyInfo>,
}

/// Body of `POST /admin/v1/keys`: an app key (`app`) or a Knowledge API
/// key (`dataset: true`), exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateKeyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dataset: bool,
}

/// Answer of `POST /admin/v1/keys`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub id: String,
    #[serde(default)]
    pub kind: KeyKind,
    /// The key's app; empty for a dataset key.
    pub app_id: String,
    /// The full `app-…` or `dataset-…` key.
    pub key: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Body of `POST /admin/v1/apps/dsl`: a Dify app DSL document (YAML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportDslRequest {
    pub yaml: String,
    /// The app id; default: the DSL's name, slugified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Overrides the DSL's `app.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Dataset ids of the DSL mapped to local datasets (id or name):
    /// `[[old, new], …]` from `--dataset OLD=NEW`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<(String, String)>,
}

/// Which model a node's cloud model was mapped to (config `[model_map]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMappingInfo {
    pub node_id: String,
    pub node_title: String,
    /// The DSL's `model.provider` and `model.name`.
    pub provider: String,
    pub name: String,
    /// `local:<model>` or `upstream:<model>`.
    pub target: String,
    /// The `[model_map]` entry that matched, or `default`.
    pub rule: String,
}

/// Answer of `POST /admin/v1/apps/dsl` (201 with a new version, 200 unchanged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportDslResponse {
    pub app: AppInfo,
    pub models: Vec<ModelMappingInfo>,
}

/// One stored version of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVersionInfo {
    pub version: u32,
    /// Dify's workflow id of this version (`POST /v1/workflows/{workflow_id}/run`).
    pub workflow_id: String,
    /// `config` or `import`.
    pub source: String,
    /// Unix seconds.
    pub created_at: i64,
    pub active: bool,
}

/// `GET /admin/v1/apps/{id}/versions`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVersionList {
    pub data: Vec<AppVersionInfo>,
}

/// Body of `POST /admin/v1/apps/{id}/activate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub version: u32,
}

/// `GET /admin/v1/apps/{id}/export[?version=N]`: the app as Dify DSL YAML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportResponse {
    pub app_id: String,
    pub version: u32,
    pub yaml: String,
}

/// Dify's error body, `{"code", "message", "status"}`, used by every endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub status: u16,
}

/// `GET /admin/v1/doctor`: the checks only the daemon can run, for
/// `edgeaictl doctor` (which adds its own: config, socket, D-Bus policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorReport {
    pub checks: Vec<DoctorCheck>,
}

/// One check's outcome; `fix` says what to do for a WARN or a FAIL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorCheck {
    pub name: String,
    pub status: CheckStatus,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

impl CheckStatus {
    /// `PASS`, `WARN` or `FAIL`, as `edgeaictl doctor` prints it.
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        }
    }
}

/// The names of the checks in [`DoctorReport`], in order: `edgeaictl doctor`
/// reports each as FAIL when the daemon cannot be asked.
pub const DAEMON_CHECKS: &[&str] = &["model file", "model load", "limits", "disk", "database"];

/// `edgeaictl models list` (D-Bus `ListModels`): the models the daemon serves with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    pub data: Vec<ModelStatus>,
}

/// D-Bus `Reload`: what the configuration reload changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub apps_updated: u32,
    pub apps_served: u32,
}

/// `format` of a backup archive's manifest (`edgeaictl backup`).
pub const BACKUP_FORMAT: &str = "edgeai-backup/1";
/// The manifest's member name: the archive's first member.
pub const BACKUP_MANIFEST: &str = "manifest.json";
/// The database snapshot's member name.
pub const BACKUP_STORE: &str = "store/edgeai.db";
/// Prefix of the knowledge bases' files (`knowledge.dir`, same layout below it).
pub const BACKUP_KNOWLEDGE_PREFIX: &str = "knowledge/";
/// Prefix of the config files the daemon read.
pub const BACKUP_CONFIG_PREFIX: &str = "config/";

/// `manifest.json` of a backup archive (a tar): what it holds and each
/// member's size and sha256, so it is checked offline before a restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// The daemon version that took it.
    pub edgeai_version: String,
    /// `PRAGMA user_version` of the snapshot.
    pub schema_version: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Every other member, in archive order.
    pub members: Vec<BackupMember>,
}

/// One file of a backup archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMember {
    /// Path inside the archive (`store/edgeai.db`, `knowledge/...`, `config/...`).
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// A config file's path on the daemon's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// D-Bus `LoadModel` and `UnloadModel`: the model's state afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelLifecycleResponse {
    pub name: String,
    /// `"ready"` after a load; `"unloaded"` (or `"unloading"` while
    /// generations still finish) after an unload; `"disabled"`.
    pub state: String,
    /// Nothing was done: the model was in that state already.
    #[serde(default)]
    pub already: bool,
    /// How long the load took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<u64>,
    /// How much the daemon's resident memory (VmRSS) shrank with the unload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_freed_bytes: Option<u64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_with_nulls() {
        let json = r#"{"version":"0.1.0","state":"ready","uptime_secs":5,"listen":null,
            "socket":"/run/edgeai/edgeai.sock","in_flight":0,
            "model":{"name":"smollm2","path":"/m.gguf","state":"failed","error":"bad magic",
            "threads":2,"slots":1,"context_size":2048,"cpu_features":"avx2"}}"#;
        let status: StatusResponse = serde_json::from_str(json).unwrap();
        assert_eq!(status.listen, None);
        assert_eq!(status.model.error.as_deref(), Some("bad magic"));
        let again: StatusResponse = serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
        assert_eq!(again, status);
    }

    #[test]
    fn key_list_rejects_wrong_types() {
        let err = serde_json::from_str::<KeyList>(
            r#"{"data":[{"id":"k1","app_id":"demo","prefix":"app-ab","created_at":"yesterday",
            "revoked_at":null,"last_used_at":null}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn key_requests_and_kinds_on_the_wire() {
        let app = CreateKeyRequest { app: Some("demo".into()), dataset: false };
        assert_eq!(serde_json::to_string(&app).unwrap(), r#"{"app":"demo"}"#);
        let dataset = CreateKeyRequest { app: None, dataset: true };
        assert_eq!(serde_json::to_string(&dataset).unwrap(), r#"{"dataset":true}"#);
        // An older daemon's key has no kind: an app key.
        let old: KeyInfo =
            serde_json::from_str(r#"{"id":"k1","app_id":"demo","prefix":"ab","created_at":0,"revoked_at":null,"last_used_at":null}"#)
                .unwrap();
        assert_eq!(old.kind, KeyKind::App);
        let created: CreatedKey =
            serde_json::from_str(r#"{"id":"k2","kind":"dataset","app_id":"","key":"dataset-x","created_at":0}"#).unwrap();
        assert_eq!((created.kind, created.kind.as_str()), (KeyKind::Dataset, "dataset"));
    }

    #[test]
    fn error_body_requires_all_fields() {
        assert!(serde_json::from_str::<ErrorBody>(r#"{"code":"forbidden","message":"no"}"#).is_err());
        let body: ErrorBody = serde_json::from_str(r#"{"code":"forbidden","message":"no","status":403}"#).unwrap();
        assert_eq!(body.status, 403);
    }
}

/// One audit trail entry, as `GET /admin/v1/audit` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntryInfo {
    pub id: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `admin` or `auth_failure`.
    pub kind: String,
    /// `tcp`, `unix` or `dbus`.
    pub channel: String,
    pub actor: String,
    pub action: String,
    /// `ok`, or the refusal's or failure's code.
    pub outcome: String,
    pub detail: String,
}

/// `GET /admin/v1/audit[?kind=&since=&before=&limit=]`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    pub data: Vec<AuditEntryInfo>,
    /// More entries match: ask again with `before` = the last id.
    pub has_more: bool,
}

/// `GET /admin/v1/update`: the A/B slots and the update state (docs/update.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// `update.enabled`.
    pub enabled: bool,
    /// `update.dir`: where `slots/`, `current` and `update-state.json` live.
    pub dir: String,
    /// What this process runs as: `"a"`, `"b"` or `"factory"` (the installed binary).
    pub running: String,
    /// Where the `current` link points: `"a"`, `"b"`, or `"factory"` (no link).
    pub current_link: String,
    /// `update-state.json`; `None` when nothing was ever installed (or it is unreadable: see `state_error`).
    pub state: Option<UpdateStateInfo>,
    /// Why the state file cannot be used (corrupt, another format); the daemon left it as it is.
    pub state_error: Option<String>,
    /// `slots/a` and `slots/b`.
    pub slots: Vec<SlotStatus>,
}

/// The update state, in [`UpdateStatus::state`]. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStateInfo {
    /// `"a"`, `"b"` or `"factory"`.
    pub current: String,
    /// What a rollback goes back to (`"a"`, `"b"`, `"factory"`), or none.
    pub previous: Option<String>,
    /// `"good"`, `"pending"` or `"rolled-back"`.
    pub status: String,
    pub version: String,
    pub previous_version: Option<String>,
    /// Starts of the pending version so far.
    pub attempts: u32,
    pub max_attempts: u32,
    pub switched_at: i64,
    pub committed_at: Option<i64>,
    /// The version a rollback left.
    pub failed_version: Option<String>,
    pub last_error: Option<String>,
    pub history: Vec<UpdateEvent>,
}

/// One history line of the update state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateEvent {
    pub at: i64,
    pub event: String,
    pub version: String,
    pub detail: Option<String>,
}

/// One slot directory, in [`UpdateStatus::slots`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// `"a"` or `"b"`.
    pub name: String,
    /// Its `manifest.json`'s version; none when the slot is empty or incomplete.
    pub version: Option<String>,
    /// Has a parsing `manifest.json` (written last by an install).
    pub complete: bool,
    /// Has `bin/edgeaid`.
    pub has_binary: bool,
    /// Why its manifest is unusable, if it is.
    pub problem: Option<String>,
}

/// The answer of `POST /admin/v1/update/mark-good|mark-bad|rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateActionResponse {
    /// `"mark-good"`, `"mark-bad"` or `"rollback"`.
    pub action: String,
    /// The state's status afterwards.
    pub status: String,
    /// What happened and what happens next, for a person.
    pub message: String,
    /// The daemon stops (exit 75) so systemd starts it again on the new choice.
    pub restarting: bool,
}
