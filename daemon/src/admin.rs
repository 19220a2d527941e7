//! The operator's view of the daemon, shared by both control front ends (the
//! admin HTTP API on the unix socket and D-Bus): who counts as an operator,
//! and the status, app, key, cache and doctor reports as edgeai-common's admin types,
//! built once from the service layer. Each front end encodes them its own way
//! (JSON; `a{sv}`). Knows neither HTTP nor D-Bus.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use edgeai_common::admin as wire;

use crate::model::{Load, ModelError, ModelRuntime, Unload};
use crate::service::{Service, ServiceError};
use crate::store::{ApiKeyInfo, KeyScope, StoredApp};

/// What the daemon knows about itself that the service layer does not.
#[derive(Debug, Clone)]
pub struct Facts {
    pub started: Instant,
    pub tcp_addr: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    pub cpu_features: String,
    /// `server.admin_group`'s gid, when the group exists.
    pub admin_gid: Option<u32>,
    /// The configuration files read at start (a backup carries them).
    pub config_sources: Vec<PathBuf>,
    /// The embedding model the configuration asks for, if any.
    pub embedding: Option<EmbeddingFacts>,
}

/// The configured embedding model (`[embedding]`), for ListModels.
#[derive(Debug, Clone)]
pub struct EmbeddingFacts {
    /// The GGUF's path, or `upstream:<model>` for `embedding.upstream_model`.
    pub path: String,
    pub threads: u32,
    /// Tokens per input (`embedding.max_tokens`).
    pub max_tokens: u32,
}

/// Root, a user whose primary group is the admin group, or a listed member
/// of it. `gid` is the caller's primary group when the transport tells it
/// (SO_PEERCRED does; D-Bus gives only the uid, so it is looked up). The
/// look-ups go through NSS, which may block: they run off the event loop.
pub async fn is_admin(admin_gid: Option<u32>, uid: u32, gid: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(admin_gid) = admin_gid else { return false };
    if gid == Some(admin_gid) {
        return true;
    }
    tokio::task::spawn_blocking(move || {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten()?;
        if user.gid.as_raw() == admin_gid {
            return Some(true);
        }
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(admin_gid)).ok().flatten()?;
        Some(group.mem.contains(&user.name))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// The daemon's state word: starting, ready, degraded or stopping.
pub fn state_word(svc: &Service) -> &'static str {
    match (svc.is_shutting_down(), svc.model_report().status.state) {
        (true, _) => "stopping",
        (false, "ready") => "ready",
        (false, "loading") => "starting",
        (false, _) => "degraded",
    }
}

pub fn status(svc: &Service, facts: &Facts) -> wire::StatusResponse {
    let report = svc.model_report();
    let (st, cfg) = (report.status, &report.config);
    wire::StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        state: state_word(svc).to_owned(),
        uptime_secs: facts.started.elapsed().as_secs(),
        listen: facts.tcp_addr.map(|a| a.to_string()),
        socket: facts.socket.as_ref().map(|p| p.display().to_string()),
        in_flight: svc.in_flight(),
        model: wire::ModelStatus {
            name: cfg.name.clone(),
            path: cfg.path.display().to_string(),
            state: st.state.to_owned(),
            error: st.error,
            threads: report.threads,
            slots: cfg.slots,
            context_size: cfg.context_size,
            cpu_features: facts.cpu_features.clone(),
            kind: None,
            model_id: None,
        },
        code: Some({
            let c = svc.code_status();
            let (python, python_unavailable) = match c.python {
                Ok(p) => (Some(p), None),
                Err(why) => (None, Some(why)),
            };
            wire::CodeStatus { javascript: c.javascript, python, python_unavailable, max_concurrent: c.max_concurrent as u32 }
        }),
        memory: svc.governor().map(|g| {
            let (l, b) = (g.limits(), g.budget());
            wire::MemoryStatus {
                pressure: g.stage().as_str().to_owned(),
                limit_bytes: l.memory_max,
                high_bytes: l.memory_high,
                working_set_bytes: l.working_set(),
                budget: wire::MemoryBudget {
                    model_file_bytes: b.model_file,
                    kv_cache_bytes: b.kv_cache,
                    request_buffer_bytes: b.request_buffers,
                    response_cache_bytes: Some(b.response_cache),
                    total_bytes: b.total(),
                },
            }
        }),
    }
}

/// The daemon's doctor checks on the wire.
pub async fn doctor(svc: &Service) -> wire::DoctorReport {
    use crate::service::doctor::Status;
    let checks = crate::service::doctor::run(svc)
        .await
        .into_iter()
        .map(|c| wire::DoctorCheck {
            name: c.name.to_owned(),
            status: match c.status {
                Status::Pass => wire::CheckStatus::Pass,
                Status::Warn => wire::CheckStatus::Warn,
                Status::Fail => wire::CheckStatus::Fail,
            },
            message: c.message,
            fix: c.fix,
        })
        .collect();
    wire::DoctorReport { checks }
}

pub fn cache_stats(svc: &Service) -> wire::CacheStats {
    let s = svc.cache().map(|c| c.stats()).unwrap_or_default();
    let asked = s.hits + s.misses;
    let hit_rate = if asked == 0 { 0.0 } else { s.hits as f64 / asked as f64 };
    wire::CacheStats {
        enabled: s.enabled,
        hits: s.hits,
        misses: s.misses,
        hit_rate,
        entries: s.entries,
        bytes: s.bytes,
        max_bytes: s.max_bytes,
        evictions: s.evictions,
    }
}

pub fn app_info(a: &StoredApp) -> wire::AppInfo {
    wire::AppInfo {
        id: a.id.clone(),
        name: a.name.clone(),
        mode: a.mode.clone(),
        version: a.version,
        created_at: a.created_at,
        updated_at: a.updated_at,
        active_keys: a.active_keys,
    }
}

/// A dataset key belongs to no app: the store keeps its `app_id` empty.
pub fn key_kind(k: &ApiKeyInfo) -> wire::KeyKind {
    match k.scope {
        KeyScope::App(_) => wire::KeyKind::App,
        KeyScope::Datasets => wire::KeyKind::Dataset,
    }
}

pub fn key_info(k: &ApiKeyInfo) -> wire::KeyInfo {
    wire::KeyInfo {
        id: k.id.clone(),
        kind: key_kind(k),
        app_id: k.app_id().unwrap_or_default().to_owned(),
        prefix: k.prefix.clone(),
        created_at: k.created_at,
        revoked_at: k.revoked_at,
        last_used_at: k.last_used_at,
    }
}

pub fn model_mapping_info(m: crate::service::workflow::ModelMapping) -> wire::ModelMappingInfo {
    wire::ModelMappingInfo {
        node_id: m.node_id,
        node_title: m.node_title,
        provider: m.provider,
        name: m.name,
        target: m.target,
        rule: m.rule,
    }
}

pub fn version_info(v: crate::store::AppVersionInfo) -> wire::AppVersionInfo {
    wire::AppVersionInfo { version: v.version, workflow_id: v.workflow_id, source: v.source, created_at: v.created_at, active: v.active }
}

/// Every model the daemon has: the chat model (kind "chat") and, when the
/// configuration asks for one, the embedding model (kind "embedding";
/// "ready" when it loaded at start, else "failed").
pub fn models(svc: &Service, facts: &Facts) -> Vec<wire::ModelStatus> {
    let chat = wire::ModelStatus { kind: Some("chat".into()), ..status(svc, facts).model };
    let mut out = vec![chat];
    if let Some(e) = &facts.embedding {
        let model_id = svc.knowledge().and_then(|k| k.embedding_model()).map(str::to_owned);
        let (state, error) = match &model_id {
            Some(_) => ("ready", None),
            None => (
                "failed",
                Some("the embedding model did not load at start (see the daemon log); knowledge bases search by full text".to_owned()),
            ),
        };
        out.push(wire::ModelStatus {
            name: embedding_name(e, model_id.as_deref()),
            path: e.path.clone(),
            state: state.to_owned(),
            error,
            threads: e.threads,
            slots: 1,
            context_size: e.max_tokens,
            cpu_features: facts.cpu_features.clone(),
            kind: Some("embedding".into()),
            model_id,
        });
    }
    out
}

/// The embedding model's name in ListModels: the model's `general.name`
/// (its id without the hash) once loaded, else the file's stem.
fn embedding_name(e: &EmbeddingFacts, model_id: Option<&str>) -> String {
    match model_id {
        Some(id) => id.split('@').next().unwrap_or(id).to_owned(),
        None => std::path::Path::new(&e.path).file_stem().map_or_else(|| e.path.clone(), |s| s.to_string_lossy().into_owned()),
    }
}

/// Whether `name` names the embedding model: its ListModels name, its id,
/// or the word "embedding".
pub fn is_embedding_model(svc: &Service, facts: &Facts, name: &str) -> bool {
    let Some(e) = &facts.embedding else { return false };
    let model_id = svc.knowledge().and_then(|k| k.embedding_model());
    name == "embedding" || name == embedding_name(e, model_id) || model_id == Some(name)
}

/// The chat model named `name` ("" for it), for LoadModel and UnloadModel:
/// the embedding model is refused (only the chat model can be loaded or
/// unloaded), another name is not found.
pub fn chat_model<'a>(svc: &'a Service, facts: &Facts, name: &str) -> Result<&'a Arc<ModelRuntime>, ServiceError> {
    let rt = svc.model_runtime();
    if name.is_empty() || name == rt.config.name {
        Ok(rt)
    } else if is_embedding_model(svc, facts, name) {
        Err(ServiceError::InvalidParam(format!(
            "{name:?} is the embedding model: only the chat model can be loaded or unloaded ({:?})",
            rt.config.name
        )))
    } else {
        Err(ServiceError::ModelNotFound { name: name.to_owned(), chat: rt.config.name.clone() })
    }
}

/// LoadModel's and UnloadModel's answer.
pub fn lifecycle(rt: &ModelRuntime, state: &str, already: bool) -> wire::ModelLifecycleResponse {
    wire::ModelLifecycleResponse { name: rt.config.name.clone(), state: state.to_owned(), already, load_ms: None, rss_freed_bytes: None }
}

/// Starts loading the chat model; `Ok(false)` when it is loaded already.
/// Loading or unloading now: the model's error (busy); disabled in the
/// configuration: an invalid request.
pub fn start_load(rt: &Arc<ModelRuntime>) -> Result<bool, ServiceError> {
    match rt.load() {
        Ok(Load::Started) => Ok(true),
        Ok(Load::AlreadyReady) => Ok(false),
        Err(ModelError::Disabled) => Err(ServiceError::InvalidParam(format!(
            "{}: there is no model to load; enable it and restart the daemon",
            ModelError::Disabled
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The end of a load [`start_load`] started: the answer once ready, or the
/// load's error.
pub fn load_outcome(rt: &ModelRuntime, load_ms: u64) -> Result<wire::ModelLifecycleResponse, ServiceError> {
    let status = rt.status();
    match status.state {
        "ready" => {
            tracing::info!(model = %rt.config.name, load_ms, "model loaded on an operator's request");
            Ok(wire::ModelLifecycleResponse { load_ms: Some(load_ms), ..lifecycle(rt, "ready", false) })
        }
        _ => Err(ModelError::LoadFailed { reason: status.error.unwrap_or_else(|| format!("the model is {}", status.state)) }.into()),
    }
}

/// How long an unload waits for the generations that run to finish.
pub const UNLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Unloads the chat model (see `ModelRuntime::unload`), measuring how much
/// the daemon's VmRSS shrank. A disabled model answers "disabled"; a load
/// under way is the model's error (busy).
pub async fn unload(rt: &ModelRuntime) -> Result<wire::ModelLifecycleResponse, ServiceError> {
    let before = crate::governor::rss_bytes();
    match rt.unload(UNLOAD_WAIT).await {
        Ok(Unload::Done) => {
            let rss_freed_bytes = before.zip(crate::governor::rss_bytes()).map(|(b, a)| b.saturating_sub(a));
            tracing::info!(model = %rt.config.name, rss_freed_bytes, "model unloaded on an operator's request");
            Ok(wire::ModelLifecycleResponse { rss_freed_bytes, ..lifecycle(rt, "unloaded", false) })
        }
        Ok(Unload::Already) => Ok(lifecycle(rt, "unloaded", true)),
        Ok(Unload::StillRunning) => {
            tracing::warn!(model = %rt.config.name, wait_s = UNLOAD_WAIT.as_secs(), "generations still run; the model unloads when they end");
            Ok(lifecycle(rt, "unloading", false))
        }
        Err(ModelError::Disabled) => Ok(lifecycle(rt, "disabled", true)),
        Err(e) => Err(e.into()),
    }
}
