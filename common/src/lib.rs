//! Wire types and the unix-socket HTTP client shared by `edgeaictl`, the
//! daemon and the tests.
//!
//! Owns: the JSON shapes of the admin API ([`admin`]), of Dify's
//! chat-messages endpoint ([`dify`]) and of its Knowledge API as
//! `edgeaictl datasets` reads it ([`datasets`]), an incremental Server-Sent Events
//! decoder ([`sse`]), a one-connection-per-request HTTP/1.1 client over a
//! unix socket ([`client`]) and the D-Bus client of the control interface
//! `org.edgeai.Daemon1` ([`dbus`]), and the backup archive's checks that
//! `edgeaictl` and the daemon share ([`backup_archive`]), and the signed
//! update bundle format with its keys and trust store ([`bundle`]).
//! Must not: depend on the daemon crate or link llama.cpp, so that `edgeaictl`
//! stays small; it holds no server logic and no routing.

pub mod admin;
pub mod backup_archive;
pub mod bundle;
pub mod client;
pub mod datasets;
pub mod dbus;
pub mod dify;
pub mod sse;

pub use client::{ClientError, Download, EventStream, SseEvent, UnixClient};
