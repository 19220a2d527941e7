//! `server.client_requests_per_minute` and `server.key_requests_per_minute`
//! against the real daemon: a burst passes, the next request is 429
//! `too_many_requests` with Retry-After, other clients and other keys keep
//! their own allowance, probes are never limited, and a wrong key does not
//! use up a real key's allowance.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::time::Duration;

use edgeai_tests::{Client, DaemonBuilder, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET /v1/parameters` with `key` over TCP from the local address `from`; the status line.
fn parameters_from(from: &str, to: std::net::SocketAddr, key: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut s = socket.connect(to).await.unwrap();
        let req = format!("GET /v1/parameters HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.unwrap().unwrap();
        String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_owned()
    })
}

#[test]
fn a_tcp_client_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let d = DaemonBuilder::new().set("server.client_requests_per_minute", 12).set("server.client_burst", 3).start();
    let c = d.client();
    for i in 0..3 {
        assert_eq!(c.get("/v1/parameters").status, 200, "request {i} of the burst");
    }
    let refused = c.get("/v1/parameters");
    let body = refused.expect_dify_error(429, "too_many_requests");
    assert!(body["message"].as_str().unwrap().contains("too many requests from this client address"), "{body}");
    let wait: u32 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&wait), "12 a minute: one every 5 s; Retry-After {wait}");

    // Probes, another client address and the unix socket are not held back.
    assert_eq!(c.without_key().get("/health").status, 200);
    assert_eq!(c.without_key().get("/ready").status, 200);
    assert_eq!(parameters_from("127.0.0.2", d.addr(), d.key()), "HTTP/1.1 200 OK");
    for _ in 0..5 {
        assert_eq!(d.unix_client().get("/v1/parameters").status, 200);
    }
    // The allowance comes back at the configured rate.
    std::thread::sleep(Duration::from_millis(u64::from(wait) * 1000 + 100));
    assert_eq!(c.get("/v1/parameters").status, 200);
}

#[test]
// 6 a minute: a stall of the shared test machine under 10 s cannot refill the bucket mid-test.
fn an_api_key_over_its_rate_gets_429_on_tcp_and_the_socket_alike() {
    let d = DaemonBuilder::new().set("server.key_requests_per_minute", 6).set("server.key_burst", 2).start();
    let (_, other_key) = d.admin().create_key("demo");
    let socket = d.unix_client();
    // Wrong keys are 401 and use up nothing.
    for _ in 0..5 {
        socket.with_key("app-NotARealKeyAtAll000000").get("/v1/parameters").expect_dify_error(401, "unauthorized");
    }
    assert_eq!(socket.get("/v1/parameters").status, 200);
    assert_eq!(d.client().get("/v1/parameters").status, 200);
    let body = socket.get("/v1/parameters").expect_dify_error(429, "too_many_requests");
    assert!(body["message"].as_str().unwrap().contains("too many requests from this API key"), "{body}");
    d.client().get("/v1/parameters").expect_dify_error(429, "too_many_requests");
    // Another key of the same app has its own allowance.
    let other = Client::new(Target::Unix(d.socket_path())).with_key(&other_key);
    assert_eq!(other.get("/v1/parameters").status, 200);
    assert_eq!(other.get("/v1/parameters").status, 200);
}

#[test]
fn bad_rate_limit_values_name_the_key_and_exit_78() {
    let mut d = DaemonBuilder::new().set("server.key_burst", 0).start_no_wait();
    let status = d.wait_exit(Duration::from_secs(60));
    let err = d.logs().into_iter().map(|l| l.raw).collect::<Vec<_>>().join("\n");
    assert_eq!(status.code(), Some(78), "{err}");
    assert!(err.contains("server.key_burst"), "{err}");
}
