//! The `edgeaid` binary: checks the CPU, parses the command line, loads the
//! configuration, sets up logging and runs the daemon. Turns every error
//! into a message with its whole cause chain and an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use edgeaid::config::{self, Sources};

/// Exit code when the CPU lacks the features the binary was built for.
const EXIT_UNSUPPORTED_CPU: u8 = 79;

#[derive(Parser)]
#[command(
    name = "edgeaid",
    version,
    about = "edgeai daemon: runs Dify LLM apps (chat, completion) with a local GGUF model, under systemd",
    after_help = "\
Configuration is read from /usr/lib/edgeai/edgeai.toml, /etc/edgeai/edgeai.toml and
/etc/edgeai/conf.d/*.toml (in that order), or only from the files given with --config.
Every key is documented in configs/reference.toml.

Exit codes: 0 stopped cleanly; 1 could not start (store, sockets, sockets from systemd that do
not match the configuration); 75 stopped cleanly to restart (RestoreBackup: the next start applies
the staged restore; the unit restarts on it); 78 invalid configuration;
79 this CPU lacks the features the binary was built for.

Environment: EDGEAI_LOG overrides log.level (e.g. EDGEAI_LOG=debug). LISTEN_PID, LISTEN_FDS and
LISTEN_FDNAMES (socket activation, set by systemd): the daemon serves the sockets passed, named
unix (server.socket) and tcp (server.listen), and binds the configured ones not passed.

Examples:
  edgeaid --config configs/dev.toml
  edgeaid --check-config
  edgeaid --config /etc/edgeai/edgeai.toml --check-config"
)]
struct Args {
    /// Read only this configuration file (repeatable; later files win).
    #[arg(long = "config", value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Validate the configuration, print a summary or every problem, and exit
    /// (0 when valid, 78 when not).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let exec_start = Instant::now();
    let missing = edgeaid::cpu::missing();
    if !missing.is_empty() {
        eprintln!(
            "edgeaid: this CPU lacks {} which this build requires ({}); \
             install a build for this CPU's baseline (see ARCHITECTURE.md, CPU features)",
            missing.join(", "),
            edgeaid::cpu::describe()
        );
        return ExitCode::from(EXIT_UNSUPPORTED_CPU);
    }
    let args = Args::parse();
    // Whatever umask it was started with (a shell's 022), everything the daemon creates — the
    // store and its WAL, keys, uploads, knowledge files, cached prefixes — is readable by it
    // alone, as under the unit's UMask=0077. The socket's mode is set explicitly (server.socket_mode).
    let started_with = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    nix::sys::stat::umask(started_with | nix::sys::stat::Mode::from_bits_truncate(0o077));
    // Socket activation: taken first, while the process has one thread
    // (it edits the environment) and before anything can start a child.
    let inherited = match edgeaid::api::Inherited::take() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("edgeaid: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sources = if args.config.is_empty() { Sources::System } else { Sources::Files(args.config.clone()) };
    let settings = match config::load(&sources) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgeaid: invalid configuration:\n{}", chain(&e));
            return ExitCode::from(edgeaid::EXIT_CONFIG as u8);
        }
    };
    // Only now, with the CPU check passed, may ggml's CPU backend run.
    let ggml = edgeaid::cpu::ggml_system_info().unwrap_or_default();
    if args.check_config {
        // The JWT key files too: the start would refuse them (exit 78).
        if let Err(e) = edgeaid::api::jwt::JwtKeys::load(&settings.auth.jwt) {
            eprintln!("edgeaid: invalid configuration:\n{e}");
            return ExitCode::from(edgeaid::EXIT_CONFIG as u8);
        }
        println!("configuration is valid\n{}\nllama.cpp: {ggml}", settings.describe());
        return ExitCode::SUCCESS;
    }
    let output = edgeaid::telemetry::choose(settings.log.format.as_str());
    if let Err(e) = edgeaid::telemetry::init(&settings.log.level, output) {
        eprintln!("edgeaid: {e}");
        return ExitCode::from(edgeaid::EXIT_CONFIG as u8);
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), cpu = %edgeaid::cpu::describe(), %ggml, sources = ?settings.sources, "starting");
    // Test builds only: fail points from FAILPOINTS, active for the whole run.
    #[cfg(feature = "failpoints")]
    let _failpoints = {
        let scenario = fail::FailScenario::setup();
        for (name, actions) in fail::list() {
            tracing::warn!(name, actions, "failpoint configured");
        }
        scenario
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("edgeaid-io").enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgeaid: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(edgeaid::run(settings, sources, exec_start, inherited)) {
        Ok(()) if edgeaid::restart_requested() => ExitCode::from(edgeaid::EXIT_RESTART as u8),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %chain(&e), "edgeaid failed");
            eprintln!("edgeaid: {}", chain(&e));
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

/// The error and every cause, one per line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    s
}
