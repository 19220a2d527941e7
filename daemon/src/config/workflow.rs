//! The typed settings of DSL workflows: run limits and the http-request
//! allowlist (`[workflow]`), the upstream OpenAI-compatible runtime
//! (`[upstream]`) and the mapping of the DSL's cloud models to a runtime
//! (`[model_map]`). `read` fills them in and checks them; this module only
//! holds the results and answers questions about them. Owns no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::workflow::Limits;

/// `[workflow]`: limits of compiling and running a DSL workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowSettings {
    /// `workflow.max_steps`, `node_timeout_secs`, `run_timeout_secs`,
    /// `max_parallel`, `max_iterations`, `http_max_response_bytes`: the
    /// engine's limits, as it takes them.
    pub limits: Limits,
    /// `workflow.http_allow`: host patterns and CIDRs an http-request node may
    /// reach, each already checked by [`crate::service::outbound::Rule::parse`];
    /// empty allows nothing.
    pub http_allow: Vec<String>,
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        WorkflowSettings {
            limits: Limits {
                max_steps: 500,
                node_timeout: Duration::from_secs(120),
                run_timeout: Duration::from_secs(240),
                max_parallel: 4,
                max_iterations: 1000,
                http_max_response_bytes: 1 << 20,
            },
            http_allow: Vec::new(),
        }
    }
}

/// A secret read from config (`upstream.api_key` or the file named by
/// `upstream.api_key_file`); `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `[upstream]`: an OpenAI-compatible endpoint used as a second model runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// `upstream.url`, an `http://` base URL without a trailing `/`
    /// (`{url}/chat/completions` is called); `None`: no upstream.
    pub url: Option<String>,
    /// `upstream.model`: sent when a mapping names none; `None` sends the
    /// DSL's own model name.
    pub model: Option<String>,
    /// From `upstream.api_key` or the file named by `upstream.api_key_file`.
    pub api_key: Option<Secret>,
    /// `upstream.api_key_file`, for reports; the key itself is in `api_key`.
    pub api_key_file: Option<PathBuf>,
    /// `upstream.connect_timeout_secs`.
    pub connect_timeout: Duration,
    /// `upstream.read_timeout_secs`: the longest gap between bytes of an answer.
    pub read_timeout: Duration,
    /// `upstream.retries`: more attempts on connect errors, 429 and 5xx
    /// before any byte of an answer.
    pub retries: u32,
    /// `upstream.retry_backoff_ms`: the first pause, doubled each retry.
    pub retry_backoff: Duration,
    /// `upstream.breaker_failures`: consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// `upstream.breaker_cooldown_secs`.
    pub breaker_cooldown: Duration,
    /// `upstream.fallback_local`: answer with the local model when upstream fails.
    pub fallback_local: bool,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            url: None,
            model: None,
            api_key: None,
            api_key_file: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            retries: 2,
            retry_backoff: Duration::from_millis(200),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            fallback_local: true,
        }
    }
}

/// Which runtime answers a model call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The local GGUF model (`[model]`).
    Local,
    /// The upstream endpoint, asked for this model name.
    Upstream { model: String },
}

/// One `[model_map]` value: `"local"`, `"upstream"` or `"upstream:<model name>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapEntry {
    Local,
    /// `None`: `upstream.model`, or the DSL's name when that is unset too.
    Upstream(Option<String>),
}

impl MapEntry {
    /// Parses a `[model_map]` value.
    pub fn parse(s: &str) -> Result<MapEntry, String> {
        match s {
            "local" => Ok(MapEntry::Local),
            "upstream" => Ok(MapEntry::Upstream(None)),
            _ => match s.strip_prefix("upstream:") {
                Some(name) if !name.trim().is_empty() && name.trim() == name => Ok(MapEntry::Upstream(Some(name.to_owned()))),
                _ => Err(format!("{s:?} is not \"local\", \"upstream\" or \"upstream:<model name>\"")),
            },
        }
    }
}

impl MapEntry {
    /// The entry as written in config.
    pub fn describe(&self) -> String {
        match self {
            MapEntry::Local => "local".to_owned(),
            MapEntry::Upstream(None) => "upstream".to_owned(),
            MapEntry::Upstream(Some(model)) => format!("upstream:{model}"),
        }
    }
}

/// `[model_map]`: the DSL's models (`provider/name`) mapped to a runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMap {
    /// `model_map.default`: for models no entry names.
    pub default: MapEntry,
    /// `"provider/name"` -> entry.
    pub entries: BTreeMap<String, MapEntry>,
    /// `upstream.model`, for entries that name no model.
    pub upstream_model: Option<String>,
}

impl Default for ModelMap {
    fn default() -> Self {
        ModelMap { default: MapEntry::Local, entries: BTreeMap::new(), upstream_model: None }
    }
}

impl ModelMap {
    /// Where a node's model (`provider`, `name`) runs, and the rule that
    /// said so: the matching key (`"openai/gpt-4o-mini"`) or `"default"`.
    pub fn resolve(&self, provider: &str, name: &str) -> (Target, String) {
        let key = format!("{provider}/{name}");
        let (entry, rule) = match self.entries.get(&key) {
            Some(entry) => (entry, key),
            None => (&self.default, "default".to_owned()),
        };
        let target = match entry {
            MapEntry::Local => Target::Local,
            MapEntry::Upstream(Some(model)) => Target::Upstream { model: model.clone() },
            MapEntry::Upstream(None) => Target::Upstream { model: self.upstream_model.clone().unwrap_or_else(|| name.to_owned()) },
        };
        (target, rule)
    }
}
