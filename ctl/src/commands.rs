//! The non-interactive subcommands: `status`, `apps list|import|versions|activate|export`,
//! `keys create|list|revoke`, `cache stats|flush`. Each fetches, then prints a table or, with
//! `--json`, the daemon's JSON as received.
//!
//! Owns: what goes to stdout and stderr for these commands.
//! Must not: choose exit codes (see [`crate::error`]) or know HTTP details.

use crate::error::CtlError;
use crate::{paths, render};
use edgeai_common::admin::{
    ActivateRequest, AppInfo, AppList, AppVersionList, CacheFlushResponse, CacheStats, CreateKeyRequest, CreatedKey, ExportResponse,
    ImportDslRequest, ImportDslResponse, KeyKind, KeyList, StatusResponse,
};
use edgeai_common::UnixClient;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

pub async fn status(client: &UnixClient, json: bool) -> Result<(), CtlError> {
    if json {
        return print_json(&client.get::<Value>(&paths::status()).await?);
    }
    let status: StatusResponse = client.get(&paths::status()).await?;
    print(&render::status(&status))
}

pub async fn apps_list(client: &UnixClient, json: bool) -> Result<(), CtlError> {
    if json {
        return print_json(&client.get::<Value>(&paths::apps()).await?);
    }
    let apps: AppList = client.get(&paths::apps()).await?;
    print(&render::apps(&apps))
}

pub async fn apps_import(
    client: &UnixClient,
    file: &Path,
    name: Option<String>,
    id: Option<String>,
    datasets: Vec<(String, String)>,
    json: bool,
) -> Result<(), CtlError> {
    if is_dsl(file) {
        return import_dsl(client, file, ImportDslRequest { yaml: String::new(), id, name, datasets }, json).await;
    }
    if name.is_some() || id.is_some() || !datasets.is_empty() {
        return Err(CtlError::DslOnlyOption { path: file.to_owned() });
    }
    let definition = read_definition(file).await?;
    if json {
        let (_, answer) = client.post_json_with_status::<_, Value>(&paths::apps(), &definition).await?;
        return print_json(&answer);
    }
    let (status, app) = client.post_json_with_status::<_, AppInfo>(&paths::apps(), &definition).await?;
    if status.as_u16() == 200 {
        print(&format!("{} unchanged (version {})\n", app.id, app.version))
    } else {
        print(&format!("imported {} version {}\n", app.id, app.version))
    }
}

/// A Dify DSL export, by its extension.
fn is_dsl(file: &Path) -> bool {
    matches!(file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(), Some("yml" | "yaml"))
}

/// Imports a DSL file; `request` carries the options, its `yaml` is read here.
async fn import_dsl(client: &UnixClient, file: &Path, mut request: ImportDslRequest, json: bool) -> Result<(), CtlError> {
    let bytes = tokio::fs::read(file).await.map_err(|source| CtlError::ReadInput { path: file.to_owned(), source })?;
    request.yaml = String::from_utf8(bytes).map_err(|_| CtlError::InputNotUtf8 { path: file.to_owned() })?;
    if json {
        let (_, answer) = client.post_json_with_status::<_, Value>(&paths::import_dsl(), &request).await?;
        return print_json(&answer);
    }
    let (status, r) = client.post_json_with_status::<_, ImportDslResponse>(&paths::import_dsl(), &request).await?;
    let verb = if status.as_u16() == 200 { "unchanged" } else { "imported" };
    let mut out = format!("{verb} {} ({:?}, {}) version {}\n", r.app.id, r.app.name, r.app.mode, r.app.version);
    for m in &r.models {
        out.push_str(&format!("  node {} ({:?}): {}/{} -> {} ({})\n", m.node_id, m.node_title, m.provider, m.name, m.target, m.rule));
    }
    print(&out)
}

pub async fn apps_versions(client: &UnixClient, app: &str, json: bool) -> Result<(), CtlError> {
    if json {
        return print_json(&client.get::<Value>(&paths::app_versions(app)).await?);
    }
    let list: AppVersionList = client.get(&paths::app_versions(app)).await?;
    print(&render::versions(&list))
}

pub async fn apps_activate(client: &UnixClient, app: &str, version: u32, json: bool) -> Result<(), CtlError> {
    let request = ActivateRequest { version };
    if json {
        return print_json(&client.post_json::<_, Value>(&paths::activate(app), &request).await?);
    }
    let info: AppInfo = client.post_json(&paths::activate(app), &request).await?;
    print(&format!("{} now serves version {}\n", info.id, info.version))
}

pub async fn apps_export(client: &UnixClient, app: &str, version: Option<u32>, output: Option<&Path>, json: bool) -> Result<(), CtlError> {
    if json {
        return print_json(&client.get::<Value>(&paths::export(app, version)).await?);
    }
    let e: ExportResponse = client.get(&paths::export(app, version)).await?;
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
pub async fn keys_create(client: &UnixClient, app: Option<String>, dataset: bool, json: bool) -> Result<(), CtlError> {
    let request = CreateKeyRequest { app, dataset };
    if json {
        return print_json(&client.post_json::<_, Value>(&paths::keys(None), &request).await?);
    }
    let created: CreatedKey = client.post_json(&paths::keys(None), &request).await?;
    match created.kind {
        KeyKind::App => eprintln!("created key {} for app {}; it is shown only this once", created.id, created.app_id),
        KeyKind::Dataset => eprintln!("created dataset key {} for the Knowledge API; it is shown only this once", created.id),
    }
    print(&format!("{}\n", created.key))
}

pub async fn keys_list(client: &UnixClient, app: Option<&str>, json: bool) -> Result<(), CtlError> {
    if json {
        return print_json(&client.get::<Value>(&paths::keys(app)).await?);
    }
    let keys: KeyList = client.get(&paths::keys(app)).await?;
    print(&render::keys(&keys))
}

/// Prints a confirmation; with `--json` nothing, as the daemon answers 204.
pub async fn keys_revoke(client: &UnixClient, id: &str, json: bool) -> Result<(), CtlError> {
    client.delete(&paths::key(id)).await?;
    if json {
        return Ok(());
    }
    print(&format!("revoked key {id}\n"))
}

pub async fn cache_stats(client: &UnixClient, json: bool) -> Result<(), CtlError> {
    if json {
        return print_json(&client.get::<Value>(&paths::cache(None)).await?);
    }
    let stats: CacheStats = client.get(&paths::cache(None)).await?;
    print(&render::cache(&stats))
}

pub async fn cache_flush(client: &UnixClient, app: Option<&str>, json: bool) -> Result<(), CtlError> {
    if json {
        return print_json(&client.delete_json::<Value>(&paths::cache(app)).await?);
    }
    let r: CacheFlushResponse = client.delete_json(&paths::cache(app)).await?;
    match &r.app {
        Some(a) => print(&format!("flushed {} cached answers of {a}\n", r.flushed)),
        None => print(&format!("flushed {} cached answers\n", r.flushed)),
    }
}

/// Writes and flushes stdout (chat streams tokens through this).
pub fn print(text: &str) -> Result<(), CtlError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|source| CtlError::Stdout { source })
}

fn print_json(value: &Value) -> Result<(), CtlError> {
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
