//! The admin API (`/admin/v1/...`), served only on the unix socket and only
//! to root or members of `server.admin_group` (checked from SO_PEERCRED):
//! status, apps (list, import as JSON or Dify DSL, versions, activate,
//! export as DSL), API keys of apps and of the Knowledge API (create, list,
//! revoke), chat and workflow-run routes authorised by the peer instead of a key,
//! and the Knowledge API itself under `/admin/v1/datasets` (the handlers of
//! `/v1/datasets`, without a dataset key: `edgeaictl datasets`), and the
//! response cache's stats and flush (`/admin/v1/cache`), the daemon's
//! checks for `edgeaictl doctor` (`/admin/v1/doctor`), and the log
//! export (`/admin/v1/export/logs`, a streamed Arrow or Parquet file), and
//! the backup (`/admin/v1/backup`, a streamed tar of a consistent snapshot),
//! and the models (`/admin/v1/models`: the list; `POST .../{name}/load` and
//! `.../{name}/unload` for the chat model, as D-Bus LoadModel and UnloadModel),
//! and the audit trail (`/admin/v1/audit`: newest first, filtered),
//! and the A/B slot controls (`/admin/v1/update`: the state and slots;
//! `POST .../mark-good`, `.../mark-bad`, `.../rollback`, see `crate::update::ops`).

use std::sync::Arc;

use edgeai_common::admin as wire;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{self, Body};
use super::error::ApiError;
use super::ApiState;
use crate::engine::AppDefinition;
use crate::service::ServiceError;

/// Root, the admin group as primary group, or a listed member of it.
pub async fn authorise(state: &ApiState, uid: u32, gid: u32) -> Result<(), ApiError> {
    if crate::admin::is_admin(state.admin_gid, uid, Some(gid)).await {
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
        (["status"], &Method::GET) => reply(StatusCode::OK, &crate::admin::status(svc, &state.facts())),
        (["apps"], &Method::GET) => {
            let apps = svc.stored_apps().await?;
            reply(StatusCode::OK, &wire::AppList { data: apps.iter().map(crate::admin::app_info).collect() })
        }
        (["apps"], &Method::POST) => {
            let app: AppDefinition = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let id = app.id.clone();
            let v = svc.put_app(app, "import").await?;
            let stored = svc.stored_app(&id).await?;
            tracing::info!(app = %id, version = v.version, created = v.created, "app imported");
            reply(if v.created { StatusCode::CREATED } else { StatusCode::OK }, &crate::admin::app_info(&stored))
        }
        (["apps", "dsl"], &Method::POST) => {
            // A DSL may be up to MAX_DSL_BYTES of YAML, which JSON escaping can double.
            let limit = state.limits.max_body_bytes.max(2 * crate::engine::workflow::dsl::MAX_DSL_BYTES);
            let b: wire::ImportDslRequest = body::typed(body::read_json(req.into_body(), limit).await?)?;
            let (v, models) = svc.import_dsl(&b.yaml, b.id, b.name, &b.datasets).await?;
            let stored = svc.stored_app(&v.app_id).await?;
            tracing::info!(app = %v.app_id, version = v.version, created = v.created, mode = %stored.mode, "DSL imported");
            let models = models.into_iter().map(crate::admin::model_mapping_info).collect();
            reply(
                if v.created { StatusCode::CREATED } else { StatusCode::OK },
                &wire::ImportDslResponse { app: crate::admin::app_info(&stored), models },
            )
        }
        (["apps", id, "versions"], &Method::GET) => {
            let data = svc.app_versions(id).await?.into_iter().map(crate::admin::version_info).collect();
            reply(StatusCode::OK, &wire::AppVersionList { data })
        }
        (["apps", id, "activate"], &Method::POST) => {
            let b: wire::ActivateRequest = body::typed(body::read_json(req.into_body(), state.limits.max_body_bytes).await?)?;
            let stored = svc.activate_app_version(id, b.version).await?;
            reply(StatusCode::OK, &crate::admin::app_info(&stored))
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
            super::dify::route(state, super::Caller { app, user: None }, &[route.to_owned()], req).await
        }
        (["apps", id, "workflows", "run"], &Method::POST) => {
            // A workflow app's run for the operator (`edgeaictl run`), without a key.
            let app = svc.app(id).ok_or_else(|| ServiceError::AppNotFound((*id).to_owned()))?;
            super::workflow::route(state, super::Caller { app, user: None }, &["workflows".to_owned(), "run".to_owned()], req).await
        }
        (["keys"], &Method::GET) => {
            let q: std::collections::HashMap<String, String> =
                form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
            let app = q.get("app").filter(|a| !a.is_empty());
            let keys = svc.keys(app.map(String::as_str)).await?;
            reply(StatusCode::OK, &wire::KeyList { data: keys.iter().map(crate::admin::key_info).collect() })
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
            let kind = crate::admin::key_kind(&info);
            let app_id = info.app_id().unwrap_or_default().to_owned();
            reply(StatusCode::CREATED, &wire::CreatedKey { id: info.id, kind, app_id, key: secret, created_at: info.created_at })
        }
        (["keys", id], &Method::DELETE) => {
            svc.revoke_key(id).await?;
            Ok(body::empty(StatusCode::NO_CONTENT))
        }
        (["audit"], &Method::GET) => {
            let (filter, limit) = audit_filter(&super::dify::query(&req))?;
            let mut rows = svc.store().audit_list(crate::store::AuditFilter { limit: limit + 1, ..filter }).await?;
            let has_more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            reply(StatusCode::OK, &wire::AuditList { data: rows.into_iter().map(audit_info).collect(), has_more })
        }
        (["doctor"], &Method::GET) => reply(StatusCode::OK, &crate::admin::doctor(svc).await),
        (["cache"], &Method::GET) => reply(StatusCode::OK, &crate::admin::cache_stats(svc)),
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
        (["backup"], &Method::GET) => {
            let knowledge = state.knowledge.as_ref().map(|k| k.dir().to_path_buf());
            let snapshot = crate::service::backup::take(svc.store(), knowledge.as_deref(), &state.config_sources).await?;
            Ok(backup_response(snapshot))
        }
        (["models"], &Method::GET) => reply(StatusCode::OK, &wire::ModelList { data: crate::admin::models(svc, &state.facts()) }),
        (["models", name, "load"], &Method::POST) => {
            // As D-Bus LoadModel, without Progress: the answer comes once the model is ready or failed.
            let rt = Arc::clone(crate::admin::chat_model(svc, &state.facts(), name)?);
            let started = std::time::Instant::now();
            if !crate::admin::start_load(&rt)? {
                return reply(StatusCode::OK, &crate::admin::lifecycle(&rt, "ready", true));
            }
            while rt.status().state == "loading" {
                tokio::time::sleep(LOAD_POLL).await;
            }
            reply(StatusCode::OK, &crate::admin::load_outcome(&rt, started.elapsed().as_millis() as u64)?)
        }
        (["models", name, "unload"], &Method::POST) => {
            let rt = crate::admin::chat_model(svc, &state.facts(), name)?;
            reply(StatusCode::OK, &crate::admin::unload(rt).await?)
        }
        (["update"], &Method::GET) => {
            let u = Arc::clone(&state.update);
            reply(StatusCode::OK, &blocking(move || Ok(u.status())).await?)
        }
        (["update", action @ ("mark-good" | "mark-bad" | "rollback" | "install")], &Method::POST) => {
            let u = Arc::clone(&state.update);
            let answer = if *action == "install" {
                install_bundle(state, req).await?
            } else {
                let action = (*action).to_owned();
                blocking(move || match action.as_str() {
                    "mark-good" => u.mark_good(),
                    "mark-bad" => u.mark_bad(),
                    _ => u.rollback(),
                })
                .await?
            };
            if answer.restarting {
                // After the answer is on its way: the drain lets it finish, then exit 75.
                tokio::spawn(async {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    if let Err(e) = crate::request_restart() {
                        tracing::error!(error = %e, "update: cannot signal the daemon to restart");
                    }
                });
            }
            reply(StatusCode::OK, &answer)
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
            | ["apps", _, "workflows", "run"]
            | ["keys"]
            | ["keys", _]
            | ["cache"]
            | ["doctor"]
            | ["export", "logs"]
            | ["backup"]
            | ["models"]
            | ["models", _, "load" | "unload"]
            | ["update"]
            | ["update", "mark-good" | "mark-bad" | "rollback" | "install"],
            _,
        ) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NoRoute),
    }
}

/// `POST /admin/v1/update/install[?allow_downgrade=true][&reinstall=true][&url=URL]`:
/// the body is the bundle, written under the update directory (at most
/// `update.max_bundle_bytes`); or, with `url` and no body, the daemon
/// downloads it (`crate::update::download`, resumable). Then it is verified
/// and installed off the event loop; the received file is removed whatever
/// the outcome.
async fn install_bundle(state: &Arc<ApiState>, req: Request<Incoming>) -> Result<edgeai_common::admin::UpdateActionResponse, ApiError> {
    let (parts, mut body) = req.into_parts();
    let outcome = install_from(state, &parts, &mut body).await;
    if outcome.is_err() && !hyper::body::Body::is_end_stream(&body) {
        // A refusal before the body was read: read the rest and drop it
        // (for a while), as closing with unread input would reset the
        // connection and the client would see a broken pipe, not the error.
        drain(&mut body).await;
    }
    outcome
}

/// How long a refused install's unread body is read and dropped.
const REFUSED_BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn drain(body: &mut Incoming) {
    use http_body_util::BodyExt;
    let _ = tokio::time::timeout(REFUSED_BODY_WAIT, async { while let Some(Ok(_)) = body.frame().await {} }).await;
}

async fn install_from(
    state: &Arc<ApiState>,
    parts: &http::request::Parts,
    body: &mut Incoming,
) -> Result<edgeai_common::admin::UpdateActionResponse, ApiError> {
    let mut opts = crate::update::install::InstallOptions::default();
    let mut url = None;
    for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        if k == "url" {
            url = Some(v.into_owned());
            continue;
        }
        let flag = match v.as_ref() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => return Err(ApiError::InvalidParam(format!("{k} must be true or false, not {other:?}"))),
        };
        match k.as_ref() {
            "allow_downgrade" => opts.allow_downgrade = flag,
            "reinstall" => opts.reinstall = flag,
            other => return Err(ApiError::InvalidParam(format!("unknown parameter {other:?} (allow_downgrade, reinstall, url)"))),
        }
    }
    let settings = state.update.settings();
    if !settings.enabled {
        return Err(crate::update::UpdateError::Disabled.into());
    }
    let declared = parts.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let received = match url {
        Some(url) => {
            if declared.is_some_and(|n| n > 0) || parts.headers.contains_key(hyper::header::TRANSFER_ENCODING) {
                return Err(ApiError::InvalidParam("send the bundle as the body or name it with url=, not both".into()));
            }
            let progress = crate::update::download::Progress::default();
            crate::update::download::fetch(&state.update, &url, &progress).await.map_err(ApiError::from)
        }
        None => receive_request(state, body, declared).await,
    };
    let path = received?;
    let (u, p) = (Arc::clone(&state.update), path.clone());
    let outcome = blocking(move || u.install(&p, opts)).await;
    if let Err(e) = tokio::fs::remove_file(&path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "update: the received bundle could not be removed");
        }
    }
    outcome
}

/// The bundle in the request's body, into `update/incoming-<uuid>.bundle`
/// (removed again when receiving fails).
async fn receive_request(state: &Arc<ApiState>, body: &mut Incoming, declared: Option<u64>) -> Result<std::path::PathBuf, ApiError> {
    let settings = state.update.settings();
    if let Some(len) = declared {
        if len > settings.max_bundle_bytes {
            return Err(crate::update::UpdateError::TooLarge { limit: settings.max_bundle_bytes }.into());
        }
        // A full disk is found before a byte is received.
        let u = Arc::clone(&state.update);
        blocking(move || u.check_receive_space(len)).await?;
    }
    let path = crate::update::install::incoming_path(&settings.dir);
    match receive_file(body, &path, settings.max_bundle_bytes, declared).await {
        Ok(()) => Ok(path),
        Err(e) => {
            if let Err(r) = tokio::fs::remove_file(&path).await {
                if r.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %r, "update: the partly received bundle could not be removed");
                }
            }
            Err(e)
        }
    }
}

/// Streams a request body into a new file (mode 0600, created, never
/// replaced), refusing more than `limit` bytes; fsynced before it returns.
/// A full file system is `update_no_space` (needing `declared`, the
/// request's length, when it gave one).
async fn receive_file(body: &mut Incoming, path: &std::path::Path, limit: u64, declared: Option<u64>) -> Result<(), ApiError> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let io = |what, source| ApiError::from(crate::update::UpdateError::Io { what, path: path.to_path_buf(), source });
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| io("creating the directory of", e))?;
    }
    let mut file =
        tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).await.map_err(|e| io("creating", e))?;
    let mut written: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::InvalidParam(format!("reading the bundle from the request failed: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        written += data.len() as u64;
        if written > limit {
            return Err(crate::update::UpdateError::TooLarge { limit }.into());
        }
        if let Err(e) = file.write_all(&data).await {
            return Err(crate::update::install::receive_write_error(path, declared.unwrap_or(written), e).into());
        }
        crate::update::kill_point_flushed("receive", &mut file).await;
    }
    if written == 0 {
        return Err(ApiError::InvalidParam("the request body is empty: send the bundle file as the body".into()));
    }
    if let Err(e) = file.sync_all().await {
        return Err(crate::update::install::receive_write_error(path, written, e).into());
    }
    Ok(())
}

/// Runs an update control off the event loop (it reads, writes and fsyncs files).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, crate::update::UpdateError> + Send + 'static) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(|e| crate::update::UpdateError::Task(e.to_string()))??)
}

/// How often a load over the admin API looks whether it has ended.
const LOAD_POLL: std::time::Duration = std::time::Duration::from_millis(100);

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

/// Trailer fields of a backup: `complete` or `failed`, and why it failed.
const BACKUP_TRAILERS: &str = "x-edgeai-backup, x-edgeai-backup-error";

/// Streams the snapshot's archive; its trailers say whether it is whole.
fn backup_response(snapshot: crate::service::backup::Snapshot) -> Response<Body> {
    use crate::service::backup::BackupError;
    use http::HeaderValue;
    let (tx, trailers_tx, response) = body::download_response("application/x-tar", BACKUP_TRAILERS);
    tokio::spawn(async move {
        let sink = crate::service::export::ChannelSink::new(tx);
        let written = tokio::task::spawn_blocking(move || snapshot.write_to(sink)).await.unwrap_or(Err(BackupError::Panicked));
        let mut fields = http::HeaderMap::new();
        match written {
            Ok(()) => {
                fields.insert("x-edgeai-backup", HeaderValue::from_static("complete"));
            }
            Err(e) => {
                let gone = matches!(&e, BackupError::Write(source) if source.kind() == std::io::ErrorKind::BrokenPipe);
                let e = ApiError::from(e);
                if gone {
                    tracing::info!(error = %crate::telemetry::chain(&e), "backup stopped: the client went away");
                } else {
                    tracing::error!(error = %crate::telemetry::chain(&e), "backup failed after it started");
                }
                let m = e.mapped();
                fields.insert("x-edgeai-backup", HeaderValue::from_static("failed"));
                let why: String =
                    format!("{}: {}", m.code, m.message).chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' }).collect();
                if let Ok(v) = HeaderValue::from_str(&why) {
                    fields.insert("x-edgeai-backup-error", v);
                }
            }
        }
        // The reader may be gone already; then nobody needs the trailers.
        let _ = trailers_tx.send(fields);
    });
    response
}

/// The most entries one `GET /admin/v1/audit` returns, and its default.
const AUDIT_MAX_LIMIT: u32 = 1000;
const AUDIT_DEFAULT_LIMIT: u32 = 100;

/// `kind`, `since` (unix seconds), `before` (an entry id) and `limit` of
/// `GET /admin/v1/audit`; each bad value is a 400 naming it.
fn audit_filter(q: &std::collections::HashMap<String, String>) -> Result<(crate::store::AuditFilter, u32), ApiError> {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let kind = match get("kind") {
        None => None,
        Some(k) => Some(
            crate::store::AuditKind::parse(k)
                .ok_or_else(|| ApiError::InvalidParam(format!("kind must be \"admin\" or \"auth_failure\", not {k:?}")))?,
        ),
    };
    let number = |k: &str| -> Result<Option<i64>, ApiError> {
        get(k)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| ApiError::InvalidParam(format!("{k} must be a non-negative integer, not {v:?}")))
            })
            .transpose()
    };
    let since_ms = number("since")?.map(|s| s.saturating_mul(1000));
    let before_id = number("before")?;
    let limit = match number("limit")? {
        None => AUDIT_DEFAULT_LIMIT,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=AUDIT_MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::InvalidParam(format!("limit must be between 1 and {AUDIT_MAX_LIMIT}, not {n}")))?,
    };
    Ok((crate::store::AuditFilter { kind, since_ms, before_id, limit }, limit))
}

fn audit_info(e: crate::store::AuditEntry) -> wire::AuditEntryInfo {
    wire::AuditEntryInfo {
        id: e.id,
        at_ms: e.at_ms,
        kind: e.kind.as_str().to_owned(),
        channel: e.channel,
        actor: e.actor,
        action: e.action,
        outcome: e.outcome,
        detail: e.detail,
    }
}
