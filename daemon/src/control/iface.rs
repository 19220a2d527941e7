//! `org.edgeai.Daemon1` itself: its properties, methods and signals, each
//! method authorised by the caller's uid first, and the task that announces
//! state changes (PropertiesChanged and StateChanged). The update methods
//! (GetUpdateStatus, MarkGood, MarkBad, Rollback, InstallUpdate) call
//! `crate::update::Updates`, as the admin API does; this file only moves
//! the bundle from the caller's descriptor into `update/incoming-<uuid>.bundle`.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use edgeai_common::admin as wire;
use tokio::sync::{mpsc, oneshot};
use zbus::message::Header;
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::zvariant::{OwnedFd, OwnedValue};

use super::error::update_error;
use super::update::{receive_and_install, restart_after_reply, Source};
use super::value::{self, Dict};
use super::{MethodError, ReloadRequest};
use crate::audit::{Actor, Audit};
use crate::model::ModelError;
use crate::service::Service;
use crate::update::{UpdateError, Updates};

/// The largest app file ImportApp reads (a Dify DSL is at most this much YAML).
const MAX_IMPORT_BYTES: u64 = crate::engine::workflow::dsl::MAX_DSL_BYTES as u64;

/// The daemon's control interface.
pub struct Daemon1 {
    svc: Arc<Service>,
    audit: Arc<Audit>,
    facts: crate::admin::Facts,
    reload: mpsc::Sender<ReloadRequest>,
    /// The A/B update controls (the admin API's too).
    update: Arc<Updates>,
    /// The long job running now and its percent (the Operation and Progress properties).
    job: std::sync::Mutex<(String, u32)>,
}

/// How often a long job reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How often LoadModel looks whether the load has ended.
const LOAD_POLL: Duration = Duration::from_millis(50);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn percent_of(done: u64, total: u64) -> u32 {
    u32::try_from(done.saturating_mul(100) / total.max(1)).unwrap_or(100).min(100)
}

/// The daemon's long-job place, held while a job runs; dropping it frees
/// the place (an early return included).
struct JobGuard<'a> {
    slot: &'a std::sync::Mutex<(String, u32)>,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        *lock(self.slot) = (String::new(), 0);
    }
}

/// A writer (or reader) that counts the bytes through it (a long job's progress).
struct Counting<W> {
    inner: W,
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.written.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl Daemon1 {
    pub fn new(
        svc: Arc<Service>,
        audit: Arc<Audit>,
        facts: crate::admin::Facts,
        reload: mpsc::Sender<ReloadRequest>,
        update: Arc<Updates>,
    ) -> Self {
        Daemon1 { svc, audit, facts, reload, update, job: std::sync::Mutex::new((String::new(), 0)) }
    }

    /// Claims the daemon's one long-job place (the Operation property) for
    /// `job`, or refuses with Busy while another long job runs. The place is
    /// freed when the returned guard is dropped, on every path out.
    async fn begin_job(&self, emitter: &SignalEmitter<'_>, job: &str) -> Result<JobGuard<'_>, MethodError> {
        {
            let mut slot = lock(&self.job);
            if !slot.0.is_empty() {
                return Err(MethodError::Busy(format!(
                    "{} is running ({}%); one long job at a time, retry when it has completed",
                    slot.0, slot.1
                )));
            }
            *slot = (job.to_owned(), 0);
        }
        let guard = JobGuard { slot: &self.job };
        self.progress(emitter, job, 0, "started").await;
        Ok(guard)
    }

    async fn progress(&self, emitter: &SignalEmitter<'_>, job: &str, percent: u32, message: &str) {
        lock(&self.job).1 = percent;
        if let Err(e) = Daemon1::progress_signal(emitter, job, percent, message).await {
            tracing::warn!(job, error = %e, "could not send a Progress signal");
        }
    }

    async fn end_job(&self, guard: JobGuard<'_>, emitter: &SignalEmitter<'_>, job: &str, result: &str) {
        drop(guard);
        if let Err(e) = Daemon1::completed_signal(emitter, job, result).await {
            tracing::warn!(job, error = %e, "could not send a Completed signal");
        }
    }

    /// Awaits `work`, a long job's work, sending a Progress signal every
    /// [`PROGRESS_EVERY`] in which `percent()` changed, with `message(percent)`.
    async fn while_progressing<T>(
        &self,
        emitter: &SignalEmitter<'_>,
        job: &str,
        work: impl std::future::Future<Output = T>,
        percent: impl Fn() -> u32,
        message: impl Fn(u32) -> String,
    ) -> T {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let mut last = 0;
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = tick.tick() => {
                    let now = percent();
                    if now != last {
                        last = now;
                        self.progress(emitter, job, now, &message(now)).await;
                    }
                }
            }
        }
    }

    /// Ends a long job that failed: Completed with "failed: " and the error's message.
    async fn fail_job(&self, guard: JobGuard<'_>, emitter: &SignalEmitter<'_>, job: &str, e: &MethodError) {
        let why = zbus::DBusError::description(e).unwrap_or("see the daemon log");
        self.end_job(guard, emitter, job, &format!("failed: {why}")).await;
    }

    /// Refuses a caller that is neither root nor in `server.admin_group`;
    /// the uid is the bus daemon's word for the message's sender.
    /// Refusals are recorded in the audit trail; the caller is returned for
    /// the audit entry of the action.
    async fn authorise(&self, conn: &zbus::Connection, hdr: &Header<'_>, method: &str) -> Result<Actor, MethodError> {
        let Some(sender) = hdr.sender() else {
            return Err(self.refuse(&Actor::dbus(None, "none"), method, "the call has no sender".into()));
        };
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let uid = match dbus.get_connection_unix_user(sender.clone().into()).await {
            Ok(uid) => uid,
            Err(e) => {
                return Err(self.refuse(&Actor::dbus(None, sender.as_str()), method, format!("the bus could not tell who called: {e}")))
            }
        };
        let actor = Actor::dbus(Some(uid), sender.as_str());
        if crate::admin::is_admin(self.facts.admin_gid, uid, None).await {
            tracing::info!(method, uid, sender = %sender, "D-Bus call");
            Ok(actor)
        } else {
            tracing::warn!(method, uid, sender = %sender, "D-Bus call refused: not root or in server.admin_group");
            let why = format!("{method} needs root or membership of the daemon's admin group (server.admin_group); uid {uid} has neither");
            Err(self.refuse(&actor, method, why))
        }
    }

    /// A PermissionDenied for `method`, recorded in the audit trail.
    fn refuse(&self, actor: &Actor, method: &str, why: String) -> MethodError {
        let e = MethodError::PermissionDenied(why);
        let name = zbus::DBusError::name(&e).to_string();
        self.audit.auth_failure(actor, &format!("D-Bus {method}"), &name, zbus::DBusError::description(&e).unwrap_or_default());
        e
    }

    /// Records an admin method's end in the audit trail (`args`: what it
    /// was called on) and passes its result on.
    async fn audited<T>(&self, actor: &Actor, method: &str, args: &str, result: Result<T, MethodError>) -> Result<T, MethodError> {
        let action = format!("D-Bus {method}");
        match &result {
            Ok(_) => self.audit.admin(actor, &action, "ok", args).await,
            Err(e) => {
                let name = zbus::DBusError::name(e).to_string();
                let why = zbus::DBusError::description(e).unwrap_or("see the daemon log");
                let detail = if args.is_empty() { why.to_owned() } else { format!("{args}: {why}") };
                self.audit.admin(actor, &action, &name, &detail).await;
            }
        }
        result
    }

    fn status_line(&self) -> String {
        crate::supervise::status_text(&self.svc.model_report().status)
    }

    /// The update report (GetUpdateStatus, LastError, UpdateStatus), read off the event loop.
    async fn update_report(&self) -> Result<wire::UpdateStatus, MethodError> {
        let u = Arc::clone(&self.update);
        tokio::task::spawn_blocking(move || u.status()).await.map_err(|e| update_error(&UpdateError::Task(e.to_string())))
    }

    /// MarkGood, MarkBad or Rollback: `act` off the event loop, audited; a
    /// restart it asks for happens after the reply (exit 75, as the admin API).
    async fn update_action(
        &self,
        actor: &Actor,
        method: &'static str,
        act: fn(&Updates) -> Result<wire::UpdateActionResponse, UpdateError>,
    ) -> Result<Dict, MethodError> {
        let u = Arc::clone(&self.update);
        let result: Result<_, MethodError> = async {
            let answer =
                tokio::task::spawn_blocking(move || act(&u)).await.map_err(|e| UpdateError::Task(e.to_string())).and_then(|r| r).map_err(
                    |e| {
                        tracing::warn!(method, error = %crate::telemetry::chain(&e), "update control refused over D-Bus; nothing changed");
                        update_error(&e)
                    },
                )?;
            if answer.restarting {
                restart_after_reply(method);
            }
            value::dict(&answer)
        }
        .await;
        self.audited(actor, method, "", result).await
    }
}

impl Daemon1 {
    /// InstallUpdate and InstallUpdateFromUrl: one long job that receives the bundle (Progress by its bytes, 0..80%),
    /// installs it (80%) and answers; audited with its options (and the URL without its query).
    async fn install_job(
        &self,
        actor: &Actor,
        emitter: &SignalEmitter<'_>,
        job: &'static str,
        source: Source,
        options: &HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut args = String::new();
        let progress = Arc::new(crate::update::download::Progress::default());
        let result: Result<_, MethodError> = async {
            value::only(options, &["allow_downgrade", "reinstall", "restart"])?;
            let opts = crate::update::install::InstallOptions {
                allow_downgrade: value::opt_bool(options, "allow_downgrade")?.unwrap_or(false),
                reinstall: value::opt_bool(options, "reinstall")?.unwrap_or(false),
            };
            let restart = value::opt_bool(options, "restart")?.unwrap_or(true);
            args = format!("allow_downgrade={} reinstall={} restart={restart}", opts.allow_downgrade, opts.reinstall);
            if let Source::Url(url) = &source {
                args = format!("url={} {args}", crate::update::download::shown(url));
                crate::update::download::check_url(url).map_err(|e| update_error(&e))?;
            }
            // Refused before the job's place is taken: no Progress for a call that cannot install.
            if !self.update.settings().enabled {
                return Err(update_error(&UpdateError::Disabled));
            }
            let guard = self.begin_job(emitter, job).await?;
            let installing = Arc::new(AtomicBool::new(false));
            let work = receive_and_install(Arc::clone(&self.update), source, opts, Arc::clone(&progress), Arc::clone(&installing));
            let outcome = self
                .while_progressing(
                    emitter,
                    job,
                    work,
                    || {
                        let (read, total) = (progress.received.load(Ordering::Relaxed), progress.total.load(Ordering::Relaxed));
                        if installing.load(Ordering::Relaxed) {
                            80
                        } else if total == 0 {
                            0
                        } else {
                            percent_of(read, total) * 80 / 100
                        }
                    },
                    |_| {
                        if installing.load(Ordering::Relaxed) {
                            "verifying the signature and unpacking into the slot that does not run".to_owned()
                        } else {
                            let total = progress.total.load(Ordering::Relaxed);
                            format!(
                                "received {} of {} bytes",
                                progress.received.load(Ordering::Relaxed),
                                if total == 0 { "?".to_owned() } else { total.to_string() }
                            )
                        }
                    },
                )
                .await;
            let mut answer = match outcome {
                Ok(a) => a,
                Err(e) => {
                    self.fail_job(guard, emitter, job, &e).await;
                    return Err(e);
                }
            };
            self.progress(emitter, job, 100, "installed").await;
            if !restart {
                answer.restarting = false;
                answer.message.push_str(
                    "; not restarting now (restart = false): the new version starts at the next restart (systemctl restart edgeai)",
                );
            }
            tracing::info!(bytes = progress.received.load(Ordering::Relaxed), restart, message = %answer.message, "update installed over D-Bus");
            self.end_job(guard, emitter, job, &format!("ok: {}", answer.message)).await;
            if answer.restarting {
                restart_after_reply(job);
            }
            value::dict(&answer)
        }
        .await;
        self.audited(actor, job, &args, result).await
    }
}

/// The daemon's control interface: status, apps and their versions, API keys,
/// the response cache, models, backups, logs, configuration reload and the
/// A/B updates (GetUpdateStatus, MarkGood, MarkBad, Rollback, InstallUpdate;
/// LastError, UpdateStatus). Methods need root or the admin group
/// (server.admin_group); properties are readable by all.
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

    /// The models the daemon has in memory or is loading, as model:state (e.g. smollm2:ready); an unloaded or
    /// disabled model is not listed.
    #[zbus(property)]
    fn active_models(&self) -> Vec<String> {
        crate::admin::models(&self.svc, &self.facts)
            .into_iter()
            .filter(|m| !matches!(m.state.as_str(), "unloaded" | "disabled"))
            .map(|m| format!("{}:{}", m.name, m.state))
            .collect()
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
        let actor = self.authorise(conn, &hdr, "Reload").await?;
        let args = String::new();
        let result: Result<_, MethodError> = async {
            let (tx, rx) = oneshot::channel();
            self.reload.send(tx).await.map_err(|_| MethodError::Busy("the daemon is stopping".into()))?;
            let report = rx.await.map_err(|_| MethodError::Busy("the daemon is stopping".into()))?.map_err(MethodError::InvalidArgument)?;
            value::dict(&wire::ReloadResponse { apps_updated: report.apps_updated, apps_served: report.apps_served })
        }
        .await;
        self.audited(&actor, "Reload", &args, result).await
    }

    /// The apps and their active versions.
    async fn list_apps(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<Dict>, MethodError> {
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
        let actor = self.authorise(conn, &hdr, "ImportApp").await?;
        let args = String::new();
        let result: Result<_, MethodError> = async {
            value::only(&options, &["format", "id", "name", "datasets"])?;
            let format = value::opt_str(&options, "format")?;
            let (id, name) = (value::opt_str(&options, "id")?, value::opt_str(&options, "name")?);
            let datasets: Vec<(String, String)> = match options.get("datasets") {
                None => Vec::new(),
                Some(v) => HashMap::<String, String>::try_from(v.try_clone().map_err(|e| MethodError::InvalidArgument(e.to_string()))?)
                    .map_err(|_| {
                        MethodError::InvalidArgument("option \"datasets\" must be a{ss} (DSL dataset id to local dataset)".into())
                    })?
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
            let (v, models) = if json {
                if id.is_some() || name.is_some() || !datasets.is_empty() {
                    return Err(MethodError::InvalidArgument(
                        "id, name and datasets apply to a Dify DSL only, not to a JSON definition".into(),
                    ));
                }
                let app: crate::engine::AppDefinition = serde_json::from_str(&text)
                    .map_err(|e| MethodError::InvalidArgument(format!("the JSON app definition is invalid: {e}")))?;
                (self.svc.put_app(app, "import").await?, Vec::new())
            } else {
                self.svc.import_dsl(&text, id, name, &datasets).await?
            };
            let stored = self.svc.stored_app(&v.app_id).await?;
            tracing::info!(app = %v.app_id, version = v.version, created = v.created, mode = %stored.mode, "app imported over D-Bus");
            let report = wire::ImportDslResponse {
                app: crate::admin::app_info(&stored),
                models: models.into_iter().map(crate::admin::model_mapping_info).collect(),
            };
            let mut d = value::dict(&report)?;
            d.insert("created".into(), OwnedValue::from(v.created));
            Ok(d)
        }
        .await;
        self.audited(&actor, "ImportApp", &args, result).await
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
        let actor = self.authorise(conn, &hdr, "ActivateAppVersion").await?;
        let args = format!("app={app} version={version}");
        let result: Result<_, MethodError> = async {
            let stored = self.svc.activate_app_version(&app, version).await?;
            value::dict(&crate::admin::app_info(&stored))
        }
        .await;
        self.audited(&actor, "ActivateAppVersion", &args, result).await
    }

    /// Creates an API key. Options: app (s) for an app's key, or dataset (b, true) for a Knowledge API key.
    /// Returns id, kind, app_id, key (shown only this once) and created_at.
    async fn create_api_key(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "CreateApiKey").await?;
        let args = String::new();
        let result: Result<_, MethodError> = async {
            value::only(&options, &["app", "dataset"])?;
            let app = value::opt_str(&options, "app")?.filter(|a| !a.is_empty());
            let (info, secret) = match (app, value::opt_bool(&options, "dataset")?.unwrap_or(false)) {
                (Some(app), false) => self.svc.create_key(&app).await?,
                (None, true) => self.svc.create_dataset_key().await?,
                (Some(_), true) => {
                    return Err(MethodError::InvalidArgument(
                        "a key opens an app or the Knowledge API: give app or dataset, not both".into(),
                    ))
                }
                (None, false) => {
                    return Err(MethodError::InvalidArgument("option app is required (or dataset = true for a Knowledge API key)".into()))
                }
            };
            let kind = crate::admin::key_kind(&info);
            let app_id = info.app_id().unwrap_or_default().to_owned();
            tracing::info!(key_id = %info.id, app = %app_id, "API key created over D-Bus");
            value::dict(&wire::CreatedKey { id: info.id, kind, app_id, key: secret, created_at: info.created_at })
        }
        .await;
        self.audited(&actor, "CreateApiKey", &args, result).await
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
        let actor = self.authorise(conn, &hdr, "RevokeApiKey").await?;
        let args = format!("key={id}");
        let result: Result<_, MethodError> = async {
            self.svc.revoke_key(&id).await?;
            tracing::info!(key_id = %id, "API key revoked over D-Bus");
            Ok(())
        }
        .await;
        self.audited(&actor, "RevokeApiKey", &args, result).await
    }

    /// Every model the daemon has: the chat model (kind "chat") and the embedding model when configured
    /// (kind "embedding", with its model_id). Each: name, kind, path, state (disabled, loading, ready, failed,
    /// unloading, unloaded), error, threads, slots, context_size.
    async fn list_models(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<Dict>, MethodError> {
        self.authorise(conn, &hdr, "ListModels").await?;
        value::dicts(&crate::admin::models(&self.svc, &self.facts))
    }

    /// Drops every cached answer, or one app's. Options: app (s). Returns app and flushed (entries dropped).
    async fn flush_cache(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "FlushCache").await?;
        let args = String::new();
        let result: Result<_, MethodError> = async {
            value::only(&options, &["app"])?;
            let app = value::opt_str(&options, "app")?.filter(|a| !a.is_empty());
            let flushed = self.svc.flush_cache(app.as_deref()).await?;
            value::dict(&wire::CacheFlushResponse { app, flushed })
        }
        .await;
        self.audited(&actor, "FlushCache", &args, result).await
    }

    /// Writes messages or workflow runs as an Arrow IPC or Parquet file into a file the caller opened for
    /// writing (so it lands where the caller may write, and the caller renames it into place once this
    /// returns). Options: format ("arrow" or "parquet", required), table ("messages", the default, or
    /// "workflow-runs"), app (s), since and until (x, unix seconds). Returns rows and batches written.
    async fn export_logs(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        file: OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "ExportLogs").await?;
        let args = String::new();
        let result: Result<_, MethodError> = async {
            value::only(&options, &["format", "table", "app", "since", "until"])?;
            use crate::service::export as ex;
            let format = value::opt_str(&options, "format")?
                .ok_or_else(|| MethodError::InvalidArgument("option format is required: \"arrow\" or \"parquet\"".into()))?;
            let request = ex::ExportRequest {
                table: ex::table_from_name(value::opt_str(&options, "table")?.as_deref().unwrap_or("messages")).map_err(export_error)?,
                format: ex::ExportFormat::from_name(&format).map_err(export_error)?,
                filter: crate::store::LogFilter {
                    app_id: value::opt_str(&options, "app")?,
                    since: value::opt_i64(&options, "since")?,
                    until: value::opt_i64(&options, "until")?,
                },
            };
            let export = ex::start(self.svc.store(), request).await.map_err(export_error)?;
            let fd: std::os::fd::OwnedFd = file.into();
            let summary = export.write_to(std::fs::File::from(fd)).await.map_err(export_error)?;
            tracing::info!(rows = summary.rows, batches = summary.batches, "logs exported over D-Bus");
            value::dict(&serde_json::json!({"rows": summary.rows, "batches": summary.batches}))
        }
        .await;
        self.audited(&actor, "ExportLogs", &args, result).await
    }

    /// Writes a backup into a file the caller opened for writing: a tar of a consistent online snapshot of the
    /// store (SQLite's backup API), the knowledge bases' vector files and sources, and the configuration files,
    /// with a manifest of sizes and sha256 sums (edgeaictl backup verify checks it). RestoreBackup restores
    /// one (applied at the next start); edgeaictl backup restore also restores offline. Takes no options yet. Returns bytes and members.
    /// Busy while another long job runs (one at a time).
    async fn create_backup(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        file: OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "CreateBackup").await?;
        let args = String::new();
        let result: Result<_, MethodError> = async {
            value::only(&options, &[])?;
            let job = "CreateBackup";
            let guard = self.begin_job(&emitter, job).await?;
            let knowledge = self.svc.knowledge().map(|k| k.dir().to_path_buf());
            let snapshot = match crate::service::backup::take(self.svc.store(), knowledge.as_deref(), &self.facts.config_sources).await {
                Ok(s) => s,
                Err(e) => {
                    let e = backup_error(e);
                    self.fail_job(guard, &emitter, job, &e).await;
                    return Err(e);
                }
            };
            let (members, total) = (snapshot.members(), snapshot.bytes().max(1));
            let fd: std::os::fd::OwnedFd = file.into();
            let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut out = Counting { inner: std::fs::File::from(fd), written: Arc::clone(&written) };
            let writing = tokio::task::spawn_blocking(move || {
                snapshot.write_to(&mut out)?;
                out.inner.sync_all().map_err(crate::service::backup::BackupError::Write)?;
                out.inner.metadata().map(|m| m.len()).map_err(crate::service::backup::BackupError::Write)
            });
            // Progress by bytes of the members written.
            let outcome = self
                .while_progressing(
                    &emitter,
                    job,
                    writing,
                    || percent_of(written.load(std::sync::atomic::Ordering::Relaxed), total),
                    |_| format!("{members} files, {total} bytes"),
                )
                .await;
            let result = outcome
                .map_err(|_| MethodError::Failed("the backup task panicked; see the daemon log".into()))
                .and_then(|r| r.map_err(backup_error));
            match &result {
                Ok(bytes) => {
                    self.progress(&emitter, job, 100, &format!("{members} files, {total} bytes")).await;
                    tracing::info!(bytes, members, "backup written over D-Bus");
                    self.end_job(guard, &emitter, job, &format!("ok: {members} files, {bytes} bytes")).await;
                }
                Err(e) => self.fail_job(guard, &emitter, job, e).await,
            }
            value::dict(&serde_json::json!({"bytes": result?, "members": members}))
        }
        .await;
        self.audited(&actor, "CreateBackup", &args, result).await
    }

    /// Loads the chat model again after UnloadModel or a failed load, with the configuration it started with.
    /// name: the chat model's name (model.name; "" means the chat model). Takes no options yet. A long job (one
    /// at a time): Progress signals with the load's percent, Completed at the end; the reply comes once the model
    /// is ready (name, state "ready", load_ms) or the load failed (Failed, with the reason). A model loaded already
    /// answers at once with already = true. Busy while it loads or unloads or another long job runs; NotFound for
    /// a name the daemon does not have; InvalidArgument for the embedding model (only the chat model can be loaded
    /// or unloaded) and for a model disabled in the configuration.
    async fn load_model(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        name: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "LoadModel").await?;
        let args = format!("model={name}");
        let result: Result<_, MethodError> = async {
            value::only(&options, &[])?;
            let rt = Arc::clone(crate::admin::chat_model(&self.svc, &self.facts, &name)?);
            match rt.status().state {
                "ready" => return value::dict(&crate::admin::lifecycle(&rt, "ready", true)),
                // Busy before the job's place is taken: no Progress for a refused call.
                "loading" | "unloading" => {
                    return Err(crate::service::ServiceError::from(rt.ready().err().unwrap_or(ModelError::Loading)).into())
                }
                _ => {}
            }
            let job = "LoadModel";
            let guard = self.begin_job(&emitter, job).await?;
            let started = std::time::Instant::now();
            match crate::admin::start_load(&rt) {
                Ok(true) => {}
                Ok(false) => {
                    self.end_job(guard, &emitter, job, "ok: loaded already").await;
                    return value::dict(&crate::admin::lifecycle(&rt, "ready", true));
                }
                Err(e) => {
                    let e = MethodError::from(e);
                    self.fail_job(guard, &emitter, job, &e).await;
                    return Err(e);
                }
            }
            let what = format!("loading {}", rt.config.path.display());
            let loaded = async {
                while rt.status().state == "loading" {
                    tokio::time::sleep(LOAD_POLL).await;
                }
            };
            self.while_progressing(&emitter, job, loaded, || rt.load_percent(), |_| what.clone()).await;
            match crate::admin::load_outcome(&rt, started.elapsed().as_millis() as u64) {
                Ok(done) => {
                    self.progress(&emitter, job, 100, &format!("{} ready", done.name)).await;
                    let result = format!("ok: {} ready in {} ms", done.name, done.load_ms.unwrap_or(0));
                    self.end_job(guard, &emitter, job, &result).await;
                    value::dict(&done)
                }
                Err(e) => {
                    let e = MethodError::Failed(e.to_string());
                    self.fail_job(guard, &emitter, job, &e).await;
                    Err(e)
                }
            }
        }
        .await;
        self.audited(&actor, "LoadModel", &args, result).await
    }

    /// Unloads the chat model to free its memory (weights and KV cache) until LoadModel: new chat and completion
    /// requests answer 503 provider_not_initialize at once; generations already queued or running finish first
    /// (waited for up to a minute; past that the reply says state "unloading" and the model unloads when they
    /// end). name as for LoadModel; no options yet. Returns name, state ("unloaded"), already (it was unloaded or
    /// disabled already) and rss_freed_bytes (how much the daemon's VmRSS shrank). Busy while the model loads;
    /// NotFound for an unknown name; InvalidArgument for the embedding model. Reload and SIGHUP do not load it.
    async fn unload_model(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "UnloadModel").await?;
        let args = format!("model={name}");
        let result: Result<_, MethodError> = async {
            value::only(&options, &[])?;
            let rt = crate::admin::chat_model(&self.svc, &self.facts, &name)?;
            value::dict(&crate::admin::unload(rt).await?)
        }
        .await;
        self.audited(&actor, "UnloadModel", &args, result).await
    }

    /// Restores a backup online, in two steps: now, the archive is read from a file the caller opened,
    /// unpacked into the state directory's restore.staged.tmp/ and checked there as edgeaictl backup verify
    /// does (manifest, every member's size and sha256, PRAGMA integrity_check, a schema version this daemon
    /// opens), then renamed to restore.staged/; at the next start, before the store opens, the database and
    /// knowledge files are swapped in and the old ones kept in restore.previous-<time>/ (a restored store
    /// that does not open is undone and kept as restore.failed-<time>/). A bad archive is InvalidArgument
    /// and stages nothing; a full disk is Failed with the bytes needed. Config files are not restored
    /// online (listed in skipped; restore them offline). Options: restart (b, default true: after the
    /// reply the daemon drains and exits with 75, which the unit restarts). Returns staged, members,
    /// bytes, schema_version, edgeai_version, created_at, skipped (as), skipped_how, restart, applies.
    /// Busy while another long job runs (one at a time).
    async fn restore_backup(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        file: OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "RestoreBackup").await?;
        let args = String::new();
        let result: Result<_, MethodError> = async {
            value::only(&options, &["restart"])?;
            let restart = value::opt_bool(&options, "restart")?.unwrap_or(true);
            let job = "RestoreBackup";
            let guard = self.begin_job(&emitter, job).await?;
            let fd: std::os::fd::OwnedFd = file.into();
            let input = std::fs::File::from(fd);
            // Progress by the bytes read of the archive (0 when its size is unknown, a pipe).
            let total = input.metadata().ok().filter(|m| m.is_file()).map_or(0, |m| m.len());
            let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counting = Counting { inner: input, written: Arc::clone(&read) };
            let state_dir =
                self.svc.store().path().parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).to_owned();
            let supported = crate::store::supported_schema_version();
            let staging = tokio::task::spawn_blocking(move || crate::service::restore::stage(counting, &state_dir, supported));
            let outcome = self
                .while_progressing(
                    &emitter,
                    job,
                    staging,
                    || if total == 0 { 0 } else { percent_of(read.load(std::sync::atomic::Ordering::Relaxed), total) },
                    |percent| format!("read and checked {percent}% of {total} bytes"),
                )
                .await;
            let staged = match outcome.map_err(|_| crate::service::restore::RestoreError::Panicked).and_then(|r| r) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "RestoreBackup refused; nothing staged");
                    let e = restore_error(e);
                    self.fail_job(guard, &emitter, job, &e).await;
                    return Err(e);
                }
            };
            let m = &staged.manifest;
            tracing::info!(
                staged = %staged.dir.display(),
                members = staged.members,
                bytes = staged.bytes,
                schema_version = m.schema_version,
                backup_created_at = m.created_at,
                skipped = staged.skipped.len(),
                replaced_earlier = staged.replaced,
                restart,
                "restore staged over D-Bus; applied at the next start"
            );
            self.progress(&emitter, job, 100, "staged").await;
            self.end_job(guard, &emitter, job, &format!("ok: staged {} files, {} bytes", staged.members, staged.bytes)).await;
            let skipped_how = if staged.skipped.is_empty() {
                String::new()
            } else {
                "the daemon cannot write its config files (ProtectSystem=strict, owned by root): restore them with the daemon \
                 stopped: edgeaictl backup restore FILE --state-dir DIR --config-dir /etc/edgeai"
                    .to_owned()
            };
            let applies = if restart {
                "now: the daemon drains, exits with 75 and is restarted by systemd; the start applies the restore"
            } else {
                "at the daemon's next start (systemctl restart edgeai)"
            };
            if restart {
                // After the reply has gone out: the drain closes the bus connection.
                tokio::spawn(async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    tracing::info!("stopping to apply the staged restore (exit 75: restart)");
                    if let Err(e) = crate::request_restart() {
                        tracing::error!(error = %e, "could not stop to apply the restore; it is applied at the next start");
                    }
                });
            }
            value::dict(&serde_json::json!({
                "staged": staged.dir.display().to_string(),
                "members": staged.members,
                "bytes": staged.bytes,
                "schema_version": m.schema_version,
                "edgeai_version": m.edgeai_version,
                "created_at": m.created_at,
                "skipped": staged.skipped,
                "skipped_how": skipped_how,
                "restart": restart,
                "applies": applies,
            }))
        }
        .await;
        self.audited(&actor, "RestoreBackup", &args, result).await
    }

    /// The A/B update state and slots (docs/update.md), the fields of GET /admin/v1/update: enabled, dir, running
    /// (a, b or factory), current_link, state (a{sv}: current, previous, status good|pending|rolled-back, version,
    /// previous_version, attempts, max_attempts, switched_at, committed_at, failed_version, last_error, history),
    /// state_error (when the state file is unusable), slots (aa{sv}: name, version, complete, has_binary, problem).
    /// Fields that are null over HTTP are left out.
    async fn get_update_status(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Dict, MethodError> {
        self.authorise(conn, &hdr, "GetUpdateStatus").await?;
        value::dict(&self.update_report().await?)
    }

    /// Commits the pending version that runs (as if its health gate passed); a good one stays good. Returns action,
    /// status, message, restarting (false). UpdateNotPending when nothing is pending or the pending version is not the
    /// one running; UpdateDisabled, UpdateStateInvalid. Each error's message starts with its Dify code.
    async fn mark_good(&self, #[zbus(connection)] conn: &zbus::Connection, #[zbus(header)] hdr: Header<'_>) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "MarkGood").await?;
        self.update_action(&actor, "MarkGood", Updates::mark_good).await
    }

    /// Gives up the pending version: after the reply the daemon drains and exits 75, and the next start rolls it back
    /// with its store snapshot. Returns action, status, message, restarting (true). UpdateNotPending when nothing is
    /// pending; UpdateDisabled, UpdateStateInvalid.
    async fn mark_bad(&self, #[zbus(connection)] conn: &zbus::Connection, #[zbus(header)] hdr: Header<'_>) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "MarkBad").await?;
        self.update_action(&actor, "MarkBad", Updates::mark_bad).await
    }

    /// Back to the previous version: a pending one as MarkBad; a good one is switched now (state and current link)
    /// and the daemon restarts into the previous slot (exit 75 after the reply). Returns action, status, message,
    /// restarting. UpdateNoPrevious when there is nothing to go back to; UpdateSlotIncomplete, UpdateDisabled,
    /// UpdateStateInvalid.
    async fn rollback(&self, #[zbus(connection)] conn: &zbus::Connection, #[zbus(header)] hdr: Header<'_>) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "Rollback").await?;
        self.update_action(&actor, "Rollback", Updates::rollback).await
    }

    /// Installs a signed bundle read from a file (or pipe) the caller opened: copied into update/incoming-<uuid>.bundle
    /// (at most update.max_bundle_bytes; the file is removed on every path), then checked and installed into the slot
    /// that does not run as edgeaictl update install does (signature by a key in update.trust_dir, compatible, version
    /// policy, binary only, free space; docs/update.md), made the pending version. A long job (one at a time): Progress
    /// by the bytes received (0..80%), 80% while it verifies and unpacks, 100% when installed; Completed "ok: ..." or
    /// "failed: ...". Options: allow_downgrade (b), reinstall (b), restart (b, default true: after the reply the daemon
    /// drains and exits 75, and the next start runs the new version). Returns action ("install"), status ("pending"),
    /// message, restarting. Errors: UpdateDisabled, UpdatePending, UpdateUntrusted, UpdateNotApplicable,
    /// UpdateUnsupported, UpdateNoSpace, UpdateBadBundle, UpdateTooLarge (each message starts with its Dify code);
    /// InvalidArgument for an unknown option or an unreadable descriptor; Busy while another long job runs.
    async fn install_update(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        bundle: OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "InstallUpdate").await?;
        let fd: std::os::fd::OwnedFd = bundle.into();
        self.install_job(&actor, &emitter, "InstallUpdate", Source::Fd(std::fs::File::from(fd)), &options).await
    }

    /// Installs a signed bundle the daemon downloads from an http:// or https:// URL (https: the server must chain to
    /// a certificate in update.ca_file): streamed into update/download-<key>.part, resumed with Range after a dropped
    /// connection (and by a later install of the same URL after a failed one, even after a restart), at most
    /// update.max_bundle_bytes, redirects followed (never from https to http); then checked and installed as
    /// InstallUpdate does. Progress by the bytes downloaded (0..80%), Completed "ok: ..." or "failed: ...". Options
    /// and answer as InstallUpdate's. Errors besides InstallUpdate's: InvalidArgument (invalid_param: a URL that is not
    /// http(s), has credentials in it, or an unreadable update.ca_file for https), UpdateDownloadFailed
    /// (update_download_failed: the server's status, or the connection after the retries; what was received is kept).
    async fn install_update_from_url(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        url: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Dict, MethodError> {
        let actor = self.authorise(conn, &hdr, "InstallUpdateFromUrl").await?;
        self.install_job(&actor, &emitter, "InstallUpdateFromUrl", Source::Url(url), &options).await
    }

    /// The update state's last error (why a version was rolled back or given up, or what its health gate said), or
    /// empty: none recorded, nothing installed, or the state file unusable. Read when needed; no change signal.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn last_error(&self) -> String {
        self.update_report().await.ok().and_then(|r| r.state).and_then(|s| s.last_error).unwrap_or_default()
    }

    /// The update state's status: good, pending, rolled-back, none (nothing installed) or invalid (the state file is
    /// unusable; GetUpdateStatus says why). Read when needed; no change signal.
    #[zbus(property(emits_changed_signal = "false"), name = "UpdateStatus")]
    async fn update_status(&self) -> String {
        match self.update_report().await {
            Ok(r) => match (r.state, r.state_error) {
                (Some(st), _) => st.status,
                (None, Some(_)) => "invalid".to_owned(),
                (None, None) => "none".to_owned(),
            },
            Err(_) => "invalid".to_owned(),
        }
    }

    /// The long job running now (one at a time; CreateBackup, InstallUpdate, InstallUpdateFromUrl, LoadModel, RestoreBackup), or empty. No change signal: follow the Progress signal.
    #[zbus(property(emits_changed_signal = "false"))]
    fn operation(&self) -> String {
        lock(&self.job).0.clone()
    }

    /// The running long job's progress in percent (0 ..= 100). No change signal: follow the Progress signal.
    #[zbus(property(emits_changed_signal = "false"), name = "Progress")]
    fn progress_prop(&self) -> u32 {
        lock(&self.job).1
    }

    /// A long job advanced: its name (the method), percent done and what it is doing.
    #[zbus(signal, name = "Progress")]
    async fn progress_signal(emitter: &SignalEmitter<'_>, operation: &str, percent: u32, message: &str) -> zbus::Result<()>;

    /// A long job ended: its name and result ("ok: ..." or "failed: ...").
    #[zbus(signal, name = "Completed")]
    async fn completed_signal(emitter: &SignalEmitter<'_>, operation: &str, result: &str) -> zbus::Result<()>;

    /// The daemon's state changed: the new State and StatusText.
    #[zbus(signal, name = "StateChanged")]
    async fn state_changed_signal(emitter: &SignalEmitter<'_>, state: &str, status_text: &str) -> zbus::Result<()>;
}

/// A backup's failure as a named error.
fn backup_error(e: crate::service::backup::BackupError) -> MethodError {
    use crate::service::backup::BackupError as E;
    let text = match std::error::Error::source(&e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    match e {
        E::Store(st) => crate::service::ServiceError::Store(st).into(),
        // The caller's descriptor would not take the bytes (a read-only file, a full disk).
        E::Write(_) => MethodError::InvalidArgument(text),
        E::Vectors(_) | E::Io { .. } | E::VectorsChanging { .. } | E::Panicked => MethodError::Failed(text),
    }
}

/// A refused RestoreBackup as a named error: the archive's fault is the caller's.
fn restore_error(e: crate::service::restore::RestoreError) -> MethodError {
    use crate::service::restore::RestoreError as E;
    let text = e.to_string();
    match e {
        E::BadArchive(_) | E::SchemaTooNew { .. } => MethodError::InvalidArgument(text),
        E::NoSpace { .. } | E::Io { .. } | E::Journal { .. } | E::Panicked => MethodError::Failed(text),
    }
}

/// An export's failure as a named error.
fn export_error(e: crate::service::export::ExportError) -> MethodError {
    use crate::service::export::ExportError as E;
    let text = match std::error::Error::source(&e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    match e {
        E::UnknownTable(_) | E::UnknownFormat(_) => MethodError::InvalidArgument(text),
        E::Store(st) => crate::service::ServiceError::Store(st).into(),
        // The caller's descriptor would not take the bytes (a read-only file, a full disk).
        E::Write { .. } => MethodError::InvalidArgument(text),
        E::Arrow { .. } | E::Parquet { .. } | E::Panicked => MethodError::Failed(format!("{e}; see the daemon log")),
    }
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

/// Sends `Completed("Rollback", "ok: <text>")` for the rollback the
/// launcher made at this start (docs/update.md).
pub async fn announce_rollback(iface: &InterfaceRef<Daemon1>, text: &str) {
    if let Err(e) = Daemon1::completed_signal(iface.signal_emitter(), "Rollback", &format!("ok: {text}")).await {
        tracing::warn!(error = %e, "could not send the Completed signal of the rollback at start");
    }
}

/// Announces changes of State and StatusText (PropertiesChanged, and the
/// StateChanged signal), and of ActiveModels, until the connection goes.
pub async fn watch_state(iface: InterfaceRef<Daemon1>, every: Duration) {
    // The state at start is no change: only later ones are signalled (a
    // client that subscribed early must not see "starting" twice).
    let mut last = {
        let d = iface.get().await;
        (d.state(), d.status_line())
    };
    let mut last_models = iface.get().await.active_models();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (now, models) = {
            let d = iface.get().await;
            ((d.state(), d.status_line()), d.active_models())
        };
        if models != last_models {
            if let Err(e) = iface.get().await.active_models_changed(iface.signal_emitter()).await {
                tracing::warn!(error = %e, "could not announce a change of ActiveModels on D-Bus");
            }
            last_models = models;
        }
        if last == now {
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
        last = now;
    }
}
