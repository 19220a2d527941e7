//! The non-interactive control subcommands: `status`, `apps list|import|versions|activate|export`,
//! `keys create|list|revoke`, `cache stats|flush`, `models list`, `reload`, `watch`, and `run` (a
//! workflow app, always over the socket). Each asks the daemon
//! through [`Control`] (the socket, or D-Bus with `--bus`), then prints a table or, with `--json`,
//! the daemon's answer as JSON.
//!
//! Owns: what goes to stdout and stderr for these commands.
//! Must not: choose exit codes (see [`crate::error`]) or know HTTP details.

use crate::control::{Control, Import};
use crate::error::CtlError;
use crate::render;
use edgeai_common::admin::{
    AppInfo, AppList, AppVersionList, CacheFlushResponse, CacheStats, CreateKeyRequest, CreatedKey, ExportResponse, ImportDslRequest,
    ImportDslResponse, KeyKind, KeyList, ModelLifecycleResponse, ModelList, ReloadResponse, StatusResponse,
};
use edgeai_common::UnixClient;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

pub async fn status(control: &Control, json: bool) -> Result<(), CtlError> {
    let answer = control.status().await?;
    if json {
        return print_json(&answer);
    }
    print(&render::status(&decode::<StatusResponse>(answer, "status")?))
}

pub async fn apps_list(control: &Control, json: bool) -> Result<(), CtlError> {
    let answer = control.apps().await?;
    if json {
        return print_json(&answer);
    }
    print(&render::apps(&decode::<AppList>(answer, "apps list")?))
}

pub async fn apps_import(
    control: &Control,
    file: &Path,
    name: Option<String>,
    id: Option<String>,
    datasets: Vec<(String, String)>,
    json: bool,
) -> Result<(), CtlError> {
    if is_dsl(file) {
        let mut request = ImportDslRequest { yaml: String::new(), id, name, datasets };
        if matches!(control, Control::Socket(_)) {
            let bytes = tokio::fs::read(file).await.map_err(|source| CtlError::ReadInput { path: file.to_owned(), source })?;
            request.yaml = String::from_utf8(bytes).map_err(|_| CtlError::InputNotUtf8 { path: file.to_owned() })?;
        }
        let (created, answer) = control.import(Import { file, dsl: Some(request), definition: None }).await?;
        if json {
            return print_json(&answer);
        }
        let r: ImportDslResponse = decode(answer, "apps import")?;
        let verb = if created { "imported" } else { "unchanged" };
        let mut out = format!("{verb} {} ({:?}, {}) version {}\n", r.app.id, r.app.name, r.app.mode, r.app.version);
        for m in &r.models {
            out.push_str(&format!("  node {} ({:?}): {}/{} -> {} ({})\n", m.node_id, m.node_title, m.provider, m.name, m.target, m.rule));
        }
        return print(&out);
    }
    if name.is_some() || id.is_some() || !datasets.is_empty() {
        return Err(CtlError::DslOnlyOption { path: file.to_owned() });
    }
    // Checked here for either transport, so a bad file fails the same way (exit 65).
    let definition = read_definition(file).await?;
    let (created, answer) = control.import(Import { file, dsl: None, definition: Some(definition) }).await?;
    if json {
        return print_json(&answer);
    }
    let app: AppInfo = decode(answer, "apps import")?;
    if created {
        print(&format!("imported {} version {}\n", app.id, app.version))
    } else {
        print(&format!("{} unchanged (version {})\n", app.id, app.version))
    }
}

/// A Dify DSL export, by its extension.
fn is_dsl(file: &Path) -> bool {
    matches!(file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(), Some("yml" | "yaml"))
}

pub async fn apps_versions(control: &Control, app: &str, json: bool) -> Result<(), CtlError> {
    let answer = control.versions(app).await?;
    if json {
        return print_json(&answer);
    }
    print(&render::versions(&decode::<AppVersionList>(answer, "apps versions")?))
}

pub async fn apps_activate(control: &Control, app: &str, version: u32, json: bool) -> Result<(), CtlError> {
    let answer = control.activate(app, version).await?;
    if json {
        return print_json(&answer);
    }
    let info: AppInfo = decode(answer, "apps activate")?;
    print(&format!("{} now serves version {}\n", info.id, info.version))
}

pub async fn apps_export(control: &Control, app: &str, version: Option<u32>, output: Option<&Path>, json: bool) -> Result<(), CtlError> {
    let answer = control.export(app, version).await?;
    if json {
        return print_json(&answer);
    }
    let e: ExportResponse = decode(answer, "apps export")?;
    match output {
        None => print(&e.yaml),
        Some(path) => {
            tokio::fs::write(path, e.yaml.as_bytes()).await.map_err(|source| CtlError::WriteOutput { path: path.to_owned(), source })?;
            eprintln!("wrote {} version {} to {}", e.app_id, e.version, path.display());
            Ok(())
        }
    }
}

/// The file's JSON object; the daemon validates its fields.
async fn read_definition(file: &Path) -> Result<Value, CtlError> {
    let bytes = tokio::fs::read(file).await.map_err(|source| CtlError::ReadInput { path: file.to_owned(), source })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|source| CtlError::ParseInput { path: file.to_owned(), source })?;
    let found = match &value {
        Value::Object(_) => return Ok(value),
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    };
    Err(CtlError::InputNotObject { path: file.to_owned(), found })
}

/// An app key (`app`) or a Knowledge API key (`dataset`); clap lets only one through.
pub async fn keys_create(control: &Control, app: Option<String>, dataset: bool, json: bool) -> Result<(), CtlError> {
    let answer = control.create_key(CreateKeyRequest { app, dataset }).await?;
    if json {
        return print_json(&answer);
    }
    let created: CreatedKey = decode(answer, "keys create")?;
    match created.kind {
        KeyKind::App => eprintln!("created key {} for app {}; it is shown only this once", created.id, created.app_id),
        KeyKind::Dataset => eprintln!("created dataset key {} for the Knowledge API; it is shown only this once", created.id),
    }
    print(&format!("{}\n", created.key))
}

pub async fn keys_list(control: &Control, app: Option<&str>, json: bool) -> Result<(), CtlError> {
    let answer = control.keys(app).await?;
    if json {
        return print_json(&answer);
    }
    print(&render::keys(&decode::<KeyList>(answer, "keys list")?))
}

/// Prints a confirmation; with `--json` nothing, as the daemon answers 204.
pub async fn keys_revoke(control: &Control, id: &str, json: bool) -> Result<(), CtlError> {
    control.revoke_key(id).await?;
    if json {
        return Ok(());
    }
    print(&format!("revoked key {id}\n"))
}

pub async fn cache_stats(control: &Control, json: bool) -> Result<(), CtlError> {
    let answer = control.cache_stats().await?;
    if json {
        return print_json(&answer);
    }
    print(&render::cache(&decode::<CacheStats>(answer, "cache stats")?))
}

pub async fn cache_flush(control: &Control, app: Option<&str>, json: bool) -> Result<(), CtlError> {
    let answer = control.flush_cache(app).await?;
    if json {
        return print_json(&answer);
    }
    let r: CacheFlushResponse = decode(answer, "cache flush")?;
    match &r.app {
        Some(a) => print(&format!("flushed {} cached answers of {a}\n", r.flushed)),
        None => print(&format!("flushed {} cached answers\n", r.flushed)),
    }
}

pub async fn models_list(control: &Control, json: bool) -> Result<(), CtlError> {
    let answer = control.models().await?;
    if json {
        return print_json(&answer);
    }
    let list: ModelList = decode(answer, "models list")?;
    print(&render::models(&list))
}

/// `models load` and `models unload` wait at least this long: a load from
/// slow storage, or generations finishing before an unload, outlast `--timeout`'s default.
const MODEL_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

pub async fn models_load(control: &Control, timeout: std::time::Duration, name: Option<&str>, json: bool) -> Result<(), CtlError> {
    let answer = control.load_model(name.unwrap_or(""), timeout.max(MODEL_WAIT)).await?;
    if json {
        return print_json(&answer);
    }
    let r: ModelLifecycleResponse = decode(answer, "models load")?;
    match (r.already, r.load_ms) {
        (true, _) => print(&format!("{} is loaded already ({})\n", r.name, r.state)),
        (false, Some(ms)) => print(&format!("{} loaded in {:.1} s ({})\n", r.name, ms as f64 / 1000.0, r.state)),
        (false, None) => print(&format!("{} {}\n", r.name, r.state)),
    }
}

pub async fn models_unload(control: &Control, timeout: std::time::Duration, name: Option<&str>, json: bool) -> Result<(), CtlError> {
    let answer = control.unload_model(name.unwrap_or(""), timeout.max(MODEL_WAIT)).await?;
    if json {
        return print_json(&answer);
    }
    let r: ModelLifecycleResponse = decode(answer, "models unload")?;
    let line = match (r.already, r.state.as_str(), r.rss_freed_bytes) {
        (true, state, _) => format!("{} is {state} already\n", r.name),
        (false, "unloading", _) => format!("{} is unloading: generations still run; it unloads when they end\n", r.name),
        (false, state, Some(freed)) => format!("{} {state}; {} MiB of memory freed\n", r.name, freed >> 20),
        (false, state, None) => format!("{} {state}\n", r.name),
    };
    print(&line)
}

pub async fn reload(control: &Control, json: bool) -> Result<(), CtlError> {
    let answer = control.reload().await?;
    if json {
        return print_json(&answer);
    }
    let r: ReloadResponse = decode(answer, "reload")?;
    print(&format!("configuration reloaded: {} apps updated, {} served\n", r.apps_updated, r.apps_served))
}

/// Prints the state, then every StateChanged signal, until `count` changes
/// (or forever); D-Bus only.
pub async fn watch(control: &Control, count: Option<u32>, json: bool) -> Result<(), CtlError> {
    let Control::Bus(bus) = control else { return Err(CtlError::NeedsBus { command: "watch" }) };
    // Subscribe first, so no change between the read and the subscription is lost.
    let mut changes = bus.signals("StateChanged").await?;
    let state = bus.property("State").await?;
    let text = bus.property("StatusText").await?;
    let line = |state: &Value, text: &Value| {
        if json {
            format!("{}\n", serde_json::json!({"state": state, "status_text": text}))
        } else {
            format!("{}\t{}\n", state.as_str().unwrap_or("?"), text.as_str().unwrap_or(""))
        }
    };
    print(&line(&state, &text))?;
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let Some(signal) = futures_util::StreamExt::next(&mut changes).await else { break };
        let (state, text): (String, String) = signal
            .body()
            .deserialize()
            .map_err(|source| CtlError::from(edgeai_common::dbus::BusError::Decode { method: "StateChanged".into(), source }))?;
        print(&line(&Value::String(state), &Value::String(text)))?;
        seen += 1;
    }
    Ok(())
}

/// `edgeaictl run`: one blocking workflow run through the admin socket.
pub async fn run_workflow(client: &UnixClient, app: &str, user: String, inputs: Vec<(String, String)>, json: bool) -> Result<(), CtlError> {
    // A value that parses as JSON is sent as that (numbers, booleans, lists); anything else as text.
    let inputs: serde_json::Map<String, Value> =
        inputs.into_iter().map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v)))).collect();
    let body = serde_json::json!({"inputs": inputs, "response_mode": "blocking", "user": user});
    let answer: Value = client.post_json(&crate::paths::workflow_run(app), &body).await?;
    let data = answer.get("data").cloned().unwrap_or(Value::Null);
    let status = data.get("status").and_then(Value::as_str).unwrap_or("").to_owned();
    if json {
        print_json(&answer)?;
    } else if status == "succeeded" {
        print_json(data.get("outputs").unwrap_or(&Value::Null))?;
    }
    match status.as_str() {
        "succeeded" => Ok(()),
        _ => Err(CtlError::RunFailed {
            app: app.to_owned(),
            status,
            error: data.get("error").and_then(Value::as_str).unwrap_or("").to_owned(),
        }),
    }
}

/// The daemon's answer as a wire type; a mismatch is the daemon's fault, not the input's.
fn decode<T: serde::de::DeserializeOwned>(answer: Value, command: &str) -> Result<T, CtlError> {
    serde_json::from_value(answer).map_err(|source| CtlError::Answer { command: command.to_owned(), source })
}

/// Writes and flushes stdout (chat streams tokens through this).
pub fn print(text: &str) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|source| CtlError::Stdout { source })
}

pub fn print_json(value: &Value) -> Result<(), CtlError> {
    print(&format!("{value:#}\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[tokio::test]
    async fn definition_file_errors_are_specific() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        assert!(matches!(read_definition(&missing).await, Err(CtlError::ReadInput { .. })));
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"id\": ").unwrap();
        assert!(matches!(read_definition(&broken).await, Err(CtlError::ParseInput { .. })));
        let array = dir.path().join("array.json");
        std::fs::write(&array, "[1]").unwrap();
        assert!(matches!(read_definition(&array).await, Err(CtlError::InputNotObject { found: "an array", .. })));
        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"id":"demo","name":"Demo","mode":"chat"}"#).unwrap();
        assert_eq!(read_definition(&good).await.unwrap()["id"], "demo");
    }
}
