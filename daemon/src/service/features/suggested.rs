//! Suggested questions after an answer: Dify's prompt (the conversation's
//! last turns, then the instruction to predict three short questions as a
//! JSON array) answered greedily by the local model, and a tolerant parser
//! for what a small model makes of it. As in Dify, a model that cannot
//! answer (not loaded, busy, failing) yields no suggestions rather than an
//! error.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::{not_found_as, Service, ServiceError};
use super::{FeatureError, Outcome};
use crate::engine::AppDefinition;
use crate::model::{CancelFlag, ChatMessage, GenEvent, LocalModel, Prompt, SamplingParams};

/// Dify's instruction (`SUGGESTED_QUESTIONS_AFTER_ANSWER_INSTRUCTION_PROMPT`).
const INSTRUCTION: &str = "Please help me predict the three most likely questions that human would ask, \
and keeping each question under 20 characters.\n\
MAKE SURE your output is the SAME language as the Assistant's latest response\
(if the main response is written in Chinese, then the language of your output must be using Chinese.)!\n\
The output must be an array in JSON format following the specified schema:\n\
[\"question1\",\"question2\",\"question3\"]\n";

/// Turns of history given to the model (Dify: the last 3 messages).
const HISTORY_TURNS: u32 = 3;
/// Longest answer asked of the model (Dify: 256 tokens).
const MAX_TOKENS: u32 = 256;
/// At most this many questions are returned.
const MAX_QUESTIONS: usize = 3;
/// A question longer than this is cut (the prompt asks for under 20).
const MAX_QUESTION_CHARS: usize = 120;

/// Cancels a generation whose caller went away.
struct CancelOnDrop(CancelFlag, Arc<LocalModel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
        self.1.withdraw_cancelled();
    }
}

impl Service {
    /// Dify's `GET /messages/{id}/suggested`: the message must be the
    /// user's (else `MessageNotFound`), then the app must have the feature
    /// on (else refused), then the model is asked.
    pub async fn suggested_questions(&self, app: &AppDefinition, user: &str, message_id: &str) -> Outcome<Vec<String>> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(ServiceError::ShuttingDown);
        }
        let message = self.store.get_message(&app.id, user, message_id).await.map_err(not_found_as(ServiceError::MessageNotFound))?;
        if !app.suggested_questions_after_answer.enabled {
            return Ok(Err(FeatureError::SuggestionsDisabled));
        }
        let history = match &message.conversation_id {
            Some(c) => self.store.history(c, HISTORY_TURNS).await?,
            None => Vec::new(),
        };
        if history.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let model = match self.model.ready() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(app = %app.id, message_id, error = %e, "no suggestions: the model is not ready");
                return Ok(Ok(Vec::new()));
            }
        };
        match generate(model, &app.id, history).await {
            Ok(text) => Ok(Ok(parse_questions(&text))),
            Err(e) => {
                tracing::warn!(app = %app.id, message_id, error = %e, "no suggestions: generation failed");
                Ok(Ok(Vec::new()))
            }
        }
    }
}

/// Dify's prompt: the turns as `Human:`/`Assistant:` lines, then the instruction.
fn prompt_text(history: &[(String, String)]) -> String {
    let mut text = String::new();
    for (q, a) in history {
        text.push_str(&format!("Human: {q}\nAssistant: {a}\n"));
    }
    text.push('\n');
    text.push_str(INSTRUCTION);
    text
}

/// Renders the prompt, dropping the oldest turns until it fits, and runs it greedily.
async fn generate(model: Arc<LocalModel>, app_id: &str, history: Vec<(String, String)>) -> Result<String, String> {
    let m = Arc::clone(&model);
    let prompt: Prompt = tokio::task::spawn_blocking(move || {
        let mut skip = 0;
        loop {
            let msgs = [ChatMessage::user(prompt_text(&history[skip..]))];
            let prompt = m.prompt(&msgs).map_err(|e| e.to_string())?;
            match m.check_fits(&prompt, MAX_TOKENS) {
                Ok(()) => return Ok(prompt),
                Err(e) if skip + 1 >= history.len() => return Err(e.to_string()),
                Err(_) => skip += 1,
            }
        }
    })
    .await
    .map_err(|e| format!("prompt task: {e}"))??;
    let params =
        SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0, max_tokens: MAX_TOKENS, seed: Some(0), stop: Vec::new(), grammar: None };
    let cancel = CancelFlag::default();
    let admission = model.admit(app_id).map_err(|e| e.to_string())?;
    let mut events = model.submit(admission, prompt, params, cancel.clone()).map_err(|e| e.to_string())?;
    let _guard = CancelOnDrop(cancel, model);
    let mut text = String::new();
    while let Some(ev) = events.recv().await {
        match ev {
            GenEvent::Started { .. } => {}
            GenEvent::Text(t) => text.push_str(&t),
            GenEvent::Done { .. } => return Ok(text),
            GenEvent::Failed(e) => return Err(e),
        }
    }
    Err("the inference thread ended the request without an answer".into())
}

/// The questions in a model's answer: the first JSON array of strings if
/// there is one, else its lines (those that ask something, if any do),
/// without list markers or quotes; at most three, each bounded.
fn parse_questions(text: &str) -> Vec<String> {
    let from_json = text.find('[').and_then(|start| {
        let end = text[start..].find(']')? + start;
        serde_json::from_str::<Vec<serde_json::Value>>(&text[start..=end]).ok()
    });
    let candidates: Vec<String> = match from_json {
        Some(items) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        None => {
            let lines: Vec<String> = text.lines().map(strip_marker).filter(|l| !l.is_empty()).collect();
            let asking: Vec<String> = lines.iter().filter(|l| l.ends_with('?') || l.ends_with('？')).cloned().collect();
            if asking.is_empty() {
                lines
            } else {
                asking
            }
        }
    };
    let mut out: Vec<String> = Vec::new();
    for c in candidates {
        let q: String = c.trim().chars().take(MAX_QUESTION_CHARS).collect();
        if !q.is_empty() && !out.contains(&q) {
            out.push(q);
        }
        if out.len() == MAX_QUESTIONS {
            break;
        }
    }
    out
}

/// `1. "What is X?",` → `What is X?`
fn strip_marker(line: &str) -> String {
    let l = line.trim();
    let l = l.trim_start_matches(|c: char| c.is_ascii_digit());
    let l = l.trim_start_matches(['.', ')', '-', '*', '•', '[']).trim();
    l.trim_end_matches([',', ']']).trim().trim_matches(['"', '\'', '`', '“', '”']).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_is_taken_as_is_up_to_three() {
        let got = parse_questions("Sure! [\"What is a PLC?\", \"How to reset?\", \"Why?\", \"Extra?\"] hope it helps");
        assert_eq!(got, ["What is a PLC?", "How to reset?", "Why?"]);
        assert_eq!(parse_questions("[\"如何清除报警？\"]"), ["如何清除报警？"]);
    }

    #[test]
    fn without_json_the_asking_lines_are_taken() {
        let got = parse_questions("Here are some questions:\n1. \"What is Modbus?\"\n2. How fast is it?\n- Which port?\nThanks");
        assert_eq!(got, ["What is Modbus?", "How fast is it?", "Which port?"]);
        assert_eq!(parse_questions("Tell me more\nShow an example"), ["Tell me more", "Show an example"]);
    }

    #[test]
    fn empty_duplicate_and_long_items_are_bounded() {
        assert!(parse_questions("").is_empty());
        assert!(parse_questions("[]").is_empty());
        assert_eq!(parse_questions("[\"A?\", \"A?\", \"\", \"B?\"]"), ["A?", "B?"]);
        let long = format!("[\"{}\"]", "x".repeat(500));
        assert_eq!(parse_questions(&long)[0].chars().count(), MAX_QUESTION_CHARS);
        // Brackets that are not a JSON array fall back to lines.
        assert_eq!(parse_questions("[What is X?]\n[How?]"), ["What is X?", "How?"]);
    }

    #[test]
    fn the_prompt_is_difys_history_then_instruction() {
        let p = prompt_text(&[("What is a PLC?".into(), "A controller.".into())]);
        assert!(p.starts_with("Human: What is a PLC?\nAssistant: A controller.\n\nPlease help me predict"), "{p}");
        assert!(p.ends_with("[\"question1\",\"question2\",\"question3\"]\n"));
    }
}
