//! A client that stays connected but stops reading a streamed answer is cut
//! off after `server.slow_client_timeout_secs`: its run ends and is stored
//! as stopped with that reason (not left `pending`), the daemon keeps
//! answering others, and a SIGTERM drain is not held up by such a client.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use edgeai_tests::{Daemon, DaemonBuilder, LONG_APP, LONG_QUERY};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use serde_json::json;

const SLOW_SECS: u64 = 2;
const GRACE_SECS: u64 = 60;

fn daemon() -> (Daemon, String) {
    let d = DaemonBuilder::new()
        .long_app(1500)
        .set("server.slow_client_timeout_secs", SLOW_SECS as i64)
        .set("server.shutdown_grace_secs", GRACE_SECS as i64)
        .start();
    let (_, key) = d.admin().create_key(LONG_APP);
    (d, key)
}

/// Connects with a tiny receive buffer and maximum segment size, so the
/// kernel buffers little of the answer, sends a streaming chat request and
/// never reads. Returns the socket (kept open by the caller).
fn stalled_client(addr: SocketAddr, key: &str, user: &str) -> TcpStream {
    let fd = socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).unwrap();
    socket::setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    socket::setsockopt(&fd, sockopt::TcpMaxSeg, &536).unwrap();
    let SocketAddr::V4(v4) = addr else { panic!("the test daemon listens on IPv4: {addr}") };
    socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).unwrap();
    let mut s = TcpStream::from(fd);
    let body = json!({"query": LONG_QUERY, "inputs": {}, "user": user, "response_mode": "streaming"}).to_string();
    let req = format!(
        "POST /v1/chat-messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// The `run finished` log line of the first run stored with an error that
/// names the slow-client cut-off.
fn wait_cut_off(d: &Daemon, timeout: Duration) -> edgeai_tests::LogLine {
    d.wait_log(timeout, "a run stopped because its client stopped reading", |l| {
        l.message() == "run finished" && l.field_str("error").is_some_and(|e| e.contains("stopped reading"))
    })
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_its_run_stored_as_stopped() {
    let (d, key) = daemon();
    let started = Instant::now();
    let _stalled = stalled_client(d.addr(), &key, "sloth");

    // Generating fills the buffers within seconds; then the cut-off takes
    // SLOW_SECS. Without it the run would wait for the reader for ever.
    let finished = wait_cut_off(&d, Duration::from_secs(60));
    assert_eq!(finished.field_str("status").as_deref(), Some("Stopped"), "{}", finished.raw);
    let completion = finished.field_u64("completion_tokens").unwrap();
    assert!(completion < 1500, "the run generated all {completion} tokens: the buffers never filled, the test proves nothing");
    eprintln!("cut off after {:?} and {completion} tokens", started.elapsed());

    // The message is finished, not pending, and says why.
    let c = d.client().with_key(&key);
    let convs = c.conversations("sloth");
    assert_eq!(convs.len(), 1, "{convs:?}");
    let msgs = c.messages("sloth", convs[0]["id"].as_str().unwrap());
    assert_eq!(msgs[0]["status"], "stopped", "{:#}", msgs[0]);
    assert!(msgs[0]["error"].as_str().unwrap().contains("slow_client_timeout_secs"), "{:#}", msgs[0]);

    // The daemon keeps answering, with the stalled socket still open.
    d.client().without_key().get("/health").expect_json(200);
    let a = d.client().chat_blocking("Hello", "other", None);
    assert!(!a["answer"].as_str().unwrap().is_empty());
}

#[test]
fn a_stalled_client_does_not_hold_up_the_drain() {
    let (mut d, key) = daemon();
    let _stalled = stalled_client(d.addr(), &key, "sloth");
    // The request reached the daemon and its run is queued.
    d.wait_log_message("run queued", Duration::from_secs(30));
    let signalled = Instant::now();
    d.sigterm();
    let status = d.wait_exit(Duration::from_secs(GRACE_SECS + 30));
    let took = signalled.elapsed();
    assert!(status.success(), "edgeaid exited with {status}");
    // Without the cut-off the drain waits its whole grace for the reader.
    assert!(took < Duration::from_secs(GRACE_SECS / 2), "the drain took {took:?} (grace {GRACE_SECS} s)");
    wait_cut_off(&d, Duration::from_secs(1));
}
