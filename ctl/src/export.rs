//! `edgeaictl export logs`: downloads the daemon's log export (messages or
//! workflow runs as Arrow IPC or Parquet) into a file.
//!
//! Owns: TIME parsing (RFC 3339 or unix seconds), the export's request
//! target, and writing the file safely: the bytes go to a temporary file in
//! FILE's directory, which is renamed over FILE only once the daemon's
//! trailer says the export is complete; on any failure (daemon error, cut
//! stream, full disk, Ctrl-C) the temporary file is removed, so FILE is
//! either the old file or a whole new one.
//! Must not: decode Arrow or Parquet (the daemon's job).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use edgeai_common::dbus::{self, BusClient};
use edgeai_common::UnixClient;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use zbus::zvariant::Value as DValue;

use crate::cli::{ExportFormat, ExportLogsArgs, ExportTable};
use crate::control::Control;
use crate::error::{CtlError, EX_CANTCREAT, EX_FAILURE, EX_INTERRUPTED};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the export to {}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the export to {} broke off: {reason}; nothing was written to it", path.display())]
    Incomplete { path: PathBuf, reason: String },
    #[error("stopped on Ctrl-C; nothing was written to {}", path.display())]
    Interrupted { path: PathBuf },
}

impl ExportError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ExportError::Write { .. } => EX_CANTCREAT,
            ExportError::Incomplete { .. } => EX_FAILURE,
            ExportError::Interrupted { .. } => EX_INTERRUPTED,
        }
    }
}

/// TIME of `--since`/`--until`: unix seconds (`1717243200`) or RFC 3339
/// (`2024-06-01T12:00:00Z`, `2024-06-01T14:00:00+02:00`, fractions dropped).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| format!("{s:?} is too large for unix seconds"));
    }
    let bad = || format!("{s:?} is neither unix seconds nor an RFC 3339 time like 2024-06-01T12:00:00Z or 2024-06-01T14:00:00+02:00");
    let (local, offset_secs) = match s.strip_suffix(['Z', 'z']) {
        Some(local) => (local, 0),
        None => {
            let split = s.len().checked_sub(6).filter(|&i| s.is_char_boundary(i)).ok_or_else(bad)?;
            let (local, offset) = s.split_at(split);
            (local, parse_offset(offset).ok_or_else(bad)?)
        }
    };
    // humantime wants `T` or a space, whole seconds or a fraction, and no zone.
    let at = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
    let secs = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).map_err(|_| bad())?,
        Err(_) => return Err(bad()),
    };
    Ok(secs - offset_secs)
}

/// `+HH:MM` / `-HH:MM` as seconds east of UTC.
fn parse_offset(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if b.len() != 6 || b[3] != b':' || !b[1..3].iter().chain(&b[4..6]).all(u8::is_ascii_digit) {
        return None;
    }
    let hours: i64 = s[1..3].parse().ok()?;
    let minutes: i64 = s[4..6].parse().ok()?;
    (hours < 24 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
}

fn table_name(t: ExportTable) -> &'static str {
    match t {
        ExportTable::Messages => "messages",
        ExportTable::WorkflowRuns => "workflow-runs",
    }
}

fn format_name(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Arrow => "arrow",
        ExportFormat::Parquet => "parquet",
    }
}

/// The request target of `args`.
pub fn target(args: &ExportLogsArgs) -> String {
    let mut query = vec![("table", table_name(args.table).to_owned()), ("format", format_name(args.format).to_owned())];
    query.extend(args.since.map(|s| ("since", s.to_string())));
    query.extend(args.until.map(|u| ("until", u.to_string())));
    query.extend(args.app.clone().map(|a| ("app", a)));
    crate::paths::export_logs(&query)
}

/// `FILE`'s temporary sibling: hidden, and named after this process.
pub(crate) fn temp_path(file: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(file.file_name().unwrap_or("export".as_ref()));
    name.push(format!(".{}.partial", std::process::id()));
    file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(name)
}

pub async fn logs(control: &Control, args: &ExportLogsArgs, json: bool) -> Result<(), CtlError> {
    let file = args.file.as_path();
    let tmp = temp_path(file);
    let write_err = |source| CtlError::from(ExportError::Write { path: file.to_owned(), source });
    let mut out = tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).await.map_err(write_err)?;
    let copied = tokio::select! {
        copied = async {
            match control {
                Control::Socket(client) => copy(client, args, &mut out).await,
                Control::Bus(bus) => copy_over_bus(bus, args, &out).await,
            }
        } => copied,
        _ = tokio::signal::ctrl_c() => Err(ExportError::Interrupted { path: file.to_owned() }.into()),
    };
    let finished = match copied {
        Ok(done) => out.sync_all().await.map_err(write_err).map(|()| done),
        Err(e) => Err(e),
    };
    drop(out);
    let placed = match finished {
        Ok(done) => tokio::fs::rename(&tmp, file).await.map_err(write_err).map(|()| done),
        Err(e) => Err(e),
    };
    let (rows, bytes) = match placed {
        Ok(done) => done,
        Err(e) => {
            // Nothing of a failed export stays behind.
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    let (table, format) = (table_name(args.table), format_name(args.format));
    if json {
        let v = json!({"file": file.display().to_string(), "table": table, "format": format, "rows": rows, "bytes": bytes});
        return crate::commands::print(&format!("{v}\n"));
    }
    crate::commands::print(&format!("wrote {rows} {table} rows ({bytes} bytes of {format}) to {}\n", file.display()))
}

/// Streams the export into `out`; (rows, bytes) once the daemon said it is complete.
async fn copy(client: &UnixClient, args: &ExportLogsArgs, out: &mut tokio::fs::File) -> Result<(u64, u64), CtlError> {
    let file = args.file.as_path();
    let mut download = client.download(&target(args)).await?;
    let mut bytes = 0u64;
    while let Some(chunk) = download.next_chunk().await? {
        out.write_all(&chunk).await.map_err(|source| ExportError::Write { path: file.to_owned(), source })?;
        bytes += chunk.len() as u64;
    }
    let incomplete = |reason: String| ExportError::Incomplete { path: file.to_owned(), reason };
    match download.trailer("x-edgeai-export") {
        Some("complete") => {}
        Some(_) => {
            let why = download.trailer("x-edgeai-export-error").unwrap_or("the daemon gave no reason; see its log");
            return Err(incomplete(why.to_owned()).into());
        }
        None => return Err(incomplete("the daemon ended the file without saying it is complete".into()).into()),
    }
    let rows = download.trailer("x-edgeai-export-rows").and_then(|r| r.parse().ok()).unwrap_or(0);
    Ok((rows, bytes))
}

/// D-Bus `ExportLogs`: the daemon writes into our temporary file through a
/// descriptor; (rows, bytes) once it answered.
async fn copy_over_bus(bus: &BusClient, args: &ExportLogsArgs, out: &tokio::fs::File) -> Result<(u64, u64), CtlError> {
    let file = args.file.as_path();
    let write_err = |source| CtlError::from(ExportError::Write { path: file.to_owned(), source });
    let fd = out.try_clone().await.map_err(write_err)?.into_std().await;
    let mut options: dbus::Options<'_> = std::collections::HashMap::new();
    options.insert("format", DValue::from(format_name(args.format)));
    options.insert("table", DValue::from(table_name(args.table)));
    if let Some(app) = &args.app {
        options.insert("app", DValue::from(app.as_str()));
    }
    if let Some(since) = args.since {
        options.insert("since", DValue::from(since));
    }
    if let Some(until) = args.until {
        options.insert("until", DValue::from(until));
    }
    let answer = bus.call("ExportLogs", &(dbus::fd(&fd), options)).await?;
    let rows = answer.get("rows").and_then(serde_json::Value::as_u64).unwrap_or(0);
    let bytes = fd.metadata().map_err(write_err)?.len();
    Ok((rows, bytes))
}

impl From<ExportError> for CtlError {
    fn from(e: ExportError) -> Self {
        CtlError::Export(e)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (style.md)
mod tests {
    use super::*;

    #[test]
    fn times_are_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1717243200"), Ok(1_717_243_200));
        assert_eq!(parse_time("2024-06-01T12:00:00Z"), Ok(1_717_243_200));
        assert_eq!(parse_time("2024-06-01T12:00:00.750Z"), Ok(1_717_243_200));
        assert_eq!(parse_time("2024-06-01T14:00:00+02:00"), Ok(1_717_243_200));
        assert_eq!(parse_time("2024-06-01T10:30:00-01:30"), Ok(1_717_243_200));
        assert_eq!(parse_time("2024-06-01 12:00:00z"), Ok(1_717_243_200));
        for bad in ["", "yesterday", "2024-06-01", "2024-13-01T00:00:00Z", "2024-06-01T12:00:00", "2024-06-01T12:00:00+2:00", "-5", "1e9"] {
            assert!(parse_time(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn temp_file_is_a_hidden_sibling() {
        let t = temp_path(Path::new("/var/tmp/logs.parquet"));
        assert_eq!(t.parent(), Some(Path::new("/var/tmp")));
        assert!(t.file_name().unwrap().to_string_lossy().starts_with(".logs.parquet."));
        assert_eq!(temp_path(Path::new("x.arrow")).parent(), Some(Path::new(".")));
    }
}
