//! From request to model messages, as Dify's simple chat/completion apps do:
//! validate `inputs` against the app's `user_input_form`, substitute them
//! into the pre-prompt, then pre-prompt + history + query.

use serde_json::{Map, Value};

use super::app::{AppDefinition, AppMode, FormField};
use crate::model::ChatMessage;

/// A request input that breaks the app's form; the message is the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Checks and normalises `inputs` (defaults filled in, numbers as strings),
/// with Dify's messages. Keys the form does not declare are dropped.
pub fn validate_inputs(app: &AppDefinition, inputs: &Map<String, Value>) -> Result<Map<String, Value>, InputError> {
    let mut out = Map::new();
    for field in &app.user_input_form {
        let s = field.spec();
        let v = s.variable.as_str();
        let given = match inputs.get(v) {
            None | Some(Value::Null) => None,
            Some(Value::String(x)) if x.is_empty() => None,
            Some(Value::String(x)) => Some(x.clone()),
            Some(Value::Number(n)) if matches!(field, FormField::Number(_)) => Some(n.to_string()),
            Some(_) => return Err(InputError(format!("{v} in input form must be a string"))),
        };
        let value = match (given, &s.default) {
            (Some(x), _) => x,
            (None, Some(d)) if !d.is_empty() => d.clone(),
            (None, _) if s.required => return Err(InputError(format!("{v} is required in input form"))),
            (None, _) => String::new(),
        };
        if let Some(max) = s.max_length {
            if value.chars().count() > max as usize {
                return Err(InputError(format!("{v} in input form must be less than {max} characters")));
            }
        }
        match field {
            FormField::Select(spec) if !value.is_empty() && !spec.options.contains(&value) => {
                return Err(InputError(format!("{v} in input form must be one of the following: {:?}", spec.options)));
            }
            FormField::Number(_) if !value.is_empty() && value.parse::<f64>().is_err() => {
                return Err(InputError(format!("{v} in input form must be a valid number")));
            }
            _ => {}
        }
        out.insert(v.to_owned(), Value::String(value));
    }
    Ok(out)
}

/// Replaces `{{name}}` with the input's value; unknown names stay as written.
pub fn render_template(text: &str, inputs: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match inputs.get(name).and_then(Value::as_str) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Dify's context prompt of a simple chat or completion app
/// (`prompt_templates/common_chat.json`), before the pre-prompt.
const CONTEXT_PROMPT: &str = "Use the following context as your learned knowledge, inside <context></context> XML tags.\n\n<context>\n{{#context#}}\n</context>\n\nWhen answer to user:\n- If you don't know, just say that you don't know.\n- If you don't know when you are not sure, ask for clarification.\nAvoid mentioning that you obtained the information from the context.\nAnd answer according to the language of the user's question.\n\n";

/// The model messages for one turn. `history` is oldest first; `context`
/// (the app's knowledge segments, when it has datasets) goes before the
/// pre-prompt in Dify's context prompt.
pub fn build_messages(
    app: &AppDefinition,
    inputs: &Map<String, Value>,
    history: &[(String, String)],
    query: &str,
    context: Option<&str>,
) -> Vec<ChatMessage> {
    let mut pre = render_template(&app.pre_prompt, inputs);
    if let Some(c) = context {
        pre = format!("{}{pre}", CONTEXT_PROMPT.replace("{{#context#}}", c));
    }
    match app.mode {
        AppMode::Chat | AppMode::AdvancedChat => {
            let mut m = Vec::with_capacity(history.len() * 2 + 2);
            if !pre.trim().is_empty() {
                m.push(ChatMessage::system(pre));
            }
            for (q, a) in history {
                m.push(ChatMessage::user(q.clone()));
                m.push(ChatMessage::assistant(a.clone()));
            }
            m.push(ChatMessage::user(query));
            m
        }
        AppMode::Completion | AppMode::Workflow => {
            let text = match (pre.trim().is_empty(), query.trim().is_empty()) {
                (false, false) => format!("{pre}\n\n{query}"),
                (false, true) => pre,
                (true, _) => query.to_owned(),
            };
            vec![ChatMessage::user(text)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use serde_json::json;

    fn app(form: Value) -> AppDefinition {
        serde_json::from_value(json!({"id": "a", "name": "A", "mode": "chat", "pre_prompt": "You help {{name}}.", "user_input_form": form}))
            .expect("app")
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn required_missing_and_too_long_and_bad_option_are_rejected() {
        let a = app(json!([
            {"text-input": {"label": "Name", "variable": "name", "required": true, "max_length": 5}},
            {"select": {"label": "Lang", "variable": "lang", "options": ["en", "de"]}},
            {"number": {"label": "N", "variable": "n"}}
        ]));
        assert_eq!(validate_inputs(&a, &map(json!({}))).unwrap_err().0, "name is required in input form");
        assert!(validate_inputs(&a, &map(json!({"name": "abcdef"}))).unwrap_err().0.contains("less than 5"));
        assert!(validate_inputs(&a, &map(json!({"name": "x", "lang": "fr"}))).unwrap_err().0.contains("one of"));
        assert!(validate_inputs(&a, &map(json!({"name": "x", "n": "abc"}))).unwrap_err().0.contains("number"));
        assert!(validate_inputs(&a, &map(json!({"name": ["x"]}))).unwrap_err().0.contains("string"));
        let ok = validate_inputs(&a, &map(json!({"name": "Ann", "lang": "de", "n": 3, "extra": "dropped"}))).expect("valid");
        assert_eq!(ok, map(json!({"name": "Ann", "lang": "de", "n": "3"})));
    }

    #[test]
    fn defaults_fill_missing_inputs() {
        let a = app(json!([{"text-input": {"label": "Name", "variable": "name", "required": true, "default": "Bob"}}]));
        assert_eq!(validate_inputs(&a, &map(json!({}))).expect("default")["name"], "Bob");
    }

    #[test]
    fn templates_substitute_known_names_only() {
        let i = map(json!({"name": "Ann"}));
        assert_eq!(render_template("Hi {{ name }}, {{other}} {{", &i), "Hi Ann, {{other}} {{");
    }

    #[test]
    fn chat_messages_are_system_history_query() {
        let a = app(json!([]));
        let m = build_messages(&a, &map(json!({"name": "Ann"})), &[("q1".into(), "a1".into())], "q2", None);
        let roles: Vec<_> = m.iter().map(|x| x.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User]);
        assert_eq!(m[0].content, "You help Ann.");
        assert_eq!(m[3].content, "q2");
    }

    #[test]
    fn knowledge_goes_before_the_pre_prompt_in_difys_context_prompt() {
        let a = app(json!([]));
        let m = build_messages(&a, &map(json!({"name": "Ann"})), &[], "q", Some("Press ACK."));
        assert!(m[0].content.starts_with("Use the following context as your learned knowledge"), "{}", m[0].content);
        assert!(m[0].content.contains("<context>\nPress ACK.\n</context>"), "{}", m[0].content);
        assert!(m[0].content.ends_with("\n\nYou help Ann."), "{}", m[0].content);
    }

    #[test]
    fn completion_is_one_user_message() {
        let mut a = app(json!([]));
        a.mode = AppMode::Completion;
        let m = build_messages(&a, &map(json!({"name": "Ann"})), &[], "", None);
        assert_eq!(m, vec![ChatMessage::user("You help Ann.")]);
    }
}
