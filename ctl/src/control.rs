//! Where the control commands go: the daemon's D-Bus interface
//! `org.edgeai.Daemon1` (`--bus`, or the system bus when the daemon is on it
//! and no socket was asked for), or the admin HTTP API on the unix socket.
//! Either way a call answers the admin API's JSON shape, so the commands
//! decode and print it the same way.
//!
//! Owns: the choice of transport ([`choose`]) and the mapping of each control
//! operation onto a socket request or a D-Bus call. Must not: print.

use std::collections::HashMap;
use std::path::Path;

use edgeai_common::admin::{ActivateRequest, CreateKeyRequest, ImportDslRequest, StatusResponse, ADMIN_PREFIX};
use edgeai_common::dbus::{self, BusClient};
use edgeai_common::UnixClient;
use serde_json::{json, Value};
use zbus::zvariant::Value as DValue;

use crate::error::CtlError;
use crate::paths;

/// The admin transport.
pub enum Control {
    Socket(UnixClient),
    Bus(BusClient),
}

/// How the control commands are to reach the daemon, from the command line alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `--bus` (or EDGEAI_BUS): that bus, failing if the daemon is not on it.
    Bus(dbus::Bus),
    /// The system bus if the daemon holds its name there, else the socket: an
    /// installed gateway's default.
    SystemBusElseSocket,
    /// `--socket` (or EDGEAI_SOCKET) given, or run inside a source checkout
    /// (the dev daemon of `make run` is on the checkout's socket).
    Socket,
}

/// The transport for the control commands: `--bus` first, then an explicit
/// socket or a source checkout (the socket), else the system bus when the
/// daemon is there.
pub fn choose(bus: Option<dbus::Bus>, socket_given: bool, in_checkout: bool) -> Route {
    match bus {
        Some(b) => Route::Bus(b),
        None if socket_given || in_checkout => Route::Socket,
        None => Route::SystemBusElseSocket,
    }
}

/// Connects the transport [`choose`] picked.
pub async fn connect(route: Route, socket: &UnixClient, timeout: std::time::Duration) -> Result<Control, CtlError> {
    Ok(match route {
        Route::Bus(b) => Control::Bus(BusClient::connect(b, timeout).await?),
        // A short look: no system bus, or no daemon on it, is the socket's case.
        Route::SystemBusElseSocket => match BusClient::connect_if_serving(dbus::Bus::System, timeout.min(SYSTEM_BUS_LOOK)).await {
            Some(client) => Control::Bus(client),
            None => Control::Socket(socket.clone()),
        },
        Route::Socket => Control::Socket(socket.clone()),
    })
}

/// The longest look for the daemon on the system bus before the socket is used.
const SYSTEM_BUS_LOOK: std::time::Duration = std::time::Duration::from_secs(2);

/// An app file to import: its path, and for a DSL the import options.
pub struct Import<'a> {
    pub file: &'a Path,
    pub dsl: Option<ImportDslRequest>,
    /// A JSON definition, already read and checked to be an object (socket only).
    pub definition: Option<Value>,
}

impl Control {
    pub async fn status(&self) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.get(&paths::status()).await?),
            Control::Bus(b) => Ok(b.call("GetStatus", &()).await?),
        }
    }

    /// `{"data": [app, ...]}`.
    pub async fn apps(&self) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.get(&paths::apps()).await?),
            Control::Bus(b) => Ok(json!({"data": b.call("ListApps", &()).await?})),
        }
    }

    /// `(created, answer)`: a new version was stored, and the import report.
    pub async fn import(&self, import: Import<'_>) -> Result<(bool, Value), CtlError> {
        match self {
            Control::Socket(c) => {
                let (status, answer) = match (&import.dsl, &import.definition) {
                    (Some(dsl), _) => c.post_json_with_status::<_, Value>(&paths::import_dsl(), dsl).await?,
                    (None, Some(def)) => c.post_json_with_status::<_, Value>(&paths::apps(), def).await?,
                    (None, None) => {
                        return Err(CtlError::ReadInput { path: import.file.to_owned(), source: std::io::ErrorKind::InvalidInput.into() })
                    }
                };
                Ok((status.as_u16() != 200, answer))
            }
            Control::Bus(b) => {
                // The daemon reads the file through our descriptor: our permissions, not its.
                let file =
                    std::fs::File::open(import.file).map_err(|source| CtlError::ReadInput { path: import.file.to_owned(), source })?;
                let mut options: dbus::Options<'_> = HashMap::new();
                let datasets: HashMap<String, String>;
                match &import.dsl {
                    Some(dsl) => {
                        options.insert("format", DValue::from("dsl"));
                        if let Some(id) = &dsl.id {
                            options.insert("id", DValue::from(id.as_str()));
                        }
                        if let Some(name) = &dsl.name {
                            options.insert("name", DValue::from(name.as_str()));
                        }
                        if !dsl.datasets.is_empty() {
                            datasets = dsl.datasets.iter().cloned().collect();
                            options.insert("datasets", DValue::from(datasets.clone()));
                        }
                    }
                    None => {
                        options.insert("format", DValue::from("json"));
                    }
                }
                let mut answer = b.call("ImportApp", &(dbus::fd(&file), options)).await?;
                let created = answer.get("created").and_then(Value::as_bool).unwrap_or(true);
                if let Value::Object(m) = &mut answer {
                    m.remove("created");
                    if import.dsl.is_none() {
                        // The socket answers a JSON import with the app itself.
                        return Ok((created, m.remove("app").unwrap_or(Value::Null)));
                    }
                }
                Ok((created, answer))
            }
        }
    }

    /// `{"data": [version, ...]}`.
    pub async fn versions(&self, app: &str) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.get(&paths::app_versions(app)).await?),
            Control::Bus(b) => Ok(json!({"data": b.call("ListAppVersions", &(app,)).await?})),
        }
    }

    pub async fn activate(&self, app: &str, version: u32) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.post_json(&paths::activate(app), &ActivateRequest { version }).await?),
            Control::Bus(b) => Ok(b.call("ActivateAppVersion", &(app, version)).await?),
        }
    }

    pub async fn export(&self, app: &str, version: Option<u32>) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.get(&paths::export(app, version)).await?),
            Control::Bus(b) => {
                let mut options: dbus::Options<'_> = HashMap::new();
                if let Some(v) = version {
                    options.insert("version", DValue::from(v));
                }
                Ok(b.call("ExportApp", &(app, options)).await?)
            }
        }
    }

    pub async fn create_key(&self, request: CreateKeyRequest) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.post_json(&paths::keys(None), &request).await?),
            Control::Bus(b) => {
                let mut options: dbus::Options<'_> = HashMap::new();
                if let Some(app) = &request.app {
                    options.insert("app", DValue::from(app.as_str()));
                }
                if request.dataset {
                    options.insert("dataset", DValue::from(true));
                }
                Ok(b.call("CreateApiKey", &(options,)).await?)
            }
        }
    }

    /// `{"data": [key, ...]}`.
    pub async fn keys(&self, app: Option<&str>) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.get(&paths::keys(app)).await?),
            Control::Bus(b) => {
                let mut options: dbus::Options<'_> = HashMap::new();
                if let Some(app) = app {
                    options.insert("app", DValue::from(app));
                }
                Ok(json!({"data": b.call("ListApiKeys", &(options,)).await?}))
            }
        }
    }

    pub async fn revoke_key(&self, id: &str) -> Result<(), CtlError> {
        match self {
            Control::Socket(c) => Ok(c.delete(&paths::key(id)).await?),
            Control::Bus(b) => b.call("RevokeApiKey", &(id,)).await.map(drop).map_err(CtlError::from),
        }
    }

    pub async fn cache_stats(&self) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.get(&paths::cache(None)).await?),
            Control::Bus(b) => Ok(b.property("CacheStats").await?),
        }
    }

    pub async fn flush_cache(&self, app: Option<&str>) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.delete_json(&paths::cache(app)).await?),
            Control::Bus(b) => {
                let mut options: dbus::Options<'_> = HashMap::new();
                if let Some(app) = app {
                    options.insert("app", DValue::from(app));
                }
                Ok(b.call("FlushCache", &(options,)).await?)
            }
        }
    }

    /// `{"data": [model, ...]}`.
    pub async fn models(&self) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.get(&paths::models()).await?),
            Control::Bus(b) => Ok(json!({"data": b.call("ListModels", &()).await?})),
        }
    }

    /// `LoadModel`, waiting up to `wait` (over D-Bus with a bar on a terminal).
    pub async fn load_model(&self, name: &str, wait: std::time::Duration) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => {
                let name = self.chat_model_name(name).await?;
                Ok(c.clone().with_timeout(wait).post_json(&paths::model_action(&name, "load"), &json!({})).await?)
            }
            Control::Bus(b) => {
                let args = (name, dbus::Options::new());
                crate::progress::follow(b, "LoadModel", "loading", b.call_within("LoadModel", &args, wait)).await
            }
        }
    }

    /// `UnloadModel`, waiting up to `wait` for generations to finish.
    pub async fn unload_model(&self, name: &str, wait: std::time::Duration) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => {
                let name = self.chat_model_name(name).await?;
                Ok(c.clone().with_timeout(wait).post_json(&paths::model_action(&name, "unload"), &json!({})).await?)
            }
            Control::Bus(b) => Ok(b.call_within("UnloadModel", &(name, dbus::Options::new()), wait).await?),
        }
    }

    /// `name`, or the chat model's name when it is empty (a URL path needs one).
    async fn chat_model_name(&self, name: &str) -> Result<String, CtlError> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        let status: StatusResponse =
            serde_json::from_value(self.status().await?).map_err(|source| CtlError::Answer { command: "status".to_owned(), source })?;
        Ok(status.model.name)
    }

    /// The A/B update state and slots (`GET /admin/v1/update`, D-Bus `GetUpdateStatus`).
    pub async fn update_status(&self) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.get(&format!("{ADMIN_PREFIX}/update")).await?),
            Control::Bus(b) => Ok(b.call("GetUpdateStatus", &()).await?),
        }
    }

    /// `mark-good`, `mark-bad` or `rollback` (D-Bus `MarkGood`, `MarkBad`, `Rollback`).
    pub async fn update_action(&self, action: UpdateAction) -> Result<Value, CtlError> {
        match self {
            Control::Socket(c) => Ok(c.post_json(&format!("{ADMIN_PREFIX}/update/{}", action.path()), &json!({})).await?),
            Control::Bus(b) => Ok(b.call(action.method(), &()).await?),
        }
    }

    /// Installs the bundle at `bundle`. Over the socket its bytes are the
    /// request's body (read into memory); over D-Bus `InstallUpdate` reads it
    /// through a descriptor opened here (our permissions apply, nothing is
    /// read into memory), with a bar following its Progress on a terminal,
    /// waiting at least [`INSTALL_WAIT`] (or `timeout`, if longer).
    pub async fn install_update(&self, bundle: &Path, opts: InstallFlags, timeout: std::time::Duration) -> Result<Value, CtlError> {
        let InstallFlags { allow_downgrade, reinstall } = opts;
        let url = bundle.to_str().filter(|s| is_url(s));
        match self {
            Control::Socket(c) => {
                let path = crate::paths::update_install(allow_downgrade, reinstall, url);
                if url.is_some() {
                    return Ok(c.post_body(&path, "application/octet-stream", Vec::new()).await?);
                }
                // Streamed from the file: a bundle of hundreds of MB never sits in memory.
                let read_err = |source| CtlError::ReadInput { path: bundle.to_path_buf(), source };
                let file = tokio::fs::File::open(bundle).await.map_err(read_err)?;
                let meta = file.metadata().await.map_err(read_err)?;
                if !meta.is_file() {
                    // A pipe or a device: its length is unknown until read.
                    let bytes = tokio::fs::read(bundle).await.map_err(read_err)?;
                    return Ok(c.post_body(&path, "application/octet-stream", bytes).await?);
                }
                Ok(c.post_file(&path, "application/octet-stream", file, meta.len()).await?)
            }
            Control::Bus(b) => {
                let mut options: dbus::Options<'_> = HashMap::new();
                options.insert("allow_downgrade", DValue::from(allow_downgrade));
                options.insert("reinstall", DValue::from(reinstall));
                options.insert("restart", DValue::from(true));
                let wait = timeout.max(INSTALL_WAIT);
                if let Some(url) = url {
                    let args = (url, options);
                    let call = b.call_within("InstallUpdateFromUrl", &args, wait);
                    return crate::progress::follow(b, "InstallUpdateFromUrl", "download", call).await;
                }
                let file = std::fs::File::open(bundle).map_err(|source| CtlError::ReadInput { path: bundle.to_path_buf(), source })?;
                let args = (dbus::fd(&file), options);
                crate::progress::follow(b, "InstallUpdate", "install", b.call_within("InstallUpdate", &args, wait)).await
            }
        }
    }

    /// D-Bus only: the admin HTTP API has no reload (`systemctl reload edgeai` sends SIGHUP).
    pub async fn reload(&self) -> Result<Value, CtlError> {
        match self {
            Control::Socket(_) => Err(CtlError::NeedsBus { command: "reload" }),
            Control::Bus(b) => Ok(b.call("Reload", &()).await?),
        }
    }
}

/// Whether `update install`'s argument names a URL (`scheme://...`) the
/// daemon downloads rather than a local file; the daemon refuses schemes
/// other than http and https with a reason.
fn is_url(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    })
}

/// The operator's update actions besides install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateAction {
    MarkGood,
    MarkBad,
    Rollback,
}

impl UpdateAction {
    /// The admin API's path segment and the command's name.
    pub fn path(self) -> &'static str {
        match self {
            UpdateAction::MarkGood => "mark-good",
            UpdateAction::MarkBad => "mark-bad",
            UpdateAction::Rollback => "rollback",
        }
    }

    /// The D-Bus method.
    fn method(self) -> &'static str {
        match self {
            UpdateAction::MarkGood => "MarkGood",
            UpdateAction::MarkBad => "MarkBad",
            UpdateAction::Rollback => "Rollback",
        }
    }
}

/// What `update install` allows (`--allow-downgrade`, `--reinstall`).
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallFlags {
    pub allow_downgrade: bool,
    pub reinstall: bool,
}

/// The least time `update install` waits over D-Bus: the daemon reads,
/// verifies and unpacks a bundle of tens of MB before it answers.
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bus_flag_wins_then_an_explicit_socket_or_a_checkout_then_the_system_bus() {
        assert_eq!(choose(Some(dbus::Bus::Session), true, true), Route::Bus(dbus::Bus::Session));
        assert_eq!(choose(None, true, false), Route::Socket);
        assert_eq!(choose(None, false, true), Route::Socket);
        assert_eq!(choose(None, false, false), Route::SystemBusElseSocket);
    }
}
