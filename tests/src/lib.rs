//! Test harness shared by the end-to-end tests (`tests/tests/*.rs`) and the
//! benchmark (`src/bin/bench.rs`): it starts the real `edgeaid` binary with
//! the real model in a private temporary directory and talks to it over
//! HTTP (TCP and the unix socket), the admin API and `edgeaictl`.
//!
//! Owns: process management, config writing, a tiny HTTP/1.1 + SSE client,
//! a fake systemd notify socket, the daemon's fail points, a GGUF metadata
//! rewriter for test models, running Dify's SDK checker scripts ([`sdk`]),
//! PDF fixtures made in memory ([`pdf`]).
//! Must not: link the daemon crate (tests see
//! the daemon only from the outside, as a user would).
//!
//! # Prerequisites
//!
//! - The binaries, built with the test-only failpoints:
//!   `cargo build --workspace --bins --features edgeai-daemon/failpoints`
//!   (`make test` does this). They are taken from the profile directory of
//!   the running executable (`target/debug` for tests), or `$EDGEAI_BIN_DIR`.
//! - The model: `$EDGEAI_TEST_MODEL`, else
//!   `<repo>/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf` (scripts/setup.sh
//!   fetches it). [`paths`] panics with the fix when something is missing.
//! - For the SDK tests: the venv with dify-client (`.cache/venv`) and
//!   `tests/node/node_modules` (scripts/setup.sh makes both); without Node.js
//!   the Node SDK tests print SKIP.
//!
//! # API
//!
//! ```no_run
//! use edgeai_tests::{DaemonBuilder, Daemon};
//! use std::time::Duration;
//!
//! // Base config: TCP 127.0.0.1:0, socket/store/demo key in the temp dir,
//! // JSON logs, 2 slots, 1 thread, context 2048, app `demo` (chat) and app
//! // `summarise` (completion, required paragraph input `text`), both greedy
//! // with max_tokens 32.
//! let mut builder = DaemonBuilder::new()
//!     .set("server.max_body_bytes", 4096)                  // any dotted key
//!     .app_set("demo", "completion_params.max_tokens", 64) // a key of one app
//!     .max_tokens(48)                                      // every app
//!     .long_app(1500);  // app "long": LONG_QUERY generates until max_tokens
//! let notify = builder.notify_socket();                    // NOTIFY_SOCKET
//! let mut d: Daemon = builder.watchdog_usec(1_000_000).start(); // waits for ready + model
//!
//! let c = d.client();                        // TCP, with the demo key
//! let answer = c.chat_blocking("Hi", "alice", None);
//! let stream = c.chat_stream("Hi", "alice", None); // StreamOutcome: events, answer, end, pings
//! let r = c.without_key().get("/health");    // Response: status, headers, body, json()
//! r.expect_dify_error(401, "unauthorized");  // asserts status and Dify code
//! let conv = answer["conversation_id"].as_str().unwrap();
//! let msgs = c.messages("alice", conv);      // GET /v1/messages (data array)
//! let mut sse = c.chat_stream_open("Hi", "bob", None); // read events one by one
//! let first = sse.next_event().unwrap();     // Option<SseEvent>: event, data, at
//! sse.close();                               // the client goes away
//! let bad = c.request("POST", "/v1/chat-messages", &[], Some(b"\xff")); // raw bytes
//! let u = d.unix_client();                   // same API over the unix socket
//! let (key_id, key) = d.admin().create_key("demo"); // admin API via edgeai_common::UnixClient
//! let out = d.ctl(&["status"]);              // edgeaictl --socket <sock> status
//! d.wait_log_message("model loaded", Duration::from_secs(5)); // JSON log lines
//! let started = d.wait_log_count("sequence started", 2, Duration::from_secs(5)); // >= 2 such lines
//! d.edit_config(|c| edgeai_tests::daemon::set_path(c, "model.slots", 4.into())); // rewrite the file
//! d.sighup();                                // re-read it
//! d.sigterm(); let status = d.wait_exit(Duration::from_secs(30));
//! d.restart();                               // same dir, store and key; new port
//! d.kill9(); d.start_again();
//!
//! // A hung inference thread (test-only failpoint), e.g. for the watchdog:
//! let hung = DaemonBuilder::new().hang_inference().start();
//! hung.wait_failpoint_hang();
//! // Any fail point of the daemon (the `fail` crate's FAILPOINTS syntax):
//! let slow = DaemonBuilder::new().failpoint("model-load-progress", "sleep(30)").start();
//! slow.expect_failpoint("model-load-progress"); // fails loudly without the feature
//! ```
//!
//! Each [`Daemon`] has its own directory and port, so tests run in
//! parallel. Dropping a `Daemon` kills it; when the test is failing its
//! whole log is printed.

#![allow(clippy::unwrap_used)] // test code may unwrap (style.md)

pub mod admin;
pub mod bundle_server;
pub mod daemon;
pub mod dbus;
pub mod dify;
pub mod gguf;
pub mod http;
pub mod multipart;
pub mod notify;
pub mod paths;
pub mod pdf;
pub mod peer;
pub mod sdk;
pub mod sse;
pub mod tls;

pub use daemon::{Daemon, DaemonBuilder, LogLine, LONG_APP, LONG_QUERY};
pub use dify::{chat_body, completion_body, is_uuid, StreamOutcome};
pub use http::{Client, Response, Streaming, Target};
pub use notify::{Notification, NotifySocket};
pub use sse::{SseEvent, SseReader};
