//! edgeaid: runs Dify LLM apps on an industrial edge gateway under systemd.
//!
//! [`run`] is the whole daemon lifecycle (see ARCHITECTURE.md): config is
//! already validated by the binary; here the store opens, apps from config
//! are stored, sockets are bound, READY=1 is sent, the model loads in the
//! background, and the daemon serves until SIGTERM/SIGINT, then drains.

pub mod api;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod governor;
pub mod model;
pub mod service;
pub mod store;
pub mod supervise;
pub mod telemetry;

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
}

/// Runs the daemon until it is told to stop. `exec_start` is when the
/// process started, for the READY timing.
pub async fn run(settings: Settings, sources: Sources, exec_start: Instant) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env();
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

    let (store, report) =
        Store::open(&settings.store.path).map_err(|source| DaemonError::Store { path: settings.store.path.clone(), source })?;
    tracing::info!(path = %settings.store.path.display(), schema = report.schema_version, recovered_messages = report.recovered_messages, "store open");

    let m = &settings.model;
    let runtime = ModelRuntime::new(RuntimeConfig {
        name: m.name.clone(),
        path: m.path.clone(),
        enabled: m.enabled,
        context_size: m.context_size,
        slots: m.slots,
        threads,
        adaptive_threads: m.threads.is_none(),
        batch_size: m.batch_size,
        queue_depth: m.queue_depth,
        use_mlock: m.use_mlock,
        chat_template: m.chat_template.clone(),
    });
    let service = Service::new(store.clone(), Arc::clone(&runtime));
    for app in &settings.apps {
        let v = service.put_app(app.clone(), "config").await.map_err(DaemonError::Apps)?;
        tracing::info!(app = %app.id, version = v.version, new_version = v.created, "app from config");
    }
    let n_apps = service.load_apps().await.map_err(DaemonError::Apps)?;

    let listeners = Listeners::bind(&settings.server)?;
    let tcp_addr = listeners.tcp_addr();
    if let Some(path) = &settings.dev.demo_key_file {
        if let Some(app) = settings.apps.first() {
            demo_key(&store, &app.id, path, tcp_addr).await?;
        }
    }
    let admin_gid = settings.server.admin_group.as_deref().and_then(|g| match nix::unistd::Group::from_name(g) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            tracing::warn!(group = g, "server.admin_group does not exist; only root may use the admin API");
            None
        }
    });
    let state = Arc::new(ApiState {
        service: Arc::clone(&service),
        limits: settings.server.clone(),
        tcp_addr,
        started: exec_start,
        admin_gid,
        model_name: settings.model.name.clone(),
        cpu_features: cpu::describe(),
    });
    let mut signals = Signals::install().map_err(DaemonError::Signals)?;

    let ready_ms = exec_start.elapsed().as_millis() as u64;
    let status = if m.enabled { "serving; loading the model" } else { "serving without a model (model.enabled = false)" };
    notifier.ready(status);
    tracing::info!(
        ready_ms,
        listen = %tcp_addr.map_or_else(|| "disabled".to_owned(), |a| a.to_string()),
        socket = %settings.server.socket.as_ref().map_or_else(|| "disabled".to_owned(), |p| p.display().to_string()),
        apps = n_apps,
        "ready"
    );

    let n = notifier.clone();
    runtime.start(move |st| match &st.error {
        None => n.status("serving; model loaded"),
        Some(e) => {
            tracing::error!(error = %e, "model unavailable; model calls answer 503 until it is fixed and the daemon restarted");
            n.status(&format!("serving without a model: {e}"));
        }
    });
    if let Some(timeout) = supervise::watchdog_timeout() {
        tokio::spawn(supervise::watchdog_task(notifier.clone(), timeout, store.clone(), Arc::clone(&runtime)));
    }

    let svc = Arc::clone(&service);
    let reload_sources = sources.clone();
    let notifier2 = notifier.clone();
    let shutdown = async move {
        loop {
            match signals.next().await {
                SignalEvent::Stop(sig) => {
                    tracing::info!(signal = sig, in_flight = svc.in_flight(), "stopping: draining in-flight requests");
                    notifier2.stopping("stopping: draining in-flight requests");
                    svc.begin_shutdown();
                    return;
                }
                SignalEvent::Reload => reload(&svc, &reload_sources, &notifier2).await,
            }
        }
    };
    let grace = settings.server.shutdown_grace;
    let drain_start = Instant::now();
    let open = api::serve(listeners, Arc::clone(&state), shutdown, grace).await;
    let left = service.drain(grace.saturating_sub(drain_start.elapsed())).await;
    tracing::info!(open_connections = open, cancelled_runs = left, "drained");
    drop(state);
    let store_for_close = service.store.clone();
    drop(service);
    if let Err(e) = store_for_close.close().await {
        tracing::error!(error = %e, "closing the store");
    }
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: re-read the configuration; apps take effect now, other settings
/// at the next restart (logged so nobody wonders).
async fn reload(service: &Service, sources: &Sources, notifier: &Notifier) {
    notifier.reloading();
    match config::load(sources) {
        Ok(s) => {
            let mut updated = 0;
            for app in s.apps {
                match service.put_app(app, "config").await {
                    Ok(v) if v.created => updated += 1,
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "reload: app not applied"),
                }
            }
            tracing::info!(apps_updated = updated, "configuration reloaded; apps applied, other settings apply at restart");
        }
        Err(e) => tracing::error!(error = %e, "reload: configuration invalid; keeping the running configuration"),
    }
    notifier.ready("serving");
}

/// Development aid: keeps one API key for the first app in a file and
/// prints it, so `make run` can show a working key every time.
async fn demo_key(store: &Store, app_id: &str, path: &Path, tcp_addr: Option<std::net::SocketAddr>) -> Result<(), DaemonError> {
    let existing = std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let key = match existing {
        Some(k) if store.authenticate(&k).await.ok().flatten().is_some_and(|i| i.app_id == app_id) => k,
        _ => {
            let (_, secret) = store.create_key(app_id).await.map_err(DaemonError::DemoKeyStore)?;
            write_private(path, &secret).map_err(|source| DaemonError::DemoKey { path: path.to_owned(), source })?;
            secret
        }
    };
    let base = tcp_addr.map(|a| format!("http://{a}/v1")).unwrap_or_else(|| "(TCP disabled)".into());
    println!("edgeaid: demo app {app_id:?} is ready at {base}");
    println!("edgeaid: API key: {key}");
    println!(
        "edgeaid: try: curl -s {base}/chat-messages -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \
         -d '{{\"query\": \"Hello!\", \"inputs\": {{}}, \"user\": \"me\", \"response_mode\": \"blocking\"}}'"
    );
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
