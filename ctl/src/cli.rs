//! Command-line surface of `edgeaictl` (clap derive): global options,
//! subcommands, their help texts and examples.
//!
//! Owns: argument parsing only. Must not: talk to the daemon or print.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Appended to every `--help`, so the contract is one `--help` away.
macro_rules! exit_codes {
    () => {
        "Exit codes:\n  \
         0   success\n  \
         1   any other error, including an API error (printed as `edgeaictl: <code>: <message>`, or \
         `edgeaictl: org.edgeai.Error.<Name>: <message>` over D-Bus) and a FAIL of `doctor`\n  \
         2   usage error\n  \
         65  an input file cannot be read or is not JSON/UTF-8 (EX_DATAERR)\n  \
         69  the daemon cannot be reached (socket, or not on the --bus) or did not answer in time (EX_UNAVAILABLE)\n  \
         73  an output file cannot be written (EX_CANTCREAT)\n  \
         75  the daemon is busy (org.edgeai.Error.Busy: another long job runs); retry later (EX_TEMPFAIL)\n  \
         77  permission denied by the daemon, on the socket or by the bus policy (EX_NOPERM)"
    };
}

/// `--bus`.
fn parse_bus(s: &str) -> Result<edgeai_common::dbus::Bus, String> {
    edgeai_common::dbus::Bus::parse(s)
}

/// `OLD=NEW` of `--dataset`.
fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((old, new)) if !old.trim().is_empty() && !new.trim().is_empty() => Ok((old.trim().to_owned(), new.trim().to_owned())),
        _ => Err(format!("{s:?} is not OLD=NEW (a DSL dataset id, =, a local dataset id or name)")),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "edgeaictl",
    version,
    about = "Operate edgeaid, the edge LLM daemon, over D-Bus and its unix socket",
    long_about = "Operate edgeaid, the edge LLM daemon, over D-Bus (control) and its unix socket (data).\n\n\
        The control methods and the admin API are only served to root or to members of \
        the daemon's admin group.",
    after_help = concat!(
        "Control commands (status, apps, keys, cache, models, reload, watch, backup create, export): \
         --bus BUS (or EDGEAI_BUS) if given; else the socket if --socket (or EDGEAI_SOCKET) is given or \
         edgeaictl runs inside a source checkout; else org.edgeai.Daemon1 on the system bus when the \
         daemon is there, else the socket.\n\
         Socket: --socket, else EDGEAI_SOCKET, else <checkout>/run/edgeai.sock when run inside a \
         source checkout (a directory with Cargo.toml and configs/dev.toml), else /run/edgeai/edgeai.sock.\n\n\
         Examples:\n  \
         edgeaictl status\n  \
         KEY=$(edgeaictl keys create --app demo)\n  \
         edgeaictl chat demo\n\n",
        exit_codes!()
    )
)]
pub struct Cli {
    /// Unix socket of edgeaid [default: <checkout>/run/edgeai.sock inside a source checkout, else /run/edgeai/edgeai.sock]
    #[arg(long, global = true, env = "EDGEAI_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Print the daemon's JSON instead of tables and messages
    #[arg(long, global = true)]
    pub json: bool,

    /// Send the control commands (status, apps, keys, cache, models, reload, watch, backup
    /// create, export) over D-Bus to org.edgeai.Daemon1 on this bus: system, session, or an
    /// address such as unix:path=/run/dbus/system_bus_socket [default: the system bus when the
    /// daemon is on it and no --socket is given, outside a source checkout]. Chat, run,
    /// datasets, audit and doctor's daemon checks always use the socket
    #[arg(long, global = true, env = "EDGEAI_BUS", value_name = "BUS", value_parser = parse_bus)]
    pub bus: Option<edgeai_common::dbus::Bus>,

    /// Give up (exit 69) when the daemon takes longer than this to answer;
    /// for `chat`, the longest wait for the next event of the answer, so a
    /// long answer is never cut. Keep it above the daemon's
    /// server.sse_ping_secs (10 s by default). Examples: 30s, 2m, 1500ms
    #[arg(long, global = true, env = "EDGEAI_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the daemon's state, listeners, load and model
    #[command(after_help = concat!("Examples:\n  edgeaictl status\n  edgeaictl status --json\n\n", exit_codes!()))]
    Status,

    /// List, import, version, activate and export apps
    #[command(subcommand)]
    Apps(AppsCommand),

    /// Create, list and revoke API keys
    #[command(subcommand)]
    Keys(KeysCommand),

    /// Chat with an app without an API key (interactive, streaming)
    #[command(
        long_about = "Chat with an app without an API key, authorised by your user id.\n\n\
            Reads one question per line from stdin and streams the answer to stdout; the \
            conversation continues across lines. Ends on end of input or a line `/exit`. \
            With --json, prints every event of the answer stream as one JSON line.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl chat demo\n  \
             edgeaictl chat demo --query 'What is the boiler pressure limit?'\n  \
             edgeaictl chat summarise --input text='Pump 3 tripped twice overnight.' --query ''\n  \
             printf 'hello\\nand then?\\n' | edgeaictl chat demo --user line-3\n\n",
            exit_codes!()
        )
    )]
    Chat(ChatArgs),

    /// Knowledge bases: create, list, ingest files (with progress), search
    #[command(subcommand)]
    Datasets(DatasetsCommand),

    /// The response cache: hit rate and size, flush
    #[command(subcommand)]
    Cache(CacheCommand),

    /// Check the installation: config, model, limits, disk, socket, D-Bus policy, database
    #[command(
        long_about = "Check the installation and print PASS, WARN or FAIL per check, with what to do \
            about each WARN and FAIL.\n\n\
            Checked here: the config (edgeaid --check-config with the same --config files; edgeaid \
            is found next to edgeaictl or on PATH), the socket's mode and group against the config, \
            and whether the D-Bus policy is installed. Checked by the daemon (GET /admin/v1/doctor): \
            the model file's size and sha256 (against MODEL.sha256 next to it, or the default \
            model's published checksum), the model's load state, the cgroup's memory and CPU limits \
            and the inference threads chosen, free disk in the state directory, and the database \
            (PRAGMA integrity_check and foreign_key_check, on a read-only connection). When the \
            daemon cannot be reached, its checks FAIL saying why.\n\n\
            The socket is --socket (or EDGEAI_SOCKET) if given, else the config's server.socket.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl doctor\n  \
             edgeaictl doctor --config /etc/edgeai/edgeai.toml\n  \
             edgeaictl doctor --json | jq '.checks[] | select(.status != \"pass\")'\n\n\
             Exit codes besides the ones below: 1 when any check FAILs (WARNs alone exit 0); the \
             report is printed either way.\n\n",
            exit_codes!()
        )
    )]
    Doctor(DoctorArgs),

    /// Print a shell completion script (bash, zsh, fish)
    #[command(after_help = concat!(
        "Examples:\n  \
         edgeaictl completions bash > /usr/share/bash-completion/completions/edgeaictl\n  \
         edgeaictl completions zsh > /usr/share/zsh/vendor-completions/_edgeaictl\n  \
         edgeaictl completions fish > /usr/share/fish/vendor_completions.d/edgeaictl.fish\n  \
         source <(edgeaictl completions bash)\n\n",
        exit_codes!()
    ))]
    Completions {
        #[arg(value_enum, value_name = "SHELL")]
        shell: CompletionShell,
    },

    /// Write the man pages: edgeaictl.1 and one per subcommand
    #[command(after_help = concat!(
        "Examples:\n  \
         edgeaictl man --dir target/dist/man/man1\n  \
         man -l target/dist/man/man1/edgeaictl-doctor.1\n\n\
         Prints the path of each page written.\n\n",
        exit_codes!()
    ))]
    Man {
        /// Directory to write the pages into (created if missing)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },

    /// Re-read the configuration now, as `systemctl reload edgeai` does (D-Bus only: the system bus by default, or --bus)
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl reload\n  edgeaictl --bus session reload    # the dev daemon of `make run`\n\n\
         Apps from the configuration take effect at once; other settings at the next restart. An invalid \
         configuration changes nothing and is reported with every problem (exit 1).\n\n",
        exit_codes!()
    ))]
    Reload,

    /// The models: list them; load or unload the chat model
    #[command(subcommand)]
    Models(ModelsCommand),

    /// Follow the daemon's state (starting, ready, degraded, stopping) as D-Bus announces it (D-Bus only: the system bus by default, or --bus)
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl watch\n  edgeaictl watch --count 1 --json\n\n\
         Prints the current state, then one line per StateChanged signal, until Ctrl-C or --count changes.\n\n",
        exit_codes!()
    ))]
    Watch {
        /// Stop after this many changes
        #[arg(long, value_name = "N")]
        count: Option<u32>,
    },

    /// Export logs (messages, workflow runs) as Arrow IPC or Parquet files
    #[command(subcommand)]
    Export(ExportCommand),

    /// Run a workflow app once and print its outputs (blocking; no API key: your user id authorises it)
    #[command(
        long_about = "Run a workflow app once with the given inputs and print its outputs as JSON; with --json, \
            the whole answer (workflow_run_id, task_id, data: status, outputs, error, elapsed_time, total_tokens, \
            total_steps). A run that ends failed prints its error and exits 1.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl run branches --input text='hello world' --input count=5\n  \
             edgeaictl run summarise-shift --input log=\"$(cat shift.txt)\" --json\n\n\
             A value that parses as JSON (5, true, [1,2], {\"a\":1}) is sent as that; anything else as a string.\n\n",
            exit_codes!()
        )
    )]
    Run(RunArgs),

    /// Back up the daemon's state online, check a backup, restore one (online with --bus, or offline)
    #[command(subcommand)]
    Backup(BackupCommand),

    /// Build, sign, check and show update bundles (offline: no daemon)
    #[command(subcommand)]
    Bundle(BundleCommand),

    /// Show the audit trail: admin actions and refused credentials, newest first (the admin socket)
    #[command(
        long_about = "Show the audit trail the daemon keeps in its store, newest first: every admin action \
            (admin API requests that change something or let data out: imports, keys, activations, cache \
            flushes, backups, log exports, model loads; and the D-Bus methods that do the same) with its \
            outcome, and every request or D-Bus call refused for its credentials (bad or missing API key, \
            a caller not in the admin group). The same entries are in the journal with F_AUDIT=admin or \
            F_AUDIT=auth_failure. Refusals are recorded at most audit.auth_failures_per_minute a minute; \
            the store keeps the newest audit.max_rows entries.\n\n\
            Read over the admin socket (--socket; its default is below).",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl audit\n  \
             edgeaictl audit --kind auth-failure --since 2024-06-01T00:00:00Z\n  \
             edgeaictl audit --limit 1000 --json | jq '.data[] | select(.outcome != \"ok\")'\n  \
             journalctl -u edgeai F_AUDIT=auth_failure\n\n",
            exit_codes!()
        )
    )]
    Audit(AuditArgs),

    /// Show and steer the A/B update slots: status, install, mark-good, mark-bad, rollback (the admin socket, or D-Bus)
    #[command(subcommand)]
    Update(UpdateCommand),
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Show what runs, the update state (good, pending, rolled-back; attempts; last error) and the slots
    #[command(
        long_about = "Show the A/B update slots (docs/update.md): what this daemon runs as (slot a, b or the \
            installed factory binary), where the current link points, the update state (status good, pending \
            or rolled-back; version, previous version, starts of a pending version out of max_attempts, \
            last error, history) and what each slot holds.",
        after_help = concat!(
            "Examples:\n  edgeaictl update status\n  edgeaictl update status --json | jq .state.status\n\n",
            exit_codes!()
        )
    )]
    Status,
    /// Commit the pending version that runs now (as if its health gate passed)
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl update mark-good\n\nA version already good stays good (nothing changes). Refused (409 update_not_pending) when nothing is \
         pending or the pending version is not the one running.\n\n",
        exit_codes!()
    ))]
    MarkGood,
    /// Give up the pending version: the daemon restarts and rolls it back, restoring the store snapshot
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl update mark-bad\n\nThe daemon answers, drains and exits 75; systemd starts it again and the start rolls the pending \
         version back before the store opens (its database is kept as update/rolled-back-<version>.db). \
         Refused (409 update_not_pending) when nothing is pending.\n\n",
        exit_codes!()
    ))]
    MarkBad,
    /// Go back to the previous version (a pending one as mark-bad does; a good one at once) and restart
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl update rollback\n  edgeaictl update status\n\nA pending version is rolled back at the restart with its store snapshot. A committed (good) version \
         is switched back at once: the state and the current link now, then the daemon restarts into the \
         previous slot or the factory binary; its database is not put back (the snapshot went at the commit). \
         Refused (409 update_no_previous) when there is nothing to go back to, 409 update_disabled when \
         update.enabled is false.\n\n",
        exit_codes!()
    ))]
    Rollback,
    /// Install a signed bundle into the slot that does not run; the daemon restarts into it (pending)
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl bundle verify --trust /etc/edgeai/trust.d edgeai-1.3.0.bundle\n  \
         edgeaictl update install edgeai-1.3.0.bundle\n  \
         edgeaictl update install https://updates.plant.example/edgeai-1.3.0.bundle\n  edgeaictl update status\n\n\
         An http:// or https:// URL is downloaded by the daemon itself (https: the server must chain to a \
         certificate in update.ca_file), into its update directory, never into memory; a dropped connection is \
         resumed with Range, and installing the same URL again after a failed download resumes where it stopped. \
         A server error or an unreachable server after the retries is 502 update_download_failed (exit 1); a \
         malformed URL is 400 invalid_param (exit 1).\n\n\
         The daemon checks the bundle before a byte is installed: signed by a key in update.trust_dir (403 \
         update_untrusted), compatible with update.compatible and newer than what runs (409 update_not_applicable; \
         --allow-downgrade and --reinstall lift the version rule), intact (400 update_bad_bundle, the component \
         named), free space for it and the store snapshot (507 update_no_space), at most update.max_bundle_bytes \
         (413 update_too_large), no update pending (409 update_pending). Only the daemon binary is installed \
         from a bundle so far: models, apps or config in it are refused (422 update_unsupported). Then it \
         answers, drains and exits 75; systemd starts the new version, which commits itself once healthy, or is \
         rolled back after update.max_attempts starts. Over the admin socket the file is streamed as the \
         request's body (a pipe is read whole first); over D-Bus (--bus, or the system bus on a gateway: InstallUpdate) the daemon reads it through a file \
         descriptor edgeaictl opens, and a refusal names its D-Bus error with the same code \
         (org.edgeai.Error.UpdateUntrusted: update_untrusted: ...).\n\n",
        exit_codes!()
    ))]
    Install {
        /// The bundle file (`edgeaictl bundle create` + `bundle sign`), or an http(s):// URL the daemon downloads it from
        #[arg(value_name = "BUNDLE|URL")]
        bundle: std::path::PathBuf,
        /// Install an older version than the one running (the bundle's manifest must allow it too)
        #[arg(long)]
        allow_downgrade: bool,
        /// Install the version that runs again
        #[arg(long)]
        reinstall: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries of this kind
    #[arg(long, value_enum, value_name = "KIND")]
    pub kind: Option<AuditKind>,

    /// Only entries at or after TIME (RFC 3339 or unix seconds)
    #[arg(long, value_name = "TIME", value_parser = crate::export::parse_time)]
    pub since: Option<i64>,

    /// At most N entries (1 to 1000)
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditKind {
    /// Admin actions
    Admin,
    /// Refused credentials
    AuthFailure,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models: name, kind (chat or embedding), state, threads, slots, context size
    #[command(after_help = concat!("Examples:\n  edgeaictl models list\n  edgeaictl --bus system models list --json\n\n", exit_codes!()))]
    List,
    /// Load the chat model again after `models unload` or a failed load
    #[command(
        long_about = "Load the chat model again, with the configuration the daemon started with, after `models unload` \
            or a load that failed (after fixing the file). Waits until the model is ready; over D-Bus (--bus) it draws a \
            progress bar on a terminal. Prints one line at the end. A model loaded already is left alone (exit 0). A failed load \
            exits 1 with the reason; a load or another long job already running exits 75 (retry later).",
        after_help = concat!(
            "Examples:\n  edgeaictl --bus system models load\n  edgeaictl --bus system models load smollm2-135m-instruct --json\n\n\
             Only the chat model (model.name) can be loaded or unloaded; the embedding model is loaded at start.\n\n",
            exit_codes!()
        )
    )]
    Load {
        /// The chat model's name (model.name, as `models list` shows it); default: the chat model
        name: Option<String>,
    },
    /// Unload the chat model to free its memory until `models load`
    #[command(
        long_about = "Unload the chat model: the weights and the KV cache are freed. New chat and completion requests \
            answer 503 (provider_not_initialize) at once; generations already running finish first. The model stays \
            unloaded across `reload` until `models load` or a restart. Prints the memory freed.",
        after_help = concat!(
            "Examples:\n  edgeaictl --bus system models unload\n  edgeaictl --bus system models unload --json\n\n",
            exit_codes!()
        )
    )]
    Unload {
        /// The chat model's name (model.name); default: the chat model
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show hits, misses, hit rate, entries, bytes and evictions since start
    #[command(after_help = concat!("Examples:\n  edgeaictl cache stats\n  edgeaictl cache stats --json\n\n", exit_codes!()))]
    Stats,
    /// Drop every cached answer, or one app's
    #[command(after_help = concat!("Examples:\n  edgeaictl cache flush\n  edgeaictl cache flush --app demo\n\n", exit_codes!()))]
    Flush {
        /// Only this app's cached answers
        #[arg(long, value_name = "APP")]
        app: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List the apps and their active versions
    #[command(after_help = concat!("Example:\n  edgeaictl apps list\n\n", exit_codes!()))]
    List,

    /// Import an app: a Dify DSL export (.yml/.yaml) or a JSON definition (a new version if it changed)
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl apps import plant-faq.yml\n  \
         edgeaictl apps import plant-faq.yml --name 'Plant FAQ' --id plant-faq\n  \
         edgeaictl apps import configs/demo-app.json\n  \
         edgeaictl apps import rag.yml --dataset 6f1c0a3e-0000-4000-8000-00000000aaaa=plant-manuals\n\n\
         A .yml/.yaml file is a Dify app DSL (modes chat, completion, workflow, advanced-chat); every \
         problem in it is listed at once and nothing is stored unless there is none. The import prints \
         the app's id, name and version and which model each LLM node was mapped to ([model_map]).\n\
         A .json file holds one app definition: {\"id\": \"demo\", \"name\": \"Demo\", \"mode\": \"chat\", ...}.\n\n",
        exit_codes!()
    ))]
    Import {
        /// Dify DSL (.yml, .yaml) or JSON app definition
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The app's name, instead of the DSL's app.name (DSL only)
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The app's id [default: the name, lower-cased, with '-' for other characters] (DSL only)
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Map a dataset id of the DSL (Dify's) to a local dataset, by id or name; repeatable.
        /// Local dataset ids and names need no mapping (DSL only)
        #[arg(long = "dataset", value_name = "OLD=NEW", value_parser = parse_mapping)]
        datasets: Vec<(String, String)>,
    },

    /// List an app's stored versions, newest first
    #[command(after_help = concat!("Example:\n  edgeaictl apps versions plant-faq\n\n", exit_codes!()))]
    Versions {
        #[arg(value_name = "APP")]
        app: String,
    },

    /// Make a stored version the active one at once (rollback); runs in flight finish on their version
    #[command(after_help = concat!("Example:\n  edgeaictl apps activate plant-faq 2\n\n", exit_codes!()))]
    Activate {
        #[arg(value_name = "APP")]
        app: String,
        #[arg(value_name = "VERSION")]
        version: u32,
    },

    /// Write an app version as Dify DSL YAML (stdout, or --output FILE)
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl apps export plant-faq > plant-faq.yml\n  edgeaictl apps export plant-faq 1 -o v1.yml\n\n",
        exit_codes!()
    ))]
    Export {
        #[arg(value_name = "APP")]
        app: String,
        /// The version [default: the active one]
        #[arg(value_name = "VERSION")]
        version: Option<u32>,
        /// Write to this file instead of stdout
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for an app, or with --dataset for the Knowledge
    /// API; prints only the key on stdout
    #[command(after_help = concat!(
        "Examples:\n  KEY=$(edgeaictl keys create --app demo)\n  \
         DATASET_KEY=$(edgeaictl keys create --dataset)\n\n\
         The key is shown only once; its id and app go to stderr.\n\n",
        exit_codes!()
    ))]
    #[command(group = clap::ArgGroup::new("opens").required(true).args(["app", "dataset"]))]
    Create {
        /// App the key authorises (an `app-…` key)
        #[arg(long, value_name = "APP")]
        app: Option<String>,
        /// A `dataset-…` key for the Knowledge API (`/v1/datasets`), all datasets
        #[arg(long)]
        dataset: bool,
    },

    /// List API keys (never their secrets), times in UTC
    #[command(after_help = concat!("Examples:\n  edgeaictl keys list\n  edgeaictl keys list --app demo\n\n", exit_codes!()))]
    List {
        /// Only the keys of this app
        #[arg(long, value_name = "APP")]
        app: Option<String>,
    },

    /// Revoke an API key by its id (see `keys list`)
    #[command(after_help = concat!("Example:\n  edgeaictl keys revoke k_3f9a2c\n\n", exit_codes!()))]
    Revoke {
        /// Key id, as shown by `keys list`
        #[arg(value_name = "ID")]
        id: String,
    },

    /// Generate an ed25519 key pair for signing update bundles (offline: no daemon)
    #[command(
        long_about = "Generate an ed25519 key pair for signing update bundles; offline, the daemon is not asked.\n\n\
            Writes PREFIX, the private key (PKCS#8 PEM, mode 0600), and PREFIX.pub, the public key (SPKI PEM), \
            the formats of `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`. Neither file may exist: \
            a key is never overwritten. Prints the key id (the first 16 hex digits of sha256 over the 32-byte public \
            key), which `bundle verify` and `bundle info` show for each signature. Keep PREFIX off the gateways; \
            copy PREFIX.pub into their /etc/edgeai/trust.d/.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl keys gen-signing --out /secure/edgeai-release\n  \
             install -m 0644 /secure/edgeai-release.pub /etc/edgeai/trust.d/\n  \
             openssl pkey -in /secure/edgeai-release -pubout    # prints the same key as the .pub file\n\n\
             An existing PREFIX or PREFIX.pub exits 73.\n\n",
            exit_codes!()
        )
    )]
    GenSigning {
        /// Write the private key to PREFIX and the public key to PREFIX.pub
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
}

/// `--version`, `--min-previous`.
fn parse_semver(s: &str) -> Result<semver::Version, String> {
    semver::Version::parse(s).map_err(|e| format!("{s:?} is not a semantic version such as 1.4.0 or 2.0.0-rc.1: {e}"))
}

/// The exit codes of `bundle` commands, which differ in meaning from the daemon commands'.
macro_rules! bundle_exit_codes {
    () => {
        "Exit codes:\n  \
         0   success\n  \
         2   usage error\n  \
         65  the bundle (or an input file, or a key file) is bad: corrupt, truncated, altered, a payload whose \
         size or sha256 differs from the manifest, an invalid manifest, a member missing, extra or out of \
         order (EX_DATAERR); the message names the file and the component\n  \
         73  an output cannot be written, or exists already (EX_CANTCREAT)\n  \
         77  the bundle is unsigned, or no key of the trust directory signed it (EX_NOPERM)"
    };
}

#[derive(Debug, Subcommand)]
#[command(long_about = "Build, sign and check update bundles, offline (the daemon is not asked).\n\n\
    A bundle is one tar file: manifest.json (format edgeai-bundle/1, version, compatible, min_previous_version, \
    allow_downgrade, created, and every component's kind, name, size, sha256 and mode), manifest.sig (ed25519 \
    signatures over the exact bytes of manifest.json), then payload/<kind>/<name> for each component in manifest \
    order. See docs/bundle.md.")]
pub enum BundleCommand {
    /// Write an unsigned bundle from a binary, models, apps and config files
    #[command(
        long_about = "Write an unsigned bundle to OUT from the given files; sign it next with `bundle sign`.\n\n\
            Each file becomes one component named by its file name (one path segment, at most 255 bytes), in \
            this order: the binary, the models, the apps, the config files, each in the order given. Every file \
            is read twice in 64 KiB pieces (to hash it for the manifest, then to copy it, checking it did not \
            change meanwhile), never loaded whole. App files must be Dify DSL YAML (.yml/.yaml) or a JSON app \
            definition (.json) that parses. The bundle is written to a hidden file beside OUT, fsynced, and only \
            then put at OUT; OUT is never overwritten unless --force.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl bundle create --version 1.4.0 --compatible edgeai-x86_64-v3 \\\n      \
             --binary target/release/edgeaid --model SmolLM2-135M-Instruct.Q4_1.gguf \\\n      \
             --app plant-faq.yml --config 50-site.toml edgeai-1.4.0.bundle\n  \
             edgeaictl bundle create --version 1.4.1 --compatible edgeai-x86_64-v3 --min-previous 1.4.0 \\\n      \
             --app plant-faq.yml apps-1.4.1.bundle\n\n",
            bundle_exit_codes!()
        )
    )]
    Create(BundleCreateArgs),

    /// Sign a bundle's manifest with a private key (replaces that key's earlier signature)
    #[command(
        long_about = "Add an ed25519 signature by KEY (a private key from `keys gen-signing`, or `openssl genpkey \
            -algorithm ed25519`) over the exact bytes of the bundle's manifest.json. A signature by the same key is \
            replaced, not added twice; other keys' signatures stay. Every payload's size and sha256 are checked \
            while the bundle is rewritten (through a temporary file, fsync and rename), so a damaged bundle is \
            refused and left as it was.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl bundle sign --key /secure/edgeai-release edgeai-1.4.0.bundle\n  \
             edgeaictl bundle sign --key /secure/qa edgeai-1.4.0.bundle    # a second signature\n\n",
            bundle_exit_codes!()
        )
    )]
    Sign {
        /// The private key (PKCS#8 PEM)
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// The bundle to sign (rewritten in place)
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },

    /// Check a bundle offline: signature by a trusted key, manifest, every payload's size and sha256
    #[command(
        long_about = "Check a bundle as a gateway would before installing it, writing nothing: the member order, \
            the manifest, that at least one signature verifies with a public key (*.pub) of the trust directory, \
            and every payload's size and sha256 (streamed). Prints the version, the compatible string, the \
            components and the key ids that signed. The version policy (compatible string, downgrades) is the \
            gateway's check at install time, not this one's.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl bundle verify edgeai-1.4.0.bundle\n  \
             edgeaictl bundle verify --trust ./trust.d edgeai-1.4.0.bundle --json\n\n",
            bundle_exit_codes!()
        )
    )]
    Verify {
        /// Directory of trusted public keys (every *.pub file)
        #[arg(long, value_name = "DIR", default_value = edgeai_common::bundle::TrustStore::DEFAULT_DIR)]
        trust: PathBuf,
        /// The bundle to check
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },

    /// Show a bundle's manifest and signers without checking signatures or payloads
    #[command(
        long_about = "Print a bundle's manifest (version, compatible, minimum previous version, downgrade flag, \
            created, components) and the key ids of its signatures, or \"unsigned\". Nothing is verified: use \
            `bundle verify` for that.",
        after_help = concat!(
            "Examples:\n  edgeaictl bundle info edgeai-1.4.0.bundle\n  edgeaictl bundle info edgeai-1.4.0.bundle --json\n\n",
            bundle_exit_codes!()
        )
    )]
    Info {
        /// The bundle to show
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
}

/// Options of `bundle create`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("payloads").required(true).multiple(true).args(["binary", "model", "app", "config"]))]
pub struct BundleCreateArgs {
    /// The version the bundle installs (semver)
    #[arg(long, value_name = "VERSION", value_parser = parse_semver)]
    pub version: semver::Version,
    /// The device family it is for; a gateway installs it only when its own compatible string is exactly this
    #[arg(long, value_name = "STRING")]
    pub compatible: String,
    /// The oldest version a gateway may run to install this bundle
    #[arg(long, value_name = "VERSION", value_parser = parse_semver)]
    pub min_previous: Option<semver::Version>,
    /// Let the bundle replace a newer version (the installer must ask for a downgrade too)
    #[arg(long)]
    pub allow_downgrade: bool,
    /// The edgeaid executable (at most one)
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// A model file (repeatable)
    #[arg(long, value_name = "PATH")]
    pub model: Vec<PathBuf>,
    /// An app: Dify DSL YAML or JSON definition (repeatable)
    #[arg(long, value_name = "FILE")]
    pub app: Vec<PathBuf>,
    /// A config file, a conf.d fragment (repeatable)
    #[arg(long, value_name = "FILE")]
    pub config: Vec<PathBuf>,
    /// Replace OUT if it exists
    #[arg(long)]
    pub force: bool,
    /// The bundle to write
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
#[command(long_about = "Knowledge bases (Dify's datasets), over the admin socket without a dataset key.\n\n\
    DATASET is a dataset's id or its exact name; DOC is a document's id or its exact name.")]
pub enum DatasetsCommand {
    /// List the datasets
    #[command(after_help = concat!("Examples:\n  edgeaictl datasets list\n  edgeaictl datasets list --json\n\n", exit_codes!()))]
    List,

    /// Create a dataset; prints only its id on stdout
    #[command(after_help = concat!(
        "Examples:\n  DS=$(edgeaictl datasets create plant-manuals --description 'Maintenance manuals')\n  \
         edgeaictl datasets create fault-codes --economy\n\n",
        exit_codes!()
    ))]
    Create {
        /// Name (1 to 40 characters)
        #[arg(value_name = "NAME")]
        name: String,
        /// What the dataset holds (at most 400 characters)
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Keyword index only, no embeddings (searches by keyword whatever is asked)
        #[arg(long)]
        economy: bool,
    },

    /// Show a dataset: documents, words, embedding model, retrieval settings
    #[command(after_help = concat!("Example:\n  edgeaictl datasets show plant-manuals\n\n", exit_codes!()))]
    Show {
        #[arg(value_name = "DATASET")]
        dataset: String,
    },

    /// Delete a dataset with its documents and vectors
    #[command(after_help = concat!("Example:\n  edgeaictl datasets delete plant-manuals\n\n", exit_codes!()))]
    Delete {
        #[arg(value_name = "DATASET")]
        dataset: String,
    },

    /// Index every document of a dataset again with the loaded embedding model
    #[command(after_help = concat!(
        "Example:\n  edgeaictl datasets reindex plant-manuals\n\n\
         Needed after [embedding] names another model: a dataset records the model its vectors \
         come from, and its semantic search answers 409 embedding_model_mismatch until it is \
         re-indexed. The vectors are dropped and each document is indexed again from its kept \
         source, in the background (see `edgeaictl datasets docs`).\n\n",
        exit_codes!()
    ))]
    Reindex {
        #[arg(value_name = "DATASET")]
        dataset: String,
    },

    /// Upload files (txt, md, markdown, html, htm, csv, pdf) and wait until they are indexed
    #[command(
        long_about = "Upload files (txt, md, markdown, html, htm, csv, pdf) into a dataset and wait until \
            the daemon has indexed them.\n\n\
            Each DIR is walked recursively (hidden entries skipped); files of other types are \
            skipped with a note. Each file becomes one document. On a terminal a progress bar \
            shows documents and segments done; otherwise one line per event, or with --json one \
            summary at the end. Ctrl-C stops waiting and lists what is still indexing: the daemon \
            goes on indexing it. --timeout applies to each request, not to the whole ingest.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl datasets ingest configs/knowledge/plant-manuals --dataset plant-manuals --create\n  \
             edgeaictl datasets ingest sop.pdf faults.csv --dataset 1f0c2a9e-…\n  \
             edgeaictl --json datasets ingest manuals/ --dataset manuals > ingest.json\n\n\
             Exit codes besides the ones below: 1 when a document ends in `error` or an upload is \
             refused (each reason is printed), 130 when Ctrl-C stopped the wait.\n\n",
            exit_codes!()
        )
    )]
    Ingest {
        /// Files, or directories to walk
        #[arg(value_name = "DIR|FILE", required = true)]
        paths: Vec<PathBuf>,
        /// The dataset (id or exact name)
        #[arg(long, value_name = "DATASET")]
        dataset: String,
        /// Create the dataset (named DATASET) if there is none of that name
        #[arg(long)]
        create: bool,
    },

    /// List a dataset's documents: status, segments, words
    #[command(after_help = concat!("Example:\n  edgeaictl datasets docs plant-manuals\n\n", exit_codes!()))]
    Docs {
        #[arg(value_name = "DATASET")]
        dataset: String,
    },

    /// Delete one document of a dataset
    #[command(after_help = concat!("Example:\n  edgeaictl datasets rm-doc plant-manuals plc-alarms.md\n\n", exit_codes!()))]
    RmDoc {
        #[arg(value_name = "DATASET")]
        dataset: String,
        #[arg(value_name = "DOC")]
        doc: String,
    },

    /// Search a dataset: score, document and a one-line excerpt of each hit
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl datasets search plant-manuals 'how do I clear the PLC alarm'\n  \
         edgeaictl datasets search plant-manuals '变频器 过流' --method hybrid --top-k 5\n\n\
         Without --method and --top-k the dataset's own retrieval settings apply.\n\n",
        exit_codes!()
    ))]
    Search {
        #[arg(value_name = "DATASET")]
        dataset: String,
        #[arg(value_name = "QUERY")]
        query: String,
        /// How to search [default: the dataset's setting]
        #[arg(long, value_enum, value_name = "METHOD")]
        method: Option<SearchMethod>,
        /// How many hits at most, 1 to 100 [default: the dataset's setting]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
        top_k: Option<u32>,
    },
}

/// `--method` of `datasets search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchMethod {
    /// By embedding similarity
    Semantic,
    /// By the full-text index
    FullText,
    /// Both, weighted as the dataset says
    Hybrid,
}

impl SearchMethod {
    /// Dify's `search_method`.
    pub fn wire_name(self) -> &'static str {
        match self {
            SearchMethod::Semantic => "semantic_search",
            SearchMethod::FullText => "full_text_search",
            SearchMethod::Hybrid => "hybrid_search",
        }
    }
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// App id to chat with
    #[arg(value_name = "APP")]
    pub app: String,

    /// End user the conversation belongs to [default: edgeaictl-$USER]
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Ask this one question, print the answer and exit
    #[arg(long, short, value_name = "TEXT")]
    pub query: Option<String>,

    /// A value for the app's input form (repeatable); sent with the first
    /// question, the conversation keeps them
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE", value_parser = parse_input)]
    pub inputs: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workflow app id
    #[arg(value_name = "APP")]
    pub app: String,

    /// End user the run belongs to [default: edgeaictl-$USER]
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// A value of the app's start form (repeatable)
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE", value_parser = parse_input)]
    pub inputs: Vec<(String, String)>,
}

/// A positive duration in humantime's syntax (`30s`, `2m`, `1500ms`).
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Write messages or workflow runs to an Arrow IPC or Parquet file
    #[command(
        long_about = "Write messages (one row per message: its conversation's id and name, app, user, query, \
            answer, status, error, prompt/completion/total tokens, latency_ms, created_at, feedback rating and \
            content) or workflow runs (id, app, version, workflow id, user, status, error, elapsed_secs, total \
            tokens and steps, created_at, finished_at, triggered_from, conversation and message id) to FILE as \
            an Arrow IPC file or a Parquet file (Snappy), which DuckDB, Spark, pandas and polars read directly.\n\n\
            The daemon streams the rows in batches of 4096 (one Parquet row group each), so millions of rows \
            need no more memory than one batch. FILE is written through a temporary file in its directory and \
            replaced only when the export is complete; a failed export leaves nothing behind.\n\n\
            TIME is unix seconds or RFC 3339 (2024-06-01T12:00:00Z, 2024-06-01T14:00:00+02:00); both ends are \
            included. --timeout applies to each chunk of the file, not to the whole export.",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl export logs --format parquet messages.parquet\n  \
             edgeaictl export logs --table workflow-runs --app plant-faq --since 2024-06-01T00:00:00Z --format arrow runs.arrow\n  \
             edgeaictl export logs --since $(date -d yesterday +%s) --format parquet /var/lib/edgeai/export/day.parquet\n  \
             duckdb -c \"SELECT app_id, count(*), avg(latency_ms) FROM 'messages.parquet' GROUP BY 1\"\n\n",
            exit_codes!()
        )
    )]
    Logs(ExportLogsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportTable {
    Messages,
    WorkflowRuns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Arrow IPC file format (Feather v2)
    Arrow,
    /// Parquet with Snappy compression
    Parquet,
}

#[derive(Debug, Args)]
pub struct ExportLogsArgs {
    /// Only rows created at or after TIME
    #[arg(long, value_name = "TIME", value_parser = crate::export::parse_time)]
    pub since: Option<i64>,

    /// Only rows created at or before TIME
    #[arg(long, value_name = "TIME", value_parser = crate::export::parse_time)]
    pub until: Option<i64>,

    /// Only this app's rows
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,

    /// Which log to export
    #[arg(long, value_enum, value_name = "TABLE", default_value = "messages")]
    pub table: ExportTable,

    /// The file format
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: ExportFormat,

    /// The file to write (replaced only by a complete export)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a consistent snapshot while the daemon serves: database, knowledge bases, config files
    #[command(
        long_about = "Take a consistent snapshot of the daemon's state while it serves traffic, as one tar \
            archive: the database (SQLite's online backup), the knowledge bases' vector files and document \
            sources, the config files the daemon read, and manifest.json (edgeai version, schema version, \
            created_at, each member's size and sha256).\n\n\
            The archive is written to a hidden file next to FILE, checked as `backup verify` does, and only \
            then renamed over FILE: FILE is either the old file or a whole new backup. The daemon copies \
            the database and hashes every file before it sends the first byte, so this waits up to 10 \
            minutes (or --timeout, if longer) for each piece of the archive.",
        after_help = concat!("Examples:\n  edgeaictl backup create /var/backups/edgeai-$(date +%F).tar\n\n", exit_codes!())
    )]
    Create {
        /// The archive to write (replaced only by a complete, checked backup)
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Check a backup offline: manifest, every member's sha256, the database's integrity
    #[command(after_help = concat!(
        "Examples:\n  edgeaictl backup verify /var/backups/edgeai-2026-11-30.tar\n\n\
         A missing, truncated or altered archive exits 65 with the reason.\n\n",
        exit_codes!()
    ))]
    Verify {
        /// The archive to check
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Restore a backup: online with --bus (staged, applied as the daemon restarts), or offline into --state-dir
    #[command(
        long_about = "Restore a backup, online or offline.\n\n\
            Online, with --bus: the daemon (D-Bus RestoreBackup) reads FILE through a descriptor opened here, \
            checks it as `backup verify` does while it unpacks it into its state directory's restore.staged.tmp/, \
            and renames it to restore.staged/ only when all is well (a bad archive stages nothing). It then drains \
            and exits with 75, and systemd starts it again (the unit's RestartForceExitStatus=75); the start \
            swaps the staged database and knowledge bases in before the store opens, keeping the old ones in \
            restore.previous-<time>/. If the restored store does not open, the old state is put back and the \
            staged copy kept as restore.failed-<time>/. --no-restart stages it for the next start instead. The \
            config files are not restored online (the daemon cannot write /etc/edgeai): the answer lists them; \
            restore them offline.\n\n\
            Offline, with --state-dir, while the daemon is stopped: the whole archive is checked while it is \
            unpacked into DIR.restore-tmp; only then is DIR renamed to DIR.previous-<time> and DIR.restore-tmp \
            to DIR (the same for --config-dir). A bad archive, or a DIR whose database a running edgeaid holds \
            open, changes nothing. The previous state is kept: remove DIR.previous-<time> once the daemon runs \
            well. The database goes to DIR/edgeai.db and the knowledge bases to DIR/knowledge (the defaults of \
            store.path and knowledge.dir when state_dir is DIR).",
        after_help = concat!(
            "Examples:\n  \
             edgeaictl --bus system backup restore /var/backups/edgeai-2026-11-30.tar\n  \
             edgeaictl --bus system backup restore b.tar --no-restart\n\n  \
             systemctl stop edgeai\n  \
             edgeaictl backup restore /var/backups/edgeai-2026-11-30.tar --state-dir /var/lib/edgeai\n  \
             edgeaictl backup restore b.tar --state-dir /var/lib/edgeai --config-dir /etc/edgeai\n  \
             systemctl start edgeai\n\n",
            exit_codes!()
        )
    )]
    Restore {
        /// The archive to restore
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Offline: the stopped daemon's state directory to replace (required without --bus)
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Offline: also replace this directory with the backup's config files
        #[arg(long, value_name = "DIR", requires = "state_dir")]
        config_dir: Option<PathBuf>,
        /// Online (--bus): stage the restore for the daemon's next start instead of restarting it now
        #[arg(long, conflicts_with = "state_dir")]
        no_restart: bool,
    },
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (write it like 30s, 2m or 1500ms)")),
    }
}

/// `KEY=VALUE` for `--input`; the value may contain `=` and may be empty.
fn parse_input(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, _)) if k.trim().is_empty() => Err(format!("{s:?}: the KEY of KEY=VALUE is empty")),
        Some((k, v)) => Ok((k.trim().to_owned(), v.to_owned())),
        None => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Options of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check these configuration files, as `edgeaid --config` reads them (repeatable;
    /// default: the daemon's system configuration)
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
}

/// The shells `completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn chat_inputs_are_key_value_pairs() {
        let cli = Cli::try_parse_from(["edgeaictl", "chat", "s", "-i", "text=a=b", "--input", "empty="]).unwrap();
        let Command::Chat(args) = cli.command else { panic!("not chat") };
        assert_eq!(args.inputs, vec![("text".to_owned(), "a=b".to_owned()), ("empty".to_owned(), String::new())]);
        for bad in ["novalue", "=v", " =v"] {
            let err = Cli::try_parse_from(["edgeaictl", "chat", "s", "--input", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_about_and_example() {
        fn walk(cmd: &clap::Command, path: &str) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let name = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{name} has no about");
                if sub.has_subcommands() {
                    walk(sub, &name);
                } else {
                    let after = sub.get_after_help().map(|s| s.to_string()).unwrap_or_default();
                    assert!(after.contains("Example") && after.contains("Exit codes"), "{name}: {after}");
                }
            }
        }
        walk(&Cli::command(), "edgeaictl");
    }

    #[test]
    fn parses_globals_after_the_subcommand() {
        let cli = Cli::try_parse_from(["edgeaictl", "keys", "list", "--app", "demo", "--json", "--socket", "/s"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket, Some(PathBuf::from("/s")));
        assert!(matches!(cli.command, Command::Keys(KeysCommand::List { app: Some(ref a) }) if a == "demo"));
    }

    #[test]
    fn timeout_takes_human_durations() {
        let cli = Cli::try_parse_from(["edgeaictl", "status"]).unwrap();
        assert_eq!(cli.timeout, Duration::from_secs(30));
        let cli = Cli::try_parse_from(["edgeaictl", "status", "--timeout", "1500ms"]).unwrap();
        assert_eq!(cli.timeout, Duration::from_millis(1500));
        for bad in ["0s", "30", "soon", ""] {
            let err = Cli::try_parse_from(["edgeaictl", "--timeout", bad, "status"]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }

    #[test]
    fn cache_commands_parse() {
        let cli = Cli::try_parse_from(["edgeaictl", "cache", "stats", "--json"]).unwrap();
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Cache(CacheCommand::Stats)));
        let cli = Cli::try_parse_from(["edgeaictl", "cache", "flush", "--app", "demo"]).unwrap();
        assert!(matches!(cli.command, Command::Cache(CacheCommand::Flush { app: Some(ref a) }) if a == "demo"));
        let cli = Cli::try_parse_from(["edgeaictl", "cache", "flush"]).unwrap();
        assert!(matches!(cli.command, Command::Cache(CacheCommand::Flush { app: None })));
    }

    #[test]
    fn keys_create_takes_an_app_or_dataset() {
        let cli = Cli::try_parse_from(["edgeaictl", "keys", "create", "--dataset"]).unwrap();
        assert!(matches!(cli.command, Command::Keys(KeysCommand::Create { app: None, dataset: true })));
        let cli = Cli::try_parse_from(["edgeaictl", "keys", "create", "--app", "demo"]).unwrap();
        assert!(matches!(cli.command, Command::Keys(KeysCommand::Create { app: Some(ref a), dataset: false }) if a == "demo"));
        let err = Cli::try_parse_from(["edgeaictl", "keys", "create", "--app", "demo", "--dataset"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn datasets_subcommands_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["edgeaictl", "datasets"], args].concat()).map(|c| c.command);
        let ingest = parse(&["ingest", "a", "b.md", "--dataset", "manuals", "--create"]).unwrap();
        assert!(matches!(ingest, Command::Datasets(DatasetsCommand::Ingest { ref paths, ref dataset, create: true })
            if paths == &[PathBuf::from("a"), PathBuf::from("b.md")] && dataset == "manuals"));
        // Files and --dataset are required.
        assert_eq!(parse(&["ingest", "--dataset", "m"]).unwrap_err().exit_code(), 2);
        assert_eq!(parse(&["ingest", "dir"]).unwrap_err().exit_code(), 2);

        let search = parse(&["search", "m", "how do I clear it", "--method", "full-text", "--top-k", "7"]).unwrap();
        assert!(matches!(search, Command::Datasets(DatasetsCommand::Search { method: Some(SearchMethod::FullText), top_k: Some(7), .. })));
        assert_eq!(SearchMethod::FullText.wire_name(), "full_text_search");
        for bad in
            [&["search", "m", "q", "--method", "fuzzy"][..], &["search", "m", "q", "--top-k", "0"], &["search", "m", "q", "--top-k", "101"]]
        {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        let create = parse(&["create", "fault codes", "--economy", "--description", "d"]).unwrap();
        assert!(
            matches!(create, Command::Datasets(DatasetsCommand::Create { ref name, economy: true, description: Some(_) }) if name == "fault codes")
        );
        let rm = parse(&["rm-doc", "m", "plc-alarms.md"]).unwrap();
        assert!(matches!(rm, Command::Datasets(DatasetsCommand::RmDoc { ref doc, .. }) if doc == "plc-alarms.md"));
        let list = Cli::try_parse_from(["edgeaictl", "datasets", "list", "--json"]).unwrap();
        assert!(list.json && matches!(list.command, Command::Datasets(DatasetsCommand::List)));
    }

    #[test]
    fn doctor_completions_and_man_parse() {
        let cli = Cli::try_parse_from(["edgeaictl", "doctor", "--config", "a.toml", "--config", "b.toml", "--json"]).unwrap();
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Doctor(ref a) if a.configs == [PathBuf::from("a.toml"), PathBuf::from("b.toml")]));
        let cli = Cli::try_parse_from(["edgeaictl", "completions", "zsh"]).unwrap();
        assert!(matches!(cli.command, Command::Completions { shell: CompletionShell::Zsh }));
        assert_eq!(Cli::try_parse_from(["edgeaictl", "completions", "tcsh"]).unwrap_err().exit_code(), 2);
        let cli = Cli::try_parse_from(["edgeaictl", "man", "--dir", "out"]).unwrap();
        assert!(matches!(cli.command, Command::Man { ref dir } if dir == &PathBuf::from("out")));
        assert_eq!(Cli::try_parse_from(["edgeaictl", "man"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn export_logs_parses_its_options() {
        let cli = Cli::try_parse_from([
            "edgeaictl",
            "export",
            "logs",
            "--table",
            "workflow-runs",
            "--format",
            "arrow",
            "--since",
            "2024-06-01T12:00:00Z",
            "--until",
            "1717243260",
            "--app",
            "demo",
            "out.arrow",
        ])
        .unwrap();
        let Command::Export(ExportCommand::Logs(a)) = cli.command else { panic!("not export logs") };
        assert_eq!((a.table, a.format), (ExportTable::WorkflowRuns, ExportFormat::Arrow));
        assert_eq!((a.since, a.until, a.app.as_deref()), (Some(1_717_243_200), Some(1_717_243_260), Some("demo")));
        let parse = |args: &[&str]| Cli::try_parse_from([&["edgeaictl", "export", "logs"], args].concat()).map(|c| c.command);
        assert!(matches!(
            parse(&["--format", "parquet", "f"]).unwrap(),
            Command::Export(ExportCommand::Logs(ExportLogsArgs { table: ExportTable::Messages, .. }))
        ));
        for bad in [
            &["f"][..],
            &["--format", "csv", "f"],
            &["--format", "arrow", "--table", "conversations", "f"],
            &["--format", "arrow", "--since", "yesterday", "f"],
            &["--format", "arrow"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn usage_errors() {
        let err = Cli::try_parse_from(["edgeaictl", "keys", "create"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["edgeaictl", "frobnicate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
