//! Parts of the `bench` binary (tests/src/bin/bench.rs), which measures
//! edgeaid against a bare llama-cpp-2 decode loop, llama.cpp's own
//! llama-server and a bare hyper + SQLite server. Nothing here is used by
//! the end-to-end tests: the bench keeps its own small helpers.

pub mod bare;
pub mod client;
pub mod code;
pub mod cpu;
pub mod daemon;
pub mod http;
pub mod knowledge;
pub mod kv;
pub mod load;
pub mod replay;
pub mod report;
pub mod server;
pub mod ttft;
pub mod vectors;
pub mod workflow;
