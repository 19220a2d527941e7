//! sandbox: runs the code of Dify code nodes, offline and confined. It owns
//! the embedded JavaScript engine (`js`: QuickJS through rquickjs, linked
//! into edgeaid, a fresh runtime per call with a memory limit and an
//! interrupt deadline) and the Python 3 sandbox (`python`: the system
//! `python3` in a separate process per call, from a small pool of processes
//! started ahead, under landlock, a seccomp allowlist and rlimits, killed
//! with its process group on timeout). [`Sandbox`] puts both behind one call
//! with a global cap on concurrent runs.
//!
//! It knows nothing of workflows, HTTP or the store: it takes code, the
//! inputs as JSON and limits, and returns the object `main` returned (or why
//! not). Checking that object against a node's declared outputs is the
//! engine's (`engine::workflow::nodes::code`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

pub mod js;
pub mod python;

/// The language of a code node (`code_language` in the DSL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    JavaScript,
    Python3,
}

impl Language {
    /// The DSL's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::JavaScript => "javascript",
            Language::Python3 => "python3",
        }
    }
}

/// Limits of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLimits {
    /// Wall-clock time from start to result; the run is killed after it.
    pub timeout: Duration,
    /// Most memory the code may hold: the JS heap limit; Python's
    /// `RLIMIT_AS` (address space, interpreter included).
    pub memory_bytes: u64,
    /// Largest result (JSON bytes) accepted; more fails the run.
    pub max_output_bytes: usize,
}

/// Why a run gave no result. Messages are what the node shows as its error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The code raised or threw: the message as the language prints it
    /// (Python: the exception's last traceback line, with the line number
    /// in the node's code; JS: `Error: message` and the line).
    #[error("{0}")]
    Code(String),
    /// `main` is missing or not a function.
    #[error("the code defines no function main")]
    NoMain,
    /// `main` returned something other than an object / dict.
    #[error("Result must be a dict, got {0}")]
    NotAnObject(String),
    #[error("code execution timed out after {0:?}")]
    Timeout(Duration),
    #[error("the code exceeded its memory limit of {} MB", .0 / (1024 * 1024))]
    Memory(u64),
    #[error("the code's result exceeds {0} bytes")]
    OutputTooLarge(usize),
    /// Refused by the sandbox (a denied system call or file, a forbidden
    /// module): the reason.
    #[error("not allowed in a code node: {0}")]
    Denied(String),
    /// This language cannot run here (no python3, no landlock): the reason.
    #[error("{0}")]
    Unavailable(String),
    /// Every sandbox slot stayed busy for the whole timeout.
    #[error("all {0} code sandboxes stayed busy; try again later")]
    Busy(usize),
    /// The sandbox itself failed (spawn, pipe, a malformed reply).
    #[error("code sandbox: {0}")]
    Internal(String),
}

/// What `[code]` in the config sets.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Most code runs at once, both languages together.
    pub max_concurrent: usize,
    /// The Python side; `None` turns Python code nodes off.
    pub python: Option<python::PythonConfig>,
}

/// What a language supports here, for import checks and `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageInfo {
    /// e.g. `QuickJS 2024-01-13` or `/usr/bin/python3.11 (3.11.2)`.
    pub runtime: String,
    /// Top-level modules a node's `dependencies` may name.
    pub modules: Arc<BTreeSet<String>>,
}

/// Both languages behind one call, with the global cap on concurrent runs.
pub struct Sandbox {
    permits: Semaphore,
    max_concurrent: usize,
    python: Result<python::Python, SandboxError>,
}

impl Sandbox {
    /// Probes python3 (blocking: call from `spawn_blocking` or before the
    /// runtime is busy). Python being unavailable is not an error here:
    /// `python_info` says why, and import refuses Python code nodes.
    pub fn start(config: SandboxConfig) -> Sandbox {
        let python = match config.python {
            None => Err(SandboxError::Unavailable("Python code nodes are turned off (code.python = \"off\")".into())),
            Some(cfg) => python::Python::start(cfg),
        };
        if let Err(e) = &python {
            tracing::warn!(reason = %e, "python code nodes are unavailable");
        }
        Sandbox { permits: Semaphore::new(config.max_concurrent.max(1)), max_concurrent: config.max_concurrent.max(1), python }
    }

    pub fn javascript_info(&self) -> LanguageInfo {
        LanguageInfo { runtime: js::runtime_name().to_owned(), modules: Arc::new(BTreeSet::new()) }
    }

    /// The Python runtime, or why there is none.
    pub fn python_info(&self) -> Result<LanguageInfo, String> {
        match &self.python {
            Ok(p) => {
                let info = p.info();
                Ok(LanguageInfo { runtime: format!("{} ({})", info.executable.display(), info.version), modules: info.modules.clone() })
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The Python side's details (`status`), when it runs.
    pub fn python(&self) -> Option<&python::Python> {
        self.python.as_ref().ok()
    }

    /// Runs `main(inputs)` and returns the object it returned. Waits for a
    /// free slot at most `limits.timeout`.
    pub async fn run(
        &self,
        language: Language,
        code: &str,
        inputs: &Map<String, Value>,
        limits: &RunLimits,
    ) -> Result<Map<String, Value>, SandboxError> {
        let _permit = tokio::time::timeout(limits.timeout, self.permits.acquire())
            .await
            .map_err(|_| SandboxError::Busy(self.max_concurrent))?
            .map_err(|_| SandboxError::Internal("the sandbox is shutting down".into()))?;
        match language {
            Language::JavaScript => {
                let (code, inputs, limits) = (code.to_owned(), inputs.clone(), limits.clone());
                tokio::task::spawn_blocking(move || js::run(&code, &inputs, &limits))
                    .await
                    .map_err(|e| SandboxError::Internal(format!("the JavaScript thread failed: {e}")))?
            }
            Language::Python3 => match &self.python {
                Ok(p) => p.run(code, inputs, limits).await,
                Err(e) => Err(e.clone()),
            },
        }
    }
}

/// The default scratch directory under a state directory.
pub fn default_scratch_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("code-scratch")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::Map;

    use super::{Language, RunLimits, Sandbox, SandboxConfig, SandboxError};

    fn limits(timeout_ms: u64) -> RunLimits {
        RunLimits { timeout: Duration::from_millis(timeout_ms), memory_bytes: 32 << 20, max_output_bytes: 1 << 20 }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_beyond_the_cap_wait_and_give_up_as_busy() {
        let sandbox = std::sync::Arc::new(Sandbox::start(SandboxConfig { max_concurrent: 1, python: None }));
        let busy = std::sync::Arc::clone(&sandbox);
        let hog =
            tokio::spawn(
                async move { busy.run(Language::JavaScript, "function main() { for (;;) {} }", &Map::new(), &limits(1500)).await },
            );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let e = sandbox.run(Language::JavaScript, "function main() { return {}; }", &Map::new(), &limits(300)).await.expect_err("busy");
        assert_eq!(e, SandboxError::Busy(1));
        assert!(started.elapsed() >= Duration::from_millis(300), "it waited its timeout first");
        assert_eq!(hog.await.expect("join"), Err(SandboxError::Timeout(Duration::from_millis(1500))));
        // The slot is free again.
        assert_eq!(
            sandbox.run(Language::JavaScript, "function main() { return {a: 1}; }", &Map::new(), &limits(1000)).await.map(|m| m.len()),
            Ok(1)
        );
    }

    #[tokio::test]
    async fn python_turned_off_says_so() {
        let sandbox = Sandbox::start(SandboxConfig { max_concurrent: 1, python: None });
        let e = sandbox.run(Language::Python3, "def main(): return {}", &Map::new(), &limits(1000)).await.expect_err("off");
        assert_eq!(e, SandboxError::Unavailable("Python code nodes are turned off (code.python = \"off\")".into()));
        assert_eq!(sandbox.python_info(), Err("Python code nodes are turned off (code.python = \"off\")".into()));
    }
}
