//! python: CONTRACT STUB, replaced by the Python sandbox (helper py).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{RunLimits, SandboxError};

/// `[code]`'s Python settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PythonConfig {
    /// The interpreter; `None` finds `python3` on PATH. Either way the real
    /// executable (`sys.executable`, not a shim script) is what runs.
    pub interpreter: Option<PathBuf>,
    /// Per-run scratch directories are made under it (the only writable
    /// place a run sees; removed after the run).
    pub scratch_dir: PathBuf,
    /// Processes kept started and waiting for a run (0: start per call).
    pub pool_size: usize,
    /// Paths that must stay unreadable to code (the store, key files, the
    /// config): start refuses if any lies under a path the sandbox lets
    /// code read.
    pub protected: Vec<PathBuf>,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonInfo {
    pub executable: PathBuf,
    /// e.g. `3.11.2`.
    pub version: String,
    /// Top-level modules importable offline (stdlib + site-packages).
    pub modules: Arc<BTreeSet<String>>,
    /// The landlock ABI in use.
    pub landlock_abi: u32,
    /// What code may read (everything else is denied).
    pub read_paths: Vec<PathBuf>,
}

pub struct Python {
    info: PythonInfo,
}

impl Python {
    pub fn start(_config: PythonConfig) -> Result<Python, SandboxError> {
        Err(SandboxError::Unavailable("the Python sandbox is not built yet".into()))
    }

    pub fn info(&self) -> &PythonInfo {
        &self.info
    }

    pub async fn run(&self, _code: &str, _inputs: &Map<String, Value>, _limits: &RunLimits) -> Result<Map<String, Value>, SandboxError> {
        Err(SandboxError::Unavailable("the Python sandbox is not built yet".into()))
    }
}
