//! App definitions for `chat` and `completion` apps: the typed shape shared by
//! config (`[[apps]]`) and the admin import API, and its validation.
//! Owns no I/O; the workflow engine (advanced-chat/workflow DSL) comes later.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest accepted app id (ids appear in URLs, logs and the store).
pub const MAX_APP_ID_LEN: usize = 64;

/// Dify app mode. Only the two modes the core daemon runs are accepted; the
/// workflow modes are rejected with a clear message until the engine lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppMode {
    Chat,
    Completion,
}

impl AppMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AppMode::Chat => "chat",
            AppMode::Completion => "completion",
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

/// A chat or completion app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppDefinition {
    /// Stable id used by the admin API, keys and the store (`[a-z0-9_-]`).
    pub id: String,
    pub name: String,
    pub mode: AppMode,
    #[serde(default)]
    pub description: String,
    /// The model that answers, by `model.name`; unset means the daemon's
    /// model. An app naming a model this daemon does not serve is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// System prompt; `{{variable}}` is replaced by the request's inputs.
    #[serde(default)]
    pub pre_prompt: String,
    #[serde(default)]
    pub opening_statement: String,
    #[serde(default)]
    pub suggested_questions: Vec<String>,
    /// Dify's "suggested questions after answer": when enabled, `GET
    /// /v1/messages/{id}/suggested` asks the model for follow-up questions.
    #[serde(default)]
    pub suggested_questions_after_answer: Feature,
    #[serde(default)]
    pub user_input_form: Vec<FormField>,
    #[serde(default)]
    pub completion_params: CompletionParams,
    /// Dify's memory window: at most this many earlier turns are sent.
    #[serde(default = "default_history_turns")]
    pub history_turns: u32,
    /// Dify's `enable_api`: `false` turns the app's Service API off (its keys
    /// get 403) while the app and its data stay.
    #[serde(default = "default_true")]
    pub enable_api: bool,
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
    fn workflow_modes_are_rejected_by_serde() {
        let r: Result<AppDefinition, _> = serde_json::from_value(serde_json::json!({"id": "w", "name": "W", "mode": "workflow"}));
        assert!(r.is_err());
    }
}
