//! `edgeaictl`: the operator's command line for edgeaid, talking HTTP to the
//! daemon's unix socket, and D-Bus to `org.edgeai.Daemon1` for the control
//! commands when `--bus` is given, through `edgeai_common`.
//!
//! Owns: turning the parsed command into calls and the final exit code.
//! Must not: depend on the daemon crate or llama.cpp; every wire type comes
//! from `edgeai_common`.

mod audit;
mod backup;
mod bundle;
mod chat;
mod cli;
mod commands;
mod control;
mod datasets;
mod docs;
mod doctor;
mod error;
mod export;
mod ingest;
mod multipart;
mod paths;
mod progress;
mod render;
mod socket;
mod time;
mod update;

use clap::Parser;
use cli::{AppsCommand, BackupCommand, CacheCommand, Cli, Command, DatasetsCommand, ExportCommand, KeysCommand, ModelsCommand};
use control::Control;
use edgeai_common::UnixClient;
use error::CtlError;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(source) => return fail(&CtlError::Runtime { source }),
    };
    let result = runtime.block_on(run(cli));
    // Do not wait for a stdin read that may still block a worker thread.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &CtlError) -> ExitCode {
    eprintln!("{}", err.report());
    ExitCode::from(err.exit_code())
}

async fn run(cli: Cli) -> Result<(), CtlError> {
    let explicit_socket = cli.socket.clone();
    let checkout_socket = std::env::current_dir().ok().and_then(|dir| socket::checkout_socket(&dir));
    let in_checkout = checkout_socket.is_some();
    let socket = cli.socket.or(checkout_socket).unwrap_or_else(|| socket::SYSTEM_SOCKET.into());
    let client = UnixClient::new(socket.clone()).with_timeout(cli.timeout);
    let json = cli.json;
    // keys gen-signing and bundle ... are offline: no daemon, no bus.
    let offline = matches!(cli.command, Command::Keys(KeysCommand::GenSigning { .. }) | Command::Bundle(_));
    let needs_control = !offline
        && matches!(
            cli.command,
            Command::Status
                | Command::Apps(_)
                | Command::Keys(_)
                | Command::Cache(_)
                | Command::Models(_)
                | Command::Reload
                | Command::Watch { .. }
                | Command::Export(_)
                | Command::Backup(BackupCommand::Create { .. })
                | Command::Backup(BackupCommand::Restore { state_dir: None, .. })
                | Command::Update(_)
        );
    let control = if needs_control {
        let route = control::choose(cli.bus, explicit_socket.is_some(), in_checkout);
        control::connect(route, &client, cli.timeout).await?
    } else {
        Control::Socket(client.clone())
    };
    match cli.command {
        Command::Status => commands::status(&control, json).await,
        Command::Apps(AppsCommand::List) => commands::apps_list(&control, json).await,
        Command::Apps(AppsCommand::Import { file, name, id, datasets }) => {
            commands::apps_import(&control, &file, name, id, datasets, json).await
        }
        Command::Apps(AppsCommand::Versions { app }) => commands::apps_versions(&control, &app, json).await,
        Command::Apps(AppsCommand::Activate { app, version }) => commands::apps_activate(&control, &app, version, json).await,
        Command::Apps(AppsCommand::Export { app, version, output }) => {
            commands::apps_export(&control, &app, version, output.as_deref(), json).await
        }
        Command::Keys(KeysCommand::Create { app, dataset }) => commands::keys_create(&control, app, dataset, json).await,
        Command::Keys(KeysCommand::List { app }) => commands::keys_list(&control, app.as_deref(), json).await,
        Command::Keys(KeysCommand::Revoke { id }) => commands::keys_revoke(&control, &id, json).await,
        Command::Keys(KeysCommand::GenSigning { out }) => bundle::gen_signing(&out, json),
        Command::Bundle(command) => bundle::run(command, json),
        Command::Datasets(command) => run_datasets(&client, command, json).await,
        Command::Cache(CacheCommand::Stats) => commands::cache_stats(&control, json).await,
        Command::Cache(CacheCommand::Flush { app }) => commands::cache_flush(&control, app.as_deref(), json).await,
        Command::Doctor(args) => {
            let doctor =
                doctor::Doctor { configs: &args.configs, socket: explicit_socket, default_socket: socket, timeout: cli.timeout, json };
            doctor.run().await
        }
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(&dir),
        Command::Reload => commands::reload(&control, json).await,
        Command::Run(args) => {
            let login = std::env::var("USER").ok();
            let user = args.user.unwrap_or_else(|| chat::default_user(login.as_deref()));
            commands::run_workflow(&client, &args.app, user, args.inputs, json).await
        }
        Command::Models(ModelsCommand::List) => commands::models_list(&control, json).await,
        Command::Models(ModelsCommand::Load { name }) => commands::models_load(&control, cli.timeout, name.as_deref(), json).await,
        Command::Models(ModelsCommand::Unload { name }) => commands::models_unload(&control, cli.timeout, name.as_deref(), json).await,
        Command::Watch { count } => commands::watch(&control, count, json).await,
        Command::Export(ExportCommand::Logs(args)) => export::logs(&control, &args, json).await,
        Command::Backup(BackupCommand::Create { file }) => backup::create(&control, cli.timeout, &file, json).await,
        Command::Backup(BackupCommand::Verify { file }) => backup::verify(&file, json).await,
        Command::Backup(BackupCommand::Restore { file, state_dir, config_dir, no_restart }) => match (&control, state_dir) {
            // --state-dir: offline (control is then the socket, unused).
            (Control::Socket(_), Some(state_dir)) => backup::restore(&file, &state_dir, config_dir.as_deref(), json).await,
            (Control::Bus(bus), _) => backup::restore_over_bus(bus, cli.timeout, &file, !no_restart, json).await,
            (Control::Socket(_), None) => Err(backup::BackupError::NeedsStateDir.into()),
        },
        Command::Audit(args) => audit::show(&client, &args, json).await,
        Command::Update(command) => update::run(&control, command, cli.timeout, json).await,
        Command::Chat(args) => {
            let login = std::env::var("USER").ok();
            let user = args.user.unwrap_or_else(|| chat::default_user(login.as_deref()));
            let inputs = args.inputs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
            let chat = chat::Chat { client: &client, app: &args.app, user, inputs, json };
            match args.query {
                Some(query) => chat.one_question(&query).await,
                None => chat.interactive().await,
            }
        }
    }
}

async fn run_datasets(client: &UnixClient, command: DatasetsCommand, json: bool) -> Result<(), CtlError> {
    match command {
        DatasetsCommand::List => datasets::list(client, json).await,
        DatasetsCommand::Create { name, description, economy } => datasets::create(client, name, description, economy, json).await,
        DatasetsCommand::Show { dataset } => datasets::show(client, &dataset, json).await,
        DatasetsCommand::Delete { dataset } => datasets::delete(client, &dataset, json).await,
        DatasetsCommand::Reindex { dataset } => datasets::reindex(client, &dataset, json).await,
        DatasetsCommand::Ingest { paths, dataset, create } => ingest::ingest(client, &paths, &dataset, create, json).await,
        DatasetsCommand::Docs { dataset } => datasets::docs(client, &dataset, json).await,
        DatasetsCommand::RmDoc { dataset, doc } => datasets::rm_doc(client, &dataset, &doc, json).await,
        DatasetsCommand::Search { dataset, query, method, top_k } => datasets::search(client, &dataset, query, method, top_k, json).await,
    }
}
