//! TLS on the TCP listener (`[server.tls]`) with a test CA, against the real
//! daemon through real clients: curl and OpenAI's Python SDK get answers;
//! plain HTTP on the TLS port and a client that does not trust the CA are
//! refused at once and counted; a client that stalls in the handshake is
//! dropped after `server.idle_timeout_secs` while others are served;
//! SIGHUP swaps the certificate for new connections while a kept-alive
//! one keeps working, and a bad new certificate keeps the old one; the
//! allowlist closes an outside client before any handshake; mutual TLS; a
//! key that does not match its certificate stops the start with exit 78.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use edgeai_tests::daemon::{Daemon, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE};
use edgeai_tests::http::{exchange, Conn};
use edgeai_tests::tls::{client_config, client_config_with, TestCa};
use edgeai_tests::{paths, DaemonBuilder};
use serde_json::{json, Value};

/// `curl` with the given arguments; None (with a loud SKIP) when curl is not installed.
fn curl(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("curl").args(["--silent", "--show-error", "--max-time", "60"]).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIP: curl is not installed; the curl checks of TLS did not run");
            None
        }
        Err(e) => panic!("running curl: {e}"),
    }
}

/// The value of a metric line (`name{labels} value`) in the daemon's
/// `/metrics` on the unix socket; 0 when absent.
fn metric(d: &Daemon, series: &str) -> u64 {
    let text = d.unix_client().without_key().get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse().unwrap_or_else(|_| panic!("{series} is not a count: {v:?}")))
}

/// Waits (up to 10 s) until a metric reaches `want`, then checks it is not above it.
fn wait_metric(d: &Daemon, series: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(d, series) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(d, series), want, "{series}");
}

fn ca_file(d: &Daemon) -> std::path::PathBuf {
    d.dir().join(TLS_CA_FILE)
}

fn der(pem_file: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pem_file).unwrap().as_ref().to_vec()
}

/// GET over an open keep-alive connection: the status and body
/// (`Content-Length` framing, which /health uses).
fn get_keep_alive(conn: &mut Conn, path: &str) -> (u16, Value) {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
    conn.flush().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).unwrap(), 1, "connection closed mid-head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn curl_and_the_openai_sdk_get_answers_over_tls_with_a_test_ca() {
    let ca = TestCa::new("edgeai test CA");
    // Starting waits for the model through the HTTPS client.
    let d = DaemonBuilder::new().tls(&ca).start();
    let port = d.addr().port();
    let ca_path = ca_file(&d);
    let ca_arg = ca_path.to_str().unwrap();

    assert_eq!(d.client().without_key().get("/health").expect_json(200)["status"], "ok");
    if let Some(out) = curl(&["--cacert", ca_arg, "-w", "\n%{http_version}", &format!("https://127.0.0.1:{port}/health")]) {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "curl failed: {}\n{text}", String::from_utf8_lossy(&out.stderr));
        let (body, version) = text.rsplit_once('\n').unwrap();
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["status"], "ok", "{text}");
        assert_eq!(version, "1.1", "ALPN offers http/1.1 only");
        // By name too (the certificate holds localhost and 127.0.0.1), with the app key.
        let resolve = format!("localhost:{port}:127.0.0.1");
        let auth = format!("Authorization: Bearer {}", d.key());
        let out =
            curl(&["--cacert", ca_arg, "--resolve", &resolve, "-H", &auth, &format!("https://localhost:{port}/v1/parameters")]).unwrap();
        assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
        let params: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(params["opening_statement"], "Hello! I am the test assistant.", "{params}");
    }

    // One real chat through OpenAI's SDK over HTTPS, answered as over our own client.
    let question = "What is a PLC?";
    let out = Command::new(paths::venv_python())
        .arg(paths::repo_root().join("tests/python/openai_tls_chat.py"))
        .args([&format!("https://127.0.0.1:{port}/v1"), d.key(), ca_arg, question])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the SDK failed:\n{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    // The same SDK trusting another CA refuses the server (so the CA above is what made it work).
    let other = d.dir().join("other-ca.pem");
    TestCa::new("another CA").write(&other);
    let refused = Command::new(paths::venv_python())
        .arg(paths::repo_root().join("tests/python/openai_tls_chat.py"))
        .args([&format!("https://127.0.0.1:{port}/v1"), d.key(), other.to_str().unwrap(), question])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("CERTIFICATE_VERIFY_FAILED"), "{stderr}");
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    let content = seen["content"].as_str().unwrap_or_else(|| panic!("no answer: {seen}"));
    assert!(!content.trim().is_empty(), "{seen}");
    let ours = d
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "edgeai", "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 16}),
        )
        .expect_json(200);
    assert_eq!(ours["choices"][0]["message"]["content"], content, "greedy answers over both clients agree");
    d.wait_log_message("TLS handshake failed; connection closed", Duration::from_secs(10));
    assert_eq!(metric(&d, "edgeai_tls_handshake_failures_total{reason=\"error\"}"), 1, "the refused SDK");
}

#[test]
fn plain_http_and_clients_that_do_not_trust_the_ca_are_refused_and_counted() {
    let ca = TestCa::new("edgeai test CA");
    let d = DaemonBuilder::new().tls(&ca).wait_for_model(false).start();
    let port = d.addr().port();

    // Plain HTTP on the TLS port: closed at once (at most a TLS alert comes back), no hang.
    let mut s = std::net::TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("plain HTTP on the TLS port was neither answered nor closed: {e}"),
    }
    assert!(!got.starts_with(b"HTTP/"), "plain HTTP was served: {}", String::from_utf8_lossy(&got));
    assert!(got.is_empty() || got[0] == 0x15, "not a TLS alert: {got:?}");

    // A client trusting another CA refuses the certificate.
    let other = TestCa::new("another CA");
    let other_ca = d.dir().join("other-ca.pem");
    other.write(&other_ca);
    let err = Conn::connect_tls(d.addr(), client_config(&other_ca), Duration::from_secs(20)).unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let mut refused: u64 = 2;
    if let Some(out) = curl(&["--cacert", other_ca.to_str().unwrap(), &format!("https://127.0.0.1:{port}/health")]) {
        assert_eq!(out.status.code(), Some(60), "curl: {}", String::from_utf8_lossy(&out.stderr));
        refused += 1;
    }

    wait_metric(&d, "edgeai_tls_handshake_failures_total{reason=\"error\"}", refused);
    // Logged with the client, once for the burst (a scan cannot flood the journal).
    let failures = d.logs_with_message("TLS handshake failed; connection closed");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].field_str("client").is_some_and(|c| c.starts_with("127.0.0.1:")), "{}", failures[0].raw);
    // The daemon serves on.
    assert_eq!(d.client().without_key().get("/health").expect_json(200)["status"], "ok");
}

#[test]
fn a_client_that_stalls_the_handshake_is_dropped_after_the_timeout_and_others_are_served() {
    let ca = TestCa::new("edgeai test CA");
    let d = DaemonBuilder::new().tls(&ca).set("server.idle_timeout_secs", 2).wait_for_model(false).start();

    // Half a TLS record header, then nothing.
    let mut stalled = std::net::TcpStream::connect(d.addr()).unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let since = Instant::now();
    // Served meanwhile.
    for _ in 0..3 {
        assert_eq!(d.client().without_key().get("/health").expect_json(200)["status"], "ok");
    }
    let mut buf = [0u8; 64];
    match stalled.read(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stalled handshake was not dropped: {e}"),
    }
    assert!(since.elapsed() >= Duration::from_secs(1), "dropped before the timeout: {:?}", since.elapsed());
    let log = d.wait_log_message("TLS handshake not finished in time; connection closed", Duration::from_secs(10));
    assert_eq!(log.field_u64("timeout_secs"), Some(2));
    assert_eq!(metric(&d, "edgeai_tls_handshake_failures_total{reason=\"timeout\"}"), 1);
    assert_eq!(d.client().without_key().get("/health").expect_json(200)["status"], "ok");
}

#[test]
fn sighup_gives_new_connections_the_new_certificate_while_open_ones_keep_working() {
    let ca = TestCa::new("edgeai test CA");
    let d = DaemonBuilder::new().tls(&ca).wait_for_model(false).start();
    let (cert, key) = (d.dir().join(TLS_CERT_FILE), d.dir().join(TLS_KEY_FILE));
    let first = der(&cert);
    let config = client_config(&ca_file(&d));
    let connect = || Conn::connect_tls(d.addr(), config.clone(), Duration::from_secs(30)).unwrap();

    let mut kept = connect();
    assert_eq!(kept.peer_certificate().unwrap(), first);
    assert_eq!(get_keep_alive(&mut kept, "/health").0, 200);

    let renewed = ca.server("edgeai renewed server", 2);
    renewed.write(&cert, &key);
    d.sighup();
    let log = d.wait_log_message("TLS certificate reloaded; new connections get it", Duration::from_secs(20));
    assert_eq!(log.field_str("cert_file").as_deref(), cert.to_str());
    let mut fresh = connect();
    assert_eq!(fresh.peer_certificate().unwrap(), renewed.der(), "a new connection gets the new certificate");
    assert_ne!(renewed.der(), first);
    assert_eq!(get_keep_alive(&mut fresh, "/health").0, 200);
    // The connection opened before the reload still works, on its certificate.
    let (status, body) = get_keep_alive(&mut kept, "/health");
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    assert_eq!(kept.peer_certificate().unwrap(), first);

    // A renewed certificate without its key: the reload fails naming the key, the running certificate stays.
    ca.server("half-renewed server", 3).write(&cert, &d.dir().join("unused-key.pem"));
    d.sighup();
    let log = d.wait_log_message("reload: configuration invalid; keeping the running configuration", Duration::from_secs(20));
    assert!(log.raw.contains("server.tls.key_file") && log.raw.contains("does not match the certificate"), "{}", log.raw);
    assert_eq!(connect().peer_certificate().unwrap(), renewed.der(), "the previous certificate stays after a bad reload");
    // A file that is not PEM at all: the same.
    std::fs::write(&cert, "garbage").unwrap();
    d.sighup();
    d.wait_log_count("reload: configuration invalid; keeping the running configuration", 2, Duration::from_secs(20));
    let mut after = connect();
    assert_eq!(after.peer_certificate().unwrap(), renewed.der());
    assert_eq!(get_keep_alive(&mut after, "/health").0, 200);
    assert_eq!(get_keep_alive(&mut kept, "/health").0, 200, "the first connection outlives both failed reloads");
    assert_eq!(d.logs_with_message("TLS certificate reloaded; new connections get it").len(), 1);
}

/// Connects from `from` (a second loopback address) and tries a TLS
/// handshake; Err when the daemon closed the connection without one.
fn handshake_from(from: &str, to: SocketAddr, config: std::sync::Arc<rustls::ClientConfig>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tcp = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{from}:0").parse().unwrap())?;
        socket.connect(to).await?.into_std()
    })?;
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let session = rustls::ClientConnection::new(config, rustls::pki_types::ServerName::IpAddress(to.ip().into())).unwrap();
    let mut stream = rustls::StreamOwned::new(session, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(())
}

#[test]
fn the_allowlist_closes_an_outside_client_before_any_handshake() {
    let ca = TestCa::new("edgeai test CA");
    let allow = toml::Value::Array(vec!["127.0.0.1/32".into()]);
    let d = DaemonBuilder::new().tls(&ca).set("server.allow_clients", allow).wait_for_model(false).start();
    let config = client_config(&ca_file(&d));

    let err = handshake_from("127.0.0.2", d.addr(), config.clone()).unwrap_err();
    eprintln!("the outside client's handshake ended with: {err}");
    handshake_from("127.0.0.1", d.addr(), config).unwrap();
    d.wait_log_message("client refused: its address is not in server.allow_clients", Duration::from_secs(10));
    assert_eq!(metric(&d, "edgeai_http_clients_denied_total"), 1);
    // No handshake was attempted with it: nothing failed.
    assert_eq!(metric(&d, "edgeai_tls_handshake_failures_total{reason=\"error\"}"), 0);
    assert!(d.logs_with_message("TLS handshake failed; connection closed").is_empty());
}

#[test]
fn with_client_ca_file_only_clients_with_a_certificate_it_signed_are_served() {
    let ca = TestCa::new("edgeai test CA");
    let clients = TestCa::new("plant clients CA");
    let dir = tempfile::tempdir().unwrap();
    let clients_ca = dir.path().join("clients-ca.pem");
    clients.write(&clients_ca);
    let d = DaemonBuilder::new().tls(&ca).set("server.tls.client_ca_file", clients_ca.display().to_string()).wait_for_model(false).start();
    let ca_path = ca_file(&d);
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

    let id = clients.client("line-3 HMI", 10);
    let conn = Conn::connect_tls(d.addr(), client_config_with(&ca_path, Some(&id)), Duration::from_secs(30)).unwrap();
    assert_eq!(exchange(conn, request).unwrap().expect_json(200)["status"], "ok");

    // Without a certificate, or with one another CA signed: no answer.
    let stranger = ca.client("stranger", 11);
    for identity in [None, Some(&stranger)] {
        let answered = Conn::connect_tls(d.addr(), client_config_with(&ca_path, identity), Duration::from_secs(30))
            .and_then(|conn| exchange(conn, request));
        assert!(answered.is_err(), "served without a trusted client certificate: {answered:?}");
    }
    wait_metric(&d, "edgeai_tls_handshake_failures_total{reason=\"error\"}", 2);
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_the_start_with_exit_78() {
    let ca = TestCa::new("edgeai test CA");
    let b = DaemonBuilder::new().tls(&ca);
    let wrong = ca.server("another server", 5);
    edgeai_tests::tls::write_mode(&b.dir().join(TLS_KEY_FILE), &wrong.key_pem, 0o600);
    let mut d = b.start_no_wait();
    let status = d.wait_exit(Duration::from_secs(60));
    let err = d.logs().into_iter().map(|l| l.raw).collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("server.tls.key_file: the private key in") && err.contains("does not match the certificate in"), "{err}");
}

#[test]
fn min_version_1_3_refuses_a_tls_1_2_client() {
    use rustls::pki_types::pem::PemObject;
    let ca = TestCa::new("edgeai test CA");
    let d = DaemonBuilder::new().tls(&ca).set("server.tls.min_version", "1.3").wait_for_model(false).start();
    let only = |version: &'static rustls::SupportedProtocolVersion| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_file(ca_file(&d)).unwrap()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Conn::connect_tls(d.addr(), std::sync::Arc::new(config), Duration::from_secs(30))
    };
    let err = only(&rustls::version::TLS12).unwrap_err();
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    let conn = only(&rustls::version::TLS13).unwrap();
    let r = exchange(conn, b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(r.expect_json(200)["status"], "ok");
    d.wait_log_message("TLS handshake failed; connection closed", Duration::from_secs(10));
}
