//! Socket activation outside systemd: the test binds the sockets itself and
//! passes them to edgeaid as systemd does (fds 3.., LISTEN_FDS,
//! LISTEN_FDNAMES, LISTEN_PID = the daemon's pid). The daemon serves them,
//! binds only what was not passed, leaves the socket file and its mode
//! alone, and a request sent while no daemon runs waits in the socket's
//! backlog for the next one. Sockets that do not fit the config are refused
//! with exit 78 (EX_CONFIG: the unit does not restart into the same
//! mistake) and a message naming the fd, its name and both addresses.
//! The box test (scripts/systemd-box-test.sh) does the same under systemd.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use edgeai_tests::http::{Client, Target};
use edgeai_tests::{Daemon, DaemonBuilder};

const UNIX_ADOPTED: &str = "serving the unix socket systemd passed (socket activation)";
const TCP_ADOPTED: &str = "serving the TCP socket systemd passed (socket activation)";

#[test]
fn serves_the_passed_sockets_and_a_request_waits_across_a_restart() {
    let b = DaemonBuilder::new();
    let sock = b.dir().join("edgeai.sock");
    let unix = UnixListener::bind(&sock).unwrap();
    // Not server.socket_mode (0660): systemd's SocketMode= decides, the daemon must not chmod.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o640)).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let mut d = b.set("server.listen", addr.to_string()).listen_fd(&unix, "unix").listen_fd(&tcp, "tcp").start();

    let u = d.logs_with_message(UNIX_ADOPTED);
    assert_eq!(u.len(), 1, "{}", d.dump_logs());
    assert_eq!((u[0].field_u64("fd"), u[0].field_str("name").as_deref()), (Some(3), Some("unix")));
    let t = d.logs_with_message(TCP_ADOPTED);
    assert_eq!(t.len(), 1, "{}", d.dump_logs());
    assert_eq!((t[0].field_u64("fd"), t[0].field_str("name").as_deref()), (Some(4), Some("tcp")));
    assert_eq!(d.addr(), addr, "the daemon serves another TCP address than the one passed");

    let a = d.unix_client().chat_blocking("What is Modbus?", "ivan", None);
    assert!(!a["answer"].as_str().unwrap().trim().is_empty(), "{a}");
    assert_eq!(d.client().without_key().get("/health").expect_json(200)["status"], "ok");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "the daemon changed the mode of a socket it was given: {mode:o}");
    assert!(!d
        .logs_with_message("the socket systemd passed has another mode than server.socket_mode; the socket unit's SocketMode= applies")
        .is_empty());

    // Stopped: the socket file is systemd's (here the test's) and stays;
    // a request now waits in the backlog and the next daemon answers it.
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(60)).success());
    assert!(std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket()), "the daemon removed the socket file it was given");
    let client = Client::new(Target::Unix(sock.clone()));
    let pending = std::thread::spawn(move || client.get("/health"));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!pending.is_finished(), "a request was answered while no daemon ran");
    d.start_again();
    let r = pending.join().unwrap();
    assert_eq!(r.expect_json(200)["status"], "ok");
    assert_eq!(d.logs_with_message(UNIX_ADOPTED).len(), 1, "the restarted daemon did not take the socket again");
}

#[test]
fn matches_other_names_by_address_and_binds_what_was_not_passed() {
    let b = DaemonBuilder::new().wait_for_model(false);
    let sock = b.dir().join("edgeai.sock");
    let unix = UnixListener::bind(&sock).unwrap();
    // systemd's default name, without FileDescriptorName=: the socket unit's name.
    let d = b.listen_fd(&unix, "edgeai.socket").start();

    let u = d.logs_with_message(UNIX_ADOPTED);
    assert_eq!(u.len(), 1, "{}", d.dump_logs());
    assert_eq!(u[0].field_str("name").as_deref(), Some("edgeai.socket"));
    assert!(d.logs_with_message(TCP_ADOPTED).is_empty());
    // server.listen = 127.0.0.1:0 was not passed: the daemon bound it itself.
    assert_ne!(d.addr().port(), 0);
    assert_eq!(d.client().without_key().get("/health").expect_json(200)["status"], "ok");
    assert_eq!(d.unix_client().without_key().get("/health").expect_json(200)["status"], "ok");
}

/// Waits for a daemon that must refuse its sockets to exit 78 (a configuration error); returns its stderr.
fn refused(d: &mut Daemon) -> String {
    let status = d.wait_exit(Duration::from_secs(60));
    let err = d.logs().into_iter().map(|l| l.raw).collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(78), "{err}");
    err
}

#[test]
fn refuses_sockets_that_do_not_match_the_config() {
    // A unix socket named "unix" at another path than server.socket: the
    // daemon neither serves it, nor removes it, nor binds server.socket itself.
    let b = DaemonBuilder::new();
    let other = b.dir().join("other.sock");
    let l = UnixListener::bind(&other).unwrap();
    let want = b.dir().join("edgeai.sock");
    let mut d = b.listen_fd(&l, "unix").start_no_wait();
    let err = refused(&mut d);
    let msg = format!(
        "socket activation: fd 3 named \"unix\" is the unix socket {}, but server.socket is {}; \
         the socket unit's ListenStream= and server.socket/server.listen must name the same sockets",
        other.display(),
        want.display()
    );
    assert!(err.contains(&msg), "want {msg:?} in:\n{err}");
    assert!(other.exists(), "the daemon removed a socket file it was given");
    assert!(!want.exists(), "the daemon bound server.socket itself after refusing the socket it was given");

    // The name "tcp" on the unix socket at the right path.
    let b = DaemonBuilder::new();
    let path = b.dir().join("edgeai.sock");
    let l = UnixListener::bind(&path).unwrap();
    let err = refused(&mut b.listen_fd(&l, "tcp").start_no_wait());
    let msg = format!("fd 3 named \"tcp\" is the unix socket {}, but the name \"tcp\" is for server.listen;", path.display());
    assert!(err.contains(&msg), "want {msg:?} in:\n{err}");

    // A TCP socket named "tcp" on another address than server.listen (127.0.0.1:0).
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = t.local_addr().unwrap();
    let err = refused(&mut DaemonBuilder::new().listen_fd(&t, "tcp").start_no_wait());
    let msg = format!("fd 3 named \"tcp\" is TCP {at}, but server.listen is 127.0.0.1:0;");
    assert!(err.contains(&msg), "want {msg:?} in:\n{err}");

    // Another name whose address matches nothing, as the second fd after a good one.
    let b = DaemonBuilder::new();
    let good = UnixListener::bind(b.dir().join("edgeai.sock")).unwrap();
    let err = refused(&mut b.listen_fd(&good, "unix").listen_fd(&t, "web").start_no_wait());
    let msg = format!("fd 4 named \"web\" is TCP {at}, but it matches nothing: server.listen is 127.0.0.1:0;");
    assert!(err.contains(&msg), "want {msg:?} in:\n{err}");

    // Not a listening stream socket.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = refused(&mut DaemonBuilder::new().listen_fd(&udp, "tcp").start_no_wait());
    assert!(err.contains("socket activation: fd 3 named \"tcp\" is not a listening unix or TCP stream socket"), "{err}");
}
