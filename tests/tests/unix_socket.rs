//! The unix socket serves the same API as TCP (same keys, same store), is
//! created with the configured mode, and additionally serves the admin API
//! to root without a key.

#![allow(clippy::unwrap_used)] // tests may unwrap (style.md)

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use edgeai_tests::DaemonBuilder;

#[test]
fn chat_over_the_unix_socket_with_the_configured_mode() {
    let d = DaemonBuilder::new().set("server.socket_mode", "0640").start();
    let meta = std::fs::metadata(d.socket_path()).unwrap();
    assert!(meta.file_type().is_socket(), "{} is not a socket", d.socket_path().display());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "socket mode {:o}", meta.permissions().mode() & 0o7777);

    let u = d.unix_client();
    let a = u.chat_blocking("What is Modbus?", "ivan", None);
    assert!(!a["answer"].as_str().unwrap().trim().is_empty(), "{a}");
    let conv = a["conversation_id"].as_str().unwrap().to_owned();
    let s = u.chat_stream("Is it still used?", "ivan", Some(&conv));
    assert_eq!(s.status, 200);
    assert!(s.end.is_some(), "no message_end over the socket: {:?}", s.events);

    // One store behind both transports.
    let over_tcp = d.client().messages("ivan", &conv);
    assert_eq!(over_tcp.len(), 2);
    assert_eq!(over_tcp[0]["answer"], a["answer"]);
    assert_eq!(over_tcp[1]["answer"].as_str().unwrap(), s.answer);

    // The socket does not make the app API keyless; the admin API is socket-only and keyless for root.
    u.without_key()
        .post_json("/v1/chat-messages", &edgeai_tests::chat_body("hi", "ivan", "blocking", None))
        .expect_dify_error(401, "unauthorized");
    assert_eq!(u.without_key().get("/health").expect_json(200)["status"], "ok");
    if !nix::unistd::Uid::effective().is_root() {
        // Not root and no admin_group: the admin API must refuse this uid.
        u.without_key().get("/admin/v1/status").expect_dify_error(403, "forbidden");
        eprintln!("SKIP chat_over_the_unix_socket_with_the_configured_mode: the keyless admin API for root needs the test to run as root");
        return;
    }
    let status = u.without_key().get("/admin/v1/status").expect_json(200);
    assert_eq!(status["state"], "ready");
    assert_eq!(status["socket"], d.socket_path().display().to_string());
    assert_eq!(status["listen"], d.addr().to_string());
}
