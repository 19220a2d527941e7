//! `server.allow_clients` against the real listener: a TCP client from an
//! address outside the list (a second loopback address, 127.0.0.2) is closed
//! at accept without an answer, counted in the metrics and logged; clients
//! inside it, and the unix socket, are served as before.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::net::SocketAddr;
use std::time::Duration;

use edgeai_tests::DaemonBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connects to `to` from `from` (any port) and sends one request; what came
/// back before the connection closed (nothing for a denied client).
fn request_from(from: &str, to: SocketAddr) -> std::io::Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{from}:0").parse().unwrap())?;
        let mut stream = socket.connect(to).await?;
        // A denied client may already be closed: a failed write is a result too.
        let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let mut got = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await {
            Ok(Ok(_)) => Ok(got),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(got),
            Ok(Err(e)) => Err(e),
            Err(_) => panic!("the daemon neither answered nor closed the connection from {from}"),
        }
    })
}

#[test]
fn a_client_outside_allow_clients_is_closed_at_accept_and_others_are_served() {
    let allow = toml::Value::Array(vec!["127.0.0.1/32".into(), "::1/128".into()]);
    let d = DaemonBuilder::new().set("server.allow_clients", allow).start();

    let denied = request_from("127.0.0.2", d.addr()).unwrap();
    assert!(denied.is_empty(), "a denied client got bytes: {}", String::from_utf8_lossy(&denied));
    let allowed = request_from("127.0.0.1", d.addr()).unwrap();
    let text = String::from_utf8_lossy(&allowed);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The unix socket is not filtered.
    assert_eq!(d.unix_client().without_key().get("/health").expect_json(200)["status"], "ok");

    let log = d.wait_log_message("client refused: its address is not in server.allow_clients", Duration::from_secs(5));
    assert!(log.raw.contains("127.0.0.2"), "{}", log.raw);
    let metrics = d.unix_client().without_key().get("/metrics").text();
    let denied_total = metrics
        .lines()
        .find(|l| l.starts_with("edgeai_http_clients_denied_total "))
        .unwrap_or_else(|| panic!("no edgeai_http_clients_denied_total in:\n{metrics}"));
    assert_eq!(denied_total, "edgeai_http_clients_denied_total 1");

    // A burst of denied clients is one more log line at most, and the daemon serves on.
    for _ in 0..50 {
        assert!(request_from("127.0.0.2", d.addr()).unwrap().is_empty());
    }
    assert_eq!(d.logs_with_message("client refused: its address is not in server.allow_clients").len(), 1);
    assert!(String::from_utf8_lossy(&request_from("127.0.0.1", d.addr()).unwrap()).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_bad_allow_clients_entry_stops_the_daemon_with_exit_78_naming_it() {
    let allow = toml::Value::Array(vec!["127.0.0.1/32".into(), "10.20.1.0/16".into()]);
    let mut d = DaemonBuilder::new().set("server.allow_clients", allow).start_no_wait();
    let status = d.wait_exit(Duration::from_secs(60));
    let err = d.logs().into_iter().map(|l| l.raw).collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("server.allow_clients[1]") && err.contains("did you mean \"10.20.0.0/16\"?"), "{err}");
}
