//! Sockets and connections: binding TCP and the unix socket (mode and group
//! set without a window where the socket is wider than configured), or
//! adopting the ones systemd passed (socket activation: LISTEN_FDS, matched
//! to the config by name and address; systemd's socket file is left alone), the
//! accept loops with a connection cap (a refused client still reads its
//! 503, and is counted in the metrics), per-connection HTTP/1 limits, the cut-off of clients that stop
//! reading (`stall`), TLS on TCP when configured (the handshake in the
//! connection's task, after the allowlist and limits: `tls`), and the
//! graceful shutdown that lets in-flight responses finish.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use nix::sys::socket::sockopt::{AcceptConn, PeerCredentials, SockType};
use nix::sys::socket::{getsockname, getsockopt, AddressFamily, SockaddrLike, SockaddrStorage};
use nix::sys::stat::{umask, Mode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use super::stall::{StallFlag, StallGuard};
use super::{handle, ApiState, Peer};
use crate::config::ServerSettings;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}: {source}")]
    Tcp { addr: SocketAddr, source: std::io::Error },
    #[error("cannot create the socket directory {}: {source}", path.display())]
    SocketDir { path: PathBuf, source: std::io::Error },
    #[error("another process is already serving on {}", path.display())]
    SocketInUse { path: PathBuf },
    #[error("cannot remove the stale socket {}: {source}", path.display())]
    StaleSocket { path: PathBuf, source: std::io::Error },
    #[error("cannot bind the unix socket {}: {source}", path.display())]
    Unix { path: PathBuf, source: std::io::Error },
    #[error("server.socket_group {name:?} does not exist")]
    NoGroup { name: String },
    #[error("cannot give {} to group {group}: {source}", path.display())]
    Chown { path: PathBuf, group: String, source: nix::Error },
    #[error("cannot set mode {mode:o} on {}: {source}", path.display())]
    Chmod { path: PathBuf, mode: u32, source: std::io::Error },
    #[error("socket activation: the service manager's LISTEN_FDS/LISTEN_FDNAMES are invalid: {source}")]
    ListenFds { source: std::io::Error },
    #[error("socket activation: fd {fd} named {name:?}: {source}")]
    Inherited { fd: RawFd, name: String, source: std::io::Error },
    #[error("socket activation: fd {fd} named {name:?} is not a listening unix or TCP stream socket")]
    NotListening { fd: RawFd, name: String },
    #[error(
        "socket activation: fd {fd} named {name:?} is {found}, but {want}; \
         the socket unit's ListenStream= and server.socket/server.listen must name the same sockets"
    )]
    Mismatch { fd: RawFd, name: String, found: String, want: String },
}

/// The listening sockets the service manager passed (socket activation),
/// with their names (`FileDescriptorName=`): `unix` must be server.socket
/// and `tcp` server.listen; any other name (systemd's default is the socket
/// unit's name) is matched to them by address.
pub struct Inherited(Vec<(OwnedFd, String)>);

impl Inherited {
    /// Takes the sockets passed to this process (LISTEN_PID is ours), marks
    /// them close-on-exec so children do not inherit them, and removes the
    /// LISTEN_* variables. It changes the environment: call it before any
    /// other thread exists.
    pub fn take() -> Result<Inherited, BindError> {
        let fds = sd_notify::listen_fds_with_names(true).map_err(|source| BindError::ListenFds { source })?;
        // SAFETY: LISTEN_PID names this process, so the service manager
        // passed these fds to it, and nothing else in the process owns them.
        let fds: Vec<(OwnedFd, String)> = fds.map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name)).collect();
        // A copy of each for a restart in place (crate::reexec).
        crate::reexec::keep_passed(&fds).map_err(|source| BindError::Inherited {
            fd: -1,
            name: "(copy for a restart in place)".into(),
            source,
        })?;
        Ok(Inherited(fds))
    }
}

/// The bound sockets, before serving.
pub struct Listeners {
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    /// The socket file this daemon created and removes when it stops; None
    /// when systemd passed the socket (its file is systemd's).
    unix_file: Option<PathBuf>,
}

impl Listeners {
    /// Adopts the inherited sockets, then binds what the settings ask for
    /// and no inherited socket provides. Needs a tokio runtime.
    pub fn bind(s: &ServerSettings, inherited: Inherited) -> Result<Listeners, BindError> {
        let mut l = Listeners { tcp: None, unix: None, unix_file: None };
        for (fd, name) in inherited.0 {
            l.adopt(fd, name, s)?;
        }
        if let (Some(addr), None) = (s.listen, &l.tcp) {
            l.tcp = Some(bind_tcp(addr).map_err(|source| BindError::Tcp { addr, source })?);
        }
        if let (Some(path), None) = (&s.socket, &l.unix) {
            l.unix = Some(bind_unix(path, s.socket_mode, s.socket_group.as_deref())?);
            l.unix_file = Some(path.clone());
        }
        Ok(l)
    }

    /// Takes one inherited socket as server.socket or server.listen, or
    /// refuses it: a name, family or address that does not fit the config.
    fn adopt(&mut self, fd: OwnedFd, name: String, s: &ServerSettings) -> Result<(), BindError> {
        let raw = fd.as_raw_fd();
        let io = |source: std::io::Error| BindError::Inherited { fd: raw, name: name.clone(), source };
        let listening = getsockopt(&fd, AcceptConn).map_err(|e| io(e.into()))?;
        let stream = getsockopt(&fd, SockType).map_err(|e| io(e.into()))? == nix::sys::socket::SockType::Stream;
        let family = getsockname::<SockaddrStorage>(raw).map_err(|e| io(e.into()))?.family();
        let mismatch = |found: String, want: String| BindError::Mismatch { fd: raw, name: name.clone(), found, want };
        match family {
            Some(AddressFamily::Unix) if listening && stream => {
                let std = std::os::unix::net::UnixListener::from(fd);
                let path = std.local_addr().map_err(io)?.as_pathname().map(Path::to_owned);
                let found =
                    path.as_ref().map_or_else(|| "an unnamed unix socket".to_owned(), |p| format!("the unix socket {}", p.display()));
                let want = s.socket.as_deref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_owned()));
                if name == "tcp" {
                    return Err(mismatch(found, "the name \"tcp\" is for server.listen".to_owned()));
                }
                if path.is_none() || path != want {
                    let want = match &s.socket {
                        Some(p) => format!("server.socket is {}", p.display()),
                        None => "server.socket is disabled".to_owned(),
                    };
                    return Err(mismatch(found, if name == "unix" { want } else { format!("it matches nothing: {want}") }));
                }
                if self.unix.is_some() {
                    return Err(mismatch(found, "another inherited fd already serves server.socket".to_owned()));
                }
                if let Some(p) = &path {
                    warn_mode(p, s.socket_mode);
                }
                std.set_nonblocking(true).map_err(io)?;
                self.unix = Some(UnixListener::from_std(std).map_err(io)?);
                tracing::info!(fd = raw, name = %name, socket = %found, "serving the unix socket systemd passed (socket activation)");
            }
            Some(AddressFamily::Inet | AddressFamily::Inet6) if listening && stream => {
                let std = std::net::TcpListener::from(fd);
                let addr = std.local_addr().map_err(io)?;
                let found = format!("TCP {addr}");
                if name == "unix" {
                    return Err(mismatch(found, "the name \"unix\" is for server.socket".to_owned()));
                }
                if s.listen != Some(addr) {
                    let want = match s.listen {
                        Some(a) => format!("server.listen is {a}"),
                        None => "server.listen is disabled".to_owned(),
                    };
                    return Err(mismatch(found, if name == "tcp" { want } else { format!("it matches nothing: {want}") }));
                }
                if self.tcp.is_some() {
                    return Err(mismatch(found, "another inherited fd already serves server.listen".to_owned()));
                }
                self.tcp = Some(tcp_listener(std).map_err(io)?);
                tracing::info!(fd = raw, name = %name, listen = %addr, "serving the TCP socket systemd passed (socket activation)");
            }
            _ => return Err(BindError::NotListening { fd: raw, name }),
        }
        Ok(())
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// Connections the kernel queues for `accept` (capped by
/// net.core.somaxconn). std's 128 overflows under a connection flood on a
/// busy 2-core box, and each SYN dropped then costs a well-behaved client a
/// 1 s retransmit. systemd's socket units default to somaxconn.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds server.listen (with SO_REUSEADDR, as std does) and listens with
/// [`LISTEN_BACKLOG`].
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn tcp_listener(std: std::net::TcpListener) -> std::io::Result<TcpListener> {
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// systemd's SocketMode= decides an inherited socket's mode; a different
/// server.socket_mode is only reported.
fn warn_mode(path: &Path, configured: u32) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode != configured {
            tracing::warn!(
                socket = %path.display(),
                mode = format!("{mode:04o}"),
                socket_mode = format!("{configured:04o}"),
                "the socket systemd passed has another mode than server.socket_mode; the socket unit's SocketMode= applies"
            );
        }
    }
}

fn bind_unix(path: &Path, mode: u32, group: Option<&str>) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            // The daemon's umask makes it 0700; clients of other users (server.socket_group)
            // must reach the socket inside, whose own mode guards it.
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
                .map_err(|source| BindError::SocketDir { path: dir.to_owned(), source })?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::SocketInUse { path: path.to_owned() });
        }
        std::fs::remove_file(path).map_err(|source| BindError::StaleSocket { path: path.to_owned(), source })?;
    }
    // The umask makes bind() create the socket with at most `mode`, so it is
    // never briefly wider than configured. Start-up is single-threaded here.
    let old = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(old);
    let std = bound.map_err(|source| BindError::Unix { path: path.to_owned(), source })?;
    if let Some(name) = group {
        let g = nix::unistd::Group::from_name(name).ok().flatten().ok_or_else(|| BindError::NoGroup { name: name.to_owned() })?;
        nix::unistd::chown(path, None, Some(g.gid)).map_err(|source| BindError::Chown {
            path: path.to_owned(),
            group: name.to_owned(),
            source,
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| BindError::Chmod {
        path: path.to_owned(),
        mode,
        source,
    })?;
    std.set_nonblocking(true).map_err(|source| BindError::Unix { path: path.to_owned(), source })?;
    UnixListener::from_std(std).map_err(|source| BindError::Unix { path: path.to_owned(), source })
}

async fn accept_tcp(l: &Option<TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_unix(l: &Option<UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// How long a drain waits, with connections open, before closing the idle
/// ones: time for a request sent right after its connection was accepted
/// to be read.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(100);

/// Serves until `shutdown` resolves, then stops accepting, removes the
/// socket file (unless systemd owns it: then connections wait in its
/// backlog for the next daemon) and waits up to `grace` for open connections to finish their
/// responses. Returns how many connections were still open at the deadline.
pub async fn serve(listeners: Listeners, state: Arc<ApiState>, shutdown: impl Future<Output = ()>, grace: Duration) -> usize {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(state.limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut denied_log = Throttle::default();
    let mut refused_log = Throttle::default();
    let mut client_log = Throttle::default();
    let per_client = PerClient::new(state.limits.max_connections_per_client);
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = accept_tcp(&listeners.tcp) => match r {
                Ok((s, addr)) if !client_allowed(&state.limits.allow_clients, addr.ip()) => {
                    // Closed before a byte is read: no HTTP, no TLS, no permit.
                    state.metrics.client_denied();
                    if let Some(also_denied) = denied_log.due() {
                        tracing::warn!(client = %addr, also_denied, "client refused: its address is not in server.allow_clients");
                    }
                    drop(s);
                    continue;
                }
                Ok((s, addr)) => {
                    let _ = s.set_nodelay(true);
                    (Conn::Tcp(s), Peer::Tcp(addr))
                }
                Err(e) => { accept_failed(e).await; continue; }
            },
            r = accept_unix(&listeners.unix) => match r {
                Ok(s) => match getsockopt(&s, PeerCredentials) {
                    Ok(c) => (Conn::Unix(s), Peer::Unix { uid: c.uid(), gid: c.gid(), pid: c.pid() }),
                    Err(e) => { tracing::warn!(error = %e, "SO_PEERCRED failed; connection dropped"); continue; }
                },
                Err(e) => { accept_failed(e).await; continue; }
            },
        };
        let head_limit = state.limits.max_header_bytes;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if let Some(also_refused) = refused_log.due() {
                tracing::warn!(limit = state.limits.max_connections, also_refused, "connection limit reached; refusing a connection");
            }
            state.metrics.connection_refused();
            spawn_refusal(io, &refusals, head_limit);
            continue;
        };
        let slot = match &peer {
            Peer::Tcp(addr) => match per_client.take(addr.ip()) {
                Some(slot) => Some(slot),
                None => {
                    if let Some(also_refused) = client_log.due() {
                        tracing::warn!(client = %addr, limit = per_client.limit, also_refused, "per-client connection limit reached; refusing a connection");
                    }
                    state.metrics.connection_refused();
                    spawn_refusal(io, &refusals, head_limit);
                    continue;
                }
            },
            Peer::Unix { .. } => None,
        };
        let st = Arc::clone(&state);
        let tcp_peer = match peer {
            Peer::Tcp(addr) => Some(addr),
            Peer::Unix { .. } => None,
        };
        let peer = Arc::new(peer);
        let stall = StallFlag::default();
        let flag = stall.clone();
        let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(flag.clone());
            handle(Arc::clone(&st), Arc::clone(&peer), req)
        });
        let slow = state.limits.slow_client_timeout;
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(state.limits.idle_timeout)
            .max_buf_size(state.limits.max_header_bytes.max(8192) + state.limits.max_body_bytes.min(1 << 20))
            .max_header_size(state.limits.max_header_bytes)
            .keep_alive(true);
        match io {
            Conn::Tcp(s) => match (state.tls.clone(), tcp_peer) {
                (Some(certs), Some(addr)) => {
                    // The handshake runs in the connection's task (the accept
                    // loop never waits for a client), bounded like the request head.
                    let (watcher, st) = (graceful.watcher(), Arc::clone(&state));
                    let io = StallGuard::new(s, slow, stall);
                    let conn = async move {
                        match certs.handshake(io, st.limits.idle_timeout, addr, &st.metrics).await {
                            Some(tls) => watcher.watch(b.serve_connection(TokioIo::new(tls), svc)).await,
                            None => Ok(()),
                        }
                    };
                    spawn_conn(conn, (permit, slot))
                }
                _ => spawn_conn(graceful.watch(b.serve_connection(TokioIo::new(StallGuard::new(s, slow, stall)), svc)), (permit, slot)),
            },
            Conn::Unix(s) => {
                spawn_conn(graceful.watch(b.serve_connection(TokioIo::new(StallGuard::new(s, slow, stall)), svc)), (permit, slot))
            }
        }
    }
    if let Some(path) = &listeners.unix_file {
        let _ = std::fs::remove_file(path);
    }
    drop(listeners);
    let open = state.limits.max_connections - permits.available_permits();
    tracing::info!(open_connections = open, grace_secs = grace.as_secs(), "stopped accepting; draining connections");
    let paused = if open > 0 { FIRST_REQUEST_GRACE.min(grace) } else { Duration::ZERO };
    if open > 0 {
        // hyper's graceful shutdown closes at once a connection whose first
        // request it has not read yet, and one accepted just before the
        // stop may have its request on the wire: its client would get
        // nothing (seen once in 250 polls across a restart in place). A
        // short pause lets such requests start; started ones finish below.
        // The pause counts against the grace, which is the drain's bound.
        tokio::time::sleep(paused).await;
    }
    match tokio::time::timeout(grace - paused, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => {
            let left = state.limits.max_connections - permits.available_permits();
            tracing::warn!(open_connections = left, "drain deadline passed with connections still open");
            left
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Serves one connection, holding its permit and per-client slot until it ends.
fn spawn_conn(
    conn: impl Future<Output = Result<(), hyper::Error>> + Send + 'static,
    held: (tokio::sync::OwnedSemaphorePermit, Option<ClientSlot>),
) {
    tokio::spawn(async move {
        let _held = held;
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}

/// Answers a refused connection with a 503 while fewer than
/// [`MAX_REFUSALS`] are being answered; beyond that it is just closed, so a
/// flood cannot pile up sockets.
fn spawn_refusal(io: Conn, refusals: &Arc<Semaphore>, head_limit: usize) {
    let Ok(slot) = Arc::clone(refusals).try_acquire_owned() else { return };
    match io {
        Conn::Tcp(s) => tokio::spawn(async move {
            refuse(s, head_limit).await;
            drop(slot)
        }),
        Conn::Unix(s) => tokio::spawn(async move {
            refuse(s, head_limit).await;
            drop(slot)
        }),
    };
}

/// Open TCP connections per client address, against
/// `server.max_connections_per_client` (0: no limit). Slots are taken after
/// a `max_connections` permit, so the map holds at most that many addresses.
struct PerClient {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted against its client address until dropped.
struct ClientSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerClient {
    fn new(limit: usize) -> PerClient {
        PerClient { limit, open: Arc::default() }
    }

    /// A slot for a connection from `ip`, or None when it already holds `limit`.
    fn take(&self, ip: IpAddr) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot { ip, open: Arc::clone(&self.open) })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Whether a TCP client at `ip` may connect: `allow` is empty (everyone) or
/// holds a block with its address (an IPv4 client of a dual-stack listener,
/// `::ffff:a.b.c.d`, is matched as the IPv4 address it is).
fn client_allowed(allow: &[ipnet::IpNet], ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    allow.is_empty() || allow.iter().any(|net| net.contains(&ip))
}

/// Keeps a flood (a scan of denied clients, connections over the cap) from
/// flooding the journal: the first event is logged at once, then at most one
/// line per [`LOG_EVERY`], saying how many went unlogged since.
#[derive(Default)]
pub(super) struct Throttle {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Throttle {
    /// Some(events not logged since the last line) when this one should be
    /// logged.
    pub(super) fn due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// EMFILE and friends: log, back off a little, keep serving.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Refusals answered at once (each holds its socket up to 2 × REFUSE_WAIT).
const MAX_REFUSALS: usize = 64;
/// How long a refused client may take to send its request head, and then
/// to close after reading the 503.
const REFUSE_WAIT: Duration = Duration::from_secs(2);
/// Most bytes read and discarded after the 503 (a request body).
const REFUSE_DRAIN_BYTES: usize = 64 << 10;

/// Over the connection cap: a short 503 with Retry-After, then close. The
/// request head is read first (bounded in bytes and time), and after the
/// answer the write side is shut and what the client still sends is
/// discarded for a moment: closing a socket with unread input makes the
/// kernel send a reset, which can destroy the 503 before the client reads it.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, head_limit: usize) {
    let body = r#"{"code":"service_unavailable","message":"too many open connections; retry later","status":503}"#;
    let msg = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSE_WAIT, read_head(&mut s, head_limit)).await;
    if s.write_all(msg.as_bytes()).await.is_err() || s.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(REFUSE_WAIT, discard(&mut s, REFUSE_DRAIN_BYTES)).await;
}

/// Reads until the end of a request head (`\r\n\r\n`), EOF, or `limit` bytes.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S, limit: usize) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < limit {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return;
        }
    }
}

/// Reads and drops input until EOF or `limit` bytes.
async fn discard<S: AsyncRead + Unpin>(s: &mut S, limit: usize) {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while total < limit {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::{client_allowed, PerClient};

    #[test]
    fn per_client_slots_are_counted_per_address_and_released_on_drop() {
        let pc = PerClient::new(2);
        let a = "10.0.0.1".parse().unwrap();
        let (s1, s2) = (pc.take(a).unwrap(), pc.take(a).unwrap());
        assert!(pc.take(a).is_none(), "a third connection from one address");
        // The same client through a dual-stack listener.
        assert!(pc.take("::ffff:10.0.0.1".parse().unwrap()).is_none());
        let other = pc.take("10.0.0.2".parse().unwrap()).unwrap();
        drop(s1);
        let s3 = pc.take(a).unwrap();
        drop((s2, s3, other));
        assert!(pc.open.lock().unwrap().is_empty(), "released addresses are forgotten");
        let unlimited = PerClient::new(0);
        let many: Vec<_> = (0..100).map(|_| unlimited.take(a).unwrap()).collect();
        assert_eq!(unlimited.open.lock().unwrap()[&a], 100);
        drop(many);
    }

    #[test]
    fn the_allowlist_matches_v4_v6_and_v4_mapped_clients() {
        let allow: Vec<ipnet::IpNet> = ["10.20.0.0/16", "127.0.0.1/32", "::1/128"].iter().map(|s| s.parse().unwrap()).collect();
        let ok = |ip: &str| client_allowed(&allow, ip.parse().unwrap());
        assert!(ok("10.20.255.1") && ok("127.0.0.1") && ok("::1"));
        assert!(!ok("10.21.0.1") && !ok("127.0.0.2") && !ok("::2") && !ok("fe80::1"));
        // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d.
        assert!(ok("::ffff:10.20.3.4") && !ok("::ffff:192.168.0.1"));
        assert!(client_allowed(&[], "203.0.113.9".parse().unwrap()), "an empty list allows everyone");
    }
}
