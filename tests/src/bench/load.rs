//! Load generators run as separate processes on the same cores as the
//! server they load: `wrk` over TCP (a Lua script generated per request
//! shape, whose `done` hook prints the figures as one JSON line), and the
//! `uds-load` bin (tests/src/bin/uds-load.rs) over edgeaid's unix socket,
//! which wrk cannot reach. Both send one fixed request ([`Load`]) over
//! keep-alive connections for a fixed time; a process's RSS is sampled
//! while they run.
//! Owns the generator processes it starts; knows nothing of the servers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use super::daemon::Rss;

/// One request, repeated: what a phase measures. A new phase (a cache hit:
/// `POST /v1/chat-messages` with the same deterministic body) is one more
/// `Load` handed to the same runners.
#[derive(Debug, Clone)]
pub struct Load {
    pub method: &'static str,
    pub path: String,
    pub body: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Load {
    pub fn get(path: &str) -> Load {
        Load { method: "GET", path: path.to_owned(), body: None, headers: Vec::new() }
    }

    /// An authenticated request (`Authorization: Bearer KEY`).
    pub fn authed(mut self, key: &str) -> Load {
        self.headers.push(("Authorization".into(), format!("Bearer {key}")));
        self
    }

    /// POST of a JSON body.
    pub fn post_json(path: &str, body: &Value) -> Load {
        Load {
            method: "POST",
            path: path.to_owned(),
            body: Some(body.to_string()),
            headers: vec![("Content-Type".into(), "application/json".into())],
        }
    }
}

/// What one generator run measured (client side).
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub requests: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Responses that were not 2xx/3xx, plus socket errors.
    pub errors: u64,
    /// The server's RSS: the largest sample while the load ran.
    pub rss_under_load: Option<Rss>,
}

impl Figures {
    pub fn per_sec(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// Lua string literal (long brackets cannot hold every text; escape instead).
fn lua_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The wrk script for `load`: method, body and headers, and a `done` hook
/// printing `WRK {json}` with the totals and latency percentiles (µs).
pub fn wrk_script(load: &Load) -> String {
    let mut s = format!("wrk.method = {}\n", lua_str(load.method));
    if let Some(b) = &load.body {
        s.push_str(&format!("wrk.body = {}\n", lua_str(b)));
    }
    for (k, v) in &load.headers {
        s.push_str(&format!("wrk.headers[{}] = {}\n", lua_str(k), lua_str(v)));
    }
    s.push_str(
        r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "status_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"#,
    );
    s
}

fn parse_done_line(stdout: &str) -> Result<Figures> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("WRK ")).ok_or_else(|| anyhow!("no WRK line in:\n{stdout}"))?;
    let v: Value = serde_json::from_str(line).with_context(|| format!("WRK line is not JSON: {line}"))?;
    let n = |k: &str| v.get(k).and_then(Value::as_f64).ok_or_else(|| anyhow!("{k} missing in {line}"));
    Ok(Figures {
        requests: n("requests")? as u64,
        seconds: n("duration_us")? / 1e6,
        p50_ms: n("p50_us")? / 1000.0,
        p99_ms: n("p99_us")? / 1000.0,
        errors: (n("status_errors")? + n("socket_errors")?) as u64,
        rss_under_load: None,
    })
}

/// Whether `wrk` is on PATH.
pub fn wrk_available() -> bool {
    Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Runs `cmd` to completion while sampling `pid`'s RSS every 100 ms;
/// returns its stdout and the largest sample.
fn run_sampling(mut cmd: Command, pid: Option<u32>, what: &str) -> Result<(String, Option<Rss>)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting {what}"))?;
    let mut peak: Option<Rss> = None;
    let started = Instant::now();
    loop {
        if child.try_wait().with_context(|| format!("waiting for {what}"))?.is_some() {
            break;
        }
        if let Some(r) = pid.and_then(|p| Rss::read(p).ok()) {
            if peak.is_none_or(|m| r.vm_rss_kb > m.vm_rss_kb) {
                peak = Some(r);
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            bail!("{what} ran for more than 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().with_context(|| format!("collecting {what}'s output"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{what} exited with {}: {}{}", out.status, stdout, String::from_utf8_lossy(&out.stderr));
    }
    Ok((stdout, peak))
}

/// `wrk -t1 -c{connections} -d{secs}s` against `http://{addr}{path}`;
/// `server_pid`'s RSS is sampled meanwhile. The script goes to `dir`.
pub fn wrk(addr: std::net::SocketAddr, load: &Load, connections: usize, secs: u32, dir: &Path, server_pid: Option<u32>) -> Result<Figures> {
    let script = dir.join("load.lua");
    std::fs::write(&script, wrk_script(load)).with_context(|| format!("writing {}", script.display()))?;
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s"), "-s"]).arg(&script).arg(format!("http://{addr}{}", load.path));
    let (stdout, rss) = run_sampling(cmd, server_pid, "wrk")?;
    let mut f = parse_done_line(&stdout)?;
    f.rss_under_load = rss;
    Ok(f)
}

/// The same over a unix socket, with the `uds-load` bin at `exe` (one
/// thread, like `wrk -t1`).
pub fn uds(exe: &Path, socket: &Path, load: &Load, connections: usize, secs: u32, server_pid: Option<u32>) -> Result<Figures> {
    let mut cmd = Command::new(exe);
    cmd.arg("--socket").arg(socket).args(["--method", load.method, "--path", &load.path]).args([
        "--connections",
        &connections.to_string(),
        "--seconds",
        &secs.to_string(),
    ]);
    for (k, v) in &load.headers {
        cmd.args(["--header", &format!("{k}: {v}")]);
    }
    if let Some(b) = &load.body {
        cmd.args(["--body", b]);
    }
    let (stdout, rss) = run_sampling(cmd, server_pid, "uds-load")?;
    let mut f = parse_done_line(&stdout)?;
    f.rss_under_load = rss;
    Ok(f)
}

/// A sibling binary of the running bench (same target/<profile>/).
pub fn sibling_bin(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating the bench binary")?;
    let path = me.parent().map(|d| d.join(name)).ok_or_else(|| anyhow!("{} has no parent directory", me.display()))?;
    if !path.is_file() {
        bail!("{} is missing: build it with `cargo build --release -p edgeai-tests --bins`", path.display());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_escape_bodies_and_set_headers() {
        let load = Load::post_json("/v1/chat-messages", &serde_json::json!({"query": "say \"hi\"\n"})).authed("app-x");
        let s = wrk_script(&load);
        assert!(s.contains(r#"wrk.method = "POST""#), "{s}");
        assert!(s.contains(r#"wrk.body = "{\"query\":\"say \\\"hi\\\"\\n\"}""#), "{s}");
        assert!(s.contains(r#"wrk.headers["Authorization"] = "Bearer app-x""#), "{s}");
    }

    #[test]
    fn done_lines_are_parsed_and_their_absence_named() {
        let out = "Running 5s test\nWRK {\"requests\": 1000, \"duration_us\": 2000000, \"p50_us\": 250, \"p99_us\": 1500, \
                   \"status_errors\": 2, \"socket_errors\": 1}\n";
        let f = parse_done_line(out).expect("parsed");
        assert_eq!((f.requests, f.errors), (1000, 3));
        assert!((f.per_sec() - 500.0).abs() < 1e-9 && (f.p99_ms - 1.5).abs() < 1e-9);
        assert!(parse_done_line("Running 5s test\n").unwrap_err().to_string().contains("no WRK line"));
    }
}
