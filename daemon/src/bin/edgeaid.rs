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
not match the configuration, an update rollback that could not put the store back), or a pending
update failed its health gate; 75 stopped cleanly to restart (an update switch, mark-bad, rollback,
RestoreBackup; the unit restarts on it). Under systemd (NOTIFY_SOCKET set) such a restart happens in
place instead: the same process execs the installed binary again and keeps the passed sockets;
78 invalid configuration; 79 this CPU lacks the features the binary was built for.

Environment: EDGEAI_LOG overrides log.level (e.g. EDGEAI_LOG=debug). LISTEN_PID, LISTEN_FDS and
LISTEN_FDNAMES (socket activation, set by systemd): the daemon serves the sockets passed, named
unix (server.socket) and tcp (server.listen), and binds the configured ones not passed.
EDGEAI_SLOT (a or b, set by the update launcher when it starts a slot) and EDGEAI_INSTALLED (the
binary a restart in place execs), both set by the daemon itself; see docs/update.md.

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
    let sources = if args.config.is_empty() { Sources::System } else { Sources::Files(args.config.clone()) };
    let settings = match config::load(&sources) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgeaid: invalid configuration:\n{}", chain(&e));
            return ExitCode::from(edgeaid::EXIT_CONFIG as u8);
        }
    };
    if args.check_config {
        // Only now, with the CPU check passed, may ggml's CPU backend run.
        let ggml = edgeaid::cpu::ggml_system_info().unwrap_or_default();
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
    // Test builds only: fail points from FAILPOINTS, active for the whole run
    // (the launcher's too; an exec sets them up again from the same variable).
    #[cfg(feature = "failpoints")]
    let _failpoints = {
        let scenario = fail::FailScenario::setup();
        for (name, actions) in fail::list() {
            tracing::warn!(name, actions, "failpoint configured");
        }
        scenario
    };
    // A/B slots (docs/update.md): before the store opens and the sockets are
    // taken, with one thread, decide what runs; a slot's own binary is
    // exec'd here (same pid and argv; LISTEN_* and NOTIFY_SOCKET carry over).
    match edgeaid::update::launch(&settings) {
        Ok(edgeaid::update::Launch::Serve(Some(slot))) if edgeaid::update::running_slot().is_none() => {
            // Served in-process as the slot (it has no binary of its own); one thread still.
            std::env::set_var(edgeaid::update::SLOT_ENV, slot.as_str());
        }
        Ok(edgeaid::update::Launch::Serve(_)) => {}
        Err(e) => {
            tracing::error!(error = %chain(&e), "update: the start stops here; systemd's restart tries again");
            eprintln!("edgeaid: {}", chain(&e));
            return ExitCode::FAILURE;
        }
    }
    // Socket activation: taken after the launcher (an exec keeps the fds and
    // LISTEN_*), while the process has one thread (it edits the environment)
    // and before anything can start a child.
    let inherited = match edgeaid::api::Inherited::take() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("edgeaid: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ggml = edgeaid::cpu::ggml_system_info().unwrap_or_default();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), slot = std::env::var(edgeaid::update::SLOT_ENV).as_deref().unwrap_or("factory"), cpu = %edgeaid::cpu::describe(), %ggml, sources = ?settings.sources, "starting");
    // Test builds only: a slot that dies at start (fail point update-slot-crash).
    edgeaid::update::crash_point();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("edgeaid-io").enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edgeaid: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(edgeaid::run(settings, sources, exec_start, inherited));
    // Stray blocking tasks (a client's file read, a late fsync) get a moment; the exec or exit ends them.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) if edgeaid::update::gate::gate_failed() => ExitCode::from(edgeaid::update::gate::EXIT_GATE_FAILED),
        Ok(()) if edgeaid::restart_requested() && edgeaid::reexec::in_place() => {
            edgeaid::supervise::Notifier::from_env().watchdog();
            tracing::info!("restarting in place: exec the installed binary (same pid, the sockets stay open)");
            let e = edgeaid::reexec::exec_in_place();
            // stderr too: the fds the log used may have been replaced by the sockets at 3..
            tracing::error!(error = %chain(&e), "restart in place failed; exit 75 for systemd's restart");
            eprintln!("edgeaid: restart in place failed; exit 75 for systemd's restart: {}", chain(&e));
            ExitCode::from(edgeaid::EXIT_RESTART as u8)
        }
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
