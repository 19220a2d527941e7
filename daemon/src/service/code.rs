//! code: the service side of workflow code nodes. Starts the sandbox from
//! `[code]` (probing python3 once, at start), tells import what can run
//! ([`Capabilities`]), and runs a node's program with the node's own limits
//! capped by the config's. Each run is counted in the metrics (language,
//! outcome, duration).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::config::{CodeSettings, PythonChoice};
use crate::engine::workflow::{Capabilities, CodeCall, CodeLanguage, CodeSupport};
use crate::sandbox::{self, Language, RunLimits, Sandbox, SandboxConfig};
use crate::telemetry::metrics::Metrics;

/// What `status` shows of the code sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeStatus {
    pub javascript: String,
    /// The interpreter, or why Python code nodes cannot run.
    pub python: Result<String, String>,
    pub max_concurrent: usize,
}

pub struct CodeRuntime {
    sandbox: Sandbox,
    settings: CodeSettings,
    metrics: Arc<Metrics>,
}

impl CodeRuntime {
    /// Starts the sandbox (blocking: probes python3). `protected`: paths
    /// code must never read (the store, key files, the config).
    pub fn start(settings: &CodeSettings, protected: Vec<PathBuf>, metrics: Arc<Metrics>) -> CodeRuntime {
        let python = match &settings.python {
            PythonChoice::Off => None,
            choice => Some(sandbox::python::PythonConfig {
                interpreter: match choice {
                    PythonChoice::Path(p) => Some(p.clone()),
                    _ => None,
                },
                scratch_dir: settings.scratch_dir.clone(),
                pool_size: settings.python_pool,
                protected,
            }),
        };
        let sandbox = Sandbox::start(SandboxConfig { max_concurrent: settings.max_concurrent, python });
        let rt = CodeRuntime { sandbox, settings: settings.clone(), metrics };
        let st = rt.status();
        match &st.python {
            Ok(p) => tracing::info!(javascript = %st.javascript, python = %p, max_concurrent = st.max_concurrent, "code nodes"),
            Err(why) => tracing::info!(javascript = %st.javascript, python_unavailable = %why, "code nodes (JavaScript only)"),
        }
        rt
    }

    /// What import lets through.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            javascript: CodeSupport::Available(self.sandbox.javascript_info().modules),
            python3: match self.sandbox.python_info() {
                Ok(info) => CodeSupport::Available(info.modules),
                Err(why) => CodeSupport::Unavailable(why),
            },
        }
    }

    pub fn status(&self) -> CodeStatus {
        CodeStatus {
            javascript: self.sandbox.javascript_info().runtime,
            python: self.sandbox.python_info().map(|i| i.runtime),
            max_concurrent: self.settings.max_concurrent,
        }
    }

    /// The limits of one call: the node's, capped by the config.
    fn limits(&self, call: &CodeCall) -> RunLimits {
        let s = &self.settings;
        RunLimits {
            timeout: call.timeout.map_or(s.timeout, |t| t.min(s.max_timeout)),
            memory_bytes: call.memory_mb.map_or(s.memory_mb, |m| m.min(s.max_memory_mb)) * 1024 * 1024,
            max_output_bytes: s.max_output_bytes,
        }
    }

    /// Runs a node's program; the error is the node's error text.
    pub async fn run(&self, call: CodeCall) -> Result<Map<String, Value>, String> {
        let limits = self.limits(&call);
        let language = match call.language {
            CodeLanguage::JavaScript => Language::JavaScript,
            CodeLanguage::Python3 => Language::Python3,
        };
        let started = Instant::now();
        let result = self.sandbox.run(language, &call.code, &call.inputs, &limits).await;
        let elapsed = started.elapsed();
        self.metrics.code_run(language.as_str(), result.is_ok(), elapsed);
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        match &result {
            Ok(_) => tracing::debug!(node_id = %call.node_id, language = language.as_str(), elapsed_ms, "code node ran"),
            Err(e) => tracing::info!(node_id = %call.node_id, language = language.as_str(), elapsed_ms, error = %e, "code node failed"),
        }
        result.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Map;

    use super::CodeRuntime;
    use crate::config::{CodeSettings, PythonChoice};
    use crate::engine::workflow::{CodeCall, CodeLanguage};

    fn call(timeout: Option<Duration>, memory_mb: Option<u64>) -> CodeCall {
        CodeCall { node_id: "n".into(), language: CodeLanguage::JavaScript, code: String::new(), inputs: Map::new(), timeout, memory_mb }
    }

    #[test]
    fn a_nodes_own_limits_are_capped_by_the_config() {
        let settings = CodeSettings {
            python: PythonChoice::Off,
            timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(60),
            memory_mb: 128,
            max_memory_mb: 512,
            ..CodeSettings::default()
        };
        let rt = CodeRuntime::start(&settings, Vec::new(), std::sync::Arc::default());
        let l = rt.limits(&call(None, None));
        assert_eq!((l.timeout, l.memory_bytes), (Duration::from_secs(10), 128 << 20), "the config's defaults");
        let l = rt.limits(&call(Some(Duration::from_secs(2)), Some(32)));
        assert_eq!((l.timeout, l.memory_bytes), (Duration::from_secs(2), 32 << 20), "the node's own, below the caps");
        let l = rt.limits(&call(Some(Duration::from_secs(600)), Some(4096)));
        assert_eq!((l.timeout, l.memory_bytes), (Duration::from_secs(60), 512 << 20), "capped");
        assert_eq!(l.max_output_bytes, settings.max_output_bytes);
    }
}
