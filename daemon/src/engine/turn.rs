//! One turn of a simple chat or completion app, from request to model job:
//! the request's own rules (user, query), the inputs checked against the
//! app's form (or the ones its conversation started with), the sampling
//! parameters, and the prompt — pre-prompt, history, query through the
//! model's chat template — fitted into the context by dropping the oldest
//! history turns, as Dify does.
//! Owns: everything about what the model is asked. Does not touch: the
//! store (the caller brings the history), sockets, or the run's lifetime.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::app::{AppDefinition, AppMode};
use super::prompt::{build_messages, validate_inputs};
use crate::model::{LocalModel, ModelError, Prompt, SamplingParams};

/// Longest accepted query, in characters (the context is the real bound;
/// this stops a client from making us tokenise megabytes first).
pub const MAX_QUERY_CHARS: usize = 64 * 1024;
/// Longest `user` identifier.
pub const MAX_USER_CHARS: usize = 256;

/// Why a turn cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The request breaks a rule of the API or of the app's form; the
    /// message is for the client.
    #[error("{0}")]
    Invalid(String),
    /// The prompt could not be rendered, or does not fit even without history.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What the client asked, after wire parsing.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub user: String,
    pub query: String,
    pub inputs: Map<String, Value>,
}

/// A validated turn, ready to be rendered for a model.
#[derive(Debug, Clone)]
pub struct Turn {
    pub app: Arc<AppDefinition>,
    pub user: String,
    pub query: String,
    /// The inputs the prompt uses: validated against the form, or those the
    /// conversation started with (a conversation keeps them, as in Dify).
    pub inputs: Map<String, Value>,
    pub params: SamplingParams,
    /// Knowledge segments for Dify's context prompt (apps with datasets).
    pub context: Option<String>,
}

impl Turn {
    /// Checks the request against the API's rules and the app's form.
    /// `kept_inputs` are the inputs of the conversation this turn continues.
    pub fn new(app: Arc<AppDefinition>, req: TurnRequest, kept_inputs: Option<Map<String, Value>>) -> Result<Turn, TurnError> {
        check_user(&req.user)?;
        if req.query.chars().count() > MAX_QUERY_CHARS {
            return Err(TurnError::Invalid(format!("query is longer than {MAX_QUERY_CHARS} characters")));
        }
        if app.mode == AppMode::Chat && req.query.trim().is_empty() {
            return Err(TurnError::Invalid("query is required".into()));
        }
        let inputs = match kept_inputs {
            Some(kept) => kept,
            None => validate_inputs(&app, &req.inputs).map_err(|e| TurnError::Invalid(e.0))?,
        };
        let params = SamplingParams::from(&app.completion_params);
        Ok(Turn { app, user: req.user, query: req.query, inputs, params, context: None })
    }

    /// Renders and tokenises the turn with `history` (oldest first),
    /// dropping the oldest turns until prompt plus answer fit one sequence.
    /// Returns the prompt and how many history turns it kept. CPU-bound:
    /// call it off the event loop.
    pub fn prompt(&self, model: &LocalModel, history: &[(String, String)]) -> Result<(Prompt, usize), TurnError> {
        let mut skip = 0;
        loop {
            let msgs = build_messages(&self.app, &self.inputs, &history[skip..], &self.query, self.context.as_deref());
            let prompt = model.prompt(&msgs)?;
            match model.check_fits(&prompt, self.params.max_tokens) {
                Ok(()) => return Ok((prompt, history.len() - skip)),
                Err(e) if skip >= history.len() => return Err(e.into()),
                Err(_) => skip += 1,
            }
        }
    }
}

/// `user` is required and bounded, as Dify requires it.
pub fn check_user(user: &str) -> Result<(), TurnError> {
    if user.trim().is_empty() {
        return Err(TurnError::Invalid("user is required".into()));
    }
    if user.chars().count() > MAX_USER_CHARS {
        return Err(TurnError::Invalid(format!("user is longer than {MAX_USER_CHARS} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(mode: &str) -> Arc<AppDefinition> {
        Arc::new(
            serde_json::from_value(json!({
                "id": "a", "name": "A", "mode": mode, "pre_prompt": "Help {{name}}.",
                "user_input_form": [{"text-input": {"label": "Name", "variable": "name", "required": true}}],
                "completion_params": {"max_tokens": 7, "temperature": 0.0}
            }))
            .expect("app"),
        )
    }

    fn req(user: &str, query: &str, inputs: Value) -> TurnRequest {
        TurnRequest { user: user.into(), query: query.into(), inputs: inputs.as_object().cloned().expect("object") }
    }

    fn invalid(r: Result<Turn, TurnError>) -> String {
        match r {
            Err(TurnError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn user_must_be_present_and_bounded() {
        assert!(check_user("plc-7").is_ok());
        assert!(matches!(check_user("  "), Err(TurnError::Invalid(m)) if m == "user is required"));
        let long = "u".repeat(MAX_USER_CHARS + 1);
        assert!(matches!(check_user(&long), Err(TurnError::Invalid(m)) if m.contains("longer")));
    }

    #[test]
    fn chat_needs_a_query_and_the_form_is_checked() {
        assert_eq!(invalid(Turn::new(app("chat"), req("u", "  ", json!({"name": "x"})), None)), "query is required");
        assert_eq!(invalid(Turn::new(app("chat"), req("u", "hi", json!({})), None)), "name is required in input form");
        let long = "q".repeat(MAX_QUERY_CHARS + 1);
        assert!(invalid(Turn::new(app("chat"), req("u", &long, json!({"name": "x"})), None)).contains("longer"));
        let t = Turn::new(app("chat"), req("u", "hi", json!({"name": "Ann"})), None).expect("valid");
        assert_eq!(t.inputs["name"], "Ann");
        assert_eq!(t.params.max_tokens, 7);
    }

    #[test]
    fn a_continued_conversation_keeps_its_inputs() {
        let kept = json!({"name": "Kept"}).as_object().cloned();
        // The request's inputs are ignored (even invalid ones), as in Dify.
        let t = Turn::new(app("chat"), req("u", "hi", json!({})), kept).expect("valid");
        assert_eq!(t.inputs["name"], "Kept");
    }

    #[test]
    fn completion_may_have_an_empty_query() {
        let t = Turn::new(app("completion"), req("u", "", json!({"name": "Ann"})), None).expect("valid");
        assert_eq!(t.query, "");
    }
}
