//! `org.edgeai.Daemon1` itself: its properties, methods and signals, each
//! method authorised by the caller's uid first, and the task that announces
//! state changes (PropertiesChanged and StateChanged).

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use edgeai_common::admin as wire;
use tokio::sync::{mpsc, oneshot};
use zbus::message::Header;
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::zvariant::{OwnedFd, OwnedValue};

use super::value::{self, Dict};
use super::{MethodError, ReloadRequest};
use crate::service::Service;

/// The largest app file ImportApp reads (a Dify DSL is at most this much YAML).
const MAX_IMPORT_BYTES: u64 = crate::engine::workflow::dsl::MAX_DSL_BYTES as u64;

/// The daemon's control interface.
pub struct Daemon1 {
    svc: Arc<Service>,
    facts: crate::admin::Facts,
    reload: mpsc::Sender<ReloadRequest>,
}

impl Daemon1 {
    pub fn new(svc: Arc<Service>, facts: crate::admin::Facts, reload: mpsc::Sender<ReloadRequest>) -> Self {
        Daemon1 { svc, facts, reload }
    }

    /// Refuses a caller that is neither root nor in `server.admin_group`;
    /// the uid is the bus daemon's word for the message's sender.
    async fn authorise(&self, conn: &zbus::Connection, hdr: &Header<'_>, method: &str) -> Result<(), MethodError> {
        let sender = hdr.sender().ok_or_else(|| MethodError::PermissionDenied("the call has no sender".into()))?;
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let uid = dbus
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| MethodError::PermissionDenied(format!("the bus could not tell who called: {e}")))?;
        if crate::admin::is_admin(self.facts.admin_gid, uid, None).await {
            tracing::info!(method, uid, sender = %sender, "D-Bus call");
            Ok(())
        } else {
            tracing::warn!(method, uid, sender = %sender, "D-Bus call refused: not root or in server.admin_group");
            Err(MethodError::PermissionDenied(format!(
                "{method} needs root or membership of the daemon's admin group (server.admin_group); uid {uid} has neither"
            )))
        }
    }

    fn status_line(&self) -> String {
        crate::supervise::status_text(&self.svc.model_report().status)
    }
}

/// The daemon's control interface: status, apps and their versions, API keys,
/// the response cache and configuration reload. Methods need root or the
/// admin group (server.admin_group); properties are readable by all.
#[zbus::interface(name = "org.edgeai.Daemon1")]
impl Daemon1 {
    /// The daemon's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    /// starting, ready, degraded or stopping.
    #[zbus(property)]
    fn state(&self) -> String {
        crate::admin::state_word(&self.svc).to_owned()
    }

    /// One line on what the daemon is doing, as systemctl status shows it.
    #[zbus(property, name = "StatusText")]
    fn status_text(&self) -> String {
        self.status_line()
    }

    /// The models the daemon serves with, as model:state (e.g. smollm2:ready).
    #[zbus(property)]
    fn active_models(&self) -> Vec<String> {
        let r = self.svc.model_report();
        vec![format!("{}:{}", r.config.name, r.status.state)]
    }

    /// Bytes of memory the daemon's cgroup uses now (0: unknown). Read it when needed; no change signal.
    #[zbus(property(emits_changed_signal = "false"))]
    fn memory_current(&self) -> u64 {
        self.svc.governor().and_then(|g| g.limits().working_set()).unwrap_or(0)
    }

    /// The cgroup memory limit in bytes (0: none).
    #[zbus(property(emits_changed_signal = "false"))]
    fn memory_limit(&self) -> u64 {
        self.svc.governor().and_then(|g| g.limits().memory_max).unwrap_or(0)
    }

    /// The response cache: enabled, hits, misses, hit_rate, entries, bytes, max_bytes, evictions. No change signal.
    #[zbus(property(emits_changed_signal = "false"))]
    fn cache_stats(&self) -> zbus::fdo::Result<Dict> {
        value::dict(&crate::admin::cache_stats(&self.svc)).map_err(|e| zbus::fdo::Error::Failed(format!("{e:?}")))
    }

    /// Everything edgeaictl status shows: version, state, listeners, model, memory, code nodes.
    async fn get_status(&self, #[zbus(connection)] conn: &zbus::Connection, #[zbus(header)] hdr: Header<'_>) -> Result<Dict, MethodError> {
        self.authorise(conn, &hdr, "GetStatus").await?;
        value::dict(&crate::admin::status(&self.svc, &self.facts))
    }

    /// Re-reads the configuration as SIGHUP does: apps take effect now, other settings at the next restart.
    /// Returns apps_updated and apps_served; an invalid configuration is InvalidArgument and changes nothing.
    async fn reload(&self, #[zbus(connection)] conn: &zbus::Connection, #[zbus(header)] hdr: Header<'_>) -> Result<Dict, MethodError> {
        self.authorise(conn, &hdr, "Reload").await?;
        let (tx, rx) = oneshot::channel();
        self.reload.send(tx).await.map_err(|_| MethodError::Busy("the daemon is stopping".into()))?;
        let report = rx.await.map_err(|_| MethodError::Busy("the daemon is stopping".into()))?.map_err(MethodError::InvalidArgument)?;
        value::dict(&wire::ReloadResponse { apps_updated: report.apps_updated, apps_served: report.apps_served })
    }

    /// The apps and their active versions.
    async fn list_apps(&self, #[zbus(connection)] conn: &zbus::Connection, #[zbus(header)] hdr: Header<'_>) -> Result<Vec<Dict>, MethodError> {
        self.authorise(conn, &hdr, "ListApps").await?;
        let apps: Vec<wire::AppInfo> = self.svc.stored_apps().await?.iter().map(crate::admin::app_info).collect();
        value::dicts(&apps)
    }

    /// Imports an app from a file the caller opened (so the caller's permissions apply, not the daemon's):
    /// a Dify DSL export (YAML) or a JSON app definition. Options: format ("dsl" or "json"; default: JSON when
    /// the file starts with '{'), id and name (DSL only), datasets (a{ss}, DSL dataset id to local dataset).
    /// Returns app (a{sv}), created (b) and models (aa{sv}, the DSL's LLM nodes and where they were mapped).
    async fn import_app(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        file: OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        self.authorise(conn, &hdr, "ImportApp").await?;
        value::only(&options, &["format", "id", "name", "datasets"])?;
        let format = value::opt_str(&options, "format")?;
        let (id, name) = (value::opt_str(&options, "id")?, value::opt_str(&options, "name")?);
        let datasets: Vec<(String, String)> = match options.get("datasets") {
            None => Vec::new(),
            Some(v) => HashMap::<String, String>::try_from(v.try_clone().map_err(|e| MethodError::InvalidArgument(e.to_string()))?)
                .map_err(|_| MethodError::InvalidArgument("option \"datasets\" must be a{ss} (DSL dataset id to local dataset)".into()))?
                .into_iter()
                .collect(),
        };
        let text = read_file(file).await?;
        let json = match format.as_deref() {
            Some("json") => true,
            Some("dsl") => false,
            None => text.trim_start().starts_with('{'),
            Some(other) => return Err(MethodError::InvalidArgument(format!("format {other:?} is not \"dsl\" or \"json\""))),
        };
        if json {
            if id.is_some() || name.is_some() || !datasets.is_empty() {
                return Err(MethodError::InvalidArgument("id, name and datasets apply to a Dify DSL only, not to a JSON definition".into()));
            }
            let app: crate::engine::AppDefinition =
                serde_json::from_str(&text).map_err(|e| MethodError::InvalidArgument(format!("the JSON app definition is invalid: {e}")))?;
            let app_id = app.id.clone();
            let v = self.svc.put_app(app, "import").await?;
            let stored = self.svc.stored_app(&app_id).await?;
            tracing::info!(app = %app_id, version = v.version, created = v.created, "app imported over D-Bus");
            let report = wire::ImportDslResponse { app: crate::admin::app_info(&stored), models: Vec::new() };
            let mut d = value::dict(&report)?;
            d.insert("created".into(), OwnedValue::from(v.created));
            return Ok(d);
        }
        let (v, models) = self.svc.import_dsl(&text, id, name, &datasets).await?;
        let stored = self.svc.stored_app(&v.app_id).await?;
        tracing::info!(app = %v.app_id, version = v.version, created = v.created, mode = %stored.mode, "DSL imported over D-Bus");
        let report = wire::ImportDslResponse {
            app: crate::admin::app_info(&stored),
            models: models.into_iter().map(crate::admin::model_mapping_info).collect(),
        };
        let mut d = value::dict(&report)?;
        d.insert("created".into(), OwnedValue::from(v.created));
        Ok(d)
    }

    /// An app version as Dify DSL YAML. Options: version (u; default the active one). Returns app_id, version, yaml.
    async fn export_app(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        app: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        self.authorise(conn, &hdr, "ExportApp").await?;
        value::only(&options, &["version"])?;
        let (version, yaml) = self.svc.export_app(&app, value::opt_u32(&options, "version")?).await?;
        value::dict(&wire::ExportResponse { app_id: app, version, yaml })
    }

    /// An app's stored versions, newest first: version, workflow_id, source, created_at, active.
    async fn list_app_versions(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        app: String,
    ) -> Result<Vec<Dict>, MethodError> {
        self.authorise(conn, &hdr, "ListAppVersions").await?;
        let versions: Vec<wire::AppVersionInfo> = self.svc.app_versions(&app).await?.into_iter().map(crate::admin::version_info).collect();
        value::dicts(&versions)
    }

    /// Makes a stored version the active one at once (rollback); runs in flight finish on their version.
    async fn activate_app_version(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        app: String,
        version: u32,
    ) -> Result<Dict, MethodError> {
        self.authorise(conn, &hdr, "ActivateAppVersion").await?;
        let stored = self.svc.activate_app_version(&app, version).await?;
        value::dict(&crate::admin::app_info(&stored))
    }

    /// Creates an API key. Options: app (s) for an app's key, or dataset (b, true) for a Knowledge API key.
    /// Returns id, kind, app_id, key (shown only this once) and created_at.
    async fn create_api_key(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        self.authorise(conn, &hdr, "CreateApiKey").await?;
        value::only(&options, &["app", "dataset"])?;
        let app = value::opt_str(&options, "app")?.filter(|a| !a.is_empty());
        let (info, secret) = match (app, value::opt_bool(&options, "dataset")?.unwrap_or(false)) {
            (Some(app), false) => self.svc.create_key(&app).await?,
            (None, true) => self.svc.create_dataset_key().await?,
            (Some(_), true) => {
                return Err(MethodError::InvalidArgument("a key opens an app or the Knowledge API: give app or dataset, not both".into()))
            }
            (None, false) => return Err(MethodError::InvalidArgument("option app is required (or dataset = true for a Knowledge API key)".into())),
        };
        let kind = crate::admin::key_kind(&info);
        let app_id = info.app_id().unwrap_or_default().to_owned();
        tracing::info!(key_id = %info.id, app = %app_id, "API key created over D-Bus");
        value::dict(&wire::CreatedKey { id: info.id, kind, app_id, key: secret, created_at: info.created_at })
    }

    /// The API keys (never the secrets). Options: app (s) for one app's keys.
    async fn list_api_keys(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<Dict>, MethodError> {
        self.authorise(conn, &hdr, "ListApiKeys").await?;
        value::only(&options, &["app"])?;
        let app = value::opt_str(&options, "app")?.filter(|a| !a.is_empty());
        let keys: Vec<wire::KeyInfo> = self.svc.keys(app.as_deref()).await?.iter().map(crate::admin::key_info).collect();
        value::dicts(&keys)
    }

    /// Revokes an API key by its id; it stops working at once.
    async fn revoke_api_key(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: String,
    ) -> Result<(), MethodError> {
        self.authorise(conn, &hdr, "RevokeApiKey").await?;
        self.svc.revoke_key(&id).await?;
        tracing::info!(key_id = %id, "API key revoked over D-Bus");
        Ok(())
    }

    /// The models: name, path, state, error, threads, slots, context_size.
    async fn list_models(&self, #[zbus(connection)] conn: &zbus::Connection, #[zbus(header)] hdr: Header<'_>) -> Result<Vec<Dict>, MethodError> {
        self.authorise(conn, &hdr, "ListModels").await?;
        let status = crate::admin::status(&self.svc, &self.facts);
        value::dicts(&[status.model])
    }

    /// Drops every cached answer, or one app's. Options: app (s). Returns app and flushed (entries dropped).
    async fn flush_cache(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        self.authorise(conn, &hdr, "FlushCache").await?;
        value::only(&options, &["app"])?;
        let app = value::opt_str(&options, "app")?.filter(|a| !a.is_empty());
        let flushed = self.svc.flush_cache(app.as_deref()).await?;
        value::dict(&wire::CacheFlushResponse { app, flushed })
    }

    /// The daemon's state changed: the new State and StatusText.
    #[zbus(signal, name = "StateChanged")]
    async fn state_changed_signal(emitter: &SignalEmitter<'_>, state: &str, status_text: &str) -> zbus::Result<()>;
}

/// Reads an imported file from the caller's descriptor, off the event loop, bounded.
async fn read_file(fd: OwnedFd) -> Result<String, MethodError> {
    let fd: std::os::fd::OwnedFd = fd.into();
    tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let mut file = std::fs::File::from(fd).take(MAX_IMPORT_BYTES + 1);
        file.read_to_string(&mut text).map_err(|e| MethodError::InvalidArgument(format!("cannot read the app file: {e}")))?;
        if text.len() as u64 > MAX_IMPORT_BYTES {
            return Err(MethodError::InvalidArgument(format!("the app file is larger than {MAX_IMPORT_BYTES} bytes")));
        }
        Ok(text)
    })
    .await
    .map_err(|e| MethodError::Failed(format!("reading the app file: {e}")))?
}

/// Announces changes of State and StatusText (PropertiesChanged, and the
/// StateChanged signal) until the connection goes.
pub async fn watch_state(iface: InterfaceRef<Daemon1>, every: Duration) {
    let mut last: Option<(String, String)> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = {
            let d = iface.get().await;
            (d.state(), d.status_line())
        };
        if last.as_ref() == Some(&now) {
            continue;
        }
        let emitter = iface.signal_emitter();
        let d = iface.get().await;
        let sent = async {
            d.state_changed(emitter).await?;
            d.status_text_changed(emitter).await?;
            Daemon1::state_changed_signal(emitter, &now.0, &now.1).await
        }
        .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "could not announce a state change on D-Bus");
        }
        last = Some(now);
    }
}
