//! Outbound against real local HTTP servers: the allowlist (names, CIDRs,
//! every resolved address), pass-through of method, headers and body, no
//! redirects, the body cap and the timeouts.

use super::*;
use http::Response;
use hyper::body::Incoming;
use hyper::service::service_fn;
use std::convert::Infallible;
use tokio::net::TcpListener;

/// A server on 127.0.0.1 that echoes the request as JSON, except:
/// `/big/N` answers N bytes, `/redirect` a 302, `/stall` a head and half a
/// body, then nothing.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move { Ok::<_, Infallible>(answer(req).await) });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

async fn answer(req: Request<Incoming>) -> Response<ChanBody> {
    let path = req.uri().path().to_owned();
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().expect("size");
        return response(200, &[], vec![vec![b'x'; n]], false);
    }
    if let Some(n) = path.strip_prefix("/sized/") {
        let n: usize = n.parse().expect("size");
        return response(200, &[("content-length", &n.to_string())], vec![vec![b'x'; n]], false);
    }
    if path == "/redirect" {
        return response(302, &[("location", "http://169.254.169.254/")], vec![], false);
    }
    if path == "/stall" {
        return response(200, &[("content-length", "100")], vec![b"half".to_vec()], true);
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let headers: serde_json::Map<String, serde_json::Value> =
        req.headers().iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())).collect();
    let body = req.into_body().collect().await.expect("body").to_bytes();
    let echo = serde_json::json!({"method": method, "uri": uri, "headers": headers, "body": String::from_utf8_lossy(&body)});
    response(201, &[("content-type", "application/json"), ("x-echo", "yes")], vec![echo.to_string().into_bytes()], false)
}

/// A response body of the given chunks; with `hang` it never ends.
struct ChanBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    /// Held so the body never ends.
    _hang: Option<tokio::sync::mpsc::Sender<Bytes>>,
}

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

fn response(status: u16, headers: &[(&str, &str)], chunks: Vec<Vec<u8>>, hang: bool) -> Response<ChanBody> {
    let (tx, rx) = tokio::sync::mpsc::channel(chunks.len().max(1));
    for c in chunks {
        tx.try_send(Bytes::from(c)).expect("room");
    }
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(ChanBody { rx, _hang: hang.then_some(tx) }).expect("response")
}

fn call(url: String) -> HttpCall {
    HttpCall {
        node_id: "http1".into(),
        method: "GET".into(),
        url,
        headers: Vec::new(),
        body: None,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        max_response_bytes: 1 << 20,
    }
}

fn outbound(allow: &[&str]) -> Outbound {
    Outbound::new(&allow.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("allowlist")
}

fn echo(reply: &HttpReply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).expect("echo json")
}

#[test]
fn rules_parse_and_match() {
    let host = Rule::parse("PLC.local.").expect("host");
    assert_eq!(host, Rule::Host("plc.local".into()));
    assert!(host.allows_name("plc.local") && !host.allows_name("x.plc.local") && !host.allows_name("plc.localx"));
    let below = Rule::parse("*.plant.lan").expect("wildcard");
    assert!(below.allows_name("a.plant.lan") && below.allows_name("a.b.plant.lan"));
    assert!(!below.allows_name("plant.lan") && !below.allows_name("evilplant.lan"));
    let net = Rule::parse("10.0.0.0/8").expect("cidr");
    assert!(net.allows_ip("10.255.1.2".parse().expect("ip")) && !net.allows_ip("11.0.0.1".parse().expect("ip")));
    assert!(!net.allows_ip("::ffff:10.0.0.1".parse().expect("ip")), "mapped addresses are canonicalised before matching");
    let one = Rule::parse("127.0.0.1").expect("ip");
    assert_eq!(one, Rule::Net { addr: "127.0.0.1".parse().expect("ip"), prefix: 32 });
    let v6 = Rule::parse("fd00::/8").expect("v6");
    assert!(v6.allows_ip("fd12::1".parse().expect("ip")) && !v6.allows_ip("fe80::1".parse().expect("ip")));
    assert!(Rule::parse("0.0.0.0/0").expect("all").allows_ip("8.8.8.8".parse().expect("ip")));
    for bad in ["", "*.", "a b", "10.0.0.1/8", "10.0.0.0/33", "::1/129", "x/8", "-bad.lan", "*", "**.lan", "http://plc.local"] {
        assert!(Rule::parse(bad).is_err(), "{bad:?} accepted");
    }
    let err = Outbound::new(&["ok.lan".into(), "bad host".into()]).expect_err("invalid");
    assert!(err.to_string().starts_with("workflow.http_allow entry \"bad host\": "), "{err}");
}

#[tokio::test]
async fn allowed_by_cidr_passes_method_headers_and_body_through() {
    let addr = echo_server().await;
    let out = outbound(&["127.0.0.0/8"]);
    let mut c = call(format!("http://{addr}/api/v1/items?id=7&x=a%20b"));
    c.method = "put".into();
    c.headers = vec![
        ("Authorization".into(), "Bearer t0k".into()),
        ("X-Custom".into(), "v".into()),
        // Framing comes from the body, not from the node's headers.
        ("Content-Length".into(), "999".into()),
        ("Transfer-Encoding".into(), "chunked".into()),
    ];
    c.body = Some(b"{\"a\":1}".to_vec());
    let reply = out.send(c).await.expect("reply");
    assert_eq!(reply.status, 201);
    assert!(reply.headers.contains(&("x-echo".into(), "yes".into())), "{:?}", reply.headers);
    let e = echo(&reply);
    assert_eq!(e["method"], "PUT");
    assert_eq!(e["uri"], "/api/v1/items?id=7&x=a%20b");
    assert_eq!(e["headers"]["authorization"], "Bearer t0k");
    assert_eq!(e["headers"]["x-custom"], "v");
    assert_eq!(e["headers"]["host"], addr.to_string());
    assert_eq!(e["headers"]["content-length"], "7");
    assert_eq!(e["headers"].get("transfer-encoding"), None);
    assert_eq!(e["body"], "{\"a\":1}");
}

#[tokio::test]
async fn allowed_by_host_name() {
    let addr = echo_server().await;
    let out = outbound(&["localhost"]);
    let reply = out.send(call(format!("http://LocalHost:{}/x", addr.port()))).await.expect("reply");
    assert_eq!(reply.status, 201);
    assert_eq!(echo(&reply)["headers"]["host"], format!("LocalHost:{}", addr.port()));
}

#[tokio::test]
async fn refused_ip_and_host_name_never_connect() {
    let addr = echo_server().await;
    let out = outbound(&["10.0.0.0/8", "plc.local"]);
    let err = out.send(call(format!("http://{addr}/"))).await.expect_err("refused");
    assert!(matches!(err, OutboundError::NotAllowed { .. }), "{err:?}");
    assert_eq!(err.to_string(), "destination 127.0.0.1 (127.0.0.1) is not in workflow.http_allow");
    // A name whose addresses are not all inside a CIDR is refused.
    let err = out.send(call(format!("http://localhost:{}/", addr.port()))).await.expect_err("refused");
    assert_eq!(err.to_string(), "destination localhost (127.0.0.1) is not in workflow.http_allow");
    // The empty list allows nothing.
    let err = outbound(&[]).send(call(format!("http://{addr}/"))).await.expect_err("refused");
    assert!(matches!(err, OutboundError::NotAllowed { .. }), "{err:?}");
    // IPv6 literal outside the list.
    let err = outbound(&["127.0.0.0/8"]).send(call("http://[::1]:9/".into())).await.expect_err("refused");
    assert_eq!(err.to_string(), "destination ::1 (::1) is not in workflow.http_allow");
}

#[tokio::test]
async fn https_and_bad_urls_are_clear_errors() {
    let out = outbound(&["0.0.0.0/0"]);
    let err = out.send(call("https://plc.local/x".into())).await.expect_err("https");
    assert_eq!(err.to_string(), "https is not supported in this build: https://plc.local/x");
    for (url, needle) in [
        ("ftp://plc.local/", "only http:// URLs"),
        ("/relative", "not an absolute http:// URL"),
        ("http://u:p@127.0.0.1/", "user credentials"),
        ("not a url at all", "invalid url"),
    ] {
        let err = out.send(call(url.into())).await.expect_err(url);
        assert!(err.to_string().contains(needle), "{url}: {err}");
    }
    let mut c = call("http://127.0.0.1:9/".into());
    c.method = "GE T".into();
    assert!(matches!(out.send(c).await, Err(OutboundError::InvalidMethod { .. })));
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let addr = echo_server().await;
    let reply = outbound(&["127.0.0.1"]).send(call(format!("http://{addr}/redirect"))).await.expect("reply");
    assert_eq!(reply.status, 302);
    assert!(reply.headers.contains(&("location".into(), "http://169.254.169.254/".into())));
}

#[tokio::test]
async fn body_cap() {
    let addr = echo_server().await;
    let out = outbound(&["127.0.0.1/32"]);
    let mut c = call(format!("http://{addr}/big/4096"));
    c.max_response_bytes = 4096;
    assert_eq!(out.send(c.clone()).await.expect("at the cap").body.len(), 4096);
    c.max_response_bytes = 4095;
    let err = out.send(c.clone()).await.expect_err("over the cap");
    assert_eq!(err.to_string(), "response larger than 4095 bytes");
    // A declared Content-Length over the cap is refused before the body.
    c.url = format!("http://{addr}/sized/4096");
    let err = out.send(c.clone()).await.expect_err("declared over the cap");
    assert_eq!(err.to_string(), "response larger than 4095 bytes");
    c.max_response_bytes = 4096;
    assert_eq!(out.send(c).await.expect("declared at the cap").body.len(), 4096);
}

#[tokio::test]
async fn read_timeout_before_the_head_and_inside_the_body() {
    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let out = outbound(&["127.0.0.1"]);
    let mut c = call(format!("http://{silent_addr}/"));
    c.read_timeout = Duration::from_millis(300);
    let err = out.send(c).await.expect_err("timeout");
    assert!(matches!(err, OutboundError::ReadTimeout { .. }), "{err:?}");
    held.abort();

    let addr = echo_server().await;
    let mut c = call(format!("http://{addr}/stall"));
    c.read_timeout = Duration::from_millis(300);
    let err = out.send(c).await.expect_err("timeout");
    assert!(matches!(err, OutboundError::ReadTimeout { .. }), "{err:?}");
}

#[tokio::test]
async fn connect_refused_and_connect_timeout() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = outbound(&["127.0.0.1"]);
    let err = out.send(call(format!("http://127.0.0.1:{port}/"))).await.expect_err("refused");
    assert!(matches!(err, OutboundError::Connect { .. }), "{err:?}");

    // A listener whose accept queue is full drops further SYNs, so connecting hangs.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let full = socket.listen(1).expect("listen");
    let addr = full.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    if tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await.is_ok() {
        eprintln!("SKIP connect timeout: this network stack accepts connections beyond a full backlog");
        return;
    }
    let mut c = call(format!("http://{addr}/"));
    c.connect_timeout = Duration::from_millis(300);
    let err = out.send(c).await.expect_err("timeout");
    assert!(matches!(err, OutboundError::ConnectTimeout { .. }), "{err:?}");
}
