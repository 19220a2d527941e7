//! The D-Bus control interface: the daemon owns `org.edgeai.Daemon1` on the
//! bus `control.bus` names (the system bus by default) and serves the
//! interface `org.edgeai.Daemon1` at `/org/edgeai/Daemon1` (zbus, on the
//! daemon's tokio runtime). Properties are readable by everyone the bus policy
//! lets in; every method checks the caller's uid, which the bus daemon reports
//! for the message's sender (never our own pid), against root and
//! `server.admin_group`. Calls go to the service layer, through the same
//! admin reports as the admin HTTP API (`crate::admin`), encoded as `a{sv}`;
//! the update controls go to the same `crate::update::Updates` as the admin
//! API's `/admin/v1/update` routes.
//! The only module that knows D-Bus.

mod error;
mod iface;
mod update;
mod value;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use zbus::fdo::RequestNameFlags;
use zbus::object_server::InterfaceRef;

pub use error::{ControlError, MethodError};
pub use iface::Daemon1;

use crate::config::BusChoice;
use crate::service::Service;

/// The bus name, interface name and object path.
pub const NAME: &str = "org.edgeai.Daemon1";
pub const PATH: &str = "/org/edgeai/Daemon1";

/// What a configuration reload changed: apps updated and apps served.
#[derive(Debug, Clone, Copy)]
pub struct ReloadReport {
    pub apps_updated: u32,
    pub apps_served: u32,
}

/// A `Reload` call, handed to the daemon's signal loop (which owns reloads,
/// as for SIGHUP); the answer says what changed or why nothing did.
pub type ReloadRequest = oneshot::Sender<Result<ReloadReport, String>>;

/// The served interface; dropping it leaves the bus.
pub struct Control {
    _conn: zbus::Connection,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// The bus refused: zbus reports it as an FDO error or as a method error by name.
fn is_access_denied(e: &zbus::Error) -> bool {
    match e {
        zbus::Error::FDO(f) => matches!(**f, zbus::fdo::Error::AccessDenied(_)),
        zbus::Error::MethodError(name, _, _) => name.as_str() == "org.freedesktop.DBus.Error.AccessDenied",
        _ => false,
    }
}

/// How long after taking the name the start's rollback is announced.
const ANNOUNCE_AFTER: Duration = Duration::from_secs(2);

/// How often the state watcher compares State and StatusText.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Connects to the configured bus, serves the interface and takes the name.
/// `Ok(None)` when `control.bus = "off"`, the bus cannot be reached (a
/// warning) or its policy refuses us the name (an error in the log): the
/// daemon serves HTTP without D-Bus. A name that another process owns stops
/// the start, as that is almost always a second edgeaid.
pub async fn start(
    bus: &BusChoice,
    service: Arc<Service>,
    audit: Arc<crate::audit::Audit>,
    facts: crate::admin::Facts,
    reload: mpsc::Sender<ReloadRequest>,
    update: Arc<crate::update::Updates>,
) -> Result<Option<Control>, ControlError> {
    let (builder, label) = match bus {
        BusChoice::Off => return Ok(None),
        BusChoice::System => (zbus::connection::Builder::system(), "system".to_owned()),
        BusChoice::Session => (zbus::connection::Builder::session(), "session".to_owned()),
        BusChoice::Address(a) => (zbus::connection::Builder::address(a.as_str()), a.clone()),
    };
    let iface = Daemon1::new(Arc::clone(&service), audit, facts, reload, update);
    let conn = match builder.and_then(|b| b.serve_at(PATH, iface)) {
        Ok(b) => b.build().await,
        Err(e) => Err(e),
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(bus = %label, error = %e, "D-Bus control unavailable: cannot reach the bus; serving HTTP only");
            return Ok(None);
        }
    };
    // DoNotQueue: a second edgeaid must fail, not wait in line for the name
    // (zbus's Builder::name requests it without the flag, and a queued
    // request looks like success).
    match conn.request_name_with_flags(NAME, RequestNameFlags::DoNotQueue.into()).await {
        Ok(_) => {}
        Err(zbus::Error::NameTaken) => return Err(ControlError::NameTaken { bus: label }),
        Err(e) if is_access_denied(&e) => {
            // The policy is missing or wrong: an install problem, not a reason to stop serving.
            tracing::error!(
                bus = %label,
                error = %e,
                "D-Bus control unavailable: the bus refused us the name org.edgeai.Daemon1; install systemd/org.edgeai.Daemon1.conf \
                 as /usr/share/dbus-1/system.d/org.edgeai.Daemon1.conf and reload dbus, or set control.bus = \"off\"; serving HTTP only"
            );
            return Ok(None);
        }
        Err(source) => return Err(ControlError::Serve { bus: label, source }),
    }
    let iface_ref: InterfaceRef<Daemon1> =
        conn.object_server().interface(PATH).await.map_err(|source| ControlError::Serve { bus: label.clone(), source })?;
    tracing::info!(bus = %label, name = NAME, path = PATH, "D-Bus control interface serving");
    if let Some(text) = crate::update::rolled_back_at_start() {
        // The launcher rolled an update back before anything could signal it.
        // Clients that follow the name's owner (GLib's signal subscriptions,
        // `gdbus monitor`) learn the new owner from NameOwnerChanged first and
        // drop what it sends before: give them a moment.
        let iface = iface_ref.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ANNOUNCE_AFTER).await;
            iface::announce_rollback(&iface, &text).await;
        });
    }
    let watcher = tokio::spawn(iface::watch_state(iface_ref, WATCH_EVERY));
    Ok(Some(Control { _conn: conn, watcher }))
}
