//! edgeaid: runs Dify LLM apps on an industrial edge gateway under systemd.
//!
//! [`run`] is the whole daemon lifecycle (see ARCHITECTURE.md): config is
//! already validated by the binary; here the store opens, apps from config
//! are stored, sockets are bound, READY=1 is sent, the model loads in the
//! background, and the daemon serves until SIGTERM/SIGINT, then drains.

pub mod admin;
pub mod api;
pub mod audit;
pub mod cache;
pub mod config;
pub mod control;
pub mod cpu;
pub mod engine;
#[cfg(test)]
mod fuzz;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod governor;
pub mod knowledge;
pub mod model;
pub mod reexec;
pub mod sandbox;
pub mod service;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod update;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::api::{ApiState, Listeners};
use crate::config::{Settings, Sources};
use crate::model::{ModelRuntime, RuntimeConfig};
use crate::service::Service;
use crate::store::Store;
use crate::supervise::{Notifier, SignalEvent, Signals};

/// Exit code for a configuration that cannot work (EX_CONFIG); the unit
/// lists it in RestartPreventExitStatus.
pub const EXIT_CONFIG: i32 = 78;

/// Exit code after a drain that RestoreBackup asked for (EX_TEMPFAIL): the
/// unit lists it in RestartForceExitStatus (restart even though the exit
/// was clean) and SuccessExitStatus (not a failure), so systemd starts the
/// daemon again and the start applies the staged restore.
pub const EXIT_RESTART: i32 = 75;

/// Set when RestoreBackup asked for a restart; read by the binary after [`run`].
static RESTART_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Drains and stops the daemon as SIGTERM does (it sends itself one), so
/// that it exits with [`EXIT_RESTART`].
pub fn request_restart() -> Result<(), nix::Error> {
    // Once: a second SIGTERM during the drain means "stop now" (see run).
    if RESTART_REQUESTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGTERM)
}

/// Set by a stop signal that is not a requested restart (the first one, or
/// a second one during a restart's drain): the daemon stops for good.
static STOP_FOR_GOOD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the daemon stopped to restart ([`request_restart`]), and no stop
/// signal from outside (`systemctl stop`) overrode it.
pub fn restart_requested() -> bool {
    RESTART_REQUESTED.load(std::sync::atomic::Ordering::SeqCst) && !STOP_FOR_GOOD.load(std::sync::atomic::Ordering::SeqCst)
}

/// Why the daemon could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("opening the store {}: {source}", path.display())]
    Store { path: std::path::PathBuf, source: store::StoreError },
    #[error("storing the apps from the configuration: {0}")]
    Apps(service::ServiceError),
    #[error("binding the sockets: {0}")]
    Bind(#[from] api::BindError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("dev.demo_key_file {}: {source}", path.display())]
    DemoKey { path: std::path::PathBuf, source: std::io::Error },
    #[error("creating the demo key: {0}")]
    DemoKeyStore(store::StoreError),
    #[error("workflow.http_allow: {0}")]
    HttpAllow(service::outbound::OutboundError),
    #[error("dev.demo_rag_app {}: {source}", path.display())]
    DemoApp { path: std::path::PathBuf, source: std::io::Error },
    #[error("embedding.upstream_model is set but upstream.url is not")]
    EmbeddingUpstream,
    #[error("starting the knowledge bases: {0}")]
    Knowledge(service::knowledge::KnowledgeError),
    #[error("D-Bus: {0}")]
    Control(#[from] control::ControlError),
    #[error("a restore's swap in {} is half done and could not be undone (restore.journal lists its renames; the next start tries again): {source}", state_dir.display())]
    Restore { state_dir: std::path::PathBuf, source: service::restore::RestoreError },
    #[error("{key}: {source}", key = .0.key(), source = .0)]
    Tls(api::tls::TlsError),
    /// An `[[auth.jwt]]` key file that is missing, unreadable or unusable.
    #[error("{0}")]
    JwtKeys(api::jwt::JwtError),
}

impl DaemonError {
    /// The process's exit status for this failure: [`EXIT_CONFIG`] when the
    /// configuration (or the socket units beside it) is wrong, which a
    /// restart cannot fix (the unit does not restart on it); 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        use api::BindError as B;
        match self {
            DaemonError::Bind(B::Mismatch { .. } | B::NotListening { .. } | B::NoGroup { .. })
            | DaemonError::EmbeddingUpstream
            | DaemonError::Tls(_) => EXIT_CONFIG,
            DaemonError::JwtKeys(_) => EXIT_CONFIG,
            DaemonError::Bind(
                B::Tcp { .. }
                | B::SocketDir { .. }
                | B::SocketInUse { .. }
                | B::StaleSocket { .. }
                | B::Unix { .. }
                | B::Chown { .. }
                | B::Chmod { .. }
                | B::ListenFds { .. }
                | B::Inherited { .. },
            )
            | DaemonError::Store { .. }
            | DaemonError::Apps(_)
            | DaemonError::Signals(_)
            | DaemonError::DemoKey { .. }
            | DaemonError::DemoKeyStore(_)
            | DaemonError::HttpAllow(_)
            | DaemonError::DemoApp { .. }
            | DaemonError::Knowledge(_)
            | DaemonError::Control(_)
            | DaemonError::Restore { .. } => 1,
        }
    }
}

/// Picks the embedding model (the upstream's when `embedding.upstream_model`
/// is set, else the local one when `[embedding]` is on; a local model that
/// does not load leaves knowledge bases to full-text search, with a
/// warning) and starts the knowledge service, which queues documents a
/// crash left half-indexed.
async fn start_knowledge(settings: &Settings, store: &Store, threads: u32) -> Result<Arc<service::knowledge::Knowledge>, DaemonError> {
    let embedder = match &settings.embedding.upstream_model {
        Some(model) if settings.upstream.url.is_some() => {
            let e = &settings.embedding;
            let up = model::upstream::Upstream::new(&settings.upstream);
            tracing::info!(model = %model, "knowledge bases embed through the upstream's /embeddings");
            Some(Arc::new(model::embed::Embeddings::Upstream(model::embed::UpstreamEmbedder::new(
                up,
                model.clone(),
                e.query_prefix.clone(),
                e.passage_prefix.clone(),
            ))))
        }
        Some(_) => return Err(DaemonError::EmbeddingUpstream),
        None if settings.embedding.enabled => load_embedder(settings, threads).await.map(|e| Arc::new(model::embed::Embeddings::Local(e))),
        None => None,
    };
    let k =
        service::knowledge::Knowledge::start(store.clone(), embedder, settings.knowledge.clone()).await.map_err(DaemonError::Knowledge)?;
    if let Some(dir) = &settings.dev.demo_dataset_dir {
        match k.seed_dir(dir).await {
            Ok(s) => tracing::info!(dataset = %s.dataset_name, id = %s.dataset_id, queued = s.queued, present = s.present, "demo dataset"),
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not seed the demo dataset"),
        }
    }
    Ok(k)
}

/// Starts the code nodes' sandbox (probing python3 off the event loop).
/// Code must never read the store, uploads, knowledge files, key files or
/// the configuration: the Python sandbox refuses to start if it would.
async fn start_code(settings: &Settings, metrics: &Arc<telemetry::metrics::Metrics>) -> Arc<service::code::CodeRuntime> {
    let mut protected = vec![settings.store.path.clone(), settings.files.dir.clone(), settings.knowledge.dir.clone()];
    protected.extend(settings.sources.iter().cloned());
    let dev = &settings.dev;
    protected.extend([&dev.demo_key_file, &dev.demo_rag_key_file].into_iter().flatten().cloned());
    protected.extend(settings.auth.jwt.iter().filter_map(|j| match &j.keys {
        config::JwtKeySource::Secret(path) => Some(path.clone()),
        config::JwtKeySource::PublicKey(_) | config::JwtKeySource::Jwks(_) => None,
    }));
    let code = settings.code.clone();
    let m = Arc::clone(metrics);
    match tokio::task::spawn_blocking(move || service::code::CodeRuntime::start(&code, protected, m)).await {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            tracing::error!(error = %e, "the code sandbox failed to start; code nodes run JavaScript only");
            let off = config::CodeSettings { python: config::PythonChoice::Off, ..settings.code.clone() };
            Arc::new(service::code::CodeRuntime::start(&off, Vec::new(), Arc::clone(metrics)))
        }
    }
}

/// Runs the daemon until it is told to stop. `exec_start` is when the
/// process started, for the READY timing; `inherited` are the sockets
/// systemd passed (socket activation), served instead of binding them.
pub async fn run(settings: Settings, sources: Sources, exec_start: Instant, inherited: api::Inherited) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env();
    let jwt = Arc::new(api::jwt::JwtKeys::load(&settings.auth.jwt).map_err(DaemonError::JwtKeys)?);
    let metrics = Arc::new(telemetry::metrics::Metrics::new());
    let limits = governor::detect();
    let threads = match settings.model.threads {
        Some(t) => {
            tracing::info!(threads = t, source = "model.threads", "inference threads");
            t
        }
        None => {
            let t = limits.inference_threads();
            tracing::info!(
                threads = t,
                affinity_cpus = limits.affinity_cpus,
                cpu_quota = ?limits.cpu_quota,
                cgroup = limits.cgroup,
                "inference threads = min(CPU affinity, cgroup cpu quota)"
            );
            t
        }
    };
    if let Some(mem) = limits.memory_max {
        tracing::info!(memory_max_bytes = mem, cgroup = limits.cgroup, "memory limit");
    }

    let (store, report) = open_store(&settings).map_err(|e| *e)?;
    tracing::info!(path = %settings.store.path.display(), schema = report.schema_version, recovered_messages = report.recovered_messages, "store open");

    let m = &settings.model;
    let runtime = ModelRuntime::new(
        RuntimeConfig {
            name: m.name.clone(),
            path: m.path.clone(),
            enabled: m.enabled,
            context_size: m.context_size,
            kv_type_k: m.kv_type_k,
            kv_type_v: m.kv_type_v,
            slots: m.slots,
            threads,
            adaptive_threads: m.threads.is_none(),
            batch_size: m.batch_size,
            step_budget: m.step_budget,
            prefix_save: m.prefix_save,
            prefix_dir: Some(settings.store.path.parent().unwrap_or(std::path::Path::new("")).join("kv-prefixes")),
            queue_depth: m.queue_depth,
            max_queued_per_app: settings.admission.queued_per_app(m),
            max_concurrent_per_app: settings.admission.concurrent_per_app(m),
            use_mlock: m.use_mlock,
            load_timeout: m.load_timeout,
            chat_template: m.chat_template.clone(),
        },
        Arc::clone(&metrics),
    );
    let code = start_code(&settings, &metrics).await;
    let workflows = service::workflow::WorkflowRuntime::from_settings(&settings, code).map_err(DaemonError::HttpAllow)?;
    let service = Service::new(store.clone(), Arc::clone(&runtime), workflows);
    let budget = governor::pressure::BudgetInput {
        model_path: m.path.clone(),
        context_size: m.context_size,
        kv_type_k: m.kv_type_k,
        kv_type_v: m.kv_type_v,
        slots: m.slots,
        batch_size: m.batch_size,
        queue_depth: m.queue_depth,
        response_cache: if settings.cache.enabled { cache::ResponseCache::max_bytes_for(&settings.cache, limits.memory_max) } else { 0 },
    };
    let gov = governor::pressure::Governor::new(limits.clone(), budget, Arc::clone(&metrics));
    let rt = Arc::clone(&runtime);
    gov.spawn(move || rt.ready().ok().map(|l| l.shape()));
    service.set_governor(gov);
    let (n_apps, results) = service.sync_config_apps(settings.apps.clone()).await.map_err(DaemonError::Apps)?;
    for (app, result) in results {
        let changed = result.map_err(DaemonError::Apps)?;
        tracing::info!(app = %app, new_version = changed, "app from config");
    }

    service.set_cache(cache::ResponseCache::new(settings.cache.clone(), limits.memory_max, store.clone())).await;
    if let (Some(gov), Some(cache)) = (service.governor(), service.cache()) {
        gov.register(Arc::clone(cache) as Arc<dyn governor::shrink::Shrink>);
    }

    let knowledge = start_knowledge(&settings, &store, threads).await?;
    service.set_knowledge(Arc::clone(&knowledge));

    // Read once more (config::load read them too): a file changed since is caught here.
    let tls = settings.server.tls.as_ref().map(api::tls::Certs::load).transpose().map_err(DaemonError::Tls)?.map(Arc::new);
    let listeners = Listeners::bind(&settings.server, inherited)?;
    let tcp_addr = listeners.tcp_addr();
    // The API's base URL for the development banners.
    let scheme = if tls.is_some() { "https" } else { "http" };
    let api_base = tcp_addr.map(|a| format!("{scheme}://{a}/v1"));
    if let Some(path) = &settings.dev.demo_key_file {
        if let Some(app) = settings.apps.first() {
            demo_key(&store, &app.id, path, api_base.as_deref()).await?;
        }
    }
    if let Some(path) = &settings.dev.demo_rag_app {
        demo_rag_app(&service, path, settings.dev.demo_rag_key_file.as_deref(), api_base.as_deref()).await?;
    }
    match service::features::sweep_unfinished_uploads(&settings.files.dir).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(removed = n, dir = %settings.files.dir.display(), "removed uploads a crash left unfinished"),
        Err(e) => tracing::warn!(dir = %settings.files.dir.display(), error = %e, "could not sweep unfinished uploads"),
    }
    let admin_gid = settings.server.admin_group.as_deref().and_then(|g| match nix::unistd::Group::from_name(g) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            tracing::warn!(group = g, "server.admin_group does not exist; only root may use the admin API");
            None
        }
    });
    let audit = audit::Audit::new(store.clone(), settings.audit, Arc::clone(&metrics));
    let state = Arc::new(ApiState {
        service: Arc::clone(&service),
        limits: settings.server.clone(),
        files: settings.files.clone(),
        tcp_addr,
        started: exec_start,
        admin_gid,
        model_name: settings.model.name.clone(),
        cpu_features: cpu::describe(),
        knowledge: Some(Arc::clone(&knowledge)),
        metrics: Arc::clone(&metrics),
        metrics_on: settings.metrics,
        config_sources: settings.sources.clone(),
        rate: api::ratelimit::RateLimits::new(
            settings.server.client_requests_per_minute,
            settings.server.client_burst,
            settings.server.key_requests_per_minute,
            settings.server.key_burst,
        ),
        embedding: embedding_facts(&settings, threads),
        audit: Arc::clone(&audit),
        tls,
        jwt: Arc::clone(&jwt),
        update: Arc::new(update::Updates::new(&settings.update).with_store(&settings.store.path)),
    });
    let signals = Signals::install().map_err(DaemonError::Signals)?;
    // D-Bus after the sockets and before READY=1, as the lifecycle says: a
    // client that sees READY finds the name. Reload calls go to the signal
    // loop, which owns reloads.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let control =
        control::start(&settings.control.bus, Arc::clone(&service), audit, state.facts(), reload_tx, Arc::clone(&state.update)).await?;

    let ready_ms = exec_start.elapsed().as_millis() as u64;
    notifier.ready(&supervise::status_text(&runtime.status()));
    tracing::info!(
        ready_ms,
        listen = %tcp_addr.map_or_else(|| "disabled".to_owned(), |a| a.to_string()),
        tls = settings.server.tls.is_some(),
        socket = %settings.server.socket.as_ref().map_or_else(|| "disabled".to_owned(), |p| p.display().to_string()),
        apps = n_apps,
        "ready"
    );

    let n = notifier.clone();
    runtime.start(move |st| {
        if let Some(e) = &st.error {
            tracing::error!(error = %e, "model unavailable; model calls answer 503 until it is fixed and loaded again (edgeaictl models load) or the daemon restarted");
        }
        n.status(&supervise::status_text(st));
    });
    // A pending slot's health gate (it commits itself or stops with exit 1).
    let _gate = update::gate::Gate {
        settings: settings.update.clone(),
        runtime: Arc::clone(&runtime),
        knowledge: Arc::clone(&knowledge),
        notifier: notifier.clone(),
        metrics: Arc::clone(&metrics),
        started: exec_start,
    }
    .spawn();
    if let Some(timeout) = supervise::watchdog_timeout() {
        let k = Arc::clone(&knowledge);
        tokio::spawn(supervise::watchdog_task(
            notifier.clone(),
            timeout,
            store.clone(),
            Arc::clone(&runtime),
            Arc::clone(&metrics),
            move || k.embedder_heartbeat_age(),
        ));
    }

    // Signals for the rest of the daemon's life: the first SIGTERM/SIGINT
    // starts the drain, a second one stops at once; SIGHUP reloads.
    let (phase_tx, phase) = tokio::sync::watch::channel(Phase::Running);
    let reloads = Reloads { service: Arc::clone(&service), sources: sources.clone(), tls: state.tls.clone(), jwt };
    tokio::spawn(handle_signals(signals, reload_rx, reloads, notifier.clone(), phase_tx));
    let mut stop_rx = phase.clone();
    let shutdown = async move {
        let _ = stop_rx.wait_for(|p| *p != Phase::Running).await;
    };
    let grace = settings.server.shutdown_grace;
    let svc = Arc::clone(&service);
    let model = Arc::clone(&runtime);
    let mut drain_rx = phase.clone();
    let drain = async move {
        let open = api::serve(listeners, Arc::clone(&state), shutdown, grace).await;
        // The drain's deadline counts from the stop signal, not from start-up.
        let signal_at = match *drain_rx.borrow_and_update() {
            Phase::Draining(at) => at,
            Phase::Running | Phase::Abort => tokio::time::Instant::now(),
        };
        let left = svc.drain(signal_at + grace).await;
        tracing::info!(open_connections = open, cancelled_runs = left, "drained");
        // Only a clean stop saves the cached prefixes (a second signal skips it).
        model.stop(MODEL_STOP).await;
    };
    let mut abort_rx = phase;
    tokio::select! {
        () = drain => {}
        _ = abort_rx.wait_for(|p| *p == Phase::Abort) => {
            let n = service.abort_runs(std::time::Duration::from_secs(2)).await;
            tracing::warn!(stopped_runs = n, "second stop signal: stopping now without draining; runs in flight were recorded as stopped");
        }
    }
    // Leave the bus before the store closes: no call finds a closed store.
    drop(control);
    let store_for_close = service.store().clone();
    drop(service);
    if let Err(e) = store_for_close.close().await {
        tracing::error!(error = %telemetry::chain(&e), "closing the store");
    }
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

/// Opens the store, first applying a restore RestoreBackup staged (see
/// `service::restore`): when the restored store does not open or migrate,
/// the old state goes back and is opened instead (the daemon comes up). A
/// swap that could not be undone stops the start instead: opening would
/// serve a mix of two states.
fn open_store(settings: &Settings) -> Result<(Store, store::OpenReport), Box<DaemonError>> {
    let path = &settings.store.path;
    let open = || {
        Store::open_with(path, store::StoreOptions { synchronous: settings.store.synchronous, ..Default::default() })
            .map_err(|source| Box::new(DaemonError::Store { path: path.clone(), source }))
    };
    let state_dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let half_done = |source| Box::new(DaemonError::Restore { state_dir: state_dir.to_owned(), source });
    let applying = match service::restore::begin(state_dir, path, &settings.knowledge.dir) {
        Ok(a) => a,
        Err(e) if service::restore::interrupted(state_dir) => return Err(half_done(e)),
        Err(e) => {
            tracing::error!(error = %telemetry::chain(&e), state_dir = %state_dir.display(), "the staged restore was not applied; serving the old state");
            None
        }
    };
    let Some(applying) = applying else { return open() };
    match open() {
        Ok(opened) => {
            match applying.commit() {
                Ok(applied) => tracing::info!(
                    store = %path.display(),
                    knowledge = %settings.knowledge.dir.display(),
                    schema = opened.1.schema_version,
                    previous = %applied.previous.display(),
                    "restore applied: serving the restored state; the old state is kept in previous"
                ),
                Err(e) => tracing::warn!(error = %telemetry::chain(&e), "restore applied, but its staged copy could not be cleaned up"),
            }
            Ok(opened)
        }
        Err(e) => {
            let failed = applying.rollback().map_err(half_done)?;
            tracing::error!(
                error = %telemetry::chain(&*e),
                failed = %failed.display(),
                "the restored store does not open: restore undone, serving the old state; the staged copy is kept in failed"
            );
            open()
        }
    }
}

/// How long a clean stop waits for the inference thread to save the cached
/// prompt prefixes (a few MB per slot: well under a second).
const MODEL_STOP: std::time::Duration = std::time::Duration::from_secs(10);

/// Where the daemon is in its life, as the signals decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// The first stop signal arrived at this instant: draining.
    Draining(tokio::time::Instant),
    /// A second stop signal: stop now.
    Abort,
}

/// What a reload (SIGHUP, D-Bus Reload) re-reads and applies.
struct Reloads {
    service: Arc<Service>,
    sources: Sources,
    /// The running TLS certificate, swapped for new connections.
    tls: Option<Arc<api::tls::Certs>>,
    /// The `[[auth.jwt]]` key files.
    jwt: Arc<api::jwt::JwtKeys>,
}

async fn handle_signals(
    mut signals: Signals,
    mut reload_calls: tokio::sync::mpsc::Receiver<control::ReloadRequest>,
    reloads: Reloads,
    notifier: Notifier,
    phase: tokio::sync::watch::Sender<Phase>,
) {
    let service = &reloads.service;
    loop {
        let event = tokio::select! {
            e = signals.next() => e,
            Some(reply) = reload_calls.recv() => {
                let outcome = if *phase.borrow() == Phase::Running {
                    reload_jwt_keys(&reloads.jwt);
                    reload(&reloads, &notifier).await
                } else {
                    Err("the daemon is stopping; nothing was reloaded".to_owned())
                };
                let _ = reply.send(outcome);
                continue;
            }
        };
        match event {
            SignalEvent::Stop(sig) if *phase.borrow() == Phase::Running => {
                if !restart_requested() {
                    // A restart asked for during this drain does not happen.
                    STOP_FOR_GOOD.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                tracing::info!(signal = sig, in_flight = service.in_flight(), "stopping: draining in-flight requests");
                if restart_requested() && reexec::in_place() {
                    // The same process goes on as the new image: systemd
                    // must not see it stopping (it would not wait for a READY).
                    notifier.restarting_in_place("restarting in place: draining in-flight requests");
                } else {
                    notifier.stopping("stopping: draining in-flight requests");
                }
                service.begin_shutdown();
                phase.send_replace(Phase::Draining(tokio::time::Instant::now()));
            }
            SignalEvent::Stop(sig) => {
                tracing::warn!(signal = sig, in_flight = service.in_flight(), "second stop signal: stopping now");
                // Someone (systemctl stop) wants the daemon gone: no restart,
                // in place or by exit 75, and systemd hears it stopping.
                if restart_requested() {
                    tracing::warn!("the requested restart is cancelled by the stop signal");
                    notifier.stopping("stopping now: second stop signal");
                }
                STOP_FOR_GOOD.store(true, std::sync::atomic::Ordering::SeqCst);
                notifier.status("stopping now: second stop signal");
                phase.send_replace(Phase::Abort);
                return;
            }
            SignalEvent::Reload if *phase.borrow() == Phase::Running => {
                // The outcome is logged by reload itself.
                reload_jwt_keys(&reloads.jwt);
                let _ = reload(&reloads, &notifier).await;
            }
            // A stopping daemon reloads nothing and must not say READY=1 again.
            SignalEvent::Reload => tracing::info!("SIGHUP while stopping: ignored"),
        }
    }
}

/// SIGHUP or D-Bus Reload: the `[[auth.jwt]]` key files are read again (the
/// issuers themselves apply at restart); a broken file keeps the old keys.
fn reload_jwt_keys(jwt: &api::jwt::JwtKeys) {
    if !jwt.enabled() {
        return;
    }
    match jwt.reload() {
        Ok(keys) => tracing::info!(keys, "reload: JWT issuer keys read again"),
        Err(e) => tracing::error!(error = %e, "reload: JWT issuer keys not reloaded; keeping the previous keys"),
    }
}

/// SIGHUP or D-Bus Reload: re-read the configuration; apps take effect now
/// (added, changed and removed ones), other settings at the next restart
/// (logged so nobody wonders). An invalid configuration changes nothing and
/// is the error, with every problem.
async fn reload(reloads: &Reloads, notifier: &Notifier) -> Result<control::ReloadReport, String> {
    let service = &reloads.service;
    notifier.reloading();
    let loaded = config::load(&reloads.sources);
    let tls = match &loaded {
        Ok(s) => reload_tls(reloads.tls.as_deref(), s.server.tls.as_ref()),
        // Reported below with every other problem.
        Err(_) => Ok(()),
    };
    let outcome = match loaded {
        Ok(s) => match service.sync_config_apps(s.apps).await {
            Ok((served, results)) => {
                let mut updated = 0;
                let mut failed = Vec::new();
                for (app, result) in results {
                    match result {
                        Ok(true) => updated += 1,
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(app = %app, error = %telemetry::chain(&e), "reload: app not applied");
                            failed.push(format!("{app}: {e}"));
                        }
                    }
                }
                tracing::info!(
                    apps_updated = updated,
                    apps_served = served,
                    "configuration reloaded; apps applied, other settings apply at restart"
                );
                if failed.is_empty() {
                    Ok(control::ReloadReport { apps_updated: updated, apps_served: u32::try_from(served).unwrap_or(u32::MAX) })
                } else {
                    Err(format!("configuration reloaded, but these apps were not applied: {}", failed.join("; ")))
                }
            }
            Err(e) => {
                tracing::error!(error = %telemetry::chain(&e), "reload: could not read the apps back from the store; serving the previous set");
                Err(format!("could not read the apps back from the store: {e}"))
            }
        },
        Err(e) => {
            tracing::error!(error = %telemetry::chain(&e), "reload: configuration invalid; keeping the running configuration");
            Err(format!("configuration invalid; keeping the running configuration: {e}"))
        }
    };
    notifier.ready(&supervise::status_text(&service.model_report().status));
    tls.and(outcome)
}

/// The TLS part of a reload: the certificate and key files are read again
/// and new connections get them (open ones keep theirs); files that fail
/// keep the running ones. Turning TLS on or off needs a restart.
fn reload_tls(running: Option<&api::tls::Certs>, configured: Option<&config::TlsSettings>) -> Result<(), String> {
    match (running, configured) {
        (Some(certs), Some(s)) => match certs.reload(s) {
            Ok(()) => {
                tracing::info!(cert_file = %s.cert_file.display(), key_file = %s.key_file.display(), "TLS certificate reloaded; new connections get it");
                Ok(())
            }
            Err(e) => {
                tracing::error!(key = e.key(), error = %e, "reload: TLS certificate not reloaded; serving the previous one");
                Err(format!("TLS certificate not reloaded, serving the previous one: {}: {e}", e.key()))
            }
        },
        (None, None) => Ok(()),
        (Some(_), None) => {
            tracing::warn!("[server.tls] was removed: the TCP listener keeps TLS until the daemon restarts");
            Ok(())
        }
        (None, Some(_)) => {
            tracing::warn!("[server.tls] was added: the TCP listener serves TLS after the daemon restarts");
            Ok(())
        }
    }
}

/// Development aid: keeps one API key for the first app in a file and
/// prints it, so `make run` can show a working key every time.
async fn demo_key(store: &Store, app_id: &str, path: &Path, api_base: Option<&str>) -> Result<(), DaemonError> {
    let existing = std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let key = match existing {
        Some(k) if store.authenticate(&k).await.ok().flatten().is_some_and(|i| i.app_id() == Some(app_id)) => k,
        _ => {
            let (_, secret) = store.create_key(app_id).await.map_err(DaemonError::DemoKeyStore)?;
            write_private(path, &secret).map_err(|source| DaemonError::DemoKey { path: path.to_owned(), source })?;
            secret
        }
    };
    let base = api_base.unwrap_or("(TCP disabled)");
    println!("edgeaid: demo app {app_id:?} is ready at {base}");
    println!("edgeaid: API key: {key}");
    println!(
        "edgeaid: try: curl -s {base}/chat-messages -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \
         -d '{{\"query\": \"Hello!\", \"inputs\": {{}}, \"user\": \"me\", \"response_mode\": \"blocking\"}}'"
    );
    Ok(())
}

/// The embedding model the configuration asks for (ListModels shows it).
fn embedding_facts(settings: &Settings, threads: u32) -> Option<admin::EmbeddingFacts> {
    let e = &settings.embedding;
    let max_tokens = u32::try_from(e.max_tokens).unwrap_or(u32::MAX);
    match &e.upstream_model {
        Some(model) => Some(admin::EmbeddingFacts { path: format!("upstream:{model}"), threads: 0, max_tokens }),
        None if e.enabled => {
            Some(admin::EmbeddingFacts { path: e.path.display().to_string(), threads: e.threads.unwrap_or(threads), max_tokens })
        }
        None => None,
    }
}

/// Loads the local embedding model; `None` (with a warning) when it does not load.
async fn load_embedder(settings: &Settings, threads: u32) -> Option<Arc<model::embed::Embedder>> {
    let e = &settings.embedding;
    let cfg = model::embed::EmbedConfig {
        path: e.path.clone(),
        threads: e.threads.unwrap_or(threads),
        batch_texts: e.batch_texts,
        max_tokens: e.max_tokens,
        query_prefix: e.query_prefix.clone(),
        passage_prefix: e.passage_prefix.clone(),
        queue: e.queue,
    };
    match tokio::task::spawn_blocking(move || model::embed::Embedder::load(cfg)).await {
        Ok(Ok(em)) => {
            tracing::info!(model = em.model_id(), dims = em.dims(), "embedding model loaded");
            Some(em)
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "embedding model not loaded: knowledge bases search by full text only");
            None
        }
        Err(join) => {
            tracing::warn!(error = %join, "embedding model load panicked: knowledge bases search by full text only");
            None
        }
    }
}

/// Imports the development RAG app (`dev.demo_rag_app`) and writes a key of it.
async fn demo_rag_app(service: &Service, path: &Path, key_file: Option<&Path>, api_base: Option<&str>) -> Result<(), DaemonError> {
    let yaml = std::fs::read_to_string(path).map_err(|source| DaemonError::DemoApp { path: path.to_owned(), source })?;
    let (v, _) = service.import_dsl(&yaml, None, None, &[]).await.map_err(DaemonError::Apps)?;
    tracing::info!(app = %v.app_id, version = v.version, new_version = v.created, "demo RAG app");
    if let Some(key_file) = key_file {
        demo_key(service.store(), &v.app_id, key_file, api_base).await?;
    }
    Ok(())
}

fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    writeln!(f, "{secret}")
}
