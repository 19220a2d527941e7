//! The HTTP API: a hyper 1 server on TCP and on the unix socket, serving
//! Dify's Service API (app routes with `app-…` keys, the Knowledge API under
//! `/v1/datasets` with `dataset-…` keys), the OpenAI-compatible API, health
//! probes, `GET /metrics` (unix socket; TCP when `metrics.tcp`), and (on the
//! unix socket only) the admin API authorised by the peer's credentials.
//! Every answered request is counted here, in [`handle`], by route pattern
//! and status.
//! Only this module knows HTTP and JSON wire shapes; it calls `service` for
//! everything else. Limits: body size (413), header size (431), idle and
//! header-read timeout, request timeout, and a connection cap (503).
//! With `[server.tls]`, TCP is HTTPS (`tls`); the unix socket never is.

mod admin;
mod annotations;
pub mod body;
mod datasets;
mod dify;
mod dify_features;
pub mod error;
mod events;
#[cfg(test)]
mod fuzz_tests;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod jwt;
mod listen;
mod openai;
pub mod ratelimit;
mod stall;
pub mod tls;
mod workflow;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::config::{FilesSettings, MetricsSettings, ServerSettings};
use crate::engine::AppDefinition;
use crate::service::{KeyLookup, Service};
use crate::telemetry::metrics::{self, Metrics, Snapshot};
use body::Body;
use error::ApiError;

pub use listen::{serve, BindError, Inherited, Listeners};

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP caller is unauthenticated until it shows an API key.
    Tcp(SocketAddr),
    /// A unix-socket caller, with SO_PEERCRED credentials.
    Unix { uid: u32, gid: u32, pid: i32 },
}

/// Shared state of every connection.
pub struct ApiState {
    pub service: Arc<Service>,
    pub limits: ServerSettings,
    /// Where uploads go and how large they may be.
    pub files: FilesSettings,
    /// The bound TCP address (differs from `limits.listen` for port 0).
    pub tcp_addr: Option<SocketAddr>,
    pub started: Instant,
    /// Resolved `server.admin_group`.
    pub admin_gid: Option<u32>,
    pub model_name: String,
    pub cpu_features: String,
    /// The knowledge service; `None` answers its routes with a 503.
    pub knowledge: Option<Arc<crate::service::knowledge::Knowledge>>,
    pub metrics: Arc<Metrics>,
    /// `[metrics]`: whether and where `GET /metrics` answers.
    pub metrics_on: MetricsSettings,
    /// The config files the daemon read (`settings.sources`), for backups.
    pub config_sources: Vec<std::path::PathBuf>,
    /// Per client address and per key (`server.*_requests_per_minute`).
    pub rate: ratelimit::RateLimits,
    /// The configured embedding model, for ListModels.
    pub embedding: Option<crate::admin::EmbeddingFacts>,
    /// Admin actions and refused credentials are recorded here.
    pub audit: Arc<crate::audit::Audit>,
    /// `[server.tls]`: the certificate new TCP connections get; `None`: plain HTTP.
    pub tls: Option<Arc<tls::Certs>>,
    /// `[[auth.jwt]]` issuers and their keys (reloaded on SIGHUP).
    pub jwt: Arc<jwt::JwtKeys>,
    /// The A/B slot controls (`/admin/v1/update`).
    pub update: Arc<crate::update::Updates>,
}

impl ApiState {
    /// What the admin reports need to know about the daemon.
    pub fn facts(&self) -> crate::admin::Facts {
        crate::admin::Facts {
            started: self.started,
            tcp_addr: self.tcp_addr,
            socket: self.limits.socket.clone(),
            cpu_features: self.cpu_features.clone(),
            admin_gid: self.admin_gid,
            config_sources: self.config_sources.clone(),
            embedding: self.embedding.clone(),
        }
    }
}

/// Which family of API a path belongs to, for the error body shape.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Dify,
    OpenAi,
}

/// Entry point for every request; never fails (errors become responses).
pub async fn handle(state: Arc<ApiState>, peer: Arc<Peer>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let openai = matches!(path.as_str(), "/v1/chat/completions" | "/v1/models" | "/v1/embeddings");
    let family = if openai { Family::OpenAi } else { Family::Dify };
    let started = Instant::now();
    // Bounds everything up to the response head: a slow body, a blocking
    // answer. A streaming body is bounded by its own deadline.
    let limit = state.limits.request_timeout;
    let result = tokio::time::timeout(limit, route(&state, &peer, req)).await.unwrap_or(Err(ApiError::Timeout { secs: limit.as_secs() }));
    // A path no route took is "other", whatever its pattern looks like.
    let route_label = if matches!(result, Err(ApiError::NoRoute)) { "other" } else { metrics::route_label(&path) };
    let (resp, outcome, detail) = match result {
        Ok(r) => {
            let status = r.status();
            (r, "ok", status.to_string())
        }
        Err(e) => {
            let m = e.mapped();
            if matches!(m.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                state.audit.auth_failure(&actor(&peer), &format!("{method} {path}"), m.code, &m.message);
            }
            if m.status.is_server_error() {
                tracing::error!(%method, %path, status = m.status.as_u16(), error = %crate::telemetry::chain(&e), "request failed");
            } else {
                tracing::info!(%method, %path, status = m.status.as_u16(), code = m.code, error = %crate::telemetry::chain(&e), "request rejected");
            }
            let resp = match family {
                Family::Dify => body::dify_error(&e),
                Family::OpenAi => body::openai_error(&e),
            };
            (resp, m.code, m.message)
        }
    };
    if is_admin_action(&peer, &method, &path) && resp.status() != StatusCode::FORBIDDEN {
        state.audit.admin(&actor(&peer), &format!("{method} {path}"), outcome, &detail).await;
    }
    let elapsed = started.elapsed();
    state.metrics.http_request(route_label, resp.status().as_u16(), elapsed);
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_ms = elapsed.as_millis() as u64, "request");
    Ok(resp)
}

/// Who is behind `peer`, for the audit trail.
fn actor(peer: &Peer) -> crate::audit::Actor {
    match *peer {
        Peer::Tcp(addr) => crate::audit::Actor::tcp(addr.ip()),
        Peer::Unix { uid, gid, pid } => crate::audit::Actor::unix(uid, gid, pid),
    }
}

/// Whether a request is an admin action for the audit trail: an admin API
/// request on the unix socket that changes something, or that lets the
/// store's data out (backup, log export). Reads of status and lists are not,
/// nor is using an app as an operator (`edgeaictl chat`, `run`, a dataset's
/// retrieval test): those are requests like any other, kept as messages
/// and runs.
fn is_admin_action(peer: &Peer, method: &Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/admin/v1/") else { return false };
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let use_of_an_app = matches!(
        segs.as_slice(),
        ["apps", _, "chat-messages" | "completion-messages"]
            | ["apps", _, "workflows", "run"]
            | ["datasets", _, "retrieve" | "hit-testing"]
    );
    let reads = matches!(*method, Method::GET | Method::HEAD);
    matches!(peer, Peer::Unix { .. }) && !use_of_an_app && (!reads || matches!(segs.first(), Some(&"backup") | Some(&"export")))
}

async fn route(state: &Arc<ApiState>, peer: &Arc<Peer>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let m = req.method().clone();
    // Probes and scrapes are never limited; everything else from a TCP client is.
    if let (Peer::Tcp(addr), false) = (&**peer, matches!(segs.as_slice(), ["health"] | ["ready"] | ["metrics"])) {
        state.rate.check_client(addr.ip()).map_err(ApiError::RateLimited)?;
    }
    match segs.as_slice() {
        ["health"] => only(&m, Method::GET)?.then(|| health(state)).ok_or(ApiError::MethodNotAllowed),
        ["ready"] => only(&m, Method::GET)?.then(|| ready(state)).ok_or(ApiError::MethodNotAllowed),
        ["metrics"] => scrape(state, peer, &req),
        ["admin", "v1", rest @ ..] => match **peer {
            // Over TCP the admin API does not exist.
            Peer::Tcp(_) => Err(ApiError::NoRoute),
            Peer::Unix { uid, gid, .. } => {
                admin::authorise(state, uid, gid).await?;
                let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
                admin::route(state, &rest, req).await
            }
        },
        ["v1", "chat", "completions"] => {
            only(&m, Method::POST)?;
            let caller = authenticate(state, &req).await?;
            openai::chat_completions(state, caller.app, req).await
        }
        ["v1", "models"] => {
            only(&m, Method::GET)?;
            authenticate(state, &req).await?;
            Ok(openai::models(state))
        }
        ["v1", "embeddings"] => {
            only(&m, Method::POST)?;
            authenticate(state, &req).await?;
            openai::embeddings(state, req).await
        }
        ["v1", "datasets", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
            datasets::serve(state, &rest, req, datasets::Caller::KeyHolder).await
        }
        ["v1", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
            if annotations::is_route(&rest) {
                let caller = authenticate(state, &req).await?;
                return annotations::route(state, caller.app, &rest, req).await;
            }
            if dify_features::is_route(&rest) {
                let caller = authenticate(state, &req).await?;
                return dify_features::route(state, caller, &rest, req).await;
            }
            if workflow::is_route(&rest) {
                let caller = authenticate(state, &req).await?;
                return workflow::route(state, caller, &rest, req).await;
            }
            if !dify::is_route(&rest) {
                return Err(ApiError::NoRoute);
            }
            let caller = authenticate(state, &req).await?;
            dify::route(state, caller, &rest, req).await
        }
        _ => Err(ApiError::NoRoute),
    }
}

/// `Ok(true)` when the method matches, else 405.
fn only(m: &Method, want: Method) -> Result<bool, ApiError> {
    if *m == want {
        Ok(true)
    } else {
        Err(ApiError::MethodNotAllowed)
    }
}

fn health(state: &ApiState) -> Response<Body> {
    body::json(StatusCode::OK, &json!({"status": "ok", "uptime_secs": state.started.elapsed().as_secs()}))
}

fn ready(state: &ApiState) -> Response<Body> {
    match state.service.readiness() {
        Ok(()) => body::json(StatusCode::OK, &json!({"status": "ready"})),
        Err(e) => body::dify_error(&ApiError::from(e)),
    }
}

/// `GET /metrics`: on the unix socket (whose mode and group already say who
/// may connect) when `metrics.enabled`, on TCP only with `metrics.tcp`;
/// elsewhere the route does not exist (404). OpenMetrics when `Accept`
/// asks for it, else the Prometheus text format 0.0.4.
fn scrape(state: &ApiState, peer: &Peer, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let served = match peer {
        Peer::Unix { .. } => state.metrics_on.enabled,
        Peer::Tcp(_) => state.metrics_on.enabled && state.metrics_on.tcp,
    };
    if !served {
        return Err(ApiError::NoRoute);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed);
    }
    let format = metrics::Format::from_accept(req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok()));
    let model = state.service.model_report();
    let limits = crate::governor::detect();
    let snap = Snapshot {
        model_state: model.status.state,
        inference_threads: if model.status.state == "ready" { model.threads } else { 0 },
        queued: model.queued,
        rss_bytes: crate::governor::rss_bytes(),
        cgroup: limits.cgroup,
        cgroup_memory_current: limits.memory_current,
        cgroup_memory_limit: limits.memory_max,
        cache: state.service.cache().map(|c| c.stats()).unwrap_or_default(),
    };
    state.metrics.app_queues(&model.queued_by_app);
    let text = state.metrics.render(&snap, format).map_err(|e| ApiError::Encode(e.to_string()))?;
    Ok(body::text(StatusCode::OK, format.content_type(), text))
}

/// Who a request authenticated as: the app, and for a JWT the user its
/// user claim names, which replaces any `user` in the body or query.
pub struct Caller {
    pub app: Arc<AppDefinition>,
    pub user: Option<String>,
}

/// The caller behind a `Bearer app-…` key or (with `[[auth.jwt]]`
/// issuers) a JWT. As in Dify, the scheme is case-insensitive and a key
/// whose app is gone is 403.
async fn authenticate(state: &ApiState, req: &Request<Incoming>) -> Result<Caller, ApiError> {
    let header = req.headers().get(http::header::AUTHORIZATION).ok_or(ApiError::MissingKey)?;
    let value = header.to_str().map_err(|_| ApiError::MissingKey)?;
    let token = bearer_token(value)?;
    // A dataset key opens only the Knowledge API (Dify: 401).
    if token.starts_with(DATASET_KEY_PREFIX) {
        return Err(ApiError::InvalidKey);
    }
    if !token.starts_with(APP_KEY_PREFIX) && state.jwt.enabled() && jwt::looks_like_jwt(token) {
        return authenticate_jwt(state, token);
    }
    let app = match state.service.app_for_key(token).await? {
        KeyLookup::Unknown => return Err(ApiError::InvalidKey),
        KeyLookup::AppNotServed => return Err(ApiError::AppGone),
        KeyLookup::App(app) if !app.enable_api => return Err(ApiError::ApiDisabled),
        KeyLookup::App(app) => {
            state.rate.check_key(token).map_err(ApiError::RateLimited)?;
            app
        }
    };
    Ok(Caller { app, user: None })
}

/// A JWT: verified against its issuer, then its app claim must name a
/// served app with the API on. Rate-limited per issuer and user, as a key.
fn authenticate_jwt(state: &ApiState, token: &str) -> Result<Caller, ApiError> {
    let v = state.jwt.verify(token)?;
    let app = state.service.app(&v.app).ok_or(ApiError::TokenAppNotServed)?;
    if !app.enable_api {
        return Err(ApiError::ApiDisabled);
    }
    state.rate.check_key(&format!("jwt\0{}\0{}", v.issuer, v.user)).map_err(ApiError::RateLimited)?;
    Ok(Caller { app, user: Some(v.user) })
}

/// The prefix of an app's API key, as Dify's.
const APP_KEY_PREFIX: &str = "app-";

/// The prefix of a Knowledge API key, as Dify's.
const DATASET_KEY_PREFIX: &str = "dataset-";

/// Checks a `Bearer dataset-…` key for the Knowledge API. As in Dify, an
/// app key (or any unknown token) is 401 "Access token is invalid".
async fn authenticate_dataset(state: &ApiState, req: &Request<Incoming>) -> Result<(), ApiError> {
    let header = req.headers().get(http::header::AUTHORIZATION).ok_or(ApiError::MissingKey)?;
    let value = header.to_str().map_err(|_| ApiError::MissingKey)?;
    let token = bearer_token(value)?;
    if !token.starts_with(DATASET_KEY_PREFIX) || state.service.dataset_key(token).await?.is_none() {
        return Err(ApiError::InvalidKey);
    }
    state.rate.check_key(token).map_err(ApiError::RateLimited)
}

/// The token of an `Authorization` value: scheme `Bearer` in any case,
/// whitespace, the token.
fn bearer_token(value: &str) -> Result<&str, ApiError> {
    let (scheme, token) = value.trim().split_once(char::is_whitespace).ok_or(ApiError::MissingKey)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::NotBearer);
    }
    match token.trim() {
        "" => Err(ApiError::MissingKey),
        t => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_actions_are_changes_and_data_leaving_on_the_socket() {
        let unix = Peer::Unix { uid: 0, gid: 0, pid: 1 };
        let tcp = Peer::Tcp("127.0.0.1:9".parse().expect("addr"));
        for (method, path) in [
            (Method::POST, "/admin/v1/keys"),
            (Method::DELETE, "/admin/v1/keys/k1"),
            (Method::POST, "/admin/v1/apps/demo/activate"),
            (Method::DELETE, "/admin/v1/cache"),
            (Method::GET, "/admin/v1/backup"),
            (Method::GET, "/admin/v1/export/logs"),
            (Method::POST, "/admin/v1/datasets/d1/document/create-by-file"),
        ] {
            assert!(is_admin_action(&unix, &method, path), "{method} {path}");
        }
        for (peer, method, path) in [
            (&unix, Method::GET, "/admin/v1/apps"),
            (&unix, Method::GET, "/admin/v1/audit"),
            (&unix, Method::POST, "/admin/v1/apps/demo/chat-messages"),
            (&unix, Method::POST, "/admin/v1/apps/flow/workflows/run"),
            (&unix, Method::POST, "/admin/v1/datasets/d1/retrieve"),
            (&unix, Method::POST, "/v1/chat-messages"),
            (&tcp, Method::POST, "/admin/v1/keys"),
        ] {
            assert!(!is_admin_action(peer, &method, path), "{method} {path}");
        }
    }
}
