//! The D-Bus client of edgeaid's control interface `org.edgeai.Daemon1`
//! (zbus): connects to the system bus, the session bus or an address, calls
//! methods and reads properties, and turns their `a{sv}` answers back into
//! the admin API's JSON shapes, so callers decode them into [`crate::admin`]
//! types as they do the socket's answers.
//!
//! Must not: know the daemon; the interface is defined by the daemon's
//! `control` module and documented in systemd/org.edgeai.Daemon1.xml.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::Duration;

use serde_json::{Map, Number, Value as Json};
use zbus::zvariant::{OwnedValue, Value};

pub const NAME: &str = "org.edgeai.Daemon1";
pub const PATH: &str = "/org/edgeai/Daemon1";
pub const INTERFACE: &str = "org.edgeai.Daemon1";

/// Which bus: `system`, `session` or an address such as `unix:path=/run/bus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    System,
    Session,
    Address(String),
}

impl Bus {
    /// `system`, `session`, or a D-Bus address (it has a `:`).
    pub fn parse(s: &str) -> Result<Bus, String> {
        match s {
            "system" => Ok(Bus::System),
            "session" => Ok(Bus::Session),
            a if a.contains(':') => Ok(Bus::Address(a.to_owned())),
            other => Err(format!("{other:?} is not system, session or a D-Bus address such as unix:path=/run/dbus/system_bus_socket")),
        }
    }
}

impl std::fmt::Display for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bus::System => f.write_str("system bus"),
            Bus::Session => f.write_str("session bus"),
            Bus::Address(a) => write!(f, "bus {a}"),
        }
    }
}

/// Why a D-Bus call failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to the {bus}")]
    Connect { bus: Bus, source: zbus::Error },
    #[error("edgeaid is not on the {bus} (nobody owns org.edgeai.Daemon1)")]
    NotRunning { bus: Bus },
    /// The bus policy or the daemon refused the call.
    #[error("{name}: {message}")]
    Denied { name: String, message: String },
    /// The daemon answered with one of its errors (`org.edgeai.Error.*`) or the bus with another.
    #[error("{name}: {message}")]
    Remote { name: String, message: String },
    #[error("no answer from edgeaid on the {bus} within {}s", after.as_secs())]
    Timeout { bus: Bus, after: Duration },
    #[error("cannot decode the answer to {method}")]
    Decode { method: String, source: zbus::Error },
    #[error("D-Bus call {method} failed")]
    Call { method: String, source: zbus::Error },
}

/// A connection to the bus with a proxy for the daemon's interface.
pub struct BusClient {
    bus: Bus,
    proxy: zbus::Proxy<'static>,
    timeout: Duration,
}

impl BusClient {
    pub async fn connect(bus: Bus, timeout: Duration) -> Result<BusClient, BusError> {
        let built = match &bus {
            Bus::System => zbus::connection::Builder::system(),
            Bus::Session => zbus::connection::Builder::session(),
            Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
        };
        let connect = async { built?.build().await };
        let conn = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(source)) => return Err(BusError::Connect { bus, source }),
            Err(_) => return Err(BusError::Timeout { bus, after: timeout }),
        };
        let proxy = zbus::proxy::Builder::new(&conn)
            .destination(NAME)
            .and_then(|b| b.path(PATH))
            .and_then(|b| b.interface(INTERFACE))
            .map(|b| b.cache_properties(zbus::proxy::CacheProperties::No))
            .map_err(|source| BusError::Connect { bus: bus.clone(), source })?
            .build()
            .await
            .map_err(|source| BusError::Connect { bus: bus.clone(), source })?;
        Ok(BusClient { bus, proxy, timeout })
    }

    /// A client for `bus` only when the bus is there and the daemon holds its
    /// name on it (within `timeout`); `None` otherwise, without an error: the
    /// caller then uses the socket.
    pub async fn connect_if_serving(bus: Bus, timeout: Duration) -> Option<BusClient> {
        let client = BusClient::connect(bus, timeout).await.ok()?;
        let dbus = zbus::fdo::DBusProxy::new(client.proxy.connection()).await.ok()?;
        let name = zbus::names::BusName::try_from(NAME).ok()?;
        match tokio::time::timeout(timeout, dbus.name_has_owner(name)).await {
            Ok(Ok(true)) => Some(client),
            _ => None,
        }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Calls `method` with `body`; the answer's single value as JSON.
    pub async fn call<B>(&self, method: &str, body: &B) -> Result<Json, BusError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.call_within(method, body, self.timeout).await
    }

    /// [`BusClient::call`] with its own time limit, for a method that works long (a backup).
    pub async fn call_within<B>(&self, method: &str, body: &B, timeout: Duration) -> Result<Json, BusError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let reply = match tokio::time::timeout(timeout, self.proxy.call_method(method, body)).await {
            Ok(r) => r.map_err(|e| self.error(method, e))?,
            Err(_) => return Err(BusError::Timeout { bus: self.bus.clone(), after: timeout }),
        };
        let body = reply.body();
        if body.signature().to_string().is_empty() {
            return Ok(Json::Null);
        }
        // The reply's arguments as one structure: each method answers one value.
        let args: zbus::zvariant::Structure<'_> =
            body.deserialize().map_err(|source| BusError::Decode { method: method.to_owned(), source })?;
        Ok(args.fields().first().map_or(Json::Null, to_json))
    }

    /// A property's value as JSON.
    pub async fn property(&self, name: &str) -> Result<Json, BusError> {
        let got = tokio::time::timeout(self.timeout, self.proxy.get_property::<OwnedValue>(name)).await;
        match got {
            Ok(Ok(v)) => Ok(to_json(&v)),
            Ok(Err(e)) => Err(self.error(name, e)),
            Err(_) => Err(BusError::Timeout { bus: self.bus.clone(), after: self.timeout }),
        }
    }

    /// The daemon's signals of this name (StateChanged, Progress, Completed), as they come.
    pub async fn signals(&self, name: &'static str) -> Result<zbus::proxy::SignalStream<'static>, BusError> {
        self.proxy.receive_signal(name).await.map_err(|e| self.error(name, e))
    }

    fn error(&self, method: &str, e: zbus::Error) -> BusError {
        match e {
            zbus::Error::MethodError(name, message, _) => {
                let (name, message) = (name.to_string(), message.unwrap_or_default());
                match name.as_str() {
                    "org.freedesktop.DBus.Error.ServiceUnknown" | "org.freedesktop.DBus.Error.NameHasNoOwner" => {
                        BusError::NotRunning { bus: self.bus.clone() }
                    }
                    "org.freedesktop.DBus.Error.AccessDenied" | "org.edgeai.Error.PermissionDenied" => BusError::Denied { name, message },
                    _ => BusError::Remote { name, message },
                }
            }
            zbus::Error::FDO(fdo) => match *fdo {
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => BusError::NotRunning { bus: self.bus.clone() },
                zbus::fdo::Error::AccessDenied(m) => {
                    BusError::Denied { name: "org.freedesktop.DBus.Error.AccessDenied".into(), message: m }
                }
                other => BusError::Remote { name: zbus::DBusError::name(&other).to_string(), message: other.to_string() },
            },
            source => BusError::Call { method: method.to_owned(), source },
        }
    }
}

/// A file descriptor argument (ImportApp's `h`).
pub fn fd<F: AsFd>(file: &F) -> zbus::zvariant::Fd<'_> {
    zbus::zvariant::Fd::from(file.as_fd())
}

/// Options of a call (`a{sv}`).
pub type Options<'a> = HashMap<&'a str, Value<'a>>;

/// A D-Bus value as JSON: dicts become objects, arrays lists, variants their content.
pub fn to_json(v: &Value<'_>) -> Json {
    match v {
        Value::U8(n) => Json::from(*n),
        Value::Bool(b) => Json::Bool(*b),
        Value::I16(n) => Json::from(*n),
        Value::U16(n) => Json::from(*n),
        Value::I32(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.to_string()),
        Value::Signature(s) => Json::String(s.to_string()),
        Value::ObjectPath(p) => Json::String(p.to_string()),
        Value::Value(inner) => to_json(inner),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Dict(d) => {
            let mut m = Map::new();
            for (k, v) in d.iter() {
                let key = match k {
                    Value::Str(s) => s.to_string(),
                    other => to_json(other).to_string(),
                };
                m.insert(key, to_json(v));
            }
            Json::Object(m)
        }
        Value::Structure(s) => Json::Array(s.fields().iter().map(to_json).collect()),
        Value::Fd(_) => Json::Null,
        #[allow(unreachable_patterns)]
        _ => Json::Null,
    }
}
