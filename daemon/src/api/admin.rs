//! The admin API (`/admin/v1/...`), served only on the unix socket and only
//! to root or members of `server.admin_group` (checked from SO_PEERCRED):
//! status, apps (list, import as JSON or Dify DSL, versions, activate,
//! export as DSL), API keys of apps and of the Knowledge API (create, list,
//! revoke), a chat route that is authorised by the peer instead of a key,
//! and the Knowledge API itself under `/admin/v1/datasets` (the handlers of
//! `/v1/datasets`, without a dataset key: `edgeaictl datasets`), and the
//! response cache's stats and flush (`/admin/v1/cache`), and the log
//! export (`/admin/v1/export/logs`, a streamed Arrow or Parquet file).

use std::sync::Arc;

use edgeai_common::admin as wire;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::error::ApiError;
use super::ApiState;
use crate::engine::AppDefinition;
use crate::service::ServiceError;
use crate::store::{ApiKeyInfo, KeyScope, StoredApp};

/// Root, the admin group as primary group, or a listed member of it.
pub async fn authorise(state: &ApiState, uid: u32, gid: u32) -> Result<(), ApiError> {
    if uid == 0 {
        return Ok(());
    }
    let Some(admin_gid) = state.admin_gid else { return Err(ApiError::NotAdmin) };
    if gid == admin_gid {
        return Ok(());
    }
    // Supplementary groups need NSS look-ups, which may block: off the loop.
    let member = tokio::task::spawn_blocking(move || {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten()?;
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(admin_gid)).ok().flatten()?;
        Some(group.mem.contains(&user.name))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false);
    if member {
        Ok(())
    } else {
        Err(ApiError::NotAdmin)
    }
}

pub async fn route(state: &Arc<ApiState>, rest: &[String], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let r: Vec<&str> = rest.iter().map(String::as_str).collect();
    let m = req.method().clone();
    let svc = &state.service;
    match (r.as_slice(), &m) {
        (["status"], &Method::GET) => reply(StatusCode::OK, &status(state)),
        (["apps"], &Method::GET) => {
            let apps = svc.stored_apps().await?;
            reply(StatusCode::OK, &wire::AppList { data: apps.iter().map(app_info).collect() })
        }
        (["apps"], &Method::POST) => {
            let app: AppDefinition = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let id = app.id.clone();
            let v = svc.put_app(app, "import").await?;
            let stored = svc.stored_app(&id).await?;
            tracing::info!(app = %id, version = v.version, created = v.created, "app imported");
            reply(if v.created { StatusCode::CREATED } else { StatusCode::OK }, &app_info(&stored))
        }
        (["apps", "dsl"], &Method::POST) => {
            // A DSL may be up to MAX_DSL_BYTES of YAML, which JSON escaping can double.
            let limit = state.limits.max_body_bytes.max(2 * crate::engine::workflow::dsl::MAX_DSL_BYTES);
            let b: wire::ImportDslRequest = body::typed(body::read_json(req.into_body(), limit).await?)?;
            let (v, models) = svc.import_dsl(&b.yaml, b.id, b.name, &b.datasets).await?;
            let stored = svc.stored_app(&v.app_id).await?;
            tracing::info!(app = %v.app_id, version = v.version, created = v.created, mode = %stored.mode, "DSL imported");
            let models = models
                .into_iter()
                .map(|m| wire::ModelMappingInfo {
                    node_id: m.node_id,
                    node_title: m.node_title,
                    provider: m.provider,
                    name: m.name,
                    target: m.target,
                    rule: m.rule,
                })
                .collect();
            reply(if v.created { StatusCode::CREATED } else { StatusCode::OK }, &wire::ImportDslResponse { app: app_info(&stored), models })
        }
        (["apps", id, "versions"], &Method::GET) => {
            let data = svc
                .app_versions(id)
                .await?
                .into_iter()
                .map(|v| wire::AppVersionInfo {
                    version: v.version,
                    workflow_id: v.workflow_id,
                    source: v.source,
                    created_at: v.created_at,
                    active: v.active,
                })
                .collect();
            reply(StatusCode::OK, &wire::AppVersionList { data })
        }
        (["apps", id, "activate"], &Method::POST) => {
            let b: wire::ActivateRequest = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let stored = svc.activate_app_version(id, b.version).await?;
            reply(StatusCode::OK, &app_info(&stored))
        }
        (["apps", id, "export"], &Method::GET) => {
            let q: std::collections::HashMap<String, String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
            let version = match q.get("version").filter(|v| !v.is_empty()) {
                None => None,
                Some(v) => {
                    Some(v.parse::<u32>().map_err(|_| ApiError::InvalidParam(format!("version must be a positive integer, not {v:?}")))?)
                }
            };
            let (version, yaml) = svc.export_app(id, version).await?;
            reply(StatusCode::OK, &wire::ExportResponse { app_id: (*id).to_owned(), version, yaml })
        }
        (["apps", id, "chat-messages"], &Method::POST) => {
            let app = svc.app(id).ok_or_else(|| ServiceError::AppNotFound((*id).to_owned()))?;
            // One operator route for both kinds of app: a completion app
            // answers as through completion-messages.
            let route = match app.mode {
                crate::engine::AppMode::Chat | crate::engine::AppMode::AdvancedChat => "chat-messages",
                crate::engine::AppMode::Completion => "completion-messages",
                crate::engine::AppMode::Workflow => return Err(ApiError::NotChatApp),
            };
            super::dify::route(state, app, &[route.to_owned()], req).await
        }
        (["keys"], &Method::GET) => {
            let q: std::collections::HashMap<String, String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
            let app = q.get("app").filter(|a| !a.is_empty());
            let keys = svc.keys(app.map(String::as_str)).await?;
            reply(StatusCode::OK, &wire::KeyList { data: keys.iter().map(key_info).collect() })
        }
        (["keys"], &Method::POST) => {
            let b: wire::CreateKeyRequest = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let (info, secret) = match (b.app.filter(|a| !a.is_empty()), b.dataset) {
                (Some(app), false) => svc.create_key(&app).await?,
                (None, true) => svc.create_dataset_key().await?,
                (Some(_), true) => {
                    return Err(ApiError::InvalidParam("a key opens an app or the Knowledge API: give app or dataset, not both".into()))
                }
                (None, false) => return Err(ApiError::InvalidParam("app is required (or dataset: true for a Knowledge API key)".into())),
            };
            let kind = key_kind(&info);
            let app_id = info.app_id().unwrap_or_default().to_owned();
            reply(StatusCode::CREATED, &wire::CreatedKey { id: info.id, kind, app_id, key: secret, created_at: info.created_at })
        }
        (["keys", id], &Method::DELETE) => {
            svc.revoke_key(id).await?;
            Ok(body::empty(StatusCode::NO_CONTENT))
        }
        (["cache"], &Method::GET) => reply(StatusCode::OK, &cache_stats(svc)),
        (["cache"], &Method::DELETE) => {
            let q: std::collections::HashMap<String, String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
            let app = q.get("app").filter(|a| !a.is_empty()).cloned();
            let flushed = svc.flush_cache(app.as_deref()).await?;
            reply(StatusCode::OK, &wire::CacheFlushResponse { app, flushed })
        }
        (["export", "logs"], &Method::GET) => {
            let q: std::collections::HashMap<String, String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
            let export = crate::service::export::start(svc.store(), export_request(&q)?).await?;
            Ok(export_response(export))
        }
        // The Knowledge API for the operator: Dify's routes, no key.
        (["datasets", rest @ ..], _) => {
            let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
            super::datasets::serve(state, &rest, req, super::datasets::Caller::Admin).await
        }
        (
            ["status"]
            | ["apps"]
            | ["apps", "dsl"]
            | ["apps", _, "versions" | "activate" | "export" | "chat-messages"]
            | ["keys"]
            | ["keys", _]
            | ["cache"]
            | ["export", "logs"],
            _,
        ) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NoRoute),
    }
}

fn status(state: &ApiState) -> wire::StatusResponse {
    let svc = &state.service;
    let report = svc.model_report();
    let (st, cfg) = (report.status, &report.config);
    let state_word = match (svc.is_shutting_down(), st.state) {
        (true, _) => "stopping",
        (false, "ready") => "ready",
        (false, "loading") => "starting",
        (false, _) => "degraded",
    };
    wire::StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        state: state_word.to_owned(),
        uptime_secs: state.started.elapsed().as_secs(),
        listen: state.tcp_addr.map(|a| a.to_string()),
        socket: state.limits.socket.as_ref().map(|p| p.display().to_string()),
        in_flight: svc.in_flight(),
        model: wire::ModelStatus {
            name: cfg.name.clone(),
            path: cfg.path.display().to_string(),
            state: st.state.to_owned(),
            error: st.error,
            threads: report.threads,
            slots: cfg.slots,
            context_size: cfg.context_size,
            cpu_features: state.cpu_features.clone(),
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

fn cache_stats(svc: &crate::service::Service) -> wire::CacheStats {
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

fn app_info(a: &StoredApp) -> wire::AppInfo {
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
fn key_kind(k: &ApiKeyInfo) -> wire::KeyKind {
    match k.scope {
        KeyScope::App(_) => wire::KeyKind::App,
        KeyScope::Datasets => wire::KeyKind::Dataset,
    }
}

fn key_info(k: &ApiKeyInfo) -> wire::KeyInfo {
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

/// A wire type as a JSON response.
fn reply<T: serde::Serialize>(status: StatusCode, v: &T) -> Result<Response<Body>, ApiError> {
    let v = serde_json::to_value(v).map_err(|e| ApiError::Encode(e.to_string()))?;
    Ok(body::json(status, &v))
}

/// `table` (default messages), `format` (required), `since`/`until` (unix
/// seconds) and `app` of `GET /admin/v1/export/logs`.
fn export_request(q: &std::collections::HashMap<String, String>) -> Result<crate::service::export::ExportRequest, ApiError> {
    use crate::service::export::{table_from_name, ExportFormat, ExportRequest};
    let seconds = |name: &str| match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<i64>().map(Some).map_err(|_| ApiError::InvalidParam(format!("{name} must be unix seconds, not {v:?}"))),
    };
    let format = q.get("format").ok_or_else(|| ApiError::InvalidParam("format is required: arrow or parquet".into()))?;
    Ok(ExportRequest {
        table: table_from_name(q.get("table").map_or("messages", String::as_str))?,
        format: ExportFormat::from_name(format)?,
        filter: crate::store::LogFilter {
            app_id: q.get("app").filter(|a| !a.is_empty()).cloned(),
            since: seconds("since")?,
            until: seconds("until")?,
        },
    })
}

/// Trailer fields of an export: `complete` or `failed`, the row count, and
/// why it failed.
const EXPORT_TRAILERS: &str = "x-edgeai-export, x-edgeai-export-rows, x-edgeai-export-error";

/// Streams the export's file; its trailers say whether it is whole (an
/// error after the head can only be told that way).
fn export_response(export: crate::service::export::LogExport) -> Response<Body> {
    use crate::service::export::ExportError;
    use http::HeaderValue;
    let (tx, trailers_tx, response) = body::download_response(export.format().content_type(), EXPORT_TRAILERS);
    tokio::spawn(async move {
        let mut fields = http::HeaderMap::new();
        match export.write_to(crate::service::export::ChannelSink::new(tx)).await {
            Ok(summary) => {
                fields.insert("x-edgeai-export", HeaderValue::from_static("complete"));
                fields.insert("x-edgeai-export-rows", HeaderValue::from(summary.rows));
            }
            Err(e) => {
                let gone = matches!(&e, ExportError::Write { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe);
                let e = ApiError::from(e);
                if gone {
                    tracing::info!(error = %crate::telemetry::chain(&e), "log export stopped: the client went away");
                } else {
                    tracing::error!(error = %crate::telemetry::chain(&e), "log export failed after it started");
                }
                let m = e.mapped();
                fields.insert("x-edgeai-export", HeaderValue::from_static("failed"));
                let why: String =
                    format!("{}: {}", m.code, m.message).chars().map(|c| if c.is_ascii_graphic() { c } else { ' ' }).collect();
                if let Ok(v) = HeaderValue::from_str(&why) {
                    fields.insert("x-edgeai-export-error", v);
                }
            }
        }
        // The reader may be gone already; then nobody needs the trailers.
        let _ = trailers_tx.send(fields);
    });
    response
}
