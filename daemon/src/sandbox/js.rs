//! js: CONTRACT STUB, replaced next.

use serde_json::{Map, Value};

use super::{RunLimits, SandboxError};

pub fn runtime_name() -> &'static str {
    "QuickJS"
}

pub fn run(_code: &str, _inputs: &Map<String, Value>, _limits: &RunLimits) -> Result<Map<String, Value>, SandboxError> {
    Err(SandboxError::Unavailable("not built yet".into()))
}
