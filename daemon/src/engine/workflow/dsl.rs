//! Dify app DSL (the YAML Dify exports) to an [`AppDefinition`] and back.
//!
//! Import reads `app`, `kind`, `version` and either `model_config` (chat and
//! completion apps) or `workflow` (workflow and advanced-chat apps, compiled
//! by [`Workflow::compile`]); every problem is reported at once and nothing
//! is returned unless there is none. The YAML is bounded before and while it
//! is read (size, nesting, and how far aliases may expand it). Export writes
//! the same shape, the workflow section verbatim, so that importing an
//! export yields an equal app; what Dify's DSL has no place for (an app's
//! local `model`, `history_turns`, `enable_api`) travels as provider
//! `edgeai` and a top-level `edgeai:` mapping, which Dify ignores. Owns no I/O.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{json, Map, Number, Value};
use sha2::{Digest, Sha256};

use super::graph::Workflow;
use super::{Capabilities, Problem};
use crate::engine::app::{
    AppDefinition, AppMode, CompletionParams, DatasetContext, DslModel, Feature, FieldSpec, FormField, MAX_APP_ID_LEN,
};

/// Largest DSL document accepted.
pub const MAX_DSL_BYTES: usize = 4 * 1024 * 1024;
/// Most values (scalars, lists, maps) a document may expand to, aliases
/// included: a small document of nested aliases can otherwise stand for
/// billions of values. A Dify export of a graph of `graph::MAX_NODES` nodes
/// has about a hundred values a node.
pub const MAX_DSL_VALUES: usize = 500_000;
/// Most string bytes a document may expand to, aliases included.
pub const MAX_DSL_STRING_BYTES: usize = 4 * MAX_DSL_BYTES;
/// Oldest DSL version read.
pub const MIN_VERSION: (u64, u64) = (0, 1);
/// Newest DSL version (MAJOR.MINOR) read: Dify's current one.
pub const MAX_VERSION: (u64, u64) = (0, 5);
/// The version export writes.
pub const EXPORT_VERSION: &str = "0.5.0";
/// The provider name export writes for an app's local model (`model`), so
/// that import gives it back.
pub const LOCAL_PROVIDER: &str = "edgeai";

/// How an import names the app and what the daemon can run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// The app's id; default: a slug of its name.
    pub id: Option<String>,
    /// The app's name; default: the DSL's `app.name`.
    pub name: Option<String>,
    pub caps: Capabilities,
    /// How the DSL's dataset ids become local ones: every id a
    /// knowledge-retrieval node may name, with the local dataset id it
    /// means (the service builds it from the local datasets, their names
    /// and `--dataset OLD=NEW`). An id not in it is a problem.
    pub datasets: BTreeMap<String, String>,
}

/// Rewrites the dataset ids of every knowledge-retrieval node in a raw
/// `workflow` section to local ones; an unmapped id is a problem naming
/// the node.
fn map_datasets(raw: &mut Value, datasets: &BTreeMap<String, String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(nodes) = raw.pointer_mut("/graph/nodes").and_then(Value::as_array_mut) else { return problems };
    for node in nodes {
        let id = node.get("id").and_then(Value::as_str).map(str::to_owned);
        let Some(data) = node.get_mut("data") else { continue };
        if data.get("type").and_then(Value::as_str) != Some("knowledge-retrieval") {
            continue;
        }
        let title = data.get("title").and_then(Value::as_str).map(str::to_owned);
        let Some(ids) = data.get_mut("dataset_ids").and_then(Value::as_array_mut) else { continue };
        for v in ids.iter_mut() {
            let Some(old) = v.as_str() else { continue };
            match datasets.get(old) {
                Some(local) => *v = Value::String(local.clone()),
                None => problems.push(Problem {
                    node_id: id.clone(),
                    node_title: title.clone(),
                    field: "dataset_ids".into(),
                    message: format!(
                        "dataset {old} is not on this gateway: map it to a local dataset with `edgeaictl apps import --dataset {old}=LOCAL_ID_OR_NAME`"
                    ),
                }),
            }
        }
    }
    problems
}

/// Why an app could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum DslError {
    #[error("app {app:?} is a {mode} app without a workflow graph")]
    MissingWorkflow { app: String, mode: &'static str },
    #[error("app {app:?}: writing YAML: {source}")]
    Yaml { app: String, source: serde_norway::Error },
}

/// Reads a Dify DSL document into an app; every problem at once.
pub fn import(yaml: &str, opts: &ImportOptions) -> Result<AppDefinition, Vec<Problem>> {
    let doc = parse(yaml).map_err(|p| vec![p])?;
    let mut r = Reader::default();
    let Some(doc) = doc.as_object() else {
        r.problem("", format!("a DSL document is a mapping with app, kind and version; found {}", kind_of(&doc)));
        return Err(r.problems);
    };
    match doc.get("kind") {
        Some(Value::String(k)) if k == "app" => {}
        None => r.problem("kind", "missing: a Dify app DSL has kind: app".into()),
        Some(other) => r.problem("kind", format!("{} is not an app DSL (kind: app)", short(other))),
    }
    r.version(doc.get("version"));
    let app = match doc.get("app") {
        Some(Value::Object(app)) => app,
        Some(other) => {
            r.problem("app", format!("expected a mapping, found {}", kind_of(other)));
            return Err(r.problems);
        }
        None => {
            r.problem("app", "missing: the DSL names its app (app.name, app.mode)".into());
            return Err(r.problems);
        }
    };
    let dsl_name = r.string(app.get("name"), "app.name");
    let name = opts.name.clone().or(dsl_name).unwrap_or_default();
    if name.trim().is_empty() {
        r.problem("app.name", "missing: the app needs a name (or --name)".into());
    }
    let description = r.string(app.get("description"), "app.description").unwrap_or_default();
    let mode = r.mode(app.get("mode"));
    let mut def = AppDefinition {
        id: opts.id.clone().unwrap_or_else(|| slug(&name)),
        name,
        mode: mode.unwrap_or(AppMode::Chat),
        description,
        model: None,
        dsl_model: None,
        pre_prompt: String::new(),
        opening_statement: String::new(),
        suggested_questions: Vec::new(),
        suggested_questions_after_answer: Feature::default(),
        user_input_form: Vec::new(),
        completion_params: CompletionParams::default(),
        history_turns: 10,
        enable_api: true,
        workflow: None,
        datasets: None,
    };
    r.extension(doc.get("edgeai"), &mut def);
    // Where each form field came from, for problems found by validate().
    let mut form_at = Vec::new();
    match mode.map(|m| (m, m.workflow_mode())) {
        None => {}
        Some((_, Some(wmode))) => match doc.get("workflow") {
            Some(raw @ Value::Object(section)) => {
                r.features(section.get("features"), &mut def);
                let mut raw = raw.clone();
                let unmapped = map_datasets(&mut raw, &opts.datasets);
                match Workflow::compile(&raw, wmode, &opts.caps) {
                    Ok(w) => def.workflow = Some(Arc::new(w)),
                    Err(problems) => r.problems.extend(problems),
                }
                r.problems.extend(unmapped);
            }
            Some(other) => r.problem("workflow", format!("expected a mapping, found {}", kind_of(other))),
            None => r.problem("workflow", format!("missing: a {} app's DSL has a workflow section", def.mode.as_str())),
        },
        Some((_, None)) => match doc.get("model_config") {
            Some(Value::Object(mc)) => form_at = r.model_config(mc, &mut def, &opts.datasets),
            Some(other) => r.problem("model_config", format!("expected a mapping, found {}", kind_of(other))),
            None => r.problem("model_config", format!("missing: a {} app's DSL has a model_config section", def.mode.as_str())),
        },
    }
    // A missing name and a missing or failed graph are reported above, with their reasons.
    for p in def.validate().into_iter().filter(|p| p.field != "name" && p.field != "workflow") {
        let field = dsl_field(&p.field, &form_at);
        r.problem(&field, p.message);
    }
    if r.problems.is_empty() {
        Ok(def)
    } else {
        Err(r.problems)
    }
}

/// Writes an app as Dify DSL YAML (`import` reads it back to an equal app,
/// except that the values of `secret` environment variables are blanked).
pub fn export(app: &AppDefinition) -> Result<String, DslError> {
    let section = match app.mode.workflow_mode() {
        Some(_) => {
            let w = app.workflow.as_ref().ok_or_else(|| DslError::MissingWorkflow { app: app.id.clone(), mode: app.mode.as_str() })?;
            ("workflow", without_secrets(w.raw().clone()))
        }
        None => ("model_config", model_config(app)),
    };
    serde_norway::to_string(&document(app, section)).map_err(|source| DslError::Yaml { app: app.id.clone(), source })
}

/// The workflow section with the values of `secret` environment variables
/// blanked, as Dify exports by default: an export is a file that travels.
fn without_secrets(mut section: Value) -> Value {
    if let Some(vars) = section.get_mut("environment_variables").and_then(Value::as_array_mut) {
        for v in vars.iter_mut().filter(|v| v.get("value_type").and_then(Value::as_str) == Some("secret")) {
            v["value"] = json!("");
        }
    }
    section
}

/// The whole DSL document of `app` with its `workflow` or `model_config` section.
fn document(app: &AppDefinition, (key, section): (&str, Value)) -> Value {
    let mut doc = Map::new();
    doc.insert(
        "app".into(),
        json!({
            "name": app.name,
            "mode": app.mode.as_str(),
            "description": app.description,
            "icon": "🤖",
            "icon_background": "#FFEAD5",
            "use_icon_as_answer_icon": false,
        }),
    );
    doc.insert("kind".into(), json!("app"));
    doc.insert("version".into(), json!(EXPORT_VERSION));
    doc.insert("dependencies".into(), json!([]));
    doc.insert(key.into(), section);
    let mut ext = Map::new();
    if app.history_turns != 10 {
        ext.insert("history_turns".into(), json!(app.history_turns));
    }
    if !app.enable_api {
        ext.insert("enable_api".into(), json!(false));
    }
    if !ext.is_empty() {
        doc.insert("edgeai".into(), Value::Object(ext));
    }
    Value::Object(doc)
}

/// An app id from a name: lower-case `[a-z0-9]` runs joined by `-`, at most
/// [`MAX_APP_ID_LEN`]; a name with none of those gets `app-` and a hash.
pub fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            s.push(c);
        } else if !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    s.truncate(MAX_APP_ID_LEN);
    let s = s.trim_end_matches('-').to_owned();
    if s.is_empty() {
        let hash = Sha256::digest(name.as_bytes());
        format!("app-{}", hash.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>())
    } else {
        s
    }
}

// ---------------------------------------------------------------- export

/// Dify's `dataset_configs` of a chat or completion app.
fn dataset_configs(d: Option<&DatasetContext>) -> Value {
    let Some(d) = d else { return json!({"datasets": {"datasets": []}, "retrieval_model": "multiple"}) };
    let datasets: Vec<Value> = d.dataset_ids.iter().map(|id| json!({"dataset": {"enabled": true, "id": id}})).collect();
    let mut v = json!({
        "datasets": {"datasets": datasets},
        "retrieval_model": if d.single { "single" } else { "multiple" },
        "reranking_enable": d.weights.is_some(),
        "score_threshold_enabled": d.score_threshold.is_some(),
    });
    if let Some(k) = d.top_k {
        v["top_k"] = json!(k);
    }
    if let Some(t) = d.score_threshold {
        v["score_threshold"] = f32_value(t);
    }
    if let Some((vw, kw)) = d.weights {
        v["reranking_mode"] = json!("weighted_score");
        v["weights"] = json!({"vector_setting": {"vector_weight": f32_value(vw)}, "keyword_setting": {"keyword_weight": f32_value(kw)}});
    }
    v
}

fn model_config(app: &AppDefinition) -> Value {
    let (provider, name) = match (&app.dsl_model, &app.model) {
        (Some(m), _) => (m.provider.clone(), m.name.clone()),
        (None, Some(local)) => (LOCAL_PROVIDER.to_owned(), local.clone()),
        (None, None) => (String::new(), String::new()),
    };
    let cp = &app.completion_params;
    let mut params = Map::new();
    params.insert("temperature".into(), f32_value(cp.temperature));
    params.insert("top_p".into(), f32_value(cp.top_p));
    params.insert("top_k".into(), json!(cp.top_k));
    params.insert("max_tokens".into(), json!(cp.max_tokens));
    params.insert("stop".into(), json!(cp.stop));
    if let Some(seed) = cp.seed {
        params.insert("seed".into(), json!(seed));
    }
    json!({
        "pre_prompt": app.pre_prompt,
        "prompt_type": "simple",
        "opening_statement": app.opening_statement,
        "suggested_questions": app.suggested_questions,
        "suggested_questions_after_answer": {"enabled": app.suggested_questions_after_answer.enabled},
        "user_input_form": app.user_input_form,
        "model": {
            "provider": provider,
            "name": name,
            "mode": if app.mode == AppMode::Completion { "completion" } else { "chat" },
            "completion_params": params,
        },
        "dataset_configs": dataset_configs(app.datasets.as_ref()),
        "dataset_query_variable": "",
        "agent_mode": {"enabled": false, "tools": []},
        "external_data_tools": [],
        "more_like_this": {"enabled": false},
        "retriever_resource": {"enabled": false},
        "sensitive_word_avoidance": {"enabled": false},
        "speech_to_text": {"enabled": false},
        "text_to_speech": {"enabled": false},
    })
}

/// An `f32` as the decimal it was written as (0.7, not 0.699999988).
fn f32_value(x: f32) -> Value {
    x.to_string().parse::<f64>().ok().and_then(Number::from_f64).map_or(Value::Null, Value::Number)
}

/// Maps a field of [`AppDefinition::validate`] to where it is in the DSL.
fn dsl_field(field: &str, form_at: &[usize]) -> String {
    if let Some(rest) = field.strip_prefix("completion_params.") {
        return format!("model_config.model.completion_params.{rest}");
    }
    if let Some(rest) = field.strip_prefix("user_input_form[") {
        if let Some((i, tail)) = rest.split_once(']') {
            let at = i.parse::<usize>().ok().and_then(|i| form_at.get(i)).map_or(i.to_owned(), ToString::to_string);
            return format!("model_config.user_input_form[{at}]{tail}");
        }
    }
    field.to_owned()
}

// ---------------------------------------------------------------- import

/// Collects problems while reading the document's parts.
#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, field: &str, message: String) {
        let field = if field.is_empty() { "(document)".to_owned() } else { field.to_owned() };
        self.problems.push(Problem { node_id: None, node_title: None, field, message });
    }

    fn version(&mut self, v: Option<&Value>) {
        let s = match v {
            None | Some(Value::Null) => return self.problem("version", "missing: a Dify DSL names its version, e.g. \"0.3.1\"".into()),
            Some(Value::String(s)) => s,
            Some(other) => return self.problem("version", format!("expected a string like \"0.3.1\", found {}", short(other))),
        };
        let parts: Vec<Option<u64>> = s.split('.').map(|p| p.parse().ok()).collect();
        let (major, minor) = match parts.as_slice() {
            [Some(a), Some(b)] | [Some(a), Some(b), Some(_)] => (*a, *b),
            _ => return self.problem("version", format!("{s:?} is not a version like \"0.3.1\"")),
        };
        let max = format!("{}.{}.x", MAX_VERSION.0, MAX_VERSION.1);
        if (major, minor) > MAX_VERSION {
            self.problem("version", format!("DSL version {s} is newer than this build supports (max {max})"));
        } else if (major, minor) < MIN_VERSION {
            self.problem("version", format!("DSL version {s} is older than the oldest supported ({}.{}.0)", MIN_VERSION.0, MIN_VERSION.1));
        }
    }

    fn mode(&mut self, v: Option<&Value>) -> Option<AppMode> {
        match self.string(v, "app.mode").as_deref() {
            None => {
                self.problem("app.mode", "missing: one of chat, completion, workflow, advanced-chat".into());
                None
            }
            Some("chat") => Some(AppMode::Chat),
            Some("completion") => Some(AppMode::Completion),
            Some("workflow") => Some(AppMode::Workflow),
            Some("advanced-chat") => Some(AppMode::AdvancedChat),
            Some("agent-chat") => {
                self.problem("app.mode", "agent apps need Dify's cloud tools; not supported".into());
                None
            }
            Some(other) => {
                self.problem("app.mode", format!("{other:?} is not one of chat, completion, workflow, advanced-chat"));
                None
            }
        }
    }

    /// The extension export writes for what Dify's DSL has no place for.
    fn extension(&mut self, v: Option<&Value>, def: &mut AppDefinition) {
        let Some(ext) = self.object(v, "edgeai") else { return };
        if let Some(n) = self.uint(ext.get("history_turns"), "edgeai.history_turns") {
            def.history_turns = n;
        }
        if let Some(b) = self.bool(ext.get("enable_api"), "edgeai.enable_api") {
            def.enable_api = b;
        }
    }

    /// A workflow's `features`: what `/parameters` and the site show.
    fn features(&mut self, v: Option<&Value>, def: &mut AppDefinition) {
        let Some(f) = self.object(v, "workflow.features") else { return };
        def.opening_statement = self.string(f.get("opening_statement"), "workflow.features.opening_statement").unwrap_or_default();
        def.suggested_questions = self.strings(f.get("suggested_questions"), "workflow.features.suggested_questions");
        def.suggested_questions_after_answer =
            self.feature(f.get("suggested_questions_after_answer"), "workflow.features.suggested_questions_after_answer");
    }

    /// A chat or completion app's `model_config`; returns, for each form
    /// field kept, its index in the DSL's `user_input_form`.
    fn model_config(&mut self, mc: &Map<String, Value>, def: &mut AppDefinition, datasets: &BTreeMap<String, String>) -> Vec<usize> {
        def.pre_prompt = self.string(mc.get("pre_prompt"), "model_config.pre_prompt").unwrap_or_default();
        match self.string(mc.get("prompt_type"), "model_config.prompt_type").as_deref() {
            None | Some("simple") => {}
            Some(other) => self.problem(
                "model_config.prompt_type",
                format!("{other:?} (expert-mode prompts) is not supported: use the simple prompt, or a chatflow"),
            ),
        }
        def.opening_statement = self.string(mc.get("opening_statement"), "model_config.opening_statement").unwrap_or_default();
        def.suggested_questions = self.strings(mc.get("suggested_questions"), "model_config.suggested_questions");
        def.suggested_questions_after_answer =
            self.feature(mc.get("suggested_questions_after_answer"), "model_config.suggested_questions_after_answer");
        self.unsupported(mc);
        def.datasets = self.dataset_configs(mc.get("dataset_configs"), datasets);
        match self.object(mc.get("model"), "model_config.model") {
            Some(m) => self.model(m, def),
            None => self.problem("model_config.model", "missing: the app's model (provider, name, completion_params)".into()),
        }
        self.form(mc.get("user_input_form"), def)
    }

    /// Dify's `dataset_configs`: the enabled datasets (their ids mapped to
    /// local ones; an unmapped id is a problem), `retrieval_model`
    /// (`single`/`multiple`), `top_k`, `score_threshold` when enabled, and
    /// hybrid `weights`. `None` when it names no enabled dataset.
    fn dataset_configs(&mut self, v: Option<&Value>, map: &BTreeMap<String, String>) -> Option<DatasetContext> {
        let dc = v.and_then(Value::as_object)?;
        let field = "model_config.dataset_configs";
        let entries = dc.get("datasets").and_then(|d| d.get("datasets")).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut ids = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let ds = e.get("dataset").unwrap_or(e);
            if ds.get("enabled").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            match ds.get("id").and_then(Value::as_str) {
                Some(id) => match map.get(id) {
                    Some(local) => ids.push(local.clone()),
                    None => self.problem(
                        &format!("{field}.datasets.datasets.{i}.dataset.id"),
                        format!("dataset {id} is not on this gateway: map it to a local dataset with `edgeaictl apps import --dataset {id}=LOCAL_ID_OR_NAME`"),
                    ),
                },
                None => self.problem(&format!("{field}.datasets.datasets.{i}.dataset.id"), "missing: the dataset's id".into()),
            }
        }
        if ids.is_empty() {
            return None;
        }
        let single = match dc.get("retrieval_model").and_then(Value::as_str) {
            None | Some("multiple") => false,
            Some("single") => true,
            Some(other) => {
                self.problem(&format!("{field}.retrieval_model"), format!("{other:?} is not single or multiple"));
                false
            }
        };
        if dc.get("reranking_enable").and_then(Value::as_bool) == Some(true)
            && dc.get("reranking_mode").and_then(Value::as_str) == Some("reranking_model")
        {
            self.problem(
                &format!("{field}.reranking_mode"),
                "reranking_model needs a rerank model, none runs offline; use weighted_score".into(),
            );
        }
        let top_k = dc.get("top_k").and_then(Value::as_u64).map(|k| k.clamp(1, 100) as usize);
        let score_threshold = match dc.get("score_threshold_enabled").and_then(Value::as_bool) {
            Some(false) => None,
            _ => dc.get("score_threshold").and_then(Value::as_f64).map(|t| t as f32),
        };
        let weights = dc.get("weights").and_then(|w| {
            let v = w.pointer("/vector_setting/vector_weight")?.as_f64()?;
            let k = w.pointer("/keyword_setting/keyword_weight")?.as_f64()?;
            Some((v as f32, k as f32))
        });
        Some(DatasetContext { dataset_ids: ids, single, top_k, score_threshold, weights })
    }

    /// Parts of `model_config` that would change what the app does and that
    /// this build cannot run: refused, not silently dropped.
    fn unsupported(&mut self, mc: &Map<String, Value>) {
        if let Some(agent) = mc.get("agent_mode").and_then(Value::as_object) {
            let tools: Vec<String> = agent
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| {
                    let name = t.get("tool_name").or_else(|| t.get("tool_label")).and_then(Value::as_str).unwrap_or("?");
                    let provider = t.get("provider_id").or_else(|| t.get("provider_name")).and_then(Value::as_str).unwrap_or("?");
                    format!("{provider}/{name}")
                })
                .collect();
            if agent.get("enabled").and_then(Value::as_bool) == Some(true) && !tools.is_empty() {
                self.problem(
                    "model_config.agent_mode.tools",
                    format!("agent tools need Dify's cloud marketplace; not supported: {}", tools.join(", ")),
                );
            }
        }
        if mc.get("external_data_tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
            self.problem("model_config.external_data_tools", "external data tools need Dify's cloud; not supported".into());
        }
        if mc.get("sensitive_word_avoidance").and_then(|s| s.get("enabled")).and_then(Value::as_bool) == Some(true) {
            self.problem("model_config.sensitive_word_avoidance", "content moderation is not in this build; disable it to import".into());
        }
    }

    fn model(&mut self, m: &Map<String, Value>, def: &mut AppDefinition) {
        let provider = self.string(m.get("provider"), "model_config.model.provider").unwrap_or_default();
        let name = self.string(m.get("name"), "model_config.model.name").unwrap_or_default();
        if provider == LOCAL_PROVIDER {
            def.model = Some(name);
        } else if !(provider.is_empty() && name.is_empty()) {
            def.dsl_model = Some(DslModel { provider, name });
        }
        let Some(cp) = self.object(m.get("completion_params"), "model_config.model.completion_params") else { return };
        let at = |k: &str| format!("model_config.model.completion_params.{k}");
        let p = &mut def.completion_params;
        if let Some(x) = self.number(cp.get("temperature"), &at("temperature")) {
            p.temperature = x as f32;
        }
        if let Some(x) = self.number(cp.get("top_p"), &at("top_p")) {
            p.top_p = x as f32;
        }
        if let Some(x) = self.int(cp.get("top_k"), &at("top_k")) {
            match i32::try_from(x) {
                Ok(k) => p.top_k = k,
                Err(_) => self.problem(&at("top_k"), format!("{x} is out of range")),
            }
        }
        if let Some(x) = self.uint(cp.get("max_tokens"), &at("max_tokens")) {
            p.max_tokens = x;
        }
        p.seed = self.uint(cp.get("seed"), &at("seed"));
        p.stop = self.strings(cp.get("stop"), &at("stop"));
    }

    fn form(&mut self, v: Option<&Value>, def: &mut AppDefinition) -> Vec<usize> {
        let mut at = Vec::new();
        let items = match v {
            None | Some(Value::Null) => return at,
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.problem("model_config.user_input_form", format!("expected a list, found {}", kind_of(other)));
                return at;
            }
        };
        for (i, item) in items.iter().enumerate() {
            let field = format!("model_config.user_input_form[{i}]");
            let Some((kind, spec)) = item.as_object().filter(|o| o.len() == 1).and_then(|o| o.iter().next()) else {
                self.problem(&field, format!("expected a mapping with one key (the field type), found {}", short(item)));
                continue;
            };
            let variable = spec.get("variable").and_then(Value::as_str).unwrap_or("?");
            let make: fn(FieldSpec) -> FormField = match kind.as_str() {
                "text-input" => FormField::TextInput,
                "paragraph" => FormField::Paragraph,
                "select" => FormField::Select,
                "number" => FormField::Number,
                other => {
                    self.problem(
                        &field,
                        format!("{other:?} field {variable:?} is not supported by chat and completion apps in this build"),
                    );
                    continue;
                }
            };
            let Some(spec) = self.field_spec(spec, &format!("{field}.{kind}")) else { continue };
            def.user_input_form.push(make(spec));
            at.push(i);
        }
        at
    }

    fn field_spec(&mut self, v: &Value, field: &str) -> Option<FieldSpec> {
        let s = self.object(Some(v), field)?;
        let variable = self.string(s.get("variable"), &format!("{field}.variable"));
        let label = self.string(s.get("label"), &format!("{field}.label"));
        // Dify writes a number field's default as a number.
        let default = match s.get("default") {
            Some(Value::Number(n)) => Some(n.to_string()),
            other => self.string(other, &format!("{field}.default")),
        };
        let spec = FieldSpec {
            label: label.or_else(|| variable.clone()).unwrap_or_default(),
            required: self.bool(s.get("required"), &format!("{field}.required")).unwrap_or(false),
            max_length: self.uint(s.get("max_length"), &format!("{field}.max_length")),
            default,
            options: self.strings(s.get("options"), &format!("{field}.options")),
            variable: variable.unwrap_or_default(),
        };
        Some(spec)
    }

    // ---- typed getters: absent or null is None; a wrong type is a problem

    fn object<'v>(&mut self, v: Option<&'v Value>, field: &str) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(other) => {
                self.problem(field, format!("expected a mapping, found {}", kind_of(other)));
                None
            }
        }
    }

    fn string(&mut self, v: Option<&Value>, field: &str) -> Option<String> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(field, format!("expected a string, found {}", short(other)));
                None
            }
        }
    }

    fn strings(&mut self, v: Option<&Value>, field: &str) -> Vec<String> {
        match v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                items.iter().enumerate().filter_map(|(i, item)| self.string(Some(item), &format!("{field}[{i}]"))).collect()
            }
            Some(other) => {
                self.problem(field, format!("expected a list of strings, found {}", kind_of(other)));
                Vec::new()
            }
        }
    }

    fn bool(&mut self, v: Option<&Value>, field: &str) -> Option<bool> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.problem(field, format!("expected true or false, found {}", short(other)));
                None
            }
        }
    }

    fn feature(&mut self, v: Option<&Value>, field: &str) -> Feature {
        let enabled = self.object(v, field).and_then(|f| self.bool(f.get("enabled"), &format!("{field}.enabled")));
        Feature { enabled: enabled.unwrap_or(false) }
    }

    fn number(&mut self, v: Option<&Value>, field: &str) -> Option<f64> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(other) => {
                self.problem(field, format!("expected a number, found {}", short(other)));
                None
            }
        }
    }

    fn int(&mut self, v: Option<&Value>, field: &str) -> Option<i64> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(other) => {
                self.problem(field, format!("expected a whole number, found {}", short(other)));
                None
            }
        }
    }

    fn uint(&mut self, v: Option<&Value>, field: &str) -> Option<u32> {
        let x = self.int(v, field)?;
        match u32::try_from(x) {
            Ok(x) => Some(x),
            Err(_) => {
                self.problem(field, format!("{x} is out of range (0 to {})", u32::MAX));
                None
            }
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A value for a message: scalars as written, containers by kind.
fn short(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => kind_of(v).to_owned(),
        Value::String(s) if s.chars().count() > 60 => format!("{:?}…", s.chars().take(60).collect::<String>()),
        scalar => scalar.to_string(),
    }
}

// ---------------------------------------------------------------- bounded YAML

/// Parses YAML into JSON values within the size and expansion bounds; a
/// syntax error is one problem with its line and column.
fn parse(yaml: &str) -> Result<Value, Problem> {
    let problem = |message: String| Problem { node_id: None, node_title: None, field: "(document)".into(), message };
    if yaml.len() > MAX_DSL_BYTES {
        return Err(problem(format!("the document is {} bytes; the most accepted is {MAX_DSL_BYTES} (4 MiB)", yaml.len())));
    }
    let budget = Budget { values: Cell::new(MAX_DSL_VALUES), bytes: Cell::new(MAX_DSL_STRING_BYTES) };
    let de = serde_norway::Deserializer::from_str(yaml);
    Bounded(&budget).deserialize(de).map_err(|e| {
        let at = e.location().map(|l| format!("line {}, column {}: ", l.line(), l.column())).unwrap_or_default();
        problem(format!("invalid YAML: {at}{e}"))
    })
}

/// What is left of the expansion bounds while one document is read.
struct Budget {
    values: Cell<usize>,
    bytes: Cell<usize>,
}

impl Budget {
    fn take<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        let (Some(values), Some(bytes)) = (self.values.get().checked_sub(1), self.bytes.get().checked_sub(bytes)) else {
            return Err(E::custom(format!(
                "the document expands to more than {MAX_DSL_VALUES} values or {MAX_DSL_STRING_BYTES} bytes of text (aliases?)"
            )));
        };
        self.values.set(values);
        self.bytes.set(bytes);
        Ok(())
    }
}

/// A JSON value, deserialised against the budget.
#[derive(Clone, Copy)]
struct Bounded<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value that JSON can hold")
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        self.0.take(0)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
        self.0.take(0)?;
        Ok(Value::from(n))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
        self.0.take(0)?;
        Ok(Value::from(n))
    }

    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<Value, E> {
        self.0.take(0)?;
        Number::from_f64(x).map(Value::Number).ok_or_else(|| E::custom(format!("{x} is not a number JSON can hold")))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        self.0.take(s.len())?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.0.take(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.take(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.take(0)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(s) => s,
                // Dify writes string keys; a plain 1 or true as a key means the same text.
                Value::Number(_) | Value::Bool(_) => key.to_string(),
                other => return Err(A::Error::custom(format!("a mapping key must be a scalar, found {}", kind_of(&other)))),
            };
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests;
