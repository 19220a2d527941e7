//! reply: what a finished run means: the runner's one-line reply (the
//! dict, or the code's error by kind) or, without one, how the process
//! ended (a CPU-limit signal is a timeout, a MemoryError on stderr the
//! memory limit).

use serde_json::{Map, Value};

use super::process::Exit;
use super::{RunLimits, SandboxError};

/// The runner's reply.
#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Reply {
    Ok(Map<String, Value>),
    Error(ReplyError),
}

#[derive(serde::Deserialize)]
struct ReplyError {
    kind: String,
    message: Option<String>,
    line: Option<u64>,
}

/// Maps what a finished process wrote and how it ended to the run's result.
pub(super) fn outcome_of(
    stdout: &[u8],
    stderr: &[u8],
    exit: Option<Exit>,
    limits: &RunLimits,
    cpu_secs: u64,
) -> Result<Map<String, Value>, SandboxError> {
    let line = stdout.split(|&b| b == b'\n').find(|l| !l.is_empty());
    if let Some(reply) = line.and_then(|l| serde_json::from_slice::<Reply>(l).ok()) {
        return match reply {
            // The reply is `{"ok": ` + result + `}` and a newline.
            Reply::Ok(_) if stdout.len().saturating_sub(9) > limits.max_output_bytes => {
                Err(SandboxError::OutputTooLarge(limits.max_output_bytes))
            }
            Reply::Ok(result) => Ok(result),
            Reply::Error(e) => Err(reply_error(e, limits)),
        };
    }
    let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(600)..]).trim().to_owned();
    let Some(exit) = exit else {
        return Err(SandboxError::Internal(format!("the python process could not be reaped: {tail}")));
    };
    if tail.contains("MemoryError") || tail.contains("Cannot allocate memory") {
        return Err(SandboxError::Memory(limits.memory_bytes));
    }
    if libc::WIFSIGNALED(exit.status) {
        let signal = libc::WTERMSIG(exit.status);
        // SIGXCPU at the soft CPU limit, SIGKILL at the hard one.
        if signal == libc::SIGXCPU || (signal == libc::SIGKILL && exit.cpu_secs + 0.5 >= cpu_secs as f64) {
            return Err(SandboxError::Timeout(limits.timeout));
        }
        // SIGSYS: a call the service's own seccomp filter (systemd's
        // SystemCallFilter=) kills for, where ours would only refuse.
        if signal == libc::SIGSYS {
            return Err(SandboxError::Denied("a system call the service forbids (the process was killed)".into()));
        }
        return Err(SandboxError::Internal(format!("the python process was killed by signal {signal}: {tail}")));
    }
    let code = libc::WEXITSTATUS(exit.status);
    if code != 0 && !stdout.is_empty() {
        return Err(SandboxError::Internal(format!("the python process wrote a malformed reply and exited with {code}: {tail}")));
    }
    Err(SandboxError::Code(format!("the code ended the python process (exit status {code}) before main returned")))
}

fn reply_error(e: ReplyError, limits: &RunLimits) -> SandboxError {
    let message = e.message.unwrap_or_default();
    let with_line = match e.line {
        Some(n) => format!("{message} (line {n})"),
        None => message.clone(),
    };
    match e.kind.as_str() {
        "nomain" => SandboxError::NoMain,
        "notdict" => SandboxError::NotAnObject(message),
        "memory" => SandboxError::Memory(limits.memory_bytes),
        "output" => SandboxError::OutputTooLarge(limits.max_output_bytes),
        "denied" => SandboxError::Denied(with_line),
        "code" => SandboxError::Code(with_line),
        other => SandboxError::Internal(format!("the runner replied with an unknown kind {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RunLimits {
        RunLimits { timeout: Duration::from_secs(2), memory_bytes: 256 << 20, max_output_bytes: 100 }
    }

    fn exited(code: i32) -> Option<Exit> {
        Some(Exit { status: code << 8, cpu_secs: 0.01 })
    }

    #[test]
    fn replies_map_to_results_and_errors() {
        let l = limits();
        let ok = outcome_of(b"{\"ok\": {\"a\": 1}}\n", b"", exited(0), &l, 4).expect("ok");
        assert_eq!(ok.get("a"), Some(&Value::from(1)));
        let code = br#"{"error": {"kind": "code", "message": "NameError: name 'x' is not defined", "line": 3}}"#;
        assert_eq!(outcome_of(code, b"", exited(0), &l, 4), Err(SandboxError::Code("NameError: name 'x' is not defined (line 3)".into())));
        assert_eq!(outcome_of(br#"{"error": {"kind": "nomain"}}"#, b"", exited(0), &l, 4), Err(SandboxError::NoMain));
        let notdict = br#"{"error": {"kind": "notdict", "message": "list"}}"#;
        assert_eq!(outcome_of(notdict, b"", exited(0), &l, 4), Err(SandboxError::NotAnObject("list".into())));
        assert_eq!(outcome_of(br#"{"error": {"kind": "memory"}}"#, b"", exited(0), &l, 4), Err(SandboxError::Memory(256 << 20)));
    }

    #[test]
    fn a_result_over_the_cap_is_refused() {
        let big = format!("{{\"ok\": {{\"a\": \"{}\"}}}}\n", "x".repeat(200));
        assert_eq!(outcome_of(big.as_bytes(), b"", exited(0), &limits(), 4), Err(SandboxError::OutputTooLarge(100)));
    }

    #[test]
    fn deaths_without_a_reply_say_why() {
        let l = limits();
        let xcpu = Some(Exit { status: libc::SIGXCPU, cpu_secs: 4.0 });
        assert_eq!(outcome_of(b"", b"", xcpu, &l, 4), Err(SandboxError::Timeout(l.timeout)));
        let cpu_kill = Some(Exit { status: libc::SIGKILL, cpu_secs: 5.0 });
        assert_eq!(outcome_of(b"", b"", cpu_kill, &l, 4), Err(SandboxError::Timeout(l.timeout)));
        assert!(matches!(outcome_of(b"", b"", Some(Exit { status: libc::SIGKILL, cpu_secs: 0.1 }), &l, 4), Err(SandboxError::Internal(_))));
        assert_eq!(outcome_of(b"", b"Fatal Python error: MemoryError", exited(1), &l, 4), Err(SandboxError::Memory(256 << 20)));
        assert!(matches!(outcome_of(b"", b"", exited(3), &l, 4), Err(SandboxError::Code(m)) if m.contains("exit status 3")));
        let sigsys = Some(Exit { status: libc::SIGSYS, cpu_secs: 0.1 });
        assert!(matches!(outcome_of(b"", b"", sigsys, &l, 4), Err(SandboxError::Denied(_))));
    }
}
