//! App definitions: the typed shape shared by config (`[[apps]]`), the admin
//! import API, DSL import (`workflow::dsl`) and the store, and its
//! validation. A `workflow` or `advanced-chat` app carries its compiled DSL
//! graph; it is stored as the DSL's raw `workflow` section and compiled again
//! when read. Owns no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::workflow::graph::Workflow;
use super::workflow::{Capabilities, WorkflowMode};

/// Longest accepted app id (ids appear in URLs, logs and the store).
pub const MAX_APP_ID_LEN: usize = 64;

/// Dify app mode. `chat` and `completion` are simple apps (a pre-prompt and
/// a form); `workflow` and `advanced-chat` (chatflow) run a DSL graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppMode {
    Chat,
    Completion,
    Workflow,
    AdvancedChat,
}

impl AppMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AppMode::Chat => "chat",
            AppMode::Completion => "completion",
            AppMode::Workflow => "workflow",
            AppMode::AdvancedChat => "advanced-chat",
        }
    }

    /// The graph's mode for the modes that run a DSL graph.
    pub fn workflow_mode(self) -> Option<WorkflowMode> {
        match self {
            AppMode::Chat | AppMode::Completion => None,
            AppMode::Workflow => Some(WorkflowMode::Workflow),
            AppMode::AdvancedChat => Some(WorkflowMode::AdvancedChat),
        }
    }
}

/// Sampling defaults of an app; a request may not override them (as in Dify),
/// except through the OpenAI endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompletionParams {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub max_tokens: u32,
    pub seed: Option<u32>,
    pub stop: Vec<String>,
}

impl Default for CompletionParams {
    fn default() -> Self {
        CompletionParams { temperature: 0.7, top_p: 0.95, top_k: 40, max_tokens: 256, seed: None, stop: Vec::new() }
    }
}

impl From<&CompletionParams> for crate::model::SamplingParams {
    fn from(p: &CompletionParams) -> Self {
        crate::model::SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            max_tokens: p.max_tokens,
            seed: p.seed,
            stop: p.stop.clone(),
            grammar: None,
        }
    }
}

/// One field of Dify's `user_input_form`, externally tagged exactly as Dify
/// serialises it: `{"text-input": {"label": .., "variable": .., ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FormField {
    #[serde(rename = "text-input")]
    TextInput(FieldSpec),
    #[serde(rename = "paragraph")]
    Paragraph(FieldSpec),
    #[serde(rename = "select")]
    Select(FieldSpec),
    #[serde(rename = "number")]
    Number(FieldSpec),
}

impl FormField {
    pub fn spec(&self) -> &FieldSpec {
        match self {
            FormField::TextInput(s) | FormField::Paragraph(s) | FormField::Select(s) | FormField::Number(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub label: String,
    pub variable: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// An app of any mode. Serialised as [`StoredApp`] (the shape of config
/// `[[apps]]`, the admin API and the store); equality compares a workflow by
/// its raw DSL section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "StoredApp", into = "StoredApp")]
pub struct AppDefinition {
    /// Stable id used by the admin API, keys and the store (`[a-z0-9_-]`).
    pub id: String,
    pub name: String,
    pub mode: AppMode,
    pub description: String,
    /// The model that answers, by `model.name`; unset means the daemon's
    /// model. An app naming a model this daemon does not serve is refused.
    pub model: Option<String>,
    /// The cloud model a chat/completion DSL named (`model_config.model`),
    /// kept for model mapping and export.
    pub dsl_model: Option<DslModel>,
    /// System prompt; `{{variable}}` is replaced by the request's inputs.
    pub pre_prompt: String,
    pub opening_statement: String,
    pub suggested_questions: Vec<String>,
    /// Dify's "suggested questions after answer": when enabled, `GET
    /// /v1/messages/{id}/suggested` asks the model for follow-up questions.
    pub suggested_questions_after_answer: Feature,
    pub user_input_form: Vec<FormField>,
    pub completion_params: CompletionParams,
    /// Dify's memory window: at most this many earlier turns are sent.
    pub history_turns: u32,
    /// Dify's `enable_api`: `false` turns the app's Service API off (its keys
    /// get 403) while the app and its data stay.
    pub enable_api: bool,
    /// The compiled DSL graph of a `workflow` or `advanced-chat` app.
    pub workflow: Option<Arc<Workflow>>,
    /// A chat or completion app's knowledge (Dify's `dataset_configs`):
    /// its datasets are searched with the query and the segments put in
    /// the system prompt as Dify's context.
    pub datasets: Option<DatasetContext>,
}

/// The knowledge a chat or completion app answers from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetContext {
    /// Local dataset ids (import mapped Dify's).
    pub dataset_ids: Vec<String>,
    /// Dify's `retrieval_model: single` (one dataset answers).
    #[serde(default)]
    pub single: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_threshold: Option<f32>,
    /// Hybrid weights (vector, keyword).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<(f32, f32)>,
}

/// A cloud model as a DSL names it (`provider`, `name`), e.g. `openai` /
/// `gpt-4o-mini`; config maps it to a local or upstream model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DslModel {
    pub provider: String,
    pub name: String,
}

/// [`AppDefinition`] as it is written: `workflow` is the DSL's raw section.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredApp {
    id: String,
    name: String,
    mode: AppMode,
    #[serde(default)]
    description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dsl_model: Option<DslModel>,
    #[serde(default)]
    pre_prompt: String,
    #[serde(default)]
    opening_statement: String,
    #[serde(default)]
    suggested_questions: Vec<String>,
    #[serde(default)]
    suggested_questions_after_answer: Feature,
    #[serde(default)]
    user_input_form: Vec<FormField>,
    #[serde(default)]
    completion_params: CompletionParams,
    #[serde(default = "default_history_turns")]
    history_turns: u32,
    #[serde(default = "default_true")]
    enable_api: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workflow: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    datasets: Option<DatasetContext>,
}

/// Why a stored app could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error("workflow: a {0} app has no workflow section (only workflow and advanced-chat apps do)")]
    UnexpectedWorkflow(&'static str),
    #[error("workflow: {0}")]
    Workflow(String),
}

impl TryFrom<StoredApp> for AppDefinition {
    type Error = AppError;

    fn try_from(s: StoredApp) -> Result<Self, AppError> {
        let workflow = match (s.workflow, s.mode.workflow_mode()) {
            (None, _) => None,
            (Some(_), None) => return Err(AppError::UnexpectedWorkflow(s.mode.as_str())),
            (Some(raw), Some(mode)) => Some(Arc::new(
                Workflow::compile(&raw, mode, &Capabilities::unchecked())
                    .map_err(|problems| AppError::Workflow(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?,
            )),
        };
        Ok(AppDefinition {
            id: s.id,
            name: s.name,
            mode: s.mode,
            description: s.description,
            model: s.model,
            dsl_model: s.dsl_model,
            pre_prompt: s.pre_prompt,
            opening_statement: s.opening_statement,
            suggested_questions: s.suggested_questions,
            suggested_questions_after_answer: s.suggested_questions_after_answer,
            user_input_form: s.user_input_form,
            completion_params: s.completion_params,
            history_turns: s.history_turns,
            enable_api: s.enable_api,
            workflow,
            datasets: s.datasets,
        })
    }
}

impl From<AppDefinition> for StoredApp {
    fn from(a: AppDefinition) -> Self {
        StoredApp {
            id: a.id,
            name: a.name,
            mode: a.mode,
            description: a.description,
            model: a.model,
            dsl_model: a.dsl_model,
            pre_prompt: a.pre_prompt,
            opening_statement: a.opening_statement,
            suggested_questions: a.suggested_questions,
            suggested_questions_after_answer: a.suggested_questions_after_answer,
            user_input_form: a.user_input_form,
            completion_params: a.completion_params,
            history_turns: a.history_turns,
            enable_api: a.enable_api,
            workflow: a.workflow.map(|w| w.raw().clone()),
            datasets: a.datasets,
        }
    }
}

impl PartialEq for AppDefinition {
    fn eq(&self, o: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let AppDefinition {
            id,
            name,
            mode,
            description,
            model,
            dsl_model,
            pre_prompt,
            opening_statement,
            suggested_questions,
            suggested_questions_after_answer,
            user_input_form,
            completion_params,
            history_turns,
            enable_api,
            workflow,
            datasets,
        } = self;
        *id == o.id
            && *name == o.name
            && *mode == o.mode
            && *description == o.description
            && *model == o.model
            && *dsl_model == o.dsl_model
            && *pre_prompt == o.pre_prompt
            && *opening_statement == o.opening_statement
            && *suggested_questions == o.suggested_questions
            && *suggested_questions_after_answer == o.suggested_questions_after_answer
            && *user_input_form == o.user_input_form
            && *completion_params == o.completion_params
            && *history_turns == o.history_turns
            && *enable_api == o.enable_api
            && workflow.as_ref().map(|w| w.raw()) == o.workflow.as_ref().map(|w| w.raw())
            && *datasets == o.datasets
    }
}

fn default_true() -> bool {
    true
}

/// An app feature that is on or off, in Dify's shape `{"enabled": true}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    #[serde(default)]
    pub enabled: bool,
}

fn default_history_turns() -> u32 {
    10
}

/// One problem found by [`AppDefinition::validate`]: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for AppProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl AppDefinition {
    /// Every problem at once, so an operator fixes a file in one pass.
    pub fn validate(&self) -> Vec<AppProblem> {
        let mut p = Vec::new();
        let mut bad = |field: &str, message: String| p.push(AppProblem { field: field.to_owned(), message });
        if self.id.is_empty() || self.id.len() > MAX_APP_ID_LEN {
            bad("id", format!("must be 1 to {MAX_APP_ID_LEN} characters"));
        } else if !self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            bad("id", format!("{:?} may contain only a-z, 0-9, '-' and '_'", self.id));
        }
        if self.name.trim().is_empty() {
            bad("name", "must not be empty".into());
        }
        match (self.mode.workflow_mode(), &self.workflow) {
            (Some(_), None) => bad(
                "workflow",
                format!("a {} app needs its DSL's workflow graph: import it with `edgeaictl apps import FILE.yml`", self.mode.as_str()),
            ),
            (None, Some(_)) => bad("workflow", format!("a {} app has no workflow graph", self.mode.as_str())),
            (Some(_), Some(_)) | (None, None) => {}
        }
        let cp = &self.completion_params;
        if !(0.0..=2.0).contains(&cp.temperature) {
            bad("completion_params.temperature", format!("{} is outside 0.0..=2.0", cp.temperature));
        }
        if !(cp.top_p > 0.0 && cp.top_p <= 1.0) {
            bad("completion_params.top_p", format!("{} is outside (0.0, 1.0]", cp.top_p));
        }
        if cp.top_k < 0 {
            bad("completion_params.top_k", "must be >= 0 (0 disables top-k)".into());
        }
        if cp.max_tokens == 0 {
            bad("completion_params.max_tokens", "must be at least 1".into());
        }
        if cp.stop.len() > 4 || cp.stop.iter().any(|s| s.is_empty()) {
            bad("completion_params.stop", "at most 4 non-empty stop sequences".into());
        }
        let mut seen = BTreeMap::new();
        for (i, f) in self.user_input_form.iter().enumerate() {
            let s = f.spec();
            let field = format!("user_input_form[{i}].variable");
            if s.variable.is_empty() || !s.variable.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                bad(&field, format!("{:?} must be a non-empty identifier", s.variable));
            }
            if seen.insert(s.variable.clone(), i).is_some() {
                bad(&field, format!("{:?} is declared twice", s.variable));
            }
            if matches!(f, FormField::Select(_)) && s.options.is_empty() {
                bad(&format!("user_input_form[{i}].options"), "a select needs at least one option".into());
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppDefinition {
        serde_json::from_value(serde_json::json!({"id": "demo", "name": "Demo", "mode": "chat"})).expect("minimal app")
    }

    #[test]
    fn minimal_app_is_valid_with_defaults() {
        let a = app();
        assert!(a.validate().is_empty());
        assert_eq!(a.history_turns, 10);
        assert_eq!(a.completion_params.max_tokens, 256);
        assert!(!a.suggested_questions_after_answer.enabled);
    }

    #[test]
    fn suggested_questions_after_answer_takes_difys_shape() {
        let a: AppDefinition = serde_json::from_value(serde_json::json!(
            {"id": "s", "name": "S", "mode": "chat", "suggested_questions_after_answer": {"enabled": true}}
        ))
        .expect("feature on");
        assert!(a.suggested_questions_after_answer.enabled);
        let bad: Result<AppDefinition, _> = serde_json::from_value(serde_json::json!(
            {"id": "s", "name": "S", "mode": "chat", "suggested_questions_after_answer": {"enabled": true, "prompt": "x"}}
        ));
        assert!(bad.is_err(), "unknown feature keys are refused");
    }

    #[test]
    fn form_fields_use_difys_tagged_shape() {
        let f: FormField = serde_json::from_str(r#"{"select": {"label": "L", "variable": "v", "options": ["a"]}}"#).expect("select");
        assert!(matches!(f, FormField::Select(_)));
        assert_eq!(serde_json::to_value(&f).expect("ser")["select"]["variable"], "v");
    }

    #[test]
    fn every_problem_is_reported() {
        let mut a = app();
        a.id = "Bad Id".into();
        a.completion_params.temperature = 3.0;
        a.completion_params.max_tokens = 0;
        let fields: Vec<_> = a.validate().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["id", "completion_params.temperature", "completion_params.max_tokens"]);
    }

    #[test]
    fn workflow_modes_need_their_graph() {
        for mode in ["workflow", "advanced-chat"] {
            let a: AppDefinition =
                serde_json::from_value(serde_json::json!({"id": "w", "name": "W", "mode": mode})).expect("mode is known");
            let p = a.validate();
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].field, "workflow");
            assert!(p[0].message.contains("edgeaictl apps import"), "{}", p[0].message);
        }
    }

    #[test]
    fn a_workflow_section_is_compiled_on_the_way_in() {
        // An empty graph has no start node: compile's problems are joined
        // into the one serde error.
        let r: Result<AppDefinition, _> = serde_json::from_value(
            serde_json::json!({"id": "w", "name": "W", "mode": "workflow", "workflow": {"graph": {"nodes": [], "edges": []}}}),
        );
        let e = r.expect_err("an empty graph does not compile");
        assert!(e.to_string().starts_with("workflow: "), "{e}");
    }

    #[test]
    fn simple_apps_refuse_a_workflow_section() {
        let r: Result<AppDefinition, _> =
            serde_json::from_value(serde_json::json!({"id": "c", "name": "C", "mode": "chat", "workflow": {"graph": {}}}));
        let e = r.expect_err("a chat app has no graph");
        assert!(e.to_string().contains("a chat app has no workflow section"), "{e}");
    }

    #[test]
    fn stored_shape_round_trips() {
        let mut a = app();
        a.dsl_model = Some(DslModel { provider: "openai".into(), name: "gpt-4o-mini".into() });
        a.history_turns = 3;
        let v = serde_json::to_value(&a).expect("ser");
        assert_eq!(v["dsl_model"]["provider"], "openai");
        assert!(v.get("workflow").is_none(), "absent workflow is not written");
        let back: AppDefinition = serde_json::from_value(v).expect("de");
        assert_eq!(back, a);
    }
}
